//! Continuous deployment benchmark: over N runs (default 50), the time from
//! a build's success (its release existing, `releases.created_at`) to
//!
//! - the `after: build` deployment queued (`deployments.created_at`, in the
//!   release's own transaction),
//! - the deployment claimed to run (`deployments.started_at`),
//! - its first task recorded as started (`task_runs.started_at`),
//! - the first task's process running (the task writes its own clock).
//!
//! Each run builds a real local git repository with a no-op build task and
//! one artifact, so every deployment unpacks a release into a fresh working
//! directory. The engine runs in this process, on SQLite in a temporary
//! directory, or on a fresh PostgreSQL database with `--postgres`.
//!
//! `cargo run --release --bin slipway-bench-deploy [-- --runs 50] [--postgres]`

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, NaiveDateTime};
use slipway::domain::{BuildState, DeploymentState};
use slipway::engine::builds::{BuildRequest, QueueOutcome};
use slipway::engine::{Engine, EngineConfig, pipelines, secrets};
use slipway::storage::{self, Db, testing::TestDb};

const PIPELINE: &str = "bench-deploy";

struct Options {
    runs: usize,
    postgres: bool,
}

fn options() -> anyhow::Result<Options> {
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
            other => bail!("unknown option {other}"),
        }
    }
    ensure!(o.runs > 0, "--runs must be at least 1");
    Ok(o)
}

fn git(repo: &Path, args: &[&str]) -> anyhow::Result<String> {
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

/// One run's figures, each from the release's creation.
struct Run {
    queued: Duration,
    claimed: Duration,
    task_recorded: Duration,
    task_running: Duration,
}

fn between(from: NaiveDateTime, to: NaiveDateTime) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let o = options()?;
    let dir = std::env::temp_dir().join(format!("slipway-bench-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(o: &Options, dir: &Path) -> anyhow::Result<()> {
    let (url, _pg) = if o.postgres {
        let test_db = TestDb::postgres().context("PostgreSQL for --postgres")?;
        (test_db.url.clone(), Some(test_db))
    } else {
        (format!("sqlite://{}/bench.db", dir.display()), None)
    };
    let db = Db::connect(&url, 8)?;
    db.run_migrations()?;

    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo)?;
    git(&repo, &["init", "--quiet", "--initial-branch=main"])?;
    std::fs::write(repo.join("app.js"), "console.log('bench');\n")?;
    git(&repo, &["add", "--all"])?;
    git(&repo, &["commit", "--quiet", "-m", "initial"])?;
    let marker = dir.join("task-clock");
    let yaml = format!(
        r#"pipeline: {PIPELINE}
source: {{ repo: "{repo}", branch: main }}
version: "1.0.{{build}}"
variables: {{ MARKER: "{marker}" }}
build:
  tasks: [ {{ shell: "true" }} ]
  artifacts: [ "app.js" ]
stages:
  - name: dev
    trigger: {{ after: build }}
    tasks: [ {{ shell: "date +%s%N > \"$MARKER\"" }} ]
"#,
        repo = repo.display(),
        marker = marker.display()
    );
    let secret_key = Arc::new(secrets::SecretKey::generate()?);
    let pipeline_id = {
        let mut conn = db.get()?;
        let definition = pipelines::parse(&yaml, "bench")?;
        pipelines::import(&mut conn, definition, None, "bench", None)?;
        storage::find_pipeline(&mut conn, PIPELINE)?
            .context("pipeline")?
            .id
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let engine = Engine::new(
        db.clone(),
        dir.join("data"),
        secret_key,
        EngineConfig::default(),
    );
    rt.block_on(engine.start())?;

    let warm_up = 3;
    let mut runs = Vec::with_capacity(o.runs);
    for i in 0..warm_up + o.runs {
        let _ = std::fs::remove_file(&marker);
        let outcome = rt.block_on(engine.queue(BuildRequest {
            pipeline: PIPELINE.into(),
            branch: None,
            commit: None,
            trigger: "api".into(),
            requested_by: "bench".into(),
        }))?;
        let QueueOutcome::Queued(build) = outcome else {
            bail!("the build was not queued");
        };
        let number = build.number;
        let version = format!("1.0.{number}");

        // Wait for the deployment's first task to have run (reading the
        // database directly, every 2 ms).
        let deadline = Instant::now() + Duration::from_secs(60);
        let (release, deployment, task) = loop {
            ensure!(Instant::now() < deadline, "run {i} did not deploy");
            let mut conn = db.get()?;
            let build =
                storage::find_build_by_number(&mut conn, pipeline_id, number)?.context("build")?;
            if build.state.is_terminal() && build.state != BuildState::Succeeded {
                bail!("build #{number} ended {}: {:?}", build.state, build.error);
            }
            if let Some(release) = storage::find_release(&mut conn, pipeline_id, &version)? {
                let deployment = storage::deployments_of_release(&mut conn, release.id)?
                    .into_iter()
                    .next();
                if let Some(d) = deployment {
                    if d.state.is_terminal() && d.state != DeploymentState::Succeeded {
                        bail!("deployment #{} ended {}: {:?}", d.id, d.state, d.error);
                    }
                    if d.state == DeploymentState::Succeeded {
                        let task = storage::deployments::task_runs_of_deployment(&mut conn, d.id)?
                            .into_iter()
                            .next()
                            .context("task run")?;
                        break (release, d, task);
                    }
                }
            }
            drop(conn);
            std::thread::sleep(Duration::from_millis(2));
        };
        let clock: i64 = std::fs::read_to_string(&marker)?.trim().parse()?;
        let task_clock = DateTime::from_timestamp_nanos(clock).naive_utc();
        let t0 = release.created_at;
        if i >= warm_up {
            runs.push(Run {
                queued: between(t0, deployment.created_at),
                claimed: between(t0, deployment.started_at.context("started")?),
                task_recorded: between(t0, task.started_at.context("task start")?),
                task_running: between(t0, task_clock),
            });
        }
    }
    rt.block_on(engine.shutdown());

    let backend = if o.postgres { "PostgreSQL" } else { "SQLite" };
    println!(
        "{} runs (after {warm_up} warm-up runs), {backend}, one artifact, no-op tasks",
        o.runs
    );
    println!(
        "{:<48} {:>9} {:>9} {:>9}",
        "from the release's creation (build success) to", "p50", "p99", "max"
    );
    type Figure = fn(&Run) -> Duration;
    let rows: [(&str, Figure); 4] = [
        ("the after: build deployment queued", |r| r.queued),
        ("the deployment claimed (running)", |r| r.claimed),
        ("its first task recorded as started", |r| r.task_recorded),
        ("its first task's process running", |r| r.task_running),
    ];
    for (label, f) in rows {
        let mut times: Vec<Duration> = runs.iter().map(f).collect();
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).saturating_sub(1)];
        println!(
            "{:<48} {:>7.1}ms {:>7.1}ms {:>7.1}ms",
            label,
            at(0.50).as_secs_f64() * 1000.0,
            at(0.99).as_secs_f64() * 1000.0,
            times.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        );
    }
    Ok(())
}
