//! Gates: local health servers whose answer the test flips, real builds and
//! deployments, both databases. Conditions are awaited with deadlines.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway::domain::Role;

use crate::builds::{get_json, import, post_json, wait_until};
use crate::deployments::{build, ended, pipeline, repo};
use crate::helpers::{TestApp, each_backend};

const DEADLINE: Duration = Duration::from_secs(60);

/// A tiny HTTP server on 127.0.0.1: `answer(path)` gives status and body.
fn serve(answer: impl Fn(&str) -> (u16, String) + Send + 'static) -> String {
    serve_requests(move |path, _| answer(path))
}

/// [`serve`], with the request's header lines (`name: value`, as sent).
fn serve_requests(answer: impl Fn(&str, &[String]) -> (u16, String) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                headers.push(line.trim_end().to_string());
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body) = answer(&path, &headers);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

/// A health endpoint that answers healthy while `healthy` is set.
pub(crate) fn health_server(healthy: Arc<AtomicBool>) -> String {
    serve(move |_| {
        if healthy.load(Ordering::SeqCst) {
            (200, r#"{"status":"healthy"}"#.into())
        } else {
            (503, r#"{"status":"down"}"#.into())
        }
    })
}

fn gated_stage(gate: &str) -> String {
    format!(
        r#"  - name: prod
    trigger: manual
    gates:
      before:
{gate}
    tasks: [ {{ shell: "echo deployed" }} ]
"#
    )
}

fn http_gate(url: &str, steady: &str, timeout: &str, extra: &str) -> String {
    format!(
        r#"        delay: 0s
        interval: 1s
        steady: {steady}
        timeout: {timeout}
        checks:
          - name: health
            http: {{ url: "{url}/health", success: "status == 200 && body.status == 'healthy'" }}
{extra}"#
    )
}

/// Builds and deploys `name` to `prod`; returns the deployment id.
fn deploy(app: &TestApp, token: &str, name: &str, stages: &str) -> i64 {
    let repo = repo();
    import(app, &pipeline(name, &repo, stages));
    let version = build(app, token, name);
    let (status, v) = post_json(
        app,
        token,
        &format!("/api/v1/pipelines/{name}/stages/prod/deployments"),
        &json!({ "release": version }),
    );
    assert_eq!(status, 202, "{v}");
    v["id"].as_i64().unwrap()
}

/// The gate run of a deployment, from `GET /api/v1/gates`.
fn gate_run_of(app: &TestApp, token: &str, deployment: i64) -> Option<Value> {
    let (status, v) = get_json(app, token, "/api/v1/gates");
    assert_eq!(status, 200, "{v}");
    v["evaluating"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["recent"].as_array().unwrap())
        .find(|r| r["deployment_id"] == deployment)
        .cloned()
}

fn samples(app: &TestApp, token: &str, deployment: i64) -> Vec<Value> {
    let (status, v) = get_json(app, token, &format!("/api/v1/deployments/{deployment}"));
    assert_eq!(status, 200, "{v}");
    v["gate_samples"].as_array().unwrap().clone()
}

#[test]
fn a_gate_passes_only_after_turning_green_and_staying_green() {
    each_backend(|app| {
        let healthy = Arc::new(AtomicBool::new(false));
        let url = health_server(healthy.clone());
        let token = app.token("rm", Role::ReleaseManager);
        let stages = gated_stage(&http_gate(&url, "2s", "60s", ""));
        let id = deploy(app, &token, "green", &stages);

        // Red: the gate samples and fails, the deployment waits.
        wait_until("two failing samples", DEADLINE, || {
            let s = samples(app, &token, id);
            (s.iter().filter(|s| s["verdict"] == "fail").count() >= 2).then_some(())
        });
        let (_, d) = get_json(app, &token, &format!("/api/v1/deployments/{id}"));
        assert_eq!(d["state"], "evaluating_gates", "{d}");
        let run = gate_run_of(app, &token, id).unwrap();
        assert_eq!(run["state"], "evaluating");
        assert!(run["time_left_seconds"].as_i64().unwrap() > 0);
        assert_eq!(run["checks"][0]["name"], "health");
        assert_eq!(run["checks"][0]["verdict"], "fail");

        // The page shows it, shapes and words.
        let page = app.page("/gates");
        let html = page.html();
        assert!(html.contains("green"), "{html}");
        assert!(html.contains("class=\"fail\""), "{html}");
        assert!(html.contains("<title>"), "{html}");

        // Green: it passes only once green for `steady` (2 s).
        let flipped = Instant::now();
        healthy.store(true, Ordering::SeqCst);
        let d = ended(app, &token, id);
        assert!(
            flipped.elapsed() >= Duration::from_secs(2),
            "passed too early"
        );
        assert_eq!(d["state"], "succeeded", "{d}");
        let s = d["gate_samples"].as_array().unwrap();
        let passes = s.iter().filter(|s| s["verdict"] == "pass").count();
        assert!(passes >= 3, "{s:?}");
        let first = &s[0];
        assert_eq!(first["check"], "health");
        assert!(
            first["request"]
                .as_str()
                .unwrap()
                .starts_with("GET http://127.0.0.1")
        );
        assert_eq!(first["value"], "503");
        assert!(first["body"].as_str().unwrap().contains("down"));
        let run = gate_run_of(app, &token, id).unwrap();
        assert_eq!(run["state"], "passed", "{run}");

        let page = app.page(&format!("/gates/{}", run["id"]));
        let html = page.html();
        assert!(html.contains("<circle class=\"pass\""), "{html}");
    });
}

#[test]
fn a_flapping_signal_never_holds_and_the_timeout_fails_the_deployment() {
    each_backend(|app| {
        let n = Arc::new(AtomicUsize::new(0));
        let url = serve(move |_| {
            if n.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                (200, r#"{"status":"healthy"}"#.into())
            } else {
                (500, r#"{"status":"down"}"#.into())
            }
        });
        let token = app.token("rm", Role::ReleaseManager);
        let stages = gated_stage(&http_gate(&url, "2s", "6s", ""));
        let id = deploy(app, &token, "flap", &stages);
        let d = ended(app, &token, id);
        assert_eq!(d["state"], "failed", "{d}");
        let error = d["error"].as_str().unwrap();
        assert!(error.contains("timed out"), "{error}");
        let s = d["gate_samples"].as_array().unwrap();
        assert!(s.iter().any(|s| s["verdict"] == "pass"), "{s:?}");
        assert!(s.iter().any(|s| s["verdict"] == "fail"), "{s:?}");
        let run = gate_run_of(app, &token, id).unwrap();
        assert_eq!(run["state"], "failed");
    });
}

#[test]
fn an_unreachable_url_is_inconclusive_and_asks() {
    each_backend(|app| {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let token = app.token("rm", Role::ReleaseManager);
        let gate = format!(
            r#"        delay: 0s
        interval: 1s
        timeout: 5s
        checks:
          - name: gone
            http: {{ url: "http://{closed}/health", timeout: 1s }}
            on_inconclusive: ask
"#
        );
        let id = deploy(app, &token, "gone", &gated_stage(&gate));
        let d = ended(app, &token, id);
        assert_eq!(d["state"], "failed", "{d}");
        let s = d["gate_samples"].as_array().unwrap();
        assert!(!s.is_empty());
        assert!(s.iter().all(|s| s["verdict"] == "inconclusive"), "{s:?}");
        assert!(
            s[0]["value"].as_str().unwrap().contains("unreachable"),
            "{s:?}"
        );
        let run = gate_run_of(app, &token, id).unwrap();
        assert!(
            run["question"].as_str().unwrap().contains("inconclusive"),
            "{run}"
        );
    });
}

#[test]
fn a_prometheus_check_compares_the_query_value_with_its_threshold() {
    each_backend(|app| {
        let url = serve(|path| {
            assert!(path.starts_with("/api/v1/query?query="), "{path}");
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"web"},"value":[1435781451.781,"0.004"]}]}}"#
                    .into(),
            )
        });
        let token = app.token("rm", Role::ReleaseManager);
        let gate = format!(
            r#"        delay: 0s
        interval: 1s
        timeout: 20s
        checks:
          - prometheus: {{ server: "{url}", query: "sum(rate(errors[5m]))", threshold: "< 0.01" }}
"#
        );
        let id = deploy(app, &token, "prom", &gated_stage(&gate));
        let d = ended(app, &token, id);
        assert_eq!(d["state"], "succeeded", "{d}");
        let s = d["gate_samples"].as_array().unwrap();
        assert_eq!(s[0]["verdict"], "pass", "{s:?}");
        assert_eq!(s[0]["value"], "0.004");
        assert!(
            s[0]["request"]
                .as_str()
                .unwrap()
                .contains("sum(rate(errors[5m]))")
        );
    });
}

#[test]
fn an_expression_error_is_reported_at_import_with_its_position() {
    each_backend(|app| {
        let repo = repo();
        let gate = r#"        checks:
          - http: { url: "http://127.0.0.1:9/health", success: "status == 200 &&& body.ok" }
"#;
        let yaml = pipeline("badexpr", &repo, &gated_stage(gate));
        let res = app.import(&yaml);
        assert_eq!(res.status(), 422);
        let text = res.text().unwrap();
        assert!(text.contains("success"), "{text}");
        assert!(text.contains("line 1, column"), "{text}");
        assert!(text.contains("invalid success expression"), "{text}");
    });
}

#[test]
fn a_restarted_server_resumes_a_gate_where_it_was() {
    for (label, db) in slipway::storage::test_databases() {
        let mut app = crate::helpers::spawn_app(label, db);
        let healthy = Arc::new(AtomicBool::new(false));
        let url = health_server(healthy.clone());
        let token = app.token("rm", Role::ReleaseManager);
        let stages = gated_stage(&http_gate(&url, "1s", "60s", ""));
        let id = deploy(&app, &token, "resume", &stages);
        wait_until("two samples", DEADLINE, || {
            (samples(&app, &token, id).len() >= 2).then_some(())
        });
        let before = gate_run_of(&app, &token, id).unwrap();
        app.restart();
        let token = app.token("rm2", Role::ReleaseManager);
        // The same run goes on (no second run), counting its rounds on.
        let rounds = before["rounds"].as_i64().unwrap();
        wait_until("more rounds after the restart", DEADLINE, || {
            let run = gate_run_of(&app, &token, id).unwrap();
            (run["rounds"].as_i64().unwrap() > rounds + 1).then_some(())
        });
        let after = gate_run_of(&app, &token, id).unwrap();
        assert_eq!(after["id"], before["id"]);
        assert_eq!(after["started_at"], before["started_at"]);
        healthy.store(true, Ordering::SeqCst);
        let d = ended(&app, &token, id);
        assert_eq!(d["state"], "succeeded", "{d}");
        let (_, all) = get_json(&app, &token, "/api/v1/gates");
        let runs = all["recent"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["deployment_id"] == id)
            .count();
        assert_eq!(runs, 1, "{all}");
    }
}

/// A user with a role, groups and an API token.
fn member(app: &TestApp, username: &str, role: Role, groups: &[&str]) -> String {
    use slipway::engine::users;
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    let mut conn = app.conn();
    users::create_user(
        &mut conn,
        users::NewLocalUser {
            username,
            role,
            groups: &groups,
            password: "a long test password",
        },
        "test",
    )
    .unwrap();
    users::create_token(&mut conn, username, "test", "test").unwrap()
}

/// The audit records with this action, oldest first.
fn audit(app: &TestApp, action: &str) -> Vec<slipway::storage::AuditEventRow> {
    let mut conn = app.conn();
    let mut rows: Vec<_> = slipway::storage::list_audit(&mut conn, None, 10_000)
        .unwrap()
        .into_iter()
        .filter(|r| r.action == action)
        .collect();
    rows.reverse();
    rows
}

/// Waits until the gate run of `deployment` satisfies `ready`.
fn run_when(
    app: &TestApp,
    token: &str,
    deployment: i64,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(what, DEADLINE, || {
        gate_run_of(app, token, deployment).filter(|r| ready(r))
    })
}

fn post(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    post_json(app, token, path, &body)
}

#[test]
fn a_release_manager_reevaluates_now_and_bypasses_with_a_recorded_reason() {
    each_backend(|app| {
        let url = serve(|_| (503, r#"{"status":"down"}"#.into()));
        let rm = app.token("rm", Role::ReleaseManager);
        let deployer = app.token("dev", Role::Deployer);
        // One sample now, the next in an hour: only "re-evaluate" samples sooner.
        let gate = format!(
            r#"        delay: 0s
        interval: 1h
        timeout: 2h
        checks:
          - name: health
            http: {{ url: "{url}/health", success: "status == 200" }}
"#
        );
        let id = deploy(app, &rm, "bypassed", &gated_stage(&gate));
        let run = run_when(app, &rm, id, "the first sample", |r| r["rounds"] == 1);
        let run_id = run["id"].as_i64().unwrap();

        let (status, v) = post(
            app,
            &deployer,
            &format!("/api/v1/gates/{run_id}/reevaluate"),
            json!({}),
        );
        assert_eq!(status, 403, "{v}");
        let res = app
            .client
            .post(app.url(&format!("/api/v1/gates/{run_id}/reevaluate")))
            .bearer_auth(&rm)
            .send()
            .unwrap();
        assert_eq!(res.status(), 202);
        wait_until("a second sample after re-evaluating", DEADLINE, || {
            (samples(app, &rm, id).len() >= 2).then_some(())
        });
        assert_eq!(audit(app, "gate.reevaluate").last().unwrap().actor, "rm");

        // A bypass needs a reason, and the release manager role.
        let bypass = format!("/api/v1/gates/{run_id}/bypass");
        let (status, v) = post(app, &rm, &bypass, json!({ "reason": "  " }));
        assert_eq!(status, 422, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("reason"),
            "{v}"
        );
        let (status, v) = post(app, &rm, &bypass, json!({}));
        assert!((400..500).contains(&status), "{status} {v}");
        let (status, v) = post(app, &deployer, &bypass, json!({ "reason": "hurry" }));
        assert_eq!(status, 403, "{v}");
        assert_eq!(gate_run_of(app, &rm, id).unwrap()["state"], "evaluating");

        let (status, v) = post(
            app,
            &rm,
            &bypass,
            json!({ "reason": "the status page is down, not the app" }),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["state"], "bypassed");
        assert_eq!(v["finished_by"], "rm");
        let d = ended(app, &rm, id);
        assert_eq!(d["state"], "succeeded", "{d}");
        let record = audit(app, "gate.bypass").pop().unwrap();
        assert_eq!(record.actor, "rm");
        assert!(
            record
                .detail
                .contains("the status page is down, not the app"),
            "{}",
            record.detail
        );
        // A second bypass of the ended run is a conflict, not a 500.
        let (status, _) = post(app, &rm, &bypass, json!({ "reason": "again" }));
        assert_eq!(status, 409);
    });
}

#[test]
fn command_checks_pass_on_exit_code_zero_and_the_evidence_is_on_the_deployment() {
    each_backend(|app| {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ready");
        let token = app.token("rm", Role::ReleaseManager);
        let gate = format!(
            r#"        delay: 0s
        interval: 1s
        timeout: 60s
        checks:
          - name: ready-file
            command: "echo checking; test -f {}"
"#,
            flag.display()
        );
        let id = deploy(app, &token, "commanded", &gated_stage(&gate));
        wait_until("a failing command sample", DEADLINE, || {
            samples(app, &token, id)
                .iter()
                .any(|s| s["verdict"] == "fail")
                .then_some(())
        });
        std::fs::write(&flag, "").unwrap();
        let d = ended(app, &token, id);
        assert_eq!(d["state"], "succeeded", "{d}");
        let s = d["gate_samples"].as_array().unwrap();
        let fail = s.iter().find(|s| s["verdict"] == "fail").unwrap();
        assert_eq!(fail["value"], "1", "{fail}");
        assert!(fail["body"].as_str().unwrap().contains("checking"));
        let pass = s.iter().rev().find(|s| s["verdict"] == "pass").unwrap();
        assert_eq!(pass["value"], "0", "{pass}");
        // The runs, with their checks, in the deployment's JSON.
        let gates = d["gates"].as_array().unwrap();
        assert_eq!(gates.len(), 1, "{d}");
        assert_eq!(gates[0]["state"], "passed");
        assert_eq!(gates[0]["phase"], "before");
        assert_eq!(gates[0]["checks"][0]["name"], "ready-file");

        // The deployment page shows every sample: time, check, verdict in
        // words with a symbol, value, request, duration.
        let page = app.page(d["url"].as_str().unwrap());
        let rows = crate::helpers::texts(&page, "section.gate-evidence tr.gate-sample");
        assert_eq!(rows.len(), s.len().min(50), "{rows:?}");
        assert!(
            rows[0].contains("ready-file") && rows[0].contains("● pass"),
            "{rows:?}"
        );
        assert!(rows.last().unwrap().contains("✕ fail"), "{rows:?}");
        assert!(
            rows.iter()
                .all(|r| r.contains(" ms") && r.contains("sh -c")),
            "{rows:?}"
        );
        let heading = crate::helpers::texts(&page, "section.gate-evidence h3");
        assert!(
            heading[0].contains("before the stage") && heading[0].contains("passed"),
            "{heading:?}"
        );
        let strips = crate::helpers::texts(&page, "section.gate-evidence svg title");
        assert!(!strips.is_empty());
    });
}

#[test]
fn an_extension_gate_on_the_stage_path_gets_json_and_decides_by_exit_code() {
    use std::os::unix::fs::PermissionsExt;
    each_backend(|app| {
        let bin = tempfile::tempdir().unwrap();
        let seen = bin.path().join("input.json");
        let script = format!(
            "#!/bin/sh\ncat > {}\necho \"error rate fine\"\nexit 0\n",
            seen.display()
        );
        let exe = bin.path().join("slipway-gate-errors");
        std::fs::write(&exe, script).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.path().display());
        let token = app.token("rm", Role::ReleaseManager);
        let stages = format!(
            r#"  - name: prod
    trigger: manual
    variables: {{ PATH: "{path}" }}
    gates:
      before:
        delay: 0s
        interval: 1s
        timeout: 60s
        checks:
          - check: errors
            with: {{ max: 0.01 }}
    tasks: [ {{ shell: "echo deployed" }} ]
"#
        );
        let id = deploy(app, &token, "extended-gate", &stages);
        let d = ended(app, &token, id);
        assert_eq!(d["state"], "succeeded", "{d}");
        let s = &d["gate_samples"][0];
        assert_eq!(s["verdict"], "pass", "{s}");
        assert_eq!(s["value"], "0");
        assert_eq!(s["request"], "slipway-gate-errors");
        assert!(s["body"].as_str().unwrap().contains("error rate fine"));
        let input: Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
        assert_eq!(input["pipeline"], "extended-gate", "{input}");
        assert_eq!(input["stage"], "prod");
        assert_eq!(input["deployment_id"], id);
        assert_eq!(input["phase"], "before");
        assert_eq!(input["with"]["max"], 0.01);
    });
}

#[test]
fn a_secret_header_reaches_the_server_but_the_evidence_shows_stars() {
    each_backend(|app| {
        const SECRET: &str = "s3cret-health-token-7781";
        let received = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = received.clone();
        let url = serve_requests(move |_, headers| {
            let auth = headers
                .iter()
                .find(|h| h.to_ascii_lowercase().starts_with("authorization:"))
                .cloned()
                .unwrap_or_default();
            log.lock().unwrap().push(auth.clone());
            if auth.ends_with(&format!("Bearer {SECRET}")) {
                (200, r#"{"status":"healthy"}"#.into())
            } else {
                (401, r#"{"status":"who are you"}"#.into())
            }
        });
        let token = app.token("rm", Role::ReleaseManager);
        let gate = format!(
            r#"        delay: 0s
        interval: 1s
        timeout: 60s
        checks:
          - name: health
            http:
              url: "{url}/health"
              headers: {{ Authorization: "Bearer ${{{{ secrets.HEALTH_TOKEN }}}}" }}
              success: "status == 200 && body.status == 'healthy'"
"#
        );
        let repo = repo();
        import(app, &pipeline("secretive", &repo, &gated_stage(&gate)));
        let res = app
            .client
            .put(app.url("/api/v1/pipelines/secretive/secrets/HEALTH_TOKEN"))
            .bearer_auth(&token)
            .json(&json!({ "value": SECRET }))
            .send()
            .unwrap();
        assert!(res.status().is_success(), "{}", res.text().unwrap());
        let version = build(app, &token, "secretive");
        let (status, v) = post(
            app,
            &token,
            "/api/v1/pipelines/secretive/stages/prod/deployments",
            json!({ "release": version }),
        );
        assert_eq!(status, 202, "{v}");
        let id = v["id"].as_i64().unwrap();
        let d = ended(app, &token, id);
        assert_eq!(d["state"], "succeeded", "{d}");
        // The server got the real value…
        assert!(
            received.lock().unwrap().iter().any(|h| h.ends_with(SECRET)),
            "{:?}",
            received.lock().unwrap()
        );
        // …what is stored and shown says `***`.
        let request = d["gate_samples"][0]["request"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(request.contains("Authorization: Bearer ***"), "{request}");
        let json_text = d.to_string();
        assert!(!json_text.contains(SECRET), "{json_text}");
        let stored: Vec<String> = {
            let mut conn = app.conn();
            slipway::storage::gates::samples_of_deployment(&mut conn, id)
                .unwrap()
                .into_iter()
                .map(|s| s.request)
                .collect()
        };
        assert!(
            stored
                .iter()
                .all(|r| r.contains("Bearer ***") && !r.contains(SECRET)),
            "{stored:?}"
        );
        let res = app.get(d["url"].as_str().unwrap());
        assert_eq!(res.status(), 200);
        let html = res.text().unwrap();
        assert!(html.contains("Authorization: Bearer ***"), "{html}");
        assert!(!html.contains(SECRET));
        let run = gate_run_of(app, &token, id).unwrap();
        let res = app.get(&format!("/gates/{}", run["id"]));
        assert!(!res.text().unwrap().contains(SECRET));
    });
}

#[test]
fn approvers_answer_an_inconclusive_gate_question_once() {
    each_backend(|app| {
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let rm = app.token("rm", Role::ReleaseManager);
        let alice = member(app, "alice", Role::Viewer, &[]);
        let bob = member(app, "bob", Role::Deployer, &["ops"]);
        let stages = format!(
            r#"  - name: prod
    trigger: manual
    approvals:
      before: {{ approvers: [alice, "group:ops"] }}
      order: after_gates
    gates:
      before:
        delay: 0s
        interval: 1s
        timeout: 120s
        checks:
          - name: gone
            http: {{ url: "http://{closed}/health", timeout: 1s }}
            on_inconclusive: ask
    tasks: [ {{ shell: "echo deployed" }} ]
"#
        );
        let id = deploy(app, &rm, "asking", &stages);
        let run = run_when(app, &rm, id, "a question", |r| r["question"].is_string());
        let run_id = run["id"].as_i64().unwrap();
        let answer = format!("/api/v1/gates/{run_id}/answer");

        // The inbox's list: approvers (directly or by group), not others.
        {
            let mut conn = app.conn();
            use slipway::engine::deploy::gates::questions::open_questions_for;
            let open = open_questions_for(&mut conn, "alice", &[]).unwrap();
            assert_eq!(open.len(), 1);
            assert_eq!(open[0].run_id, run_id);
            assert_eq!(open[0].deployment_id, id);
            assert!(open[0].question.contains("inconclusive"));
            assert_eq!(
                open_questions_for(&mut conn, "bob", &["ops".into()])
                    .unwrap()
                    .len(),
                1
            );
            assert!(open_questions_for(&mut conn, "rm", &[]).unwrap().is_empty());
        }

        // Not an approver; bad answers.
        let (status, v) = post(
            app,
            &rm,
            &answer,
            json!({ "answer": "pass", "comment": "x" }),
        );
        assert_eq!(status, 403, "{v}");
        let (status, v) = post(app, &alice, &answer, json!({ "answer": "pass" }));
        assert_eq!(status, 422, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("comment"),
            "{v}"
        );
        let (status, v) = post(app, &alice, &answer, json!({ "answer": "maybe" }));
        assert_eq!(status, 422, "{v}");

        // Continue, through the form on the gate's page.
        let session = crate::helpers::browser();
        assert_eq!(
            app.sign_in(&session, "alice", "a long test password", "/")
                .status(),
            303
        );
        let page = scraper::Html::parse_document(
            &session
                .get(app.url(&format!("/gates/{run_id}")))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        let csrf = crate::helpers::csrf_of(&page);
        let action = crate::helpers::attrs(&page, "#answer form", "action");
        assert_eq!(action, vec![format!("/gates/{run_id}/answer")]);
        let res = session
            .post(app.url(&action[0]))
            .form(&[
                ("csrf", csrf.as_str()),
                ("answer", "continue"),
                ("comment", ""),
            ])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        let run = gate_run_of(app, &rm, id).unwrap();
        assert_eq!(run["state"], "evaluating", "{run}");
        let record = audit(app, "gate.answer").pop().unwrap();
        assert_eq!(record.actor, "alice");
        assert!(
            record.detail.contains("answer=continue"),
            "{}",
            record.detail
        );

        // It keeps sampling and asks again; two approvers answer at once:
        // one answer wins, the other is told.
        run_when(app, &rm, id, "the question again", |r| {
            r["question"].is_string()
        });
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                post(
                    app,
                    &alice,
                    &answer,
                    json!({ "answer": "fail", "comment": "the health endpoint is gone" }),
                )
            });
            let b = s.spawn(|| {
                post(
                    app,
                    &bob,
                    &answer,
                    json!({ "answer": "pass", "comment": "known outage" }),
                )
            });
            (a.join().unwrap(), b.join().unwrap())
        });
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
        let d = ended_or_waiting(app, &rm, id);
        let answers = audit(app, "gate.answer");
        assert_eq!(answers.len(), 2, "one record per accepted answer");
        if a.0 == 200 {
            assert_eq!(d["state"], "failed", "{d}");
            assert!(
                d["error"].as_str().unwrap().contains("alice answered fail"),
                "{d}"
            );
        } else {
            // Passed: the approvals come after the gates.
            assert_eq!(d["state"], "waiting_for_approval", "{d}");
        }
        let (status, _) = post(app, &alice, &answer, json!({ "answer": "continue" }));
        assert_eq!(status, 409);
        let mut conn = app.conn();
        assert!(
            slipway::engine::deploy::gates::questions::open_questions_for(&mut conn, "alice", &[])
                .unwrap()
                .is_empty()
        );
    });
}

/// Waits until deployment `id` has ended or waits for approvals.
fn ended_or_waiting(app: &TestApp, token: &str, id: i64) -> Value {
    wait_until(&format!("deployment #{id} past its gate"), DEADLINE, || {
        let (_, v) = get_json(app, token, &format!("/api/v1/deployments/{id}"));
        (v["state"] != "evaluating_gates").then_some(v)
    })
}
