//! Issue 13, item 1, in a real browser: production changes only through
//! the pipeline. A swap into the production slot, whose stage has an
//! approval and a health gate, runs as a deployment of that stage and waits
//! for both; a rollback needs a reason; a release manager's override skips
//! the approval and the gate and is recorded with its reason.

use slipway::domain::Role;
use slipway::engine::{pipelines, users};
use slipway::storage::{self, testing::test_databases};

use crate::helpers::texts;
use crate::idp::{Browser, available, browser_check};
use crate::slots::{PIPELINE, Slipway};

/// The shop pipeline with production guarded: anna approves, and
/// staging must answer its health check through the router.
fn guarded(router: std::net::SocketAddr) -> String {
    PIPELINE.replace(
        "    environment: { slot: { app: shop, name: production } }\n",
        &format!(
            r#"    environment: {{ slot: {{ app: shop, name: production }} }}
    approvals:
      before: {{ approvers: ["anna"] }}
    gates:
      before:
        interval: 1s
        steady: 1s
        timeout: 1m
        checks:
          - name: staging answers
            http:
              url: "http://{router}/health"
              headers: {{ Host: shop-staging.localhost }}
              success: "status == 200"
"#
        ),
    )
}

fn rollout(browser: &Browser, base: &str, what: &str, f: impl Fn(&scraper::Html) -> bool) {
    let start = std::time::Instant::now();
    loop {
        browser.goto(&format!("{base}{}", browser.url().path()));
        let html = browser.html();
        if f(&html) {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "never saw {what}:\n{}",
            html.html()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn a_swap_into_production_waits_for_its_approval_and_gate_and_an_override_is_recorded() {
    if !available("Chromium and chromedriver", browser_check()) {
        return;
    }
    for (label, test_db) in test_databases() {
        let s = Slipway::with(label.clone(), test_db, |conn, _, router| {
            let definition = pipelines::parse(&guarded(router), "shop.yaml").unwrap();
            pipelines::import(conn, definition, None, "test", None).unwrap();
            for (name, role) in [("rita", Role::ReleaseManager), ("anna", Role::Deployer)] {
                users::create_user(
                    conn,
                    users::NewLocalUser {
                        username: name,
                        role,
                        groups: &[],
                        password: "a long test password",
                    },
                    "test",
                )
                .unwrap();
            }
        });
        let anna = users::create_token(&mut s.db.get().unwrap(), "anna", "test", "test").unwrap();
        s.release("1.0.1", false);
        s.release("1.0.2", false);
        s.deploy("production", "1.0.1").unwrap();
        s.deploy("staging", "1.0.2").unwrap();
        for (stage, version) in [
            ("staging", "1.0.1"),
            ("production", "1.0.1"),
            ("staging", "1.0.2"),
        ] {
            s.passed(stage, version);
        }
        let client = s.client();
        let base = s.running().base.clone();
        let browser = Browser::start();
        browser.goto(&format!("{base}/login?next=/environments"));
        browser.fill("input#username", "rita");
        browser.fill("input#password", "a long test password");
        browser.click("button[type=submit]");
        browser.wait_for("table.slots");

        // Swap staging into production: the confirmation page first.
        browser.click("tr[data-slot=staging] select[name=to] option[value=production]");
        browser.click("tr[data-slot=staging] form.swap-form button");
        browser.wait_for("table.swap-changes");
        let review = browser.html();
        assert_eq!(
            texts(&review, "h1"),
            ["Swap staging into production"],
            "[{label}]"
        );
        let guards = texts(&review, "ul.guards li");
        assert_eq!(
            guards,
            [
                "approval before the deployment by anna",
                "health gate before the deployment (staging answers)"
            ],
            "[{label}]"
        );
        browser.click("form.swap-confirm button[type=submit]");
        browser.wait_for_url("the deployment page", |u| {
            u.path().contains("/deployments/")
        });
        let deployment_page = browser.url().path().to_string();
        assert!(
            deployment_page.starts_with("/pipelines/shop-web/releases/1.0.2/deployments/"),
            "[{label}] {deployment_page}"
        );
        let html = browser.html();
        let facts = texts(&html, "dl.facts dd");
        assert!(
            facts.iter().any(|f| f == "swap of slots"),
            "[{label}] {facts:?}"
        );
        assert!(
            texts(&html, ".deployment-state")
                .iter()
                .any(|t| t.contains("Waiting for approval")),
            "[{label}] {}",
            html.html()
        );
        // Nothing changed in production while it waits.
        assert_eq!(
            s.get(&client, "shop", "/"),
            (200, "release 1.0.1\n".into()),
            "[{label}]"
        );

        // anna approves (rita asked, so she may not); then the gate, then
        // the swap.
        let (status, inbox) = s.get_json(&anna, "/api/v1/approvals");
        assert_eq!(status, 200, "{inbox}");
        let items = inbox
            .as_array()
            .or_else(|| inbox["approvals"].as_array())
            .or_else(|| inbox["items"].as_array())
            .cloned()
            .unwrap_or_default();
        let id = items
            .first()
            .and_then(|a| a["id"].as_i64())
            .unwrap_or_else(|| panic!("[{label}] no approval for anna: {inbox}"));
        let (status, body) = s.post_json(
            &anna,
            &format!("/api/v1/approvals/{id}"),
            &serde_json::json!({ "decision": "approve" }),
        );
        assert!(status == 200 || status == 201, "[{label}] {status} {body}");
        rollout(&browser, &base, "the swap succeed", |html| {
            texts(html, ".deployment-state")
                .iter()
                .any(|t| t.contains("Succeeded"))
        });
        assert_eq!(
            s.get(&client, "shop", "/"),
            (200, "release 1.0.2\n".into()),
            "[{label}]"
        );
        let evidence = browser.html();
        assert!(
            evidence.html().contains("staging answers"),
            "[{label}] the gate's evidence is on the page"
        );

        // Roll back, overriding the approval and the gate with a reason.
        browser.goto(&format!("{base}/environments"));
        browser.click("tr[data-slot=production] form.swap-form button.danger");
        browser.wait_for("form.swap-confirm");
        assert_eq!(
            texts(&browser.html(), "h1"),
            ["Roll back production to 1.0.1"],
            "[{label}]"
        );
        browser.fill("#swap-reason", "checkout fails in 1.0.2");
        browser.click("input[name=override]");
        browser.fill("#override-reason", "customers cannot pay");
        browser.click("form.swap-confirm button[type=submit]");
        browser.wait_for_url("the rollback's deployment page", |u| {
            u.path()
                .starts_with("/pipelines/shop-web/releases/1.0.1/deployments/")
        });
        rollout(&browser, &base, "the rollback succeed", |html| {
            texts(html, ".deployment-state")
                .iter()
                .any(|t| t.contains("Succeeded"))
        });
        let html = browser.html();
        let facts = texts(&html, "dl.facts dd");
        assert!(facts.iter().any(|f| f == "rollback"), "[{label}] {facts:?}");
        assert!(
            facts
                .iter()
                .any(|f| f.contains("overridden") && f.contains("customers cannot pay")),
            "[{label}] {facts:?}"
        );
        assert_eq!(
            s.get(&client, "shop", "/"),
            (200, "release 1.0.1\n".into()),
            "[{label}]"
        );
        let audit = storage::list_audit(&mut s.db.get().unwrap(), None, 200).unwrap();
        let overrides: Vec<_> = audit
            .iter()
            .filter(|a| a.action == "deployment.override")
            .collect();
        assert_eq!(overrides.len(), 1, "[{label}] {audit:?}");
        assert_eq!(overrides[0].actor, "rita");
        assert!(
            overrides[0].detail.contains("customers cannot pay"),
            "{:?}",
            overrides[0]
        );
        // No approval was asked for the rollback.
        let (approvals,): (i64,) = {
            use diesel::prelude::*;
            let mut conn = s.db.get().unwrap();
            diesel::sql_query("SELECT COUNT(*) AS n FROM approvals")
                .get_result::<Count>(&mut conn)
                .map(|c| (c.n,))
                .unwrap()
        };
        assert_eq!(
            approvals, 1,
            "[{label}] only the swap asked for an approval"
        );
    }
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}
