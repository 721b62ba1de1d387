//! Gate runs and their samples (issue 6). A run is `evaluating` until it
//! ends `passed`, `failed`, `bypassed` or `canceled`; every change is
//! conditional on `evaluating`, so two actors (the sampler and a release
//! manager's bypass) settle in the database.
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now};
use super::models::{DeploymentRow, GateRunRow, GateSampleRow};
use super::schema::{deployments, gate_runs, gate_samples};
use crate::domain::{DeploymentState, GateRunState, Phase};

/// The state of a run being sampled.
const EVALUATING: &str = GateRunState::Evaluating.as_str();

/// A gate run to insert.
#[derive(Clone, Debug)]
pub struct NewGateRun {
    pub deployment_id: i64,
    pub pipeline: String,
    pub release_version: String,
    pub stage: String,
    pub phase: Phase,
    pub started_at: NaiveDateTime,
    pub deadline_at: NaiveDateTime,
    pub next_at: NaiveDateTime,
    pub progress: String,
}

/// A sample to insert (borrowed: a round's samples are not copied to be
/// stored).
#[derive(Clone, Debug)]
pub struct NewGateSample<'a> {
    pub gate_run_id: i64,
    pub deployment_id: i64,
    pub phase: Phase,
    pub round: i32,
    pub check_name: &'a str,
    pub scheduled_at: NaiveDateTime,
    pub sampled_at: NaiveDateTime,
    pub duration_ms: i64,
    pub request: &'a str,
    pub value: &'a str,
    pub verdict: &'a str,
    pub body: Option<&'a str>,
}

/// What a round changes in its run.
#[derive(Clone, Debug)]
pub struct RoundUpdate {
    pub round: i32,
    pub next_at: Option<NaiveDateTime>,
    pub green_since: Option<NaiveDateTime>,
    pub progress: String,
    pub last_results: String,
}

/// Inserts an `evaluating` run.
pub fn insert_gate_run(conn: &mut DbConn, run: &NewGateRun) -> Result<i64, StorageError> {
    let at = now();
    let (id,): (i64,) = diesel::insert_into(gate_runs::table)
        .values((
            gate_runs::deployment_id.eq(run.deployment_id),
            gate_runs::pipeline.eq(&run.pipeline),
            gate_runs::release_version.eq(&run.release_version),
            gate_runs::stage.eq(&run.stage),
            gate_runs::phase.eq(run.phase.as_str()),
            gate_runs::state.eq(EVALUATING),
            gate_runs::started_at.eq(run.started_at),
            gate_runs::deadline_at.eq(run.deadline_at),
            gate_runs::next_at.eq(Some(run.next_at)),
            gate_runs::round.eq(0),
            gate_runs::progress.eq(&run.progress),
            gate_runs::last_results.eq("[]"),
            gate_runs::created_at.eq(at),
            gate_runs::updated_at.eq(at),
        ))
        .returning((gate_runs::id,))
        .get_result(conn)?;
    Ok(id)
}

/// One run by id.
pub fn find_gate_run(conn: &mut DbConn, id: i64) -> Result<Option<GateRunRow>, StorageError> {
    Ok(gate_runs::table
        .find(id)
        .select(GateRunRow::as_select())
        .first(conn)
        .optional()?)
}

/// The newest run of a deployment's phase, if any.
pub fn gate_run_of(
    conn: &mut DbConn,
    deployment_id: i64,
    phase: Phase,
) -> Result<Option<GateRunRow>, StorageError> {
    Ok(gate_runs::table
        .filter(gate_runs::deployment_id.eq(deployment_id))
        .filter(gate_runs::phase.eq(phase.as_str()))
        .order(gate_runs::id.desc())
        .select(GateRunRow::as_select())
        .first(conn)
        .optional()?)
}

/// Every run being sampled, oldest first.
pub fn evaluating_gate_runs(conn: &mut DbConn) -> Result<Vec<GateRunRow>, StorageError> {
    Ok(gate_runs::table
        .filter(gate_runs::state.eq(EVALUATING))
        .order(gate_runs::id.asc())
        .select(GateRunRow::as_select())
        .load(conn)?)
}

/// The ids of every run being sampled, oldest first (the scanner's view:
/// no row is read whole).
pub fn evaluating_gate_run_ids(conn: &mut DbConn) -> Result<Vec<i64>, StorageError> {
    Ok(gate_runs::table
        .filter(gate_runs::state.eq(EVALUATING))
        .order(gate_runs::id.asc())
        .select(gate_runs::id)
        .load(conn)?)
}

/// What a round needs to know of its run as it is now: `(id, state,
/// progress, deployment_id)` of each of `ids` that exists.
pub fn gate_runs_now(
    conn: &mut DbConn,
    ids: &[i64],
) -> Result<Vec<(i64, GateRunState, String, i64)>, StorageError> {
    Ok(gate_runs::table
        .filter(gate_runs::id.eq_any(ids))
        .select((
            gate_runs::id,
            gate_runs::state,
            gate_runs::progress,
            gate_runs::deployment_id,
        ))
        .load(conn)?)
}

/// What a round needs to know of its deployment as it is now: `(id, state,
/// whether its tasks started)` of each of `ids` that exists.
pub fn deployments_now(
    conn: &mut DbConn,
    ids: &[i64],
) -> Result<Vec<(i64, DeploymentState, bool)>, StorageError> {
    Ok(deployments::table
        .filter(deployments::id.eq_any(ids))
        .select((
            deployments::id,
            deployments::state,
            deployments::started_at.is_not_null(),
        ))
        .load(conn)?)
}

/// The most recently finished runs, newest first.
pub fn finished_gate_runs(conn: &mut DbConn, limit: i64) -> Result<Vec<GateRunRow>, StorageError> {
    Ok(gate_runs::table
        .filter(gate_runs::state.ne(EVALUATING))
        .order(gate_runs::id.desc())
        .limit(limit)
        .select(GateRunRow::as_select())
        .load(conn)?)
}

/// Every run of a deployment, oldest first.
pub fn gate_runs_of_deployment(
    conn: &mut DbConn,
    deployment_id: i64,
) -> Result<Vec<GateRunRow>, StorageError> {
    Ok(gate_runs::table
        .filter(gate_runs::deployment_id.eq(deployment_id))
        .order(gate_runs::id.asc())
        .select(GateRunRow::as_select())
        .load(conn)?)
}

/// Records a round's outcome on a run still `evaluating`; false otherwise.
pub fn record_round(
    conn: &mut DbConn,
    id: i64,
    update: &RoundUpdate,
) -> Result<bool, StorageError> {
    let n = diesel::update(
        gate_runs::table
            .find(id)
            .filter(gate_runs::state.eq(EVALUATING)),
    )
    .set((
        gate_runs::round.eq(update.round),
        gate_runs::next_at.eq(update.next_at),
        gate_runs::green_since.eq(update.green_since),
        gate_runs::progress.eq(&update.progress),
        gate_runs::last_results.eq(&update.last_results),
        gate_runs::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(n > 0)
}

/// Moves the next round of an `evaluating` run to `at` (re-evaluate now).
pub fn reschedule_gate_run(
    conn: &mut DbConn,
    id: i64,
    at: NaiveDateTime,
) -> Result<bool, StorageError> {
    let n = diesel::update(
        gate_runs::table
            .find(id)
            .filter(gate_runs::state.eq(EVALUATING)),
    )
    .set((
        gate_runs::next_at.eq(Some(at)),
        gate_runs::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(n > 0)
}

/// Records the question a run asks the stage's approvers.
pub fn set_gate_question(conn: &mut DbConn, id: i64, question: &str) -> Result<(), StorageError> {
    diesel::update(gate_runs::table.find(id))
        .set((
            gate_runs::question.eq(Some(question)),
            gate_runs::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// Clears the question of an `evaluating` run that asks one (an approver
/// answered it), storing `progress` when given; false when the run ended or
/// the question was answered already (so two answers settle here).
pub fn answer_gate_question(
    conn: &mut DbConn,
    id: i64,
    progress: Option<&str>,
) -> Result<bool, StorageError> {
    let target = gate_runs::table
        .find(id)
        .filter(gate_runs::state.eq(EVALUATING))
        .filter(gate_runs::question.is_not_null());
    let n = match progress {
        Some(progress) => diesel::update(target)
            .set((
                gate_runs::question.eq(None::<String>),
                gate_runs::progress.eq(progress),
                gate_runs::updated_at.eq(now()),
            ))
            .execute(conn)?,
        None => diesel::update(target)
            .set((
                gate_runs::question.eq(None::<String>),
                gate_runs::updated_at.eq(now()),
            ))
            .execute(conn)?,
    };
    Ok(n > 0)
}

/// Runs being sampled that ask their approvers a question, oldest first.
pub fn gate_runs_asking(conn: &mut DbConn) -> Result<Vec<GateRunRow>, StorageError> {
    Ok(gate_runs::table
        .filter(gate_runs::state.eq(EVALUATING))
        .filter(gate_runs::question.is_not_null())
        .order(gate_runs::id.asc())
        .select(GateRunRow::as_select())
        .load(conn)?)
}

/// How many samples a run has.
pub fn count_samples_of_run(conn: &mut DbConn, gate_run_id: i64) -> Result<i64, StorageError> {
    Ok(gate_samples::table
        .filter(gate_samples::gate_run_id.eq(gate_run_id))
        .count()
        .get_result(conn)?)
}

/// Ends an `evaluating` run in `state`; false when it had ended already.
pub fn finish_gate_run(
    conn: &mut DbConn,
    id: i64,
    state: GateRunState,
    reason: Option<&str>,
    by: &str,
) -> Result<bool, StorageError> {
    let at = now();
    let n = diesel::update(
        gate_runs::table
            .find(id)
            .filter(gate_runs::state.eq(EVALUATING)),
    )
    .set((
        gate_runs::state.eq(state.as_str()),
        gate_runs::reason.eq(reason),
        gate_runs::finished_by.eq(Some(by)),
        gate_runs::finished_at.eq(Some(at)),
        gate_runs::next_at.eq(None::<NaiveDateTime>),
        gate_runs::updated_at.eq(at),
    ))
    .execute(conn)?;
    Ok(n > 0)
}

/// The column values of the sample `$s` (a [`NewGateSample`]) stored at
/// `$at`, for [`insert_gate_sample`] and [`insert_gate_samples`].
macro_rules! sample_values {
    ($s:expr, $at:expr) => {
        (
            gate_samples::gate_run_id.eq(Some($s.gate_run_id)),
            gate_samples::deployment_id.eq($s.deployment_id),
            gate_samples::phase.eq($s.phase.as_str()),
            gate_samples::round.eq($s.round),
            gate_samples::check_name.eq($s.check_name),
            gate_samples::scheduled_at.eq(Some($s.scheduled_at)),
            gate_samples::sampled_at.eq($s.sampled_at),
            gate_samples::duration_ms.eq($s.duration_ms),
            gate_samples::request.eq($s.request),
            gate_samples::value.eq($s.value),
            gate_samples::verdict.eq($s.verdict),
            gate_samples::body.eq($s.body),
            gate_samples::created_at.eq($at),
        )
    };
}

/// Stores one sample.
pub fn insert_gate_sample(conn: &mut DbConn, s: &NewGateSample<'_>) -> Result<(), StorageError> {
    diesel::insert_into(gate_samples::table)
        .values(sample_values!(s, now()))
        .execute(conn)?;
    Ok(())
}

/// Stores samples with one multi-row `INSERT` per 500 of them.
pub fn insert_gate_samples(
    conn: &mut DbConn,
    samples: &[NewGateSample<'_>],
) -> Result<(), StorageError> {
    let at = now();
    for chunk in samples.chunks(500) {
        let rows: Vec<_> = chunk.iter().map(|s| sample_values!(s, at)).collect();
        // The multi-backend connection has no multi-row `INSERT`; each
        // backend's own connection has.
        let insert = diesel::insert_into(gate_samples::table).values(rows);
        match conn {
            DbConn::Sqlite(c) => insert.execute(c)?,
            DbConn::Pg(c) => insert.execute(c)?,
        };
    }
    Ok(())
}

/// The newest `limit` samples of a run, oldest first.
pub fn samples_of_run(
    conn: &mut DbConn,
    gate_run_id: i64,
    limit: i64,
) -> Result<Vec<GateSampleRow>, StorageError> {
    let mut rows: Vec<GateSampleRow> = gate_samples::table
        .filter(gate_samples::gate_run_id.eq(gate_run_id))
        .order(gate_samples::id.desc())
        .limit(limit)
        .select(GateSampleRow::as_select())
        .load(conn)?;
    rows.reverse();
    Ok(rows)
}

/// Every sample of a deployment, oldest first.
pub fn samples_of_deployment(
    conn: &mut DbConn,
    deployment_id: i64,
) -> Result<Vec<GateSampleRow>, StorageError> {
    Ok(gate_samples::table
        .filter(gate_samples::deployment_id.eq(deployment_id))
        .order(gate_samples::id.asc())
        .select(GateSampleRow::as_select())
        .load(conn)?)
}

/// Deployments in `evaluating_gates`, oldest first.
pub fn deployments_evaluating_gates(conn: &mut DbConn) -> Result<Vec<DeploymentRow>, StorageError> {
    Ok(deployments::table
        .filter(deployments::state.eq(DeploymentState::EvaluatingGates.as_str()))
        .order(deployments::id.asc())
        .select(DeploymentRow::as_select())
        .load(conn)?)
}

/// Deployments in `evaluating_gates`, oldest first, as `(id, whether its
/// tasks started)`.
pub fn deployments_evaluating_gates_brief(
    conn: &mut DbConn,
) -> Result<Vec<(i64, bool)>, StorageError> {
    Ok(deployments::table
        .filter(deployments::state.eq(DeploymentState::EvaluatingGates.as_str()))
        .order(deployments::id.asc())
        .select((deployments::id, deployments::started_at.is_not_null()))
        .load(conn)?)
}

/// The `(deployment_id, phase)` of every run (whatever its state) of the
/// deployments in `evaluating_gates`.
pub fn gate_run_phases_of_evaluating_deployments(
    conn: &mut DbConn,
) -> Result<Vec<(i64, Phase)>, StorageError> {
    let waiting = deployments::table
        .filter(deployments::state.eq(DeploymentState::EvaluatingGates.as_str()))
        .select(deployments::id);
    Ok(gate_runs::table
        .filter(gate_runs::deployment_id.eq_any(waiting))
        .select((gate_runs::deployment_id, gate_runs::phase))
        .distinct()
        .load(conn)?)
}

/// Deployments in `evaluating_gates` before their stage whose gate run
/// passed (or was bypassed): ready for the dispatcher to claim.
pub fn deployments_past_gates(
    conn: &mut DbConn,
    limit: i64,
) -> Result<Vec<DeploymentRow>, StorageError> {
    let passed = gate_runs::table
        .filter(gate_runs::phase.eq(Phase::Before.as_str()))
        .filter(
            gate_runs::state.eq_any(
                GateRunState::ALL
                    .iter()
                    .filter(|s| s.lets_through())
                    .map(GateRunState::as_str),
            ),
        )
        .select(gate_runs::deployment_id);
    Ok(deployments::table
        .filter(deployments::state.eq(DeploymentState::EvaluatingGates.as_str()))
        .filter(deployments::started_at.is_null())
        .filter(deployments::id.eq_any(passed))
        .order(deployments::id.asc())
        .limit(limit.max(0))
        .select(DeploymentRow::as_select())
        .load(conn)?)
}
