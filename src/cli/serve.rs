//! `slipway serve`: the [`Application`] (web server, API, engine, slot
//! router) until `SIGTERM` or Ctrl-C.

use anyhow::Context;
use clap::Args;

use super::{Common, init_tracing};
use crate::app::{Application, Options, Router};

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let options = Options {
            demo: args.demo,
            router: Router::FromSettings,
            ..Options::default()
        };
        // actix-web stops gracefully on SIGTERM and Ctrl-C; then the engine
        // stops its builds (they are recorded as interrupted).
        Application::build(settings, options)
            .await?
            .run_until_stopped()
            .await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}
