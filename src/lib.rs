//! Slipway: a self-hosted release-management server.
//!
//! Layers, with dependencies pointing inward: `domain` (pure) <- `storage`
//! <- `engine` <- {`web`, `cli`}. See ARCHITECTURE.md.
pub mod cli;
pub mod config;
pub mod domain;
pub mod engine;
pub mod storage;
pub mod web;
