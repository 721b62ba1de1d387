//! The [`Application`]: the one way to start Slipway.
//!
//! `slipway serve`, every test harness and every benchmark build the same
//! application from [`Settings`] and [`Options`]: the database (opened,
//! migrated), the secret key, the first admin, the demo (optional), the
//! engine, the web server and the slot router. It stops the way a server
//! stops on `SIGTERM`: the live pages' streams close, the web server stops,
//! then the engine shuts down (running builds and deployments are recorded
//! as interrupted).
//!
//! This layer sits above `web` and `engine`, like `cli`; nothing below it
//! imports it.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use actix_web::dev::{Server, ServerHandle};
use anyhow::Context;

use crate::config::{RouterSettings, Settings};
use crate::engine::changes::Changes;
use crate::engine::pipelines::demo;
use crate::engine::runtime::{Engine, EngineConfig};
use crate::engine::secrets::SecretKey;
use crate::engine::users;
use crate::storage::Db;
use crate::web::{self, AppState};

/// How the slot router is started.
#[derive(Debug, Default)]
pub enum Router {
    /// No slot router (most tests and benchmarks).
    #[default]
    Off,
    /// On `settings.router.listen`, as `slipway serve` does: the default
    /// address is optional (another Slipway may hold it), an address
    /// someone chose must work.
    FromSettings,
    /// On this already bound listener (a test that keeps its port over a
    /// restart).
    Listener(TcpListener),
}

/// What the settings do not say: how this process runs Slipway.
#[derive(Debug, Default)]
pub struct Options {
    /// Create the sample pipeline `space-game-web` once (`--demo`).
    pub demo: bool,
    /// The slot router (default: none).
    pub router: Router,
    /// An already bound listener for the web server; without one,
    /// `settings.listen` is bound (tests bind port 0 first to put the
    /// port into `settings.public_url`).
    pub listener: Option<TcpListener>,
    /// The key secrets are encrypted with; without one, the key in the
    /// data directory (created on the first start).
    pub secret_key: Option<Arc<SecretKey>>,
    /// How the engine runs (its notifications' public URL is the
    /// settings').
    pub engine: EngineConfig,
}

/// A built Slipway: serving and running once [`Application::run_until_stopped`]
/// is awaited.
pub struct Application {
    state: actix_web::web::Data<AppState>,
    server: Server,
    address: SocketAddr,
    router_address: Option<SocketAddr>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("address", &self.address)
            .field("router_address", &self.router_address)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens and migrates the database, makes the first admin (and the
    /// demo), binds the listeners, starts the engine and the slot router,
    /// and builds the web server. Start-up errors say what could not start.
    pub async fn build(settings: Settings, options: Options) -> anyhow::Result<Application> {
        let Options {
            demo,
            router,
            listener,
            secret_key,
            engine: mut engine_config,
        } = options;
        let prepared = settings.clone();
        let (db, secret_key) =
            tokio::task::spawn_blocking(move || prepare(&prepared, demo, secret_key))
                .await
                .context("start-up was interrupted")??;
        let listener = match listener {
            Some(listener) => listener,
            None => TcpListener::bind(settings.listen)
                .with_context(|| format!("cannot listen on {}", settings.listen))?,
        };
        let address = listener.local_addr()?;
        let router_listener = match router {
            Router::Off => None,
            Router::FromSettings => bind_router(&settings.router)?,
            Router::Listener(listener) => Some(listener),
        };
        let router_domain = settings.router.domain.clone();

        engine_config.notifications.public_url = settings.public_url.clone();
        let engine = Engine::new(
            db.clone(),
            settings.data_dir.clone(),
            secret_key.clone(),
            engine_config,
        );
        let state = AppState::new(db, settings, secret_key, engine.clone());
        // SSO: the provider's discovery document, or a clear start-up error.
        web::oidc::start(&state).await?;
        engine
            .start()
            .await
            .context("cannot start the build engine")?;
        let sign_in = format!(
            "sign in at {}/login{}",
            state.settings.public_url,
            if state.sso.get().is_some() {
                " (with a password, or with SSO)"
            } else {
                " (as `admin` on the first start: see initial-admin-password in the data dir)"
            }
        );
        let server = web::server(state.clone(), listener)?;
        tracing::info!("listening on http://{address}");
        tracing::info!("{sign_in}");
        let router_address = match router_listener {
            Some(router_listener) => {
                let router_address = engine
                    .slots()
                    .start_router(router_listener, &router_domain)
                    .context("cannot start the slot router")?;
                tracing::info!(
                    "slot router listening on http://{router_address} (slots answer to APP-SLOT.{router_domain}:{})",
                    router_address.port()
                );
                Some(router_address)
            }
            None => None,
        };
        Ok(Application {
            state,
            server,
            address,
            router_address,
        })
    }

    /// Where the web server listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Where the slot router listens, when it runs.
    pub fn router_address(&self) -> Option<SocketAddr> {
        self.router_address
    }

    /// The database pool.
    pub fn db(&self) -> &Db {
        &self.state.db
    }

    /// The engine's handle.
    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    /// The live pages' change hub.
    pub fn changes(&self) -> &Changes {
        self.state.engine.changes()
    }

    /// The key secrets are encrypted with.
    pub fn secret_key(&self) -> &Arc<SecretKey> {
        &self.state.secret_key
    }

    /// Stops this application from elsewhere (another task or thread).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            server: self.server.handle(),
            changes: self.changes().clone(),
        }
    }

    /// Serves until stopped (by a [`Stopper`], or on `SIGTERM`/Ctrl-C, which
    /// actix-web stops on), then shuts the engine down: its running builds
    /// and deployments are recorded as interrupted.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        // The live pages' event streams end on the stop signal too, or the
        // graceful stop would wait for every open page.
        let changes = self.changes().clone();
        let watcher = tokio::spawn(async move {
            stop_signal().await;
            changes.close();
        });
        let served = self.server.await;
        watcher.abort();
        self.state.engine.shutdown().await;
        served?;
        Ok(())
    }

    /// Builds the application on a thread of its own with a tokio runtime
    /// of `worker_threads`, for callers that are not async (tests and
    /// benchmarks); it runs until [`Spawned::stop`] or drop.
    pub fn spawn(
        settings: Settings,
        options: Options,
        worker_threads: usize,
    ) -> anyhow::Result<Spawned> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("slipway".into())
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(worker_threads)
                    .enable_all()
                    .build()
                    .context("cannot start the async runtime")?;
                let handle = runtime.handle().clone();
                runtime.block_on(async move {
                    let app = match Application::build(settings, options).await {
                        Ok(app) => app,
                        Err(e) => {
                            let message = format!("{e:#}");
                            let _ = tx.send(Err(e));
                            anyhow::bail!("{message}");
                        }
                    };
                    let started = Started {
                        address: app.address(),
                        router_address: app.router_address(),
                        db: app.db().clone(),
                        engine: app.engine().clone(),
                        secret_key: app.secret_key().clone(),
                        stopper: app.stopper(),
                        runtime: handle,
                    };
                    let _ = tx.send(Ok(started));
                    app.run_until_stopped().await
                })
            })
            .context("cannot start the application's thread")?;
        match rx.recv() {
            Ok(Ok(started)) => Ok(Spawned {
                started,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(anyhow::anyhow!(
                    "the application's thread ended at start-up"
                )),
            },
        }
    }
}

/// Opens the database of these settings and applies pending migrations.
pub fn open_db(settings: &Settings) -> anyhow::Result<Db> {
    private_data_dir(&settings.data_dir)?;
    let db = Db::connect(&settings.database_url, 8)?;
    db.run_migrations()?;
    Ok(db)
}

/// The synchronous part of start-up: the database, the secret key, the
/// first admin and the demo.
fn prepare(
    settings: &Settings,
    demo: bool,
    secret_key: Option<Arc<SecretKey>>,
) -> anyhow::Result<(Db, Arc<SecretKey>)> {
    let db = open_db(settings)?;
    let secret_key = match secret_key {
        Some(key) => key,
        None => Arc::new(SecretKey::load_or_create(&settings.data_dir)?),
    };
    let mut conn = db.get()?;
    if let Some(path) = users::ensure_initial_admin(&mut conn, &settings.data_dir)? {
        tracing::info!(
            file = %path.display(),
            "created the first admin user `admin`; its password is in {}",
            path.display()
        );
    }
    if demo {
        match demo::ensure_demo(&mut conn, &settings.data_dir, settings.router.listen)? {
            demo::DemoOutcome::Created { repo } => tracing::info!(
                repo = %repo.display(),
                "created the demo pipeline {}",
                demo::DEMO_PIPELINE
            ),
            demo::DemoOutcome::AlreadyThere => {
                tracing::info!("the demo pipeline {} exists already", demo::DEMO_PIPELINE)
            }
        }
    }
    drop(conn);
    Ok((db, secret_key))
}

/// Binds the slot router's address: the default one is optional (another
/// Slipway may hold it), an address someone chose must work.
fn bind_router(router: &RouterSettings) -> anyhow::Result<Option<TcpListener>> {
    match TcpListener::bind(router.listen) {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if router.listen == RouterSettings::default().listen => {
            tracing::error!(
                "cannot listen on {} for the slot router: {e}; slots are not reachable through it (choose another address with --router-listen)",
                router.listen
            );
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot listen on {} for the slot router (--router-listen)",
                router.listen
            )
        }),
    }
}

/// Creates the data directory readable by this user only (0700), and takes
/// group and other access away from one that exists: it holds the
/// database, the secret key, artifacts and the slots.
fn private_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    crate::storage::create_private_dir(dir)
        .map_err(|e| anyhow::anyhow!("cannot create the data directory {}: {e}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .map_err(|e| anyhow::anyhow!("cannot read the data directory {}: {e}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)).map_err(
            |e| {
                anyhow::anyhow!(
                    "cannot make the data directory {} private: {e}",
                    dir.display()
                )
            },
        )?;
        tracing::warn!(
            "the data directory {} was open to other users (mode {:o}); it is now {:o}",
            dir.display(),
            mode & 0o777,
            mode & 0o700
        );
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C (the signals actix-web stops on).
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for SIGTERM; live pages end with Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Stops an [`Application`] from another task or thread.
#[derive(Clone)]
pub struct Stopper {
    server: ServerHandle,
    changes: Changes,
}

impl Stopper {
    /// Stops the web server; `graceful` first closes the live pages'
    /// streams and lets open requests finish (as on `SIGTERM`), otherwise
    /// connections are dropped. The engine shuts down after the server.
    pub async fn stop(&self, graceful: bool) {
        if graceful {
            self.changes.close();
        }
        self.server.stop(graceful).await;
    }
}

/// What a spawned application tells its caller once it runs.
struct Started {
    address: SocketAddr,
    router_address: Option<SocketAddr>,
    db: Db,
    engine: Engine,
    secret_key: Arc<SecretKey>,
    stopper: Stopper,
    runtime: tokio::runtime::Handle,
}

/// An [`Application`] running on its own thread ([`Application::spawn`]);
/// dropping it stops it at once (not gracefully).
pub struct Spawned {
    started: Started,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawned")
            .field("address", &self.started.address)
            .field("router_address", &self.started.router_address)
            .finish_non_exhaustive()
    }
}

impl Spawned {
    /// Where the web server listens.
    pub fn address(&self) -> SocketAddr {
        self.started.address
    }

    /// Where the slot router listens, when it runs.
    pub fn router_address(&self) -> Option<SocketAddr> {
        self.started.router_address
    }

    /// The database pool.
    pub fn db(&self) -> &Db {
        &self.started.db
    }

    /// The engine's handle.
    pub fn engine(&self) -> &Engine {
        &self.started.engine
    }

    /// The live pages' change hub.
    pub fn changes(&self) -> &Changes {
        self.started.engine.changes()
    }

    /// The key secrets are encrypted with.
    pub fn secret_key(&self) -> &Arc<SecretKey> {
        &self.started.secret_key
    }

    /// The application's runtime (to run engine calls from a caller that
    /// is not async: `app.runtime().block_on(app.engine().queue(…))`).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.started.runtime
    }

    /// Stops the application (see [`Stopper::stop`]) and waits until its
    /// engine has shut down; later calls do nothing.
    pub fn stop(&mut self, graceful: bool) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let stopper = self.started.stopper.clone();
        // On a thread of its own: the caller may be inside a runtime.
        let stopping = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(stopper.stop(graceful));
            }
        });
        let _ = stopping.join();
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("the application stopped with an error: {e:#}"),
            Err(_) => tracing::warn!("the application's thread panicked"),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop(false);
    }
}
