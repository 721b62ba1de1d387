//! The moving parts and application services: everything that changes
//! state goes through here, calling the domain for every decision and
//! storage for every write (one transaction per change, with its audit
//! record). Builds, deployments, triggers, gates and slots arrive with
//! their issues.

pub mod approvals;
pub mod artifacts;
pub mod builds;
pub mod changes;
pub mod demo;
mod deploy_run;
pub mod deployments;
pub mod gates;
pub mod git;
pub mod live;
pub mod notify;
pub mod pipelines;
pub mod push;
pub mod runner;
mod runtime;
pub mod scheduler;
pub mod schedules;
pub mod secrets;
pub mod sessions;
pub mod slots;
pub mod stages;
pub mod swaps;
pub mod users;
pub mod waiting;

pub use runtime::{Engine, EngineConfig, SwapDone};

use crate::domain::DefinitionErrors;
use crate::storage::StorageError;

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
