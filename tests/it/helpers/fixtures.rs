//! Data stored directly, as if Slipway had made it: the pipeline of SPEC §3
//! and releases deployed to stages.

use super::app::TestApp;

/// The pipeline of SPEC §3, with a local repository path.
pub const SPEC_PIPELINE: &str = r#"pipeline: space-game-web
source: { repo: /srv/git/space-game-web, branch: main }
version: "1.0.{build}"
apps:
  - name: space-game
    start: "./run.sh"
    health: /health
    slots: [dev, test, staging, production]
build:
  tasks: [ { shell: "./build.sh" } ]
  artifacts: [ "dist/**" ]
stages:
  - name: dev
    trigger: { after: build }
    environment: { slot: { app: space-game, name: dev } }
    tasks: [ { deploy_slot: { app: space-game, slot: dev } } ]
  - name: test
    trigger: { schedule: { cron: "0 0 3 * * *", timezone: "America/Los_Angeles" } }
    tasks: [ { deploy_slot: { app: space-game, slot: test } } ]
  - name: preprod
    trigger: manual
    approvals:
      before: { approvers: ["group:qa"], policy: any }
    tasks: [ { deploy_slot: { app: space-game, slot: staging } } ]
  - name: production
    trigger: { after: preprod }
    approvals:
      before: { approvers: ["group:management"], policy: any, timeout: 7d, fresh_sign_in: 15m }
    gates:
      before:
        delay: 5m
        interval: 5m
        timeout: 1h
        steady: 10m
        checks:
          - http: { url: "https://status.example.com/health", success: "status == 200 && body.status == 'healthy'" }
    tasks: [ { swap_slots: { app: space-game, from: staging, to: production } } ]
    queue: { parallel: 1, policy: latest_only }
"#;

/// Stores `count` releases of `pipeline` (built on `branch`, versions
/// `1.0.1`, `1.0.2`, …) with one artifact each; release `n` is deployed to
/// the stages in `deployed(n)` with the given state. Returns the versions.
pub fn seed_releases(
    app: &TestApp,
    pipeline: &str,
    count: usize,
    branch: impl Fn(usize) -> String,
    deployed: impl Fn(usize) -> Vec<(&'static str, slipway::domain::DeploymentState)>,
) -> Vec<String> {
    use slipway::storage::{self, NewArtifact, NewDeployment, NewRelease};
    let mut conn = app.conn();
    let p = storage::find_pipeline(&mut conn, pipeline)
        .expect("lookup")
        .expect("pipeline exists");
    let revision = storage::current_revision(&mut conn, p.id).expect("revision");
    let mut versions = Vec::new();
    for n in 1..=count {
        let version = format!("1.0.{n}");
        let release = storage::insert_release(
            &mut conn,
            &NewRelease {
                pipeline_id: p.id,
                version: version.clone(),
                build_id: None,
                revision_id: revision.id,
                commit_sha: format!("{n:040x}"),
                branch: branch(n),
                message: format!("change number {n}"),
                author: "Mara <mara@tailspin.example>".into(),
                fixes_release_id: None,
            },
            &[NewArtifact {
                path: "dist/app.js".into(),
                sha256: format!("{:064x}", n),
                size: 1000 + n as i64,
            }],
        )
        .expect("release");
        for (stage, state) in deployed(n) {
            storage::insert_deployment(
                &mut conn,
                &NewDeployment {
                    pipeline_id: p.id,
                    release_id: release.id,
                    stage: stage.into(),
                    state,
                    trigger: "manual".into(),
                    requested_by: "mara".into(),
                    reason: None,
                },
            )
            .expect("deployment");
        }
        versions.push(version);
    }
    versions
}
