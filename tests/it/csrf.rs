//! Cross-site writes (issue 12, item 2): the JSON API with the session
//! cookie needs the session's CSRF token, other sites' requests are refused,
//! bodies must say they are JSON (or YAML for the import), and an API 413
//! is JSON. A real browser on a second origin tries every route.

use std::io::{Read, Write};
use std::net::TcpListener;

use reqwest::blocking::{Client, Response};
use scraper::Html;
use serde_json::Value;
use slipway::domain::{DeploymentState, Role};

use crate::helpers::{SPEC_PIPELINE, TestApp, attrs, each_backend, seed_releases};
use crate::idp::{Browser, available, browser_check};

/// The CSRF token a page exposes to its scripts.
fn meta_token(app: &TestApp, client: &Client) -> String {
    let html = Html::parse_document(&client.get(app.url("/")).send().unwrap().text().unwrap());
    attrs(&html, "meta[name=csrf-token]", "content")
        .into_iter()
        .next()
        .filter(|t| !t.is_empty())
        .expect("a csrf-token meta")
}

fn error_of(res: Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let body: Value = res.json().expect("a JSON error");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn pipeline_names(app: &TestApp) -> Vec<String> {
    let mut conn = app.conn();
    slipway::storage::list_pipelines(&mut conn)
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect()
}

const SMALL: &str = r#"pipeline: small
source: { repo: /srv/git/small, branch: main }
version: "1.0.{build}"
build:
  tasks: [ { shell: "true" } ]
stages:
  - name: dev
    trigger: manual
    tasks: [ { shell: "true" } ]
"#;

#[test]
fn api_writes_with_the_session_cookie_need_the_csrf_token() {
    each_backend(|app| {
        let b = &app.backend;
        let client = app.signed_in("mara", Role::ReleaseManager);
        let import = |token: Option<&str>, headers: &[(&str, &str)]| {
            let mut req = client
                .post(app.url("/api/v1/pipelines"))
                .header("Content-Type", "application/yaml")
                .body(SMALL);
            if let Some(t) = token {
                req = req.header("X-CSRF-Token", t);
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send().unwrap()
        };

        // The cookie alone: 403 in the API's JSON shape, nothing imported.
        let (status, code, message) = error_of(import(None, &[]));
        assert_eq!((status, code.as_str()), (403, "forbidden"), "[{b}]");
        assert!(message.contains("X-CSRF-Token"), "[{b}] {message}");
        let (status, _, _) = error_of(import(Some("not the token"), &[]));
        assert_eq!(status, 403, "[{b}]");
        assert!(pipeline_names(app).is_empty(), "[{b}]");
        // The same route spelled with percent-escapes is the API too.
        let res = client
            .post(app.url("/%61pi/v1/pipelines"))
            .header("Content-Type", "text/plain")
            .body(SMALL)
            .send()
            .unwrap();
        assert_eq!(res.status().as_u16(), 403, "[{b}] {}", res.text().unwrap());
        assert!(pipeline_names(app).is_empty(), "[{b}]");

        // With the token of the page's <meta>, but from another origin or
        // another site: still refused.
        let token = meta_token(app, &client);
        for header in [
            ("Origin", "http://localhost:9"),
            ("Origin", "null"),
            ("Sec-Fetch-Site", "same-site"),
            ("Sec-Fetch-Site", "cross-site"),
        ] {
            let (status, code, message) = error_of(import(Some(&token), &[header]));
            assert_eq!(
                (status, code.as_str()),
                (403, "forbidden"),
                "[{b}] {header:?}"
            );
            assert!(message.contains("another"), "[{b}] {message}");
        }
        assert!(pipeline_names(app).is_empty(), "[{b}]");

        // The token, from Slipway's own page: imported.
        let own = app.base.clone();
        let res = import(
            Some(&token),
            &[("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")],
        );
        assert_eq!(res.status(), 201, "[{b}] {}", res.text().unwrap());
        assert_eq!(pipeline_names(app), vec!["small"], "[{b}]");

        // A JSON route with the cookie: the token is needed there too.
        let build = |token: Option<&str>| {
            let mut req = client
                .post(app.url("/api/v1/pipelines/small/builds"))
                .header("Content-Type", "application/json")
                .body("{}");
            if let Some(t) = token {
                req = req.header("X-CSRF-Token", t);
            }
            req.send().unwrap()
        };
        assert_eq!(build(None).status(), 403, "[{b}]");
        let res = build(Some(&token));
        assert_eq!(res.status(), 202, "[{b}] {}", res.text().unwrap());

        // A page form from another origin is refused, even with its field.
        let res = client
            .post(app.url("/logout"))
            .header("Origin", "http://127.0.0.1:9")
            .form(&[("csrf", token.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403, "[{b}]");
        assert_eq!(
            client.get(app.url("/")).send().unwrap().status(),
            200,
            "[{b}] still signed in"
        );
    });
}

#[test]
fn bearer_tokens_are_unaffected_and_bodies_must_say_what_they_are() {
    each_backend(|app| {
        let b = &app.backend;
        let token = app.token("rm", Role::ReleaseManager);
        let post = |path: &str, content_type: Option<&str>, body: &str| {
            let mut req = app
                .client
                .post(app.url(path))
                .bearer_auth(&token)
                .header("Origin", "http://localhost:9")
                .body(body.to_string());
            if let Some(t) = content_type {
                req = req.header("Content-Type", t);
            }
            req.send().unwrap()
        };
        // YAML or JSON types import; text/plain and forms are a 415.
        for bad in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let (status, code, message) = error_of(post("/api/v1/pipelines", bad, SMALL));
            assert_eq!(
                (status, code.as_str()),
                (415, "unsupported_media_type"),
                "[{b}] {bad:?}"
            );
            assert!(message.contains("application/yaml"), "[{b}] {message}");
        }
        assert!(pipeline_names(app).is_empty(), "[{b}]");
        let res = post("/api/v1/pipelines", Some("text/yaml; charset=utf-8"), SMALL);
        assert_eq!(res.status(), 201, "[{b}] {}", res.text().unwrap());
        for yaml in ["application/yaml", "application/x-yaml"] {
            let res = post("/api/v1/pipelines", Some(yaml), SMALL);
            assert_eq!(res.status(), 200, "[{b}] {yaml}");
        }

        // JSON bodies need application/json.
        let (status, code, message) = error_of(post(
            "/api/v1/pipelines/small/builds",
            Some("text/plain"),
            "{}",
        ));
        assert_eq!(
            (status, code.as_str()),
            (415, "unsupported_media_type"),
            "[{b}]"
        );
        assert!(message.contains("application/json"), "[{b}] {message}");
        let (status, code, _) = error_of(post(
            "/api/v1/pipelines/small/stages/dev/deployments",
            Some("text/plain"),
            r#"{"version": "1.0.1"}"#,
        ));
        assert_eq!(
            (status, code.as_str()),
            (415, "unsupported_media_type"),
            "[{b}]"
        );
        let mut conn = app.conn();
        let p = slipway::storage::find_pipeline(&mut conn, "small")
            .unwrap()
            .unwrap();
        assert!(
            slipway::storage::list_builds(&mut conn, p.id, None, 10)
                .map(|l| l.is_empty())
                .unwrap_or(true),
            "[{b}] no build queued"
        );
        drop(conn);
        let res = post(
            "/api/v1/pipelines/small/builds",
            Some("application/json"),
            "{}",
        );
        assert_eq!(res.status(), 202, "[{b}] {}", res.text().unwrap());
        // An empty body needs no type.
        let res = post("/api/v1/pipelines/small/builds", None, "");
        assert_eq!(res.status(), 202, "[{b}] {}", res.text().unwrap());
    });
}

#[test]
fn a_body_over_the_limit_is_a_json_413() {
    each_backend(|app| {
        let b = &app.backend;
        let token = app.token("rm", Role::ReleaseManager);
        let big = "#".repeat(2 << 20);
        for (path, content_type) in [
            ("/api/v1/pipelines", "application/yaml"),
            ("/api/v1/pipelines/x/builds", "application/json"),
            ("/api/v1/approvals/1", "application/json"),
        ] {
            let res = app
                .client
                .post(app.url(path))
                .bearer_auth(&token)
                .header("Content-Type", content_type)
                .body(big.clone())
                .send()
                .unwrap();
            let (status, code, message) = error_of(res);
            assert_eq!(
                (status, code.as_str()),
                (413, "payload_too_large"),
                "[{b}] {path}"
            );
            assert!(message.contains("1024 KiB"), "[{b}] {message}");
        }
    });
}

/// Serves `html` to every request on 127.0.0.1 (a second origin, same site
/// as Slipway's 127.0.0.1, as a slot app on a sibling host name is).
fn attacker_site(html: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
        }
    });
    base
}

fn audit_by(app: &TestApp, actor: &str) -> Vec<String> {
    let mut conn = app.conn();
    slipway::storage::list_audit(&mut conn, None, 500)
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == actor)
        .map(|e| e.action)
        .collect()
}

#[test]
fn a_page_on_another_origin_changes_nothing_through_a_signed_in_browser() {
    if !available("Chromium and chromedriver", browser_check()) {
        return;
    }
    each_backend(|app| {
        let b = &app.backend;
        assert!(app.import(SPEC_PIPELINE).status().is_success(), "[{b}]");
        seed_releases(
            app,
            "space-game-web",
            2,
            |_| "main".into(),
            |n| {
                if n == 1 {
                    vec![("dev", DeploymentState::Failed)]
                } else {
                    vec![("preprod", DeploymentState::WaitingForApproval)]
                }
            },
        );
        let deployments = |app: &TestApp| {
            let mut conn = app.conn();
            let p = slipway::storage::find_pipeline(&mut conn, "space-game-web")
                .unwrap()
                .unwrap();
            let mut all = Vec::new();
            for version in ["1.0.1", "1.0.2"] {
                let r = slipway::storage::find_release(&mut conn, p.id, version)
                    .unwrap()
                    .unwrap();
                for d in slipway::storage::deployments_of_release(&mut conn, r.id).unwrap() {
                    all.push((d.id, d.state));
                }
            }
            all
        };
        let before = deployments(app);
        assert_eq!(before.len(), 2, "[{b}]");
        let (failed, waiting) = (before[0].0, before[1].0);
        let evil = SMALL.replace("small", "evil");

        // The attacker's page posts text/plain bodies with the cookie to
        // every state-changing route, then says it is done.
        let routes: Vec<(String, String)> = [
            ("/api/v1/pipelines".to_string(), evil),
            (
                "/api/v1/pipelines/space-game-web/builds".into(),
                "{}".into(),
            ),
            (
                "/api/v1/pipelines/space-game-web/builds/1/cancel".into(),
                String::new(),
            ),
            (
                format!("/api/v1/deployments/{waiting}/cancel"),
                String::new(),
            ),
            (
                format!("/api/v1/deployments/{failed}/redeploy"),
                String::new(),
            ),
            ("/api/v1/gates/1/reevaluate".into(), String::new()),
            (
                "/api/v1/apps/space-game/swap".into(),
                r#"{"from":"staging","to":"production"}"#.into(),
            ),
            ("/api/v1/apps/space-game/swap/confirm".into(), String::new()),
            ("/api/v1/apps/space-game/swap/cancel".into(), String::new()),
            (
                "/api/v1/pipelines/space-game-web/stages/preprod/deployments".into(),
                r#"{"version":"1.0.1"}"#.into(),
            ),
            ("/pipelines/space-game-web/builds".into(), "csrf=x".into()),
        ]
        .into_iter()
        .map(|(path, body)| (app.url(&path), body))
        .collect();
        let script = format!(
            r#"<!DOCTYPE html><title>cute cats</title><script>
const routes = {routes};
(async () => {{
  for (const [url, body] of routes) {{
    try {{
      await fetch(url, {{ method: "POST", credentials: "include", mode: "no-cors",
        headers: {{ "Content-Type": "text/plain" }}, body }});
    }} catch (e) {{}}
  }}
  const done = document.createElement("p");
  done.id = "done";
  document.body.appendChild(done);
}})();
</script>"#,
            routes = serde_json::to_string(&routes).unwrap()
        );
        let attacker = attacker_site(script);

        app.user("mara", Role::Admin, "mara's long password");
        let browser = Browser::start();
        browser.goto(&app.url("/login"));
        browser.fill("input#username", "mara");
        browser.fill("input#password", "mara's long password");
        browser.click("button[type=submit]");
        browser.wait_for("header .who span");

        browser.goto(&format!("{attacker}/cats"));
        browser.wait_for("#done");

        // Nothing changed: no pipeline, no build, the deployments as they
        // were, and nothing in the audit log by mara but her sign-in.
        assert_eq!(pipeline_names(app), vec!["space-game-web"], "[{b}]");
        {
            let mut conn = app.conn();
            let p = slipway::storage::find_pipeline(&mut conn, "space-game-web")
                .unwrap()
                .unwrap();
            assert!(
                slipway::storage::list_builds(&mut conn, p.id, None, 10)
                    .unwrap()
                    .is_empty(),
                "[{b}] a build was queued"
            );
        }
        assert_eq!(deployments(app), before, "[{b}]");
        assert_eq!(audit_by(app, "mara"), vec!["auth.sign_in"], "[{b}]");

        // Slipway's own page script (static/slipway.js, allowed by the page's
        // policy) calls the API with the token from <meta>: accepted.
        browser.goto(&app.url("/"));
        browser.wait_for("header .who span");
        let status = browser
            .rt
            .block_on(browser.client.execute_async(
                r#"const done = arguments[arguments.length - 1];
                   window.slipway.api("POST", "/api/v1/pipelines/space-game-web/builds", {})
                     .then(r => done(r.status), e => done(String(e)));"#,
                vec![],
            ))
            .unwrap();
        assert_eq!(status, serde_json::json!(202), "[{b}]");
        assert_eq!(audit_by(app, "mara").len(), 2, "[{b}] the build is mara's");
    });
}
