//! Deployment slots: a real app (a small Python HTTP server shipped in the
//! release's artifacts) deployed to slots behind the slot router; swaps
//! under load with no failed request; rollback; a release whose health
//! check fails; a crashing process; Slipway restarted with slots running.
//! Both databases.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use slipway::domain::Role;
use slipway::engine::{pipelines, users};
use slipway::storage;
use slipway::storage::testing::test_databases;

use crate::helpers::{attrs, browser, csrf_of, texts};

mod harness;
pub use harness::*;

#[test]
fn a_swap_under_load_fails_no_request_and_swapping_back_rolls_back() {
    each(|s| {
        let label = s.label.clone();
        s.release("1.0.1", false);
        s.release("1.0.2", false);
        let client = s.client();
        // Nothing deployed yet: the slot says so.
        let (status, body) = s.get(&client, "shop", "/");
        assert_eq!(status, 503, "[{label}] {body}");
        assert!(body.contains("Nothing is running in this slot"), "{body}");
        let (status, _) = s.get(&client, "nope", "/");
        assert_eq!(status, 404, "[{label}]");

        let deployed = s.deploy("production", "1.0.1").unwrap();
        assert_eq!(deployed.replaced, None);
        s.deploy("staging", "1.0.2").unwrap();
        assert_eq!(s.get(&client, "shop", "/"), (200, "release 1.0.1\n".into()));
        assert_eq!(
            s.get(&client, "shop-production", "/"),
            (200, "release 1.0.1\n".into())
        );
        assert_eq!(
            s.get(&client, "shop-staging", "/"),
            (200, "release 1.0.2\n".into())
        );
        // Unpacked with its relative paths; run.sh made executable.
        use std::os::unix::fs::PermissionsExt;
        let workdir = deployed.workdir.clone();
        assert!(workdir.starts_with(s.data.path().join("slots/shop/production")));
        assert!(workdir.join("app/server.py").is_file());
        let mode = std::fs::metadata(workdir.join("run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // The process's environment and the forwarded headers.
        let (_, env) = s.get(&client, "shop-staging", "/env");
        let env: HashMap<String, Option<String>> = serde_json::from_str(&env).unwrap();
        assert_eq!(env["SLIPWAY_SLOT"].as_deref(), Some("staging"));
        assert_eq!(env["SLIPWAY_APP"].as_deref(), Some("shop"));
        assert_eq!(env["SLIPWAY_RELEASE"].as_deref(), Some("1.0.2"));
        assert_eq!(env["GREETING"].as_deref(), Some("hello"));
        assert_eq!(env["DATABASE"].as_deref(), Some("slot-database"));
        let (_, headers) = s.get(&client, "shop", "/headers");
        let headers: HashMap<String, String> = serde_json::from_str(&headers).unwrap();
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(
            headers["x-forwarded-host"],
            format!("shop.localhost:{}", s.router_port)
        );
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert!(!headers.contains_key("connection"), "{headers:?}");

        // The swap, while four connections keep asking production.
        let load = Load::start(s, "shop", "/", 4);
        load.wait_for(100);
        let outcome = s.swap("staging", "production").unwrap();
        let swapped_at = Instant::now();
        assert_eq!(outcome.release.as_deref(), Some("1.0.2"));
        assert_eq!(outcome.replaced.as_deref(), Some("1.0.1"));
        load.wait_for(100);
        let samples = load.finish();
        assert!(
            samples.len() > 50,
            "[{label}] only {} requests",
            samples.len()
        );
        assert!(
            failures(&samples).is_empty(),
            "[{label}] {} of {} requests failed: {:?}",
            failures(&samples).len(),
            samples.len(),
            failures(&samples).iter().take(3).collect::<Vec<_>>()
        );
        assert!(
            samples
                .iter()
                .all(|x| x.body == "release 1.0.1\n" || x.body == "release 1.0.2\n")
        );
        assert!(samples.iter().any(|x| x.body == "release 1.0.1\n"));
        let after: Vec<&Sample> = samples.iter().filter(|x| x.started > swapped_at).collect();
        assert!(!after.is_empty());
        assert!(
            after.iter().all(|x| x.body == "release 1.0.2\n"),
            "[{label}] an answer from the old release after the swap"
        );
        assert_eq!(
            s.get(&client, "shop-staging", "/"),
            (200, "release 1.0.1\n".into())
        );
        // Sticky settings stayed, the process moved.
        let (_, env) = s.get(&client, "shop", "/env");
        let env: HashMap<String, Option<String>> = serde_json::from_str(&env).unwrap();
        assert_eq!(env["SLIPWAY_RELEASE"].as_deref(), Some("1.0.2"));
        let production = s.slot_row("production");
        let staging = s.slot_row("staging");
        assert!(production.last_swap_at.is_some());
        assert_ne!(production.release_id, staging.release_id);

        // Rollback: the same swap again, under load too.
        let load = Load::start(s, "shop", "/", 3);
        load.wait_for(50);
        s.swap("staging", "production").unwrap();
        let rolled_back_at = Instant::now();
        load.wait_for(50);
        let samples = load.finish();
        assert!(
            failures(&samples).is_empty(),
            "[{label}] {:?}",
            failures(&samples).first()
        );
        assert!(
            samples
                .iter()
                .filter(|x| x.started > rolled_back_at)
                .all(|x| x.body == "release 1.0.1\n")
        );
        assert_eq!(s.get(&client, "shop", "/"), (200, "release 1.0.1\n".into()));

        // A new release into the live slot, under load: no request fails
        // (the old process finishes what it took, even slow requests).
        s.release("1.0.3", false);
        let load = Load::start(s, "shop", "/slow", 3);
        load.wait_for(3);
        let deployed = s.deploy("production", "1.0.3").unwrap();
        assert_eq!(deployed.replaced.as_deref(), Some("1.0.1"));
        let deployed_at = Instant::now();
        load.wait_for(6);
        let samples = load.finish();
        assert!(
            failures(&samples).is_empty(),
            "[{label}] {:?}",
            failures(&samples).first()
        );
        assert!(
            samples
                .iter()
                .filter(|x| x.started > deployed_at)
                .all(|x| x.body == "release 1.0.3\n")
        );
        // Audited.
        let mut conn = s.db.get().unwrap();
        let actions: Vec<String> = storage::list_audit(&mut conn, None, 100)
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        assert_eq!(actions.iter().filter(|a| *a == "slot.swap").count(), 2);
        assert!(actions.iter().any(|a| a == "slot.deploy"));
        storage::verify_audit_chain(&mut conn).unwrap();
    });
}

/// The build of the `kite` app: the server, its start script and the
/// release's version into `out/`, and `broken` when the commit has it.
const KITE_BUILD_SH: &str = r#"#!/bin/sh
set -eu
rm -rf out
mkdir -p out/app
cp server.py out/app/server.py
cp start.sh out/run.sh
printf '%s' "$SLIPWAY_VERSION" > out/version.txt
if [ -f broken ]; then cp broken out/broken; fi
echo "built $SLIPWAY_VERSION"
"#;

fn kite_pipeline(repo: &std::path::Path) -> String {
    format!(
        r#"pipeline: kite-web
source: {{ repo: "{}", branch: main }}
version: "2.0.{{build}}"
apps:
  - name: kite
    start: "./out/run.sh"
    health: /health
    slots: [dev]
build:
  tasks: [ {{ shell: ./build.sh }} ]
  artifacts: [ "out/**" ]
stages:
  - name: dev
    trigger: {{ after: build }}
    environment: {{ slot: {{ app: kite, name: dev }} }}
    tasks:
      - deploy_slot: {{ app: kite, slot: dev }}
        timeout: 5s
"#,
        repo.display()
    )
}

#[test]
fn deploy_slot_through_the_deployment_engine_replaces_a_release_without_a_failed_request() {
    for (label, test_db) in test_databases() {
        let repo = crate::git::git_repo(&[
            ("build.sh", KITE_BUILD_SH),
            ("server.py", SERVER_PY),
            ("start.sh", RUN_SH),
        ]);
        let yaml = kite_pipeline(repo.path());
        let s = Slipway::with(label.clone(), test_db, |conn, _, _| {
            let definition = pipelines::parse(&yaml, "kite.yaml").unwrap();
            pipelines::import(conn, definition, None, "test", None).unwrap();
        });
        let token = token(&s, "max", Role::ReleaseManager);
        let client = s.client();
        assert_eq!(s.get(&client, "kite-dev", "/").0, 503, "[{label}]");

        // The build's release goes to dev by itself (after: build) and the
        // router answers from it.
        let v1 = s.build(&token, "kite-web");
        assert_eq!(v1, "2.0.1");
        let id = s.deployment_to(&token, "kite-web", &v1, "dev");
        let d = s.deployment_ended(&token, id);
        assert_eq!(
            d["state"],
            "succeeded",
            "[{label}] {d}\n{}",
            s.deployment_log(&token, id)
        );
        assert_eq!(d["tasks"][0]["state"], "succeeded", "{d}");
        assert!(s.deployment_log(&token, id).contains("healthy"));
        assert_eq!(
            s.get(&client, "kite-dev", "/"),
            (200, "release 2.0.1\n".into()),
            "[{label}]"
        );
        let row = {
            let mut conn = s.db.get().unwrap();
            let (app, _) = storage::slots::find_app(&mut conn, "kite")
                .unwrap()
                .unwrap();
            storage::slots::find_slot(&mut conn, app.id, "dev")
                .unwrap()
                .unwrap()
        };
        assert!(row.release_id.is_some(), "{row:?}");

        // The next commit, deployed to the same slot while three
        // connections keep asking: no request fails, and once the
        // deployment succeeded every answer comes from the new release.
        repo.commit(&[("notes.txt", "second\n")], "second release");
        let load = Load::start(&s, "kite-dev", "/", 3);
        load.wait_for(30);
        let v2 = s.build(&token, "kite-web");
        let id = s.deployment_to(&token, "kite-web", &v2, "dev");
        let d = s.deployment_ended(&token, id);
        let deployed_at = Instant::now();
        assert_eq!(
            d["state"],
            "succeeded",
            "[{label}] {d}\n{}",
            s.deployment_log(&token, id)
        );
        load.wait_for(30);
        let samples = load.finish();
        assert!(
            failures(&samples).is_empty(),
            "[{label}] {} of {} requests failed: {:?}",
            failures(&samples).len(),
            samples.len(),
            failures(&samples).iter().take(3).collect::<Vec<_>>()
        );
        assert!(
            samples
                .iter()
                .all(|x| x.body == "release 2.0.1\n" || x.body == "release 2.0.2\n")
        );
        assert!(samples.iter().any(|x| x.body == "release 2.0.1\n"));
        let after: Vec<&Sample> = samples.iter().filter(|x| x.started > deployed_at).collect();
        assert!(!after.is_empty());
        assert!(
            after.iter().all(|x| x.body == "release 2.0.2\n"),
            "[{label}] an answer from the old release after the deployment"
        );

        // A release whose health check fails: the task fails with the
        // process's log, and the old process keeps serving throughout.
        repo.commit(&[("broken", "yes\n")], "break the health check");
        let load = Load::start(&s, "kite-dev", "/", 2);
        load.wait_for(20);
        let v3 = s.build(&token, "kite-web");
        let id = s.deployment_to(&token, "kite-web", &v3, "dev");
        let d = s.deployment_ended(&token, id);
        load.wait_for(20);
        let samples = load.finish();
        assert_eq!(d["state"], "failed", "[{label}] {d}");
        assert_eq!(d["tasks"][0]["state"], "failed", "{d}");
        let log = s.deployment_log(&token, id);
        assert!(log.contains("answered 500"), "[{label}] {log}");
        // The process's own last lines are in the log.
        assert!(log.contains("the process's last lines:"), "[{label}] {log}");
        assert!(
            log.contains("\"GET /health HTTP/1.1\" 500"),
            "[{label}] {log}"
        );
        assert!(
            d["error"].as_str().unwrap_or_default().contains("healthy"),
            "[{label}] {d}"
        );
        assert!(
            failures(&samples).is_empty(),
            "[{label}] {:?}",
            failures(&samples).first()
        );
        assert!(samples.iter().all(|x| x.body == "release 2.0.2\n"));
        assert_eq!(
            s.get(&client, "kite-dev", "/"),
            (200, "release 2.0.2\n".into())
        );
        let (_, slots) = s.get_json(&token, "/api/v1/apps/kite/slots");
        assert_eq!(slots[0]["release"], "2.0.2", "{slots}");
    }
}

#[test]
fn a_release_that_fails_its_health_check_never_takes_traffic() {
    each(|s| {
        let label = s.label.clone();
        s.release("1.0.1", false);
        s.release("1.0.2", true);
        s.deploy("production", "1.0.1").unwrap();
        let client = s.client();
        let load = Load::start(s, "shop", "/", 2);
        // 3 s of answering 500: the error keeps its first lines too.
        let err = s
            .deploy_within("production", "1.0.2", Duration::from_secs(3))
            .unwrap_err()
            .to_string();
        let samples = load.finish();
        assert!(err.contains("did not become healthy"), "[{label}] {err}");
        assert!(err.contains("answered 500"), "[{label}] {err}");
        // Its log is in the error.
        assert!(err.contains("listening on"), "[{label}] {err}");
        assert!(
            failures(&samples).is_empty(),
            "[{label}] {:?}",
            failures(&samples).first()
        );
        assert!(samples.iter().all(|x| x.body == "release 1.0.1\n"));
        assert_eq!(s.get(&client, "shop", "/"), (200, "release 1.0.1\n".into()));
        let row = s.slot_row("production");
        assert!(
            row.error.as_deref().unwrap_or_default().contains("500"),
            "{row:?}"
        );
        let mut conn = s.db.get().unwrap();
        let p = storage::find_pipeline(&mut conn, "shop-web")
            .unwrap()
            .unwrap();
        let good = storage::find_release(&mut conn, p.id, "1.0.1")
            .unwrap()
            .unwrap();
        assert_eq!(row.release_id, Some(good.id));
        // Its directory is gone; the good one stays.
        let dirs: Vec<String> = std::fs::read_dir(s.data.path().join("slots/shop/production"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("1.0."))
            .collect();
        assert_eq!(dirs, vec!["1.0.1-1".to_string()], "[{label}]");
        // A slot with nothing to swap is refused.
        let err = s.swap("staging", "production").unwrap_err().to_string();
        assert!(err.contains("runs nothing"), "{err}");
    });
}

#[test]
fn a_crashed_slot_process_is_restarted() {
    each(|s| {
        s.release("1.0.1", false);
        s.deploy("staging", "1.0.1").unwrap();
        let client = s.client();
        let pid = |s: &Slipway| {
            s.running()
                .engine
                .slots()
                .process_status("shop", "staging")
                .and_then(|p| p.pid)
        };
        let before = pid(s).unwrap();
        let (status, _) = s.get(&client, "shop-staging", "/crash");
        assert_ne!(status, 200);
        wait_until("the process to come back", 20, || {
            s.get(&client, "shop-staging", "/") == (200, "release 1.0.1\n".to_string())
        });
        let status = s
            .running()
            .engine
            .slots()
            .process_status("shop", "staging")
            .unwrap();
        assert!(status.restarts >= 1, "{status:?}");
        assert_ne!(pid(s), Some(before));
        assert!(status.last_exit.unwrap().contains("exited with code 3"));
        let log =
            std::fs::read_to_string(s.data.path().join("slots/shop/staging/process.log")).unwrap();
        assert!(log.contains("exited with code 3"), "{log}");
        assert!(log.contains("starting it again"), "{log}");
    });
}

#[test]
fn slipway_restarted_with_slots_running_comes_back_serving() {
    each(|s| {
        let label = s.label.clone();
        s.release("1.0.1", false);
        s.release("1.0.2", false);
        s.deploy("production", "1.0.1").unwrap();
        s.deploy("staging", "1.0.2").unwrap();
        let port = s
            .running()
            .engine
            .slots()
            .port_of("shop", "production")
            .unwrap();
        s.stop();
        // Stopped with Slipway.
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        s.start();
        let client = s.client();
        wait_until("production to serve again", 20, || {
            s.get(&client, "shop", "/") == (200, "release 1.0.1\n".to_string())
        });
        wait_until("staging to serve again", 20, || {
            s.get(&client, "shop-staging", "/") == (200, "release 1.0.2\n".to_string())
        });
        assert_eq!(
            s.slot_row("production").port,
            Some(i32::from(port)),
            "[{label}]"
        );
        // And a swap works on the restarted slots.
        s.swap("staging", "production").unwrap();
        assert_eq!(s.get(&client, "shop", "/"), (200, "release 1.0.2\n".into()));
    });
}

#[test]
fn the_environments_page_and_the_api_swap() {
    each(|s| {
        let label = s.label.clone();
        s.release("1.0.1", false);
        s.release("1.0.2", false);
        s.deploy("production", "1.0.1").unwrap();
        s.deploy("staging", "1.0.2").unwrap();
        s.passed("staging", "1.0.1");
        s.passed("production", "1.0.1");
        s.passed("staging", "1.0.2");
        let base = s.running().base.clone();
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let viewer = token(s, "vera", Role::Viewer);
        let manager = token(s, "max", Role::ReleaseManager);
        let page = http
            .get(format!("{base}/environments"))
            .bearer_auth(&viewer)
            .send()
            .unwrap()
            .text()
            .unwrap();
        let html = scraper::Html::parse_document(&page);
        let rows = texts(&html, "table.slots tbody tr");
        assert_eq!(rows.len(), 2, "[{label}] {rows:?}");
        assert!(rows[0].starts_with("staging"), "{rows:?}");
        assert!(rows[0].contains("shop-staging.localhost"), "{rows:?}");
        assert!(rows[0].contains("1.0.2"), "{rows:?}");
        assert!(rows[1].contains("shop.localhost"), "{rows:?}");
        assert!(rows[1].contains("running"), "{rows:?}");
        let links = crate::helpers::attrs(&html, "table.slots a", "href");
        assert!(
            links.contains(&format!("http://shop.localhost:{}/", s.router_port)),
            "{links:?}"
        );
        assert!(links.contains(&"/pipelines/shop-web/releases/1.0.1".to_string()));
        assert!(texts(&html, "nav a").iter().any(|t| t == "Environments"));

        // The API: a viewer may not swap; a release manager may.
        let url = format!("{base}/api/v1/apps/shop/swap");
        let res = http
            .post(&url)
            .bearer_auth(&viewer)
            .json(&serde_json::json!({"from": "staging", "to": "production"}))
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);
        let res = http
            .post(&url)
            .bearer_auth(&manager)
            .json(&serde_json::json!({"from": "staging", "to": "nowhere"}))
            .send()
            .unwrap();
        assert_eq!(res.status(), 404);
        let res = http
            .post(&url)
            .bearer_auth(&manager)
            .json(&serde_json::json!({"from": "staging", "to": "production"}))
            .send()
            .unwrap();
        let status = res.status();
        let body: serde_json::Value = res.json().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["release"], "1.0.2");
        assert_eq!(body["replaced"], "1.0.1");
        assert_eq!(body["state"], "swapped");
        // Issue 13: the swap into production (a slot the production stage
        // deploys to) is a deployment of that stage, trigger `swap`.
        assert_eq!(body["deployment"]["stage"], "production");
        assert_eq!(body["deployment"]["trigger"], "swap");
        assert_eq!(body["deployment"]["state"], "succeeded");
        let client = s.client();
        assert_eq!(s.get(&client, "shop", "/"), (200, "release 1.0.2\n".into()));
        let slots: serde_json::Value = http
            .get(format!("{base}/api/v1/apps/shop/slots"))
            .bearer_auth(&viewer)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(slots[1]["slot"], "production");
        assert_eq!(slots[1]["release"], "1.0.2");
        assert_eq!(slots[1]["hosts"][1], "shop.localhost");
        let spec: serde_json::Value = http
            .get(format!("{base}/api/v1/openapi.json"))
            .bearer_auth(&viewer)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert!(spec["paths"]["/api/v1/apps/{app}/swap"]["post"].is_object());

        // The page's Roll back button (a signed-in release manager with CSRF).
        let browser = browser();
        users::create_user(
            &mut s.db.get().unwrap(),
            users::NewLocalUser {
                username: "rita",
                role: Role::ReleaseManager,
                groups: &[],
                password: "a long test password",
            },
            "test",
        )
        .unwrap();
        let login = browser
            .get(format!("{base}/login"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let csrf = csrf_of(&scraper::Html::parse_document(&login));
        let res = browser
            .post(format!("{base}/login"))
            .form(&[
                ("username", "rita"),
                ("password", "a long test password"),
                ("csrf", csrf.as_str()),
                ("next", "/environments"),
            ])
            .send()
            .unwrap();
        assert!(res.status().is_redirection(), "{}", res.status());
        let page = browser
            .get(format!("{base}/environments"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let html = scraper::Html::parse_document(&page);
        let buttons = texts(&html, "table.slots button");
        assert!(
            buttons
                .iter()
                .any(|b| b == "Roll back production to 1.0.1…"),
            "{buttons:?}"
        );
        // The button leads to a confirmation page that says what changes.
        let review = browser
            .get(format!(
                "{base}/environments/shop/swap?from=staging&to=production&rollback=on"
            ))
            .send()
            .unwrap();
        assert_eq!(review.status(), 200);
        let review = scraper::Html::parse_document(&review.text().unwrap());
        assert_eq!(texts(&review, "h1"), ["Roll back production to 1.0.1"]);
        let changes = texts(&review, "table.swap-changes tbody tr");
        assert!(
            changes[0].contains("production") && changes[0].contains("1.0.2"),
            "{changes:?}"
        );
        assert!(
            texts(&review, "main p")
                .iter()
                .any(|p| p.contains("runs as a deployment of production")),
            "{}",
            review.html()
        );
        // Issue 13 (1): no swap control starts out pointing at a slot, let
        // alone production: the person chooses.
        let selected = attrs(&html, "select[name=to] option[selected]", "value");
        assert!(!selected.is_empty(), "no swap control on the page");
        assert!(selected.iter().all(|v| v.is_empty()), "{selected:?}");
        let csrf = csrf_of(&html);
        // Without the CSRF token: refused, nothing changes.
        let res = browser
            .post(format!("{base}/environments/shop/swap"))
            .form(&[("from", "staging"), ("to", "production")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);
        // A rollback without a reason: the form again, with why.
        let res = browser
            .post(format!("{base}/environments/shop/swap"))
            .form(&[
                ("from", "staging"),
                ("to", "production"),
                ("rollback", "on"),
                ("csrf", &csrf),
            ])
            .send()
            .unwrap();
        assert_eq!(res.status(), 422);
        let again = scraper::Html::parse_document(&res.text().unwrap());
        assert_eq!(
            texts(&again, "[role=alert]"),
            ["A rollback of production to 1.0.1 needs a reason."]
        );
        assert_eq!(s.get(&client, "shop", "/"), (200, "release 1.0.2\n".into()));
        let res = browser
            .post(format!("{base}/environments/shop/swap"))
            .form(&[
                ("from", "staging"),
                ("to", "production"),
                ("rollback", "on"),
                ("reason", "checkout is broken"),
                ("csrf", &csrf),
            ])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        let location = res.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.starts_with("/pipelines/shop-web/releases/1.0.1/deployments/"),
            "{location}"
        );
        assert_eq!(s.get(&client, "shop", "/"), (200, "release 1.0.1\n".into()));
        let page = browser
            .get(format!("{base}{location}"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let html = scraper::Html::parse_document(&page);
        let facts = texts(&html, "dl.facts dd");
        assert!(facts.iter().any(|f| f == "rollback"), "{facts:?}");
        assert!(facts.iter().any(|f| f == "checkout is broken"), "{facts:?}");
        // Swapping back now would put the newer release in: no rollback offered.
        let page = browser
            .get(format!("{base}/environments"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let html = scraper::Html::parse_document(&page);
        let buttons = texts(&html, "table.slots button");
        assert!(
            !buttons.iter().any(|b| b.starts_with("Roll back")),
            "{buttons:?}"
        );
        let page = browser
            .get(format!("{base}/environments"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(page.contains("staging → production"), "{page}");

        // A swap with preview waits for a person; a plain swap waits too.
        let swap = |body: serde_json::Value| {
            http.post(&url)
                .bearer_auth(&manager)
                .json(&body)
                .send()
                .unwrap()
        };
        let res = swap(serde_json::json!({"from": "staging", "to": "production", "preview": true}));
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<serde_json::Value>().unwrap()["state"], "pending");
        assert_eq!(s.get(&client, "shop", "/"), (200, "release 1.0.1\n".into()));
        let res = swap(serde_json::json!({"from": "staging", "to": "production"}));
        assert_eq!(res.status(), 409);
        let page = browser
            .get(format!("{base}/environments"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(page.contains("A swap waits for confirmation"), "{page}");
        let res = http
            .post(format!("{url}/cancel"))
            .bearer_auth(&manager)
            .send()
            .unwrap();
        assert_eq!(res.status(), 204);
        swap(serde_json::json!({"from": "staging", "to": "production", "preview": true}));
        let res = http
            .post(format!("{url}/confirm"))
            .bearer_auth(&manager)
            .send()
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<serde_json::Value>().unwrap()["state"], "swapped");
        assert_eq!(s.get(&client, "shop", "/"), (200, "release 1.0.2\n".into()));
        let mut conn = s.db.get().unwrap();
        let actions: Vec<String> = storage::list_audit(&mut conn, None, 100)
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        for action in ["slot.swap.preview", "slot.swap.cancel", "slot.swap"] {
            assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
        }
    });
}
