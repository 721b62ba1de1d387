//! What the latency benchmark harnesses share (included with
//! `#[path = "bench/mod.rs"] mod bench;`; cargo does not take a directory
//! without `main.rs` for a binary): their options, Slipway started as
//! `slipway serve` starts it, git in a temp repository, durations between
//! stored times, and the figures table.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use chrono::NaiveDateTime;
use slipway::app::{self, Application, Spawned};
use slipway::config::Settings;
use slipway::engine::secrets::SecretKey;

/// `--runs N` (default 50) and `--postgres`.
pub struct Options {
    pub runs: usize,
    pub postgres: bool,
}

impl Options {
    /// Reads the command line.
    pub fn from_args() -> anyhow::Result<Options> {
        let mut o = Options {
            runs: 50,
            postgres: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--runs" => {
                    o.runs = args
                        .next()
                        .context("--runs needs a value")?
                        .parse()
                        .context("--runs needs a number")?
                }
                "--postgres" => o.postgres = true,
                other => bail!("unknown option {other} (use --runs N [--postgres])"),
            }
        }
        ensure!(o.runs > 0, "--runs must be at least 1");
        Ok(o)
    }

    /// `SQLite` or `PostgreSQL`.
    pub fn backend(&self) -> &'static str {
        if self.postgres {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }
}

/// Starts Slipway (`slipway::app::Application`: web server and engine) on
/// 127.0.0.1:0 with this data directory, database and secret key; it runs
/// until the returned handle is dropped.
pub fn start(
    data_dir: &Path,
    database_url: &str,
    secret_key: Arc<SecretKey>,
) -> anyhow::Result<Spawned> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let settings = Settings {
        listen: addr,
        data_dir: data_dir.to_path_buf(),
        database_url: database_url.to_string(),
        public_url: format!("http://{addr}"),
        oidc: None,
        router: Default::default(),
    };
    let options = app::Options {
        listener: Some(listener),
        secret_key: Some(secret_key),
        ..app::Options::default()
    };
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    Application::spawn(settings, options, threads)
}

/// Runs git in `repo` as a fixed author; its trimmed output.
#[allow(dead_code)]
pub fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.com",
        ])
        .args(args)
        .output()
        .context("run git")?;
    ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The time from one stored instant to another (zero if it went back).
#[allow(dead_code)]
pub fn between(from: NaiveDateTime, to: NaiveDateTime) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

/// One line of the figures table: its label and how to read it off a run.
pub type Figure<'a, R> = (&'a str, fn(&R) -> Duration);

/// Prints `heading` and one line per figure: p50, p99 and max of the runs.
pub fn print_figures<R>(heading: &str, runs: &[R], rows: &[Figure<'_, R>]) {
    let width = rows
        .iter()
        .map(|(l, _)| l.len())
        .max()
        .unwrap_or(0)
        .max(heading.len());
    println!("{heading:<width$} {:>9} {:>9} {:>9}", "p50", "p99", "max");
    for (label, figure) in rows {
        let mut times: Vec<Duration> = runs.iter().map(figure).collect();
        times.sort();
        let at = |q: f64| {
            times
                .get(((times.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        println!(
            "{label:<width$} {:>7.1}ms {:>7.1}ms {:>7.1}ms",
            at(0.50).as_secs_f64() * 1000.0,
            at(0.99).as_secs_f64() * 1000.0,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        );
    }
}
