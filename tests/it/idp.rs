//! A real OpenID provider and a real browser for the sign-in tests.
//!
//! - [`Idp`] runs `node tests/idp/idp.mjs PORT CLIENT_ID SECRET REDIRECT_URI`
//!   (npm `oidc-provider`, installed by `npm ci --prefix tests/idp`) on
//!   127.0.0.1 and waits for its discovery document.
//! - [`Browser`] runs `chromedriver` on a free port and a headless Chromium
//!   with a fresh profile, driven over WebDriver by `fantoccini`.
//!
//! Both are skipped with a printed reason when Node.js, the npm packages,
//! Chromium or chromedriver are missing, unless `CI=true`, where they are
//! mandatory (`.ci/run` installs them).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use scraper::Html;
use secrecy::SecretString;
use slipway::config::OidcSettings;
use slipway::storage::testing::test_databases;

use crate::helpers::{TestApp, attrs, spawn_app_with};

pub const CLIENT_ID: &str = "slipway-tests";
pub const CLIENT_SECRET: &str = "a-client-secret-for-the-tests-only";

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `Ok` when `what` can run; otherwise prints why the test is skipped (or
/// fails under CI) and returns `false`.
pub fn available(what: &str, check: Result<(), String>) -> bool {
    match check {
        Ok(()) => true,
        Err(reason) if under_ci() => panic!("{what} is required under CI=true: {reason}"),
        Err(reason) => {
            eprintln!(
                "skipped: {what} is not available here ({reason}); CI=true makes it mandatory"
            );
            false
        }
    }
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn idp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/idp")
}

/// Whether `node` and `tests/idp/node_modules` are there.
pub fn idp_check() -> Result<(), String> {
    if on_path("node").is_none() {
        return Err("`node` is not on the PATH (apt-get install nodejs npm)".into());
    }
    if !idp_dir().join("node_modules/oidc-provider").is_dir() {
        return Err("tests/idp/node_modules is missing (run `npm ci --prefix tests/idp`)".into());
    }
    Ok(())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running test identity provider. Killed when dropped.
pub struct Idp {
    pub issuer: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Idp {
    /// Starts the provider with Slipway's client and `redirect_uri`.
    pub fn start(redirect_uri: &str) -> Idp {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("idp.log");
        let port = free_port();
        let out = std::fs::File::create(&log).expect("idp log");
        let child = Command::new("node")
            .arg(idp_dir().join("idp.mjs"))
            .arg(port.to_string())
            .arg(CLIENT_ID)
            .arg(CLIENT_SECRET)
            .arg(redirect_uri)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start node tests/idp/idp.mjs");
        let mut idp = Idp {
            issuer: format!("http://127.0.0.1:{port}"),
            child,
            log,
            _dir: dir,
        };
        let discovery = format!("{}/.well-known/openid-configuration", idp.issuer);
        let client = Client::new();
        let start = Instant::now();
        loop {
            if let Ok(res) = client.get(&discovery).send()
                && res.status() == 200
            {
                return idp;
            }
            if let Ok(Some(status)) = idp.child.try_wait() {
                panic!("the test IdP exited ({status}): {}", idp.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the test IdP did not answer {discovery}: {}",
                idp.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Slipway's SSO settings for this provider.
    pub fn settings(&self) -> OidcSettings {
        OidcSettings {
            issuer: self.issuer.clone(),
            client_id: CLIENT_ID.into(),
            client_secret: SecretString::from(CLIENT_SECRET),
            groups_claim: "groups".into(),
        }
    }
}

/// Runs `f` once per backend with Slipway configured for SSO through a
/// fresh test IdP; skipped (or failed under CI) without Node.js.
pub fn each_backend_with_sso(f: impl Fn(&TestApp, &Idp)) {
    if !available("the test OpenID provider", idp_check()) {
        return;
    }
    for (label, db) in test_databases() {
        let mut idp = None;
        let app = spawn_app_with(label, db, |settings| {
            let started = Idp::start(&OidcSettings::redirect_uri(&settings.public_url));
            settings.oidc = Some(started.settings());
            idp = Some(started);
        });
        let idp = idp.expect("idp");
        f(&app, &idp);
        drop(app);
    }
}

/// Resolves a `Location` against the URL it answered.
fn resolve(base: &str, location: &str) -> String {
    reqwest::Url::parse(base)
        .and_then(|b| b.join(location))
        .expect("a URL")
        .to_string()
}

fn location(res: &Response) -> String {
    res.headers()["location"]
        .to_str()
        .expect("location")
        .to_string()
}

/// What a person does at the provider's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtProvider<'a> {
    /// Sign in with this login name, and consent.
    SignIn(&'a str),
    /// Press "Cancel" on the sign-in form.
    Cancel,
}

/// Walks a sign-in through the provider with plain HTTP (cookies kept,
/// redirects followed by hand) from `start` (a Slipway URL) until the
/// provider sends the browser back to Slipway's callback; returns the
/// callback's answer, its URL, and the provider's forms shown on the way
/// (`login`, `consent`).
pub fn through_provider(
    app: &TestApp,
    client: &Client,
    start: &str,
    person: AtProvider<'_>,
) -> (Response, String, Vec<String>) {
    let callback = app.url("/auth/oidc/callback");
    let mut prompts = Vec::new();
    let mut url = resolve(&app.base, start);
    let mut res = client.get(&url).send().expect("GET");
    for _ in 0..20 {
        if url.starts_with(&callback) {
            return (res, url, prompts);
        }
        if res.status().is_redirection() {
            url = resolve(&url, &location(&res));
            res = client.get(&url).send().expect("GET");
            continue;
        }
        let status = res.status();
        let body = res.text().expect("body");
        assert_eq!(status, 200, "{url}: {body}");
        let html = Html::parse_document(&body);
        let prompt = attrs(&html, "input[name=prompt]", "value");
        let action = attrs(&html, "form[method=post]", "action")
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("a form at {url}: {body}"));
        let submit = resolve(&url, &action);
        prompts.extend(prompt.first().cloned());
        match (prompt.first().map(String::as_str), person) {
            (Some("login"), AtProvider::Cancel) => {
                let abort = attrs(&html, "a[href*='/abort']", "href");
                url = resolve(&url, &abort[0]);
                res = client.get(&url).send().expect("GET abort");
            }
            (Some("login"), AtProvider::SignIn(login)) => {
                res = client
                    .post(&submit)
                    .form(&[
                        ("prompt", "login"),
                        ("login", login),
                        ("password", "any password"),
                    ])
                    .send()
                    .expect("POST login");
            }
            (Some("consent"), _) => {
                res = client
                    .post(&submit)
                    .form(&[("prompt", "consent")])
                    .send()
                    .expect("POST consent");
            }
            other => panic!("unexpected page at {url} ({other:?}): {body}"),
        }
        url = submit;
    }
    panic!("the sign-in did not come back to Slipway")
}

/// Whether `chromium` and `chromedriver` are there.
pub fn browser_check() -> Result<(), String> {
    if chromium().is_none() {
        return Err("`chromium` is not on the PATH (apt-get install chromium)".into());
    }
    if on_path("chromedriver").is_none() {
        return Err("`chromedriver` is not on the PATH (apt-get install chromium-driver)".into());
    }
    Ok(())
}

fn chromium() -> Option<PathBuf> {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| on_path("chromium"))
        .or_else(|| on_path("chromium-browser"))
}

/// chromedriver plus a headless Chromium with a fresh profile, and a
/// runtime to drive it from synchronous tests. Closed when dropped.
pub struct Browser {
    pub rt: tokio::runtime::Runtime,
    pub client: fantoccini::Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let base = format!("http://127.0.0.1:{port}");
        let status = Client::new();
        let start = Instant::now();
        while status
            .get(format!("{base}/status"))
            .send()
            .map_or(true, |r| r.status() != 200)
        {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("profile");
        let binary = chromium().expect("chromium");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": binary,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt
            .block_on(
                fantoccini::ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&base),
            )
            .expect("a WebDriver session");
        Browser {
            rt,
            client,
            driver,
            _profile: profile,
        }
    }

    pub fn goto(&self, url: &str) {
        self.rt.block_on(self.client.goto(url)).expect("goto");
    }

    pub fn url(&self) -> reqwest::Url {
        let url = self.rt.block_on(self.client.current_url()).expect("url");
        reqwest::Url::parse(url.as_str()).expect("url")
    }

    pub fn html(&self) -> Html {
        Html::parse_document(&self.rt.block_on(self.client.source()).expect("source"))
    }

    /// Waits for an element matching `css` to be on the page.
    pub fn wait_for(&self, css: &str) -> fantoccini::elements::Element {
        self.rt
            .block_on(
                self.client
                    .wait()
                    .at_most(Duration::from_secs(20))
                    .for_element(fantoccini::Locator::Css(css)),
            )
            .unwrap_or_else(|e| panic!("no `{css}` at {}: {e}\n{}", self.url(), self.html().html()))
    }

    pub fn click(&self, css: &str) {
        let element = self.wait_for(css);
        self.rt.block_on(element.click()).expect("click");
    }

    pub fn fill(&self, css: &str, text: &str) {
        let element = self.wait_for(css);
        self.rt.block_on(element.send_keys(text)).expect("type");
    }

    /// Waits until the page's URL satisfies `f`.
    pub fn wait_for_url(&self, what: &str, f: impl Fn(&reqwest::Url) -> bool) -> reqwest::Url {
        let start = Instant::now();
        loop {
            let url = self.url();
            if f(&url) {
                return url;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the browser never got to {what}; it is at {url}:\n{}",
                self.html().html()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let client = self.client.clone();
        let _ = self.rt.block_on(client.close());
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
