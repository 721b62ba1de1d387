//! The JSON API as a client uses it: import a definition, queue a build,
//! read it, wait for it to end, read its log.

use std::time::Duration;

use serde_json::Value;

use super::app::TestApp;
use super::wait::wait_until;

/// How long a build may take in these tests.
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
