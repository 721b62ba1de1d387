//! Builds as a person sees them: Build now on the pipeline page, the build
//! page with its tasks and log, artifact downloads, and the secrets form.

use scraper::Html;
use slipway::domain::Role;

use crate::git::git_repo;
use crate::helpers::{
    attrs, browser, csrf_of, each_backend, finished, import, pipeline_yaml, texts,
};

const BUILD: &str = r#"  tasks:
    - name: compile
      shell: "mkdir -p dist && echo 'console.log(42)' > dist/app.js && echo compiled the app"
  artifacts: [ "dist/**" ]"#;

#[test]
fn build_now_runs_a_build_whose_page_shows_tasks_log_and_release() {
    each_backend(|app| {
        let repo = git_repo(&[("README.md", "space game\n")]);
        import(
            app,
            &pipeline_yaml("web", &repo.url(), "1.0.{build}", BUILD),
        );
        app.user("andy", Role::Deployer, "andy's long password");
        let token = app.token("reader", Role::Viewer);

        // Anonymous visitors are sent to sign in; a viewer has no form.
        let res = app.get_anonymous("/pipelines/web");
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/login?next=%2Fpipelines%2Fweb");
        let html = app.page("/pipelines/web");
        assert!(attrs(&html, "form[aria-label='Build now']", "action").is_empty());
        assert!(
            texts(&html, "main")
                .join(" ")
                .contains("Starting a build needs the deployer role.")
        );
        let anonymous = app
            .client
            .post(app.url("/pipelines/web/builds"))
            .form(&[("branch", "main")])
            .send()
            .unwrap();
        assert_eq!(anonymous.status(), 303, "no session: off to sign in");
        assert_eq!(anonymous.headers()["location"], "/login");

        let client = browser();
        assert_eq!(
            app.sign_in(&client, "andy", "andy's long password", "/pipelines/web")
                .status(),
            303
        );
        let html = Html::parse_document(
            &client
                .get(app.url("/pipelines/web"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        assert_eq!(
            attrs(&html, "form[aria-label='Build now']", "action"),
            vec!["/pipelines/web/builds"]
        );
        assert_eq!(attrs(&html, "input#build-branch", "value"), vec!["main"]);
        let forged = client
            .post(app.url("/pipelines/web/builds"))
            .form(&[("branch", "main")])
            .send()
            .unwrap();
        assert_eq!(forged.status(), 403, "a session, but no CSRF token");
        let csrf = csrf_of(&html);
        let res = client
            .post(app.url("/pipelines/web/builds"))
            .form(&[("branch", "main"), ("commit", ""), ("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/pipelines/web/builds/1");

        let build = finished(app, &token, "web", 1);
        assert_eq!(build["state"], "succeeded", "{build}");
        let html = Html::parse_document(
            &client
                .get(app.url("/pipelines/web/builds/1"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        assert_eq!(texts(&html, "h1"), vec!["web build #1"]);
        assert_eq!(texts(&html, "p.build-state .badge"), vec!["✔ Succeeded"]);
        assert_eq!(texts(&html, "section.task h3 .badge"), vec!["✔ Succeeded"]);
        let log = texts(&html, "pre.log").join("\n");
        assert!(log.contains("compiled the app"), "{log}");
        assert!(
            texts(&html, "dl.facts dd")
                .join(" | ")
                .contains("manual, by andy")
        );
        let release = attrs(&html, "dl.facts dd a", "href");
        assert_eq!(release, vec!["/pipelines/web/releases/1.0.1"]);

        // The release page links the build and offers the artifact for download.
        let html = app.page("/pipelines/web/releases/1.0.1");
        assert!(texts(&html, "dl.facts dd").join(" ").contains("build #1"));
        let links = attrs(&html, "table a[download]", "href");
        assert_eq!(
            links,
            vec!["/pipelines/web/releases/1.0.1/artifacts/dist/app.js"]
        );
        let digest = texts(&html, "code.digest")[0].clone();
        let res = app.get(&links[0]);
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["etag"], format!("\"{digest}\""));
        assert_eq!(
            res.headers()["content-disposition"],
            "attachment; filename=\"app.js\"; filename*=UTF-8''app%2Ejs"
        );
        assert_eq!(res.text().unwrap(), "console.log(42)\n");
        let res = app
            .client
            .get(app.url(&links[0]))
            .bearer_auth(&app.viewer_token)
            .header("If-None-Match", format!("\"{digest}\""))
            .send()
            .unwrap();
        assert_eq!(res.status(), 304);
        for missing in [
            "/pipelines/web/releases/1.0.1/artifacts/dist/other.js",
            "/pipelines/web/releases/1.0.1/artifacts/../../secret.key",
            "/pipelines/web/releases/9.9.9/artifacts/dist/app.js",
        ] {
            assert_eq!(app.get(missing).status(), 404, "{missing}");
        }

        // The builds list and the pipeline page show it too.
        let html = app.page("/pipelines/web/builds");
        assert_eq!(texts(&html, "table.builds tbody th a"), vec!["#1"]);
        assert_eq!(texts(&html, "table.builds tbody td a"), vec!["1.0.1"]);
    });
}

#[test]
fn build_now_needs_the_deployer_role_and_a_valid_form() {
    each_backend(|app| {
        let repo = git_repo(&[("README.md", "x\n")]);
        import(
            app,
            &pipeline_yaml("web", &repo.url(), "1.0.{build}", BUILD),
        );
        let client = app.signed_in("tim", Role::Viewer);
        let html = Html::parse_document(
            &client
                .get(app.url("/pipelines/web"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        let csrf = csrf_of(&html);
        let res = client
            .post(app.url("/pipelines/web/builds"))
            .form(&[("branch", "main"), ("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);
        assert!(res.text().unwrap().contains("needs the Deployer role"));

        let client = app.signed_in("andy", Role::Deployer);
        let html = Html::parse_document(
            &client
                .get(app.url("/pipelines/web"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        let csrf = csrf_of(&html);
        let res = client
            .post(app.url("/pipelines/web/builds"))
            .form(&[
                ("branch", "main"),
                ("commit", "not-a-sha"),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .unwrap();
        assert_eq!(res.status(), 422);
        assert!(res.text().unwrap().contains("is not a commit id"));
        let res = client
            .post(app.url("/pipelines/nope/builds"))
            .form(&[("branch", "main"), ("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 404);
        assert_eq!(app.get("/pipelines/web/builds/99").status(), 404);
        assert_eq!(app.get("/pipelines/web/builds/abc").status(), 400);
    });
}

#[test]
fn secrets_are_set_from_the_pipeline_page_and_never_shown() {
    each_backend(|app| {
        let repo = git_repo(&[("README.md", "x\n")]);
        import(
            app,
            &pipeline_yaml("web", &repo.url(), "1.0.{build}", BUILD),
        );
        let client = app.signed_in("mara", Role::ReleaseManager);
        let html = Html::parse_document(
            &client
                .get(app.url("/pipelines/web"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        for id in attrs(&html, "form[aria-label='Set a secret'] label", "for") {
            assert_eq!(attrs(&html, &format!("input#{id}"), "id").len(), 1);
        }
        let csrf = csrf_of(&html);
        let res = client
            .post(app.url("/pipelines/web/secrets"))
            .form(&[
                ("name", "HOOK_SECRET"),
                ("value", "s3cr3t-value-xyz"),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        let body = client
            .get(app.url("/pipelines/web"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(!body.contains("s3cr3t-value-xyz"));
        let html = Html::parse_document(&body);
        assert_eq!(
            texts(&html, "#secrets ~ table tbody td code"),
            vec!["HOOK_SECRET"]
        );
        let res = client
            .post(app.url("/pipelines/web/secrets"))
            .form(&[
                ("name", "bad name"),
                ("value", "x"),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .unwrap();
        assert_eq!(res.status(), 422);
        let res = client
            .post(app.url("/pipelines/web/secrets"))
            .form(&[("name", "OTHER"), ("value", "x"), ("csrf", "forged")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);
    });
}

#[test]
fn the_board_shows_a_running_build_until_it_ends() {
    each_backend(|app| {
        let gate = tempfile::tempdir().unwrap();
        let file = gate.path().join("go");
        let build = format!(
            "  tasks:\n    - shell: \"while [ ! -f '{}' ]; do sleep 0.05; done\"\n  artifacts: []",
            file.display()
        );
        let repo = git_repo(&[("README.md", "x\n")]);
        import(
            app,
            &pipeline_yaml("web", &repo.url(), "1.0.{build}", &build),
        );
        let token = app.token("andy", Role::Deployer);
        let number = crate::helpers::queue(app, &token, "web", serde_json::json!({}));
        let running = crate::helpers::wait_until(
            "the board to show the running build",
            std::time::Duration::from_secs(60),
            || {
                let html = app.page("/");
                let line = texts(&html, "#board-web p.board-build").join(" ");
                line.contains("Running").then_some(html)
            },
        );
        assert_eq!(
            attrs(&running, "#board-web p.board-build a", "href"),
            vec![format!("/pipelines/web/builds/{number}")]
        );
        assert_eq!(
            attrs(&running, "#board-web", "data-live").len(),
            1,
            "the section refreshes itself"
        );
        std::fs::write(&file, "go").unwrap();
        finished(app, &token, "web", number);
        let html = app.page("/");
        assert!(texts(&html, "#board-web p.board-build").is_empty());
    });
}
