//! Crash safety with a real `slipway serve`: `kill -9` in the middle of a
//! deployment's task, restart, and the deployment shows `interrupted` (and
//! can be redeployed), a waiting one still waits, and nothing ran twice.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use slipway::domain::Role;
use slipway::engine::users;
use slipway::storage::{self, Db, testing::test_databases};

use crate::helpers::wait_until;

/// A `slipway serve` child, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` on a free port and waits for its `listening on` line.
fn serve(data: &Path, database_url: &str) -> (Server, String) {
    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_slipway"))
            .arg("--data-dir")
            .arg(data)
            .arg("--database-url")
            .arg(database_url)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("SLIPWAY_LISTEN")
            .env_remove("SLIPWAY_CONFIG")
            .env_remove("SLIPWAY_SECRET_KEY")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stderr = server.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut log = String::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            log.push_str(&line);
            log.push('\n');
            if let Some(rest) = line.split("listening on http://").nth(1) {
                // Keep draining so the child never blocks on a full pipe.
                std::thread::spawn(move || while rx.recv().is_ok() {});
                return (server, format!("http://{}", rest.trim()));
            }
        }
    }
    panic!("serve did not start: {log}");
}

struct Api {
    base: String,
    token: String,
    client: reqwest::blocking::Client,
}

impl Api {
    fn get(&self, path: &str) -> Value {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .unwrap();
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().unwrap()
    }

    fn post(&self, path: &str, body: &str, content_type: &str) -> (u16, Value) {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Content-Type", content_type)
            .body(body.to_string())
            .send()
            .unwrap();
        (res.status().as_u16(), res.json().unwrap())
    }

    fn deployment(&self, id: i64) -> Value {
        self.get(&format!("/api/v1/deployments/{id}"))
    }

    /// The deployment of `version` to `stage` once it is in `state`.
    fn wait_for(&self, pipeline: &str, version: &str, stage: &str, state: &str) -> Value {
        wait_until(
            &format!("{version} to be {state} in {stage}"),
            Duration::from_secs(60),
            || {
                let release = self
                    .client
                    .get(format!(
                        "{}/api/v1/pipelines/{pipeline}/releases/{version}",
                        self.base
                    ))
                    .bearer_auth(&self.token)
                    .send()
                    .ok()?;
                if release.status() != 200 {
                    return None;
                }
                let release: Value = release.json().ok()?;
                release["deployments"]
                    .as_array()?
                    .iter()
                    .find(|d| d["stage"] == stage && d["state"] == state)
                    .cloned()
            },
        )
    }
}

fn pids(pattern: &str) -> Vec<String> {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kill_9_during_a_deployment_interrupts_it_and_a_redeploy_works() {
    for (label, db) in test_databases() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let repo = super::repo();
        let ran = dir.path().join("ran");
        let pause = format!("sleep 7{}.25", super::rand_digits());
        let stages = format!(
            r#"  - name: dev
    trigger: {{ after: build }}
    variables: {{ RAN: "{ran}" }}
    tasks:
      - name: deploy
        shell: 'echo "$SLIPWAY_DEPLOYMENT_ID $SLIPWAY_ATTEMPT" >> "$RAN"; if [ "$SLIPWAY_ATTEMPT" = 1 ]; then {pause}; fi; echo done'
"#,
            ran = ran.display()
        );
        let yaml = super::pipeline("crashy", &repo, &stages);
        let waits = r#"  - name: signed-off
    trigger: { after: build }
    approvals:
      before: { approvers: [mara] }
"#;
        let waits = super::pipeline("waity", &repo, waits);

        let (mut server, base) = serve(&data, &db.url);
        let token = {
            let db = Db::connect(&db.url, 2).unwrap();
            let mut conn = db.get().unwrap();
            users::create_user(
                &mut conn,
                users::NewLocalUser {
                    username: "mara",
                    role: Role::ReleaseManager,
                    groups: &[],
                    password: "a long test password",
                },
                "test",
            )
            .unwrap();
            users::create_token(&mut conn, "mara", "test", "test").unwrap()
        };
        let api = Api {
            base,
            token,
            client: reqwest::blocking::Client::new(),
        };
        let (status, v) = api.post("/api/v1/pipelines", &yaml, "application/yaml");
        assert!(status == 201 || status == 200, "[{label}] {v}");
        let (status, v) = api.post("/api/v1/pipelines", &waits, "application/yaml");
        assert!(status == 201 || status == 200, "[{label}] {v}");
        for p in ["crashy", "waity"] {
            let (status, v) = api.post(
                &format!("/api/v1/pipelines/{p}/builds"),
                "{}",
                "application/json",
            );
            assert_eq!(status, 202, "[{label}] {v}");
        }

        let running = api.wait_for("crashy", "1.0.1", "dev", "running");
        let id = running["id"].as_i64().unwrap();
        wait_until("the task's process", Duration::from_secs(60), || {
            (!pids(&pause).is_empty()).then_some(())
        });
        let waiting = api.wait_for("waity", "1.0.1", "signed-off", "waiting_for_approval");

        // kill -9 in the middle of the task.
        server.0.kill().unwrap();
        server.0.wait().unwrap();
        // The task's own processes outlive a SIGKILL of the server: stop them here.
        for pid in pids(&pause) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }

        let (_server, base) = serve(&data, &db.url);
        let api = Api { base, ..api };
        let d = api.deployment(id);
        assert_eq!(d["state"], "interrupted", "[{label}] {d}");
        assert!(
            d["error"]
                .as_str()
                .unwrap()
                .contains("restarted while this deployment ran"),
            "{d}"
        );
        assert_eq!(d["tasks"][0]["state"], "interrupted", "{d}");
        // The waiting one still waits.
        let w = api.deployment(waiting["id"].as_i64().unwrap());
        assert_eq!(w["state"], "waiting_for_approval", "{w}");
        // Nothing ran twice.
        assert_eq!(
            std::fs::read_to_string(&ran).unwrap(),
            format!("{id} 1\n"),
            "[{label}]"
        );

        let (status, r) = api.post(
            &format!("/api/v1/deployments/{id}/redeploy"),
            "",
            "application/json",
        );
        assert_eq!(status, 202, "[{label}] {r}");
        assert_eq!(r["attempt"], 2);
        let again = r["id"].as_i64().unwrap();
        let done = wait_until("the redeploy", Duration::from_secs(60), || {
            let d = api.deployment(again);
            (d["state"] != "queued" && d["state"] != "running").then_some(d)
        });
        assert_eq!(done["state"], "succeeded", "[{label}] {done}");
        assert_eq!(
            std::fs::read_to_string(&ran).unwrap(),
            format!("{id} 1\n{again} 2\n")
        );
        let db = Db::connect(&db.url, 2).unwrap();
        let mut conn = db.get().unwrap();
        let starts = storage::list_audit(&mut conn, None, 5000)
            .unwrap()
            .into_iter()
            .filter(|r| r.subject == format!("deployment:crashy#{id}"))
            .map(|r| r.action)
            .collect::<Vec<_>>();
        assert_eq!(
            starts,
            // Newest first.
            vec![
                "deployment.interrupt",
                "deployment.start",
                "deployment.queue"
            ],
            "[{label}]"
        );
    }
}
