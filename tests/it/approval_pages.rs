//! The approval inbox and the approval pages, as a person signed in with a
//! browser uses them: what waits for them, the forms (approve, reject with
//! a comment, defer, approve selected), the count in the navigation, the
//! history tab, CSRF — on both databases, with real builds and deployments.

use std::time::Duration;

use reqwest::blocking::{Client, Response};
use scraper::Html;
use serde_json::json;
use slipway::domain::Role;

use crate::deployments::{pipeline, repo};
use crate::helpers::{
    PASSWORD, TestApp, attrs, browser, build, csrf_of, deployment, each_backend, ended, get_json,
    import, member, post_json, texts, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// Manual stages named `stages`, each approved before by `group:management`.
fn approval_stages(stages: &[&str], extra: &str) -> String {
    stages
        .iter()
        .map(|s| {
            format!(
                r#"  - name: {s}
    trigger: manual
    approvals: {{ before: {{ approvers: ["group:management"], policy: any{extra} }} }}
    tasks: [ {{ shell: "echo live $SLIPWAY_VERSION" }} ]
"#
            )
        })
        .collect()
}

/// Deploys `version` to `stage` as the holder of `token`; returns the deployment id.
pub fn deploy(app: &TestApp, token: &str, name: &str, stage: &str, version: &str) -> i64 {
    let (status, v) = post_json(
        app,
        token,
        &format!("/api/v1/pipelines/{name}/stages/{stage}/deployments"),
        &json!({ "release": version }),
    );
    assert_eq!(status, 202, "[{}] {v}", app.backend);
    v["id"].as_i64().unwrap()
}

/// Waits until deployment `id` has its approval; returns the approval's id.
pub fn approval_of(app: &TestApp, token: &str, id: i64) -> i64 {
    wait_until(
        &format!("an approval of deployment #{id}"),
        DEADLINE,
        || {
            deployment(app, token, id)["approvals"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(|a| a["id"].as_i64())
        },
    )
}

/// A signed-in browser of `name`.
fn signed_in(app: &TestApp, name: &str) -> Client {
    let client = browser();
    let res = app.sign_in(&client, name, PASSWORD, "/approvals");
    assert_eq!(res.status(), 303, "[{}] sign-in of {name}", app.backend);
    client
}

fn post(app: &TestApp, client: &Client, path: &str, form: &[(&str, &str)]) -> Response {
    client.post(app.url(path)).form(form).send().unwrap()
}

fn location(res: &Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

fn nav_count(html: &Html) -> String {
    texts(html, "header a.nav-approvals").join(" ")
}

#[test]
fn a_manager_sees_decides_and_finds_the_decision_in_the_history() {
    each_backend(|app| {
        let repo = repo();
        import(
            app,
            &pipeline("web", &repo, &approval_stages(&["production"], "")),
        );
        let dana = member(app, "dana", Role::Deployer, &["management"]);
        member(app, "maria", Role::Viewer, &["management"]);
        member(app, "vic", Role::Viewer, &[]);
        let version = build(app, &dana, "web");
        let id = deploy(app, &dana, "web", "production", &version);
        let approval = approval_of(app, &dana, id);
        let (_, a) = get_json(app, &dana, &format!("/api/v1/approvals/{approval}"));
        let sha = a["commits"][0]["sha"].as_str().unwrap().to_string();
        let page = format!("/approvals/{approval}");

        // Maria's inbox: the approval with its commit; "Approvals (1)".
        let maria = signed_in(app, "maria");
        let html = app.page_as(&maria, "/approvals");
        assert_eq!(nav_count(&html), "Approvals (1)", "[{}]", app.backend);
        let titles = texts(&html, "article.approval h3");
        assert_eq!(titles.len(), 1, "{titles:?}");
        assert!(
            titles[0].contains(&format!("web {version} → production")),
            "{titles:?}"
        );
        assert_eq!(
            attrs(&html, "table.approval-commits code", "title"),
            vec![sha.clone()]
        );
        assert_eq!(
            texts(&html, "table.approval-commits code"),
            vec![sha[..10].to_string()]
        );
        let facts = texts(&html, "article.approval dl.facts").join(" ");
        assert!(facts.contains("Requested by dana"), "{facts}");
        assert!(facts.contains("waiting less than a minute"), "{facts}");
        assert!(facts.contains("Still needed"), "{facts}");
        assert_eq!(attrs(&html, "article.approval time", "datetime").len(), 2);
        assert_eq!(
            attrs(&html, "input[name=ids]", "value"),
            vec![approval.to_string()]
        );
        assert_eq!(attrs(&html, ".approve-form", "action"), vec![page.clone()]);

        // Dana requested it: her inbox says why she may not approve.
        let dana_browser = signed_in(app, "dana");
        let html = app.page_as(&dana_browser, "/approvals");
        let why = texts(&html, ".cannot-approve").join(" ");
        assert!(
            why.contains("You cannot approve this"),
            "[{}] {why}",
            app.backend
        );
        assert!(attrs(&html, ".approve-form", "action").is_empty());
        assert!(attrs(&html, "input[name=ids]", "value").is_empty());

        // Vic is not in management: nothing waits for him.
        let vic = signed_in(app, "vic");
        let html = app.page_as(&vic, "/approvals");
        assert_eq!(nav_count(&html), "Approvals (0)");
        assert!(texts(&html, "article.approval").is_empty());
        assert_eq!(
            texts(&html, "p.empty"),
            vec!["Nothing is waiting for your approval."]
        );

        // Its page tells him why he has no forms.
        let html = app.page_as(&vic, &page);
        let note = texts(&html, "p.not-yours").join(" ");
        assert!(note.contains("not among its approvers"), "{note}");
        assert!(attrs(&html, "form.reject-form", "action").is_empty());

        // Rejecting without a comment: 422, the message next to the form.
        let html = app.page_as(&maria, "/approvals");
        let csrf = csrf_of(&html);
        let res = post(
            app,
            &maria,
            &page,
            &[
                ("csrf", &csrf),
                ("decision", "reject"),
                ("comment", "  "),
                ("from", "inbox"),
            ],
        );
        assert_eq!(res.status(), 422, "[{}]", app.backend);
        let html = Html::parse_document(&res.text().unwrap());
        let error = texts(&html, &format!("article#approval-{approval} p.form-error"));
        assert_eq!(error.len(), 1, "{error:?}");
        assert!(error[0].contains("comment"), "{error:?}");

        // Without the CSRF token: 403, nothing decided.
        let res = post(app, &maria, &page, &[("decision", "approve")]);
        assert_eq!(res.status(), 403);
        assert_eq!(deployment(app, &dana, id)["state"], "waiting_for_approval");

        // Approve through the form: back to the inbox, which says so.
        let res = post(
            app,
            &maria,
            &page,
            &[("csrf", &csrf), ("decision", "approve"), ("from", "inbox")],
        );
        assert_eq!(
            res.status(),
            303,
            "[{}] {}",
            app.backend,
            res.text().unwrap()
        );
        assert_eq!(location(&res), "/approvals");
        let html = app.page_as(&maria, "/approvals");
        let flash = texts(&html, "p.flash").join(" ");
        assert!(
            flash.contains(&format!("You approved approval #{approval}"))
                && flash.contains("the deployment goes on"),
            "{flash}"
        );
        assert_eq!(
            texts(&html, "p.empty"),
            vec!["Nothing is waiting for your approval."]
        );
        assert_eq!(nav_count(&html), "Approvals (0)");
        assert_eq!(ended(app, &dana, id)["state"], "succeeded");

        // The history tab has the decision.
        let html = app.page_as(&maria, "/approvals?tab=history");
        let rows = texts(&html, "table.approval-history tbody tr");
        assert_eq!(rows.len(), 1, "{rows:?}");
        for part in [
            "approved",
            &format!("web {version}"),
            "production",
            "Approved",
        ] {
            assert!(rows[0].contains(part), "{part}: {rows:?}");
        }

        // The approval's own page: closed, with Maria's decision, no forms.
        let html = app.page_as(&maria, &page);
        let facts = texts(&html, "dl.facts").join(" ");
        assert!(facts.contains("Approved"), "{facts}");
        let decisions = texts(&html, "ul.approval-decisions li");
        assert_eq!(decisions.len(), 1);
        assert!(decisions[0].starts_with("maria approved"), "{decisions:?}");
        assert!(attrs(&html, "form.reject-form", "action").is_empty());

        // The deployment's page lists its approval.
        let url = format!("/pipelines/web/releases/{version}/deployments/{id}");
        let html = app.page_as(&maria, &url);
        let section = texts(&html, "section.deployment-approval").join(" ");
        assert!(
            section.contains(&format!("Approval #{approval}"))
                && section.contains("Approved")
                && section.contains("maria approved"),
            "{section}"
        );
    });
}

#[test]
fn approve_selected_decides_each_and_says_which_failed() {
    each_backend(|app| {
        // Two pipelines, each with a production stage waiting for management.
        let repo = repo();
        import(
            app,
            &pipeline("eu", &repo, &approval_stages(&["production"], "")),
        );
        import(
            app,
            &pipeline("us", &repo, &approval_stages(&["production"], "")),
        );
        let dana = member(app, "dana", Role::Deployer, &[]);
        member(app, "maria", Role::Viewer, &["management"]);
        let eu_version = build(app, &dana, "eu");
        let us_version = build(app, &dana, "us");
        let eu = deploy(app, &dana, "eu", "production", &eu_version);
        let us = deploy(app, &dana, "us", "production", &us_version);
        let (a_eu, a_us) = (approval_of(app, &dana, eu), approval_of(app, &dana, us));

        let maria = signed_in(app, "maria");
        let html = app.page_as(&maria, "/approvals");
        assert_eq!(nav_count(&html), "Approvals (2)");
        let csrf = csrf_of(&html);

        // Deferring one moves it to "Deferred" and out of the count.
        let until = (chrono::Utc::now() + chrono::Duration::hours(2))
            .format("%Y-%m-%dT%H:%M")
            .to_string();
        let res = post(
            app,
            &maria,
            &format!("/approvals/{a_eu}"),
            &[
                ("csrf", &csrf),
                ("decision", "defer"),
                ("until", &until),
                ("comment", "after the board meeting"),
                ("from", "inbox"),
            ],
        );
        assert_eq!(
            res.status(),
            303,
            "[{}] {}",
            app.backend,
            res.text().unwrap()
        );
        let html = app.page_as(&maria, "/approvals");
        assert_eq!(nav_count(&html), "Approvals (1)");
        let deferred = texts(&html, ".approval-deferred");
        assert_eq!(deferred.len(), 1, "{deferred:?}");
        assert!(
            deferred[0].contains(&until.replace('T', " ")),
            "{deferred:?} {until}"
        );
        assert!(texts(&html, "h2").iter().any(|h| h == "Deferred (1)"));

        // Nothing selected: 422 with a message.
        let res = post(app, &maria, "/approvals/batch", &[("csrf", &csrf)]);
        assert_eq!(res.status(), 422);
        assert!(res.text().unwrap().contains("Select at least one approval"));
        // Too many at once: 422, nothing decided.
        let many: Vec<String> = (1..=101).map(|n| n.to_string()).collect();
        let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
        form.extend(many.iter().map(|id| ("ids", id.as_str())));
        let res = post(app, &maria, "/approvals/batch", &form);
        assert_eq!(res.status(), 422);
        assert!(res.text().unwrap().contains("at most 100"));

        // Both, and one that does not exist: two succeed, one fails.
        let (eu_id, us_id) = (a_eu.to_string(), a_us.to_string());
        let res = post(
            app,
            &maria,
            "/approvals/batch",
            &[
                ("csrf", &csrf),
                ("ids", &eu_id),
                ("ids", &us_id),
                ("ids", "999999"),
            ],
        );
        assert_eq!(res.status(), 200);
        let html = Html::parse_document(&res.text().unwrap());
        let ok = texts(&html, ".batch-result li.batch-ok");
        assert_eq!(ok.len(), 2, "[{}] {ok:?}", app.backend);
        let failed = texts(&html, ".batch-result li.batch-failed");
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(
            failed[0].contains("There is no approval #999999"),
            "{failed:?}"
        );
        assert_eq!(ended(app, &dana, eu)["state"], "succeeded");
        assert_eq!(ended(app, &dana, us)["state"], "succeeded");

        // Approving again: the approval is closed, the message says so.
        let res = post(
            app,
            &maria,
            "/approvals/batch",
            &[("csrf", &csrf), ("ids", &eu_id)],
        );
        let html = Html::parse_document(&res.text().unwrap());
        let failed = texts(&html, ".batch-result li.batch-failed").join(" ");
        assert!(failed.contains("approved already"), "{failed}");
        let history = texts(
            &app.page_as(&maria, "/approvals?tab=history"),
            "table.approval-history tbody tr",
        );
        assert_eq!(history.len(), 3, "approve, approve, defer: {history:?}");
        assert!(history[2].contains("deferred") && history[2].contains("after the board meeting"));
    });
}

#[test]
fn bad_decisions_and_unknown_approvals_are_clear_4xx() {
    each_backend(|app| {
        member(app, "maria", Role::Viewer, &["management"]);
        let maria = signed_in(app, "maria");
        let html = app.page_as(&maria, "/approvals");
        let csrf = csrf_of(&html);
        assert_eq!(
            maria
                .get(app.url("/approvals/424242"))
                .send()
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            maria
                .get(app.url("/approvals?tab=nope"))
                .send()
                .unwrap()
                .status(),
            400
        );
        let res = post(
            app,
            &maria,
            "/approvals/424242",
            &[("csrf", &csrf), ("decision", "maybe")],
        );
        assert_eq!(res.status(), 422);
        assert!(
            res.text()
                .unwrap()
                .contains("Choose Approve, Reject or Defer")
        );
        let res = post(
            app,
            &maria,
            "/approvals/424242",
            &[("csrf", &csrf), ("decision", "approve")],
        );
        assert_eq!(res.status(), 404);
        let html = app.page_as(&maria, "/approvals?tab=history");
        assert_eq!(
            texts(&html, "p.empty"),
            vec!["You have not decided on any approval yet."]
        );
    });
}
