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

pub mod approvals;
pub mod audit;
pub mod builds;
pub mod changes;
pub mod conn;
pub mod deployments;
mod error;
pub mod gates;
pub mod logs;
pub mod models;
pub mod notifications;
pub mod pipelines;
pub mod releases;
mod runs;
pub mod schedules;
pub mod schema;
pub mod secrets;
pub mod sessions;
pub mod slots;
pub mod sources;
mod states;
pub mod tasks;
pub mod testing;
pub mod users;
pub mod webhooks;

pub use audit::{
    AuditFilter, AuditVerifyError, BrokenLink, append_audit, audit_hash, count_audit, list_audit,
    search_audit, verify_audit_chain,
};
pub use builds::{
    BuildCommit, NewBuild, build_states, claim_build, count_running_builds, find_build,
    find_build_by_number, heartbeat_builds, insert_build, list_builds, next_build_number,
    orphaned_builds, queued_builds, release_versions_of_builds, set_build_commit, transition_build,
};
pub use conn::{
    Backend, Db, DbConn, MultiBackend, PooledConn, create_private_dir, now, pending_migrations,
    run_migrations, write_transaction,
};
pub use deployments::{
    NewDeployment, deployments_of_release, find_deployment, find_deployments, insert_deployment,
    latest_deployment_per_stage,
};
pub use error::StorageError;
pub use logs::{NewLogChunk, append_log_chunk, log_chunks_after, log_chunks_of_build_after};
pub use models::*;
pub use pipelines::{
    NewStage, SavedRevision, current_revision, current_revisions, find_pipeline, list_apps,
    list_pipelines, list_revisions, list_slots, list_stages, pipeline_by_id, revision_by_id,
    save_definition, stages_of_pipelines,
};
pub use releases::{
    NewArtifact, NewRelease, ReleaseFilter, artifacts_for_releases, board_releases,
    deployments_for_releases, find_release, find_release_by_id, find_releases_by_ids,
    insert_release, list_artifacts, list_releases,
};
pub use sources::{
    advance_source_head, find_source_head, record_source_check, source_heads_of_pipeline,
};
pub use tasks::{
    NewTaskRun, close_task_runs_of_build, find_task_run, finish_task_run, insert_task_run,
    start_task_run, task_runs_of_build, task_runs_of_builds,
};
pub use testing::{TestDb, test_databases};
pub use users::{
    GROUP_SOURCE_LOCAL, GROUP_SOURCE_SSO, NewUser, add_membership, add_user_to_group,
    count_active_admins, count_users, find_token, find_user, find_user_by_name,
    find_user_by_sso_subject, find_user_by_token_hash, insert_token, insert_user, list_tokens,
    list_users, memberships_of_users, remove_membership, replace_sso_memberships, revoke_token,
    set_user_disabled, set_user_role, update_user_profile, user_groups, user_memberships,
};
