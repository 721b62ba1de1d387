//! The [`Engine`]: the background side of Slipway, started by `serve`.
//! This folder wires the engine's parts and runs its loops:
//!
//! - `builds.rs` — queue, retry, cancel a build; the build dispatcher.
//! - `deployments.rs` — ask for, redeploy, cancel a deployment; swaps a
//!   person asks for; approval decisions; the deployment dispatcher.
//! - `jobs.rs` — the job runtime both dispatchers hand their claimed jobs
//!   to: the executor, the one heartbeat that renews every lease, the one
//!   sweep of lost leases (and of this instance's leftovers at start).
//! - `poll.rs` — pipelines with `source.poll` get `git ls-remote` of their
//!   branch at that interval; a moved head queues a build (trigger `poll`).
//! - **Shutdown.** [`Engine::shutdown`] stops the loops, stops running
//!   jobs (they become `interrupted`) and waits for them.
//!
//! The instance's identity (the `runner` holding its jobs' leases) is
//! `<host>/<id>`, the id kept in `<data-dir>/instance-id`, so a restarted
//! process recognizes its own leftovers.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod builds;
mod deployments;
mod jobs;
mod poll;

use crate::engine::EngineError;
use crate::engine::jobs::leases::Leases;
use crate::engine::jobs::{JobContext, runner};
use crate::engine::secrets::SecretKey;
use crate::storage::Db;
pub use deployments::SwapDone;

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
    /// The dispatchers look for queued builds and deployments at least this
    /// often (default 2s).
    pub safety_poll: Duration,
    /// The leases of every running job (build or deployment) held here are
    /// renewed this often (default 5s).
    pub heartbeat: Duration,
    /// A running job whose lease was not renewed for this long is lost:
    /// interrupted with a reason (default 60s).
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
    /// The jobs (builds and deployments) this instance holds a lease on.
    leases: Leases,
    /// One lock per pipeline around its mirror.
    mirrors: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
    /// Pipelines whose poll is in flight.
    polling: Mutex<HashSet<i64>>,
    tracker: TaskTracker,
    started: AtomicBool,
    /// The slots' processes and the router's table (`engine::slots`).
    slots: super::slots::Slots,
    /// The deployment dispatcher's state (`deployments.rs`).
    deploy: deployments::DeployState,
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
                leases: Leases::default(),
                mirrors: Mutex::new(HashMap::new()),
                polling: Mutex::new(HashSet::new()),
                tracker,
                started: AtomicBool::new(false),
                deploy: deployments::DeployState::new(),
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

    /// Recovers what a previous process left running, then starts the
    /// dispatcher, the heartbeat and the poller on the current runtime.
    /// Calling it again does nothing.
    pub async fn start(&self) -> Result<(), EngineError> {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let runner = runner_name(&self.inner.data_dir);
        let runner = self.inner.runner.get_or_init(|| runner).clone();
        self.sweep_at_start(runner.clone()).await?;
        // Every slot that had a release serves it again.
        self.inner.slots.restore().await?;
        let me = self.clone();
        self.inner.tracker.spawn(me.dispatch_loop(
            "build dispatcher",
            |engine| &engine.inner.wake,
            |engine| async move { engine.dispatch_builds().await },
        ));
        let me = self.clone();
        self.inner.tracker.spawn(me.dispatch_loop(
            "deployment dispatcher",
            |engine| &engine.inner.deploy.wake,
            |engine| async move { engine.dispatch_deployments().await },
        ));
        let me = self.clone();
        self.inner
            .tracker
            .spawn(async move { me.heartbeat_loop().await });
        let me = self.clone();
        self.inner
            .tracker
            .spawn(async move { me.poll_loop().await });
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
        let weak = Arc::downgrade(&self.inner);
        let wake_deployments: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(inner) = weak.upgrade() {
                Engine { inner }.notify_deployments();
            }
        });
        crate::engine::triggers::scheduler::run(
            runner,
            wake_deployments,
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

    /// What running a job needs from this engine.
    fn job_context(&self) -> JobContext {
        JobContext {
            db: self.inner.db.clone(),
            data_dir: self.inner.data_dir.clone(),
            secret_key: self.inner.secret_key.clone(),
            default_task_timeout: self.inner.config.default_task_timeout,
            kill_grace: self.inner.config.kill_grace,
            keep_workspaces: self.inner.config.keep_workspaces,
            shutdown: self.inner.shutdown.clone(),
        }
    }

    fn mirror_lock(&self, pipeline_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.mirrors)
            .entry(pipeline_id)
            .or_default()
            .clone()
    }
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
