//! The [`Engine`]: the background side of Slipway, started by `serve`.
//!
//! - **Dispatcher.** Wakes at once when a build is queued
//!   ([`Engine::notify`]; no polling delay on that path) and every
//!   [`EngineConfig::safety_poll`] in case a wake-up was missed (another
//!   instance queued it). It claims queued builds oldest first with a
//!   conditional update, at most [`EngineConfig::builds_per_pipeline`] of a
//!   pipeline at once across every instance sharing the database and at
//!   most [`EngineConfig::max_builds`] on this instance; the rest wait.
//! - **Heartbeat.** Every [`EngineConfig::heartbeat`] it marks this
//!   instance's running builds alive, stops the ones canceled elsewhere,
//!   and interrupts builds whose instance has been silent for
//!   [`EngineConfig::stale_after`].
//! - **Polling.** Pipelines with `source.poll` get `git ls-remote` of their
//!   branch at that interval; a moved head queues a build (trigger `poll`).
//! - **Recovery.** On start, the running builds this instance left behind
//!   (killed, crashed) become `interrupted` with a reason.
//! - **Shutdown.** [`Engine::shutdown`] stops the loops, stops running
//!   tasks (their builds become `interrupted`) and waits for them.
//!
//! The instance's identity (the `runner` of its builds) is
//! `<host>/<id>`, the id kept in `<data-dir>/instance-id`, so a restarted
//! process recognizes its own leftovers.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod deploy;

use crate::domain::BuildState;
use crate::engine::builds::{self, BuildRequest, QueueOutcome, RunContext, git};
use crate::engine::jobs::runner;
use crate::engine::secrets::SecretKey;
use crate::engine::{ENGINE_ACTOR, EngineError, blocking, pipelines};
use crate::storage::{self, BuildRow, Db};
pub use deploy::SwapDone;

/// How the engine runs; the defaults suit a server.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Builds of one pipeline that may run at once, over every instance (default 1).
    pub builds_per_pipeline: i64,
    /// Builds this instance runs at once, over every pipeline (default 4).
    pub max_builds: usize,
    /// The time limit of a task without `timeout:` (default 30m).
    pub default_task_timeout: Duration,
    /// Between `SIGTERM` and `SIGKILL` of a stopped task (default 5s).
    pub kill_grace: Duration,
    /// The dispatcher looks for queued builds at least this often (default 2s).
    pub safety_poll: Duration,
    /// Running builds are marked alive this often (default 5s).
    pub heartbeat: Duration,
    /// A running build not marked alive for this long is interrupted (default 60s).
    pub stale_after: Duration,
    /// The poller checks which pipelines are due this often (default 1s).
    pub poll_tick: Duration,
    /// Keep build workspaces after the build (default false: removed).
    pub keep_workspaces: bool,
    /// How slot processes run (health time-out, restarts, draining).
    pub slots: super::slots::SlotsConfig,
    /// How notifications are sent (links, retries; `engine::deploy::notify`).
    pub notifications: crate::engine::deploy::notify::NotifyConfig,
    /// The live pages' watcher reads the database's watermark this often
    /// (default 300ms; `engine::changes`).
    pub live_interval: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            builds_per_pipeline: 1,
            max_builds: 4,
            default_task_timeout: runner::DEFAULT_TASK_TIMEOUT,
            kill_grace: runner::DEFAULT_KILL_GRACE,
            safety_poll: Duration::from_secs(2),
            heartbeat: Duration::from_secs(5),
            stale_after: Duration::from_secs(60),
            poll_tick: Duration::from_secs(1),
            keep_workspaces: false,
            slots: super::slots::SlotsConfig::default(),
            notifications: crate::engine::deploy::notify::NotifyConfig::default(),
            live_interval: Duration::from_millis(300),
        }
    }
}

/// A handle on the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("runner", &self.inner.runner.get())
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Db,
    data_dir: PathBuf,
    secret_key: Arc<SecretKey>,
    config: EngineConfig,
    runner: OnceLock<String>,
    wake: Notify,
    shutdown: CancellationToken,
    /// Cancellation tokens of the builds this instance runs (or is claiming).
    running: Mutex<HashMap<i64, CancellationToken>>,
    /// One lock per pipeline around its mirror.
    mirrors: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Pipelines whose poll is in flight.
    polling: Mutex<HashSet<i64>>,
    tracker: TaskTracker,
    started: AtomicBool,
    /// The slots' processes and the router's table (`engine::slots`).
    slots: super::slots::Slots,
    /// The deployment dispatcher's state (`deploy_runtime.rs`).
    deploy: deploy::DeployState,
    /// Gate runs and their timers (`engine::deploy::gates`).
    gates: crate::engine::deploy::gates::Gates,
    /// The notification delivery worker (`engine::deploy::notify`).
    notifications: crate::engine::deploy::notify::Deliveries,
    /// The live pages' watcher and its subscribers (`engine::changes`).
    changes: super::changes::Changes,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these short locks leaves valid data.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Engine {
    /// An engine over `db` keeping its files in `data_dir`; nothing runs
    /// until [`Engine::start`].
    pub fn new(
        db: Db,
        data_dir: PathBuf,
        secret_key: Arc<SecretKey>,
        config: EngineConfig,
    ) -> Engine {
        let slots = super::slots::Slots::new(
            db.clone(),
            data_dir.clone(),
            secret_key.clone(),
            config.slots.clone(),
        );
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let gates = crate::engine::deploy::gates::Gates::new(
            db.clone(),
            secret_key.clone(),
            shutdown.clone(),
            tracker.clone(),
        );
        let notifications = crate::engine::deploy::notify::Deliveries::new(
            db.clone(),
            secret_key.clone(),
            config.notifications.clone(),
            shutdown.clone(),
            tracker.clone(),
        );
        let changes = super::changes::Changes::new(&shutdown);
        Engine {
            inner: Arc::new(Inner {
                changes,
                notifications,
                gates,
                slots,
                db,
                data_dir,
                secret_key,
                config,
                runner: OnceLock::new(),
                wake: Notify::new(),
                shutdown,
                running: Mutex::new(HashMap::new()),
                mirrors: Mutex::new(HashMap::new()),
                polling: Mutex::new(HashSet::new()),
                tracker,
                started: AtomicBool::new(false),
                deploy: deploy::DeployState::new(),
            }),
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The slots: their processes, deployments, swaps and the router's table.
    pub fn slots(&self) -> &super::slots::Slots {
        &self.inner.slots
    }

    /// The live pages' change notices (`engine::changes`).
    pub fn changes(&self) -> &super::changes::Changes {
        &self.inner.changes
    }

    /// The gates: runs being sampled, re-evaluate and bypass.
    pub fn gates(&self) -> &crate::engine::deploy::gates::Gates {
        &self.inner.gates
    }

    /// The notification deliveries: the worker and retry now.
    pub fn notifications(&self) -> &crate::engine::deploy::notify::Deliveries {
        &self.inner.notifications
    }

    /// Wakes the notification worker: call it after committing a
    /// transaction that enqueued notifications.
    pub fn notify_notifications(&self) {
        self.inner.notifications.wake();
    }

    /// This instance's name in `builds.runner` (set by [`Engine::start`]).
    pub fn runner_id(&self) -> Option<&str> {
        self.inner.runner.get().map(String::as_str)
    }

    /// Wakes the dispatcher: call it after queuing a build.
    pub fn notify(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops the running task of a build this instance runs (after
    /// `builds::cancel_build` recorded the cancellation). Returns whether
    /// it runs here.
    pub fn signal_cancel(&self, build_id: i64) -> bool {
        match lock(&self.inner.running).get(&build_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Ids of the builds running on this instance.
    pub fn running_builds(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = lock(&self.inner.running).keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Queues a build and wakes the dispatcher.
    pub async fn queue(&self, request: BuildRequest) -> Result<QueueOutcome, EngineError> {
        let outcome = blocking(&self.inner.db, move |conn| {
            builds::queue_build(conn, &request)
        })
        .await?;
        if matches!(outcome, QueueOutcome::Queued(_)) {
            self.notify();
        }
        Ok(outcome)
    }

    /// Queues a build of the same branch and commit as a failed or
    /// canceled one ([`builds::retry_build`]) and wakes the dispatcher.
    pub async fn retry(
        &self,
        pipeline: &str,
        number: i64,
        actor: &str,
    ) -> Result<QueueOutcome, EngineError> {
        let (pipeline, actor) = (pipeline.to_string(), actor.to_string());
        let outcome = blocking(&self.inner.db, move |conn| {
            builds::retry_build(conn, &pipeline, number, &actor)
        })
        .await?;
        if matches!(outcome, QueueOutcome::Queued(_)) {
            self.notify();
        }
        Ok(outcome)
    }

    /// Cancels a build by pipeline and number, stopping its task if it runs here.
    pub async fn cancel(
        &self,
        pipeline: &str,
        number: i64,
        actor: &str,
    ) -> Result<BuildRow, EngineError> {
        let (pipeline, actor) = (pipeline.to_string(), actor.to_string());
        let build = blocking(&self.inner.db, move |conn| {
            let build = builds::find_build(conn, &pipeline, number)?;
            builds::cancel_build(conn, build.id, &actor)
        })
        .await?;
        self.signal_cancel(build.id);
        self.notify();
        Ok(build)
    }

    /// Recovers what a previous process left running, then starts the
    /// dispatcher, the heartbeat and the poller on the current runtime.
    /// Calling it again does nothing.
    pub async fn start(&self) -> Result<(), EngineError> {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let runner = runner_name(&self.inner.data_dir);
        let runner = self.inner.runner.get_or_init(|| runner).clone();
        let stale_before = stale_before(self.inner.config.stale_after);
        let recovered = blocking(&self.inner.db, move |conn| {
            builds::interrupt_orphans(conn, Some(&runner), stale_before)
        })
        .await?;
        for build in &recovered {
            tracing::warn!(
                build = build.id,
                number = build.number,
                "build was left running by a previous process; marked interrupted"
            );
        }
        // Every slot that had a release serves it again.
        self.inner.slots.restore().await?;
        let me = self.clone();
        self.inner
            .tracker
            .spawn(async move { me.dispatch_loop().await });
        let me = self.clone();
        self.inner
            .tracker
            .spawn(async move { me.heartbeat_loop().await });
        let me = self.clone();
        self.inner
            .tracker
            .spawn(async move { me.poll_loop().await });
        self.notify();
        self.start_deployments(self.runner()).await?;
        // Gate runs resume where they were; an ended one wakes the dispatcher.
        let weak = Arc::downgrade(&self.inner);
        self.inner.gates.start(Arc::new(move || {
            if let Some(inner) = weak.upgrade() {
                Engine { inner }.notify_deployments();
            }
        }));
        self.inner.notifications.start();
        self.inner.changes.start(
            self.inner.db.clone(),
            self.inner.config.live_interval,
            self.inner.shutdown.clone(),
            &self.inner.tracker,
        );
        crate::engine::triggers::scheduler::run(
            self,
            &self.inner.db,
            &self.inner.shutdown,
            &self.inner.tracker,
        );
        Ok(())
    }

    /// Stops the loops and the running builds (they become `interrupted`),
    /// waiting up to the kill grace plus 10 s for them to record it.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let wait = self.inner.config.kill_grace + Duration::from_secs(10);
        if tokio::time::timeout(wait, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "the engine did not stop in time; running builds will be recovered at the next start"
            );
        }
        // Slot processes stop last (a running swap task may still need them);
        // the next start serves them again.
        self.inner.slots.shutdown().await;
    }

    fn runner(&self) -> String {
        self.inner
            .runner
            .get()
            .cloned()
            .unwrap_or_else(|| "unstarted".to_string())
    }

    fn mirror_lock(&self, pipeline_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.mirrors)
            .entry(pipeline_id)
            .or_default()
            .clone()
    }

    async fn dispatch_loop(self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            if let Err(e) = self.dispatch_once().await {
                tracing::error!(error = %e, "build dispatcher");
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.config.safety_poll) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// Claims what this instance may run now and starts it.
    async fn dispatch_once(&self) -> Result<(), EngineError> {
        let capacity = self
            .inner
            .config
            .max_builds
            .saturating_sub(lock(&self.inner.running).len());
        if capacity == 0 || self.inner.shutdown.is_cancelled() {
            return Ok(());
        }
        let me = self.clone();
        let runner = self.runner();
        let per_pipeline = self.inner.config.builds_per_pipeline.max(1);
        let claimed = blocking(&self.inner.db, move |conn| {
            let queued = storage::queued_builds(conn, 100)?;
            let mut claimed = Vec::new();
            let mut full: HashSet<i64> = HashSet::new();
            for build in queued {
                if claimed.len() >= capacity {
                    break;
                }
                if full.contains(&build.pipeline_id) {
                    continue;
                }
                // Registered before the claim, so a cancel right after it finds the token.
                let token = me.inner.shutdown.child_token();
                lock(&me.inner.running).insert(build.id, token.clone());
                match storage::claim_build(conn, build.id, &runner, per_pipeline, ENGINE_ACTOR) {
                    Ok(Some(build)) => claimed.push((build, token)),
                    Ok(None) => {
                        lock(&me.inner.running).remove(&build.id);
                        full.insert(build.pipeline_id);
                    }
                    Err(e) => {
                        lock(&me.inner.running).remove(&build.id);
                        return Err(e.into());
                    }
                }
            }
            Ok(claimed)
        })
        .await?;
        for (build, token) in claimed {
            let ctx = RunContext {
                db: self.inner.db.clone(),
                data_dir: self.inner.data_dir.clone(),
                secret_key: self.inner.secret_key.clone(),
                default_task_timeout: self.inner.config.default_task_timeout,
                kill_grace: self.inner.config.kill_grace,
                keep_workspaces: self.inner.config.keep_workspaces,
                shutdown: self.inner.shutdown.clone(),
                mirror_lock: self.mirror_lock(build.pipeline_id),
            };
            let me = self.clone();
            self.inner.tracker.spawn(async move {
                let id = build.id;
                let cleanup = builds::run_build(ctx, build, token).await;
                lock(&me.inner.running).remove(&id);
                // A slot is free: start what waits (builds, and the
                // deployments its release triggered), then tidy up.
                me.notify();
                me.notify_deployments();
                cleanup.run().await;
            });
        }
        Ok(())
    }

    async fn heartbeat_loop(self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.heartbeat) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.heartbeat_once().await {
                tracing::error!(error = %e, "build heartbeat");
            }
        }
    }

    async fn heartbeat_once(&self) -> Result<(), EngineError> {
        let runner = self.runner();
        let local = self.running_builds();
        let stale_before = stale_before(self.inner.config.stale_after);
        let (states, recovered) = blocking(&self.inner.db, move |conn| {
            storage::heartbeat_builds(conn, &runner)?;
            let states = storage::build_states(conn, &local)?;
            let recovered = builds::interrupt_orphans(conn, None, stale_before)?;
            Ok((states, recovered))
        })
        .await?;
        for (id, state) in states {
            if state != BuildState::Running && state != BuildState::Queued {
                // Canceled (or interrupted) by another instance.
                self.signal_cancel(id);
            }
        }
        for build in recovered {
            tracing::warn!(
                build = build.id,
                runner = build.runner.as_deref().unwrap_or("-"),
                "a running build's instance went silent; marked interrupted"
            );
        }
        Ok(())
    }

    async fn poll_loop(self) {
        let shutdown = self.inner.shutdown.clone();
        let mut specs: HashMap<i64, PollSpec> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.poll_tick) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.refresh_poll_specs(&mut specs).await {
                tracing::error!(error = %e, "cannot read the pipelines to poll");
                continue;
            }
            let now = Instant::now();
            for (id, spec) in specs.iter_mut() {
                let Some(interval) = spec.interval else {
                    continue;
                };
                if spec.next > now || !lock(&self.inner.polling).insert(*id) {
                    continue;
                }
                spec.next = now + interval;
                let me = self.clone();
                let (id, name, repo, branch) = (
                    *id,
                    spec.name.clone(),
                    spec.repo.clone(),
                    spec.branch.clone(),
                );
                self.inner.tracker.spawn(async move {
                    me.poll_once(id, &name, &repo, &branch).await;
                    lock(&me.inner.polling).remove(&id);
                });
            }
        }
    }

    /// Re-reads the definitions of pipelines whose revision changed.
    async fn refresh_poll_specs(
        &self,
        specs: &mut HashMap<i64, PollSpec>,
    ) -> Result<(), EngineError> {
        let known: HashMap<i64, i32> = specs.iter().map(|(id, s)| (*id, s.revision)).collect();
        let (changed, present) = blocking(&self.inner.db, move |conn| {
            let mut changed = Vec::new();
            let rows = storage::list_pipelines(conn)?;
            let present: HashSet<i64> = rows.iter().map(|r| r.id).collect();
            for row in rows {
                if known.get(&row.id) == Some(&row.current_revision) {
                    continue;
                }
                let loaded = pipelines::load(conn, &row.name)?;
                changed.push(PollSpec {
                    id: row.id,
                    name: row.name,
                    revision: row.current_revision,
                    repo: loaded.definition.source.repo.clone(),
                    branch: loaded.definition.source.branch.clone(),
                    interval: loaded.definition.source.poll.map(|d| d.to_std()),
                    next: Instant::now(),
                });
            }
            Ok((changed, present))
        })
        .await?;
        specs.retain(|id, _| present.contains(id));
        for spec in changed {
            specs.insert(spec.id, spec);
        }
        Ok(())
    }

    /// Looks at the branch head; queues a build (trigger `poll`) when it moved.
    async fn poll_once(&self, pipeline_id: i64, pipeline: &str, repo: &str, branch: &str) {
        let head = git::remote_head(repo, branch, &self.inner.shutdown).await;
        let (name, branch_owned) = (pipeline.to_string(), branch.to_string());
        let recorded = blocking(&self.inner.db, move |conn| {
            let branch = branch_owned;
            match head {
                Ok(Some(sha)) => storage::write_transaction(conn, |conn| {
                    let seen = storage::find_source_head(conn, pipeline_id, &branch)?;
                    let previous = seen.as_ref().and_then(|s| s.commit_sha.clone());
                    if previous.as_deref() == Some(sha.as_str()) {
                        storage::record_source_check(conn, pipeline_id, &branch, None)?;
                        return Ok(None);
                    }
                    if !storage::advance_source_head(
                        conn,
                        pipeline_id,
                        &branch,
                        seen.as_ref(),
                        &sha,
                    )? {
                        // Another instance saw it first.
                        return Ok(None);
                    }
                    // The first look only learns the head, unless nothing was ever built.
                    if previous.is_none() && storage::next_build_number(conn, pipeline_id)? > 1 {
                        return Ok(None);
                    }
                    let outcome = builds::queue_build(
                        conn,
                        &BuildRequest {
                            pipeline: name.clone(),
                            branch: Some(branch.clone()),
                            commit: Some(sha.clone()),
                            trigger: "poll".into(),
                            requested_by: "poll".into(),
                        },
                    )?;
                    Ok::<_, EngineError>(outcome.build().cloned())
                }),
                Ok(None) => {
                    storage::record_source_check(
                        conn,
                        pipeline_id,
                        &branch,
                        Some(&format!(
                            "branch `{branch}` does not exist in the repository"
                        )),
                    )?;
                    Ok(None)
                }
                Err(git::GitError::Canceled) => Ok(None),
                Err(git::GitError::Failed(message)) => {
                    storage::record_source_check(conn, pipeline_id, &branch, Some(&message))?;
                    Ok(None)
                }
            }
        })
        .await;
        match recorded {
            Ok(Some(build)) => {
                tracing::info!(
                    pipeline,
                    number = build.number,
                    "polling found a new commit; build queued"
                );
                self.notify();
            }
            Ok(None) => {}
            Err(e) => tracing::error!(pipeline, error = %e, "polling failed"),
        }
    }
}

/// What the poller knows of a pipeline.
#[derive(Debug, Clone)]
struct PollSpec {
    id: i64,
    name: String,
    /// The definition revision it was read from.
    revision: i32,
    repo: String,
    branch: String,
    interval: Option<Duration>,
    next: Instant,
}

fn stale_before(stale_after: Duration) -> chrono::NaiveDateTime {
    storage::now()
        - chrono::Duration::from_std(stale_after).unwrap_or_else(|_| chrono::Duration::seconds(60))
}

/// `<host>/<instance id>`, the id kept in `<data-dir>/instance-id` (made on
/// first start). Without a writable data dir, a random id for this process.
fn runner_name(data_dir: &std::path::Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string());
    let file = data_dir.join("instance-id");
    let id = match std::fs::read_to_string(&file) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let written =
                std::fs::create_dir_all(data_dir).and_then(|()| std::fs::write(&file, &id));
            if let Err(e) = written {
                tracing::warn!(file = %file.display(), error = %e, "cannot keep this instance's id; builds it leaves running are recovered after they go stale");
            }
            id
        }
    };
    format!("{host}/{id}")
}
