//! The watermark of the live pages (`engine::changes`): a handful of values
//! that move whenever something a page shows changes, read from the
//! database so that every instance sharing it sees changes made through
//! any other.
//!
//! Every read is one lookup in an index: the newest id of append-only
//! tables, the newest time of an indexed column, and `slots` (a few rows).
use chrono::NaiveDateTime;
use diesel::dsl::max;
use diesel::prelude::*;

use super::StorageError;
use super::conn::DbConn;
use super::schema::{approval_decisions, audit_events, builds, gate_runs, gate_samples, slots};
use super::schema::{deployments, task_runs};

/// Values that move when something the pages show changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watermark {
    /// The newest audit record: every state change writes one (builds,
    /// releases, deployments, approvals, gates, slots, definitions).
    pub audit: i64,
    /// The newest build and deployment (their requests are audited as
    /// well; these catch rows written without a record).
    pub builds: i64,
    pub deployments: i64,
    /// The newest start and end of a task run (a deployment's tasks).
    pub tasks_started: Option<NaiveDateTime>,
    pub tasks_finished: Option<NaiveDateTime>,
    /// The newest gate sample and change of a gate run (a gate's rounds).
    pub gate_samples: i64,
    pub gate_runs: Option<NaiveDateTime>,
    /// The newest decision on an approval.
    pub approval_decisions: i64,
    /// The newest change of a slot (release, process, error).
    pub slots: Option<NaiveDateTime>,
}

/// Reads the current [`Watermark`].
pub fn watermark(conn: &mut DbConn) -> Result<Watermark, StorageError> {
    let audit: Option<i64> = audit_events::table
        .select(max(audit_events::id))
        .first(conn)?;
    let builds: Option<i64> = builds::table.select(max(builds::id)).first(conn)?;
    let deployments: Option<i64> = deployments::table
        .select(max(deployments::id))
        .first(conn)?;
    let tasks_started: Option<NaiveDateTime> = task_runs::table
        .select(max(task_runs::started_at))
        .first(conn)?;
    let tasks_finished: Option<NaiveDateTime> = task_runs::table
        .select(max(task_runs::finished_at))
        .first(conn)?;
    let gate_samples: Option<i64> = gate_samples::table
        .select(max(gate_samples::id))
        .first(conn)?;
    let gate_runs: Option<NaiveDateTime> = gate_runs::table
        .select(max(gate_runs::updated_at))
        .first(conn)?;
    let approval_decisions: Option<i64> = approval_decisions::table
        .select(max(approval_decisions::id))
        .first(conn)?;
    let slots: Option<NaiveDateTime> = slots::table.select(max(slots::updated_at)).first(conn)?;
    Ok(Watermark {
        audit: audit.unwrap_or(0),
        builds: builds.unwrap_or(0),
        deployments: deployments.unwrap_or(0),
        tasks_started,
        tasks_finished,
        gate_samples: gate_samples.unwrap_or(0),
        gate_runs,
        approval_decisions: approval_decisions.unwrap_or(0),
        slots,
    })
}

/// The actions of the audit records after `after` (oldest first), at most
/// `limit` of them.
pub fn audit_actions_after(
    conn: &mut DbConn,
    after: i64,
    limit: i64,
) -> Result<Vec<String>, StorageError> {
    Ok(audit_events::table
        .filter(audit_events::id.gt(after))
        .order(audit_events::id.asc())
        .select(audit_events::action)
        .limit(limit)
        .load(conn)?)
}
