//! Deployments: one attempt to deploy one release to one stage, with the
//! queries of the deployment engine (queue, claim, heartbeat, recovery) and
//! the task runs and log chunks of a deployment.
//!
//! State changes are conditional updates (`… WHERE state = <from>`): the
//! caller checked the domain transition, and `false` means another actor
//! moved the deployment first. Callers that read before they write lock the
//! pipeline row first ([`lock_pipeline`]), the same lock builds take, so two
//! instances queuing or claiming deployments of one pipeline take turns.
use diesel::dsl::{exists, max};
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now, write_transaction};
use super::models::{DeploymentRow, LogChunkRow, TaskRunRow};
use super::runs::run_lease_queries;
use super::schema::{deployments, log_chunks, pipelines, task_runs};
use crate::domain::{DeploymentState, TaskRunState};

/// A deployment to insert; `attempt` and `created_at` are set by
/// [`insert_deployment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    pub pipeline_id: i64,
    pub release_id: i64,
    pub stage: String,
    pub state: DeploymentState,
    /// What started it: `manual`, `schedule`, `after:build`, `rollback`…
    pub trigger: String,
    pub requested_by: String,
    /// Why (required for a rollback).
    pub reason: Option<String>,
}

/// The states in which a deployment waits or runs (at most one per release and stage).
pub const ACTIVE_STATES: [DeploymentState; 4] = [
    DeploymentState::Queued,
    DeploymentState::WaitingForApproval,
    DeploymentState::EvaluatingGates,
    DeploymentState::Running,
];

/// The states in which a deployment waits (and can be superseded).
pub const WAITING_STATES: [DeploymentState; 3] = [
    DeploymentState::Queued,
    DeploymentState::WaitingForApproval,
    DeploymentState::EvaluatingGates,
];

fn texts(states: &[DeploymentState]) -> Vec<&'static str> {
    states.iter().map(|s| s.as_str()).collect()
}

/// Inserts a deployment as the next attempt of its release in its stage.
/// A second active deployment of the same release and stage is a
/// [`StorageError::Conflict`] (a unique index says so).
pub fn insert_deployment(
    conn: &mut DbConn,
    deployment: &NewDeployment,
) -> Result<DeploymentRow, StorageError> {
    write_transaction(conn, |conn| {
        let last: Option<i32> = deployments::table
            .filter(deployments::release_id.eq(deployment.release_id))
            .filter(deployments::stage.eq(&deployment.stage))
            .select(max(deployments::attempt))
            .first(conn)?;
        let attempt = last.unwrap_or(0) + 1;
        let created_at = now();
        let (id,): (i64,) = diesel::insert_into(deployments::table)
            .values((
                deployments::pipeline_id.eq(deployment.pipeline_id),
                deployments::release_id.eq(deployment.release_id),
                deployments::stage.eq(&deployment.stage),
                deployments::attempt.eq(attempt),
                deployments::state.eq(deployment.state.as_str()),
                deployments::trigger.eq(&deployment.trigger),
                deployments::requested_by.eq(&deployment.requested_by),
                deployments::reason.eq(&deployment.reason),
                deployments::created_at.eq(created_at),
            ))
            .returning((deployments::id,))
            .get_result(conn)
            .map_err(|e| {
                StorageError::from(e).conflict_as(|| {
                    format!(
                        "another deployment to {} was created at the same time",
                        deployment.stage
                    )
                })
            })?;
        Ok(DeploymentRow {
            id,
            pipeline_id: deployment.pipeline_id,
            release_id: deployment.release_id,
            stage: deployment.stage.clone(),
            attempt,
            state: deployment.state,
            trigger: deployment.trigger.clone(),
            requested_by: deployment.requested_by.clone(),
            reason: deployment.reason.clone(),
            superseded_by: None,
            runner: None,
            heartbeat_at: None,
            created_at,
            started_at: None,
            finished_at: None,
            error: None,
            operation: None,
            override_by: None,
            override_reason: None,
        })
    })
}

/// Sets what a deployment does instead of its stage's tasks, and who
/// overrode its approvals and gates (why), right after
/// [`insert_deployment`] in the same transaction.
pub fn set_operation(
    conn: &mut DbConn,
    id: i64,
    operation: Option<&str>,
    override_by: Option<&str>,
    override_reason: Option<&str>,
) -> Result<(), StorageError> {
    diesel::update(deployments::table.find(id))
        .set((
            deployments::operation.eq(operation),
            deployments::override_by.eq(override_by),
            deployments::override_reason.eq(override_reason),
        ))
        .execute(conn)?;
    Ok(())
}

/// Every deployment of a release, oldest first.
pub fn deployments_of_release(
    conn: &mut DbConn,
    release_id: i64,
) -> Result<Vec<DeploymentRow>, StorageError> {
    Ok(deployments::table
        .filter(deployments::release_id.eq(release_id))
        .order(deployments::id.asc())
        .select(DeploymentRow::as_select())
        .load(conn)?)
}

pub fn find_deployment(conn: &mut DbConn, id: i64) -> Result<Option<DeploymentRow>, StorageError> {
    Ok(deployments::table
        .find(id)
        .select(DeploymentRow::as_select())
        .first(conn)
        .optional()?)
}

/// The deployments of `ids` (those that exist), in one query.
pub fn find_deployments(
    conn: &mut DbConn,
    ids: &[i64],
) -> Result<Vec<DeploymentRow>, StorageError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(deployments::table
        .filter(deployments::id.eq_any(ids))
        .select(DeploymentRow::as_select())
        .load(conn)?)
}

/// Per stage of the pipeline `$pipeline_id`, the deployment with the highest
/// id (of those in `$state`, when given), ordered by stage name: one query
/// with a grouped subquery, shared by the two "newest per stage" reads.
macro_rules! newest_per_stage {
    ($conn:expr, $pipeline_id:expr $(, $state:expr)?) => {{
        let newest = diesel::alias!(deployments as newest);
        let newest_ids = newest
            .filter(newest.field(deployments::pipeline_id).eq($pipeline_id))
            $(.filter(newest.field(deployments::state).eq($state.as_str())))?
            .group_by(newest.field(deployments::stage))
            .select(max(newest.field(deployments::id)));
        Ok(deployments::table
            .filter(deployments::id.nullable().eq_any(newest_ids))
            .order(deployments::stage.asc())
            .select(DeploymentRow::as_select())
            .load($conn)?)
    }};
}

/// What runs in each stage of a pipeline now: per stage, the newest
/// succeeded deployment (ordered by stage name).
pub fn latest_deployment_per_stage(
    conn: &mut DbConn,
    pipeline_id: i64,
) -> Result<Vec<DeploymentRow>, StorageError> {
    newest_per_stage!(conn, pipeline_id, DeploymentState::Succeeded)
}

/// The newest deployment of each stage of a pipeline, whatever its state
/// (ordered by stage name): what the pipeline drawing shows per stage.
pub fn newest_deployment_per_stage(
    conn: &mut DbConn,
    pipeline_id: i64,
) -> Result<Vec<DeploymentRow>, StorageError> {
    newest_per_stage!(conn, pipeline_id)
}

/// The newest deployments to a stage, newest first, at most `limit`.
pub fn recent_deployments_of_stage(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
    limit: i64,
) -> Result<Vec<DeploymentRow>, StorageError> {
    Ok(deployments::table
        .filter(deployments::pipeline_id.eq(pipeline_id))
        .filter(deployments::stage.eq(stage))
        .order(deployments::id.desc())
        .limit(limit)
        .select(DeploymentRow::as_select())
        .load(conn)?)
}

/// The releases that succeeded in a stage, as `release_id`s, newest
/// success first, each once, at most `limit` (the rollback picker).
pub fn releases_succeeded_in_stage(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
    limit: i64,
) -> Result<Vec<i64>, StorageError> {
    let mut rows: Vec<(i64, Option<i64>)> = deployments::table
        .filter(deployments::pipeline_id.eq(pipeline_id))
        .filter(deployments::stage.eq(stage))
        .filter(deployments::state.eq(DeploymentState::Succeeded.as_str()))
        .group_by(deployments::release_id)
        .select((deployments::release_id, max(deployments::id)))
        .load(conn)?;
    rows.sort_unstable_by_key(|r| std::cmp::Reverse(r.1));
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(rows.into_iter().map(|(release, _)| release).collect())
}

/// Locks the pipeline row until the end of the transaction (a no-op
/// update), so writers that read first (queue, claim) take turns across
/// instances. `false` when the pipeline does not exist.
pub fn lock_pipeline(conn: &mut DbConn, pipeline_id: i64) -> Result<bool, StorageError> {
    let locked = diesel::update(pipelines::table.find(pipeline_id))
        .set(pipelines::current_revision.eq(pipelines::current_revision))
        .execute(conn)?;
    Ok(locked > 0)
}

/// The deployment of this release to this stage that waits or runs, if any.
pub fn active_deployment(
    conn: &mut DbConn,
    release_id: i64,
    stage: &str,
) -> Result<Option<DeploymentRow>, StorageError> {
    Ok(deployments::table
        .filter(deployments::release_id.eq(release_id))
        .filter(deployments::stage.eq(stage))
        .filter(deployments::state.eq_any(texts(&ACTIVE_STATES)))
        .order(deployments::id.desc())
        .select(DeploymentRow::as_select())
        .first(conn)
        .optional()?)
}

/// The deployments of a stage that wait (queued, for approval, on gates), oldest first.
pub fn waiting_deployments(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
) -> Result<Vec<DeploymentRow>, StorageError> {
    Ok(deployments::table
        .filter(deployments::pipeline_id.eq(pipeline_id))
        .filter(deployments::stage.eq(stage))
        .filter(deployments::state.eq_any(texts(&WAITING_STATES)))
        .order(deployments::id.asc())
        .select(DeploymentRow::as_select())
        .load(conn)?)
}

/// The newest succeeded deployment of a stage: its release is the one "in" the stage.
pub fn current_deployment(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
) -> Result<Option<DeploymentRow>, StorageError> {
    Ok(deployments::table
        .filter(deployments::pipeline_id.eq(pipeline_id))
        .filter(deployments::stage.eq(stage))
        .filter(deployments::state.eq(DeploymentState::Succeeded.as_str()))
        .order(deployments::id.desc())
        .select(DeploymentRow::as_select())
        .first(conn)
        .optional()?)
}

/// The newest succeeded deployment of a stage that put `release_id` there;
/// with `before`, only older ones (ids below it) and only of another release.
pub fn succeeded_deployment(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
    release_id: i64,
    before: Option<i64>,
) -> Result<Option<DeploymentRow>, StorageError> {
    let mut query = deployments::table
        .filter(deployments::pipeline_id.eq(pipeline_id))
        .filter(deployments::stage.eq(stage))
        .filter(deployments::state.eq(DeploymentState::Succeeded.as_str()))
        .into_boxed();
    query = match before {
        Some(id) => query
            .filter(deployments::id.lt(id))
            .filter(deployments::release_id.ne(release_id)),
        None => query.filter(deployments::release_id.eq(release_id)),
    };
    Ok(query
        .order(deployments::id.desc())
        .select(DeploymentRow::as_select())
        .first(conn)
        .optional()?)
}

/// Whether the release has a deployment to `stage` in `state` (any attempt;
/// `None`: in any state).
pub fn release_has_deployment(
    conn: &mut DbConn,
    release_id: i64,
    stage: &str,
    state: Option<DeploymentState>,
) -> Result<bool, StorageError> {
    let of_stage = deployments::table
        .filter(deployments::release_id.eq(release_id))
        .filter(deployments::stage.eq(stage));
    Ok(match state {
        Some(state) => diesel::select(exists(
            of_stage.filter(deployments::state.eq(state.as_str())),
        ))
        .get_result(conn)?,
        None => diesel::select(exists(of_stage)).get_result(conn)?,
    })
}

/// Moves a deployment from `from` to `to` (the caller checked the domain
/// transition), recording `error` when given; `finished_at` is set when `to`
/// is terminal. `false` when it was not in `from`.
pub fn transition_deployment(
    conn: &mut DbConn,
    id: i64,
    from: DeploymentState,
    to: DeploymentState,
    error: Option<&str>,
) -> Result<bool, StorageError> {
    let finished_at = to.is_terminal().then(now);
    let target = deployments::table
        .find(id)
        .filter(deployments::state.eq(from.as_str()));
    let updated = match error {
        Some(error) => diesel::update(target)
            .set((
                deployments::state.eq(to.as_str()),
                deployments::finished_at.eq(finished_at),
                deployments::error.eq(error),
            ))
            .execute(conn)?,
        None => diesel::update(target)
            .set((
                deployments::state.eq(to.as_str()),
                deployments::finished_at.eq(finished_at),
            ))
            .execute(conn)?,
    };
    Ok(updated > 0)
}

/// `from → superseded` by the release `by` (conditional on `from`).
pub fn supersede_deployment(
    conn: &mut DbConn,
    id: i64,
    from: DeploymentState,
    by_release: i64,
) -> Result<bool, StorageError> {
    let updated = diesel::update(
        deployments::table
            .find(id)
            .filter(deployments::state.eq(from.as_str())),
    )
    .set((
        deployments::state.eq(DeploymentState::Superseded.as_str()),
        deployments::superseded_by.eq(by_release),
        deployments::finished_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

/// `queued → running` for `runner` (sets `started_at` and the heartbeat);
/// `false` when it was no longer queued.
pub fn start_deployment(conn: &mut DbConn, id: i64, runner: &str) -> Result<bool, StorageError> {
    let at = now();
    let updated = diesel::update(
        deployments::table
            .find(id)
            // Queued, or past its gates or approvals before the stage
            // (`engine::deploy::gates`, `engine::deploy::approvals`).
            .filter(deployments::state.eq_any([
                DeploymentState::Queued.as_str(),
                DeploymentState::EvaluatingGates.as_str(),
                DeploymentState::WaitingForApproval.as_str(),
            ])),
    )
    .set((
        deployments::state.eq(DeploymentState::Running.as_str()),
        deployments::runner.eq(runner),
        deployments::heartbeat_at.eq(at),
        deployments::started_at.eq(at),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

/// How many deployments of a stage are running.
pub fn count_running_deployments(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
) -> Result<i64, StorageError> {
    Ok(deployments::table
        .filter(deployments::pipeline_id.eq(pipeline_id))
        .filter(deployments::stage.eq(stage))
        .filter(deployments::state.eq(DeploymentState::Running.as_str()))
        .count()
        .get_result(conn)?)
}

/// Whether a queued deployment of the stage is older (smaller id) than `id`.
pub fn older_queued_exists(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
    id: i64,
) -> Result<bool, StorageError> {
    Ok(diesel::select(exists(
        deployments::table
            .filter(deployments::pipeline_id.eq(pipeline_id))
            .filter(deployments::stage.eq(stage))
            .filter(deployments::state.eq(DeploymentState::Queued.as_str()))
            .filter(deployments::id.lt(id)),
    ))
    .get_result(conn)?)
}

/// Queued deployments, oldest first (the dispatcher's work list).
pub fn queued_deployments(
    conn: &mut DbConn,
    limit: i64,
) -> Result<Vec<DeploymentRow>, StorageError> {
    Ok(deployments::table
        .filter(deployments::state.eq(DeploymentState::Queued.as_str()))
        .order(deployments::id.asc())
        .limit(limit.max(0))
        .select(DeploymentRow::as_select())
        .load(conn)?)
}

run_lease_queries! {
    table: deployments, row: DeploymentRow, state: DeploymentState,
    /// Marks the running deployments of `runner` alive; returns how many.
    heartbeat: heartbeat_deployments,
    /// Running deployments whose runner is gone: those of any runner not heard
    /// from since `stale_before`, and, when given, every one of `runner` (an
    /// instance that has just started: they are left from its previous process).
    orphaned: orphaned_deployments,
    /// The states of these deployments, by id.
    states: deployment_states,
}

/// The task runs of a deployment, in order.
pub fn task_runs_of_deployment(
    conn: &mut DbConn,
    deployment_id: i64,
) -> Result<Vec<TaskRunRow>, StorageError> {
    Ok(task_runs::table
        .filter(task_runs::deployment_id.eq(deployment_id))
        .order((task_runs::position.asc(), task_runs::id.asc()))
        .select(TaskRunRow::as_select())
        .load(conn)?)
}

/// Closes the unfinished task runs of a deployment: running ones become
/// `running_to` (interrupted, canceled, failed), pending ones `skipped`.
/// Returns how many changed.
pub fn close_task_runs_of_deployment(
    conn: &mut DbConn,
    deployment_id: i64,
    running_to: TaskRunState,
) -> Result<usize, StorageError> {
    let running = diesel::update(
        task_runs::table
            .filter(task_runs::deployment_id.eq(deployment_id))
            .filter(task_runs::state.eq(TaskRunState::Running.as_str())),
    )
    .set((
        task_runs::state.eq(running_to.as_str()),
        task_runs::finished_at.eq(now()),
    ))
    .execute(conn)?;
    let pending = diesel::update(
        task_runs::table
            .filter(task_runs::deployment_id.eq(deployment_id))
            .filter(task_runs::state.eq(TaskRunState::Pending.as_str())),
    )
    .set(task_runs::state.eq(TaskRunState::Skipped.as_str()))
    .execute(conn)?;
    Ok(running + pending)
}

/// The chunks of every task of a deployment with `seq > after_seq`, in
/// order, at most `limit` (live tailing: pass the last `seq` seen).
pub fn log_chunks_of_deployment_after(
    conn: &mut DbConn,
    deployment_id: i64,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<LogChunkRow>, StorageError> {
    Ok(log_chunks::table
        .inner_join(task_runs::table)
        .filter(task_runs::deployment_id.eq(deployment_id))
        .filter(log_chunks::seq.gt(after_seq))
        .order(log_chunks::seq.asc())
        .limit(limit.max(0))
        .select(LogChunkRow::as_select())
        .load(conn)?)
}
