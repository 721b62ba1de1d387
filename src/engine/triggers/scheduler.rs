//! The in-process scheduler of scheduled triggers.
//!
//! tokio-cron-scheduler keeps the UTC offset a time-zone job was created
//! with, so it would drift by an hour at each DST change; it is used here
//! only for one job in UTC, every second, that dispatches what is due. The
//! wall-clock fire times are computed with croner + chrono-tz
//! ([`Schedule::next_fire`], DST rules in `docs/decisions.md`) and kept in
//! the database: `stages.next_fire_at` (UTC; NULL after an import changed
//! the trigger, then computed here) and `stages.last_fired_at`.
//!
//! - **Claim.** A due stage is claimed with a conditional update
//!   (`UPDATE stages SET next_fire_at = <next>, last_fired_at = <newest due>
//!   WHERE id = ? AND next_fire_at = <due>`): of several instances sharing
//!   the database exactly one moves it on. In the same transaction the
//!   winner asks for the deployment and records the fire in `trigger_runs`
//!   (unique per stage and instant) with its audit record, so a fire is
//!   recorded once and deploys at most once, also across a crash.
//! - **What a fire deploys.** The newest release that succeeded in the
//!   previous stage (for the first stage: the newest release), unless it or
//!   a newer one went to the stage already; then the fire is recorded as
//!   "skipped: nothing new" ([`schedules::pick_release`]).
//! - **Catch-up.** At start-up, fires that passed while no instance ran
//!   (`next_fire_at` more than [`GRACE`] in the past) are recorded as
//!   `missed` (the newest [`MISSED_LIMIT`] of them); with the stage's
//!   `catch_up: true` the newest of them runs instead. Then `next_fire_at`
//!   moves to the next instant after now. A tick that finds several
//!   instants due (the process stalled) runs the newest and records the
//!   others as missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{Schedule, TriggerOutcome};
use crate::engine::deploy::requests::{self, DeployOutcome, DeployRequest};
use crate::engine::triggers::schedules::{self, Pick, rfc3339};
use crate::engine::{ENGINE_ACTOR, blocking};
use crate::engine::{Engine, EngineError, pipelines};
use crate::storage::schedules::{self as store, NewTriggerRun};
use crate::storage::{self, Db, DbConn, StageRow};

/// A stored fire instant more than this far in the past at start-up was
/// missed while no instance ran.
pub const GRACE: Duration = Duration::from_secs(2);

/// How many missed instants of a stage are recorded at most (the newest).
pub const MISSED_LIMIT: usize = 100;

/// The `trigger` of the deployments a schedule asks for.
pub const SCHEDULE_TRIGGER: &str = "schedule";

/// The dispatcher job: every second, in UTC.
const TICK_CRON: &str = "* * * * * *";

/// Runs the scheduler on `tracker`: the catch-up pass, then the dispatch
/// job every second until `shutdown`. Called once by `Engine::start`.
pub(crate) fn run(engine: &Engine, db: &Db, shutdown: &CancellationToken, tracker: &TaskTracker) {
    let scheduler = Arc::new(Scheduler {
        instance: engine.runner_id().unwrap_or("unstarted").to_string(),
        engine: engine.clone(),
        db: db.clone(),
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
        busy: AtomicBool::new(false),
    });
    tracker.spawn(async move { scheduler.run().await });
}

struct Scheduler {
    engine: Engine,
    db: Db,
    instance: String,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// A tick is in flight (ticks never overlap).
    busy: AtomicBool,
}

/// Clears the scheduler's busy flag when dropped.
struct Idle<'a>(&'a AtomicBool);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Why a fire runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// At start-up: only instants missed while no instance ran.
    Startup,
    /// The every-second dispatch.
    Tick,
}

impl Scheduler {
    async fn run(self: Arc<Self>) {
        match self.clone().catch_up().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(stages = n, "schedules caught up after a downtime"),
            Err(e) => tracing::error!(error = %e, "schedule catch-up failed"),
        }
        let mut cron = match self.clone().cron_job().await {
            Ok(cron) => Some(cron),
            Err(e) => {
                tracing::error!(error = %e, "cannot start tokio-cron-scheduler; dispatching schedules from a plain timer");
                None
            }
        };
        if cron.is_some() {
            self.shutdown.cancelled().await;
        } else {
            let mut timer = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = timer.tick() => self.clone().kick(),
                    _ = self.shutdown.cancelled() => break,
                }
            }
        }
        if let Some(cron) = cron.as_mut()
            && let Err(e) = cron.shutdown().await
        {
            tracing::warn!(error = %e, "stopping tokio-cron-scheduler");
        }
    }

    /// The UTC job that dispatches due schedules every second.
    async fn cron_job(
        self: Arc<Self>,
    ) -> Result<JobScheduler, tokio_cron_scheduler::JobSchedulerError> {
        let cron = JobScheduler::new().await?;
        let me = self.clone();
        let job = Job::new_async(TICK_CRON, move |_id, _lock| {
            me.clone().kick();
            Box::pin(async {})
        })?;
        cron.add(job).await?;
        cron.start().await?;
        Ok(cron)
    }

    /// Starts a tick unless one is in flight or the engine stops.
    fn kick(self: Arc<Self>) {
        if self.shutdown.is_cancelled() || self.busy.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        self.tracker.spawn(async move {
            // Cleared however the tick ends (even by a panic), so the next
            // second ticks again.
            let _idle = Idle(&me.busy);
            if let Err(e) = me.tick(Pass::Tick).await {
                tracing::error!(error = %e, "schedule dispatcher");
            }
        });
    }

    /// The start-up pass; returns how many stages had missed fires.
    async fn catch_up(self: Arc<Self>) -> Result<usize, EngineError> {
        self.tick(Pass::Startup).await
    }

    /// Fires what is due; returns how many stages fired.
    async fn tick(&self, pass: Pass) -> Result<usize, EngineError> {
        let instance = self.instance.clone();
        let (fired, deployed) = blocking(&self.db, move |conn| {
            dispatch(conn, Utc::now(), pass, &instance)
        })
        .await?;
        if deployed > 0 {
            self.engine.notify_deployments();
        }
        Ok(fired)
    }
}

/// One pass over the schedule stages at `now`: computes missing fire
/// instants and fires the due ones, each in its own transaction. Returns
/// (stages fired, deployments asked for). Public for tests and benchmarks.
pub fn dispatch(
    conn: &mut DbConn,
    now: DateTime<Utc>,
    pass: Pass,
    instance: &str,
) -> Result<(usize, usize), EngineError> {
    let rows = store::schedule_stages(conn)?;
    let (mut fired, mut deployed) = (0, 0);
    for row in rows {
        let Some(schedule) = schedules::schedule_of_stage(&row) else {
            tracing::warn!(
                stage = row.name,
                spec = row.trigger_spec,
                "unreadable schedule"
            );
            continue;
        };
        let Some(next) = row.next_fire_at else {
            let first = schedule.next_fire(now).map(|t| t.naive_utc());
            store::init_next_fire(conn, row.id, &row.trigger_spec, first)?;
            continue;
        };
        let due = next.and_utc();
        let late = now - chrono::Duration::from_std(GRACE).unwrap_or_default();
        let is_due = match pass {
            Pass::Tick => due <= now,
            Pass::Startup => due < late,
        };
        if !is_due {
            continue;
        }
        match fire(conn, &row, &schedule, now, pass, instance) {
            Ok(Some(outcome)) => {
                fired += 1;
                if outcome == TriggerOutcome::Deployed {
                    deployed += 1;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(
                pipeline = row.pipeline_id,
                stage = row.name,
                error = %e,
                "a scheduled fire failed; it is tried again"
            ),
        }
    }
    Ok((fired, deployed))
}

/// Fires the stage's due instants in one transaction; `None` when another
/// instance claimed them first. Returns the outcome of the instant that ran
/// (`Missed` when none ran).
fn fire(
    conn: &mut DbConn,
    row: &StageRow,
    schedule: &Schedule,
    now: DateTime<Utc>,
    pass: Pass,
    instance: &str,
) -> Result<Option<TriggerOutcome>, EngineError> {
    let Some(due) = row.next_fire_at else {
        return Ok(None);
    };
    storage::write_transaction(conn, |conn| {
        let instants = schedule.due_fires(due.and_utc(), now, MISSED_LIMIT);
        let next = schedule.next_fire(now).map(|t| t.naive_utc());
        let last = instants.last().map(|t| t.naive_utc()).unwrap_or(due);
        if !store::claim_fire(conn, row.id, due, last, next)? {
            return Ok(None);
        }
        let pipeline = storage::pipeline_by_id(conn, row.pipeline_id)?;
        let runs_one = match pass {
            Pass::Tick => true,
            Pass::Startup => pipelines::load(conn, &pipeline.name)?
                .definition
                .stage(&row.name)
                .is_some_and(|s| s.catch_up),
        };
        let (missed, run) = match (runs_one, instants.split_last()) {
            (true, Some((last, earlier))) => (earlier, Some(*last)),
            (_, _) => (instants.as_slice(), None),
        };
        let fired_at = storage::now();
        let missed_detail = match pass {
            Pass::Startup => "missed: no Slipway instance was running".to_string(),
            Pass::Tick => "missed: the scheduler was late; the newest due fire ran".to_string(),
        };
        for instant in missed {
            store::insert_trigger_run(
                conn,
                &NewTriggerRun {
                    pipeline_id: row.pipeline_id,
                    stage: row.name.clone(),
                    scheduled_for: instant.naive_utc(),
                    fired_at,
                    outcome: TriggerOutcome::Missed,
                    detail: missed_detail.clone(),
                    release_id: None,
                    deployment_id: None,
                    instance: instance.to_string(),
                },
            )?;
        }
        let mut audit = serde_json::json!({
            "scheduled_for": instants.last().map(rfc3339),
            "missed": missed.len(),
            "next_fire_at": next.map(|t| rfc3339(&t.and_utc())),
        });
        let mut outcome = TriggerOutcome::Missed;
        if let Some(instant) = run {
            let catching_up = pass == Pass::Startup;
            let result = run_fire(conn, &pipeline.name, row, instant, catching_up)?;
            outcome = result.outcome;
            audit["outcome"] = result.outcome.as_str().into();
            audit["detail"] = result.detail.clone().into();
            audit["release"] = result.version.clone().into();
            audit["deployment"] = result.deployment_id.into();
            store::insert_trigger_run(
                conn,
                &NewTriggerRun {
                    pipeline_id: row.pipeline_id,
                    stage: row.name.clone(),
                    scheduled_for: instant.naive_utc(),
                    fired_at,
                    outcome: result.outcome,
                    detail: result.detail,
                    release_id: result.release_id,
                    deployment_id: result.deployment_id,
                    instance: instance.to_string(),
                },
            )?;
        }
        let last_detail = match run {
            Some(_) => audit["detail"].as_str().unwrap_or_default().to_string(),
            None => missed_detail.clone(),
        };
        store::record_last_fire(conn, row.id, outcome, &last_detail)?;
        let action = if run.is_some() {
            "schedule.fire"
        } else {
            "schedule.missed"
        };
        storage::append_audit(
            conn,
            ENGINE_ACTOR,
            action,
            &format!("stage:{}/{}", pipeline.name, row.name),
            &audit.to_string(),
        )?;
        Ok(Some(outcome))
    })
}

/// What one fire did.
struct FireResult {
    outcome: TriggerOutcome,
    detail: String,
    release_id: Option<i64>,
    version: Option<String>,
    deployment_id: Option<i64>,
}

/// Picks the release and asks for its deployment (in a savepoint, so a
/// refusal is recorded as `failed` without undoing the claim).
fn run_fire(
    conn: &mut DbConn,
    pipeline: &str,
    row: &StageRow,
    instant: DateTime<Utc>,
    catching_up: bool,
) -> Result<FireResult, EngineError> {
    let (release_id, version) = match schedules::pick_release(conn, row.pipeline_id, row)? {
        Pick::Nothing(detail) => {
            return Ok(FireResult {
                outcome: TriggerOutcome::Skipped,
                detail,
                release_id: None,
                version: None,
                deployment_id: None,
            });
        }
        Pick::Deploy {
            release_id,
            version,
        } => (release_id, version),
    };
    let when = rfc3339(&instant);
    let request = DeployRequest {
        pipeline: pipeline.to_string(),
        release: version.clone(),
        stage: row.name.clone(),
        trigger: SCHEDULE_TRIGGER.to_string(),
        requested_by: ENGINE_ACTOR.to_string(),
        reason: Some(if catching_up {
            format!("catch-up of the scheduled fire at {when}, missed while Slipway was down")
        } else {
            format!("scheduled fire at {when}")
        }),
        operation: None,
        override_reason: None,
    };
    let asked =
        storage::write_transaction(conn, |conn| requests::request_deployment(conn, &request));
    let catch = if catching_up { " (catch-up)" } else { "" };
    Ok(match asked {
        Ok(DeployOutcome::Queued(d)) => FireResult {
            outcome: TriggerOutcome::Deployed,
            detail: format!("deployed {version}{catch}"),
            release_id: Some(release_id),
            version: Some(version),
            deployment_id: Some(d.id),
        },
        Ok(DeployOutcome::AlreadyThere { deployment_id }) => FireResult {
            outcome: TriggerOutcome::Skipped,
            detail: format!(
                "{}: {version} is queued or running already",
                schedules::NOTHING_NEW
            ),
            release_id: Some(release_id),
            version: Some(version),
            deployment_id: Some(deployment_id),
        },
        Err(e @ (EngineError::Storage(_) | EngineError::Io { .. })) => return Err(e),
        Err(refused) => FireResult {
            outcome: TriggerOutcome::Failed,
            detail: format!("failed: {refused}"),
            release_id: Some(release_id),
            version: Some(version),
            deployment_id: None,
        },
    })
}
