//! The deployment engine: real git repositories, real builds through the
//! API making real releases, the real server and engine, both databases.
//! Conditions are awaited with deadlines, never by sleeping blindly.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use slipway::app::Spawned;
use slipway::domain::Role;
use slipway::engine::runtime::EngineConfig;
use slipway::storage;

use crate::git::{TempRepo, git_repo};
use crate::helpers::{
    DEADLINE, TestApp, attrs, build, csrf_of, deploy, deployment, deployment_to, deployments_of,
    each_backend, ended, finished, get_json, import, in_state, log_of, post_json, queue, texts,
    wait_until,
};

mod crash;

/// The build: two artifacts, one of them a script.
const BUILD_SH: &str = r#"#!/bin/sh
set -e
mkdir -p dist/bin
echo "console.log('$SLIPWAY_VERSION');" > dist/app.js
printf '#!/bin/sh\necho "hello from $1"\n' > dist/bin/hello
"#;

pub fn repo() -> TempRepo {
    git_repo(&[("build.sh", BUILD_SH)])
}

/// A pipeline building `repo` with these stages (YAML list items, indented by 2).
pub fn pipeline(name: &str, repo: &TempRepo, stages: &str) -> String {
    format!(
        r#"pipeline: {name}
source: {{ repo: "{}", branch: main }}
version: "1.0.{{build}}"
build:
  tasks: [ {{ shell: ./build.sh }} ]
  artifacts: [ "dist/**" ]
stages:
{stages}"#,
        repo.path().display()
    )
}

fn audit(app: &TestApp, subject: &str) -> Vec<(String, String)> {
    let mut conn = app.conn();
    let mut rows = storage::list_audit(&mut conn, None, 5000).unwrap();
    rows.reverse();
    rows.into_iter()
        .filter(|r| r.subject == subject)
        .map(|r| (r.action, r.actor))
        .collect()
}

/// GET a page with a bearer token; it must answer 200.
fn page_as(app: &TestApp, token: &str, path: &str) -> scraper::Html {
    let res = app.get_with_token(path, token);
    let status = res.status();
    let body = res.text().unwrap();
    assert_eq!(status, 200, "[{}] GET {path}: {body}", app.backend);
    scraper::Html::parse_document(&body)
}

fn marker_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A task that waits until the file `$GO` exists (a release valve for the test).
const WAIT_FOR_GO: &str = r#"while [ ! -f "$GO" ]; do sleep 0.05; done"#;

#[test]
fn a_release_flows_from_the_build_through_dev_and_test_to_a_manual_stage() {
    each_backend(|app| {
        let repo = repo();
        let stages = r#"  - name: dev
    trigger: { after: build }
    variables: { GREETING: "hello dev", SHARED: stage }
    tasks:
      - name: check
        shell: |
          set -e
          echo "deploying $SLIPWAY_VERSION ($SLIPWAY_RELEASE) of $SLIPWAY_PIPELINE to $SLIPWAY_STAGE as #$SLIPWAY_DEPLOYMENT_ID"
          test "$SLIPWAY_ARTIFACT_DIR" = "$(pwd)"
          test -z "$SLIPWAY_SECRET_KEY"
          echo "commit $SLIPWAY_COMMIT"
          cat dist/app.js
          ./dist/bin/hello "$GREETING"
          echo "shared=$SHARED task=$TASK_ONLY"
        env: { TASK_ONLY: "from the task" }
  - name: test
    trigger: { after: dev }
    tasks: [ { shell: "echo testing $SLIPWAY_VERSION in $SLIPWAY_STAGE" } ]
  - name: prod
    trigger: manual
    tasks: [ { shell: "echo live $SLIPWAY_VERSION; ls dist" } ]
"#;
        let yaml = pipeline("flow", &repo, stages).replace(
            "version: \"1.0.{build}\"\n",
            "version: \"1.0.{build}\"\nvariables: { SHARED: pipeline, PIPELINE_ONLY: yes }\n",
        );
        import(app, &yaml);
        let token = app.token("dana", Role::Deployer);
        let version = build(app, &token, "flow");
        assert_eq!(version, "1.0.1");

        // dev follows the build, test follows dev, by themselves.
        let dev = deployment_to(app, &token, "flow", &version, "dev");
        let d = ended(app, &token, dev);
        assert_eq!(
            d["state"],
            "succeeded",
            "[{}] {d} {}",
            app.backend,
            log_of(app, &token, dev)
        );
        assert_eq!(d["trigger"], "after:build");
        assert_eq!(d["requested_by"], "slipway");
        assert_eq!(d["pipeline"], "flow");
        assert_eq!(d["release"], "1.0.1");
        assert_eq!(d["attempt"], 1);
        assert_eq!(d["tasks"][0]["name"], "check");
        assert_eq!(d["tasks"][0]["state"], "succeeded");
        assert_eq!(d["tasks"][0]["exit_code"], 0);
        assert_eq!(d["approvals"], json!([]));
        assert_eq!(d["gate_samples"], json!([]));
        assert_eq!(d["log_url"], format!("/api/v1/deployments/{dev}/log"));
        for field in ["created_at", "started_at", "finished_at"] {
            assert!(d[field].as_str().unwrap().ends_with('Z'), "{field}: {d}");
        }
        let log = log_of(app, &token, dev);
        assert!(
            log.contains(&format!("deploying 1.0.1 (1.0.1) of flow to dev as #{dev}")),
            "{log}"
        );
        assert!(log.contains("console.log('1.0.1');"), "{log}");
        assert!(log.contains("hello from hello dev"), "{log}");
        assert!(log.contains("shared=stage task=from the task"), "{log}");
        assert!(log.contains(&format!("commit {}", repo.head())), "{log}");

        let test = deployment_to(app, &token, "flow", &version, "test");
        let t = ended(app, &token, test);
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["trigger"], "after:dev");
        assert!(log_of(app, &token, test).contains("testing 1.0.1 in test"));

        // prod is manual: nothing went there by itself.
        assert!(
            deployments_of(app, &token, "flow", &version)
                .iter()
                .all(|d| d["stage"] != "prod")
        );
        let (status, p) = deploy(app, &token, "flow", "prod", json!({"release": "1.0.1"}));
        assert_eq!(status, 202, "{p}");
        assert_eq!(p["stage"], "prod");
        assert_eq!(p["trigger"], "manual");
        assert_eq!(p["requested_by"], "dana");
        let prod = p["id"].as_i64().unwrap();
        let p = ended(app, &token, prod);
        assert_eq!(p["state"], "succeeded", "{p}");
        let log = log_of(app, &token, prod);
        assert!(
            log.contains("live 1.0.1") && log.contains("app.js"),
            "{log}"
        );
        // The working directory is removed when the deployment ends.
        assert!(!app.data_dir().join(format!("deployments/{prod}")).exists());

        // Every change is in the audit log, by whom.
        let actions = audit(app, &format!("deployment:flow#{prod}"));
        assert_eq!(
            actions,
            vec![
                ("deployment.queue".to_string(), "dana".to_string()),
                ("deployment.start".to_string(), "slipway".to_string()),
                ("deployment.succeed".to_string(), "slipway".to_string()),
            ]
        );

        // The deployment page shows it, with its tasks and logs.
        let page = page_as(app, &token, p["url"].as_str().unwrap());
        assert_eq!(
            p["url"],
            format!("/pipelines/flow/releases/1.0.1/deployments/{prod}")
        );
        let state = texts(&page, ".deployment-state");
        assert!(state[0].contains("Succeeded"), "{state:?}");
        let facts = texts(&page, ".facts dd").join(" | ");
        assert!(
            facts.contains("manual") && facts.contains("dana"),
            "{facts}"
        );
        let logs = texts(&page, "pre.log").join("\n");
        assert!(logs.contains("live 1.0.1"), "{logs}");
        // A page of another release, or an unknown deployment, is a 404.
        assert_eq!(
            app.get_with_token(
                &format!("/pipelines/flow/releases/1.0.9/deployments/{prod}"),
                &token
            )
            .status(),
            404
        );
        let (status, _) = get_json(app, &token, "/api/v1/deployments/999999");
        assert_eq!(status, 404);
    });
}

#[test]
fn stage_rules_refuse_skipping_and_downgrades_but_allow_a_rollback_with_a_reason() {
    each_backend(|app| {
        let repo = repo();
        let stages = r#"  - name: dev
    trigger: { after: build }
  - name: test
    tasks: [ { shell: "echo in test" } ]
  - name: prod
"#;
        import(app, &pipeline("rules", &repo, stages));
        let dana = app.token("dana", Role::Deployer);
        let mara = app.token("mara", Role::ReleaseManager);
        let v1 = build(app, &dana, "rules");
        let v2 = build(app, &dana, "rules");
        for v in [&v1, &v2] {
            let id = deployment_to(app, &dana, "rules", v, "dev");
            assert_eq!(ended(app, &dana, id)["state"], "succeeded");
        }
        // prod before test: a release cannot skip a stage.
        let (status, e) = deploy(app, &dana, "rules", "prod", json!({"release": v2}));
        assert_eq!(status, 409, "{e}");
        assert_eq!(e["error"]["code"], "conflict");
        assert_eq!(
            e["error"]["message"],
            "1.0.2 has not succeeded in test yet; a release cannot skip a stage."
        );
        // 1.0.2 into test, then 1.0.1 would be a downgrade.
        let (status, d) = deploy(app, &dana, "rules", "test", json!({"release": v2}));
        assert_eq!(status, 202, "{d}");
        assert_eq!(
            ended(app, &dana, d["id"].as_i64().unwrap())["state"],
            "succeeded"
        );
        let (status, e) = deploy(app, &dana, "rules", "test", json!({"release": v1}));
        assert_eq!(status, 409, "{e}");
        assert_eq!(
            e["error"]["message"],
            "test runs 1.0.2; 1.0.1 is older — use a rollback with a reason."
        );
        // A rollback needs the release manager role and a reason.
        let rollback = json!({"release": v1, "rollback": true, "reason": "1.0.2 breaks checkout"});
        let (status, e) = deploy(app, &dana, "rules", "test", rollback.clone());
        assert_eq!(status, 403, "{e}");
        let (status, e) = deploy(
            app,
            &mara,
            "rules",
            "test",
            json!({"release": v1, "rollback": true, "reason": "  "}),
        );
        assert_eq!(status, 409, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("needs a reason")
        );
        let (status, r) = deploy(app, &mara, "rules", "test", rollback);
        assert_eq!(status, 202, "{r}");
        assert_eq!(r["trigger"], "rollback");
        assert_eq!(r["reason"], "1.0.2 breaks checkout");
        let r = ended(app, &mara, r["id"].as_i64().unwrap());
        assert_eq!(r["state"], "succeeded", "{r}");
        // 1.0.1 is in test now; 1.0.2 may go forward again, and a "rollback"
        // to a newer release is refused.
        let (status, e) = deploy(
            app,
            &mara,
            "rules",
            "test",
            json!({"release": v2, "rollback": true, "reason": "x"}),
        );
        assert_eq!(status, 409, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is not older")
        );
        let (status, d) = deploy(app, &dana, "rules", "test", json!({"release": v2}));
        assert_eq!(status, 202, "{d}");
        assert_eq!(d["attempt"], 2);
        let id = d["id"].as_i64().unwrap();
        // Asking again while it waits or runs answers the same deployment.
        let (status, again) = deploy(app, &dana, "rules", "test", json!({"release": v2}));
        if status == 200 {
            assert_eq!(again["id"], id);
        } else {
            // It ended already; then it is a new attempt.
            assert_eq!(status, 202, "{again}");
            ended(app, &dana, again["id"].as_i64().unwrap());
        }
        ended(app, &dana, id);
        // Unknown release or stage: 404; a viewer may not deploy; bad JSON is a 400.
        let (status, e) = deploy(app, &dana, "rules", "test", json!({"release": "9.9.9"}));
        assert_eq!(status, 404, "{e}");
        let (status, e) = deploy(app, &dana, "rules", "nope", json!({"release": v1}));
        assert_eq!(status, 404, "{e}");
        let (status, e) = deploy(app, &dana, "nope", "test", json!({"release": v1}));
        assert_eq!(status, 404, "{e}");
        let vic = app.token("vic", Role::Viewer);
        let (status, _) = deploy(app, &vic, "rules", "test", json!({"release": v2}));
        assert_eq!(status, 403);
        let (status, e) = deploy(app, &dana, "rules", "test", json!({"version": v2}));
        assert_eq!(status, 400, "{e}");
        let res = app
            .client
            .post(app.url("/api/v1/pipelines/rules/stages/test/deployments"))
            .json(&json!({"release": v2}))
            .send()
            .unwrap();
        assert_eq!(res.status(), 401);
    });
}

/// Three releases wait behind a running one in a stage that runs one at a time.
fn three_waiting(app: &TestApp, policy: &str) -> (String, Vec<i64>, tempfile::TempDir) {
    let repo = repo();
    let dir = marker_dir();
    let go = dir.path().join("go");
    let stages = format!(
        r#"  - name: dev
    trigger: {{ after: build }}
    variables: {{ GO: "{}" }}
    queue: {{ parallel: 1, policy: {policy} }}
    tasks: [ {{ shell: '{WAIT_FOR_GO}' }} ]
"#,
        go.display()
    );
    let name = format!("queue-{}", policy.replace('_', "-"));
    import(app, &pipeline(&name, &repo, &stages));
    let token = app.token("dana", Role::Deployer);
    let mut ids = Vec::new();
    for n in 1..=4 {
        let v = build(app, &token, &name);
        assert_eq!(v, format!("1.0.{n}"));
        let id = deployment_to(app, &token, &name, &v, "dev");
        if n == 1 {
            in_state(app, &token, id, "running");
        }
        ids.push(id);
    }
    (name, ids, dir)
}

#[test]
fn latest_only_supersedes_the_older_waiting_releases_and_leaves_the_running_one() {
    each_backend(|app| {
        let (name, ids, dir) = three_waiting(app, "latest_only");
        let token = app.token("vic", Role::Viewer);
        let states: Vec<Value> = ids.iter().map(|id| deployment(app, &token, *id)).collect();
        assert_eq!(states[0]["state"], "running", "{states:?}");
        // Each newer release superseded the one waiting before it: in the
        // end only the newest waits.
        for (older, by) in states[1..3].iter().zip(["1.0.3", "1.0.4"]) {
            assert_eq!(older["state"], "superseded", "{older}");
            assert_eq!(older["superseded_by"], by, "{older}");
            assert!(older["finished_at"].is_string());
        }
        assert_eq!(states[3]["state"], "queued", "{states:?}");
        assert_eq!(
            audit(app, &format!("deployment:{name}#{}", ids[1]))
                .last()
                .unwrap()
                .0,
            "deployment.supersede"
        );
        // The page says by which release, with a link.
        let page = page_as(
            app,
            &token,
            &format!("/pipelines/{name}/releases/1.0.2/deployments/{}", ids[1]),
        );
        assert!(
            attrs(&page, ".facts a", "href").contains(&format!("/pipelines/{name}/releases/1.0.3"))
        );
        std::fs::write(dir.path().join("go"), "").unwrap();
        assert_eq!(ended(app, &token, ids[0])["state"], "succeeded");
        assert_eq!(ended(app, &token, ids[3])["state"], "succeeded");
        // The superseded ones never ran.
        for id in &ids[1..3] {
            let d = deployment(app, &token, *id);
            assert_eq!(d["state"], "superseded");
            assert!(d["started_at"].is_null() && d["tasks"] == json!([]), "{d}");
        }
    });
}

#[test]
fn sequence_deploys_every_waiting_release_in_order() {
    each_backend(|app| {
        let (_, ids, dir) = three_waiting(app, "sequence");
        let token = app.token("vic", Role::Viewer);
        for id in &ids[1..] {
            assert_eq!(deployment(app, &token, *id)["state"], "queued");
        }
        std::fs::write(dir.path().join("go"), "").unwrap();
        let done: Vec<Value> = ids.iter().map(|id| ended(app, &token, *id)).collect();
        assert!(done.iter().all(|d| d["state"] == "succeeded"), "{done:?}");
        for pair in done.windows(2) {
            assert!(
                pair[0]["finished_at"].as_str() <= pair[1]["started_at"].as_str(),
                "{pair:?}"
            );
        }
    });
}

#[test]
fn a_failing_task_fails_the_deployment_and_a_slow_one_times_out() {
    each_backend(|app| {
        let repo = repo();
        let failing = r#"  - name: dev
    trigger: { after: build }
    tasks:
      - name: migrate
        shell: "echo before; exit 3"
      - name: never
        shell: "echo never"
  - name: test
    trigger: { after: dev }
"#;
        import(app, &pipeline("failing", &repo, failing));
        let slow = r#"  - name: dev
    trigger: { after: build }
    tasks:
      - name: slow
        shell: "echo starting; sleep 30"
        timeout: 1s
"#;
        import(app, &pipeline("slow", &repo, slow));
        let token = app.token("dana", Role::Deployer);
        let v = build(app, &token, "failing");
        let dev = ended(
            app,
            &token,
            deployment_to(app, &token, "failing", &v, "dev"),
        );
        assert_eq!(dev["state"], "failed", "{dev}");
        assert_eq!(dev["error"], "task `migrate` exited with code 3");
        assert_eq!(dev["tasks"][0]["state"], "failed");
        assert_eq!(dev["tasks"][0]["exit_code"], 3);
        assert_eq!(dev["tasks"][1]["state"], "skipped");
        let log = log_of(app, &token, dev["id"].as_i64().unwrap());
        assert!(log.contains("before") && !log.contains("never"), "{log}");
        // A failed release goes no further.
        assert!(
            deployments_of(app, &token, "failing", &v)
                .iter()
                .all(|d| d["stage"] != "test")
        );
        // The page shows why.
        let page = page_as(app, &token, dev["url"].as_str().unwrap());
        assert_eq!(
            texts(&page, ".form-error"),
            vec!["task `migrate` exited with code 3"]
        );

        let v = build(app, &token, "slow");
        let test = deployment_to(app, &token, "slow", &v, "dev");
        let started = std::time::Instant::now();
        let test = ended(app, &token, test);
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(test["state"], "failed", "{test}");
        assert_eq!(test["error"], "task `slow` timed out after 1s");
        assert!(
            log_of(app, &token, test["id"].as_i64().unwrap()).contains("task timed out after 1s")
        );
    });
}

fn process_running(pattern: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false)
}

#[test]
fn a_running_deployment_can_be_canceled_and_redeployed() {
    each_backend(|app| {
        let repo = repo();
        let pause = format!("sleep 4{}.5", rand_digits());
        let stages = format!(
            r#"  - name: dev
    trigger: {{ after: build }}
    tasks:
      - name: deploy
        shell: 'echo "attempt $SLIPWAY_ATTEMPT"; if [ "$SLIPWAY_ATTEMPT" = 1 ]; then {pause}; fi'
"#
        );
        import(app, &pipeline("cancel", &repo, &stages));
        let token = app.token("dana", Role::Deployer);
        let v = build(app, &token, "cancel");
        let id = deployment_to(app, &token, "cancel", &v, "dev");
        in_state(app, &token, id, "running");
        wait_until("the task to run", DEADLINE, || {
            process_running(&pause).then_some(())
        });

        let (status, c) = post_json(
            app,
            &token,
            &format!("/api/v1/deployments/{id}/cancel"),
            &json!({}),
        );
        assert_eq!(status, 200, "{c}");
        assert_eq!(c["state"], "canceled");
        assert_eq!(c["error"], "canceled by dana");
        wait_until("the task's process to stop", DEADLINE, || {
            (!process_running(&pause)).then_some(())
        });
        let d = deployment(app, &token, id);
        assert_eq!(d["state"], "canceled");
        assert_eq!(d["tasks"][0]["state"], "canceled");
        // Canceling again is a conflict.
        let (status, e) = post_json(
            app,
            &token,
            &format!("/api/v1/deployments/{id}/cancel"),
            &json!({}),
        );
        assert_eq!(status, 409, "{e}");

        // Redeploy: attempt 2 of the same release in the same stage.
        let (status, r) = post_json(
            app,
            &token,
            &format!("/api/v1/deployments/{id}/redeploy"),
            &json!({}),
        );
        assert_eq!(status, 202, "{r}");
        assert_eq!(r["attempt"], 2);
        assert_eq!(r["trigger"], "redeploy");
        assert_eq!(r["release"], v);
        let r = ended(app, &token, r["id"].as_i64().unwrap());
        assert_eq!(r["state"], "succeeded", "{r}");
        assert!(log_of(app, &token, r["id"].as_i64().unwrap()).contains("attempt 2"));
        let (status, _) = post_json(
            app,
            &token,
            "/api/v1/deployments/999999/redeploy",
            &json!({}),
        );
        assert_eq!(status, 404);
        let vic = app.token("vic", Role::Viewer);
        let (status, _) = post_json(
            app,
            &vic,
            &format!("/api/v1/deployments/{id}/redeploy"),
            &json!({}),
        );
        assert_eq!(status, 403);
    });
}

fn rand_digits() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32 % 100_000
}

#[test]
fn secrets_reach_tasks_but_never_logs_or_pages() {
    each_backend(|app| {
        let repo = repo();
        let stages = r#"  - name: dev
    trigger: { after: build }
    variables: { TOKEN: "${{ secrets.DEPLOY_TOKEN }}" }
    tasks:
      - name: use the secrets
        shell: |
          test "$TOKEN" = "tok-""3f9a1c77" || exit 7
          test "$PASSWORD" = "pw-""b8e2d01f" || exit 8
          echo "token is $TOKEN and password is $PASSWORD"
          echo "$PASSWORD" >&2
        env: { PASSWORD: "${{ secrets.DB_PASSWORD }}" }
      - http: { url: "http://127.0.0.1:9/${{ secrets.DEPLOY_TOKEN }}", expect: 200 }
"#;
        import(app, &pipeline("secretive", &repo, stages));
        let mara = app.token("mara", Role::ReleaseManager);
        for (name, value) in [
            ("DEPLOY_TOKEN", "tok-3f9a1c77"),
            ("DB_PASSWORD", "pw-b8e2d01f"),
        ] {
            let res = app
                .client
                .put(app.url(&format!("/api/v1/pipelines/secretive/secrets/{name}")))
                .bearer_auth(&mara)
                .json(&json!({"value": value}))
                .send()
                .unwrap();
            assert_eq!(res.status(), 204);
        }
        let v = build(app, &mara, "secretive");
        let id = deployment_to(app, &mara, "secretive", &v, "dev");
        let d = ended(app, &mara, id);
        // The shell task passed; the http task to a closed port failed.
        assert_eq!(d["tasks"][0]["state"], "succeeded", "{d}");
        assert_eq!(d["state"], "failed", "{d}");
        let log = log_of(app, &mara, id);
        assert!(log.contains("token is *** and password is ***"), "{log}");
        assert!(log.contains("GET http://127.0.0.1:9/***"), "{log}");
        let page = app
            .get_with_token(d["url"].as_str().unwrap(), &mara)
            .text()
            .unwrap();
        let api = serde_json::to_string(&d).unwrap();
        for text in [&log, &page, &api] {
            assert!(
                !text.contains("tok-3f9a1c77") && !text.contains("pw-b8e2d01f"),
                "{text}"
            );
        }
        assert!(d["error"].as_str().unwrap().contains("***"), "{d}");
    });
}

/// A tiny HTTP server on 127.0.0.1: `/health` answers 200, anything else 404.
/// Returns its base URL and the request lines it saw.
fn http_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let first = first.trim().to_string();
            let ok = first.starts_with("POST /health ") || first.starts_with("GET /health ");
            log.lock().unwrap().push(first);
            let answer = if ok {
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (base, seen)
}

#[test]
fn http_tasks_call_a_url_and_check_the_answer() {
    each_backend(|app| {
        let repo = repo();
        let (base, seen) = http_server();
        let stages = format!(
            r#"  - name: dev
    trigger: {{ after: build }}
    tasks:
      - http: {{ url: "{base}/health" }}
      - http: {{ method: POST, url: "{base}/health", expect: 200 }}
"#
        );
        import(app, &pipeline("pinger", &repo, &stages));
        let missing = format!(
            r#"  - name: test
    trigger: {{ after: build }}
    tasks:
      - http: {{ url: "{base}/missing", expect: 200 }}
"#
        );
        import(app, &pipeline("pinger-404", &repo, &missing));
        let token = app.token("dana", Role::Deployer);
        let v = build(app, &token, "pinger");
        let dev = ended(app, &token, deployment_to(app, &token, "pinger", &v, "dev"));
        assert_eq!(dev["state"], "succeeded", "{dev}");
        assert_eq!(dev["tasks"][0]["kind"], "http");
        let log = log_of(app, &token, dev["id"].as_i64().unwrap());
        assert!(log.contains(&format!("GET {base}/health")), "{log}");
        assert!(log.contains(&format!("POST {base}/health")), "{log}");
        assert!(log.contains("answered 200 OK"), "{log}");
        let test = ended(
            app,
            &token,
            deployment_to(
                app,
                &token,
                "pinger-404",
                &build(app, &token, "pinger-404"),
                "test",
            ),
        );
        assert_eq!(test["state"], "failed", "{test}");
        assert_eq!(
            test["error"],
            format!("task `http {base}/missing` answered 404 Not Found, expected 200")
        );
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.contains(&"GET /health HTTP/1.1".to_string()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"POST /health HTTP/1.1".to_string()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"GET /missing HTTP/1.1".to_string()),
            "{seen:?}"
        );
    });
}

/// The example extension of `docs/extending.md` (between its ```sh fences).
fn documented_extension() -> String {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/extending.md"))
            .unwrap();
    let start = doc.find("```sh\n#!/bin/sh").expect("an example script") + "```sh\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_string()
}

fn install(dir: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join(name);
    std::fs::write(&file, script).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn extension_tasks_get_json_on_stdin_and_log_their_output() {
    each_backend(|app| {
        let repo = repo();
        let bin = tempfile::tempdir().unwrap();
        install(bin.path(), "slipway-task-announce", &documented_extension());
        install(
            bin.path(),
            "slipway-task-fail",
            "#!/bin/sh\ncat > /dev/null\necho 'cannot reach the chat'\nexit 4\n",
        );
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.path().display());
        let stages = format!(
            r##"  - name: dev
    trigger: {{ after: build }}
    variables: {{ PATH: "{path}", TEAM: web }}
    tasks:
      - task: announce
        with: {{ channel: "#releases", message: "shipping" }}
"##
        );
        import(app, &pipeline("extended", &repo, &stages));
        let failing = format!(
            r#"  - name: test
    trigger: {{ after: build }}
    variables: {{ PATH: "{path}" }}
    tasks:
      - task: fail
"#
        );
        import(app, &pipeline("extended-fail", &repo, &failing));
        let missing = r#"  - name: missing
    trigger: { after: build }
    tasks:
      - task: nope
"#;
        import(app, &pipeline("extended-missing", &repo, missing));
        let token = app.token("dana", Role::Deployer);
        let v = build(app, &token, "extended");
        let dev = ended(
            app,
            &token,
            deployment_to(app, &token, "extended", &v, "dev"),
        );
        let id = dev["id"].as_i64().unwrap();
        let log = log_of(app, &token, id);
        assert_eq!(dev["state"], "succeeded", "{dev} {log}");
        assert_eq!(dev["tasks"][0]["name"], "task announce");
        assert_eq!(dev["tasks"][0]["kind"], "task");
        assert!(
            log.contains("announcing extended 1.0.1 in dev to #releases: shipping"),
            "{log}"
        );
        assert!(log.contains(&format!("deployment {id}")), "{log}");
        assert!(log.contains("\"TEAM\":\"web\""), "{log}");
        let test = ended(
            app,
            &token,
            deployment_to(
                app,
                &token,
                "extended-fail",
                &build(app, &token, "extended-fail"),
                "test",
            ),
        );
        assert_eq!(test["state"], "failed", "{test}");
        assert_eq!(test["tasks"][0]["exit_code"], 4);
        assert_eq!(test["error"], "task `task fail` exited with code 4");
        assert!(
            log_of(app, &token, test["id"].as_i64().unwrap()).contains("cannot reach the chat")
        );
        let missing = ended(
            app,
            &token,
            deployment_to(
                app,
                &token,
                "extended-missing",
                &build(app, &token, "extended-missing"),
                "missing",
            ),
        );
        assert_eq!(missing["state"], "failed");
        assert!(
            missing["error"]
                .as_str()
                .unwrap()
                .contains("there is no executable `slipway-task-nope` on the task's PATH"),
            "{missing}"
        );
    });
}

#[test]
fn the_deploy_form_and_the_page_buttons_work_in_a_browser() {
    each_backend(|app| {
        let repo = repo();
        let stages = r#"  - name: dev
    trigger: { after: build }
  - name: test
    tasks: [ { shell: "echo tested" } ]
"#;
        import(app, &pipeline("clicky", &repo, stages));
        let token = app.token("dana", Role::Deployer);
        let v = build(app, &token, "clicky");
        ended(app, &token, deployment_to(app, &token, "clicky", &v, "dev"));
        let client = app.signed_in("paula", Role::Deployer);
        let page = client
            .get(app.url("/pipelines/clicky/stages/test"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let html = scraper::Html::parse_document(&page);
        let options = texts(&html, "select[name=release] option");
        assert_eq!(options, vec!["1.0.1 — ready"], "{page}");
        let action = attrs(&html, "form.deploy-form", "action");
        assert_eq!(action, vec!["/pipelines/clicky/stages/test/deploy"]);
        let csrf = csrf_of(&html);
        // Without the CSRF token: refused.
        let res = client
            .post(app.url(&action[0]))
            .form(&[("release", "1.0.1")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);
        let res = client
            .post(app.url(&action[0]))
            .form(&[("release", "1.0.1"), ("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        let location = res.headers()["location"].to_str().unwrap().to_string();
        assert!(location.starts_with("/pipelines/clicky/releases/1.0.1/deployments/"));
        let id: i64 = location.rsplit('/').next().unwrap().parse().unwrap();
        let d = ended(app, &token, id);
        assert_eq!(d["requested_by"], "paula");
        let page = client
            .get(app.url(&location))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let html = scraper::Html::parse_document(&page);
        let redeploy = attrs(&html, "form[action$=redeploy]", "action");
        assert_eq!(redeploy, vec![format!("{location}/redeploy")]);
        let res = client
            .post(app.url(&redeploy[0]))
            .form(&[("csrf", csrf_of(&html).as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        let next = res.headers()["location"].to_str().unwrap().to_string();
        assert_ne!(next, location);
        let id2: i64 = next.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!(ended(app, &token, id2)["attempt"], 2);
        // A refused deployment shows the rule, not a server error.
        let res = client
            .post(app.url("/pipelines/clicky/stages/test/deploy"))
            .form(&[("release", "7.7.7"), ("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 404);
    });
}

/// Starts another instance on the app's database, with its own data
/// directory sharing the app's artifact store (docs/deployments.md).
fn second_engine(app: &TestApp) -> (Spawned, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        app.data_dir().join("artifacts"),
        data.path().join("artifacts"),
    )
    .unwrap();
    let other = app.another_instance(
        data.path(),
        EngineConfig {
            safety_poll: Duration::from_millis(20),
            ..EngineConfig::default()
        },
    );
    (other, data)
}

#[test]
fn two_engines_on_one_database_start_each_deployment_once() {
    each_backend(|app| {
        let repo = repo();
        let dir = marker_dir();
        let ran = dir.path().join("ran");
        let stages = format!(
            r#"  - name: dev
    queue: {{ parallel: 3, policy: sequence }}
    variables: {{ RAN: "{}" }}
    tasks: [ {{ shell: 'echo "$SLIPWAY_DEPLOYMENT_ID" >> "$RAN"; sleep 0.2' }} ]
"#,
            ran.display()
        );
        import(app, &pipeline("twice", &repo, &stages));
        let token = app.token("dana", Role::Deployer);
        let versions: Vec<String> = (0..6).map(|_| build(app, &token, "twice")).collect();
        let (other, _data) = second_engine(app);
        let ids: Vec<i64> = versions
            .iter()
            .map(|v| {
                let (status, d) = deploy(app, &token, "twice", "dev", json!({"release": v}));
                assert_eq!(status, 202, "{d}");
                other.engine().notify_deployments();
                d["id"].as_i64().unwrap()
            })
            .collect();
        for id in &ids {
            let d = ended(app, &token, *id);
            assert_eq!(d["state"], "succeeded", "[{}] {d}", app.backend);
        }
        let mut lines: Vec<i64> = std::fs::read_to_string(&ran)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        lines.sort_unstable();
        let mut expected = ids.clone();
        expected.sort_unstable();
        assert_eq!(lines, expected, "each deployment ran exactly once");
        for id in &ids {
            let starts = audit(app, &format!("deployment:twice#{id}"))
                .into_iter()
                .filter(|(a, _)| a == "deployment.start")
                .count();
            assert_eq!(starts, 1);
        }
        drop(other);
    });
}

/// Issue 12 (9): canceling follows the stage's `deployers`, the same rule as
/// deploying and redeploying; a deployer the list leaves out changes nothing.
#[test]
fn only_the_stage_deployers_may_cancel_or_redeploy_its_deployments() {
    each_backend(|app| {
        let repo = repo();
        let dir = marker_dir();
        let go = dir.path().join("go");
        let stages = format!(
            r#"  - name: dev
    trigger: {{ after: build }}
    deployers: [dana]
    variables: {{ GO: "{}" }}
    tasks: [ {{ shell: '{WAIT_FOR_GO}' }} ]
"#,
            go.display()
        );
        import(app, &pipeline("guarded", &repo, &stages));
        let dana = app.token("dana", Role::Deployer);
        let eve = app.token("eve", Role::Deployer);
        let v = build(app, &dana, "guarded");
        let id = deployment_to(app, &dana, "guarded", &v, "dev");
        in_state(app, &dana, id, "running");

        let (status, e) = post_json(
            app,
            &eve,
            &format!("/api/v1/deployments/{id}/cancel"),
            &json!({}),
        );
        assert_eq!(status, 403, "[{}] {e}", app.backend);
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("its deployers are dana"),
            "{e}"
        );
        assert_eq!(deployment(app, &dana, id)["state"], "running");
        let (status, e) = post_json(
            app,
            &eve,
            &format!("/api/v1/deployments/{id}/redeploy"),
            &json!({}),
        );
        assert_eq!(status, 403, "{e}");
        assert!(
            !audit(app, &format!("deployment:guarded#{id}"))
                .iter()
                .any(|(action, _)| action == "deployment.cancel")
        );

        let (status, c) = post_json(
            app,
            &dana,
            &format!("/api/v1/deployments/{id}/cancel"),
            &json!({}),
        );
        assert_eq!(status, 200, "{c}");
        assert_eq!(c["state"], "canceled");

        // A deployment to a stage since removed from the pipeline: whom the
        // list named is unknown, so only an admin may cancel it.
        let (status, r) = post_json(
            app,
            &dana,
            &format!("/api/v1/deployments/{id}/redeploy"),
            &json!({}),
        );
        assert_eq!(status, 202, "{r}");
        let again = r["id"].as_i64().unwrap();
        in_state(app, &dana, again, "running");
        import(
            app,
            &pipeline(
                "guarded",
                &repo,
                &stages.replace("name: dev", "name: development"),
            ),
        );
        let (status, e) = post_json(
            app,
            &dana,
            &format!("/api/v1/deployments/{again}/cancel"),
            &json!({}),
        );
        assert_eq!(status, 403, "{e}");
        assert_eq!(deployment(app, &dana, again)["state"], "running");
        let boss = app.token("boss", Role::Admin);
        let (status, c) = post_json(
            app,
            &boss,
            &format!("/api/v1/deployments/{again}/cancel"),
            &json!({}),
        );
        assert_eq!(status, 200, "{c}");
    });
}

/// Issue 12 (8): a release built from a branch outside `secrets_for` is
/// deployed without secrets: a stage that reads one fails before its tasks,
/// saying why; a release of the protected branch gets them.
#[test]
fn releases_of_unprotected_branches_deploy_without_secrets() {
    each_backend(|app| {
        let repo = repo();
        repo.commit_on("feature", &[("f", "f\n")], "feature work");
        let dir = marker_dir();
        let ran = dir.path().join("ran");
        let stages = format!(
            r#"  - name: dev
    trigger: {{ after: build }}
    variables: {{ TOKEN: "${{{{ secrets.DEPLOY_TOKEN }}}}" }}
    tasks: [ {{ shell: 'echo "$TOKEN" > "{}"' }} ]
"#,
            ran.display()
        );
        import(app, &pipeline("protected", &repo, &stages));
        app.set_secret("protected", "DEPLOY_TOKEN", "hunter2-very-secret");
        let dana = app.token("dana", Role::Deployer);
        let n = queue(app, &dana, "protected", json!({"branch": "feature"}));
        let b = finished(app, &dana, "protected", n);
        assert_eq!(b["state"], "succeeded", "[{}] {b}", app.backend);
        let version = b["release"].as_str().unwrap().to_string();
        let id = deployment_to(app, &dana, "protected", &version, "dev");
        let d = ended(app, &dana, id);
        assert_eq!(d["state"], "failed", "{d}");
        let error = d["error"].as_str().unwrap();
        assert!(
            error.contains("secrets_for") && error.contains("`feature`"),
            "{d}"
        );
        assert!(!ran.exists(), "a task ran with the secret");

        let main = build(app, &dana, "protected");
        let id = deployment_to(app, &dana, "protected", &main, "dev");
        assert_eq!(ended(app, &dana, id)["state"], "succeeded");
        assert_eq!(
            std::fs::read_to_string(&ran).unwrap(),
            "hunter2-very-secret\n"
        );
    });
}
