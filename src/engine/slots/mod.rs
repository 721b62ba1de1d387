//! Deployment slots: each slot of an app runs a release as a supervised
//! process ([`supervisor`]) behind the slot router ([`router`]); a
//! release goes into a slot with [`Slots::deploy_to_slot`] and live with
//! [`Slots::swap`]. See `docs/slots.md`.
//!
//! - **Deploy.** The release is unpacked into a new directory
//!   `<data-dir>/slots/<app>/<slot>/<version>-<n>/`, a new process is
//!   started there on a free port and health-checked; only then does the
//!   slot's route move to it (atomically), and the old process is drained
//!   (its requests in flight finish) and stopped. A failed health check
//!   stops the new process and leaves the old one serving.
//! - **Swap.** The source slot's process is warmed (health-checked; started
//!   again first when the target's sticky settings differ from what it runs
//!   with), then both slots' routes, releases and non-sticky settings are
//!   exchanged at once, in the routing table and in one database
//!   transaction (audit `slot.swap`). A failure before that point changes
//!   nothing; swapping back is the rollback. *With preview*, the source
//!   runs with the target's sticky settings and the swap waits (`pending`)
//!   until a person confirms or cancels it.
//! - **Restart.** [`Slots::restore`] (called by `Engine::start`) kills what
//!   a killed Slipway left running and starts every slot that has a
//!   release again from its stored directory.
//!
//! One operation per app runs at a time (a per-app lock), so a swap never
//! sees half a deployment.

pub mod ports;
pub mod router;
pub mod supervisor;
pub mod unpack;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDateTime;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::router::{Route, RouteTable};
use self::supervisor::{Health, ProcessSpec, ProcessState, SlotProcess, SupervisorConfig};
use super::secrets::SecretKey;
use super::{EngineError, pipelines, secrets};
use crate::domain::App;
use crate::domain::slot_ops;
use crate::engine::blocking;
use crate::engine::jobs::runner::LogSender;
use crate::storage::slots::{self as store, SlotContent, SwapRecord};
use crate::storage::{self, AppRow, Db, DbConn, SlotRow};

/// Who the audit log names for what the slot engine does by itself.
const ENGINE_ACTOR: &str = "slipway";

/// How slots run; the defaults suit a server.
#[derive(Debug, Clone)]
pub struct SlotsConfig {
    /// How slot processes are run and restarted.
    pub supervisor: SupervisorConfig,
    /// How long a new process has to answer its health check (default 30 s;
    /// a `deploy_slot` task's `timeout:` overrides it).
    pub health_timeout: Duration,
    /// How long a replaced process may finish its requests (default 30 s).
    pub drain_timeout: Duration,
    /// How often running slots are probed and new slots picked up (default 5 s).
    pub monitor_interval: Duration,
}

impl Default for SlotsConfig {
    fn default() -> Self {
        SlotsConfig {
            supervisor: SupervisorConfig::default(),
            health_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            monitor_interval: Duration::from_secs(5),
        }
    }
}

/// One setting as a slot keeps it (values as written: secret references,
/// never secret values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSetting {
    pub value: String,
    pub sticky: bool,
}

/// A slot's settings by name.
pub type SlotSettings = BTreeMap<String, SlotSetting>;

pub(crate) fn parse_settings(json: &str) -> SlotSettings {
    serde_json::from_str(json).unwrap_or_default()
}

fn settings_json(settings: &SlotSettings) -> String {
    serde_json::to_string(settings).unwrap_or_else(|_| "{}".into())
}

/// The settings of `app` in a release's definition.
fn settings_of(app: &App) -> SlotSettings {
    app.settings
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                SlotSetting {
                    value: s.value.clone(),
                    sticky: s.sticky,
                },
            )
        })
        .collect()
}

/// What a slot gets in a swap: its own sticky settings and the other
/// slot's non-sticky ones.
pub fn swapped_settings(own: &SlotSettings, incoming: &SlotSettings) -> SlotSettings {
    own.iter()
        .filter(|(_, s)| s.sticky)
        .chain(incoming.iter().filter(|(_, s)| !s.sticky))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A deployment of a release into a slot.
#[derive(Debug, Clone)]
pub struct SlotDeploy {
    pub app: String,
    pub slot: String,
    /// The release's version (of the app's pipeline).
    pub release: String,
    /// A directory holding the release unpacked (a deployment's working
    /// dir); `None` unpacks it from the artifact store.
    pub artifacts_dir: Option<PathBuf>,
    /// How long the new process has to answer its health check (default
    /// [`SlotsConfig::health_timeout`]).
    pub health_timeout: Option<Duration>,
    /// Who asked (for the audit log).
    pub actor: String,
}

/// What a deployment to a slot did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotDeployed {
    pub app: String,
    pub slot: String,
    pub release: String,
    pub port: u16,
    pub workdir: PathBuf,
    /// The release it replaced, if any.
    pub replaced: Option<String>,
}

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapOutcome {
    pub app: String,
    pub from: String,
    pub to: String,
    /// The release now live in `to`.
    pub release: Option<String>,
    /// The release now in `from` (the one `to` had).
    pub replaced: Option<String>,
    /// `true` when a swap with preview now waits for confirmation.
    pub pending: bool,
}

/// A slot as the environments page shows it.
#[derive(Debug, Clone)]
pub struct SlotView {
    pub pipeline: String,
    pub app: String,
    pub slot: String,
    /// Host labels (`APP-SLOT`, and `APP` for production); the web layer adds the domain.
    pub labels: Vec<String>,
    pub release: Option<String>,
    pub previous_release: Option<String>,
    pub since: Option<NaiveDateTime>,
    /// `running`, `starting`, `restarting`, `stopping`, `stopped`, or the stored state.
    pub process: String,
    pub restarts: u32,
    pub health: Health,
    pub port: Option<u16>,
    pub last_swap_at: Option<NaiveDateTime>,
    /// Why the last deployment or start failed.
    pub error: Option<String>,
    /// A swap with preview of this slot waiting for confirmation: (from, to).
    pub pending_swap: Option<(String, String)>,
    /// The slot it was last swapped with, and whether it was the source.
    pub last_swap: Option<LastSwap>,
    /// The ids of `release` and `previous_release`.
    pub release_id: Option<i64>,
    pub previous_release_id: Option<i64>,
    /// The stage the slot belongs to (a swap into it is a deployment of
    /// that stage), with its approvals and gates in words.
    pub stage: Option<(String, Vec<String>)>,
}

/// The newest swap involving a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSwap {
    pub from: String,
    pub to: String,
    pub state: String,
    pub by: String,
    pub at: NaiveDateTime,
}

/// The process running a slot, with what it was started from.
#[derive(Debug, Clone)]
struct Current {
    process: Arc<SlotProcess>,
    health_path: String,
    release_id: i64,
    version: String,
    workdir: PathBuf,
    /// The settings it was started with.
    settings: SlotSettings,
}

type Key = (String, String);

fn key(app: &str, slot: &str) -> Key {
    (app.to_string(), slot.to_string())
}

/// The slot engine; cheap to clone.
#[derive(Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

struct Inner {
    db: Db,
    data_dir: PathBuf,
    secret_key: Arc<SecretKey>,
    config: SlotsConfig,
    routes: Arc<RouteTable>,
    running: Mutex<HashMap<Key, Current>>,
    app_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// For health checks: pooled, no proxy (127.0.0.1 only).
    client: reqwest::Client,
    router_addr: Mutex<Option<SocketAddr>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends a line to a task's log, if there is one.
async fn say(log: Option<&LogSender>, text: impl Into<String>) {
    let text = text.into();
    tracing::info!("{text}");
    if let Some(log) = log {
        log.system(text).await;
    }
}

/// Everything needed to start a slot's process, read from the database.
struct Prepared {
    pipeline_id: i64,
    app: App,
    slot: SlotRow,
    release_id: i64,
    version: String,
}

impl Slots {
    /// A slot engine over `db` keeping its files in `<data_dir>/slots`;
    /// nothing runs until [`Slots::restore`] or a deployment.
    pub fn new(
        db: Db,
        data_dir: PathBuf,
        secret_key: Arc<SecretKey>,
        config: SlotsConfig,
    ) -> Slots {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Slots {
            inner: Arc::new(Inner {
                db,
                data_dir,
                secret_key,
                config,
                routes: Arc::new(RouteTable::new()),
                running: Mutex::new(HashMap::new()),
                app_locks: Mutex::new(HashMap::new()),
                client,
                router_addr: Mutex::new(None),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// The routing table the router serves.
    pub fn routes(&self) -> Arc<RouteTable> {
        Arc::clone(&self.inner.routes)
    }

    /// Where the router listens, once [`Slots::start_router`] bound it.
    pub fn router_addr(&self) -> Option<SocketAddr> {
        *lock(&self.inner.router_addr)
    }

    /// `<data-dir>/slots/<app>/<slot>`
    pub fn slot_dir(&self, app: &str, slot: &str) -> PathBuf {
        self.inner.data_dir.join("slots").join(app).join(slot)
    }

    /// Starts the slot router on `listener` (bound by `serve`; port 0 in
    /// tests) for host names under `domain`. It stops with [`Slots::shutdown`].
    pub fn start_router(
        &self,
        listener: std::net::TcpListener,
        domain: &str,
    ) -> std::io::Result<SocketAddr> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        *lock(&self.inner.router_addr) = Some(addr);
        let table = self.routes();
        let domain = domain.to_string();
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            router::serve(listener, table, &domain, shutdown).await;
        });
        Ok(addr)
    }

    fn app_lock(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.app_locks)
            .entry(app.to_string())
            .or_default()
            .clone()
    }

    fn current(&self, app: &str, slot: &str) -> Option<Current> {
        lock(&self.inner.running).get(&key(app, slot)).cloned()
    }

    /// Starts a process for a release in `workdir` with `settings`, as
    /// slot `slot` of the app.
    async fn launch(
        &self,
        prepared: &Prepared,
        slot: &str,
        workdir: &Path,
        settings: &SlotSettings,
        port: Option<u16>,
    ) -> Result<Current, EngineError> {
        let env = self.environment(prepared, slot, settings).await?;
        let lease = ports::lease(port).map_err(|source| EngineError::Io {
            context: "cannot find a free port on 127.0.0.1".into(),
            source,
        })?;
        let port = lease.port();
        let spec = ProcessSpec {
            app: prepared.app.name.as_str().to_string(),
            slot: slot.to_string(),
            release: prepared.version.clone(),
            workdir: workdir.to_path_buf(),
            command: prepared.app.start.clone(),
            env,
            port,
            slot_dir: self.slot_dir(prepared.app.name.as_str(), slot),
        };
        Ok(Current {
            process: SlotProcess::start_leased(spec, lease, self.inner.config.supervisor.clone()),
            health_path: prepared.app.health.clone(),
            release_id: prepared.release_id,
            version: prepared.version.clone(),
            workdir: workdir.to_path_buf(),
            settings: settings.clone(),
        })
    }

    /// The process environment: settings (secrets resolved) and `SLIPWAY_*`.
    async fn environment(
        &self,
        prepared: &Prepared,
        slot: &str,
        settings: &SlotSettings,
    ) -> Result<BTreeMap<String, String>, EngineError> {
        let key = Arc::clone(&self.inner.secret_key);
        let pipeline_id = prepared.pipeline_id;
        let settings = settings.clone();
        let mut env = blocking(&self.inner.db, move |conn| {
            let mut env = BTreeMap::new();
            for (name, setting) in &settings {
                let value = if crate::domain::secrets::references(&setting.value).is_empty() {
                    setting.value.clone()
                } else {
                    secrets::substitute_secrets(conn, &key, pipeline_id, &setting.value)
                        .map_err(|e| EngineError::Invalid(format!("slot setting {name}: {e}")))?
                        .expose_secret()
                        .to_string()
                };
                env.insert(name.clone(), value);
            }
            Ok(env)
        })
        .await?;
        env.insert("SLIPWAY_APP".into(), prepared.app.name.as_str().to_string());
        env.insert("SLIPWAY_SLOT".into(), slot.to_string());
        env.insert("SLIPWAY_RELEASE".into(), prepared.version.clone());
        Ok(env)
    }

    /// Waits for a new process's health check; on failure stops it and
    /// returns why, with the last lines of its log.
    async fn warm(
        &self,
        current: &Current,
        timeout: Duration,
        log: Option<&LogSender>,
    ) -> Result<(), String> {
        let process = &current.process;
        say(
            log,
            format!(
                "waiting for GET http://127.0.0.1:{}{} to answer 2xx (at most {} s)",
                process.port(),
                current.health_path,
                timeout.as_secs()
            ),
        )
        .await;
        match process
            .wait_healthy(&self.inner.client, &current.health_path, timeout)
            .await
        {
            Ok(()) => {
                say(log, "healthy").await;
                Ok(())
            }
            Err(why) => {
                let tail = process.log_tail(40);
                if let Some(log) = log {
                    log.system(format!("health check failed: {why}")).await;
                    log.system("the process's last lines:").await;
                    for line in &tail {
                        log.system(format!("  {line}")).await;
                    }
                }
                Err(format!(
                    "{why}\nlast lines of its log:\n{}",
                    tail.join("\n")
                ))
            }
        }
    }

    /// Reads what a deployment of `version` into (`app`, `slot`) needs.
    fn prepare(
        conn: &mut DbConn,
        app: &str,
        slot: &str,
        release: ReleaseRef<'_>,
    ) -> Result<(Prepared, storage::ReleaseRow), EngineError> {
        let (app_row, pipeline) = store::find_app(conn, app)?
            .ok_or_else(|| EngineError::NotFound(format!("There is no app named `{app}`.")))?;
        let slot_row = store::find_slot(conn, app_row.id, slot)?.ok_or_else(|| {
            EngineError::NotFound(format!("The app {app} has no slot named `{slot}`."))
        })?;
        let release = match release {
            ReleaseRef::Version(version) => {
                let pipeline_row = pipelines::find(conn, &pipeline)?;
                pipelines::find_release(conn, &pipeline_row, version)?
            }
            ReleaseRef::Id(id) => storage::find_release_by_id(conn, id)?
                .ok_or_else(|| EngineError::NotFound(format!("release {id} is gone")))?,
        };
        let app_def = app_definition(conn, &pipeline, &release, app)?;
        Ok((
            Prepared {
                pipeline_id: release.pipeline_id,
                app: app_def,
                slot: slot_row,
                release_id: release.id,
                version: release.version.clone(),
            },
            release,
        ))
    }

    /// Deploys a release into a slot (see the module docs): unpack, start,
    /// health check, switch the route, drain and stop the old process.
    /// A failed health check leaves the old process serving and fails with
    /// the new one's log. Lines go to `log` (a task's log) as it goes.
    pub async fn deploy_to_slot(
        &self,
        request: SlotDeploy,
        log: Option<&LogSender>,
    ) -> Result<SlotDeployed, EngineError> {
        let app_lock = self.app_lock(&request.app);
        let _held = app_lock.lock().await;
        let (app, slot, version) = (
            request.app.clone(),
            request.slot.clone(),
            request.release.clone(),
        );
        let data_dir = self.inner.data_dir.clone();
        let from_dir = request.artifacts_dir.clone();
        let (prepared, source) = blocking(&self.inner.db, move |conn| {
            let (prepared, release) =
                Self::prepare(conn, &app, &slot, ReleaseRef::Version(&version))?;
            let source = match from_dir {
                Some(dir) => unpack::Source::Dir(dir),
                None => unpack::Source::Store {
                    data_dir,
                    artifacts: storage::list_artifacts(conn, release.id)?,
                },
            };
            Ok((prepared, source))
        })
        .await?;
        let (app, slot) = (request.app.as_str(), request.slot.as_str());
        let workdir = unpack::fresh_dir(&self.slot_dir(app, slot), &prepared.version);
        let (dest, start) = (workdir.clone(), prepared.app.start.clone());
        let files = tokio::task::spawn_blocking(move || unpack::unpack(&source, &dest, &start))
            .await
            .map_err(|e| EngineError::Io {
                context: "unpacking stopped".into(),
                source: std::io::Error::other(e.to_string()),
            })??;
        say(
            log,
            format!(
                "unpacked {} {} ({files} files) into {}",
                app,
                prepared.version,
                workdir.display()
            ),
        )
        .await;
        let settings = settings_of(&prepared.app);
        let new = match self
            .launch(&prepared, slot, &workdir, &settings, None)
            .await
        {
            Ok(new) => new,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&workdir);
                return Err(e);
            }
        };
        say(
            log,
            format!(
                "started `{}` for {app}/{slot} on port {}",
                prepared.app.start,
                new.process.port()
            ),
        )
        .await;
        let timeout = request
            .health_timeout
            .unwrap_or(self.inner.config.health_timeout);
        let subject = format!("slot:{app}/{slot}");
        if let Err(why) = self.warm(&new, timeout, log).await {
            new.process.stop().await;
            let _ = std::fs::remove_dir_all(&workdir);
            let message = format!(
                "{app} {} did not become healthy in slot {slot}; the slot keeps serving what it served: {why}",
                prepared.version
            );
            let (slot_id, actor, detail) = (
                prepared.slot.id,
                request.actor.clone(),
                serde_json::json!({ "release": prepared.version, "error": why }).to_string(),
            );
            let short = first_line(&why);
            let recorded = blocking(&self.inner.db, move |conn| {
                Ok(store::record_slot_failure(
                    conn, slot_id, &short, &actor, &subject, &detail,
                )?)
            })
            .await;
            if let Err(e) = recorded {
                tracing::error!(error = %e, "cannot record a failed slot deployment");
            }
            return Err(EngineError::Conflict(message));
        }
        // Recorded first: if Slipway dies now, it restarts what is recorded.
        let content = SlotContent {
            release_id: Some(prepared.release_id),
            workdir: Some(workdir.display().to_string()),
            port: Some(i32::from(new.process.port())),
            settings: settings_json(&settings),
            since: Some(storage::now()),
            process_state: ProcessState::Running.as_str().into(),
        };
        let (slot_id, actor) = (prepared.slot.id, request.actor.clone());
        let detail = serde_json::json!({
            "release": prepared.version,
            "port": new.process.port(),
            "workdir": workdir.display().to_string(),
        })
        .to_string();
        let recorded = blocking(&self.inner.db, move |conn| {
            Ok(store::record_slot_deploy(
                conn, slot_id, &content, &actor, &subject, &detail,
            )?)
        })
        .await;
        if let Err(e) = recorded {
            new.process.stop().await;
            let _ = std::fs::remove_dir_all(&workdir);
            return Err(e);
        }
        let old = self.install(app, slot, new.clone());
        say(
            log,
            format!(
                "{app}/{slot} now serves {} on port {}",
                prepared.version,
                new.process.port()
            ),
        )
        .await;
        let replaced = old.as_ref().map(|o| o.version.clone());
        if let Some(old) = old {
            self.retire(old, log).await;
        }
        Ok(SlotDeployed {
            app: app.to_string(),
            slot: slot.to_string(),
            release: prepared.version,
            port: new.process.port(),
            workdir,
            replaced,
        })
    }

    /// Makes `new` the slot's process and moves the route to it; returns
    /// the one it replaces.
    fn install(&self, app: &str, slot: &str, new: Current) -> Option<Current> {
        let backend = new.process.backend();
        let old = lock(&self.inner.running).insert(key(app, slot), new);
        self.inner
            .routes
            .update(|map| RouteTable::set(map, app, slot, Route::Backend(backend)));
        old
    }

    /// Lets a replaced process finish its requests, stops it, and removes
    /// its directory when no slot uses it any more.
    async fn retire(&self, old: Current, log: Option<&LogSender>) {
        let backend = old.process.backend();
        let drained = backend.drain(self.inner.config.drain_timeout).await;
        if !drained {
            say(
                log,
                format!(
                    "{} still had {} requests after {} s; stopping it anyway",
                    backend.label(),
                    backend.in_flight(),
                    self.inner.config.drain_timeout.as_secs()
                ),
            )
            .await;
        }
        old.process.stop().await;
        say(
            log,
            format!("stopped the old process ({})", backend.label()),
        )
        .await;
        let in_use = lock(&self.inner.running)
            .values()
            .any(|c| c.workdir == old.workdir);
        if !in_use {
            let dir = old.workdir.display().to_string();
            let still_recorded = blocking(&self.inner.db, move |conn| {
                Ok(store::list_all_slots(conn)?
                    .iter()
                    .any(|s| s.slot.workdir.as_deref() == Some(dir.as_str())))
            })
            .await
            .unwrap_or(true);
            if !still_recorded && let Err(e) = std::fs::remove_dir_all(&old.workdir) {
                tracing::warn!(dir = %old.workdir.display(), error = %e, "cannot remove a slot's old directory");
            }
        }
    }

    /// Swaps two slots of an app (see the module docs): warm `from`, then
    /// exchange routes, releases and non-sticky settings at once. Swapping
    /// back is the rollback.
    pub async fn swap(
        &self,
        app: &str,
        from: &str,
        to: &str,
        actor: &str,
        log: Option<&LogSender>,
    ) -> Result<SwapOutcome, EngineError> {
        let app_lock = self.app_lock(app);
        let _held = app_lock.lock().await;
        self.swap_locked(app, (from, to), actor, SwapCheck::default(), log)
            .await
    }

    /// [`Slots::swap`] for a deployment of `release`: refused (nothing
    /// changes) unless `from` runs that release, so the release the
    /// deployment records is the one that goes live. With `confirm`, it
    /// completes the app's pending swap with preview of `from` into `to`
    /// (refused when none waits).
    pub async fn swap_release(
        &self,
        (app, from, to): (&str, &str, &str),
        release: &str,
        confirm: bool,
        actor: &str,
        log: Option<&LogSender>,
    ) -> Result<SwapOutcome, EngineError> {
        let app_lock = self.app_lock(app);
        let _held = app_lock.lock().await;
        let pending_id = if confirm {
            let pending = self.pending_of(app).await?;
            if pending.from_slot != from || pending.to_slot != to {
                return Err(EngineError::Conflict(format!(
                    "The swap waiting for confirmation is {} into {}, not {from} into {to}.",
                    pending.from_slot, pending.to_slot
                )));
            }
            Some(pending.id)
        } else {
            None
        };
        let check = SwapCheck {
            pending_id,
            expected: Some(release),
        };
        self.swap_locked(app, (from, to), actor, check, log).await
    }

    async fn swap_locked(
        &self,
        app: &str,
        (from, to): (&str, &str),
        actor: &str,
        check: SwapCheck<'_>,
        log: Option<&LogSender>,
    ) -> Result<SwapOutcome, EngineError> {
        let SwapCheck {
            pending_id,
            expected,
        } = check;
        if from == to {
            return Err(EngineError::Invalid(format!(
                "A slot cannot be swapped with itself ({from})."
            )));
        }
        let (app_name, from_name, to_name) = (app.to_string(), from.to_string(), to.to_string());
        let (app_row, from_row, to_row, pending) = blocking(&self.inner.db, move |conn| {
            let (app_row, _) = store::find_app(conn, &app_name)?.ok_or_else(|| {
                EngineError::NotFound(format!("There is no app named `{app_name}`."))
            })?;
            let find = |conn: &mut DbConn, name: &str| {
                store::find_slot(conn, app_row.id, name)?.ok_or_else(|| {
                    EngineError::NotFound(format!("The app {app_name} has no slot named `{name}`."))
                })
            };
            let from_row = find(conn, &from_name)?;
            let to_row = find(conn, &to_name)?;
            let pending = store::find_pending_swap(conn, app_row.id)?;
            Ok((app_row, from_row, to_row, pending))
        })
        .await?;
        if pending_id.is_none()
            && let Some(p) = &pending
        {
            return Err(EngineError::Conflict(format!(
                "A swap of {} into {} waits for confirmation; confirm or cancel it first.",
                p.from_slot, p.to_slot
            )));
        }
        let Some(source) = self.current(app, from) else {
            return Err(EngineError::Conflict(format!(
                "The slot {from} of {app} runs nothing, so there is nothing to swap into {to}."
            )));
        };
        if let Some(expected) = expected
            && source.version != expected
        {
            return Err(EngineError::Conflict(format!(
                "The slot {from} of {app} runs {}, not {expected}; deploy {expected} to {from} first, then swap.",
                source.version
            )));
        }
        let target = self.current(app, to);
        let from_settings = parse_settings(&from_row.settings);
        let to_settings = parse_settings(&to_row.settings);
        let new_to_settings = swapped_settings(&to_settings, &from_settings);
        let new_from_settings = swapped_settings(&from_settings, &to_settings);
        let mut record = SwapRecord {
            app_id: app_row.id,
            from_slot_id: from_row.id,
            to_slot_id: to_row.id,
            from_slot: from.to_string(),
            to_slot: to.to_string(),
            from_content: SlotContent::of(&from_row),
            to_content: SlotContent::of(&to_row),
            from_release_id: from_row.release_id,
            to_release_id: to_row.release_id,
            pending_id,
            actor: actor.to_string(),
            subject: format!("app:{app}"),
            detail: serde_json::json!({
                "from": from,
                "to": to,
                "release": source.version,
                "replaced": target.as_ref().map(|t| t.version.clone()),
            })
            .to_string(),
        };
        // Warm the source: with the target's sticky settings it must run with.
        let restarted = source.settings != new_to_settings;
        let warm = if restarted {
            say(
                log,
                format!(
                    "starting {} again in {from} with {to}'s sticky settings",
                    source.version
                ),
            )
            .await;
            match self
                .relaunch(&app_row, &source, to, &new_to_settings, None)
                .await
            {
                Ok(warm) => warm,
                Err(e) => {
                    self.fail_swap(&record, &e.to_string()).await;
                    return Err(e);
                }
            }
        } else {
            source.clone()
        };
        let timeout = self.inner.config.health_timeout;
        if let Err(why) = self.warm(&warm, timeout, log).await {
            if restarted {
                warm.process.stop().await;
            }
            let message = format!(
                "{from} ({}) is not healthy, so it was not swapped into {to}; nothing changed: {why}",
                source.version
            );
            self.fail_swap(&record, &first_line(&message)).await;
            return Err(EngineError::Conflict(message));
        }
        let at = storage::now();
        record.to_content = SlotContent {
            release_id: Some(warm.release_id),
            workdir: Some(warm.workdir.display().to_string()),
            port: Some(i32::from(warm.process.port())),
            settings: settings_json(&new_to_settings),
            since: Some(at),
            process_state: ProcessState::Running.as_str().into(),
        };
        record.from_content = match &target {
            Some(t) => SlotContent {
                release_id: Some(t.release_id),
                workdir: Some(t.workdir.display().to_string()),
                port: Some(i32::from(t.process.port())),
                settings: settings_json(&new_from_settings),
                since: Some(at),
                process_state: ProcessState::Running.as_str().into(),
            },
            None => SlotContent {
                release_id: None,
                workdir: None,
                port: None,
                settings: settings_json(&new_from_settings),
                since: None,
                process_state: ProcessState::Stopped.as_str().into(),
            },
        };
        let to_save = record.clone();
        let saved = blocking(&self.inner.db, move |conn| {
            Ok(store::record_swap(conn, &to_save)?)
        })
        .await;
        if let Err(e) = saved {
            if restarted {
                warm.process.stop().await;
            }
            self.fail_swap(&record, &e.to_string()).await;
            return Err(e);
        }
        // The switch: both host names move in one store of the table.
        {
            let mut running = lock(&self.inner.running);
            running.insert(key(app, to), warm.clone());
            match &target {
                Some(t) => running.insert(key(app, from), t.clone()),
                None => running.remove(&key(app, from)),
            };
            let (warm_backend, target_route) = (
                warm.process.backend(),
                match &target {
                    Some(t) => Route::Backend(t.process.backend()),
                    None => Route::Idle {
                        app: app.to_string(),
                        slot: from.to_string(),
                    },
                },
            );
            self.inner.routes.update(|map| {
                RouteTable::set(map, app, to, Route::Backend(warm_backend));
                RouteTable::set(map, app, from, target_route);
            });
        }
        say(
            log,
            format!(
                "swapped: {app}/{to} now serves {}{}",
                warm.version,
                target
                    .as_ref()
                    .map(|t| format!(", {app}/{from} serves {}", t.version))
                    .unwrap_or_default()
            ),
        )
        .await;
        if restarted {
            self.retire(source, log).await;
        }
        // The process that moved into `from` runs with `to`'s sticky
        // settings; give it `from`'s own (it no longer takes live traffic).
        if let Some(t) = &target
            && t.settings != new_from_settings
        {
            let replaced = match self
                .relaunch(&app_row, t, from, &new_from_settings, None)
                .await
            {
                Ok(fresh) => match self.warm(&fresh, timeout, log).await {
                    Ok(()) => Some(fresh),
                    Err(why) => {
                        fresh.process.stop().await;
                        tracing::warn!(app, slot = from, "{why}");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(app, slot = from, error = %e, "cannot restart a swapped slot with its own settings");
                    None
                }
            };
            if let Some(fresh) = replaced
                && let Some(old) = self.install(app, from, fresh)
            {
                self.retire(old, log).await;
            }
        }
        Ok(SwapOutcome {
            app: app.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            release: Some(warm.version.clone()),
            replaced: target.map(|t| t.version),
            pending: false,
        })
    }

    async fn fail_swap(&self, record: &SwapRecord, error: &str) {
        let (record, error) = (record.clone(), error.to_string());
        let saved = blocking(&self.inner.db, move |conn| {
            Ok(store::record_swap_failure(conn, &record, &error)?)
        })
        .await;
        if let Err(e) = saved {
            tracing::error!(error = %e, "cannot record a failed swap");
        }
    }

    /// Starts the release `current` runs again, as slot `slot` with `settings`.
    async fn relaunch(
        &self,
        app_row: &AppRow,
        current: &Current,
        slot: &str,
        settings: &SlotSettings,
        port: Option<u16>,
    ) -> Result<Current, EngineError> {
        let (app, slot_name, release_id) =
            (app_row.name.clone(), slot.to_string(), current.release_id);
        let (prepared, _) = blocking(&self.inner.db, move |conn| {
            Self::prepare(conn, &app, &slot_name, ReleaseRef::Id(release_id))
        })
        .await?;
        self.launch(&prepared, slot, &current.workdir, settings, port)
            .await
    }

    /// A swap with preview: `from` starts again with `to`'s sticky settings
    /// (reachable at its own host name), is health-checked, and the swap
    /// waits for [`Slots::confirm_swap`] or [`Slots::cancel_swap`].
    pub async fn swap_preview(
        &self,
        app: &str,
        from: &str,
        to: &str,
        actor: &str,
    ) -> Result<SwapOutcome, EngineError> {
        if from == to {
            return Err(EngineError::Invalid(format!(
                "A slot cannot be swapped with itself ({from})."
            )));
        }
        let app_lock = self.app_lock(app);
        let _held = app_lock.lock().await;
        let (app_name, from_name, to_name) = (app.to_string(), from.to_string(), to.to_string());
        let (app_row, from_row, to_row) = blocking(&self.inner.db, move |conn| {
            let (app_row, _) = store::find_app(conn, &app_name)?.ok_or_else(|| {
                EngineError::NotFound(format!("There is no app named `{app_name}`."))
            })?;
            let from_row = store::find_slot(conn, app_row.id, &from_name)?;
            let to_row = store::find_slot(conn, app_row.id, &to_name)?;
            match (from_row, to_row) {
                (Some(f), Some(t)) => Ok((app_row, f, t)),
                _ => Err(EngineError::NotFound(format!(
                    "The app {app_name} has no slot `{from_name}` or `{to_name}`."
                ))),
            }
        })
        .await?;
        let Some(source) = self.current(app, from) else {
            return Err(EngineError::Conflict(format!(
                "The slot {from} of {app} runs nothing, so there is nothing to swap into {to}."
            )));
        };
        let target = self.current(app, to);
        let preview_settings = swapped_settings(
            &parse_settings(&to_row.settings),
            &parse_settings(&from_row.settings),
        );
        let record = SwapRecord {
            app_id: app_row.id,
            from_slot_id: from_row.id,
            to_slot_id: to_row.id,
            from_slot: from.to_string(),
            to_slot: to.to_string(),
            from_content: SlotContent::of(&from_row),
            to_content: SlotContent::of(&to_row),
            from_release_id: from_row.release_id,
            to_release_id: to_row.release_id,
            pending_id: None,
            actor: actor.to_string(),
            subject: format!("app:{app}"),
            detail: serde_json::json!({
                "from": from,
                "to": to,
                "release": source.version,
                "replaced": target.as_ref().map(|t| t.version.clone()),
                "preview": true,
            })
            .to_string(),
        };
        let pending = blocking(&self.inner.db, {
            let record = record.clone();
            move |conn| Ok(store::insert_pending_swap(conn, &record)?)
        })
        .await?;
        if source.settings != preview_settings {
            let attempt = async {
                let fresh = self
                    .relaunch(&app_row, &source, from, &preview_settings, None)
                    .await?;
                if let Err(why) = self
                    .warm(&fresh, self.inner.config.health_timeout, None)
                    .await
                {
                    fresh.process.stop().await;
                    return Err(EngineError::Conflict(format!(
                        "{from} did not become healthy with {to}'s settings; the swap was not prepared: {why}"
                    )));
                }
                Ok(fresh)
            };
            match attempt.await {
                Ok(fresh) => {
                    if let Some(old) = self.install(app, from, fresh) {
                        self.retire(old, None).await;
                    }
                }
                Err(e) => {
                    let mut failed = record.clone();
                    failed.pending_id = Some(pending.id);
                    self.fail_swap(&failed, &first_line(&e.to_string())).await;
                    return Err(e);
                }
            }
        }
        Ok(SwapOutcome {
            app: app.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            release: Some(source.version),
            replaced: target.map(|t| t.version),
            pending: true,
        })
    }

    /// Completes the app's pending swap with preview.
    pub async fn confirm_swap(&self, app: &str, actor: &str) -> Result<SwapOutcome, EngineError> {
        let app_lock = self.app_lock(app);
        let _held = app_lock.lock().await;
        let pending = self.pending_of(app).await?;
        let check = SwapCheck {
            pending_id: Some(pending.id),
            expected: None,
        };
        self.swap_locked(
            app,
            (&pending.from_slot, &pending.to_slot),
            actor,
            check,
            None,
        )
        .await
    }

    /// Cancels the app's pending swap with preview: the source slot runs
    /// with its own settings again.
    pub async fn cancel_swap(&self, app: &str, actor: &str) -> Result<(), EngineError> {
        let app_lock = self.app_lock(app);
        let _held = app_lock.lock().await;
        let pending = self.pending_of(app).await?;
        let (id, actor_name, subject) = (pending.id, actor.to_string(), format!("app:{app}"));
        let detail =
            serde_json::json!({ "from": pending.from_slot, "to": pending.to_slot }).to_string();
        let canceled = blocking(&self.inner.db, move |conn| {
            Ok(store::cancel_pending_swap(
                conn,
                id,
                &actor_name,
                &subject,
                &detail,
            )?)
        })
        .await?;
        if !canceled {
            return Err(EngineError::Conflict(
                "The swap no longer waits for confirmation.".into(),
            ));
        }
        // Back to the slot's own settings.
        let (app_name, from) = (app.to_string(), pending.from_slot.clone());
        let (app_row, from_row) = blocking(&self.inner.db, move |conn| {
            let (app_row, _) = store::find_app(conn, &app_name)?
                .ok_or_else(|| EngineError::NotFound(format!("no app `{app_name}`")))?;
            let row = store::find_slot(conn, app_row.id, &from)?
                .ok_or_else(|| EngineError::NotFound(format!("no slot `{from}`")))?;
            Ok((app_row, row))
        })
        .await?;
        let own = parse_settings(&from_row.settings);
        if let Some(current) = self.current(app, &pending.from_slot)
            && current.settings != own
        {
            let fresh = self
                .relaunch(&app_row, &current, &pending.from_slot, &own, None)
                .await?;
            if let Err(why) = self
                .warm(&fresh, self.inner.config.health_timeout, None)
                .await
            {
                fresh.process.stop().await;
                return Err(EngineError::Conflict(format!(
                    "The swap was canceled, but {} did not become healthy with its own settings again (it keeps the preview's): {why}",
                    pending.from_slot
                )));
            }
            if let Some(old) = self.install(app, &pending.from_slot, fresh) {
                self.retire(old, None).await;
            }
        }
        Ok(())
    }

    /// The app's swap with preview waiting for confirmation, as (from, to);
    /// `Conflict` when none waits.
    pub async fn pending_swap(&self, app: &str) -> Result<(String, String), EngineError> {
        let pending = self.pending_of(app).await?;
        Ok((pending.from_slot, pending.to_slot))
    }

    async fn pending_of(&self, app: &str) -> Result<storage::SlotSwapRow, EngineError> {
        let app_name = app.to_string();
        blocking(&self.inner.db, move |conn| {
            let (app_row, _) = store::find_app(conn, &app_name)?.ok_or_else(|| {
                EngineError::NotFound(format!("There is no app named `{app_name}`."))
            })?;
            store::find_pending_swap(conn, app_row.id)?.ok_or_else(|| {
                EngineError::Conflict(format!("No swap of {app_name} waits for confirmation."))
            })
        })
        .await
    }

    /// Starts every slot that has a release again, from its stored
    /// directory, after killing what a killed Slipway left running; slots
    /// without one answer 503. Then watches them (health, new slots) until
    /// [`Slots::shutdown`]. Called by `Engine::start`.
    pub async fn restore(&self) -> Result<(), EngineError> {
        let listings = blocking(&self.inner.db, |conn| Ok(store::list_all_slots(conn)?)).await?;
        for listing in &listings {
            supervisor::kill_leftovers(&self.slot_dir(&listing.app.name, &listing.slot.name));
        }
        self.sync_idle_routes(&listings);
        for listing in listings {
            let (Some(release_id), Some(workdir)) =
                (listing.slot.release_id, listing.slot.workdir.clone())
            else {
                continue;
            };
            let (app, slot) = (listing.app.name.clone(), listing.slot.name.clone());
            if self.current(&app, &slot).is_some() {
                continue;
            }
            let started = self
                .start_stored(&listing.app, &listing.slot, release_id, &workdir)
                .await;
            match started {
                Ok(current) => {
                    tracing::info!(
                        app,
                        slot,
                        release = %current.version,
                        port = current.process.port(),
                        "slot started again from {workdir}"
                    );
                    self.install(&app, &slot, current);
                }
                Err(e) => {
                    tracing::error!(app, slot, error = %e, "cannot start a slot again");
                    let (slot_id, message) = (listing.slot.id, e.to_string());
                    let _ = blocking(&self.inner.db, move |conn| {
                        Ok(
                            store::set_slot_process(conn, slot_id, "failed", None).and_then(
                                |()| {
                                    store::record_slot_failure(
                                        conn,
                                        slot_id,
                                        &message,
                                        ENGINE_ACTOR,
                                        "slot:restart",
                                        "{}",
                                    )
                                },
                            )?,
                        )
                    })
                    .await;
                }
            }
        }
        let me = self.clone();
        self.inner
            .tracker
            .spawn(async move { me.monitor_loop().await });
        Ok(())
    }

    async fn start_stored(
        &self,
        app_row: &AppRow,
        slot_row: &SlotRow,
        release_id: i64,
        workdir: &str,
    ) -> Result<Current, EngineError> {
        if !Path::new(workdir).is_dir() {
            return Err(EngineError::Invalid(format!(
                "its directory {workdir} is gone; deploy the release again"
            )));
        }
        let (app, slot) = (app_row.name.clone(), slot_row.name.clone());
        let (prepared, _) = blocking(&self.inner.db, move |conn| {
            Self::prepare(conn, &app, &slot, ReleaseRef::Id(release_id))
        })
        .await?;
        let settings = parse_settings(&slot_row.settings);
        let port = slot_row.port.and_then(|p| u16::try_from(p).ok());
        let current = self
            .launch(
                &prepared,
                &slot_row.name,
                Path::new(workdir),
                &settings,
                port,
            )
            .await?;
        if Some(current.process.port()) != port {
            let (slot_id, new_port) = (slot_row.id, i32::from(current.process.port()));
            blocking(&self.inner.db, move |conn| {
                Ok(store::set_slot_process(
                    conn,
                    slot_id,
                    ProcessState::Running.as_str(),
                    Some(new_port),
                )?)
            })
            .await?;
        }
        Ok(current)
    }

    /// Slots without a process answer 503; slots that no longer exist, 404.
    fn sync_idle_routes(&self, listings: &[store::SlotListing]) {
        let running: Vec<Key> = lock(&self.inner.running).keys().cloned().collect();
        self.inner.routes.update(|map| {
            let mut wanted: HashMap<String, Route> = HashMap::new();
            for l in listings {
                let k = key(&l.app.name, &l.slot.name);
                if running.contains(&k) {
                    continue;
                }
                for label in router::labels(&l.app.name, &l.slot.name) {
                    wanted.insert(
                        label,
                        Route::Idle {
                            app: l.app.name.clone(),
                            slot: l.slot.name.clone(),
                        },
                    );
                }
            }
            map.retain(|label, route| {
                matches!(route, Route::Backend(_)) || wanted.contains_key(label)
            });
            for (label, route) in wanted {
                map.entry(label).or_insert(route);
            }
        });
    }

    async fn monitor_loop(self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.monitor_interval) => {}
                _ = shutdown.cancelled() => break,
            }
            match blocking(&self.inner.db, |conn| Ok(store::list_all_slots(conn)?)).await {
                Ok(listings) => self.sync_idle_routes(&listings),
                Err(e) => tracing::warn!(error = %e, "cannot read the slots"),
            }
            let current: Vec<Current> = lock(&self.inner.running).values().cloned().collect();
            for c in current {
                if c.process.status().state == ProcessState::Running {
                    c.process
                        .probe(&self.inner.client, &c.health_path, Duration::from_secs(2))
                        .await;
                } else {
                    c.process
                        .set_health(Health::Unhealthy("the process is not running".into()));
                }
            }
        }
    }

    /// Stops every slot process (gracefully) and the router. Slots with a
    /// release start again at the next [`Slots::restore`].
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let all: Vec<Current> = lock(&self.inner.running).drain().map(|(_, c)| c).collect();
        futures_util::future::join_all(all.iter().map(|c| c.process.stop())).await;
        self.inner.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.inner.tracker.wait()).await;
    }

    /// Every app and slot, with what runs there now: for the environments page.
    pub async fn list_slots_view(&self) -> Result<Vec<SlotView>, EngineError> {
        let (listings, swaps, pending, order, owners) = blocking(&self.inner.db, |conn| {
            let listings = store::list_all_slots(conn)?;
            let mut app_ids: Vec<i64> = listings.iter().map(|l| l.app.id).collect();
            app_ids.dedup();
            let swaps = store::recent_swaps(conn, &app_ids, 200)?;
            let mut pending = Vec::new();
            for id in &app_ids {
                if let Some(p) = store::find_pending_swap(conn, *id)? {
                    pending.push(p);
                }
            }
            // Slots in the order the definition names them, and the stage
            // each belongs to.
            let mut order: HashMap<(String, String), usize> = HashMap::new();
            let mut owners: HashMap<(String, String), (String, Vec<String>)> = HashMap::new();
            let mut seen = std::collections::HashSet::new();
            for l in &listings {
                if !seen.insert(l.pipeline.clone()) {
                    continue;
                }
                if let Ok(loaded) = pipelines::load(conn, &l.pipeline) {
                    for app in &loaded.definition.apps {
                        for (i, s) in app.slots.iter().enumerate() {
                            let k = (app.name.as_str().to_string(), s.as_str().to_string());
                            if let Some(stage) =
                                slot_ops::slot_owner(&loaded.definition, &k.0, &k.1)
                            {
                                owners.insert(
                                    k.clone(),
                                    (
                                        stage.name.as_str().to_string(),
                                        slot_ops::guards_in_words(stage),
                                    ),
                                );
                            }
                            order.insert(k, i);
                        }
                    }
                }
            }
            Ok((listings, swaps, pending, order, owners))
        })
        .await?;
        let mut views: Vec<SlotView> = listings
            .into_iter()
            .map(|l| {
                let current = self.current(&l.app.name, &l.slot.name);
                let status = current.as_ref().map(|c| c.process.status());
                let last = swaps
                    .iter()
                    .find(|s| {
                        s.app_id == l.app.id
                            && s.state != store::SWAP_PENDING
                            && (s.from_slot == l.slot.name || s.to_slot == l.slot.name)
                    })
                    .map(|s| LastSwap {
                        from: s.from_slot.clone(),
                        to: s.to_slot.clone(),
                        state: s.state.clone(),
                        by: s
                            .decided_by
                            .clone()
                            .unwrap_or_else(|| s.requested_by.clone()),
                        at: s.finished_at.unwrap_or(s.created_at),
                    });
                let pending_swap = pending
                    .iter()
                    .find(|p| {
                        p.app_id == l.app.id
                            && (p.from_slot == l.slot.name || p.to_slot == l.slot.name)
                    })
                    .map(|p| (p.from_slot.clone(), p.to_slot.clone()));
                SlotView {
                    stage: owners
                        .get(&(l.app.name.clone(), l.slot.name.clone()))
                        .cloned(),
                    release_id: l.slot.release_id,
                    previous_release_id: l.slot.previous_release_id,
                    labels: router::labels(&l.app.name, &l.slot.name),
                    process: status
                        .as_ref()
                        .map(|s| s.state.as_str().to_string())
                        .unwrap_or_else(|| match l.slot.release_id {
                            Some(_) => l.slot.process_state.clone(),
                            None => "empty".to_string(),
                        }),
                    restarts: status.as_ref().map(|s| s.restarts).unwrap_or(0),
                    health: status.map(|s| s.health).unwrap_or(Health::Unknown),
                    port: current.as_ref().map(|c| c.process.port()),
                    pipeline: l.pipeline,
                    app: l.app.name,
                    slot: l.slot.name,
                    release: l.version,
                    previous_release: l.previous_version,
                    since: l.slot.since,
                    last_swap_at: l.slot.last_swap_at,
                    error: l.slot.error,
                    pending_swap,
                    last_swap: last,
                }
            })
            .collect();
        views.sort_by_key(|v| {
            (
                v.app.clone(),
                order
                    .get(&(v.app.clone(), v.slot.clone()))
                    .copied()
                    .unwrap_or(usize::MAX),
                v.slot.clone(),
            )
        });
        Ok(views)
    }

    /// The last lines of a slot's process log (memory), newest last.
    pub fn log_tail(&self, app: &str, slot: &str, lines: usize) -> Vec<String> {
        self.current(app, slot)
            .map(|c| c.process.log_tail(lines))
            .unwrap_or_default()
    }

    /// The port a slot's process listens on now, if it runs.
    pub fn port_of(&self, app: &str, slot: &str) -> Option<u16> {
        self.current(app, slot).map(|c| c.process.port())
    }

    /// The supervisor's view of a slot's process, if it runs.
    pub fn process_status(&self, app: &str, slot: &str) -> Option<supervisor::ProcessStatus> {
        self.current(app, slot).map(|c| c.process.status())
    }
}

/// What a swap checks first: the pending swap (with preview) it
/// completes, and the release the source must run.
#[derive(Debug, Clone, Copy, Default)]
struct SwapCheck<'a> {
    pending_id: Option<i64>,
    expected: Option<&'a str>,
}

/// Which release: by version (of the app's pipeline) or id.
#[derive(Debug, Clone, Copy)]
enum ReleaseRef<'a> {
    Version(&'a str),
    Id(i64),
}

/// The app as the release's definition describes it (its `start`, health
/// path and settings), or the current definition's when the release's has
/// no such app.
fn app_definition(
    conn: &mut DbConn,
    pipeline: &str,
    release: &storage::ReleaseRow,
    app: &str,
) -> Result<App, EngineError> {
    let revision = storage::revision_by_id(conn, release.revision_id)?;
    let definition = pipelines::parse_stored(&revision.yaml, pipeline, revision.revision)?;
    if let Some(found) = definition.app(app) {
        return Ok(found.clone());
    }
    let current = pipelines::load(conn, pipeline)?;
    current.definition.app(app).cloned().ok_or_else(|| {
        EngineError::NotFound(format!(
            "The pipeline {pipeline} defines no app named `{app}`."
        ))
    })
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn s(value: &str, sticky: bool) -> SlotSetting {
        SlotSetting {
            value: value.into(),
            sticky,
        }
    }

    #[test]
    fn sticky_settings_stay_and_the_others_move() {
        let staging = SlotSettings::from([
            ("DATABASE_URL".into(), s("staging-db", true)),
            ("LOG_LEVEL".into(), s("debug", false)),
        ]);
        let production = SlotSettings::from([
            ("DATABASE_URL".into(), s("prod-db", true)),
            ("LOG_LEVEL".into(), s("info", false)),
            ("OLD_FLAG".into(), s("on", false)),
        ]);
        let new_production = swapped_settings(&production, &staging);
        assert_eq!(new_production["DATABASE_URL"].value, "prod-db");
        assert_eq!(new_production["LOG_LEVEL"].value, "debug");
        assert!(!new_production.contains_key("OLD_FLAG"));
        let new_staging = swapped_settings(&staging, &production);
        assert_eq!(new_staging["DATABASE_URL"].value, "staging-db");
        assert_eq!(new_staging["OLD_FLAG"].value, "on");
        // Swapping back gives each slot what it had.
        assert_eq!(swapped_settings(&new_production, &new_staging), production);
        assert_eq!(parse_settings(&settings_json(&staging)), staging);
        assert!(parse_settings("not json").is_empty());
    }
}
