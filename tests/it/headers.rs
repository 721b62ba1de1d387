//! Security headers and a strict Content-Security-Policy (issue 12, item 6):
//! every answer carries them, and no page needs `'unsafe-inline'` (no
//! `style` attribute, no inline script).

use scraper::{Html, Selector};
use slipway::domain::{DeploymentState, Role};
use slipway::storage::testing::test_databases;

use crate::helpers::{SPEC_PIPELINE, TestApp, each_backend, seed_releases, spawn_app_with};
use crate::idp::each_backend_with_sso;

fn header(res: &reqwest::blocking::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

fn assert_security_headers(res: &reqwest::blocking::Response, what: &str) {
    let csp = header(res, "content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP"));
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
        "object-src 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: {directive} in {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(
        header(res, "x-frame-options").as_deref(),
        Some("DENY"),
        "{what}"
    );
    assert_eq!(
        header(res, "x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(
        header(res, "referrer-policy").as_deref(),
        Some("same-origin"),
        "{what}"
    );
    let permissions = header(res, "permissions-policy").unwrap_or_default();
    for feature in ["camera=()", "microphone=()", "geolocation=()"] {
        assert!(permissions.contains(feature), "{what}: {permissions}");
    }
}

#[test]
fn every_answer_carries_the_security_headers_and_hsts_only_over_https() {
    each_backend(|app| {
        let b = &app.backend;
        for (what, res) in [
            ("board", app.get("/")),
            ("sign-in page", app.get_anonymous("/login")),
            ("redirect", app.get_anonymous("/audit")),
            ("404 page", app.get("/no/such/page")),
            ("API", app.get("/api/v1/pipelines")),
            ("API 401", app.get_anonymous("/api/v1/pipelines")),
            ("stylesheet", app.get_anonymous("/static/slipway.css")),
        ] {
            assert_security_headers(&res, &format!("[{b}] {what}"));
            assert_eq!(
                header(&res, "strict-transport-security"),
                None,
                "[{b}] {what}: no HSTS over http"
            );
        }
    });
    let (label, db) = test_databases().into_iter().next().unwrap();
    let app = spawn_app_with(label, db, |s| {
        s.public_url = "https://slipway.example".into();
    });
    for res in [app.get("/"), app.get_anonymous("/login")] {
        assert_security_headers(&res, "https");
        let hsts = header(&res, "strict-transport-security").expect("HSTS over https");
        assert!(hsts.contains("max-age="), "{hsts}");
    }
}

/// Asserts that `html` needs no `'unsafe-inline'`: no `style` attribute, no
/// inline script, no inline event handler.
fn assert_no_inline(path: &str, body: &str) {
    assert!(!body.contains("style=\""), "{path} has a style attribute");
    let html = Html::parse_document(body);
    let all = Selector::parse("*").unwrap();
    for element in html.select(&all) {
        let el = element.value();
        assert!(
            el.attr("style").is_none(),
            "{path}: style on <{}>",
            el.name()
        );
        for (name, _) in el.attrs() {
            assert!(!name.starts_with("on"), "{path}: {name} on <{}>", el.name());
        }
        if el.name() == "script" {
            assert!(el.attr("src").is_some(), "{path}: an inline <script>");
            assert!(
                element.text().collect::<String>().trim().is_empty(),
                "{path}: a <script> with a body"
            );
        }
        if el.name() == "style" {
            panic!("{path}: a <style> element");
        }
    }
}

#[test]
fn no_page_has_an_inline_script_or_style() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        seed_releases(
            app,
            "space-game-web",
            2,
            |_| "main".into(),
            |n| {
                if n == 1 {
                    vec![("dev", DeploymentState::Succeeded)]
                } else {
                    vec![("preprod", DeploymentState::WaitingForApproval)]
                }
            },
        );
        let admin = app.token("boss", Role::Admin);
        let pages = [
            "/",
            "/pipelines/space-game-web",
            "/pipelines/space-game-web/releases",
            "/pipelines/space-game-web/releases/1.0.1",
            "/pipelines/space-game-web/builds",
            "/pipelines/space-game-web/stages/production",
            "/environments",
            "/approvals",
            "/gates",
            "/audit",
            "/admin/users",
            "/admin/notifications",
            "/settings/tokens",
            "/no/such/page",
        ];
        for path in pages {
            let res = app.get_with_token(path, &admin);
            let status = res.status();
            let body = res.text().unwrap();
            assert!(
                status == 200 || path == "/no/such/page",
                "[{}] {path}: {status}",
                app.backend
            );
            assert_no_inline(path, &body);
        }
        let body = app.get_anonymous("/login").text().unwrap();
        assert_no_inline("/login", &body);
        check_deployment_page(app, &admin);
    });
}

/// The deployment page too (its id comes from storage).
fn check_deployment_page(app: &TestApp, token: &str) {
    let id = {
        let mut conn = app.conn();
        let p = slipway::storage::find_pipeline(&mut conn, "space-game-web")
            .unwrap()
            .unwrap();
        let r = slipway::storage::find_release(&mut conn, p.id, "1.0.1")
            .unwrap()
            .unwrap();
        slipway::storage::deployments_of_release(&mut conn, r.id).unwrap()[0].id
    };
    let path = format!("/pipelines/space-game-web/releases/1.0.1/deployments/{id}");
    let res = app.get_with_token(&path, token);
    assert_eq!(res.status(), 200, "{path}");
    assert_no_inline(&path, &res.text().unwrap());
}

#[test]
fn with_sso_forms_may_also_lead_to_the_identity_provider() {
    each_backend_with_sso(|app, idp| {
        let res = app.get_anonymous("/login");
        assert_security_headers(&res, "sso");
        let csp = header(&res, "content-security-policy").unwrap();
        assert!(
            csp.contains(&format!("form-action 'self' {};", idp.issuer)),
            "{csp}"
        );
    });
}
