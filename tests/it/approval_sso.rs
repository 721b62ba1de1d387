//! Approvals with single sign-on (issue 5): in a real headless Chromium, a
//! member of `management` signs in through the test OpenID provider and
//! approves a waiting production deployment in the inbox; and a stage with
//! `fresh_sign_in: 15m` sends a person signed in with a password to the
//! provider (`max_age`) before their approval counts.

use std::time::Duration;

use diesel::prelude::*;
use scraper::Html;
use slipway::domain::Role;
use slipway::storage::schema::users;
use slipway::web::oidc::fresh_sign_in_url;

use crate::approval_pages::{approval_of, deploy};
use crate::deployments::{pipeline, repo};
use crate::helpers::{
    TestApp, attrs, browser, build, csrf_of, deployment, ended, import, member, texts,
};
use crate::idp::{
    AtProvider, Browser, available, browser_check, each_backend_with_sso, through_provider,
};

/// A pipeline `web` whose manual stage `production` is approved before by
/// `group:management` (with `extra` terms, e.g. `, fresh_sign_in: 15m`).
fn production(app: &TestApp, extra: &str) -> crate::git::TempRepo {
    let repo = repo();
    let stages = format!(
        r#"  - name: production
    trigger: manual
    approvals: {{ before: {{ approvers: ["group:management"], policy: any{extra} }} }}
    tasks: [ {{ shell: "echo live $SLIPWAY_VERSION" }} ]
"#
    );
    import(app, &pipeline("web", &repo, &stages));
    repo
}

#[test]
fn tim_signs_in_through_sso_and_approves_production_in_the_inbox_in_a_real_browser() {
    each_backend_with_sso(|app, _idp| {
        if !available("Chromium and chromedriver", browser_check()) {
            return;
        }
        let _repo = production(app, "");
        let dana = member(app, "dana", Role::Deployer, &[]);
        let version = build(app, &dana, "web");
        let id = deploy(app, &dana, "web", "production", &version);
        let approval = approval_of(app, &dana, id);

        let browser = Browser::start();
        browser.goto(&app.url("/approvals"));
        browser.wait_for_url("the sign-in page", |u| u.path() == "/login");
        browser.click("a.button");
        // tim is in `management` at the provider.
        browser.fill("input[name=login]", "tim");
        browser.fill("input[name=password]", "tim's password");
        browser.click("button[type=submit]");
        browser.wait_for("input[name=prompt][value=consent]");
        browser.click("button[type=submit]");
        let port = reqwest::Url::parse(&app.base).unwrap().port();
        browser.wait_for_url("the inbox", |u| {
            u.port() == port && u.path() == "/approvals"
        });

        // The inbox shows the waiting production deployment.
        browser.wait_for(&format!("article#approval-{approval}"));
        let html = browser.html();
        assert_eq!(
            texts(&html, "header a.nav-approvals"),
            vec!["Approvals (1)"],
            "[{}]",
            app.backend
        );
        let title = texts(&html, "article.approval h3").join(" ");
        assert!(
            title.contains(&format!("web {version} → production")),
            "{title}"
        );

        browser.click(&format!("article#approval-{approval} .approve-form button"));
        browser.wait_for("p.flash");
        let html = browser.html();
        let flash = texts(&html, "p.flash").join(" ");
        assert!(flash.contains("You approved"), "[{}] {flash}", app.backend);
        assert_eq!(
            texts(&html, "p.empty"),
            vec!["Nothing is waiting for your approval."]
        );
        assert_eq!(ended(app, &dana, id)["state"], "succeeded");
    });
}

#[test]
fn a_fresh_sign_in_stage_sends_a_password_user_to_sso_with_max_age_first() {
    each_backend_with_sso(|app, _idp| {
        let _repo = production(app, ", fresh_sign_in: 15m");
        let dana = member(app, "dana", Role::Deployer, &[]);
        // tim has a password and is linked to his SSO identity.
        member(app, "tim", Role::Viewer, &["management"]);
        {
            let mut conn = app.conn();
            diesel::update(users::table.filter(users::username.eq("tim")))
                .set(users::sso_subject.eq(Some("tim")))
                .execute(&mut *conn)
                .unwrap();
        }
        let version = build(app, &dana, "web");
        let id = deploy(app, &dana, "web", "production", &version);
        let approval = approval_of(app, &dana, id);
        let page = format!("/approvals/{approval}");

        let client = browser();
        let res = app.sign_in(&client, "tim", "a long test password", &page);
        assert_eq!(res.status(), 303);
        let html =
            Html::parse_document(&client.get(app.url(&page)).send().unwrap().text().unwrap());
        let note = texts(&html, "article.approval p.small").join(" ");
        assert!(
            note.contains("sign in through SSO again"),
            "[{}] {note}",
            app.backend
        );
        let res = client
            .post(app.url(&page))
            .form(&[("csrf", csrf_of(&html).as_str()), ("decision", "approve")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303, "[{}]", app.backend);
        let to = res.headers()["location"].to_str().unwrap().to_string();
        assert_eq!(to, fresh_sign_in_url(&page, Duration::from_secs(15 * 60)));
        assert_eq!(
            to,
            format!("/auth/oidc/login?next=%2Fapprovals%2F{approval}&max_age=900")
        );
        assert_eq!(deployment(app, &dana, id)["state"], "waiting_for_approval");

        // At the provider (asked for the password again), then back.
        let (res, _, prompts) = through_provider(app, &client, &to, AtProvider::SignIn("tim"));
        assert_eq!(prompts.first().map(String::as_str), Some("login"));
        assert_eq!(res.status(), 303, "{}", res.text().unwrap_or_default());
        assert_eq!(res.headers()["location"].to_str().unwrap(), page);

        // Now the approval counts.
        let html =
            Html::parse_document(&client.get(app.url(&page)).send().unwrap().text().unwrap());
        assert_eq!(attrs(&html, ".approve-form", "action"), vec![page.clone()]);
        let res = client
            .post(app.url(&page))
            .form(&[("csrf", csrf_of(&html).as_str()), ("decision", "approve")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"].to_str().unwrap(), page);
        let html =
            Html::parse_document(&client.get(app.url(&page)).send().unwrap().text().unwrap());
        let flash = texts(&html, "p.flash").join(" ");
        assert!(flash.contains("You approved"), "[{}] {flash}", app.backend);
        assert_eq!(ended(app, &dana, id)["state"], "succeeded");
    });
}
