//! Test harness: the real application on 127.0.0.1:0 with a fresh database
//! (SQLite in a temp dir, and a fresh PostgreSQL database), a client that
//! knows the routes, and HTML helpers.

use std::net::TcpListener;

use std::sync::mpsc;

use reqwest::blocking::{Client, Response};
use scraper::{Html, Selector};
use slipway::config::Settings;
use slipway::domain::Role;
use slipway::engine::users;
use slipway::storage::testing::{TestDb, test_databases};
use slipway::storage::{Db, DbConn};
use slipway::web::{self, AppState};

/// A running Slipway.
pub struct TestApp {
    pub backend: String,
    pub base: String,
    pub client: Client,
    pub db: Db,
    /// The key the server encrypts secrets with.
    pub secret_key: std::sync::Arc<slipway::engine::secrets::SecretKey>,
    /// An API token of the user `viewer` (role viewer), which [`TestApp::get`]
    /// and [`TestApp::page`] send: every page needs a signed-in user.
    pub viewer_token: String,
    /// The server's live pages' change hub (`engine::changes`).
    pub changes: slipway::engine::changes::Changes,
    handle: Option<actix_web::dev::ServerHandle>,
    thread: Option<std::thread::JoinHandle<()>>,
    _data: tempfile::TempDir,
    _db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(handle.stop(false));
                let _ = tx.send(());
            });
            let _ = rx.recv();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `f` once per backend: SQLite always, PostgreSQL when reachable
/// (mandatory under CI=true; otherwise skipped with a printed reason).
pub fn each_backend(f: impl Fn(&TestApp)) {
    for (label, db) in test_databases() {
        let app = spawn_app(label, db);
        f(&app);
    }
}

pub fn spawn_app(backend: String, test_db: TestDb) -> TestApp {
    spawn_app_with(backend, test_db, |_| {})
}

/// [`spawn_app`] with settings changed by `configure` first (SSO, public URL, …).
pub fn spawn_app_with(
    backend: String,
    test_db: TestDb,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let data = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut settings = Settings {
        listen: addr,
        data_dir: data.path().to_path_buf(),
        database_url: test_db.url.clone(),
        public_url: format!("http://{addr}"),
        oidc: None,
        router: Default::default(),
    };
    configure(&mut settings);
    let db = Db::connect(&settings.database_url, 8).expect("connect");
    db.run_migrations().expect("migrations");
    let viewer_token = {
        let mut conn = db.get().expect("conn");
        users::ensure_initial_admin(&mut conn, &settings.data_dir).expect("admin");
        users::create_user(
            &mut conn,
            users::NewLocalUser {
                username: "viewer",
                role: Role::Viewer,
                groups: &[],
                password: "a long test password",
            },
            "test",
        )
        .expect("viewer");
        users::create_token(&mut conn, "viewer", "tests", "test").expect("viewer token")
    };
    let (tx, rx) = mpsc::channel();
    let server_db = db.clone();
    let secret_key =
        std::sync::Arc::new(slipway::engine::secrets::SecretKey::generate().expect("secret key"));
    let server_key = secret_key.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let state = AppState::new(server_db, settings, server_key);
            web::oidc::start(&state)
                .await
                .expect("single sign-on discovery");
            let engine = state.engine.clone();
            engine.start().await.expect("engine");
            let server = web::server(state, listener).expect("server");
            tx.send((server.handle(), engine.changes().clone()))
                .expect("send handle");
            let _ = server.await;
            engine.shutdown().await;
        });
    });
    let (handle, changes) = rx.recv().expect("server handle");
    TestApp {
        changes,
        backend,
        base: format!("http://{addr}"),
        client: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(IDLE)
            .build()
            .expect("client"),
        db,
        secret_key,
        viewer_token,
        handle: Some(handle),
        thread: Some(thread),
        _data: data,
        _db: test_db,
    }
}

impl TestApp {
    /// The server's data directory (mirrors, workspaces, artifacts).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    /// Stops the server and its engine (as a shutdown would), then starts a
    /// new one on the same database, data directory and secret key, on a
    /// new port (`base` changes).
    pub fn restart(&mut self) {
        if let Some(handle) = self.handle.take() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(handle.stop(false));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let settings = Settings {
            listen: addr,
            data_dir: self._data.path().to_path_buf(),
            database_url: self._db.url.clone(),
            public_url: format!("http://{addr}"),
            oidc: None,
            router: Default::default(),
        };
        let (tx, rx) = mpsc::channel();
        let server_db = self.db.clone();
        let server_key = self.secret_key.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let state = AppState::new(server_db, settings, server_key);
                let engine = state.engine.clone();
                engine.start().await.expect("engine");
                let server = web::server(state, listener).expect("server");
                tx.send((server.handle(), engine.changes().clone()))
                    .expect("send handle");
                let _ = server.await;
                engine.shutdown().await;
            });
        });
        let (handle, changes) = rx.recv().expect("server handle");
        self.handle = Some(handle);
        self.changes = changes;
        self.thread = Some(thread);
        self.base = format!("http://{addr}");
    }

    /// Stops the server gracefully, as `slipway serve` does on SIGTERM
    /// (the live pages' streams are closed first); returns how long the
    /// server took to stop.
    pub fn stop_gracefully(&mut self) -> std::time::Duration {
        let start = std::time::Instant::now();
        self.changes.close();
        if let Some(handle) = self.handle.take() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(handle.stop(true));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        start.elapsed()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The URL of the server's database (for the CLI).
    pub fn database_url(&self) -> &str {
        &self._db.url
    }

    /// GET as the signed-in user `viewer` (by its API token).
    pub fn get(&self, path: &str) -> Response {
        self.get_with_token(path, &self.viewer_token)
    }

    /// GET without signing in: pages redirect to `/login`, the API says 401.
    pub fn get_anonymous(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().expect("GET")
    }

    pub fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .expect("GET")
    }

    /// GET a page that must answer 200 and parse its HTML.
    pub fn page(&self, path: &str) -> Html {
        let res = self.get(path);
        let status = res.status();
        let body = res.text().expect("body");
        assert_eq!(status, 200, "[{}] GET {path}: {body}", self.backend);
        Html::parse_document(&body)
    }

    pub fn conn(&self) -> impl std::ops::DerefMut<Target = DbConn> {
        self.db.get().expect("conn")
    }

    /// Sets a pipeline's secret (as `slipway secret set` does).
    pub fn set_secret(&self, pipeline: &str, name: &str, value: &str) {
        let mut conn = self.conn();
        slipway::engine::secrets::set_secret(
            &mut conn,
            &self.secret_key,
            pipeline,
            name,
            &secrecy::SecretString::from(value),
            "test",
        )
        .expect("set the secret");
    }

    /// A user with this role and an API token for them.
    pub fn token(&self, username: &str, role: Role) -> String {
        let mut conn = self.conn();
        users::create_user(
            &mut conn,
            users::NewLocalUser {
                username,
                role,
                groups: &[],
                password: "a long test password",
            },
            "test",
        )
        .expect("user");
        users::create_token(&mut conn, username, "test", "test").expect("token")
    }

    /// Imports YAML through the API as a release manager.
    pub fn import(&self, yaml: &str) -> Response {
        let token = self.manager_token();
        self.client
            .post(self.url("/api/v1/pipelines"))
            .bearer_auth(token)
            .header("Content-Type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .expect("POST")
    }

    fn manager_token(&self) -> String {
        let mut conn = self.conn();
        if slipway::storage::find_user_by_name(&mut conn, "manager")
            .expect("lookup")
            .is_none()
        {
            drop(conn);
            return self.token("manager", Role::ReleaseManager);
        }
        users::create_token(&mut conn, "manager", "again", "test").expect("token")
    }
}

/// The texts of every element matching `selector`, whitespace folded.
pub fn texts(html: &Html, selector: &str) -> Vec<String> {
    let sel = Selector::parse(selector).expect("selector");
    html.select(&sel)
        .map(|e| {
            e.text()
                .collect::<Vec<_>>()
                .join(" ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// The `attr` of every element matching `selector`.
pub fn attrs(html: &Html, selector: &str, attr: &str) -> Vec<String> {
    let sel = Selector::parse(selector).expect("selector");
    html.select(&sel)
        .filter_map(|e| e.value().attr(attr).map(str::to_string))
        .collect()
}

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

/// How long test clients keep an idle connection. The server closes idle
/// keep-alive connections after 5 s; on a loaded machine a request sent on
/// a connection idle for about that long can meet the server's close
/// ("connection reset"), so clients drop them well before.
const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// A browser-like client: keeps cookies, does not follow redirects.
pub fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(IDLE)
        .build()
        .expect("client")
}

/// The value of the first hidden `csrf` input of a page.
pub fn csrf_of(html: &Html) -> String {
    attrs(html, "input[name=csrf]", "value")
        .into_iter()
        .next()
        .expect("a csrf field")
}

impl TestApp {
    /// Signs `client` in through the login form; returns the answer.
    pub fn sign_in(&self, client: &Client, username: &str, password: &str, next: &str) -> Response {
        let page = client
            .get(self.url(&format!("/login?next={next}")))
            .send()
            .expect("GET /login")
            .text()
            .expect("body");
        let csrf = csrf_of(&Html::parse_document(&page));
        client
            .post(self.url("/login"))
            .form(&[
                ("username", username),
                ("password", password),
                ("csrf", csrf.as_str()),
                ("next", next),
            ])
            .send()
            .expect("POST /login")
    }

    /// A signed-in browser of a new local user with this role (password
    /// `<username>'s long password`).
    pub fn signed_in(&self, username: &str, role: Role) -> Client {
        let password = format!("{username}'s long password");
        self.user(username, role, &password);
        let client = browser();
        let res = self.sign_in(&client, username, &password, "/");
        assert_eq!(res.status(), 303, "[{}] sign in {username}", self.backend);
        client
    }

    /// A local user with a password.
    pub fn user(&self, username: &str, role: Role, password: &str) {
        let mut conn = self.conn();
        users::create_user(
            &mut conn,
            users::NewLocalUser {
                username,
                role,
                groups: &[],
                password,
            },
            "test",
        )
        .expect("user");
    }
}
