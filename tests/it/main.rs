//! Integration tests: the real server, real databases, real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod api;
mod helpers;
mod ops;
mod pages;
