//! The demo end to end (`serve --demo`): the sample app built from its real
//! git repository, deployed to the dev slot by itself, to test when its
//! schedule fires, to staging (preprod) on a manual deploy, and — after
//! management's approval and staging's health gate — into production by a
//! swap. Through the API and the slot router, both databases.

use chrono::Utc;
use serde_json::{Value, json};
use slipway::engine::{demo, users};
use slipway::storage::testing::test_databases;
use slipway::storage::{self, schedules as store};

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

    // Test: on its schedule (03:00 America/Los_Angeles). The stage waits
    // for its next instant; the test makes the scheduler find the last one
    // due, as if 03:00 had just come.
    {
        let mut conn = s.db.get().unwrap();
        let p = storage::find_pipeline(&mut conn, PIPELINE)
            .unwrap()
            .unwrap();
        let stage = store::find_stage(&mut conn, p.id, "test").unwrap().unwrap();
        let schedule = slipway::engine::schedules::schedule_of_stage(&stage).unwrap();
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
        let (status, page) = page_of(&s, "space-game");
        assert_eq!(status, 200, "[{label}]");
        assert!(page.contains(&format!("Release {version}")), "{page}");
        assert_eq!(page_of(&s, "space-game-production"), (status, page.clone()));
        assert_eq!(
            slot_releases(&s, &token)[3],
            ("production".to_string(), json!(version)),
            "[{label}]"
        );
        assert_eq!(d["tasks"][0]["state"], "succeeded", "{d}");
        let (_, approval) = s.get_json(&token, &format!("/api/v1/approvals/{approval}"));
        assert_eq!(approval["state"], "approved", "{approval}");
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
