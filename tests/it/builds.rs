//! Builds from git: real repositories in temporary directories, the real
//! server and engine, both databases. Conditions are awaited by polling the
//! API with a deadline, never by sleeping blindly.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway::domain::{DeploymentState, Role};
use slipway::engine::builds::artifacts;
use slipway::engine::builds::{self, BuildRequest, QueueOutcome};
use slipway::engine::{Engine, EngineConfig};
use slipway::storage;

use crate::git::{TempRepo, git_repo};
use crate::helpers::{TestApp, each_backend};

mod hooks;

/// How long a build may take in these tests.
const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `f` every 20 ms until it returns `Some`, failing after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn json(res: reqwest::blocking::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body = res.text().unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

/// A pipeline building `repo` with these build tasks and artifact globs.
pub fn pipeline_yaml(name: &str, repo: &str, version: &str, build: &str) -> String {
    format!(
        r#"pipeline: {name}
source: {{ repo: "{repo}", branch: main }}
version: "{version}"
build:
{build}
stages:
  - name: dev
    trigger: {{ after: build }}
"#
    )
}

/// The usual build: a script that writes two artifacts and tells what it builds.
const BUILD_SH: &str = r#"#!/bin/sh
set -e
echo "building $SLIPWAY_VERSION of $SLIPWAY_PIPELINE #$SLIPWAY_BUILD_NUMBER at $SLIPWAY_COMMIT on $SLIPWAY_BRANCH"
test "$SLIPWAY_WORKSPACE" = "$(pwd)"
test -z "$SLIPWAY_SECRET_KEY"
mkdir -p dist/css
cp src/app.js dist/app.js
printf 'body { color: %s; }\n' "$COLOR" > dist/css/site.css
echo "done" >&2
"#;

fn web_repo() -> TempRepo {
    git_repo(&[
        ("build.sh", BUILD_SH),
        ("src/app.js", "console.log('space game');\n"),
    ])
}

const WEB_BUILD: &str = r#"  tasks:
    - shell: ./build.sh
      env: { COLOR: teal }
  artifacts: [ "dist/**" ]"#;

pub fn import(app: &TestApp, yaml: &str) {
    let res = app.import(yaml);
    let status = res.status();
    assert!(status == 201 || status == 200, "{}", res.text().unwrap());
}

pub fn post_json(app: &TestApp, token: &str, path: &str, body: &Value) -> (u16, Value) {
    json(
        app.client
            .post(app.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .unwrap(),
    )
}

pub fn get_json(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    json(app.get_with_token(path, token))
}

/// Queues a build through the API; returns its number.
pub fn queue(app: &TestApp, token: &str, pipeline: &str, body: Value) -> i64 {
    let (status, v) = post_json(
        app,
        token,
        &format!("/api/v1/pipelines/{pipeline}/builds"),
        &body,
    );
    assert_eq!(status, 202, "[{}] {v}", app.backend);
    assert_eq!(v["state"], "queued", "{v}");
    v["number"].as_i64().unwrap()
}

pub fn build_json(app: &TestApp, token: &str, pipeline: &str, number: i64) -> Value {
    let (status, v) = get_json(
        app,
        token,
        &format!("/api/v1/pipelines/{pipeline}/builds/{number}"),
    );
    assert_eq!(status, 200, "{v}");
    v
}

/// Waits until the build exists and has ended; returns its JSON.
pub fn finished(app: &TestApp, token: &str, pipeline: &str, number: i64) -> Value {
    wait_until(
        &format!("{pipeline} build #{number} to end"),
        DEADLINE,
        || {
            let (status, v) = get_json(
                app,
                token,
                &format!("/api/v1/pipelines/{pipeline}/builds/{number}"),
            );
            if status == 404 {
                return None;
            }
            assert_eq!(status, 200, "{v}");
            let state = v["state"].as_str().unwrap().to_string();
            (state != "queued" && state != "running").then_some(v)
        },
    )
}

/// The whole log of a build as text.
pub fn log_text(app: &TestApp, token: &str, pipeline: &str, number: i64) -> String {
    let (status, v) = get_json(
        app,
        token,
        &format!("/api/v1/pipelines/{pipeline}/builds/{number}/log"),
    );
    assert_eq!(status, 200, "{v}");
    v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect()
}

fn sha256sum(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn process_running(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false)
}

fn audit_actions(app: &TestApp, subject: &str) -> Vec<String> {
    let mut conn = app.conn();
    let mut rows = storage::list_audit(&mut conn, None, 1000).unwrap();
    rows.reverse();
    rows.into_iter()
        .filter(|r| r.subject == subject)
        .map(|r| r.action)
        .collect()
}

#[test]
fn an_api_build_makes_a_release_with_its_artifacts() {
    each_backend(|app| {
        let repo = web_repo();
        let head = repo.head();
        import(
            app,
            &pipeline_yaml(
                "web",
                &repo.path().display().to_string(),
                "1.0.{build}",
                WEB_BUILD,
            ),
        );
        let token = app.token("dana", Role::Deployer);
        let number = queue(app, &token, "web", json!({}));
        assert_eq!(number, 1);

        let build = finished(app, &token, "web", number);
        assert_eq!(build["state"], "succeeded", "[{}] {build}", app.backend);
        assert_eq!(build["release"], "1.0.1");
        assert_eq!(build["commit"], head.as_str());
        assert_eq!(build["branch"], "main");
        assert_eq!(build["trigger"], "api");
        assert_eq!(build["requested_by"], "dana");
        assert_eq!(build["message"], "initial commit");
        assert_eq!(build["author"], "Mara Test <mara@example.com>");
        assert!(build["error"].is_null());
        for field in ["created_at", "started_at", "finished_at"] {
            assert!(
                build[field].as_str().unwrap().ends_with('Z'),
                "{field}: {build}"
            );
        }
        let tasks = build["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 1);
        assert_eq!(tasks[0]["name"], "./build.sh");
        assert_eq!(tasks[0]["state"], "succeeded");
        assert_eq!(tasks[0]["exit_code"], 0);

        let log = log_text(app, &token, "web", number);
        assert!(
            log.contains(&format!("building 1.0.1 of web #1 at {head} on main")),
            "{log}"
        );
        assert!(log.contains("done\n"), "{log}");

        // The release, its artifacts and their digests.
        let (status, release) = get_json(app, &token, "/api/v1/pipelines/web/releases/1.0.1");
        assert_eq!(status, 200, "{release}");
        assert_eq!(release["commit"], head.as_str());
        assert_eq!(release["branch"], "main");
        let artifacts_json = release["artifacts"].as_array().unwrap();
        let paths: Vec<&str> = artifacts_json
            .iter()
            .map(|a| a["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, vec!["dist/app.js", "dist/css/site.css"]);

        // The same files, made by hand, digested by the real sha256sum.
        let check = tempfile::tempdir().unwrap();
        let cloned = Command::new("git")
            .args(["clone", "--quiet"])
            .arg(repo.path())
            .arg(check.path().join("ws"))
            .status()
            .unwrap();
        assert!(cloned.success());
        let ws = check.path().join("ws");
        let made = Command::new("sh")
            .arg("-c")
            .arg("./build.sh")
            .current_dir(&ws)
            .env("COLOR", "teal")
            .env("SLIPWAY_WORKSPACE", &ws)
            .output()
            .unwrap();
        assert!(made.status.success(), "{made:?}");
        for a in artifacts_json {
            let path = a["path"].as_str().unwrap();
            let digest = a["sha256"].as_str().unwrap();
            let file = ws.join(path);
            assert_eq!(digest, sha256sum(&file), "{path}");
            assert_eq!(
                a["size"].as_u64().unwrap(),
                std::fs::metadata(&file).unwrap().len()
            );
            let stored = artifacts::artifact_path(app.data_dir(), digest).unwrap();
            assert!(stored.is_file(), "{} is not in the store", stored.display());
            assert_eq!(sha256sum(&stored), digest);
        }

        // The release carries the current definition revision and its build.
        let mut conn = app.conn();
        let p = storage::find_pipeline(&mut conn, "web").unwrap().unwrap();
        let r = storage::find_release(&mut conn, p.id, "1.0.1")
            .unwrap()
            .unwrap();
        let revision = storage::current_revision(&mut conn, p.id).unwrap();
        assert_eq!(r.revision_id, revision.id);
        assert!(r.build_id.is_some());
        assert_eq!(r.fixes_release_id, None);
        drop(conn);

        // The workspace goes; the mirror stays for the next build.
        wait_until("the workspace to be removed", DEADLINE, || {
            (!app.data_dir().join("workspaces/web/1").exists()).then_some(())
        });
        assert!(app.data_dir().join("mirrors/web.git/HEAD").is_file());

        assert_eq!(
            audit_actions(app, "build:web#1"),
            vec![
                "build.queue",
                "build.start",
                "build.checkout",
                "build.succeed"
            ]
        );
        assert_eq!(
            audit_actions(app, "release:web@1.0.1"),
            vec!["release.create"]
        );
        let mut conn = app.conn();
        storage::verify_audit_chain(&mut conn).unwrap();
    });
}

#[test]
fn a_failing_build_makes_no_release_and_says_why() {
    each_backend(|app| {
        let repo = git_repo(&[(
            "build.sh",
            "#!/bin/sh\necho 'compiling'\necho 'syntax error in app.js' >&2\nexit 1\n",
        )]);
        import(
            app,
            &pipeline_yaml(
                "broken",
                &repo.path().display().to_string(),
                "1.0.{build}",
                "  tasks:\n    - shell: ./build.sh\n      name: compile\n    - shell: echo never\n  artifacts: [ \"dist/**\" ]",
            ),
        );
        let token = app.token("dana", Role::Deployer);
        let number = queue(app, &token, "broken", json!({}));
        let build = finished(app, &token, "broken", number);
        assert_eq!(build["state"], "failed", "{build}");
        assert_eq!(build["release"], Value::Null);
        let error = build["error"].as_str().unwrap();
        assert!(
            error.contains("task `compile` exited with code 1"),
            "{error}"
        );
        let tasks = build["tasks"].as_array().unwrap();
        assert_eq!(tasks[0]["state"], "failed");
        assert_eq!(tasks[0]["exit_code"], 1);
        assert_eq!(tasks[1]["state"], "skipped");
        let log = log_text(app, &token, "broken", number);
        assert!(
            log.contains("compiling\n") && log.contains("syntax error in app.js\n"),
            "{log}"
        );
        assert!(log.contains("task exited with code 1"), "{log}");
        let (_, releases) = get_json(app, &token, "/api/v1/pipelines/broken/releases");
        assert_eq!(releases["releases"], json!([]));
        assert_eq!(
            audit_actions(app, "build:broken#1")
                .last()
                .map(String::as_str),
            Some("build.fail")
        );
    });
}

#[test]
fn a_task_that_times_out_is_stopped_with_its_processes() {
    each_backend(|app| {
        let marker = format!("30.{}", std::process::id() * 1000 + rand_digits());
        let repo = git_repo(&[("README", "slow\n")]);
        let build = format!(
            "  tasks:\n    - shell: \"echo start; sleep {marker}; echo never\"\n      timeout: 1s\n  artifacts: []"
        );
        import(
            app,
            &pipeline_yaml(
                "slow",
                &repo.path().display().to_string(),
                "1.0.{build}",
                &build,
            ),
        );
        let token = app.token("dana", Role::Deployer);
        let started = Instant::now();
        let number = queue(app, &token, "slow", json!({}));
        let build = finished(app, &token, "slow", number);
        assert_eq!(build["state"], "failed", "{build}");
        let error = build["error"].as_str().unwrap();
        assert!(error.contains("timed out after 1s"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(build["tasks"][0]["state"], "failed");
        assert_eq!(build["tasks"][0]["exit_code"], Value::Null);
        assert!(
            !process_running(&format!("sleep {marker}")),
            "the task's process survived"
        );
        let log = log_text(app, &token, "slow", number);
        assert!(log.contains("start\n") && !log.contains("never"), "{log}");
    });
}

fn rand_digits() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32 % 100_000
}

#[test]
fn builds_can_be_canceled_running_or_queued() {
    each_backend(|app| {
        let marker = format!("40.{}", rand_digits());
        let repo = git_repo(&[("README", "x\n")]);
        let build =
            format!("  tasks:\n    - shell: \"echo started; sleep {marker}\"\n  artifacts: []");
        import(
            app,
            &pipeline_yaml(
                "cancel-me",
                &repo.path().display().to_string(),
                "1.0.{build}",
                &build,
            ),
        );
        let token = app.token("dana", Role::Deployer);
        let first = queue(app, &token, "cancel-me", json!({}));
        let second = queue(app, &token, "cancel-me", json!({}));
        wait_until("the first build's task to run", DEADLINE, || {
            log_text(app, &token, "cancel-me", first)
                .contains("started")
                .then_some(())
        });
        // One build of a pipeline at a time: the second waits.
        assert_eq!(
            build_json(app, &token, "cancel-me", second)["state"],
            "queued"
        );

        let (status, v) = post_json(
            app,
            &token,
            &format!("/api/v1/pipelines/cancel-me/builds/{second}/cancel"),
            &json!({}),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["state"], "canceled");
        assert_eq!(v["tasks"], json!([]));

        let (status, v) = post_json(
            app,
            &token,
            &format!("/api/v1/pipelines/cancel-me/builds/{first}/cancel"),
            &json!({}),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["state"], "canceled");
        assert_eq!(v["error"], "canceled by dana");
        wait_until("the task's process to stop", DEADLINE, || {
            (!process_running(&format!("sleep {marker}"))).then_some(())
        });
        let b = wait_until("the task to be canceled", DEADLINE, || {
            let b = build_json(app, &token, "cancel-me", first);
            (b["tasks"][0]["state"] == "canceled").then_some(b)
        });
        assert_eq!(b["state"], "canceled");
        assert!(b["release"].is_null());

        // Ended builds cannot be canceled; viewers cannot cancel.
        let (status, v) = post_json(
            app,
            &token,
            &format!("/api/v1/pipelines/cancel-me/builds/{first}/cancel"),
            &json!({}),
        );
        assert_eq!(status, 409, "{v}");
        let viewer = app.token("vic", Role::Viewer);
        let (status, _) = post_json(
            app,
            &viewer,
            &format!("/api/v1/pipelines/cancel-me/builds/{first}/cancel"),
            &json!({}),
        );
        assert_eq!(status, 403);
        assert_eq!(
            audit_actions(app, &format!("build:cancel-me#{first}")),
            vec![
                "build.queue",
                "build.start",
                "build.checkout",
                "build.cancel"
            ]
        );
    });
}

#[test]
fn builds_queued_together_run_one_after_the_other() {
    each_backend(|app| {
        let repo = git_repo(&[(
            "build.sh",
            // Fails if another build of the pipeline runs at the same time.
            "#!/bin/sh\nmkdir \"$LOCK\" || exit 9\nsleep 0.3\nrmdir \"$LOCK\"\n",
        )]);
        let lock = tempfile::tempdir().unwrap();
        let yaml = pipeline_yaml(
            "seq",
            &repo.path().display().to_string(),
            "1.0.{build}",
            "  tasks: [ { shell: ./build.sh } ]\n  artifacts: []",
        )
        .replace(
            "version:",
            &format!(
                "variables: {{ LOCK: \"{}/lock\" }}\nversion:",
                lock.path().display()
            ),
        );
        import(app, &yaml);
        let token = app.token("dana", Role::Deployer);
        let a = queue(app, &token, "seq", json!({}));
        let b = queue(app, &token, "seq", json!({}));
        let a = finished(app, &token, "seq", a);
        let b = finished(app, &token, "seq", b);
        assert_eq!(a["state"], "succeeded", "{a}");
        assert_eq!(b["state"], "succeeded", "{b}");
        assert_eq!(
            (a["release"].as_str(), b["release"].as_str()),
            (Some("1.0.1"), Some("1.0.2"))
        );
        let a_end = a["finished_at"].as_str().unwrap();
        let b_start = b["tasks"][0]["started_at"].as_str().unwrap();
        assert!(b_start >= a_end, "{b_start} < {a_end}");
    });
}

/// Starts a second engine (another instance) on the app's database.
fn second_engine(
    app: &TestApp,
    config: EngineConfig,
) -> (tokio::runtime::Runtime, Engine, tempfile::TempDir) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        app.db.clone(),
        data.path().to_path_buf(),
        app.secret_key.clone(),
        config,
    );
    rt.block_on(engine.start()).unwrap();
    (rt, engine, data)
}

#[test]
fn concurrent_builds_never_share_a_version() {
    each_backend(|app| {
        let repo = git_repo(&[("build.sh", "#!/bin/sh\nsleep 1\n")]);
        let path = repo.path().display().to_string();
        import(
            app,
            &pipeline_yaml(
                "by-build",
                &path,
                "1.0.{build}",
                "  tasks: [ { shell: ./build.sh } ]\n  artifacts: []",
            ),
        );
        import(
            app,
            &pipeline_yaml(
                "by-sha",
                &path,
                "{sha7}",
                "  tasks: [ { shell: ./build.sh } ]\n  artifacts: []",
            ),
        );
        // Another instance that runs two builds of a pipeline at once.
        let (rt, engine, _data) = second_engine(
            app,
            EngineConfig {
                builds_per_pipeline: 2,
                safety_poll: Duration::from_millis(50),
                ..EngineConfig::default()
            },
        );
        let token = app.token("dana", Role::Deployer);
        let numbers: Vec<(&str, i64)> = ["by-build", "by-sha", "by-build", "by-sha"]
            .into_iter()
            .map(|p| (p, queue(app, &token, p, json!({}))))
            .collect();
        engine.notify();
        let done: Vec<Value> = numbers
            .iter()
            .map(|(p, n)| finished(app, &token, p, *n))
            .collect();

        // 1.0.{build}: both made a release, with different versions.
        let by_build: Vec<&Value> = done
            .iter()
            .filter(|b| b["pipeline"] == "by-build")
            .collect();
        assert!(
            by_build.iter().all(|b| b["state"] == "succeeded"),
            "{by_build:?}"
        );
        assert_ne!(by_build[0]["release"], by_build[1]["release"]);
        // They ran at the same time.
        let overlap = |x: &Value, y: &Value| {
            x["tasks"][0]["started_at"].as_str() < y["tasks"][0]["finished_at"].as_str()
                && y["tasks"][0]["started_at"].as_str() < x["tasks"][0]["finished_at"].as_str()
        };
        assert!(overlap(by_build[0], by_build[1]), "{by_build:?}");

        // {sha7} of the same commit: exactly one release; the other build says why.
        let by_sha: Vec<&Value> = done.iter().filter(|b| b["pipeline"] == "by-sha").collect();
        let succeeded: Vec<&&Value> = by_sha
            .iter()
            .filter(|b| b["state"] == "succeeded")
            .collect();
        let failed: Vec<&&Value> = by_sha.iter().filter(|b| b["state"] == "failed").collect();
        assert_eq!((succeeded.len(), failed.len()), (1, 1), "{by_sha:?}");
        let error = failed[0]["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("version {} exists already", &repo.head()[..7])),
            "{error}"
        );
        let (_, releases) = get_json(app, &token, "/api/v1/pipelines/by-sha/releases");
        assert_eq!(releases["releases"].as_array().unwrap().len(), 1);

        rt.block_on(engine.shutdown());
    });
}

#[test]
fn the_same_version_twice_fails_the_second_build_cleanly() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        import(
            app,
            &pipeline_yaml(
                "sha",
                &repo.path().display().to_string(),
                "{sha7}",
                "  tasks: [ { shell: \"true\" } ]\n  artifacts: []",
            ),
        );
        let token = app.token("dana", Role::Deployer);
        let first = finished(app, &token, "sha", queue(app, &token, "sha", json!({})));
        assert_eq!(first["state"], "succeeded", "{first}");
        let second = finished(app, &token, "sha", queue(app, &token, "sha", json!({})));
        assert_eq!(second["state"], "failed");
        let error = second["error"].as_str().unwrap();
        assert!(
            error.contains("exists already in sha (made by build #1)"),
            "{error}"
        );
        // It failed before running anything.
        assert_eq!(second["tasks"], json!([]));
    });
}

#[test]
fn a_branch_filter_keeps_pushes_to_other_branches_out() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        let feature = repo.commit_on("feature/x", &[("f.txt", "f\n")], "feature work");
        let yaml = pipeline_yaml(
            "filtered",
            &repo.path().display().to_string(),
            "1.0.{build}",
            "  tasks: [ { shell: \"true\" } ]\n  artifacts: []",
        )
        .replace(
            "branch: main }",
            "branch: main, branches: { include: [main, \"release/*\"] } }",
        );
        import(app, &yaml);
        let mut conn = app.conn();
        let push = |branch: &str, trigger: &str, conn: &mut slipway::storage::DbConn| {
            builds::queue_build(
                conn,
                &BuildRequest {
                    pipeline: "filtered".into(),
                    branch: Some(branch.into()),
                    commit: None,
                    trigger: trigger.into(),
                    requested_by: "github".into(),
                },
            )
            .unwrap()
        };
        assert_eq!(
            push("feature/x", "webhook:github", &mut conn),
            QueueOutcome::Filtered {
                branch: "feature/x".into()
            }
        );
        assert_eq!(
            push("feature/x", "poll", &mut conn),
            QueueOutcome::Filtered {
                branch: "feature/x".into()
            }
        );
        assert!(matches!(
            push("release/2", "webhook:github", &mut conn),
            QueueOutcome::Queued(_)
        ));
        drop(conn);
        let token = app.token("dana", Role::Deployer);
        // A person may build any branch.
        let n = queue(app, &token, "filtered", json!({"branch": "feature/x"}));
        let b = finished(app, &token, "filtered", n);
        assert_eq!(b["commit"], feature.as_str());
        assert_eq!(b["state"], "succeeded", "{b}");
        // release/2 does not exist in the repository.
        let b = finished(app, &token, "filtered", 1);
        assert_eq!(b["state"], "failed");
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .contains("branch `release/2` does not exist"),
            "{b}"
        );
    });
}

#[test]
fn a_commit_can_be_built_and_bad_requests_are_refused() {
    each_backend(|app| {
        let repo = git_repo(&[("a.txt", "1\n")]);
        let old = repo.head();
        repo.commit(&[("a.txt", "2\n")], "second");
        import(
            app,
            &pipeline_yaml(
                "pick",
                &repo.path().display().to_string(),
                "1.0.{build}",
                "  tasks: [ { shell: \"cat a.txt\" } ]\n  artifacts: []",
            ),
        );
        let token = app.token("dana", Role::Deployer);
        let n = queue(app, &token, "pick", json!({"commit": &old[..12]}));
        let b = finished(app, &token, "pick", n);
        assert_eq!(b["state"], "succeeded", "{b}");
        assert_eq!(b["commit"], old.as_str());
        assert_eq!(log_text(app, &token, "pick", n), "1\n");

        let path = "/api/v1/pipelines/pick/builds";
        let (status, v) = post_json(app, &token, path, &json!({"commit": "--upload-pack=evil"}));
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (422, Some("invalid")),
            "{v}"
        );
        let (status, _) = post_json(app, &token, path, &json!({"branch": "a..b"}));
        assert_eq!(status, 422);
        let (status, _) = post_json(app, &token, path, &json!({"bogus": 1}));
        assert_eq!(status, 400);
        let res = app
            .client
            .post(app.url(path))
            .bearer_auth(&token)
            .header("Content-Type", "application/json")
            .body("{not json")
            .send()
            .unwrap();
        assert_eq!(res.status(), 400);
        let (status, _) = post_json(app, &token, "/api/v1/pipelines/nope/builds", &json!({}));
        assert_eq!(status, 404);
        let viewer = app.token("vic", Role::Viewer);
        let (status, _) = post_json(app, &viewer, path, &json!({}));
        assert_eq!(status, 403);
        let res = app
            .client
            .post(app.url(path))
            .json(&json!({}))
            .send()
            .unwrap();
        assert_eq!(res.status(), 401);
        // An unknown commit fails the build with a clear reason.
        let n = queue(app, &token, "pick", json!({"commit": "deadbeef"}));
        let b = finished(app, &token, "pick", n);
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .contains("commit `deadbeef` does not exist"),
            "{b}"
        );
        let (status, _) = get_json(app, &token, "/api/v1/pipelines/pick/builds/99");
        assert_eq!(status, 404);
    });
}

#[test]
fn builds_are_listed_newest_first_and_logs_tail_from_a_cursor() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        import(
            app,
            &pipeline_yaml(
                "list",
                &repo.path().display().to_string(),
                "1.0.{build}",
                "  tasks:\n    - shell: \"echo one\"\n    - shell: \"echo two >&2\"\n  artifacts: []",
            ),
        );
        let token = app.token("dana", Role::Deployer);
        for _ in 0..3 {
            let n = queue(app, &token, "list", json!({}));
            finished(app, &token, "list", n);
        }
        let (status, v) = get_json(app, &token, "/api/v1/pipelines/list/builds?limit=2");
        assert_eq!(status, 200);
        let numbers: Vec<i64> = v["builds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["number"].as_i64().unwrap())
            .collect();
        assert_eq!(numbers, vec![3, 2]);
        let next = v["next"].as_str().unwrap().to_string();
        let (_, v) = get_json(app, &token, &next);
        let numbers: Vec<i64> = v["builds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["number"].as_i64().unwrap())
            .collect();
        assert_eq!(numbers, vec![1]);
        assert!(v["next"].is_null());

        let (_, log) = get_json(app, &token, "/api/v1/pipelines/list/builds/2/log");
        let chunks = log["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), 2, "{log}");
        assert_eq!(
            (
                chunks[0]["task"].as_str(),
                chunks[0]["stream"].as_str(),
                chunks[0]["text"].as_str()
            ),
            (Some("echo one"), Some("stdout"), Some("one\n"))
        );
        // The build page's live log files each chunk under its task by position.
        assert_eq!(chunks[0]["task_position"], 0, "{log}");
        assert_eq!(
            (chunks[1]["stream"].as_str(), chunks[1]["text"].as_str()),
            (Some("stderr"), Some("two\n"))
        );
        assert_eq!(log["finished"], true);
        let after = chunks[0]["seq"].as_i64().unwrap();
        let (_, rest) = get_json(
            app,
            &token,
            &format!("/api/v1/pipelines/list/builds/2/log?after={after}"),
        );
        assert_eq!(rest["chunks"].as_array().unwrap().len(), 1);
        assert_eq!(rest["next_after"], chunks[1]["seq"]);
        let (_, none) = get_json(
            app,
            &token,
            &format!(
                "/api/v1/pipelines/list/builds/2/log?after={}",
                rest["next_after"]
            ),
        );
        assert_eq!(none["chunks"], json!([]));
        assert_eq!(none["next_after"], rest["next_after"]);
        // A page of one, and page sizes out of range (build and deployment
        // logs alike).
        let (_, one) = get_json(app, &token, "/api/v1/pipelines/list/builds/2/log?limit=1");
        assert_eq!(one["chunks"].as_array().unwrap().len(), 1, "{one}");
        for path in [
            "/api/v1/pipelines/list/builds/2/log?limit=0",
            "/api/v1/pipelines/list/builds/2/log?limit=1001",
            "/api/v1/deployments/1/log?limit=0",
        ] {
            let (status, v) = get_json(app, &token, path);
            assert_eq!(status, 400, "{path}: {v}");
            assert!(v.to_string().contains("between 1 and 1000"), "{path}: {v}");
        }
    });
}

#[test]
fn unreachable_repositories_and_non_shell_tasks_fail_clearly() {
    each_backend(|app| {
        import(
            app,
            &pipeline_yaml(
                "gone",
                "/nonexistent/slipway-repo",
                "1.0.{build}",
                "  tasks: [ { shell: \"true\" } ]\n  artifacts: []",
            ),
        );
        let token = app.token("dana", Role::Deployer);
        let b = finished(app, &token, "gone", queue(app, &token, "gone", json!({})));
        assert_eq!(b["state"], "failed");
        let error = b["error"].as_str().unwrap();
        assert!(
            error.contains("cannot fetch /nonexistent/slipway-repo"),
            "{error}"
        );
        assert!(error.contains("fatal:"), "{error}");

        let repo = git_repo(&[("README", "x\n")]);
        import(
            app,
            &pipeline_yaml(
                "http-build",
                &repo.url(),
                "1.0.{build}",
                "  tasks: [ { http: { url: \"http://127.0.0.1:9/\" } } ]\n  artifacts: []",
            ),
        );
        let b = finished(
            app,
            &token,
            "http-build",
            queue(app, &token, "http-build", json!({})),
        );
        assert_eq!(b["state"], "failed");
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .contains("builds run `shell` tasks only"),
            "{b}"
        );

        // An artifact glob that matches nothing fails the build too.
        import(
            app,
            &pipeline_yaml(
                "no-dist",
                &repo.url(),
                "1.0.{build}",
                "  tasks: [ { shell: \"true\" } ]\n  artifacts: [ \"dist/**\" ]",
            ),
        );
        let b = finished(
            app,
            &token,
            "no-dist",
            queue(app, &token, "no-dist", json!({})),
        );
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .contains("`dist/**` matched no file"),
            "{b}"
        );
    });
}

#[test]
fn secrets_reach_tasks_and_never_their_logs() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        import(
            app,
            &pipeline_yaml(
                "secretive",
                &repo.url(),
                "1.0.{build}",
                "  tasks:\n    - shell: \"echo token is $TOKEN; test \\\"$TOKEN\\\" = hunter2-very-secret\"\n      env: { TOKEN: \"${{ secrets.DEPLOY_TOKEN }}\" }\n  artifacts: []",
            ),
        );
        let token = app.token("dana", Role::Deployer);
        // Not set yet: the build fails and names it.
        let b = finished(
            app,
            &token,
            "secretive",
            queue(app, &token, "secretive", json!({})),
        );
        assert_eq!(b["state"], "failed");
        assert!(b["error"].as_str().unwrap().contains("DEPLOY_TOKEN"), "{b}");

        app.set_secret("secretive", "DEPLOY_TOKEN", "hunter2-very-secret");
        let n = queue(app, &token, "secretive", json!({}));
        let b = finished(app, &token, "secretive", n);
        assert_eq!(b["state"], "succeeded", "{b}");
        let log = log_text(app, &token, "secretive", n);
        assert_eq!(log, "token is ***\n");
    });
}

#[test]
fn a_release_built_after_a_failed_one_fixes_it() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        import(
            app,
            &pipeline_yaml(
                "fixer",
                &repo.url(),
                "1.0.{build}",
                "  tasks: [ { shell: \"true\" } ]\n  artifacts: []",
            ),
        );
        let token = app.token("dana", Role::Deployer);
        finished(app, &token, "fixer", queue(app, &token, "fixer", json!({})));
        {
            let mut conn = app.conn();
            let p = storage::find_pipeline(&mut conn, "fixer").unwrap().unwrap();
            let r = storage::find_release(&mut conn, p.id, "1.0.1")
                .unwrap()
                .unwrap();
            storage::insert_deployment(
                &mut conn,
                &storage::NewDeployment {
                    pipeline_id: p.id,
                    release_id: r.id,
                    stage: "dev".into(),
                    state: DeploymentState::Failed,
                    trigger: "after:build".into(),
                    requested_by: "slipway".into(),
                    reason: None,
                },
            )
            .unwrap();
        }
        repo.commit(&[("README", "fixed\n")], "fix the crash");
        let b = finished(app, &token, "fixer", queue(app, &token, "fixer", json!({})));
        assert_eq!(b["release"], "1.0.2");
        let (_, release) = get_json(app, &token, "/api/v1/pipelines/fixer/releases/1.0.2");
        assert_eq!(release["fixes"], "1.0.1", "{release}");
        // 1.0.2 did not fail anywhere: the next one fixes nothing.
        let b = finished(app, &token, "fixer", queue(app, &token, "fixer", json!({})));
        let (_, release) = get_json(
            app,
            &token,
            &format!(
                "/api/v1/pipelines/fixer/releases/{}",
                b["release"].as_str().unwrap()
            ),
        );
        assert!(release["fixes"].is_null(), "{release}");
    });
}

#[test]
fn a_restarted_instance_interrupts_the_builds_it_left_running() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        import(
            app,
            &pipeline_yaml(
                "crashy",
                &repo.url(),
                "1.0.{build}",
                "  tasks: [ { shell: \"true\" } ]\n  artifacts: []",
            ),
        );
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("instance-id"), "previous-life").unwrap();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim()
            .to_string();
        let me = format!("{host}/previous-life");
        let insert = |runner: &str, heartbeat_age: i64| {
            let mut conn = app.conn();
            let p = storage::find_pipeline(&mut conn, "crashy")
                .unwrap()
                .unwrap();
            let b = storage::insert_build(
                &mut conn,
                &storage::NewBuild {
                    pipeline_id: p.id,
                    state: slipway::domain::BuildState::Queued,
                    branch: Some("main".into()),
                    commit_sha: None,
                    message: None,
                    author: None,
                    requested_by: "test".into(),
                    trigger: "api".into(),
                },
            )
            .unwrap();
            // Claimed by `runner`, last alive `heartbeat_age` seconds ago.
            use diesel::prelude::*;
            use slipway::storage::schema::builds as t;
            diesel::update(t::table.find(b.id))
                .set((
                    t::state.eq("running"),
                    t::runner.eq(runner),
                    t::heartbeat_at.eq(storage::now() - chrono::Duration::seconds(heartbeat_age)),
                    t::started_at.eq(storage::now()),
                ))
                .execute(&mut *conn)
                .unwrap();
            let task = storage::insert_task_run(
                &mut conn,
                &storage::NewTaskRun {
                    build_id: Some(b.id),
                    deployment_id: None,
                    position: 0,
                    name: "build".into(),
                    kind: "shell".into(),
                },
            )
            .unwrap();
            assert!(storage::start_task_run(&mut conn, task.id).unwrap());
            b.number
        };
        let own = insert(&me, 1);
        let stale = insert("elsewhere/dead", 600);
        let alive = insert("elsewhere/alive", 1);

        let rt = tokio::runtime::Runtime::new().unwrap();
        let engine = Engine::new(
            app.db.clone(),
            data.path().to_path_buf(),
            app.secret_key.clone(),
            EngineConfig::default(),
        );
        rt.block_on(engine.start()).unwrap();
        assert_eq!(engine.runner_id(), Some(me.as_str()));

        let token = app.token("vic", Role::Viewer);
        let b = build_json(app, &token, "crashy", own);
        assert_eq!(b["state"], "interrupted");
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .contains("restarted while this build ran"),
            "{b}"
        );
        assert_eq!(b["tasks"][0]["state"], "interrupted");
        let b = build_json(app, &token, "crashy", stale);
        assert_eq!(b["state"], "interrupted");
        assert!(
            b["error"].as_str().unwrap().contains("elsewhere/dead"),
            "{b}"
        );
        // Another instance that is alive keeps its build.
        assert_eq!(build_json(app, &token, "crashy", alive)["state"], "running");
        assert_eq!(
            audit_actions(app, &format!("build:crashy#{own}"))
                .last()
                .map(String::as_str),
            Some("build.interrupt")
        );
        rt.block_on(engine.shutdown());
    });
}

#[test]
fn polling_builds_new_commits() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "v1\n")]);
        let yaml = pipeline_yaml(
            "polled",
            &repo.url(),
            "1.0.{build}",
            "  tasks: [ { shell: \"cat README\" } ]\n  artifacts: []",
        )
        .replace("branch: main }", "branch: main, poll: 1s }");
        import(app, &yaml);
        let token = app.token("vic", Role::Viewer);
        // Nothing was ever built: the first look builds the head.
        let first = finished(app, &token, "polled", 1);
        assert_eq!(first["trigger"], "poll");
        assert_eq!(first["requested_by"], "poll");
        assert_eq!(first["commit"], repo.head().as_str());
        let second_sha = repo.commit(&[("README", "v2\n")], "second");
        let second = finished(app, &token, "polled", 2);
        assert_eq!(second["commit"], second_sha.as_str());
        assert_eq!(second["state"], "succeeded", "{second}");
        assert_eq!(log_text(app, &token, "polled", 2), "v2\n");
        // The poller looks again and, with no new commit, queues nothing.
        let p = {
            let mut conn = app.conn();
            storage::find_pipeline(&mut conn, "polled")
                .unwrap()
                .unwrap()
        };
        let since = storage::now();
        let head = wait_until("the poller to look again", DEADLINE, || {
            let mut conn = app.conn();
            storage::find_source_head(&mut conn, p.id, "main")
                .unwrap()
                .filter(|h| h.checked_at > since)
        });
        assert_eq!(head.commit_sha.as_deref(), Some(second_sha.as_str()));
        assert_eq!(head.error, None);
        let (_, list) = get_json(app, &token, "/api/v1/pipelines/polled/builds");
        assert_eq!(list["builds"].as_array().unwrap().len(), 2, "{list}");
    });
}

#[test]
fn polling_an_unreachable_repository_records_why() {
    each_backend(|app| {
        let yaml = pipeline_yaml(
            "lost",
            "/nonexistent/lost-repo",
            "1.0.{build}",
            "  tasks: [ { shell: \"true\" } ]\n  artifacts: []",
        )
        .replace("branch: main }", "branch: main, poll: 1s }");
        import(app, &yaml);
        let mut conn = app.conn();
        let p = storage::find_pipeline(&mut conn, "lost").unwrap().unwrap();
        drop(conn);
        let head = wait_until("the poller to record its failure", DEADLINE, || {
            let mut conn = app.conn();
            storage::find_source_head(&mut conn, p.id, "main").unwrap()
        });
        assert!(
            head.error
                .unwrap()
                .contains("cannot fetch /nonexistent/lost-repo")
        );
        let token = app.token("vic", Role::Viewer);
        let (_, list) = get_json(app, &token, "/api/v1/pipelines/lost/builds");
        assert_eq!(list["builds"], json!([]));
    });
}

#[test]
fn the_version_can_come_from_a_tag() {
    each_backend(|app| {
        let repo = git_repo(&[("README", "x\n")]);
        repo.tag("v2.1.0");
        import(
            app,
            &pipeline_yaml(
                "tagged",
                &repo.url(),
                "{tag}",
                "  tasks: [ { shell: \"echo $SLIPWAY_VERSION\" } ]\n  artifacts: []",
            ),
        );
        let token = app.token("dana", Role::Deployer);
        let n = queue(app, &token, "tagged", json!({}));
        let b = finished(app, &token, "tagged", n);
        assert_eq!(b["release"], "v2.1.0", "{b}");
        assert_eq!(log_text(app, &token, "tagged", n), "v2.1.0\n");
        // An untagged commit has no version: the build fails before its tasks.
        repo.commit(&[("README", "y\n")], "untagged");
        let b = finished(
            app,
            &token,
            "tagged",
            queue(app, &token, "tagged", json!({})),
        );
        assert_eq!(b["state"], "failed");
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .contains("the commit has no tag"),
            "{b}"
        );
        assert_eq!(b["tasks"], json!([]));
    });
}
