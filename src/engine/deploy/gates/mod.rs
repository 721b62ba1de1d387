//! Gates (issue 6): health checks sampled before or after a stage until all
//! of them are green in the same round and stay green for `steady`.
//!
//! - **Runs.** A deployment that enters `evaluating_gates` gets a gate run
//!   (`gate_runs`: phase `before` when its tasks have not run, else
//!   `after`). The [`Gates`] scanner finds such deployments (woken by
//!   [`Gates::notify`] and every second) and starts a run; the same scan
//!   resumes the runs a restarted server left `evaluating`.
//! - **Timers.** Each run is one tokio task sleeping until its next round
//!   (`next_at`, stored), never a thread or a busy loop. A round samples
//!   every check concurrently with one pooled HTTP client, then stores the
//!   samples, the run's progress and — when it ended — the deployment's
//!   transition with its audit record, in one transaction. The decision is
//!   the domain's ([`crate::domain::gate_eval::after_round`]).
//! - **Resume.** Times are absolute (started, deadline, next round), so a
//!   restarted server resumes sampling where it was with the elapsed time
//!   counted.
//! - **Outcome.** Passed before the stage → approvals (when they come after
//!   gates) or left for the deployment dispatcher to claim and run; passed
//!   after the stage → approvals after it, else `succeeded` (and the
//!   stages `after:` it requested). Timed out → `failed` with the reason
//!   and the last values.
//! - **People.** A release manager can re-evaluate now or bypass a run
//!   with a reason (`gate.reevaluate`, `gate.bypass`, audited); the
//!   approvers answer a run's question about inconclusive samples
//!   ([`questions`], `gate.answer`).
//! - **Writes.** Timers hand their rounds to one writer task, which stores
//!   every round that is waiting in one transaction (two reads and one
//!   multi-row sample `INSERT` per batch; a batch that fails is stored again
//!   round by round), so 1,000 gates cost a few commits a second rather
//!   than 200.
pub mod checks;
pub mod questions;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::checks::{CheckContext, Sample};
use crate::domain::gate_eval::{self, CheckResult, GateDecision, GateProgress, GateTiming};
use crate::domain::secrets::Masker;
use crate::domain::{
    ApprovalOrder, DeploymentEvent, DeploymentState, GatePolicy, GateRunState, Phase, Stage,
};
use crate::engine::deploy::requests;
use crate::engine::deploy::transitions::{self, subject};
use crate::engine::secrets::{self, SecretKey};
use crate::engine::{ENGINE_ACTOR, blocking};
use crate::engine::{EngineError, pipelines};
use crate::storage::gates::{self as store, NewGateRun, NewGateSample, RoundUpdate};
use crate::storage::{self, Db, DbConn, DeploymentRow, GateRunRow, GateSampleRow};

/// The last result of one check, as stored with its run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastResult {
    pub name: String,
    /// `pass`, `fail`, `inconclusive`, or `None` before the first sample.
    pub verdict: Option<String>,
    pub value: Option<String>,
    pub sampled_at: Option<NaiveDateTime>,
}

/// Called when a gate run ended (to wake the deployment dispatcher).
pub type OnFinish = Arc<dyn Fn() + Send + Sync>;

/// The gates of this instance: the scanner and one timer per run.
#[derive(Clone)]
pub struct Gates {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    secret_key: Arc<SecretKey>,
    http: reqwest::Client,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// The runs with a timer on this instance, and how to wake each.
    timers: Mutex<HashMap<i64, Arc<Notify>>>,
    scan: Notify,
    on_finish: Mutex<Option<OnFinish>>,
    /// Rounds waiting for the writer (see [`Gates::write_loop`]).
    writes: tokio::sync::mpsc::UnboundedSender<PendingRound>,
    write_queue: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<PendingRound>>>,
}

/// A round for the writer, and where its outcome goes.
struct PendingRound {
    loaded: Loaded,
    round: Round,
    /// The next round's time, or `None` when the run ended.
    reply: tokio::sync::oneshot::Sender<Result<Option<NaiveDateTime>, EngineError>>,
}

/// Rounds stored in one transaction at most.
const WRITE_BATCH: usize = 512;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Gates {
    /// The gates over `db`; nothing runs until [`Gates::start`].
    pub fn new(
        db: Db,
        secret_key: Arc<SecretKey>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Gates {
        let (writes, write_queue) = tokio::sync::mpsc::unbounded_channel();
        Gates {
            inner: Arc::new(Inner {
                db,
                secret_key,
                http: checks::http_client(),
                shutdown,
                tracker,
                timers: Mutex::new(HashMap::new()),
                scan: Notify::new(),
                on_finish: Mutex::new(None),
                writes,
                write_queue: Mutex::new(Some(write_queue)),
            }),
        }
    }

    /// Starts the scanner (which also resumes the runs left `evaluating`).
    pub fn start(&self, on_finish: OnFinish) {
        *lock(&self.inner.on_finish) = Some(on_finish);
        if let Some(queue) = lock(&self.inner.write_queue).take() {
            let db = self.inner.db.clone();
            let shutdown = self.inner.shutdown.clone();
            self.inner
                .tracker
                .spawn(async move { write_loop(db, queue, shutdown).await });
        }
        let me = self.clone();
        self.inner
            .tracker
            .spawn(async move { me.scan_loop().await });
    }

    /// Looks for deployments that entered `evaluating_gates` now.
    pub fn notify(&self) {
        self.inner.scan.notify_one();
    }

    /// The runs with a timer on this instance.
    pub fn active_runs(&self) -> usize {
        lock(&self.inner.timers).len()
    }

    async fn scan_loop(self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            if let Err(e) = self.scan_once().await {
                tracing::error!(error = %e, "gate scan");
            }
            tokio::select! {
                _ = self.inner.scan.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// Starts runs for deployments waiting on gates, and timers for runs
    /// without one.
    async fn scan_once(&self) -> Result<(), EngineError> {
        // Every second: two narrow queries find the deployments without a
        // run for their phase (usually none), and one the runs' ids; whole
        // rows are read only for what starts.
        let runs = blocking(&self.inner.db, |conn| {
            let waiting = store::deployments_evaluating_gates_brief(conn)?;
            if !waiting.is_empty() {
                let existing: HashSet<(i64, Phase)> =
                    store::gate_run_phases_of_evaluating_deployments(conn)?
                        .into_iter()
                        .collect();
                for (id, started) in waiting {
                    let phase = Phase::of_started(started);
                    if existing.contains(&(id, phase)) {
                        continue;
                    }
                    let Some(d) = storage::find_deployment(conn, id)? else {
                        continue;
                    };
                    if d.state != DeploymentState::EvaluatingGates || phase_of(&d) != phase {
                        continue; // Moved on meanwhile.
                    }
                    if store::gate_run_of(conn, d.id, phase)?.is_none()
                        && let Err(e) = start_run(conn, &d, phase)
                    {
                        tracing::error!(deployment = d.id, error = %e, "cannot start a gate run");
                    }
                }
            }
            Ok(store::evaluating_gate_run_ids(conn)?)
        })
        .await?;
        for id in runs {
            self.ensure_timer(id);
        }
        Ok(())
    }

    fn ensure_timer(&self, id: i64) {
        let wake = {
            let mut timers = lock(&self.inner.timers);
            if timers.contains_key(&id) {
                return;
            }
            let wake = Arc::new(Notify::new());
            timers.insert(id, wake.clone());
            wake
        };
        let me = self.clone();
        self.inner.tracker.spawn(async move {
            if let Err(e) = me.drive(id, wake).await {
                tracing::error!(gate_run = id, error = %e, "gate run");
            }
            lock(&me.inner.timers).remove(&id);
        });
    }

    /// The timer of one run: sleep until the next round, sample, record.
    async fn drive(&self, id: i64, wake: Arc<Notify>) -> Result<(), EngineError> {
        let key = self.inner.secret_key.clone();
        let loaded = blocking(&self.inner.db, move |conn| load_run(conn, &key, id)).await?;
        let Some(mut loaded) = loaded else {
            return Ok(());
        };
        let mut next = loaded.run.next_at;
        loop {
            let Some(next_at) = next else {
                return Ok(());
            };
            let wait = (next_at - storage::now())
                .to_std()
                .unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {
                    // Re-evaluated or bypassed: read the run again.
                    match blocking(&self.inner.db, move |conn| Ok(store::find_gate_run(conn, id)?)).await? {
                        Some(run) if run.state == GateRunState::Evaluating => {
                            next = run.next_at;
                            loaded.run = Arc::new(run);
                            continue;
                        }
                        _ => return Ok(()),
                    }
                }
                _ = self.inner.shutdown.cancelled() => return Ok(()),
            }
            let shared = &loaded.shared;
            let samples = futures_util::future::join_all(
                shared
                    .policy
                    .checks
                    .iter()
                    .map(|c| checks::sample(&self.inner.http, c, &shared.ctx)),
            )
            .await;
            let round = Round {
                scheduled_at: next_at,
                samples,
            };
            let (reply, outcome) = tokio::sync::oneshot::channel();
            let pending = PendingRound {
                loaded: loaded.clone(),
                round,
                reply,
            };
            if self.inner.writes.send(pending).is_err() {
                return Ok(()); // Shutting down.
            }
            let Ok(outcome) = outcome.await else {
                return Ok(());
            };
            match outcome? {
                Some(next_at) => next = Some(next_at),
                None => {
                    if let Some(f) = lock(&self.inner.on_finish).clone() {
                        f();
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Samples a run now (`gate.reevaluate` by `actor`).
    pub async fn reevaluate(&self, id: i64, actor: &str) -> Result<(), EngineError> {
        let actor = actor.to_owned();
        blocking(&self.inner.db, move |conn| {
            storage::write_transaction(conn, |conn| {
                let run = evaluating(conn, id)?;
                store::reschedule_gate_run(conn, id, storage::now())?;
                storage::append_audit(
                    conn,
                    &actor,
                    "gate.reevaluate",
                    &subject(&run.pipeline, run.deployment_id),
                    &format!("gate_run={id} stage={} phase={}", run.stage, run.phase),
                )?;
                Ok(())
            })
        })
        .await?;
        self.wake(id);
        Ok(())
    }

    /// Lets a run pass without its checks (`gate.bypass` by `actor`, with
    /// the reason); the deployment moves on as if the gate had passed.
    pub async fn bypass(&self, id: i64, actor: &str, reason: &str) -> Result<(), EngineError> {
        let reason = reason.trim().to_owned();
        if reason.is_empty() {
            return Err(EngineError::Invalid(
                "bypassing a gate needs a reason".into(),
            ));
        }
        let actor = actor.to_owned();
        blocking(&self.inner.db, move |conn| {
            storage::write_transaction(conn, |conn| {
                let run = evaluating(conn, id)?;
                let d = transitions::find(conn, run.deployment_id)?;
                if !store::finish_gate_run(conn, id, GateRunState::Bypassed, Some(&reason), &actor)?
                {
                    return Err(EngineError::Conflict("the gate run has ended".into()));
                }
                storage::append_audit(
                    conn,
                    &actor,
                    "gate.bypass",
                    &subject(&run.pipeline, run.deployment_id),
                    &format!(
                        "gate_run={id} stage={} phase={} reason={reason}",
                        run.stage, run.phase
                    ),
                )?;
                let stage = stage_for(conn, &run.pipeline, &d)?;
                passed(conn, &run, &d, &stage, &actor)
            })
        })
        .await?;
        self.wake(id);
        if let Some(f) = lock(&self.inner.on_finish).clone() {
            f();
        }
        Ok(())
    }

    fn wake(&self, id: i64) {
        if let Some(w) = lock(&self.inner.timers).get(&id) {
            w.notify_one();
        }
    }
}

fn evaluating(conn: &mut DbConn, id: i64) -> Result<GateRunRow, EngineError> {
    let run = store::find_gate_run(conn, id)?
        .ok_or_else(|| EngineError::NotFound(format!("no gate run #{id}")))?;
    if run.state != GateRunState::Evaluating {
        return Err(EngineError::Conflict(format!(
            "gate run #{id} has ended ({})",
            run.state
        )));
    }
    Ok(run)
}

/// `before` while the deployment's tasks have not started, else `after`.
pub fn phase_of(d: &DeploymentRow) -> Phase {
    Phase::of_started(d.started_at.is_some())
}

fn stage_for(conn: &mut DbConn, pipeline: &str, d: &DeploymentRow) -> Result<Stage, EngineError> {
    Ok(stage_and_variables(conn, pipeline, d)?.0)
}

/// The stage of a deployment (as its release's revision defines it, else
/// the current one) and the variables its commands see: the pipeline's,
/// overridden by the stage's.
fn stage_and_variables(
    conn: &mut DbConn,
    pipeline: &str,
    d: &DeploymentRow,
) -> Result<(Stage, BTreeMap<String, String>), EngineError> {
    let release = storage::find_release_by_id(conn, d.release_id)?
        .ok_or_else(|| EngineError::NotFound(format!("deployment #{} has no release", d.id)))?;
    let own = transitions::built_with(conn, pipeline, &release)?;
    let current = pipelines::load(conn, pipeline)?.definition;
    let stage = transitions::stage_of(own.as_ref(), &current, &d.stage).ok_or_else(|| {
        EngineError::NotFound(format!("the stage `{}` is not in the pipeline", d.stage))
    })?;
    let mut variables = own.as_ref().unwrap_or(&current).variables.clone();
    variables.extend(stage.variables.clone());
    Ok((stage, variables))
}

fn policy_of(stage: &Stage, phase: Phase) -> Option<&GatePolicy> {
    stage.gates.of(phase)
}

/// Inserts a run for a deployment in `evaluating_gates` (`gate.start`).
fn start_run(conn: &mut DbConn, d: &DeploymentRow, phase: Phase) -> Result<(), EngineError> {
    storage::write_transaction(conn, |conn| {
        let pipeline = storage::pipeline_by_id(conn, d.pipeline_id)?.name;
        let release = storage::find_release_by_id(conn, d.release_id)?
            .ok_or_else(|| EngineError::NotFound(format!("deployment #{} has no release", d.id)))?;
        let stage = stage_for(conn, &pipeline, d)?;
        let Some(policy) = policy_of(&stage, phase) else {
            return Err(EngineError::Invalid(format!(
                "the stage `{}` has no gates {phase} it",
                d.stage
            )));
        };
        let timing = GateTiming::of(policy);
        let started_at = storage::now();
        let progress = GateProgress {
            streaks: vec![0; policy.checks.len()],
            inconclusive: vec![0; policy.checks.len()],
            ..GateProgress::default()
        };
        let id = store::insert_gate_run(
            conn,
            &NewGateRun {
                deployment_id: d.id,
                pipeline: pipeline.clone(),
                release_version: release.version.clone(),
                stage: d.stage.clone(),
                phase,
                started_at,
                deadline_at: timing.deadline(started_at),
                next_at: timing.due(started_at, 0),
                progress: to_json(&progress),
            },
        )?;
        let last: Vec<LastResult> = policy
            .checks
            .iter()
            .map(|c| LastResult {
                name: checks::check_label(c),
                verdict: None,
                value: None,
                sampled_at: None,
            })
            .collect();
        store::record_round(
            conn,
            id,
            &RoundUpdate {
                round: 0,
                next_at: Some(timing.due(started_at, 0)),
                green_since: None,
                progress: to_json(&progress),
                last_results: to_json(&last),
            },
        )?;
        storage::append_audit(
            conn,
            ENGINE_ACTOR,
            "gate.start",
            &subject(&pipeline, d.id),
            &format!(
                "gate_run={id} stage={} phase={phase} release={} checks={}",
                d.stage,
                release.version,
                policy.checks.len()
            ),
        )?;
        Ok(())
    })
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

/// What a timer needs: the run as read when its timer started (only its
/// fixed fields are used: what changes is read again with each round), and
/// (shared, read once) its policy and stage, the checks' context and labels.
#[derive(Clone)]
struct Loaded {
    run: Arc<GateRunRow>,
    shared: Arc<RunShared>,
}

struct RunShared {
    stage: Stage,
    policy: GatePolicy,
    ctx: CheckContext,
    /// The label of each check, in the policy's order.
    labels: Vec<String>,
}

/// Reads a run with its policy and the pipeline's secrets; `None` when it
/// ended. A run whose stage lost its gates fails.
fn load_run(conn: &mut DbConn, key: &SecretKey, id: i64) -> Result<Option<Loaded>, EngineError> {
    let Some(run) = store::find_gate_run(conn, id)? else {
        return Ok(None);
    };
    if run.state != GateRunState::Evaluating {
        return Ok(None);
    }
    let d = transitions::find(conn, run.deployment_id)?;
    let (stage, variables) = stage_and_variables(conn, &run.pipeline, &d)?;
    let Some(policy) = policy_of(&stage, run.phase).cloned() else {
        let reason = format!("the stage has no gates {} it any more", run.phase);
        storage::write_transaction(conn, |conn| failed(conn, &run, &d, &reason, ENGINE_ACTOR))?;
        return Ok(None);
    };
    let secrets: BTreeMap<String, String> = secrets::resolve_all(conn, key, d.pipeline_id)?
        .into_iter()
        .map(|(name, value)| {
            use secrecy::ExposeSecret;
            (name, value.expose_secret().to_string())
        })
        .collect();
    let masker = Masker::new(secrets.values());
    let env: BTreeMap<String, String> = variables
        .into_iter()
        .map(|(name, value)| {
            let value = crate::domain::secrets::substitute(&value, |n| secrets.get(n).cloned())
                .unwrap_or(value);
            (name, value)
        })
        .collect();
    let ctx = CheckContext {
        secrets: Arc::new(secrets),
        masker,
        extension_input: serde_json::json!({
            "pipeline": run.pipeline,
            "release": run.release_version,
            "stage": run.stage,
            "deployment_id": run.deployment_id,
            "phase": run.phase,
        }),
        command_timeout: policy.interval.to_std().max(Duration::from_secs(5)),
        compiled: Arc::new(checks::compile_all(&policy.checks)),
        env: Arc::new(env),
    };
    let labels = policy.checks.iter().map(checks::check_label).collect();
    Ok(Some(Loaded {
        run: Arc::new(run),
        shared: Arc::new(RunShared {
            stage,
            policy,
            ctx,
            labels,
        }),
    }))
}

struct Round {
    scheduled_at: NaiveDateTime,
    samples: Vec<Sample>,
}

/// The writer: stores the rounds that are waiting (up to [`WRITE_BATCH`])
/// in one transaction and answers each timer. When a round fails, the
/// batch is rolled back and each of its rounds is stored again in a
/// transaction of its own, so that one failing round does not undo the
/// others (and savepoints, re-parsed by SQLite for every round, are not
/// needed). It stops at shutdown (the timers waiting for it stop too).
async fn write_loop(
    db: Db,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<PendingRound>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            p = queue.recv() => match p {
                Some(p) => p,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH
            && let Ok(p) = queue.try_recv()
        {
            batch.push(p);
        }
        let (items, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|p| ((p.loaded, p.round), p.reply))
            .unzip();
        let count = items.len();
        let results = blocking(&db, move |conn| match record_rounds(conn, &items) {
            Ok(results) => Ok(results),
            Err(_) if items.len() > 1 => Ok(items
                .iter()
                .map(|item| {
                    record_rounds(conn, std::slice::from_ref(item))
                        .and_then(|mut r| r.pop().unwrap_or_else(|| Err(no_result())))
                })
                .collect()),
            Err(e) => Ok(vec![Err(e)]),
        })
        .await;
        match results {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(rounds = count, error = %e, "cannot store gate rounds");
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(EngineError::Conflict(format!(
                        "the round was not stored: {message}"
                    ))));
                }
            }
        }
    }
}

fn no_result() -> EngineError {
    EngineError::Conflict("the round was not stored".into())
}

/// A run as a round finds it in the database.
struct RunNow {
    state: GateRunState,
    progress: String,
    deployment_id: i64,
}

/// A deployment as a round finds it in the database.
struct DeploymentNow {
    state: DeploymentState,
    started: bool,
}

/// Stores rounds in one transaction: reads what may have changed in their
/// runs and deployments with one query each (not two per round), then
/// records each round. Fails (and rolls back) at the first round that
/// fails; else gives each round's outcome (see [`record_round`]).
fn record_rounds(
    conn: &mut DbConn,
    items: &[(Loaded, Round)],
) -> Result<Vec<Result<Option<NaiveDateTime>, EngineError>>, EngineError> {
    storage::write_transaction(conn, |conn| {
        let ids: Vec<i64> = items.iter().map(|(l, _)| l.run.id).collect();
        let runs: HashMap<i64, RunNow> = store::gate_runs_now(conn, &ids)?
            .into_iter()
            .map(|(id, state, progress, deployment_id)| {
                (
                    id,
                    RunNow {
                        state,
                        progress,
                        deployment_id,
                    },
                )
            })
            .collect();
        let mut deployment_ids: Vec<i64> = runs.values().map(|r| r.deployment_id).collect();
        deployment_ids.sort_unstable();
        deployment_ids.dedup();
        let deployments: HashMap<i64, DeploymentNow> =
            store::deployments_now(conn, &deployment_ids)?
                .into_iter()
                .map(|(id, state, started)| (id, DeploymentNow { state, started }))
                .collect();
        let mut results = Vec::with_capacity(items.len());
        let mut samples = Vec::with_capacity(items.len());
        for (loaded, round) in items {
            let run = runs.get(&loaded.run.id);
            let deployment = run.and_then(|r| deployments.get(&r.deployment_id));
            results.push(Ok(record_round(
                conn,
                loaded,
                round,
                run,
                deployment,
                &mut samples,
            )?));
        }
        store::insert_gate_samples(conn, &samples)?;
        Ok(results)
    })
}

/// Stores a round and its consequences (inside the caller's transaction;
/// its samples are added to `samples`, for the caller to insert); the time
/// of the run's next round, or `None` when it ended.
fn record_round<'a>(
    conn: &mut DbConn,
    l: &'a Loaded,
    round: &'a Round,
    now_run: Option<&RunNow>,
    now_deployment: Option<&DeploymentNow>,
    samples: &mut Vec<NewGateSample<'a>>,
) -> Result<Option<NaiveDateTime>, EngineError> {
    let run = &*l.run;
    let id = run.id;
    let Some(now_run) = now_run else {
        return Ok(None);
    };
    if now_run.state != GateRunState::Evaluating {
        return Ok(None);
    }
    let Some(d) = now_deployment else {
        return Err(EngineError::NotFound(format!(
            "There is no deployment #{}.",
            now_run.deployment_id
        )));
    };
    let phase = Phase::of_started(d.started);
    if d.state != DeploymentState::EvaluatingGates || phase != run.phase {
        // Canceled or superseded meanwhile.
        store::finish_gate_run(
            conn,
            id,
            GateRunState::Canceled,
            Some(&format!("the deployment is {}", d.state)),
            ENGINE_ACTOR,
        )?;
        return Ok(None);
    }
    let mut progress: GateProgress = serde_json::from_str(&now_run.progress).unwrap_or_default();
    let number = i32::try_from(progress.round + 1).unwrap_or(i32::MAX);
    let mut results = Vec::with_capacity(round.samples.len());
    let mut last = Vec::with_capacity(round.samples.len());
    for (name, s) in l.shared.labels.iter().zip(&round.samples) {
        samples.push(NewGateSample {
            gate_run_id: id,
            deployment_id: run.deployment_id,
            phase: run.phase,
            round: number,
            check_name: name,
            scheduled_at: round.scheduled_at,
            sampled_at: s.sampled_at,
            duration_ms: i64::try_from(s.duration.as_millis()).unwrap_or(i64::MAX),
            request: &s.request,
            value: &s.value,
            verdict: s.verdict.as_str(),
            body: s.body.as_deref(),
        });
        last.push(LastResult {
            name: name.clone(),
            verdict: Some(s.verdict.as_str().to_owned()),
            value: Some(s.value.clone()),
            sampled_at: Some(s.sampled_at),
        });
        results.push(CheckResult {
            name: name.clone(),
            verdict: s.verdict,
            value: s.value.clone(),
        });
    }
    let now = storage::now();
    let decision = gate_eval::after_round(
        &l.shared.policy,
        run.started_at,
        &mut progress,
        &results,
        now,
    );
    let next_at = match &decision {
        GateDecision::Continue { next_at, .. } => Some(*next_at),
        _ => None,
    };
    store::record_round(
        conn,
        id,
        &RoundUpdate {
            round: i32::try_from(progress.round).unwrap_or(i32::MAX),
            next_at,
            green_since: progress.green_since,
            progress: to_json(&progress),
            last_results: to_json(&last),
        },
    )?;
    match decision {
        GateDecision::Continue { ask, next_at } => {
            for i in ask {
                let name = results.get(i).map(|r| r.name.as_str()).unwrap_or_default();
                let question = format!(
                    "The check `{name}` has been inconclusive for {} samples in a row: \
                     should the gate be bypassed?",
                    gate_eval::ASK_AFTER
                );
                store::set_gate_question(conn, id, &question)?;
                storage::append_audit(
                    conn,
                    ENGINE_ACTOR,
                    "gate.ask",
                    &subject(&run.pipeline, run.deployment_id),
                    &format!("gate_run={id} stage={} check={name}", run.stage),
                )?;
            }
            Ok(Some(next_at))
        }
        GateDecision::Pass => {
            store::finish_gate_run(conn, id, GateRunState::Passed, None, ENGINE_ACTOR)?;
            storage::append_audit(
                conn,
                ENGINE_ACTOR,
                "gate.pass",
                &subject(&run.pipeline, run.deployment_id),
                &format!(
                    "gate_run={id} stage={} phase={} rounds={}",
                    run.stage, run.phase, progress.round
                ),
            )?;
            let d = transitions::find(conn, run.deployment_id)?;
            passed(conn, run, &d, &l.shared.stage, ENGINE_ACTOR)?;
            Ok(None)
        }
        GateDecision::Fail { reason } => {
            let d = transitions::find(conn, run.deployment_id)?;
            failed(conn, run, &d, &reason, ENGINE_ACTOR)?;
            Ok(None)
        }
    }
}

/// The run failed: it and its deployment end `failed` with the reason.
fn failed(
    conn: &mut DbConn,
    run: &GateRunRow,
    d: &DeploymentRow,
    reason: &str,
    actor: &str,
) -> Result<(), EngineError> {
    store::finish_gate_run(conn, run.id, GateRunState::Failed, Some(reason), actor)?;
    let to = transitions::transition(DeploymentState::EvaluatingGates, DeploymentEvent::Fail)?;
    let message = format!("gates {} the stage failed: {reason}", run.phase);
    if storage::deployments::transition_deployment(
        conn,
        d.id,
        DeploymentState::EvaluatingGates,
        to,
        Some(&message),
    )? {
        storage::append_audit(
            conn,
            actor,
            "deployment.fail",
            &subject(&run.pipeline, d.id),
            &format!("gate_run={} {message}", run.id),
        )?;
    }
    Ok(())
}

/// The run passed (or was bypassed): the deployment moves on. Before the
/// stage with no approvals after the gates, the deployment stays in
/// `evaluating_gates` with a passed run, for the dispatcher to claim.
fn passed(
    conn: &mut DbConn,
    run: &GateRunRow,
    d: &DeploymentRow,
    stage: &Stage,
    actor: &str,
) -> Result<(), EngineError> {
    let approvals_next = stage.approvals.order == ApprovalOrder::AfterGates
        && stage.approvals.of(run.phase).is_some();
    let event = if approvals_next {
        DeploymentEvent::RequestApproval
    } else if run.phase == Phase::After {
        DeploymentEvent::Succeed
    } else {
        // The deployment dispatcher claims it (see `deploy_run::advance`).
        return Ok(());
    };
    let from = DeploymentState::EvaluatingGates;
    let to = transitions::transition(from, event)?;
    let detail = format!(
        "stage={} release={} after gates",
        d.stage, run.release_version
    );
    if !transitions::apply(conn, d, from, event, actor, None, &detail)? {
        return Ok(());
    }
    if to == DeploymentState::Succeeded
        && let Some(release) = storage::find_release_by_id(conn, d.release_id)?
    {
        requests::request_after_success(conn, &run.pipeline, &stage.name, &release)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading gate runs back
// ---------------------------------------------------------------------------

/// One check of a run: its last result and recent samples (oldest first).
#[derive(Clone, Debug)]
pub struct CheckView {
    pub name: String,
    pub last: Option<LastResult>,
    pub samples: Vec<GateSampleRow>,
}

/// A run with its checks.
#[derive(Clone, Debug)]
pub struct GateRunView {
    pub run: GateRunRow,
    pub checks: Vec<CheckView>,
    /// Samples stored so far (every check, every round).
    pub samples_taken: i64,
    /// How long every check must stay green, from the run's policy (known
    /// while the run is evaluating; `None` after, or when the stage is gone).
    pub steady: Option<chrono::TimeDelta>,
}

impl GateRunView {
    /// How long every check has been green, as of `now` (at most the
    /// steady time); `None` while some check is not.
    pub fn green_for(&self, now: NaiveDateTime) -> Option<chrono::TimeDelta> {
        let since = self.run.green_since?;
        let green = (now - since).max(chrono::TimeDelta::zero());
        Some(match self.steady {
            Some(steady) => green.min(steady),
            None => green,
        })
    }
}

/// The steady time of an evaluating run's policy.
fn steady_of(
    conn: &mut DbConn,
    run: &GateRunRow,
) -> Result<Option<chrono::TimeDelta>, EngineError> {
    if run.state != GateRunState::Evaluating {
        return Ok(None);
    }
    let Some(d) = storage::find_deployment(conn, run.deployment_id)? else {
        return Ok(None);
    };
    // A stage removed since: the progress shows without the steady time.
    let Ok(stage) = stage_for(conn, &run.pipeline, &d) else {
        return Ok(None);
    };
    Ok(policy_of(&stage, run.phase).map(|p| GateTiming::of(p).steady))
}

/// Evaluating runs and recently finished ones.
#[derive(Clone, Debug)]
pub struct GatesOverview {
    pub evaluating: Vec<GateRunView>,
    pub recent: Vec<GateRunView>,
}

/// Samples of each check shown with a run.
pub const RECENT_SAMPLES: i64 = 30;

/// A run with its checks and their recent samples.
pub fn run_view(conn: &mut DbConn, run: GateRunRow) -> Result<GateRunView, EngineError> {
    let last: Vec<LastResult> = serde_json::from_str(&run.last_results).unwrap_or_default();
    let names: Vec<String> = last.iter().map(|l| l.name.clone()).collect();
    let per_run = RECENT_SAMPLES * i64::try_from(names.len().max(1)).unwrap_or(1);
    let samples = store::samples_of_run(conn, run.id, per_run)?;
    let mut checks: Vec<CheckView> = last
        .into_iter()
        .map(|l| CheckView {
            name: l.name.clone(),
            last: Some(l),
            samples: Vec::new(),
        })
        .collect();
    let mut seen: HashSet<String> = names.into_iter().collect();
    for s in samples {
        if !seen.contains(&s.check_name) {
            seen.insert(s.check_name.clone());
            checks.push(CheckView {
                name: s.check_name.clone(),
                last: None,
                samples: Vec::new(),
            });
        }
        if let Some(c) = checks.iter_mut().find(|c| c.name == s.check_name) {
            c.samples.push(s);
        }
    }
    let samples_taken = store::count_samples_of_run(conn, run.id)?;
    let steady = steady_of(conn, &run)?;
    Ok(GateRunView {
        run,
        checks,
        samples_taken,
        steady,
    })
}

/// One run by id.
pub fn gate_run(conn: &mut DbConn, id: i64) -> Result<GateRunView, EngineError> {
    let run = store::find_gate_run(conn, id)?
        .ok_or_else(|| EngineError::NotFound(format!("no gate run #{id}")))?;
    run_view(conn, run)
}

/// Every run being evaluated and the `recent` last finished ones.
pub fn overview(conn: &mut DbConn, recent: i64) -> Result<GatesOverview, EngineError> {
    let evaluating = store::evaluating_gate_runs(conn)?
        .into_iter()
        .map(|r| run_view(conn, r))
        .collect::<Result<_, _>>()?;
    let recent = store::finished_gate_runs(conn, recent)?
        .into_iter()
        .map(|r| run_view(conn, r))
        .collect::<Result<_, _>>()?;
    Ok(GatesOverview { evaluating, recent })
}

/// Every sample of a deployment, oldest first.
pub fn samples_of_deployment(
    conn: &mut DbConn,
    deployment_id: i64,
) -> Result<Vec<GateSampleRow>, EngineError> {
    Ok(store::samples_of_deployment(conn, deployment_id)?)
}

/// The evidence of one gate run: its checks (last result, recent samples
/// for the strip) and its newest samples, newest first.
#[derive(Clone, Debug)]
pub struct RunEvidence {
    pub view: GateRunView,
    /// The newest samples (at most the limit asked for), newest first.
    pub samples: Vec<GateSampleRow>,
    /// How many samples the run has in all.
    pub total_samples: i64,
}

/// The evidence of every gate run of a deployment, oldest run first, with
/// at most `limit` samples each (the run's page has them all).
pub fn evidence_of_deployment(
    conn: &mut DbConn,
    deployment_id: i64,
    limit: i64,
) -> Result<Vec<RunEvidence>, EngineError> {
    store::gate_runs_of_deployment(conn, deployment_id)?
        .into_iter()
        .map(|run| evidence_of_run(conn, run, limit))
        .collect()
}

/// The evidence of one run, with at most `limit` samples.
pub fn evidence_of_run(
    conn: &mut DbConn,
    run: GateRunRow,
    limit: i64,
) -> Result<RunEvidence, EngineError> {
    let id = run.id;
    let mut samples = store::samples_of_run(conn, id, limit)?;
    samples.reverse();
    let total_samples = store::count_samples_of_run(conn, id)?;
    Ok(RunEvidence {
        view: run_view(conn, run)?,
        samples,
        total_samples,
    })
}
