//! [`TestApp`]: Slipway started through `slipway::app::Application` (the
//! one way to start it, as `slipway serve` does) on 127.0.0.1:0 over a
//! fresh database, restartable, with other instances on the same database.

use std::net::TcpListener;
use std::path::Path;

use reqwest::blocking::{Client, Response};
use scraper::Html;
use slipway::app::{Application, Options, Spawned};
use slipway::config::Settings;
use slipway::domain::Role;
use slipway::engine::runtime::EngineConfig;
use slipway::storage::testing::{TestDb, test_databases};
use slipway::storage::{Db, DbConn};

use super::people::user_with_token;

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
    /// What it was started with, for [`TestApp::restart`].
    settings: Settings,
    engine: EngineConfig,
    server: Option<Spawned>,
    _data: tempfile::TempDir,
    _db: TestDb,
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
    TestApp::start(backend, test_db, configure, EngineConfig::default())
}

/// [`spawn_app`] with an engine configured by `engine` (fast retries, …).
pub fn spawn_app_with_engine(backend: String, test_db: TestDb, engine: EngineConfig) -> TestApp {
    TestApp::start(backend, test_db, |_| {}, engine)
}

/// A port on 127.0.0.1 and the settings of a server there: this data
/// directory and database, its address as `public_url`.
pub fn bind(data_dir: &Path, database_url: &str) -> (TcpListener, Settings) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let settings = Settings {
        listen: addr,
        data_dir: data_dir.to_path_buf(),
        database_url: database_url.to_string(),
        public_url: format!("http://{addr}"),
        oidc: None,
        router: Default::default(),
    };
    (listener, settings)
}

/// Starts Slipway on `listener` (a runtime of `threads` workers).
pub fn launch(
    settings: Settings,
    listener: TcpListener,
    options: Options,
    threads: usize,
) -> Spawned {
    let options = Options {
        listener: Some(listener),
        ..options
    };
    Application::spawn(settings, options, threads)
        .unwrap_or_else(|e| panic!("Slipway starts: {e:#}"))
}

impl TestApp {
    fn start(
        backend: String,
        test_db: TestDb,
        configure: impl FnOnce(&mut Settings),
        engine: EngineConfig,
    ) -> TestApp {
        let data = tempfile::tempdir().expect("tempdir");
        let (listener, mut settings) = bind(data.path(), &test_db.url);
        configure(&mut settings);
        let secret_key = std::sync::Arc::new(
            slipway::engine::secrets::SecretKey::generate().expect("secret key"),
        );
        let options = Options {
            secret_key: Some(secret_key.clone()),
            engine: engine.clone(),
            ..Options::default()
        };
        let server = launch(settings.clone(), listener, options, 2);
        let db = server.db().clone();
        let viewer_token = {
            let mut conn = db.get().expect("conn");
            user_with_token(&mut conn, "viewer", Role::Viewer, &[])
        };
        TestApp {
            changes: server.changes().clone(),
            backend,
            base: format!("http://{}", server.address()),
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(super::people::IDLE)
                .build()
                .expect("client"),
            db,
            secret_key,
            viewer_token,
            settings,
            engine,
            server: Some(server),
            _data: data,
            _db: test_db,
        }
    }

    /// The server's data directory (mirrors, workspaces, artifacts).
    pub fn data_dir(&self) -> &std::path::Path {
        self._data.path()
    }

    /// Stops the server and its engine (as a shutdown would), then starts a
    /// new one on the same database, data directory and secret key, on a
    /// new port (`base` changes).
    pub fn restart(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.stop(false);
        }
        let (listener, mut settings) = bind(self.data_dir(), &self._db.url);
        let old_public_url = format!("http://{}", self.settings.listen);
        if self.settings.public_url != old_public_url {
            settings.public_url = self.settings.public_url.clone();
        }
        settings.oidc = self.settings.oidc.clone();
        settings.router = self.settings.router.clone();
        let options = Options {
            secret_key: Some(self.secret_key.clone()),
            engine: self.engine.clone(),
            ..Options::default()
        };
        let server = launch(settings.clone(), listener, options, 2);
        self.settings = settings;
        self.db = server.db().clone();
        self.changes = server.changes().clone();
        self.base = format!("http://{}", server.address());
        self.server = Some(server);
    }

    /// Stops the server gracefully, as `slipway serve` does on SIGTERM
    /// (the live pages' streams are closed first); returns how long the
    /// server took to stop.
    pub fn stop_gracefully(&mut self) -> std::time::Duration {
        let start = std::time::Instant::now();
        if let Some(mut server) = self.server.take() {
            server.stop(true);
        }
        start.elapsed()
    }

    /// Another instance of Slipway on this database (its own data
    /// directory `data_dir`, the same secret key), as a second server
    /// sharing the database would be; it stops when dropped.
    pub fn another_instance(&self, data_dir: &Path, engine: EngineConfig) -> Spawned {
        let (listener, settings) = bind(data_dir, &self._db.url);
        let options = Options {
            secret_key: Some(self.secret_key.clone()),
            engine,
            ..Options::default()
        };
        launch(settings, listener, options, 2)
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
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stops the server (at once) and its engine before the data
        // directory and the database go.
        self.server.take();
    }
}
