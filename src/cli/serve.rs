//! `slipway serve`: the web server, the API and (with later issues) the engine.

use std::net::TcpListener;

use anyhow::Context;
use clap::Args;

use super::{Common, init_tracing, open_db};
use crate::engine::pipelines::demo;
use crate::engine::users;
use crate::web::{self, AppState};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free port).
    #[arg(long, env = "SLIPWAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Create the sample pipeline `space-game-web` (once) with its git repository.
    #[arg(long, env = "SLIPWAY_DEMO")]
    pub demo: bool,
    /// Address of the slot router, the reverse proxy to the apps' slots
    /// (default 127.0.0.1:8081; port 0 picks a free port).
    #[arg(long, env = "SLIPWAY_ROUTER_LISTEN", value_name = "ADDR")]
    pub router_listen: Option<String>,
    /// Domain of slot host names: APP-SLOT.<domain>, APP.<domain> for production (default localhost).
    #[arg(long, env = "SLIPWAY_ROUTER_DOMAIN", value_name = "DOMAIN")]
    pub router_domain: Option<String>,
}

pub fn run(args: ServeArgs, common: &Common) -> anyhow::Result<()> {
    init_tracing();
    let mut settings = common.settings(args.listen.clone())?;
    settings.router.apply(
        args.router_listen.clone(),
        args.router_domain.clone(),
        "--router-listen / --router-domain",
    )?;
    let db = open_db(&settings)?;
    let secret_key = std::sync::Arc::new(crate::engine::secrets::SecretKey::load_or_create(
        &settings.data_dir,
    )?);
    {
        let mut conn = db.get()?;
        if let Some(path) = users::ensure_initial_admin(&mut conn, &settings.data_dir)? {
            tracing::info!(
                file = %path.display(),
                "created the first admin user `admin`; its password is in {}",
                path.display()
            );
        }
        if args.demo {
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
    }
    let listener = TcpListener::bind(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    // The slot router on its default address is optional (another Slipway
    // may hold it); an address someone chose must work.
    let router_listener = match TcpListener::bind(settings.router.listen) {
        Ok(listener) => Some(listener),
        Err(e) if settings.router.listen == crate::config::RouterSettings::default().listen => {
            tracing::error!(
                "cannot listen on {} for the slot router: {e}; slots are not reachable through it (choose another address with --router-listen)",
                settings.router.listen
            );
            None
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot listen on {} for the slot router (--router-listen)",
                    settings.router.listen
                )
            });
        }
    };
    let router_domain = settings.router.domain.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let state = AppState::new(db, settings, secret_key);
        // SSO: the provider's discovery document, or a clear start-up error.
        web::oidc::start(&state).await?;
        let engine = state.engine.clone();
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
        let server = web::server(state, listener)?;
        tracing::info!("listening on http://{addr}");
        tracing::info!("{sign_in}");
        if let Some(router_listener) = router_listener {
            let router_addr = engine
                .slots()
                .start_router(router_listener, &router_domain)
                .context("cannot start the slot router")?;
            tracing::info!(
                "slot router listening on http://{router_addr} (slots answer to APP-SLOT.{router_domain}:{})",
                router_addr.port()
            );
        }
        // actix-web stops gracefully on SIGTERM and Ctrl-C; then the engine
        // stops its builds (they are recorded as interrupted). The live
        // pages' event streams end on the same signal, or the graceful stop
        // would wait for every open page.
        let changes = engine.changes().clone();
        tokio::spawn(async move {
            stop_signal().await;
            changes.close();
        });
        let served = server.await;
        engine.shutdown().await;
        served?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
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
