//! Gate benchmark: N gates (default 1,000) of one `http` check each,
//! sampling every 5 s against a local endpoint, for one minute of steady
//! state, through the real gate engine (`engine::deploy::gates`: one tokio timer
//! per run, one pooled HTTP client, every round stored in SQLite by the
//! batching writer).
//!
//! The endpoint runs in a child process (this binary with `--endpoint`), so
//! the CPU figure is Slipway's alone: user + system time of this process
//! (`/proc/self/stat`, what `getrusage(RUSAGE_SELF)` reports) over the
//! measured minute, as a share of one core. Lateness is how long after its
//! due time each sample started (`gate_samples.sampled_at - scheduled_at`).
//! The endpoint answers 503, so no gate passes and each keeps sampling.
//! Gates are started over the first 5 s (as deployments arrive), then
//! measured for `--seconds` (default 60).
//!
//! `cargo run --release --bin slipway-bench-gates [-- --gates 1000] [--seconds 60]`

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use slipway::domain::DeploymentState;
use slipway::engine::deploy::gates::Gates;
use slipway::engine::{pipelines, secrets};
use slipway::storage::{self, Db, NewDeployment, NewRelease, testing::TestDb};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The endpoint: answers every request 503 `{"status":"down"}`.
fn endpoint(port: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(format!("127.0.0.1:{port}"))?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            let Ok(read) = stream.try_clone() else { return };
            let mut reader = BufReader::new(read);
            let mut stream = stream;
            // Keep-alive: answer requests on this connection until it closes.
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 {
                        return;
                    }
                    if header == "\r\n" {
                        break;
                    }
                }
                let body = r#"{"status":"down"}"#;
                if write!(
                    stream,
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .is_err()
                {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// User + system CPU time of this process, in seconds.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which ends with the last `)`).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line (11 and 12 here).
    let ticks: f64 = fields.get(11).context("utime")?.parse::<f64>()?
        + fields.get(12).context("stime")?.parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    if let Some(port) = arg("--endpoint") {
        return endpoint(&port);
    }
    let gates: usize = arg("--gates")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1000);
    let seconds: u64 = arg("--seconds")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(60);

    let mut child = Command::new(std::env::current_exe()?)
        .args(["--endpoint", "0"])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut port = String::new();
    BufReader::new(child.stdout.take().context("endpoint stdout")?).read_line(&mut port)?;
    let url = format!("http://127.0.0.1:{}/health", port.trim());

    let test_db = TestDb::sqlite()?;
    let db = Db::connect(&test_db.url, 16)?;
    db.run_migrations()?;
    let yaml = format!(
        r#"pipeline: bench-gates
source: {{ repo: "/nonexistent", branch: main }}
version: "1.0.{{build}}"
stages:
  - name: prod
    trigger: manual
    gates:
      before:
        delay: 0s
        interval: 5s
        timeout: 1h
        checks:
          - name: health
            http: {{ url: "{url}", success: "status == 200" }}
    tasks: [ {{ shell: "true" }} ]
"#
    );
    let definition = pipelines::parse(&yaml, "bench.yaml")?;
    let mut deployments = Vec::new();
    {
        let mut conn = db.get()?;
        pipelines::import(&mut conn, definition, None, "bench", None)?;
        let p = storage::find_pipeline(&mut conn, "bench-gates")?.context("pipeline")?;
        let revision = storage::current_revision(&mut conn, p.id)?;
        for n in 1..=gates {
            let release = storage::insert_release(
                &mut conn,
                &NewRelease {
                    pipeline_id: p.id,
                    version: format!("1.0.{n}"),
                    build_id: None,
                    revision_id: revision.id,
                    commit_sha: format!("{n:040x}"),
                    branch: "main".into(),
                    message: "bench".into(),
                    author: "bench".into(),
                    fixes_release_id: None,
                },
                &[],
            )?;
            deployments.push(NewDeployment {
                pipeline_id: p.id,
                release_id: release.id,
                stage: "prod".into(),
                state: DeploymentState::EvaluatingGates,
                trigger: "manual".into(),
                requested_by: "bench".into(),
                reason: None,
            });
        }
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let key = Arc::new(secrets::SecretKey::generate()?);
    let engine_gates = Gates::new(db.clone(), key, shutdown.clone(), tracker.clone());
    let (cpu, wall, active) = rt.block_on(async {
        engine_gates.start(Arc::new(|| {}));
        // Deployments arrive over 5 s.
        let per_tick = deployments.len().div_ceil(10);
        for chunk in deployments.chunks(per_tick) {
            let chunk = chunk.to_vec();
            let db = db.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let mut conn = db.get()?;
                for d in &chunk {
                    storage::insert_deployment(&mut conn, d)?;
                }
                Ok(())
            })
            .await??;
            engine_gates.notify();
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let active = engine_gates.active_runs();
        let cpu0 = cpu_seconds()?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let cpu = cpu_seconds()? - cpu0;
        let wall = t0.elapsed().as_secs_f64();
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        anyhow::Ok((cpu, wall, active))
    })?;
    let _ = child.kill();
    let _ = child.wait();

    // Samples of the measured window (after the start-up), by lateness.
    let mut conn = db.get()?;
    let mut lateness: Vec<i64> = Vec::new();
    let mut verdicts = std::collections::BTreeMap::<String, usize>::new();
    let runs = storage::gates::evaluating_gate_runs(&mut conn)?;
    let since = runs.iter().map(|r| r.started_at).max();
    for run in &runs {
        for s in storage::gates::samples_of_run(&mut conn, run.id, 100_000)? {
            if Some(s.sampled_at) < since {
                continue;
            }
            if let Some(due) = s.scheduled_at {
                lateness.push((s.sampled_at - due).num_milliseconds());
            }
            *verdicts.entry(s.verdict.clone()).or_default() += 1;
        }
    }
    lateness.sort_unstable();
    if lateness.is_empty() {
        bail!("no samples were recorded");
    }
    let share = cpu / wall * 100.0;
    println!("gates: {gates} (running: {active}), one http check each, every 5 s");
    println!(
        "measured: {wall:.1} s, samples: {} {verdicts:?}",
        lateness.len()
    );
    println!("expected samples: {:.0}", gates as f64 * wall / 5.0);
    println!("CPU used by Slipway: {cpu:.2} s = {share:.1} % of one core (target < 10 %)");
    println!(
        "sample lateness: p50 {} ms, p99 {} ms, max {} ms (target p99 < 100 ms)",
        percentile(&lateness, 0.5),
        percentile(&lateness, 0.99),
        lateness.last().copied().unwrap_or(0)
    );
    drop(conn);
    drop(test_db);
    Ok(())
}
