//! The command line: one file per subcommand.
//!
//! Every subcommand takes `--data-dir`, `--database-url` and `--config`,
//! each also read from its `SLIPWAY_*` environment variable.

mod audit;
mod migrate;
mod pipeline;
mod secret;
mod serve;
mod token;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub use crate::app::open_db;
use crate::config::{Overrides, Settings};

/// Slipway: self-hosted release management.
#[derive(Debug, Parser)]
#[command(name = "slipway", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the data lives; global, so every subcommand takes these flags
/// before or after its name.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Directory for the SQLite database, artifacts and keys.
    #[arg(long, env = "SLIPWAY_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://FILE` (default `sqlite://<data-dir>/slipway.db`) or `postgres://…`.
    #[arg(long, env = "SLIPWAY_DATABASE_URL", global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// A YAML file with settings (`listen`, `data_dir`, `database_url`, `public_url`).
    #[arg(long, env = "SLIPWAY_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server, the API and the engine.
    Serve(serve::ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Import and export pipeline definitions.
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// Manage users.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Set, list and delete pipeline secrets (values on stdin, never printed).
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Check the audit log's hash chain.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
}

impl Common {
    pub fn settings(&self, listen: Option<String>) -> anyhow::Result<Settings> {
        Ok(Settings::load(Overrides {
            listen,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            public_url: std::env::var("SLIPWAY_PUBLIC_URL").ok(),
            config: self.config.clone(),
            oidc_issuer: std::env::var("SLIPWAY_OIDC_ISSUER").ok(),
            oidc_client_id: std::env::var("SLIPWAY_OIDC_CLIENT_ID").ok(),
            oidc_client_secret: std::env::var("SLIPWAY_OIDC_CLIENT_SECRET")
                .ok()
                .map(secrecy::SecretString::from),
            oidc_groups_claim: std::env::var("SLIPWAY_OIDC_GROUPS_CLAIM").ok(),
        })?)
    }
}

/// Parses the command line and runs it; errors are printed and exit 1
/// (clap's own usage errors exit 2).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = cli.common;
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, &common),
        Command::Migrate => migrate::run(&common),
        Command::Pipeline(cmd) => pipeline::run(cmd, &common),
        Command::User(cmd) => user::run(cmd, &common),
        Command::Token(cmd) => token::run(cmd, &common),
        Command::Secret(cmd) => secret::run(cmd, &common),
        Command::Audit(cmd) => audit::run(cmd, &common),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}
