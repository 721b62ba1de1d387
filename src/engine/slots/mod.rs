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

mod deploy;
pub mod ports;
mod restore;
pub mod router;
pub mod supervisor;
mod swap;
pub mod unpack;
mod view;

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

use self::router::RouteTable;
use self::supervisor::{Health, ProcessSpec, SlotProcess, SupervisorConfig};
use super::secrets::SecretKey;
use super::{EngineError, pipelines, secrets};
use crate::domain::{App, SwapState};
use crate::engine::blocking;
use crate::engine::jobs::runner::LogSender;
use crate::storage::slots::{self as store};
use crate::storage::{self, Db, DbConn, SlotRow};

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
    pub state: SwapState,
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

    /// Stops every slot process (gracefully) and the router. Slots with a
    /// release start again at the next [`Slots::restore`].
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let all: Vec<Current> = lock(&self.inner.running).drain().map(|(_, c)| c).collect();
        futures_util::future::join_all(all.iter().map(|c| c.process.stop())).await;
        self.inner.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.inner.tracker.wait()).await;
    }
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
