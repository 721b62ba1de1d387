//! `slipway serve`: the web server, the API and (with later issues) the engine.

use std::net::TcpListener;

use anyhow::Context;
use clap::Args;

use super::{Common, init_tracing, open_db};
use crate::engine::{demo, users};
use crate::web::{self, AppState};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080; port 0 picks a free port).
    #[arg(long, env = "SLIPWAY_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Create the sample pipeline `space-game-web` (once) with its git repository.
    #[arg(long, env = "SLIPWAY_DEMO")]
    pub demo: bool,
}

pub fn run(args: ServeArgs, common: &Common) -> anyhow::Result<()> {
    init_tracing();
    let settings = common.settings(args.listen.clone())?;
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
            match demo::ensure_demo(&mut conn, &settings.data_dir)? {
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let state = AppState::new(db, settings, secret_key);
        let engine = state.engine.clone();
        engine
            .start()
            .await
            .context("cannot start the build engine")?;
        let server = web::server(state, listener)?;
        tracing::info!("listening on http://{addr}");
        // actix-web stops gracefully on SIGTERM and Ctrl-C; then the engine
        // stops its builds (they are recorded as interrupted).
        let served = server.await;
        engine.shutdown().await;
        served?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}
