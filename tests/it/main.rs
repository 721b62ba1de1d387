//! Integration tests: the real server, real databases, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod api;
mod auth;
mod build_pages;
mod builds;
mod git;
mod helpers;
mod ops;
mod pages;
mod secrets;
mod webhook_verify;
