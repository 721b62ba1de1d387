//! Live pages (issue 13, item 4): `GET /events` streams a change within a
//! second, refuses anonymous readers and ends when the server stops; in a
//! real browser the board and `/gates` update without a reload.

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway::domain::Role;
use slipway::storage::testing::test_databases;

use crate::deployments::{pipeline, repo};
use crate::gates::health_server;
use crate::git::TempRepo;
use crate::helpers::{
    TestApp, build, each_backend, ended, get_json, import, post_json, spawn_app, wait_until,
};
use crate::idp::{Browser, available, browser_check};

const DEADLINE: Duration = Duration::from_secs(60);

/// An open `GET /events` stream, read by a thread: one item per message
/// (its lines), `None` when the stream ended.
struct Events {
    messages: mpsc::Receiver<Option<String>>,
}

impl Events {
    fn open(app: &TestApp, token: &str) -> Events {
        let client = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .unwrap();
        let res = client
            .get(app.url("/events"))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert_eq!(res.status(), 200, "[{}] GET /events", app.backend);
        let kind = res.headers()["content-type"].to_str().unwrap().to_string();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        let (tx, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(res);
            let mut message = String::new();
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(_) if line == "\n" => {
                        if tx.send(Some(std::mem::take(&mut message))).is_err() {
                            return;
                        }
                    }
                    Ok(_) => message.push_str(&line),
                }
            }
        });
        Events { messages }
    }

    /// The first message within `within` that satisfies `f`.
    fn wait_for(&self, what: &str, within: Duration, f: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(Some(m)) if f(&m) => return m,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended before {what}"),
                Err(_) => panic!("no {what} within {within:?}"),
            }
        }
    }

    /// Whether the stream ends within `within` (messages before are skipped).
    fn ends_within(&self, within: Duration) -> bool {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(None) => return true,
                Ok(Some(_)) => {}
                Err(_) => return false,
            }
        }
    }
}

/// One manual stage with a quick task.
const DEV: &str = "  - name: dev\n    trigger: manual\n    tasks: [ { shell: \"true\" } ]\n";

/// A pipeline `name` with these stages and one release built through the
/// API; returns its version and the repository (for more builds).
fn built(app: &TestApp, token: &str, name: &str, stages: &str) -> (String, TempRepo) {
    let repo = repo();
    import(app, &pipeline(name, &repo, stages));
    (build(app, token, name), repo)
}

fn request(app: &TestApp, token: &str, name: &str, stage: &str, version: &str) -> i64 {
    let (status, v) = post_json(
        app,
        token,
        &format!("/api/v1/pipelines/{name}/stages/{stage}/deployments"),
        &json!({ "release": version }),
    );
    assert_eq!(status, 202, "[{}] {v}", app.backend);
    v["id"].as_i64().unwrap()
}

#[test]
fn the_event_stream_tells_of_a_deployment_within_a_second() {
    each_backend(|app| {
        let deployer = app.token("dana", Role::Deployer);
        let (version, _repo) = built(app, &deployer, "streamed", DEV);
        let events = Events::open(app, &app.viewer_token);
        let hello = events.wait_for("the greeting", Duration::from_secs(5), |m| {
            m.contains("event: hello")
        });
        assert!(hello.contains("retry: "), "{hello}");

        let id = request(app, &deployer, "streamed", "dev", &version);
        let asked = Instant::now();
        let first = events.wait_for("a change naming deployments", Duration::from_secs(1), |m| {
            m.contains("\"deployments\"")
        });
        assert!(asked.elapsed() <= Duration::from_secs(1));
        let data: Value = serde_json::from_str(
            first
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        assert!(data["seq"].as_u64().unwrap() >= 1, "{data}");

        // Its tasks starting and ending are changes as well (in the same
        // message when they came within one look at the database).
        if !first.contains("\"tasks\"") {
            events.wait_for("the tasks' change", DEADLINE, |m| m.contains("\"tasks\""));
        }
        assert_eq!(ended(app, &deployer, id)["state"], "succeeded");
    });
}

#[test]
fn the_event_stream_needs_a_signed_in_user() {
    each_backend(|app| {
        let res = app.get_anonymous("/events");
        assert_eq!(res.status(), 401, "[{}]", app.backend);
        assert!(res.text().unwrap().contains("Sign in"));
        let res = app.get_with_token("/events", "not-a-token");
        assert_eq!(res.status(), 401);
        // Pages still send a person to the sign-in page.
        assert_eq!(app.get_anonymous("/gates").status(), 303);
    });
}

#[test]
fn the_event_stream_ends_when_the_server_stops() {
    for (label, db) in test_databases() {
        let mut app = spawn_app(label, db);
        let events = Events::open(&app, &app.viewer_token.clone());
        events.wait_for("the greeting", Duration::from_secs(5), |m| {
            m.contains("event: hello")
        });
        // A graceful stop (as on SIGTERM) ends the stream at once instead
        // of waiting the server's 10 s for it.
        let took = app.stop_gracefully();
        assert!(
            events.ends_within(Duration::from_secs(5)),
            "[{}]",
            app.backend
        );
        assert!(
            took < Duration::from_secs(8),
            "[{}] took {took:?}",
            app.backend
        );
    }
}

// ---------------------------------------------------------------------------
// In a real browser
// ---------------------------------------------------------------------------

/// A browser signed in as a new viewer, on `path` with its stream open.
fn live_browser(app: &TestApp, path: &str) -> Browser {
    app.user("mara", Role::Viewer, "mara's long password");
    let browser = Browser::start();
    browser.goto(&app.url("/login"));
    browser.fill("input#username", "mara");
    browser.fill("input#password", "mara's long password");
    browser.click("button[type=submit]");
    browser.wait_for("header .who span");
    browser.goto(&app.url(path));
    browser.wait_for("html[data-live-state=connected]");
    // A mark that a reload would wipe out.
    run(
        &browser,
        "window.slipwayTestMark = 'not reloaded'; return true;",
    );
    browser
}

fn run(browser: &Browser, script: &str) -> Value {
    browser
        .rt
        .block_on(browser.client.execute(script, vec![]))
        .expect("script")
}

/// Waits until `script`'s value satisfies `f` (the page's DOM, read through
/// WebDriver); returns it.
fn wait_in_page(browser: &Browser, what: &str, script: &str, f: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let value = run(browser, script);
        let text = value.as_str().unwrap_or_default().to_string();
        if f(&text) {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the page never showed {what}; it shows: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With `SLIPWAY_SCREENSHOTS=DIR`, saves the page as `DIR/NAME.png` (to
/// look at what the tests saw).
fn screenshot(browser: &Browser, name: &str) {
    if let Some(dir) = std::env::var_os("SLIPWAY_SCREENSHOTS") {
        let png = browser
            .rt
            .block_on(browser.client.screenshot())
            .expect("screenshot");
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

fn not_reloaded(browser: &Browser) {
    assert_eq!(
        run(browser, "return window.slipwayTestMark || null;"),
        json!("not reloaded"),
        "the page was reloaded"
    );
}

#[test]
fn the_board_shows_a_deployment_without_a_reload() {
    if !available("a headless Chromium", browser_check()) {
        return;
    }
    each_backend(|app| {
        let deployer = app.token("dana", Role::Deployer);
        let (version, _repo) = built(app, &deployer, "board-live", DEV);
        let browser = live_browser(app, "/");
        let cell =
            "return document.querySelector('#board-board-live table.board tbody td').textContent;";
        assert!(
            run(&browser, cell)
                .as_str()
                .unwrap()
                .contains("not deployed")
        );

        let id = request(app, &deployer, "board-live", "dev", &version);
        let d = ended(app, &deployer, id);
        assert_eq!(d["state"], "succeeded", "{d}");
        let done = Instant::now();
        wait_in_page(&browser, "the deployment succeeded", cell, |t| {
            t.contains("Succeeded")
        });
        // Pushed by the stream: well before the 10 s fallback poll.
        assert!(
            done.elapsed() < Duration::from_secs(5),
            "[{}] took {:?}",
            app.backend,
            done.elapsed()
        );
        not_reloaded(&browser);

        // A new build and its release appear too (the section is live with
        // nothing running).
        build(app, &deployer, "board-live");
        wait_in_page(
            &browser,
            "the new release",
            "return document.querySelector('#board-board-live table.board tbody').textContent;",
            |t| t.contains("1.0.2"),
        );
        screenshot(&browser, &format!("board-{}", app.backend));
        not_reloaded(&browser);
    });
}

#[test]
fn the_gates_page_shows_progress_and_a_pass_without_a_reload() {
    if !available("a headless Chromium", browser_check()) {
        return;
    }
    each_backend(|app| {
        let healthy = Arc::new(AtomicBool::new(false));
        let url = health_server(healthy.clone());
        let gated = format!(
            r#"  - name: prod
    trigger: manual
    gates:
      before:
        delay: 0s
        interval: 1s
        steady: 2s
        timeout: 60s
        checks:
          - name: health
            http: {{ url: "{url}/health", success: "status == 200 && body.status == 'healthy'" }}
    tasks: [ {{ shell: "true" }} ]
"#
        );
        let rm = app.token("rm", Role::ReleaseManager);
        let (version, _repo) = built(app, &rm, "gated-live", &gated);
        let id = request(app, &rm, "gated-live", "prod", &version);
        wait_until("the gate's first sample", DEADLINE, || {
            let (_, v) = get_json(app, &rm, "/api/v1/gates");
            v["evaluating"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["deployment_id"] == id && r["rounds"].as_i64().unwrap() >= 1)
                .then_some(())
        });

        let browser = live_browser(app, "/gates");
        let evaluating =
            "return document.getElementById('gates-evaluating').textContent.replace(/\\s+/g, ' ');";
        let before = wait_in_page(&browser, "the evaluating gate", evaluating, |t| {
            t.contains("evaluating") && t.contains("so far")
        });
        assert!(before.contains("not all green yet"), "{before}");
        // The deployment page shows the same progress.
        let page = app
            .page(&format!(
                "/pipelines/gated-live/releases/{version}/deployments/{id}"
            ))
            .html();
        assert!(page.contains("samples so far"), "{page}");
        assert!(page.contains("must stay green for 2s"), "{page}");
        assert!(before.contains("time left"), "{before}");
        // Its rounds go on: the progress changes in place.
        let rounds = |t: &str| -> i64 {
            let words: Vec<&str> = t.split_whitespace().collect();
            let at = words
                .iter()
                .position(|w| w.starts_with("round"))
                .unwrap_or_else(|| panic!("no rounds in {t}"));
            words[at - 1].parse().unwrap()
        };
        let first = rounds(&before);
        wait_in_page(&browser, "another round", evaluating, |t| {
            t.contains("round") && rounds(t) > first
        });

        // Green: the page counts the green time, then shows the pass.
        healthy.store(true, Ordering::SeqCst);
        wait_in_page(&browser, "the green time", evaluating, |t| {
            t.contains("green for") && t.contains("of 2s")
        });
        screenshot(&browser, &format!("gates-green-{}", app.backend));
        wait_in_page(
            &browser,
            "the gate passed",
            "return document.getElementById('gates-recent').textContent.replace(/\\s+/g, ' ');",
            |t| t.contains("passed") && t.contains(&version),
        );
        wait_in_page(&browser, "no gate evaluating", evaluating, |t| {
            t.contains("No gate is being evaluated")
        });
        screenshot(&browser, &format!("gates-passed-{}", app.backend));
        not_reloaded(&browser);
        assert_eq!(ended(app, &rm, id)["state"], "succeeded");
    });
}

#[test]
fn the_live_pages_carry_their_regions() {
    each_backend(|app| {
        let deployer = app.token("dana", Role::Deployer);
        let (version, _repo) = built(app, &deployer, "regions", DEV);
        let id = request(app, &deployer, "regions", "dev", &version);
        ended(app, &deployer, id);
        let regions = |path: &str| -> Vec<(String, String)> {
            let html = app.page(path);
            let sel = scraper::Selector::parse("[data-live]").unwrap();
            html.select(&sel)
                .map(|e| {
                    let v = e.value();
                    (
                        v.attr("id").unwrap_or_default().to_string(),
                        v.attr("data-live").unwrap().to_string(),
                    )
                })
                .collect()
        };
        let ids = |path: &str| -> Vec<String> { regions(path).into_iter().map(|r| r.0).collect() };
        // Every region has an id (a refresh matches them by it) and topics.
        for path in [
            "/",
            "/pipelines/regions",
            "/environments",
            "/gates",
            "/approvals",
            "/approvals?tab=history",
            &format!("/pipelines/regions/releases/{version}/deployments/{id}"),
        ] {
            let found = regions(path);
            assert!(
                !found.is_empty(),
                "[{}] {path} has no live region",
                app.backend
            );
            for (id, topics) in &found {
                assert!(!id.is_empty(), "{path}: a region without an id");
                assert!(
                    topics.split(' ').all(|t| [
                        "builds",
                        "releases",
                        "deployments",
                        "tasks",
                        "gates",
                        "approvals",
                        "slots",
                        "pipelines"
                    ]
                    .contains(&t)),
                    "{path}: {id} has unknown topics {topics}"
                );
            }
        }
        assert_eq!(ids("/"), vec!["board-regions"]);
        assert_eq!(
            ids("/pipelines/regions"),
            vec!["pipeline-drawing", "pipeline-builds", "pipeline-releases"]
        );
        assert_eq!(ids("/gates"), vec!["gates-evaluating", "gates-recent"]);
        assert_eq!(
            ids(&format!(
                "/pipelines/regions/releases/{version}/deployments/{id}"
            )),
            vec![
                "deployment-summary",
                "deployment-approvals",
                "deployment-gates",
                "build-log"
            ]
        );
    });
}

#[test]
fn the_inbox_shows_a_new_approval_and_keeps_what_someone_types() {
    if !available("a headless Chromium", browser_check()) {
        return;
    }
    each_backend(|app| {
        let approved = "  - name: dev\n    trigger: manual\n    approvals:\n      before: { approvers: [\"mara\"], policy: any }\n    tasks: [ { shell: \"true\" } ]\n";
        let deployer = app.token("dana", Role::Deployer);
        let (a, _repo_a) = built(app, &deployer, "inbox-a", approved);
        let (b, _repo_b) = built(app, &deployer, "inbox-b", approved);
        let browser = live_browser(app, "/approvals");
        let inbox = "return document.getElementById('approvals-waiting').textContent.replace(/\\s+/g, ' ');";
        assert!(
            run(&browser, inbox)
                .as_str()
                .unwrap()
                .contains("Nothing is waiting")
        );

        // A deployment asks mara: her inbox shows it without a reload.
        request(app, &deployer, "inbox-a", "dev", &a);
        wait_in_page(&browser, "the new approval", inbox, |t| {
            t.contains(&format!("inbox-a {a} → dev"))
        });
        not_reloaded(&browser);

        // She starts writing a rejection; another approval arrives: what
        // she typed stays, and a note offers the update.
        browser.fill("#approvals-waiting textarea[name=comment]", "not this week");
        request(app, &deployer, "inbox-b", "dev", &b);
        wait_in_page(
            &browser,
            "the note about newer information",
            "return (document.querySelector('.live-note') || {}).textContent || '';",
            |t| t.contains("Reload the page"),
        );
        assert_eq!(
            run(
                &browser,
                "return document.querySelector('#approvals-waiting textarea[name=comment]').value;"
            ),
            json!("not this week")
        );
        assert!(!run(&browser, inbox).as_str().unwrap().contains("inbox-b"));
        not_reloaded(&browser);
    });
}
