//! The slots' test harness: the app a release ships (a small Python HTTP
//! server), Slipway with its slot router restartable on the same data and
//! database (started through `crate::helpers::launch`, as every test
//! server is), and a load generator through the router.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use slipway::app::{Options, Router, Spawned};
use slipway::domain::Role;
use slipway::engine::builds::artifacts;
use slipway::engine::runtime::Engine;
use slipway::engine::slots::{SlotDeploy, SlotDeployed, SwapOutcome};
use slipway::engine::{EngineError, pipelines, users};
use slipway::storage::testing::{TestDb, test_databases};
use slipway::storage::{self, Db, NewArtifact, NewRelease};

/// The app: answers `/` with its release, `/health` with 200 (500 when the
/// release ships a file `broken`), `/headers` with the forwarded headers,
/// `/env` with its settings, `/slow` after 300 ms, and exits on `/crash`.
pub const SERVER_PY: &str = r#"import os, sys, time, json, http.server
here = os.getcwd()
version = open(os.path.join(here, "version.txt")).read().strip()
broken = os.path.exists(os.path.join(here, "broken"))
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path == "/health":
            self.answer(500 if broken else 200, "broken\n" if broken else "ok\n")
        elif self.path == "/crash":
            os._exit(3)
        elif self.path == "/headers":
            self.answer(200, json.dumps({k.lower(): v for k, v in self.headers.items()}))
        elif self.path == "/env":
            keys = ["PORT", "SLIPWAY_APP", "SLIPWAY_SLOT", "SLIPWAY_RELEASE", "GREETING", "DATABASE"]
            self.answer(200, json.dumps({k: os.environ.get(k) for k in keys}))
        elif self.path == "/slow":
            time.sleep(0.3)
            self.answer(200, "release " + version + "\n")
        else:
            self.answer(200, "release " + version + "\n")
    def log_message(self, fmt, *args):
        sys.stderr.write("request " + (fmt % args) + "\n")
print("listening on", os.environ["PORT"], flush=True)
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
"#;

pub const RUN_SH: &str =
    "#!/bin/sh\nset -eu\ncd \"$(dirname \"$0\")\"\nexec python3 app/server.py\n";

pub const PIPELINE: &str = r#"pipeline: shop-web
source: { repo: /srv/git/shop, branch: main }
version: "1.0.{build}"
apps:
  - name: shop
    start: "./run.sh"
    health: /health
    slots: [staging, production]
    settings:
      GREETING: hello
      DATABASE: { value: slot-database, sticky: true }
build:
  tasks: [ { shell: "true" } ]
  artifacts: [ "**" ]
stages:
  - name: staging
    trigger: manual
    environment: { slot: { app: shop, name: staging } }
    tasks: [ { deploy_slot: { app: shop, slot: staging } } ]
  - name: production
    trigger: { after: staging }
    environment: { slot: { app: shop, name: production } }
    tasks: [ { swap_slots: { app: shop, from: staging, to: production } } ]
"#;

/// Slipway with its slot router, restartable on the same data and database.
pub struct Slipway {
    pub label: String,
    pub db: Db,
    pub data: tempfile::TempDir,
    database_url: String,
    pub router_port: u16,
    /// The router's socket, bound before the first start.
    router_listener: Option<TcpListener>,
    running: Option<Running>,
    _test_db: TestDb,
}

pub struct Running {
    pub base: String,
    pub engine: Engine,
    rt: tokio::runtime::Handle,
    server: Spawned,
}

impl Slipway {
    pub fn new(label: String, test_db: TestDb) -> Slipway {
        Slipway::with(label, test_db, |conn, _, _| {
            let definition = pipelines::parse(PIPELINE, "shop.yaml").unwrap();
            pipelines::import(conn, definition, None, "test", None).unwrap();
        })
    }

    /// A fresh Slipway whose database `setup` fills first (given the data
    /// directory and the router's address, bound already), then started.
    pub fn with(
        label: String,
        test_db: TestDb,
        setup: impl FnOnce(&mut storage::DbConn, &std::path::Path, SocketAddr),
    ) -> Slipway {
        let data = tempfile::tempdir().unwrap();
        let (_, settings) = crate::helpers::bind(data.path(), &test_db.url);
        let db = slipway::app::open_db(&settings).unwrap();
        let router = TcpListener::bind("127.0.0.1:0").unwrap();
        let router_addr = router.local_addr().unwrap();
        {
            let mut conn = db.get().unwrap();
            users::ensure_initial_admin(&mut conn, data.path()).unwrap();
            setup(&mut conn, data.path(), router_addr);
        }
        let mut slipway = Slipway {
            label,
            db,
            database_url: test_db.url.clone(),
            data,
            router_port: router_addr.port(),
            router_listener: Some(router),
            running: None,
            _test_db: test_db,
        };
        slipway.start();
        slipway
    }

    /// Starts Slipway: the web server, the engine (which starts the slots
    /// again) and the router (on the port it had, if it had one).
    pub fn start(&mut self) {
        let router = match self.router_listener.take() {
            Some(router) => router,
            None => TcpListener::bind(("127.0.0.1", self.router_port)).unwrap(),
        };
        self.router_port = router.local_addr().unwrap().port();
        let (listener, settings) = crate::helpers::bind(self.data.path(), &self.database_url);
        let options = Options {
            router: Router::Listener(router),
            ..Options::default()
        };
        let server = crate::helpers::launch(settings, listener, options, 3);
        self.running = Some(Running {
            base: format!("http://{}", server.address()),
            engine: server.engine().clone(),
            rt: server.runtime().clone(),
            server,
        });
    }

    /// Stops the server and the engine (slot processes stop too).
    pub fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.server.stop(true);
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("Slipway runs")
    }

    pub fn router(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.router_port))
    }

    /// Stores a release whose artifacts are the app (`broken` makes its
    /// health check answer 500).
    pub fn release(&self, version: &str, broken: bool) {
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(work.path().join("app")).unwrap();
        std::fs::write(work.path().join("app/server.py"), SERVER_PY).unwrap();
        std::fs::write(work.path().join("run.sh"), RUN_SH).unwrap();
        std::fs::write(work.path().join("version.txt"), version).unwrap();
        if broken {
            std::fs::write(work.path().join("broken"), "yes").unwrap();
        }
        let mut files = vec!["app/server.py", "run.sh", "version.txt"];
        if broken {
            files.push("broken");
        }
        let stored: Vec<NewArtifact> = files
            .iter()
            .map(|path| {
                let found = artifacts::FoundArtifact {
                    path: path.to_string(),
                    file: work.path().join(path),
                };
                let s = artifacts::store(self.data.path(), &found).unwrap();
                NewArtifact {
                    path: s.path,
                    sha256: s.sha256,
                    size: s.size as i64,
                }
            })
            .collect();
        let mut conn = self.db.get().unwrap();
        let p = storage::find_pipeline(&mut conn, "shop-web")
            .unwrap()
            .unwrap();
        let revision = storage::current_revision(&mut conn, p.id).unwrap();
        storage::insert_release(
            &mut conn,
            &NewRelease {
                pipeline_id: p.id,
                version: version.into(),
                build_id: None,
                revision_id: revision.id,
                commit_sha: format!("{:0>40}", version.replace('.', "")),
                branch: "main".into(),
                message: format!("release {version}"),
                author: "Mara <mara@shop.example>".into(),
                fixes_release_id: None,
            },
            &stored,
        )
        .unwrap();
    }

    /// Records that `version` succeeded in `stage` (as the pipeline would
    /// have), for tests that put releases into slots directly.
    pub fn passed(&self, stage: &str, version: &str) {
        let mut conn = self.db.get().unwrap();
        let p = storage::find_pipeline(&mut conn, "shop-web")
            .unwrap()
            .unwrap();
        let r = storage::find_release(&mut conn, p.id, version)
            .unwrap()
            .unwrap();
        storage::insert_deployment(
            &mut conn,
            &storage::NewDeployment {
                pipeline_id: p.id,
                release_id: r.id,
                stage: stage.into(),
                state: slipway::domain::DeploymentState::Succeeded,
                trigger: "manual".into(),
                requested_by: "test".into(),
                reason: None,
            },
        )
        .unwrap();
    }

    /// Deploys `version` into `slot` of the app `shop` (the health check
    /// waits up to 10 s).
    pub fn deploy(&self, slot: &str, version: &str) -> Result<SlotDeployed, EngineError> {
        // Long enough for the app to start on a loaded machine.
        self.deploy_within(slot, version, Duration::from_secs(10))
    }

    /// [`Slipway::deploy`] with the health check's time limit.
    pub fn deploy_within(
        &self,
        slot: &str,
        version: &str,
        health_timeout: Duration,
    ) -> Result<SlotDeployed, EngineError> {
        let running = self.running();
        let engine = running.engine.clone();
        let request = SlotDeploy {
            app: "shop".into(),
            slot: slot.into(),
            release: version.into(),
            artifacts_dir: None,
            health_timeout: Some(health_timeout),
            actor: "test".into(),
        };
        running
            .rt
            .block_on(async move { engine.slots().deploy_to_slot(request, None).await })
    }

    pub fn swap(&self, from: &str, to: &str) -> Result<SwapOutcome, EngineError> {
        let running = self.running();
        let engine = running.engine.clone();
        let (from, to) = (from.to_string(), to.to_string());
        running
            .rt
            .block_on(async move { engine.slots().swap("shop", &from, &to, "test", None).await })
    }

    /// A keep-alive client that resolves every `*.localhost` name used here
    /// (and in `demo.rs`) to the router (127.0.0.1).
    pub fn client(&self) -> reqwest::blocking::Client {
        let mut builder = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(4);
        for host in [
            "shop.localhost",
            "shop-production.localhost",
            "shop-staging.localhost",
            "nope.localhost",
            "kite-dev.localhost",
            "space-game.localhost",
            "space-game-dev.localhost",
            "space-game-test.localhost",
            "space-game-staging.localhost",
            "space-game-production.localhost",
        ] {
            builder = builder.resolve(host, self.router());
        }
        builder.build().unwrap()
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}.localhost:{}{path}", self.router_port)
    }

    /// `GET http://HOST.localhost:ROUTER/PATH`: (status, body).
    pub fn get(&self, client: &reqwest::blocking::Client, host: &str, path: &str) -> (u16, String) {
        match client.get(self.url(host, path)).send() {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    }

    pub fn slot_row(&self, slot: &str) -> storage::SlotRow {
        let mut conn = self.db.get().unwrap();
        let (app, _) = storage::slots::find_app(&mut conn, "shop")
            .unwrap()
            .unwrap();
        storage::slots::find_slot(&mut conn, app.id, slot)
            .unwrap()
            .unwrap()
    }
}

/// The API, as a client with a bearer token sees it.
impl Slipway {
    pub fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// `GET /api/v1…`: (status, JSON).
    pub fn get_json(&self, token: &str, path: &str) -> (u16, serde_json::Value) {
        let res = self
            .http()
            .get(format!("{}{path}", self.running().base))
            .bearer_auth(token)
            .send()
            .unwrap();
        crate::helpers::json(res)
    }

    /// `POST /api/v1…` with a JSON body: (status, JSON).
    pub fn post_json(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let res = self
            .http()
            .post(format!("{}{path}", self.running().base))
            .bearer_auth(token)
            .json(body)
            .send()
            .unwrap();
        crate::helpers::json(res)
    }

    /// Builds the pipeline's `main` through the API (as "Build now" does);
    /// returns the release's version.
    pub fn build(&self, token: &str, pipeline: &str) -> String {
        let (status, queued) = self.post_json(
            token,
            &format!("/api/v1/pipelines/{pipeline}/builds"),
            &serde_json::json!({}),
        );
        assert_eq!(status, 202, "[{}] {queued}", self.label);
        let number = queued["number"].as_i64().unwrap();
        let path = format!("/api/v1/pipelines/{pipeline}/builds/{number}");
        let build = crate::helpers::wait_until(
            &format!("build #{number}"),
            Duration::from_secs(60),
            || {
                let (_, b) = self.get_json(token, &path);
                (b["state"] != "queued" && b["state"] != "running").then_some(b)
            },
        );
        assert_eq!(build["state"], "succeeded", "[{}] {build}", self.label);
        build["release"].as_str().unwrap().to_string()
    }

    /// Waits until release `version` has a deployment to `stage`; returns its id.
    pub fn deployment_to(&self, token: &str, pipeline: &str, version: &str, stage: &str) -> i64 {
        let path = format!("/api/v1/pipelines/{pipeline}/releases/{version}");
        crate::helpers::wait_until(
            &format!("a deployment of {version} to {stage}"),
            Duration::from_secs(60),
            || {
                let (_, release) = self.get_json(token, &path);
                release["deployments"]
                    .as_array()?
                    .iter()
                    .rev()
                    .find(|d| d["stage"] == stage)
                    .and_then(|d| d["id"].as_i64())
            },
        )
    }

    /// Waits until deployment `id` is in one of `states`; returns its JSON.
    pub fn deployment_in(&self, token: &str, id: i64, states: &[&str]) -> serde_json::Value {
        crate::helpers::wait_until(
            &format!("deployment #{id} to be one of {states:?}"),
            Duration::from_secs(90),
            || {
                let (_, d) = self.get_json(token, &format!("/api/v1/deployments/{id}"));
                states.iter().any(|s| d["state"] == *s).then_some(d)
            },
        )
    }

    /// Waits until deployment `id` ended; returns its JSON.
    pub fn deployment_ended(&self, token: &str, id: i64) -> serde_json::Value {
        self.deployment_in(
            token,
            id,
            &[
                "succeeded",
                "failed",
                "canceled",
                "rejected",
                "superseded",
                "interrupted",
            ],
        )
    }

    /// The whole log of deployment `id`.
    pub fn deployment_log(&self, token: &str, id: i64) -> String {
        let (status, log) = self.get_json(token, &format!("/api/v1/deployments/{id}/log"));
        assert_eq!(status, 200, "{log}");
        log["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Slipway {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn each(f: impl Fn(&mut Slipway)) {
    for (label, db) in test_databases() {
        let mut slipway = Slipway::new(label, db);
        f(&mut slipway);
    }
}

/// Waits until `cond` holds, at most `secs`.
pub fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One answer of the load generator.
#[derive(Debug, Clone)]
pub struct Sample {
    pub started: Instant,
    pub status: u16,
    pub body: String,
}

/// Sends GETs to `host` through the router on `threads` keep-alive
/// connections until stopped (at most 60 s or 50,000 requests each).
pub struct Load {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<Vec<Sample>>>,
}

impl Load {
    pub fn start(slipway: &Slipway, host: &str, path: &str, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (client, url, stop) = (slipway.client(), slipway.url(host, path), stop.clone());
                let count = count.clone();
                std::thread::spawn(move || {
                    let began = Instant::now();
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::SeqCst)
                        && samples.len() < 50_000
                        && began.elapsed() < Duration::from_secs(60)
                    {
                        let started = Instant::now();
                        let (status, body) = match client.get(&url).send() {
                            Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
                            Err(e) => (0, e.to_string()),
                        };
                        samples.push(Sample {
                            started,
                            status,
                            body,
                        });
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    samples
                })
            })
            .collect();
        Load {
            stop,
            count,
            threads,
        }
    }

    /// Waits until `more` further answers came back (at most 30 s).
    pub fn wait_for(&self, more: usize) {
        let target = self.count.load(Ordering::SeqCst) + more;
        wait_until("the load generator's answers", 30, || {
            self.count.load(Ordering::SeqCst) >= target
        });
    }

    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    }
}

pub fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| s.status != 200).collect()
}

/// A user with this role and an API token for them.
pub fn token(s: &Slipway, name: &str, role: Role) -> String {
    crate::helpers::user_with_token(&mut s.db.get().unwrap(), name, role, &[])
}
