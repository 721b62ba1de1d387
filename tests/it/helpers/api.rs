//! The JSON API as a client uses it: import a definition, queue a build,
//! read it, wait for it to end, read its log; deploy a release, wait for
//! its deployment, read that log.

use std::time::Duration;

use serde_json::{Value, json};

use super::app::TestApp;
use super::wait::wait_until;

/// How long a build or a deployment may take in these tests.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The status and the JSON body of an answer.
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

/// Imports YAML through the API as a release manager; it must be accepted.
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

/// Builds the pipeline's `main` through the API; returns the release's version.
pub fn build(app: &TestApp, token: &str, pipeline: &str) -> String {
    let number = queue(app, token, pipeline, json!({}));
    let b = finished(app, token, pipeline, number);
    assert_eq!(b["state"], "succeeded", "[{}] {b}", app.backend);
    b["release"].as_str().unwrap().to_string()
}

/// A deployment's JSON.
pub fn deployment(app: &TestApp, token: &str, id: i64) -> Value {
    let (status, v) = get_json(app, token, &format!("/api/v1/deployments/{id}"));
    assert_eq!(status, 200, "{v}");
    v
}

/// Whether a deployment in `state` has ended.
fn is_ended(state: &str) -> bool {
    !matches!(
        state,
        "queued" | "waiting_for_approval" | "evaluating_gates" | "running"
    )
}

/// Waits until deployment `id` ended; returns its JSON.
pub fn ended(app: &TestApp, token: &str, id: i64) -> Value {
    wait_until(&format!("deployment #{id} to end"), DEADLINE, || {
        let v = deployment(app, token, id);
        is_ended(v["state"].as_str().unwrap()).then_some(v)
    })
}

/// Waits until deployment `id` is in `state`.
pub fn in_state(app: &TestApp, token: &str, id: i64, state: &str) -> Value {
    wait_until(&format!("deployment #{id} to be {state}"), DEADLINE, || {
        let v = deployment(app, token, id);
        (v["state"] == state).then_some(v)
    })
}

/// The deployments of a release (oldest first), from the release API.
pub fn deployments_of(app: &TestApp, token: &str, pipeline: &str, version: &str) -> Vec<Value> {
    let (status, v) = get_json(
        app,
        token,
        &format!("/api/v1/pipelines/{pipeline}/releases/{version}"),
    );
    assert_eq!(status, 200, "{v}");
    v["deployments"].as_array().unwrap().clone()
}

/// Waits until the release has a deployment to `stage`; returns its id.
pub fn deployment_to(
    app: &TestApp,
    token: &str,
    pipeline: &str,
    version: &str,
    stage: &str,
) -> i64 {
    wait_until(
        &format!("a deployment of {version} to {stage}"),
        DEADLINE,
        || {
            deployments_of(app, token, pipeline, version)
                .into_iter()
                .rev()
                .find(|d| d["stage"] == stage)
                .map(|d| d["id"].as_i64().unwrap())
        },
    )
}

/// Deploys over the API; returns the status and body.
pub fn deploy(
    app: &TestApp,
    token: &str,
    pipeline: &str,
    stage: &str,
    body: Value,
) -> (u16, Value) {
    post_json(
        app,
        token,
        &format!("/api/v1/pipelines/{pipeline}/stages/{stage}/deployments"),
        &body,
    )
}

/// The whole log of a deployment as text.
pub fn log_of(app: &TestApp, token: &str, id: i64) -> String {
    let (status, v) = get_json(app, token, &format!("/api/v1/deployments/{id}/log"));
    assert_eq!(status, 200, "{v}");
    v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect()
}

impl TestApp {
    /// Imports YAML through the API as a release manager.
    pub fn import(&self, yaml: &str) -> reqwest::blocking::Response {
        let token = self.manager_token();
        self.client
            .post(self.url("/api/v1/pipelines"))
            .bearer_auth(token)
            .header("Content-Type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .expect("POST")
    }
}
