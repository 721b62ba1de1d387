//! The moving parts and application services: everything that changes
//! state goes through here, calling the domain for every decision and
//! storage for every write (one transaction per change, with its audit
//! record). One folder per capability (`ARCHITECTURE.md` draws them):
//!
//! - `pipelines/` — definitions, the stage form's edits, the demo;
//! - `builds/` — queue, run, git mirrors, the artifact store;
//! - `deploy/` — requests and transitions, runs, approvals, gates,
//!   notifications, what is live, swaps a person asks for;
//! - `triggers/` — schedules;
//! - `slots/` — slot processes and the router;
//! - `jobs/` — what builds and deployments share to run their tasks;
//! - `runtime/` — the [`Engine`] handle that wires them and runs the loops;
//! - `users`, `sessions`, `secrets`, `changes` — people and their browser
//!   sessions, the secret store, live pages.
//!
//! What every part shares ([`EngineError`], [`ENGINE_ACTOR`], [`blocking`])
//! is in `base.rs`; this file only names the parts.

mod base;
pub mod builds;
pub mod changes;
pub mod deploy;
pub mod jobs;
pub mod pipelines;
pub mod runtime;
pub mod secrets;
pub mod sessions;
pub mod slots;
pub mod triggers;
pub mod users;

pub use base::{ENGINE_ACTOR, EngineError, blocking};
