//! Slipway: a self-hosted release-management server.
//!
//! Layers, with dependencies pointing inward: `domain` (pure) <- `storage`
//! <- `engine` <- {`web`, `cli`}; `app` wires them into one application
//! (used by `cli`, the tests and the benchmarks). See ARCHITECTURE.md.
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod engine;
pub mod storage;
pub mod web;
