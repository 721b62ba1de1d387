//! Schedule benchmark: over N fires (default 50) of a schedule due every
//! second, the time from the fire instant (`trigger_runs.scheduled_for`) to
//!
//! - the fire recorded (`trigger_runs.fired_at`: the claim, the pick of the
//!   release and the deployment request, one transaction),
//! - the deployment queued (`deployments.created_at`),
//! - the deployment started (`deployments.started_at`: claimed by the
//!   deployment dispatcher, which the scheduler wakes).
//!
//! Before each fire a new release that succeeded in the previous stage is
//! added (untimed), so every measured fire deploys. The engine (with its
//! scheduler: a tokio-cron-scheduler job in UTC every second) runs in this
//! process, on SQLite in a temporary directory, or on a fresh PostgreSQL
//! database with `--postgres`.
//!
//! `cargo run --release --bin slipway-bench-schedule [-- --runs 50] [--postgres]`

#[path = "bench/mod.rs"]
mod bench;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use diesel::prelude::*;
use slipway::domain::{DeploymentState, TriggerOutcome};
use slipway::engine::{pipelines, secrets};
use slipway::storage::schedules as store;
use slipway::storage::{self, Db, DeploymentRow, NewArtifact, NewDeployment, NewRelease};

const PIPELINE: &str = "bench-schedule";

fn main() -> anyhow::Result<()> {
    let o = bench::Options::from_args()?;
    let dir = std::env::temp_dir().join(format!(
        "slipway-bench-schedule-{}",
        uuid::Uuid::new_v4().simple()
    ));
    bench::in_temp_dir(dir, |dir| bench(&o, dir))
}

/// One measured fire.
struct Run {
    recorded: Duration,
    queued: Duration,
    started: Duration,
}

/// A release of the bench pipeline that succeeded in `dev`.
fn add_release(db: &Db, pipeline_id: i64, revision_id: i64, n: usize) -> anyhow::Result<i64> {
    let mut conn = db.get()?;
    let release = storage::insert_release(
        &mut conn,
        &NewRelease {
            pipeline_id,
            version: format!("1.0.{n}"),
            build_id: None,
            revision_id,
            commit_sha: format!("{n:040x}"),
            branch: "main".into(),
            message: format!("change {n}"),
            author: "bench".into(),
            fixes_release_id: None,
        },
        &[NewArtifact {
            path: "dist/app.js".into(),
            sha256: format!("{n:064x}"),
            size: 10,
        }],
    )?;
    storage::insert_deployment(
        &mut conn,
        &NewDeployment {
            pipeline_id,
            release_id: release.id,
            stage: "dev".into(),
            state: DeploymentState::Succeeded,
            trigger: "manual".into(),
            requested_by: "bench".into(),
            reason: None,
        },
    )?;
    Ok(release.id)
}

fn bench(o: &bench::Options, dir: &Path) -> anyhow::Result<()> {
    let (db, url, _pg) = bench::database(o, dir)?;
    let yaml = format!(
        r#"pipeline: {PIPELINE}
source: {{ repo: /srv/git/{PIPELINE}, branch: main }}
version: "1.0.{{build}}"
stages:
  - name: dev
    trigger: manual
  - name: test
    trigger: {{ schedule: {{ cron: "* * * * * *", timezone: UTC }} }}
    tasks: [ {{ shell: "true" }} ]
"#
    );
    let (pipeline_id, revision_id) = {
        let mut conn = db.get()?;
        let def = pipelines::parse(&yaml, "bench")?;
        pipelines::import(&mut conn, def, None, "bench", None)?;
        let p = storage::find_pipeline(&mut conn, PIPELINE)?.context("pipeline")?;
        (p.id, storage::current_revision(&mut conn, p.id)?.id)
    };

    let data = dir.join("data");
    let slipway = bench::start(&data, &url, Arc::new(secrets::SecretKey::generate()?))?;

    let warm_up = 3;
    let mut runs = Vec::with_capacity(o.runs);
    for n in 1..=(o.runs + warm_up) {
        let release_id = add_release(&db, pipeline_id, revision_id, n)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let (fire, deployment) = loop {
            ensure!(
                std::time::Instant::now() < deadline,
                "release 1.0.{n} was not deployed by the schedule within 30 s"
            );
            let mut conn = db.get()?;
            let fire = store::recent_trigger_runs(&mut conn, pipeline_id, "test", 5)?
                .into_iter()
                .find(|r| r.release_id == Some(release_id));
            if let Some(fire) = fire {
                ensure!(
                    fire.outcome == TriggerOutcome::Deployed,
                    "fire of 1.0.{n}: {}",
                    fire.detail
                );
                let id = fire.deployment_id.context("deployment id")?;
                use slipway::storage::schema::deployments as d;
                let deployment: DeploymentRow = d::table
                    .find(id)
                    .select(DeploymentRow::as_select())
                    .first(&mut *conn)?;
                if deployment.started_at.is_some() {
                    break (fire, deployment);
                }
            }
            drop(conn);
            std::thread::sleep(Duration::from_millis(2));
        };
        if n > warm_up {
            let at = fire.scheduled_for;
            runs.push(Run {
                recorded: bench::between(at, fire.fired_at),
                queued: bench::between(at, deployment.created_at),
                started: bench::between(at, deployment.started_at.context("started")?),
            });
        }
    }
    drop(slipway);

    bench::print_summary(
        o,
        warm_up,
        "fire",
        "a schedule due every second, a new release before each fire",
    );
    let rows: &[bench::Figure<'_, Run>] = &[
        ("the fire recorded (claim + request)", |r| r.recorded),
        ("the deployment queued", |r| r.queued),
        ("the deployment started", |r| r.started),
    ];
    bench::print_figures("from the fire instant to", &runs, rows);
    Ok(())
}
