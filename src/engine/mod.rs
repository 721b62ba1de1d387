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
//! - `users`, `secrets`, `changes` — people, the secret store, live pages.
//!
//! This file holds what every part shares: [`EngineError`],
//! [`ENGINE_ACTOR`] and [`blocking`].

pub mod builds;
pub mod changes;
pub mod deploy;
pub mod jobs;
pub mod pipelines;
pub mod runtime;
pub mod secrets;
pub mod slots;
pub mod triggers;
pub mod users;

pub use runtime::{Engine, EngineConfig, SwapDone};

use crate::domain::DefinitionErrors;
use crate::storage::{Db, DbConn, StorageError};

/// Who the audit log names for what the engine does by itself.
pub const ENGINE_ACTOR: &str = "slipway";

/// Runs sync database work on the blocking pool.
pub async fn blocking<T, F>(db: &Db, f: F) -> Result<T, EngineError>
where
    F: FnOnce(&mut DbConn) -> Result<T, EngineError> + Send + 'static,
    T: Send + 'static,
{
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = db.get()?;
        f(&mut conn)
    })
    .await
    .map_err(|e| EngineError::Io {
        context: "a database task stopped".into(),
        source: std::io::Error::other(e.to_string()),
    })?
}

/// What an engine operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The input is not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// A pipeline definition that does not parse or validate.
    #[error("{0}")]
    Definition(#[from] DefinitionErrors),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A stage rule refuses the request (HTTP 409); the message says why.
    #[error("{0}")]
    Refused(String),
    /// The user may not do this (HTTP 403); the message says why.
    #[error("{0}")]
    Forbidden(String),
    /// The input is larger than a limit (HTTP 413); the message names it.
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl From<diesel::result::Error> for EngineError {
    fn from(e: diesel::result::Error) -> Self {
        EngineError::Storage(StorageError::from(e))
    }
}
