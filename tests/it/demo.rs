//! The demo end to end (`serve --demo`): the sample app built from its real
//! git repository, deployed to the dev slot by itself, to test when its
//! schedule fires, to staging (preprod) on a manual deploy, and — after
//! management's approval and staging's health gate — into production by a
//! swap. Through the API and the slot router, both databases.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::{Value, json};
use slipway::engine::pipelines::demo;
use slipway::engine::users;
use slipway::storage::testing::test_databases;
use slipway::storage::{self, schedules as store};

use crate::idp::{Browser, available, browser_check};
use crate::slots::Slipway;

const PIPELINE: &str = demo::DEMO_PIPELINE;

/// A Slipway whose database holds the demo (as `serve --demo` makes it),
/// and an API token of the demo's `admin`.
fn demo_slipway(label: String, test_db: storage::testing::TestDb) -> (Slipway, String) {
    let s = Slipway::with(label, test_db, |conn, data, router| {
        demo::ensure_demo(conn, data, router).unwrap();
    });
    let token = users::create_token(&mut s.db.get().unwrap(), "admin", "test", "test").unwrap();
    (s, token)
}

/// What the slot `host` (e.g. `space-game-dev`) serves at `/`.
fn page_of(s: &Slipway, host: &str) -> (u16, String) {
    s.get(&s.client(), host, "/")
}

/// Builds the demo ("Build now"), lets the release reach dev by itself and
/// test when its schedule fires, deploys it to preprod by hand, and checks
/// each slot answers from it. Returns the release and the production
/// deployment that the preprod success requested.
fn walk_to_staging(s: &Slipway, token: &str) -> (String, i64) {
    let label = s.label.clone();
    // Before anything is deployed, the router says the slot runs nothing.
    assert_eq!(page_of(s, "space-game-dev").0, 503, "[{label}]");

    // Build now → release 1.0.1 → the dev slot.
    let version = s.build(token, PIPELINE);
    assert_eq!(version, "1.0.1", "[{label}]");
    let id = s.deployment_to(token, PIPELINE, &version, "dev");
    let d = s.deployment_ended(token, id);
    assert_eq!(
        d["state"],
        "succeeded",
        "[{label}] {d}\n{}",
        s.deployment_log(token, id)
    );
    assert_eq!(d["trigger"], "after:build", "{d}");
    let (status, page) = page_of(s, "space-game-dev");
    assert_eq!(status, 200, "[{label}] {page}");
    assert!(page.contains("<h1>Space Game</h1>"), "{page}");
    assert!(page.contains("Release 1.0.1"), "{page}");

    fire_test_schedule(s);
    let id = s.deployment_to(token, PIPELINE, &version, "test");
    let d = s.deployment_ended(token, id);
    assert_eq!(d["state"], "succeeded", "[{label}] {d}");
    assert_eq!(d["trigger"], "schedule", "{d}");
    let (status, page) = page_of(s, "space-game-test");
    assert_eq!(status, 200, "[{label}]");
    assert!(page.contains("Release 1.0.1"), "{page}");

    // Preprod: a manual deploy into the staging slot.
    let (status, body) = s.post_json(
        token,
        &format!("/api/v1/pipelines/{PIPELINE}/stages/preprod/deployments"),
        &json!({ "release": version }),
    );
    assert!(status == 201 || status == 202, "[{label}] {status} {body}");
    let id = body["id"].as_i64().unwrap();
    let d = s.deployment_ended(token, id);
    assert_eq!(
        d["state"],
        "succeeded",
        "[{label}] {d}\n{}",
        s.deployment_log(token, id)
    );
    let (status, page) = page_of(s, "space-game-staging");
    assert_eq!(status, 200, "[{label}]");
    assert!(page.contains("Release 1.0.1"), "{page}");

    // Production follows preprod and waits for management's approval;
    // nothing is in production yet.
    let production = s.deployment_to(token, PIPELINE, &version, "production");
    let d = s.deployment_in(token, production, &["waiting_for_approval"]);
    assert_eq!(d["trigger"], "after:preprod", "{d}");
    assert_eq!(page_of(s, "space-game").0, 503, "[{label}]");
    (version, production)
}

/// Test deploys on its schedule (03:00 America/Los_Angeles). The stage
/// waits for its next instant; this makes the scheduler find the last one
/// due, as if 03:00 had just come.
fn fire_test_schedule(s: &Slipway) {
    {
        let mut conn = s.db.get().unwrap();
        let p = storage::find_pipeline(&mut conn, PIPELINE)
            .unwrap()
            .unwrap();
        let stage = store::find_stage(&mut conn, p.id, "test").unwrap().unwrap();
        let schedule = slipway::engine::triggers::schedules::schedule_of_stage(&stage).unwrap();
        let next = crate::builds::wait_until(
            "the test stage's next fire time",
            std::time::Duration::from_secs(20),
            || {
                store::find_stage(&mut conn, p.id, "test")
                    .unwrap()
                    .unwrap()
                    .next_fire_at
            },
        );
        assert!(next.and_utc() > Utc::now());
        let local = next
            .and_utc()
            .with_timezone(&chrono_tz::America::Los_Angeles)
            .format("%H:%M")
            .to_string();
        assert_eq!(local, "03:00");
        let last_instant = schedule
            .next_fire(Utc::now() - chrono::Duration::hours(25))
            .unwrap();
        assert!(last_instant <= Utc::now());
        store::set_next_fire(&mut conn, stage.id, Some(last_instant.naive_utc())).unwrap();
    }
}

/// The approval the signed-in approver sees for deployment `id`.
fn approval_for(s: &Slipway, token: &str, deployment: i64) -> i64 {
    crate::builds::wait_until(
        "the production approval in the inbox",
        std::time::Duration::from_secs(30),
        || {
            let (status, inbox) = s.get_json(token, "/api/v1/approvals");
            assert_eq!(status, 200, "{inbox}");
            let items = inbox
                .as_array()
                .or_else(|| inbox["approvals"].as_array())
                .or_else(|| inbox["items"].as_array())
                .cloned()
                .unwrap_or_default();
            items
                .iter()
                .find(|a| {
                    a["deployment"] == deployment
                        || a["deployment_id"] == deployment
                        || a["deployment"]["id"] == deployment
                })
                .and_then(|a| a["id"].as_i64())
        },
    )
}

#[test]
fn the_demo_runs_from_build_now_to_production() {
    for (label, test_db) in test_databases() {
        let (s, token) = demo_slipway(label.clone(), test_db);
        // The demo's admin approves production (a member of management).
        let mut conn = s.db.get().unwrap();
        let admin = storage::find_user_by_name(&mut conn, "admin")
            .unwrap()
            .unwrap();
        assert_eq!(
            storage::user_groups(&mut conn, admin.id).unwrap(),
            vec![demo::DEMO_APPROVERS.to_string()],
            "[{label}]"
        );
        drop(conn);
        let (version, production) = walk_to_staging(&s, &token);
        // What is live, read the way a person reads it: in Chromium (or,
        // where it is missing outside CI, over plain HTTP).
        let browser = available("Chromium and chromedriver", browser_check()).then(|| {
            let b = Browser::start();
            let password =
                std::fs::read_to_string(s.data.path().join(users::INITIAL_ADMIN_PASSWORD_FILE))
                    .unwrap();
            b.goto(&format!("{}/login", s.running().base));
            b.fill("input#username", "admin");
            b.fill("input#password", password.trim());
            b.click("button[type=submit]");
            b.wait_for("header .who span");
            b
        });
        let views = Views {
            s: &s,
            token: &token,
            browser: browser.as_ref(),
        };
        assert_eq!(
            slot_releases(&s, &token),
            vec![
                ("dev".to_string(), json!("1.0.1")),
                ("test".to_string(), json!("1.0.1")),
                ("staging".to_string(), json!("1.0.1")),
                ("production".to_string(), Value::Null),
            ],
            "[{label}]"
        );

        // The admin approves in the inbox (the API of /approvals).
        let approval = approval_for(&s, &token, production);
        let (status, body) = s.post_json(
            &token,
            &format!("/api/v1/approvals/{approval}"),
            &json!({ "decision": "approve" }),
        );
        assert!(status == 200 || status == 201, "[{label}] {status} {body}");
        // Then staging's health gate, then the swap.
        let d = s.deployment_ended(&token, production);
        assert_eq!(
            d["state"],
            "succeeded",
            "[{label}] {d}\n{}",
            s.deployment_log(&token, production)
        );
        let (status, served) = page_of(&s, "space-game");
        assert_eq!(status, 200, "[{label}]");
        assert!(served.contains(&format!("Release {version}")), "{served}");
        assert_eq!(
            page_of(&s, "space-game-production"),
            (status, served.clone())
        );
        assert_eq!(
            slot_releases(&s, &token)[3],
            ("production".to_string(), json!(version)),
            "[{label}]"
        );
        assert_eq!(d["tasks"][0]["state"], "succeeded", "{d}");
        let (_, approval) = s.get_json(&token, &format!("/api/v1/approvals/{approval}"));
        assert_eq!(approval["state"], "approved", "{approval}");
        // The swap moved staging's release into production and production's
        // (nothing) into staging: preprod has nothing live now.
        agree(
            &views,
            &[("dev", "1.0.1"), ("test", "1.0.1"), ("production", "1.0.1")],
        );

        // The next release, all the way to production.
        let next = s.build(&token, PIPELINE);
        assert_eq!(next, "1.0.2", "[{label}]");
        let d = s.deployment_ended(&token, s.deployment_to(&token, PIPELINE, &next, "dev"));
        assert_eq!(d["state"], "succeeded", "[{label}] {d}");
        agree(
            &views,
            &[("dev", "1.0.2"), ("test", "1.0.1"), ("production", "1.0.1")],
        );
        // Test by hand this time (the last 03:00 fired already).
        let (status, body) = s.post_json(
            &token,
            &format!("/api/v1/pipelines/{PIPELINE}/stages/test/deployments"),
            &json!({ "release": next }),
        );
        assert!(status == 201 || status == 202, "[{label}] {status} {body}");
        let d = s.deployment_ended(&token, body["id"].as_i64().unwrap());
        assert_eq!(d["state"], "succeeded", "[{label}] {d}");
        let (status, body) = s.post_json(
            &token,
            &format!("/api/v1/pipelines/{PIPELINE}/stages/preprod/deployments"),
            &json!({ "release": next }),
        );
        assert!(status == 201 || status == 202, "[{label}] {status} {body}");
        let d = s.deployment_ended(&token, body["id"].as_i64().unwrap());
        assert_eq!(d["state"], "succeeded", "[{label}] {d}");
        agree(
            &views,
            &[
                ("dev", "1.0.2"),
                ("test", "1.0.2"),
                ("preprod", "1.0.2"),
                ("production", "1.0.1"),
            ],
        );
        let production = s.deployment_to(&token, PIPELINE, &next, "production");
        let approval = approval_for(&s, &token, production);
        let (status, body) = s.post_json(
            &token,
            &format!("/api/v1/approvals/{approval}"),
            &json!({ "decision": "approve" }),
        );
        assert!(status == 200 || status == 201, "[{label}] {status} {body}");
        let d = s.deployment_ended(&token, production);
        assert_eq!(d["state"], "succeeded", "[{label}] {d}");
        // Production's old release went to staging: preprod shows 1.0.1.
        agree(
            &views,
            &[
                ("dev", "1.0.2"),
                ("test", "1.0.2"),
                ("preprod", "1.0.1"),
                ("production", "1.0.2"),
            ],
        );

        // Roll production back to 1.0.1: a deployment of production (it has
        // an approval and a gate), here overridden by a release manager.
        let (status, body) = s.post_json(
            &token,
            "/api/v1/apps/space-game/swap",
            &json!({"from": "staging", "to": "production", "rollback": true}),
        );
        assert_eq!(status, 422, "[{label}] {body}");
        assert!(page_of(&s, "space-game").1.contains("Release 1.0.2"));
        let (status, body) = s.post_json(
            &token,
            "/api/v1/apps/space-game/swap",
            &json!({"from": "staging", "to": "production", "rollback": true,
                    "reason": "checkout fails in 1.0.2", "override_reason": "customers are blocked"}),
        );
        assert_eq!(status, 200, "[{label}] {body}");
        assert_eq!(body["deployment"]["trigger"], "rollback", "{body}");
        assert_eq!(body["replaced"], "1.0.2", "{body}");
        let (status, served) = page_of(&s, "space-game");
        assert_eq!(status, 200);
        assert!(served.contains("Release 1.0.1"), "{served}");
        agree(
            &views,
            &[
                ("dev", "1.0.2"),
                ("test", "1.0.2"),
                ("preprod", "1.0.2"),
                ("production", "1.0.1"),
            ],
        );
        let (_, p) = s.get_json(&token, &format!("/api/v1/pipelines/{PIPELINE}"));
        let prod = &p["stages"][3];
        assert_eq!(prod["live"]["trigger"], "rollback", "{p}");
        assert_eq!(prod["live"]["replaced"], "1.0.2", "{p}");
        // The override is in the audit log and on the release.
        let audit = storage::list_audit(&mut s.db.get().unwrap(), None, 200).unwrap();
        assert!(
            audit.iter().any(|a| a.action == "deployment.override"
                && a.actor == "admin"
                && a.detail.contains("customers are blocked")),
            "[{label}] {audit:?}"
        );
        let release = page(&s, &token, &format!("/pipelines/{PIPELINE}/releases/1.0.1"));
        assert!(
            crate::helpers::texts(&release, ".override-note")
                .iter()
                .any(|t| t.contains("overridden by admin: customers are blocked")),
            "{}",
            release.html()
        );
        let board = page(&s, &token, "/");
        assert!(
            crate::helpers::texts(&board, ".rolled-back").len() == 1,
            "the board marks what the rollback replaced: {}",
            board.html()
        );

        // The next release reaches dev; production keeps the rollback.
        let third = s.build(&token, PIPELINE);
        let d = s.deployment_ended(&token, s.deployment_to(&token, PIPELINE, &third, "dev"));
        assert_eq!(d["state"], "succeeded", "[{label}] {d}");
        agree(
            &views,
            &[
                ("dev", "1.0.3"),
                ("test", "1.0.2"),
                ("preprod", "1.0.2"),
                ("production", "1.0.1"),
            ],
        );
    }
}

/// The stages of the demo, and the slot each deploys to.
const STAGE_SLOTS: [(&str, &str); 4] = [
    ("dev", "dev"),
    ("test", "test"),
    ("preprod", "staging"),
    ("production", "production"),
];

/// Where the five views are read: a signed-in Chromium, or plain HTTP.
struct Views<'a> {
    s: &'a Slipway,
    token: &'a str,
    browser: Option<&'a Browser>,
}

impl Views<'_> {
    fn page(&self, path: &str) -> scraper::Html {
        match self.browser {
            Some(b) => {
                b.goto(&format!("{}{path}", self.s.running().base));
                b.wait_for("main");
                b.html()
            }
            None => page(self.s, self.token, path),
        }
    }
}

/// A page as the token's user sees it.
fn page(s: &Slipway, token: &str, path: &str) -> scraper::Html {
    let res = reqwest::blocking::Client::new()
        .get(format!("{}{path}", s.running().base))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    scraper::Html::parse_document(&res.text().unwrap())
}

/// What is live in each stage, as each of the five views tells it: the
/// API, the board, the stage pages, the release pages and /environments.
fn five_views(views: &Views) -> Vec<(&'static str, BTreeMap<String, String>)> {
    use crate::helpers::texts;
    let (_, p) = views
        .s
        .get_json(views.token, &format!("/api/v1/pipelines/{PIPELINE}"));
    let api = p["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|st| {
            Some((
                st["name"].as_str()?.to_string(),
                st["live"]["release"].as_str()?.to_string(),
            ))
        })
        .collect();

    let html = views.page("/");
    let table = scraper::Selector::parse(&format!("#board-{PIPELINE} table.board")).unwrap();
    let (th, tr, td, a) = (
        scraper::Selector::parse("thead th").unwrap(),
        scraper::Selector::parse("tbody tr").unwrap(),
        scraper::Selector::parse("td").unwrap(),
        scraper::Selector::parse("th a").unwrap(),
    );
    let mark = scraper::Selector::parse(".live-mark").unwrap();
    let mut board = BTreeMap::new();
    let mut versions = Vec::new();
    if let Some(table) = html.select(&table).next() {
        let stages: Vec<String> = table
            .select(&th)
            .skip(1)
            .map(|h| h.text().next().unwrap_or("").trim().to_string())
            .collect();
        for row in table.select(&tr) {
            let version = row.select(&a).next().unwrap().text().collect::<String>();
            versions.push(version.clone());
            for (i, cell) in row.select(&td).enumerate() {
                if cell.select(&mark).next().is_some() {
                    board.insert(stages[i].clone(), version.clone());
                }
            }
        }
    }

    let mut stage_pages = BTreeMap::new();
    for (stage, _) in STAGE_SLOTS {
        let html = views.page(&format!("/pipelines/{PIPELINE}/stages/{stage}"));
        if let Some(v) =
            crate::helpers::attrs(&html, "[data-live-release]", "data-live-release").first()
        {
            stage_pages.insert(stage.to_string(), v.clone());
        }
    }

    let mut release_pages = BTreeMap::new();
    for v in &versions {
        let html = views.page(&format!("/pipelines/{PIPELINE}/releases/{v}"));
        for stage in texts(&html, "dd.live-in .live-stage") {
            release_pages.insert(stage, v.clone());
        }
    }

    let html = views.page("/environments");
    let mut environments = BTreeMap::new();
    for (stage, slot) in STAGE_SLOTS {
        if let Some(v) = texts(&html, &format!("tr[data-slot={slot}] a.slot-release")).first() {
            environments.insert(stage.to_string(), v.clone());
        }
    }
    vec![
        ("API", api),
        ("board", board),
        ("stage pages", stage_pages),
        ("release pages", release_pages),
        ("/environments", environments),
    ]
}

/// Every view says exactly `expected` is live (stages not named: nothing).
fn agree(views: &Views, expected: &[(&str, &str)]) {
    let expected: BTreeMap<String, String> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for (view, live) in five_views(views) {
        assert_eq!(
            live, expected,
            "[{}] what {view} says is live",
            views.s.label
        );
    }
}

/// Each slot of the demo app with the release it runs (`null`: none).
fn slot_releases(s: &Slipway, token: &str) -> Vec<(String, Value)> {
    let (status, slots) = s.get_json(token, "/api/v1/apps/space-game/slots");
    assert_eq!(status, 200, "{slots}");
    slots
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["slot"].as_str().unwrap().to_string(),
                x["release"].clone(),
            )
        })
        .collect()
}
