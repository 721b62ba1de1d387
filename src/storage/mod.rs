//! Storage: the only layer that knows SQL.
//!
//! - [`Db`] is a pool of [`DbConn`] (a diesel `MultiConnection` over
//!   PostgreSQL and SQLite), the backend chosen from the URL scheme.
//! - Migrations live in `migrations/{sqlite,postgres}/` (same names) and are
//!   embedded per backend; [`schema`] mirrors them by hand.
//! - One named function per query, taking `&mut DbConn` and returning row
//!   types of [`models`]. Everything is synchronous: callers run it in
//!   `web::block` or `spawn_blocking`.
//! - Writes that read first go through [`write_transaction`] (`BEGIN
//!   IMMEDIATE` on SQLite). Backend-specific SQL stays in `conn.rs` and
//!   `audit.rs` (a `match` on the [`DbConn`] variant).
//! - Timestamps are UTC `NaiveDateTime` from [`now`], never the database clock.

pub mod audit;
pub mod builds;
pub mod conn;
pub mod deployments;
mod error;
pub mod models;
pub mod pipelines;
pub mod releases;
pub mod schema;
mod states;
pub mod testing;
pub mod users;

pub use audit::{
    AuditVerifyError, BrokenLink, append_audit, audit_hash, list_audit, verify_audit_chain,
};
pub use builds::{NewBuild, find_build, find_build_by_number, insert_build, next_build_number};
pub use conn::{
    Backend, Db, DbConn, MultiBackend, PooledConn, now, pending_migrations, run_migrations,
    write_transaction,
};
pub use deployments::{
    NewDeployment, deployments_of_release, find_deployment, insert_deployment,
    latest_deployment_per_stage,
};
pub use error::StorageError;
pub use models::*;
pub use pipelines::{
    NewStage, SavedRevision, current_revision, find_pipeline, list_apps, list_pipelines,
    list_revisions, list_slots, list_stages, pipeline_by_id, revision_by_id, save_definition,
    stages_of_pipelines,
};
pub use releases::{
    NewArtifact, NewRelease, ReleaseFilter, artifacts_for_releases, board_releases,
    deployments_for_releases, find_release, find_release_by_id, insert_release, list_artifacts,
    list_releases,
};
pub use testing::{TestDb, test_databases};
pub use users::{
    NewUser, add_user_to_group, count_users, find_user, find_user_by_name,
    find_user_by_sso_subject, find_user_by_token_hash, insert_token, insert_user, list_tokens,
    revoke_token, user_groups,
};
