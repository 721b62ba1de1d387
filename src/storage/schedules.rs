//! Scheduled triggers: the scheduler's state kept on `stages`
//! (`next_fire_at`, `last_fired_at`), the record of every fire in
//! `trigger_runs`, and the few deployment look-ups the scheduler and the
//! board's "why is this waiting" need (each one query, whatever the number
//! of stages or releases).
use chrono::NaiveDateTime;
use diesel::dsl::max;
use diesel::prelude::*;

use super::StorageError;
use super::conn::DbConn;
use super::models::StageRow;
use super::schema::{deployments, releases, stages, trigger_runs};
use crate::domain::{DeploymentState, TriggerOutcome};

/// `stages.trigger_kind` of a scheduled trigger.
pub const SCHEDULE_KIND: &str = "schedule";

/// One fire instant of a scheduled trigger and what it did.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = trigger_runs, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct TriggerRunRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub stage: String,
    /// The fire instant (UTC).
    pub scheduled_for: NaiveDateTime,
    /// When it was handled (for a missed one: when the miss was noticed).
    pub fired_at: NaiveDateTime,
    pub outcome: TriggerOutcome,
    /// In words: "skipped: nothing new", "deployed 1.0.7", why it failed…
    pub detail: String,
    pub release_id: Option<i64>,
    pub deployment_id: Option<i64>,
    /// The instance that handled it.
    pub instance: String,
}

/// A fire record to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTriggerRun {
    pub pipeline_id: i64,
    pub stage: String,
    pub scheduled_for: NaiveDateTime,
    pub fired_at: NaiveDateTime,
    pub outcome: TriggerOutcome,
    pub detail: String,
    pub release_id: Option<i64>,
    pub deployment_id: Option<i64>,
    pub instance: String,
}

/// Every stage with a scheduled trigger, over all pipelines.
pub fn schedule_stages(conn: &mut DbConn) -> Result<Vec<StageRow>, StorageError> {
    Ok(stages::table
        .filter(stages::trigger_kind.eq(SCHEDULE_KIND))
        .order(stages::id.asc())
        .select(StageRow::as_select())
        .load(conn)?)
}

/// A stage row by pipeline and name.
pub fn find_stage(
    conn: &mut DbConn,
    pipeline_id: i64,
    name: &str,
) -> Result<Option<StageRow>, StorageError> {
    Ok(stages::table
        .filter(stages::pipeline_id.eq(pipeline_id))
        .filter(stages::name.eq(name))
        .select(StageRow::as_select())
        .first(conn)
        .optional()?)
}

/// Sets the first fire instant of a schedule whose `next_fire_at` is NULL
/// (new, or its trigger changed), unless the trigger changed again
/// meanwhile. Returns whether this call set it.
pub fn init_next_fire(
    conn: &mut DbConn,
    stage_id: i64,
    trigger_spec: &str,
    next: Option<NaiveDateTime>,
) -> Result<bool, StorageError> {
    let Some(next) = next else {
        return Ok(false);
    };
    let updated = diesel::update(
        stages::table
            .filter(stages::id.eq(stage_id))
            .filter(stages::next_fire_at.is_null())
            .filter(stages::trigger_spec.eq(trigger_spec)),
    )
    .set(stages::next_fire_at.eq(next))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Claims the fire due at `due`: moves `next_fire_at` on to `next` (NULL
/// when the schedule never fires again) and records `last` (the newest
/// instant handled) as `last_fired_at`, only while `next_fire_at` still
/// equals `due`. The row count says who won: of several instances, exactly
/// one gets `true`.
pub fn claim_fire(
    conn: &mut DbConn,
    stage_id: i64,
    due: NaiveDateTime,
    last: NaiveDateTime,
    next: Option<NaiveDateTime>,
) -> Result<bool, StorageError> {
    let updated = diesel::update(
        stages::table
            .filter(stages::id.eq(stage_id))
            .filter(stages::next_fire_at.eq(due)),
    )
    .set((
        stages::next_fire_at.eq(next),
        stages::last_fired_at.eq(last),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Sets a stage's next fire instant (tests and benchmarks simulate a
/// downtime with it).
pub fn set_next_fire(
    conn: &mut DbConn,
    stage_id: i64,
    next: Option<NaiveDateTime>,
) -> Result<(), StorageError> {
    diesel::update(stages::table.find(stage_id))
        .set(stages::next_fire_at.eq(next))
        .execute(conn)?;
    Ok(())
}

/// Records one fire instant. An instant already recorded for the stage is a
/// [`StorageError::Conflict`].
pub fn insert_trigger_run(conn: &mut DbConn, run: &NewTriggerRun) -> Result<i64, StorageError> {
    let (id,): (i64,) = diesel::insert_into(trigger_runs::table)
        .values((
            trigger_runs::pipeline_id.eq(run.pipeline_id),
            trigger_runs::stage.eq(&run.stage),
            trigger_runs::scheduled_for.eq(run.scheduled_for),
            trigger_runs::fired_at.eq(run.fired_at),
            trigger_runs::outcome.eq(run.outcome.as_str()),
            trigger_runs::detail.eq(&run.detail),
            trigger_runs::release_id.eq(run.release_id),
            trigger_runs::deployment_id.eq(run.deployment_id),
            trigger_runs::instance.eq(&run.instance),
        ))
        .returning((trigger_runs::id,))
        .get_result(conn)
        .map_err(|e| {
            StorageError::from(e).conflict_as(|| {
                format!(
                    "the fire of {} at {} is recorded already",
                    run.stage, run.scheduled_for
                )
            })
        })?;
    Ok(id)
}

/// The newest `limit` fire records of a stage, newest first.
pub fn recent_trigger_runs(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
    limit: i64,
) -> Result<Vec<TriggerRunRow>, StorageError> {
    Ok(trigger_runs::table
        .filter(trigger_runs::pipeline_id.eq(pipeline_id))
        .filter(trigger_runs::stage.eq(stage))
        .order(trigger_runs::id.desc())
        .limit(limit.max(0))
        .select(TriggerRunRow::as_select())
        .load(conn)?)
}

/// Every fire record of a stage, oldest instant first (tests, audits).
pub fn trigger_runs_of_stage(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
) -> Result<Vec<TriggerRunRow>, StorageError> {
    Ok(trigger_runs::table
        .filter(trigger_runs::pipeline_id.eq(pipeline_id))
        .filter(trigger_runs::stage.eq(stage))
        .order((trigger_runs::scheduled_for.asc(), trigger_runs::id.asc()))
        .select(TriggerRunRow::as_select())
        .load(conn)?)
}

/// The newest fire record of each stage of these pipelines (one query).
pub fn latest_trigger_runs(
    conn: &mut DbConn,
    pipeline_ids: &[i64],
) -> Result<Vec<TriggerRunRow>, StorageError> {
    if pipeline_ids.is_empty() {
        return Ok(Vec::new());
    }
    let newest = diesel::alias!(trigger_runs as newest);
    let newest_ids = newest
        .filter(newest.field(trigger_runs::pipeline_id).eq_any(pipeline_ids))
        .group_by((
            newest.field(trigger_runs::pipeline_id),
            newest.field(trigger_runs::stage),
        ))
        .select(max(newest.field(trigger_runs::id)));
    Ok(trigger_runs::table
        .filter(trigger_runs::id.nullable().eq_any(newest_ids))
        .select(TriggerRunRow::as_select())
        .load(conn)?)
}

/// The newest release of a pipeline (what a first stage's schedule deploys).
pub fn newest_release_id(conn: &mut DbConn, pipeline_id: i64) -> Result<Option<i64>, StorageError> {
    Ok(releases::table
        .filter(releases::pipeline_id.eq(pipeline_id))
        .select(max(releases::id))
        .first(conn)?)
}

/// The newest release with a succeeded deployment in `stage`.
pub fn newest_succeeded_release_id(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
) -> Result<Option<i64>, StorageError> {
    Ok(deployments::table
        .filter(deployments::pipeline_id.eq(pipeline_id))
        .filter(deployments::stage.eq(stage))
        .filter(deployments::state.eq(DeploymentState::Succeeded.as_str()))
        .select(max(deployments::release_id))
        .first(conn)?)
}

/// The newest release with any deployment (whatever its state) in `stage`.
pub fn newest_deployed_release_id(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
) -> Result<Option<i64>, StorageError> {
    Ok(deployments::table
        .filter(deployments::pipeline_id.eq(pipeline_id))
        .filter(deployments::stage.eq(stage))
        .select(max(deployments::release_id))
        .first(conn)?)
}

/// Per stage of a pipeline, the newest release that succeeded there (one query).
pub fn newest_succeeded_per_stage(
    conn: &mut DbConn,
    pipeline_id: i64,
) -> Result<Vec<(String, i64)>, StorageError> {
    let rows: Vec<(String, Option<i64>)> = deployments::table
        .filter(deployments::pipeline_id.eq(pipeline_id))
        .filter(deployments::state.eq(DeploymentState::Succeeded.as_str()))
        .group_by(deployments::stage)
        .select((deployments::stage, max(deployments::release_id)))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(stage, id)| id.map(|id| (stage, id)))
        .collect())
}

/// Every queued deployment as `(id, pipeline_id, stage)`, oldest first: the
/// queues whose positions the board shows (one query over an index).
pub fn queued_deployments(conn: &mut DbConn) -> Result<Vec<(i64, i64, String)>, StorageError> {
    Ok(deployments::table
        .filter(deployments::state.eq(DeploymentState::Queued.as_str()))
        .order(deployments::id.asc())
        .select((
            deployments::id,
            deployments::pipeline_id,
            deployments::stage,
        ))
        .load(conn)?)
}

/// The versions of these releases (one query), as `(id, version)`.
pub fn release_versions(
    conn: &mut DbConn,
    ids: &[i64],
) -> Result<Vec<(i64, String)>, StorageError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(releases::table
        .filter(releases::id.eq_any(ids))
        .select((releases::id, releases::version))
        .load(conn)?)
}

/// Keeps what the last fire of a stage did on its row (for the board).
pub fn record_last_fire(
    conn: &mut DbConn,
    stage_id: i64,
    outcome: TriggerOutcome,
    detail: &str,
) -> Result<(), StorageError> {
    diesel::update(stages::table.find(stage_id))
        .set((
            stages::last_fire_outcome.eq(outcome.as_str()),
            stages::last_fire_detail.eq(detail),
        ))
        .execute(conn)?;
    Ok(())
}

/// The last fire of each scheduled stage of these pipelines (one query):
/// `(pipeline_id, stage, outcome, detail)`.
pub fn last_fires(
    conn: &mut DbConn,
    pipeline_ids: &[i64],
) -> Result<Vec<(i64, String, TriggerOutcome, String)>, StorageError> {
    if pipeline_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, String, Option<String>, Option<String>)> = stages::table
        .filter(stages::pipeline_id.eq_any(pipeline_ids))
        .filter(stages::last_fire_outcome.is_not_null())
        .select((
            stages::pipeline_id,
            stages::name,
            stages::last_fire_outcome,
            stages::last_fire_detail,
        ))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(p, s, o, d)| {
            let outcome = o?.parse().ok()?;
            Some((p, s, outcome, d.unwrap_or_default()))
        })
        .collect())
}
