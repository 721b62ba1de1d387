//! Single sign-on through a real OpenID provider (npm `oidc-provider`,
//! `tests/idp/idp.mjs`): in a real headless Chromium, and step by step over
//! HTTP for the ways it can go wrong.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use scraper::Html;
use slipway::domain::Role;
use slipway::storage;
use slipway::web::oidc::fresh_sign_in_url;

use crate::helpers::{SPEC_PIPELINE, TestApp, attrs, browser, texts};
use crate::idp::{
    AtProvider, Browser, available, browser_check, each_backend_with_sso, through_provider,
};

fn memberships(app: &TestApp, username: &str) -> Vec<(String, String)> {
    let mut conn = app.conn();
    let user = storage::find_user_by_name(&mut conn, username)
        .unwrap()
        .unwrap_or_else(|| panic!("[{}] no user {username}", app.backend));
    storage::user_memberships(&mut conn, user.id).unwrap()
}

fn audit_actions(app: &TestApp) -> Vec<(String, String, String)> {
    let mut conn = app.conn();
    storage::list_audit(&mut conn, None, 500)
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.subject, e.detail))
        .collect()
}

fn who(app: &TestApp, client: &reqwest::blocking::Client) -> String {
    let res = client.get(app.url("/")).send().unwrap();
    assert_eq!(res.status(), 200, "[{}] signed in", app.backend);
    let html = Html::parse_document(&res.text().unwrap());
    texts(&html, "header .who span").join(" ")
}

#[test]
fn tim_signs_in_through_sso_in_a_real_browser_and_lands_where_he_was_going() {
    each_backend_with_sso(|app, _idp| {
        if !available("Chromium and chromedriver", browser_check()) {
            return;
        }
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        let browser = Browser::start();
        browser.goto(&app.url("/pipelines/space-game-web/releases?branch=main"));
        // Not signed in: the sign-in page, which offers SSO.
        let url = browser.wait_for_url("the sign-in page", |u| u.path() == "/login");
        assert_eq!(
            url.query(),
            Some("next=%2Fpipelines%2Fspace-game-web%2Freleases%3Fbranch%3Dmain")
        );
        let sso = attrs(&browser.html(), "a.button", "href");
        assert_eq!(
            sso,
            vec!["/auth/oidc/login?next=%2Fpipelines%2Fspace-game-web%2Freleases%3Fbranch%3Dmain"]
        );
        browser.click("a.button");

        // The provider's own sign-in form, then its consent form.
        browser.fill("input[name=login]", "tim");
        browser.fill("input[name=password]", "tim's password");
        browser.click("button[type=submit]");
        browser.wait_for("input[name=prompt][value=consent]");
        browser.click("button[type=submit]");

        // Back in Slipway, on the page asked for, as tim.
        let url = browser.wait_for_url("the release history", |u| {
            u.port() == reqwest::Url::parse(&app.base).unwrap().port()
                && u.path() == "/pipelines/space-game-web/releases"
        });
        assert_eq!(url.query(), Some("branch=main"));
        browser.wait_for("header .who span");
        let html = browser.html();
        let header = texts(&html, "header .who span").join(" ");
        assert!(header.contains("tim"), "[{}] {header}", app.backend);
        assert!(header.contains("Viewer"), "[{}] {header}", app.backend);
        assert_eq!(texts(&html, "h1")[0], "Releases of space-game-web");

        // Slipway provisioned tim, with his group from the provider.
        let mut conn = app.conn();
        let tim = storage::find_user_by_name(&mut conn, "tim")
            .unwrap()
            .expect("tim");
        assert_eq!(tim.sso_subject.as_deref(), Some("tim"));
        assert_eq!(tim.role, Role::Viewer);
        assert_eq!(tim.email.as_deref(), Some("tim@tailspin.example"));
        assert!(tim.password_hash.is_none(), "SSO only");
        drop(conn);
        assert_eq!(
            memberships(app, "tim"),
            vec![("management".to_string(), "sso".to_string())]
        );
        let audit = audit_actions(app);
        assert!(
            audit.iter().any(|(a, s, d)| a == "auth.sign_in"
                && s == "user:tim"
                && d.contains("method=sso")
                && d.contains("groups=[management]")),
            "{audit:?}"
        );
        assert!(
            audit
                .iter()
                .any(|(a, s, _)| a == "user.create" && s == "user:tim")
        );
    });
}

#[test]
fn sso_provisions_once_and_replaces_sso_groups_at_every_sign_in() {
    each_backend_with_sso(|app, _idp| {
        // The login page offers SSO, coming back to `next`.
        let login =
            Html::parse_document(&app.get_anonymous("/login?next=%2Fgates").text().unwrap());
        assert_eq!(
            attrs(&login, "a.button", "href"),
            vec!["/auth/oidc/login?next=%2Fgates"]
        );
        assert_eq!(texts(&login, "a.button"), vec!["Sign in with SSO"]);

        let client = browser();
        let (res, _, prompts) = through_provider(
            app,
            &client,
            "/auth/oidc/login?next=%2Fsettings%2Ftokens%3Fx%3D1",
            AtProvider::SignIn("amita"),
        );
        assert_eq!(prompts, vec!["login", "consent"]);
        assert_eq!(res.status(), 303, "{}", res.text().unwrap_or_default());
        assert_eq!(res.headers()["location"], "/settings/tokens?x=1");
        assert!(who(app, &client).contains("amita"));
        assert_eq!(
            memberships(app, "amita"),
            vec![("qa".to_string(), "sso".to_string())]
        );

        // An admin adds a local group; a stale SSO group lingers.
        {
            let mut conn = app.conn();
            let amita = storage::find_user_by_name(&mut conn, "amita")
                .unwrap()
                .unwrap();
            storage::add_membership(&mut conn, amita.id, "release-leads", "local").unwrap();
            storage::add_membership(&mut conn, amita.id, "old-team", "sso").unwrap();
        }
        // Signing in again (the provider remembers her: no forms) keeps the
        // local group, drops the stale SSO one, and makes no second user.
        let again = browser();
        let (res, _, _) =
            through_provider(app, &again, "/auth/oidc/login", AtProvider::SignIn("amita"));
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/");
        assert_eq!(
            memberships(app, "amita"),
            vec![
                ("qa".to_string(), "sso".to_string()),
                ("release-leads".to_string(), "local".to_string()),
            ]
        );
        let mut conn = app.conn();
        let users = storage::list_users(&mut conn).unwrap();
        assert_eq!(users.iter().filter(|u| u.username == "amita").count(), 1);
        drop(conn);
        let audit = audit_actions(app);
        assert!(
            audit
                .iter()
                .any(|(a, _, d)| a == "auth.sign_in" && d.contains("removed=[old-team]")),
            "{audit:?}"
        );

        // A fresh sign-in (as approvals with `fresh_sign_in` demand) makes
        // the provider ask for the password again, though it knows her.
        let url = fresh_sign_in_url("/settings/tokens", Duration::from_secs(300));
        let (res, _, prompts) = through_provider(app, &client, &url, AtProvider::SignIn("amita"));
        assert_eq!(prompts, vec!["login"], "prompt=login");
        assert_eq!(res.status(), 303, "{}", res.text().unwrap_or_default());
        assert_eq!(res.headers()["location"], "/settings/tokens");
        assert!(who(app, &client).contains("amita"));
    });
}

#[test]
fn provider_errors_bad_state_bad_codes_and_open_redirects_end_on_clear_pages() {
    each_backend_with_sso(|app, _idp| {
        // Denied at the provider: a page that says so, nobody signed in.
        let client = browser();
        let (res, _, _) = through_provider(
            app,
            &client,
            "/auth/oidc/login?next=%2Faudit",
            AtProvider::Cancel,
        );
        assert_eq!(res.status(), 401);
        let html = Html::parse_document(&res.text().unwrap());
        assert_eq!(texts(&html, "h1"), vec!["Single sign-on failed"]);
        let message = texts(&html, "p.form-error").join(" ");
        assert!(
            message.contains("canceled or refused") && message.contains("access_denied"),
            "{message}"
        );
        assert_eq!(
            attrs(&html, "main a", "href"),
            vec!["/login?next=%2Faudit"],
            "back to sign-in, still going to /audit"
        );
        assert_eq!(client.get(app.url("/")).send().unwrap().status(), 303);

        // A callback this browser did not start: 400.
        let stranger = browser();
        let res = stranger
            .get(app.url("/auth/oidc/callback?code=abc&state=xyz"))
            .send()
            .unwrap();
        assert_eq!(res.status(), 400);
        assert!(
            res.text()
                .unwrap()
                .contains("not started from this browser")
        );

        // A started sign-in answered with another state: 400.
        let res = client.get(app.url("/auth/oidc/login")).send().unwrap();
        assert_eq!(res.status(), 303);
        let authorize = reqwest::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
        let query: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
        assert_eq!(query["code_challenge_method"], "S256", "PKCE");
        assert_eq!(query["response_type"], "code");
        assert!(query["scope"].contains("openid") && query["scope"].contains("groups"));
        assert!(!query["nonce"].is_empty());
        let res = client
            .get(app.url("/auth/oidc/callback?code=abc&state=forged"))
            .send()
            .unwrap();
        assert_eq!(res.status(), 400);
        assert!(res.text().unwrap().contains("state does not match"));

        // The right state with a code the provider never issued: 401.
        let res = client.get(app.url("/auth/oidc/login")).send().unwrap();
        let authorize = reqwest::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
        let state = authorize
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        let res = client
            .get(app.url(&format!(
                "/auth/oidc/callback?code=not-a-code&state={state}"
            )))
            .send()
            .unwrap();
        assert_eq!(res.status(), 401);
        let body = res.text().unwrap();
        assert!(body.contains("did not accept the sign-in code"), "{body}");
        assert!(body.contains("invalid_grant"), "{body}");

        // A real sign-in whose callback is replayed: the replay is refused.
        for evil in [
            "https://evil.example/x",
            "//evil.example",
            "/\\evil.example",
        ] {
            let c = browser();
            let start = format!(
                "/auth/oidc/login?next={}",
                evil.bytes()
                    .map(|b| format!("%{b:02X}"))
                    .collect::<String>()
            );
            let (res, callback, _) = through_provider(app, &c, &start, AtProvider::SignIn("amita"));
            assert_eq!(res.status(), 303, "{evil}");
            assert_eq!(
                res.headers()["location"],
                "/",
                "{evil} leads back into Slipway"
            );
            let replay = c.get(&callback).send().unwrap();
            assert_eq!(replay.status(), 400, "a callback works once");
        }

        // No SSO route is a 500 for junk.
        for junk in [
            "/auth/oidc/callback",
            "/auth/oidc/callback?error=server_error",
            "/auth/oidc/login?max_age=abc",
        ] {
            let status = browser().get(app.url(junk)).send().unwrap().status();
            assert!(status.is_client_error(), "{junk}: {status}");
        }
    });
}

#[test]
fn sso_never_takes_over_a_local_account_and_refuses_disabled_users() {
    each_backend_with_sso(|app, _idp| {
        app.user("tim", Role::Admin, "tim's local password");
        let (res, _, _) = through_provider(
            app,
            &browser(),
            "/auth/oidc/login",
            AtProvider::SignIn("tim"),
        );
        assert_eq!(res.status(), 409);
        assert!(
            res.text()
                .unwrap()
                .contains("exists already and is not linked")
        );
        let mut conn = app.conn();
        let tim = storage::find_user_by_name(&mut conn, "tim")
            .unwrap()
            .unwrap();
        assert!(tim.sso_subject.is_none());
        assert!(
            storage::user_memberships(&mut conn, tim.id)
                .unwrap()
                .is_empty()
        );
        drop(conn);

        let client = browser();
        let (res, _, _) = through_provider(
            app,
            &client,
            "/auth/oidc/login",
            AtProvider::SignIn("amita"),
        );
        assert_eq!(res.status(), 303);
        let mut conn = app.conn();
        let amita = storage::find_user_by_name(&mut conn, "amita")
            .unwrap()
            .unwrap();
        storage::set_user_disabled(&mut conn, amita.id, true).unwrap();
        drop(conn);
        // Her session ends at once, and she cannot sign in again.
        assert_eq!(client.get(app.url("/")).send().unwrap().status(), 303);
        let (res, _, _) = through_provider(
            app,
            &browser(),
            "/auth/oidc/login",
            AtProvider::SignIn("amita"),
        );
        assert_eq!(res.status(), 403);
        assert!(res.text().unwrap().contains("is disabled"));
    });
}

/// Answers every connection with `response`, for `count` connections.
fn one_answer_server(response: &'static str, count: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    url
}

#[test]
fn an_unreachable_or_malformed_issuer_stops_the_start() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = |issuer: String| slipway::config::OidcSettings {
        issuer,
        client_id: "slipway".into(),
        client_secret: secrecy::SecretString::from("s"),
        groups_claim: "groups".into(),
    };
    let closed = format!("http://127.0.0.1:{}", crate::idp::free_port());
    let err = rt
        .block_on(slipway::web::oidc::Sso::discover(
            &settings(closed.clone()),
            "http://127.0.0.1:8080",
        ))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("cannot use the discovery document of {closed}")),
        "{err}"
    );

    let body = "{\"issuer\": 3}";
    let response: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let malformed = one_answer_server(response, 1);
    let err = rt
        .block_on(slipway::web::oidc::Sso::discover(
            &settings(malformed.clone()),
            "http://127.0.0.1:8080",
        ))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("cannot use the discovery document of {malformed}")),
        "{err}"
    );
}
