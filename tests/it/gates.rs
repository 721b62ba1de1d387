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
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
            let (status, body) = answer(&path);
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
fn health_server(healthy: Arc<AtomicBool>) -> String {
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
