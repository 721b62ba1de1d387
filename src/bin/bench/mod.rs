//! What the latency benchmark harnesses share (included with
//! `#[path = "bench/mod.rs"] mod bench;`; cargo does not take a directory
//! without `main.rs` for a binary): their options, Slipway started as
//! `slipway serve` starts it, git in a temp repository, durations between
//! stored times, and the figures table.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use chrono::NaiveDateTime;
use slipway::app::{self, Application, Spawned};
use slipway::config::Settings;
use slipway::engine::secrets::SecretKey;
use slipway::storage::{Db, testing::TestDb};

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

/// Makes the directory `dir`, runs `bench` in it and removes it again,
/// whatever the run's result.
#[allow(dead_code)]
pub fn in_temp_dir(
    dir: PathBuf,
    bench: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let result = bench(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The run's migrated database (8 connections) and its URL: a fresh
/// PostgreSQL database with `--postgres` (it lives as long as the returned
/// guard), else SQLite in `dir`.
#[allow(dead_code)]
pub fn database(o: &Options, dir: &Path) -> anyhow::Result<(Db, String, Option<TestDb>)> {
    let (url, pg) = if o.postgres {
        let test_db = TestDb::postgres().context("PostgreSQL for --postgres")?;
        (test_db.url.clone(), Some(test_db))
    } else {
        (format!("sqlite://{}/bench.db", dir.display()), None)
    };
    let db = Db::connect(&url, 8)?;
    db.run_migrations()?;
    Ok((db, url, pg))
}

/// A git repository `dir/repo` on branch `main` with one commit holding
/// `file` with `content`; its path.
#[allow(dead_code)]
pub fn init_repo(dir: &Path, file: &str, content: &str) -> anyhow::Result<PathBuf> {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "--quiet", "--initial-branch=main"])?;
    std::fs::write(repo.join(file), content)?;
    git(&repo, &["add", "--all"])?;
    git(&repo, &["commit", "--quiet", "-m", "initial"])?;
    Ok(repo)
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

/// The line above the figures table: how many runs (`unit`: `run`,
/// `fire`) after how many warm-up ones, on which database, with what setup.
pub fn print_summary(o: &Options, warm_up: usize, unit: &str, setup: &str) {
    println!(
        "{} {unit}s (after {warm_up} warm-up {unit}s), {}, {setup}",
        o.runs,
        o.backend()
    );
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
