//! The moving parts and application services: everything that changes
//! state goes through here, calling the domain for every decision and
//! storage for every write (one transaction per change, with its audit
//! record). Builds, deployments, triggers, gates and slots arrive with
//! their issues.

pub mod artifacts;
pub mod builds;
pub mod demo;
pub mod git;
pub mod pipelines;
pub mod runner;
mod runtime;
pub mod secrets;
pub mod users;

pub use runtime::{Engine, EngineConfig};

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

impl From<EngineError> for crate::web::WebError {
    fn from(e: EngineError) -> Self {
        use crate::web::WebError;
        match e {
            EngineError::Invalid(m) => WebError::Unprocessable(m),
            EngineError::Definition(d) => WebError::Unprocessable(d.to_string()),
            EngineError::NotFound(m) => WebError::NotFound(m),
            EngineError::Conflict(m) => WebError::Conflict(m),
            EngineError::Storage(s) => s.into(),
            EngineError::Io { .. } => WebError::internal(e),
        }
    }
}

impl From<EngineError> for crate::web::ApiError {
    fn from(e: EngineError) -> Self {
        crate::web::ApiError(e.into())
    }
}
