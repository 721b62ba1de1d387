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

#[path = "bench/mod.rs"]
mod bench;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::DateTime;
use slipway::domain::{BuildState, DeploymentState};
use slipway::engine::builds::{BuildRequest, QueueOutcome};
use slipway::engine::{pipelines, secrets};
use slipway::storage;

const PIPELINE: &str = "bench-deploy";

/// One run's figures, each from the release's creation.
struct Run {
    queued: Duration,
    claimed: Duration,
    task_recorded: Duration,
    task_running: Duration,
}

fn main() -> anyhow::Result<()> {
    let o = bench::Options::from_args()?;
    let dir = std::env::temp_dir().join(format!("slipway-bench-deploy-{}", std::process::id()));
    bench::in_temp_dir(dir, |dir| bench(&o, dir))
}

fn bench(o: &bench::Options, dir: &Path) -> anyhow::Result<()> {
    let (db, url, _pg) = bench::database(o, dir)?;

    let repo = bench::init_repo(dir, "app.js", "console.log('bench');\n")?;
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

    let slipway = bench::start(&dir.join("data"), &url, secret_key)?;
    let engine = slipway.engine();

    let warm_up = 3;
    let mut runs = Vec::with_capacity(o.runs);
    for i in 0..warm_up + o.runs {
        let _ = std::fs::remove_file(&marker);
        let outcome = slipway.runtime().block_on(engine.queue(BuildRequest {
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
                queued: bench::between(t0, deployment.created_at),
                claimed: bench::between(t0, deployment.started_at.context("started")?),
                task_recorded: bench::between(t0, task.started_at.context("task start")?),
                task_running: bench::between(t0, task_clock),
            });
        }
    }
    drop(slipway);

    bench::print_summary(o, warm_up, "run", "one artifact, no-op tasks");
    let rows: &[bench::Figure<'_, Run>] = &[
        ("the after: build deployment queued", |r| r.queued),
        ("the deployment claimed (running)", |r| r.claimed),
        ("its first task recorded as started", |r| r.task_recorded),
        ("its first task's process running", |r| r.task_running),
    ];
    bench::print_figures(
        "from the release's creation (build success) to",
        &runs,
        rows,
    );
    Ok(())
}
