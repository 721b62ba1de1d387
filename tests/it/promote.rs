//! Promote where people look: the board's cells and the release page offer
//! "Promote to STAGE" / "Deploy to STAGE" / "Retry" only where the stage
//! rules and the person's rights allow, and say why not; the stage page is
//! an overview (Deploy at the top) with its configuration form on a page of
//! its own; rolling back is its own form with a required reason; failed
//! builds show on the board with Retry. Real builds and deployments, both
//! databases.

use reqwest::blocking::Client;
use scraper::{ElementRef, Html, Selector};
use slipway::domain::Role;
use slipway::storage;

use crate::deployments::{pipeline, repo};
use crate::helpers::{
    SPEC_PIPELINE, TestApp, attrs, build, build_json, csrf_of, deployment_to, each_backend, ended,
    finished, import, queue, texts,
};

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn get(app: &TestApp, client: &Client, path: &str) -> Html {
    let res = client.get(app.url(path)).send().unwrap();
    assert_eq!(res.status(), 200, "[{}] GET {path}", app.backend);
    Html::parse_document(&res.text().unwrap())
}

/// The text and the buttons of one board cell (`row` 0 = newest release,
/// `stage` 0 = the first stage column).
fn cell(html: &Html, pipeline: &str, row: usize, stage: usize) -> (String, Vec<String>) {
    let table = sel(&format!("section#board-{pipeline} table.board tbody tr"));
    let tr = html.select(&table).nth(row).expect("a board row");
    let td: ElementRef<'_> = tr.select(&sel("td")).nth(stage).expect("a cell");
    let text = td.text().collect::<Vec<_>>().join(" ");
    let buttons = td
        .select(&sel("form button"))
        .map(|b| b.text().collect::<String>().trim().to_string())
        .collect();
    (text, buttons)
}

/// Posts the form whose button says `label` on `html`, as a browser would
/// (its hidden fields); returns the answer.
fn press(app: &TestApp, client: &Client, html: &Html, label: &str) -> reqwest::blocking::Response {
    let form = html
        .select(&sel("form"))
        .find(|f| {
            f.select(&sel("button"))
                .any(|b| b.text().collect::<String>().trim() == label)
        })
        .unwrap_or_else(|| panic!("a form with a button {label:?}"));
    let action = form.value().attr("action").unwrap().to_string();
    let fields: Vec<(String, String)> = form
        .select(&sel("input[type=hidden]"))
        .map(|i| {
            (
                i.value().attr("name").unwrap().to_string(),
                i.value().attr("value").unwrap_or("").to_string(),
            )
        })
        .collect();
    client.post(app.url(&action)).form(&fields).send().unwrap()
}

fn location(res: &reqwest::blocking::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

const STAGES: &str = r#"  - name: dev
    trigger: { after: build }
  - name: test
    tasks: [ { shell: "echo tested" } ]
  - name: production
    deployers: [mara]
    tasks: [ { shell: "echo live" } ]
"#;

#[test]
fn board_cells_and_the_release_page_promote_where_allowed_and_say_why_not() {
    each_backend(|app| {
        let repo = repo();
        import(app, &pipeline("promo", &repo, STAGES));
        let token = app.token("dana", Role::Deployer);
        let v = build(app, &token, "promo");
        assert_eq!(v, "1.0.1");
        ended(app, &token, deployment_to(app, &token, "promo", &v, "dev"));

        // A deployer: "Promote to test" where 1.0.1 succeeded in dev;
        // nothing in dev (it is live there) or production (after test).
        let paula = app.signed_in("paula", Role::Deployer);
        let board = get(app, &paula, "/");
        let (_, dev) = cell(&board, "promo", 0, 0);
        assert!(dev.is_empty(), "{dev:?}");
        let (_, test) = cell(&board, "promo", 0, 1);
        assert_eq!(test, ["Promote to test"]);
        let (text, production) = cell(&board, "promo", 0, 2);
        assert!(production.is_empty(), "{production:?}");
        assert!(text.contains("manual: once it succeeds in test"), "{text}");
        let release = get(app, &paula, "/pipelines/promo/releases/1.0.1");
        let buttons = texts(&release, "section.stage-deployments form button");
        assert_eq!(buttons, ["Promote to test"]);
        let refusals = texts(&release, "section.stage-deployments .stage-refusal").join(" ");
        assert!(
            refusals.contains("needs test to succeed first"),
            "{refusals}"
        );

        // A viewer: no button, the reason instead.
        let vic = app.signed_in("vic", Role::Viewer);
        let board = get(app, &vic, "/");
        let (text, buttons) = cell(&board, "promo", 0, 1);
        assert!(buttons.is_empty(), "{buttons:?}");
        assert!(text.contains("a viewer may not deploy"), "{text}");
        let release = get(app, &vic, "/pipelines/promo/releases/1.0.1");
        assert!(texts(&release, "section.stage-deployments form").is_empty());
        assert!(
            texts(&release, ".stage-refusal")
                .join(" ")
                .contains("a viewer may not deploy")
        );

        // Pressing it queues the deployment and comes back with a message.
        let board = get(app, &paula, "/");
        let res = press(app, &paula, &board, "Promote to test");
        assert_eq!(res.status(), 303, "[{}]", app.backend);
        assert_eq!(location(&res), "/");
        let board = get(app, &paula, "/");
        let flash = texts(&board, "p.flash").join(" ");
        assert!(flash.contains("1.0.1 is queued for test"), "{flash}");
        let id = deployment_to(app, &token, "promo", &v, "test");
        let d = ended(app, &token, id);
        assert_eq!(d["state"], "succeeded", "{d}");
        assert_eq!(d["requested_by"], "paula");
        assert_eq!(d["trigger"], "manual");
        // The message is shown once.
        assert!(texts(&get(app, &paula, "/"), "p.flash").is_empty());

        // Production lists its deployers: paula is not one of them.
        let board = get(app, &paula, "/");
        let (text, buttons) = cell(&board, "promo", 0, 2);
        assert!(buttons.is_empty(), "{buttons:?}");
        assert!(
            text.contains("you are not a deployer of production"),
            "{text}"
        );
        let release = get(app, &paula, "/pipelines/promo/releases/1.0.1");
        assert!(texts(&release, "section.stage-deployments form").is_empty());
        assert!(
            texts(&release, ".stage-refusal")
                .join(" ")
                .contains("you are not a deployer of production")
        );
        let overview = get(app, &paula, "/pipelines/promo/stages/production");
        assert!(attrs(&overview, "form.deploy-form", "action").is_empty());
        assert!(
            texts(&overview, "section.deploy")
                .join(" ")
                .contains("You are not a deployer of production")
        );
        // Mara is: she promotes it from the release page.
        let mara = app.signed_in("mara", Role::Deployer);
        let (_, buttons) = cell(&get(app, &mara, "/"), "promo", 0, 2);
        assert_eq!(buttons, ["Promote to production"]);
        let release = get(app, &mara, "/pipelines/promo/releases/1.0.1");
        let res = press(app, &mara, &release, "Promote to production");
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), "/pipelines/promo/releases/1.0.1");
        let release = get(app, &mara, "/pipelines/promo/releases/1.0.1");
        assert!(
            texts(&release, "p.flash")
                .join(" ")
                .contains("1.0.1 is queued for production")
        );
        let d = ended(
            app,
            &token,
            deployment_to(app, &token, "promo", &v, "production"),
        );
        assert_eq!(d["state"], "succeeded", "{d}");
        // Posting as paula anyway is refused by the same rule.
        let res = paula
            .post(app.url("/pipelines/promo/stages/production/deploy"))
            .form(&[
                ("release", "1.0.1"),
                ("csrf", csrf_of(&get(app, &paula, "/")).as_str()),
            ])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);
    });
}

#[test]
fn the_stage_overview_puts_deploy_first_and_the_form_on_its_own_page() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let rita = app.signed_in("rita", Role::ReleaseManager);
        let path = "/pipelines/space-game-web/stages/test";
        let res = rita.get(app.url(path)).send().unwrap();
        assert_eq!(res.status(), 200);
        let body = res.text().unwrap();
        let html = Html::parse_document(&body);
        assert_eq!(texts(&html, "h1"), ["Stage test"]);
        // Deploy near the top: before the configuration summary.
        let deploy = body
            .find("id=\"deploy-heading\"")
            .expect("a Deploy section");
        let config = body
            .find("id=\"configuration\"")
            .expect("a configuration summary");
        assert!(deploy < config, "Deploy comes before the configuration");
        assert!(attrs(&html, "#stage-form", "action").is_empty());
        let summary = texts(&html, "section.stage-configuration").join(" ");
        assert!(summary.contains("scheduled"), "{summary}");
        assert_eq!(texts(&html, "ol.fire-times li").len(), 5);
        let configure = "/pipelines/space-game-web/stages/test/configure";
        assert_eq!(
            attrs(&html, &format!("a[href=\"{configure}\"]"), "href"),
            [configure]
        );
        // No rollback checkbox on an ordinary Deploy.
        assert!(attrs(&html, "input[name=rollback]", "name").is_empty());

        // The configure page holds the form, posting to itself.
        let form = get(app, &rita, configure);
        assert_eq!(texts(&form, "h1"), ["Configure stage test"]);
        assert_eq!(attrs(&form, "#stage-form", "action"), [configure]);
        assert!(attrs(&form, "form.deploy-form", "action").is_empty());
        // Saving from it still works, at its URL and at the old one.
        let mut fields = crate::stage_form::form_fields(&form, &[]);
        fields.retain(|(k, _)| k != "parallel");
        fields.push(("parallel".into(), "2".into()));
        let res = rita.post(app.url(configure)).form(&fields).send().unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), format!("{configure}?saved=2"));
        let saved = get(app, &rita, &format!("{configure}?saved=2"));
        assert!(
            texts(&saved, "p.notice")
                .join(" ")
                .contains("Saved as revision 2")
        );
        assert_eq!(attrs(&saved, "#parallel", "value"), ["2"]);
        let fields = crate::stage_form::form_fields(&saved, &[]);
        let res = rita.post(app.url(path)).form(&fields).send().unwrap();
        assert_eq!(res.status(), 200, "the old POST URL still answers");
        let overview = get(app, &rita, path);
        let summary = texts(&overview, "section.stage-configuration").join(" ");
        assert!(
            summary.contains("up to 2 deployments at a time"),
            "{summary}"
        );
    });
}

#[test]
fn rolling_back_is_its_own_form_and_needs_a_reason() {
    each_backend(|app| {
        let repo = repo();
        let stages = r#"  - name: dev
    trigger: { after: build }
  - name: test
    trigger: { after: dev }
"#;
        import(app, &pipeline("backroll", &repo, stages));
        let token = app.token("dana", Role::Deployer);
        for _ in 0..2 {
            let v = build(app, &token, "backroll");
            let d = ended(
                app,
                &token,
                deployment_to(app, &token, "backroll", &v, "test"),
            );
            assert_eq!(d["state"], "succeeded", "{d}");
        }
        let path = "/pipelines/backroll/stages/test";
        // A deployer deploys, but may not roll back.
        let paula = app.signed_in("paula", Role::Deployer);
        let html = get(app, &paula, path);
        assert!(attrs(&html, "form.rollback-form", "action").is_empty());
        assert!(
            texts(&html, "section.rollback")
                .join(" ")
                .contains("needs the release manager role")
        );
        let rita = app.signed_in("rita", Role::ReleaseManager);
        let html = get(app, &rita, path);
        assert_eq!(texts(&html, "#rollback-heading"), ["Roll back test"]);
        assert_eq!(
            texts(&html, "#rollback-release option"),
            ["1.0.1 — was live in test before"]
        );
        let action = attrs(&html, "form.rollback-form", "action");
        assert_eq!(action, ["/pipelines/backroll/stages/test/rollback"]);
        let csrf = csrf_of(&html);
        // Without a reason: 422 with a message, nothing queued.
        for reason in ["", "   "] {
            let res = rita
                .post(app.url(&action[0]))
                .form(&[
                    ("release", "1.0.1"),
                    ("reason", reason),
                    ("csrf", csrf.as_str()),
                ])
                .send()
                .unwrap();
            assert_eq!(res.status(), 422);
            let body = res.text().unwrap();
            assert!(body.contains("needs a reason"), "{body}");
        }
        let res = rita
            .post(app.url(&action[0]))
            .form(&[
                ("release", "1.0.1"),
                ("reason", "1.0.2 breaks checkout"),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), path);
        let html = get(app, &rita, path);
        let flash = texts(&html, "p.flash").join(" ");
        assert!(flash.contains("Rolling back test to 1.0.1"), "{flash}");
        let id = deployment_to(app, &token, "backroll", "1.0.1", "test");
        let d = ended(app, &token, id);
        assert_eq!(d["trigger"], "rollback", "{d}");
        assert_eq!(d["state"], "succeeded", "{d}");
        let stored = storage::find_deployment(&mut app.conn(), id)
            .unwrap()
            .unwrap();
        assert_eq!(stored.reason.as_deref(), Some("1.0.2 breaks checkout"));
        assert_eq!(stored.requested_by, "rita");
        // The overview says 1.0.1 is live again.
        let html = get(app, &rita, path);
        let live = texts(&html, "dl.stage-now dd").join(" ");
        assert!(live.starts_with("1.0.1"), "{live}");
        assert!(live.contains("it replaced 1.0.2"), "{live}");
    });
}

#[test]
fn failed_deployments_and_builds_are_retried_from_where_they_show() {
    each_backend(|app| {
        let repo = repo();
        let stages = r#"  - name: dev
    trigger: { after: build }
    tasks: [ { shell: "echo broken; exit 1" } ]
"#;
        import(app, &pipeline("flaky", &repo, stages));
        let token = app.token("dana", Role::Deployer);
        let v = build(app, &token, "flaky");
        let first = deployment_to(app, &token, "flaky", &v, "dev");
        assert_eq!(ended(app, &token, first)["state"], "failed");

        // The board's cell offers Retry; it queues a new attempt.
        let paula = app.signed_in("paula", Role::Deployer);
        let board = get(app, &paula, "/");
        let (_, buttons) = cell(&board, "flaky", 0, 0);
        assert_eq!(buttons, ["Retry dev"]);
        let res = press(app, &paula, &board, "Retry dev");
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), "/");
        let flash = texts(&get(app, &paula, "/"), "p.flash").join(" ");
        assert!(flash.contains("1.0.1 is queued for dev again"), "{flash}");
        let second = deployment_to(app, &token, "flaky", &v, "dev");
        assert_ne!(second, first);
        let d = ended(app, &token, second);
        assert_eq!(d["attempt"], 2, "{d}");
        assert_eq!(d["trigger"], "redeploy");
        // The deployment page and the stage overview say Retry too.
        let page = get(
            app,
            &paula,
            &format!("/pipelines/flaky/releases/1.0.1/deployments/{second}"),
        );
        let retry = texts(&page, "form[action$=redeploy] button").join(" ");
        assert!(retry.starts_with("Retry"), "{retry}");
        let overview = get(app, &paula, "/pipelines/flaky/stages/dev");
        assert_eq!(
            texts(&overview, "table.recent-deployments form button"),
            ["Retry 1.0.1"]
        );

        // A build that fails shows on the board with its error and Retry.
        let broken = r#"  - name: dev
    trigger: { after: build }
"#;
        let yaml =
            pipeline("broken", &repo, broken).replace("./build.sh", "\"echo no compiler; exit 3\"");
        import(app, &yaml);
        let number = queue(app, &token, "broken", serde_json::json!({}));
        let b = finished(app, &token, "broken", number);
        assert_eq!(b["state"], "failed", "{b}");
        let board = get(app, &paula, "/");
        let failed = texts(&board, "section#board-broken .board-build-failed").join(" ");
        assert!(failed.contains(&format!("#{number}")), "{failed}");
        assert!(failed.contains("Failed"), "{failed}");
        // The build's page and the builds list offer it too.
        let page = get(app, &paula, &format!("/pipelines/broken/builds/{number}"));
        let retry = texts(&page, "form[action$=retry] button").join(" ");
        assert!(retry.starts_with("Retry: build main"), "{retry}");
        let list = get(app, &paula, "/pipelines/broken/builds");
        assert_eq!(
            texts(&list, "table.builds form button"),
            [format!("Retry build #{number}")]
        );
        let res = press(app, &paula, &board, &format!("Retry build #{number}"));
        assert_eq!(res.status(), 303);
        assert_eq!(location(&res), "/");
        let again = finished(app, &token, "broken", number + 1);
        assert_eq!(again["requested_by"], "paula", "{again}");
        assert_eq!(
            again["branch"],
            build_json(app, &token, "broken", number)["branch"]
        );
        let audit = storage::list_audit(&mut app.conn(), None, 1000).unwrap();
        assert!(
            audit.iter().any(|r| r.action == "build.retry"
                && r.subject == format!("build:broken#{}", number + 1)),
            "a build.retry audit record"
        );
        // A viewer sees the failed build but no Retry.
        let vic = app.signed_in("vic", Role::Viewer);
        let board = get(app, &vic, "/");
        assert!(texts(&board, "section#board-broken .board-build-failed form").is_empty());
    });
}
