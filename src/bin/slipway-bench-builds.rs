//! Build benchmark: over N runs (default 50), the time from a signed
//! generic webhook request to
//!
//! - the webhook's 202 answer,
//! - the first build task recorded as started (`task_runs.started_at`),
//! - the first build task's process running (the task writes its own clock),
//! - the release existing (`releases.created_at`),
//!
//! for a no-op build of a real local git repository. Each run pushes a new
//! commit first (untimed), so every build fetches the mirror, checks out a
//! fresh workspace and renders a new version, as a real push does. The
//! server (with its engine) runs in this process on 127.0.0.1:0, on SQLite
//! in a temporary directory, or on a fresh PostgreSQL database with
//! `--postgres`.
//!
//! `cargo run --release --bin slipway-bench-builds [-- --runs 50] [--postgres]`

#[path = "bench/mod.rs"]
mod bench;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, NaiveDateTime, Utc};
use slipway::domain::BuildState;
use slipway::domain::webhook::sign;
use slipway::engine::{pipelines, secrets};
use slipway::storage;

const SECRET: &str = "bench webhook secret";
const PIPELINE: &str = "bench-app";

/// One run's figures, each from the webhook request.
struct Run {
    answered: Duration,
    task_recorded: Duration,
    task_running: Duration,
    released: Duration,
}

fn since(t0: DateTime<Utc>, t: NaiveDateTime) -> Duration {
    (t.and_utc() - t0).to_std().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let o = bench::Options::from_args()?;
    let dir = std::env::temp_dir().join(format!("slipway-bench-builds-{}", std::process::id()));
    bench::in_temp_dir(dir, |dir| bench(&o, dir))
}

fn bench(o: &bench::Options, dir: &Path) -> anyhow::Result<()> {
    let (db, url, _pg) = bench::database(o, dir)?;

    let repo = bench::init_repo(dir, "README", "bench\n")?;
    let marker = dir.join("task-clock");
    let yaml = format!(
        r#"pipeline: {PIPELINE}
source: {{ repo: "{repo}", branch: main, webhook_secret: "${{{{ secrets.HOOK }}}}" }}
version: "1.0.{{build}}"
variables: {{ MARKER: "{marker}" }}
build:
  tasks: [ {{ shell: "date +%s%N > \"$MARKER\"" }} ]
stages:
  - name: dev
"#,
        repo = repo.display(),
        marker = marker.display()
    );
    let data_dir = dir.join("data");
    let secret_key = Arc::new(secrets::SecretKey::generate()?);
    {
        let mut conn = db.get()?;
        let definition = pipelines::parse(&yaml, "bench")?;
        pipelines::import(&mut conn, definition, None, "bench", None)?;
        secrets::set_secret(
            &mut conn,
            &secret_key,
            PIPELINE,
            "HOOK",
            &secrecy::SecretString::from(SECRET),
            "bench",
        )?;
    }

    let slipway = bench::start(&data_dir, &url, secret_key)?;
    let client = reqwest::blocking::Client::new();
    let base = format!("http://{}", slipway.address());
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(format!("{base}/healthz")).send().is_err() {
        ensure!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let pipeline_id = {
        let mut conn = db.get()?;
        storage::find_pipeline(&mut conn, PIPELINE)?
            .context("pipeline")?
            .id
    };
    let warm_up = 3;
    let mut runs = Vec::with_capacity(o.runs);
    for i in 0..warm_up + o.runs {
        // A push: a new commit, then its webhook.
        std::fs::write(repo.join("README"), format!("change {i}\n"))?;
        bench::git(&repo, &["commit", "--quiet", "-am", &format!("change {i}")])?;
        let sha = bench::git(&repo, &["rev-parse", "HEAD"])?;
        let body = format!(r#"{{"ref": "refs/heads/main", "after": "{sha}"}}"#);
        let signature = sign(SECRET.as_bytes(), body.as_bytes());
        let _ = std::fs::remove_file(&marker);

        let t0 = Utc::now();
        let started = Instant::now();
        let res = client
            .post(format!("{base}/hooks/generic/{PIPELINE}"))
            .header("Content-Type", "application/json")
            .header("X-Slipway-Signature", signature)
            .header("X-Slipway-Delivery", format!("bench-{i}"))
            .body(body)
            .send()?;
        let answered = started.elapsed();
        let status = res.status();
        let v: serde_json::Value = res.json()?;
        ensure!(status.as_u16() == 202, "webhook answered {status}: {v}");
        let number = v["build"]["number"].as_i64().context("build number")?;

        // Wait for the release (reading the database directly, every 2 ms).
        let deadline = Instant::now() + Duration::from_secs(60);
        let (build, release_at) = loop {
            ensure!(Instant::now() < deadline, "build #{number} did not finish");
            let mut conn = db.get()?;
            let build =
                storage::find_build_by_number(&mut conn, pipeline_id, number)?.context("build")?;
            match build.state {
                BuildState::Succeeded => {
                    let version = format!("1.0.{number}");
                    let release = storage::find_release(&mut conn, pipeline_id, &version)?
                        .context("release")?;
                    break (build, release.created_at);
                }
                s if s.is_terminal() => {
                    bail!("build #{number} ended {s}: {:?}", build.error)
                }
                _ => {}
            }
            drop(conn);
            std::thread::sleep(Duration::from_millis(2));
        };
        let mut conn = db.get()?;
        let task = storage::task_runs_of_build(&mut conn, build.id)?
            .into_iter()
            .next()
            .context("task run")?;
        let task_started = task.started_at.context("task start")?;
        let clock: i64 = std::fs::read_to_string(&marker)?.trim().parse()?;
        let task_clock = DateTime::from_timestamp_nanos(clock).naive_utc();
        if i >= warm_up {
            runs.push(Run {
                answered,
                task_recorded: since(t0, task_started),
                task_running: since(t0, task_clock),
                released: since(t0, release_at),
            });
        }
    }

    bench::print_summary(o, warm_up, "run", "a new commit per run, no-op build task");
    let rows: &[bench::Figure<'_, Run>] = &[
        ("the webhook's 202 answer", |r| r.answered),
        ("the first task recorded as started", |r| r.task_recorded),
        ("the first task's process running", |r| r.task_running),
        ("the release existing", |r| r.released),
    ];
    bench::print_figures("from the webhook request to", &runs, rows);
    Ok(())
}
