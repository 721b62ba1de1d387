//! Test harness: the real application on 127.0.0.1:0 with a fresh database
//! (SQLite in a temp dir, and a fresh PostgreSQL database), started through
//! `slipway::app::Application` like `slipway serve`, and what a test does
//! with it as a user would: call the API, sign people in, read pages, wait.
//!
//! - `app`: [`TestApp`], [`each_backend`], restarts and other instances.
//! - `api`: the JSON API client (import, queue a build, wait for it, logs).
//! - `people`: users, tokens and signed-in browsers.
//! - `wait`: polling with a deadline, never sleeping blindly.
//! - `html`: reading pages (texts, attributes, the CSRF field).
//! - `fixtures`: data stored directly (the SPEC pipeline, seeded releases).

mod api;
mod app;
mod fixtures;
mod html;
mod people;
mod wait;

pub use api::*;
pub use app::*;
pub use fixtures::*;
pub use html::*;
pub use people::*;
pub use wait::*;
