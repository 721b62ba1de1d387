//! People: sign-in everywhere, API tokens on the settings page, the users
//! and groups admin page, the audit log page, `slipway audit verify`, and
//! secure session cookies.

use std::process::Command;

use diesel::prelude::*;
use reqwest::blocking::Client;
use scraper::Html;
use serde_json::Value;
use slipway::domain::Role;
use slipway::storage;

use crate::helpers::{
    SPEC_PIPELINE, TestApp, attrs, browser, csrf_of, each_backend, spawn_app_with, texts,
};

/// A signed-in browser of the first admin (password from the data dir).
fn admin(app: &TestApp) -> Client {
    let password = std::fs::read_to_string(app.data_dir().join("initial-admin-password")).unwrap();
    let client = browser();
    let res = app.sign_in(&client, "admin", password.trim(), "/");
    assert_eq!(res.status(), 303, "[{}] sign in admin", app.backend);
    client
}

fn user_id(app: &TestApp, username: &str) -> i64 {
    storage::find_user_by_name(&mut app.conn(), username)
        .unwrap()
        .unwrap()
        .id
}

fn actions(app: &TestApp) -> Vec<(String, String, String, String)> {
    storage::list_audit(&mut app.conn(), None, 1000)
        .unwrap()
        .into_iter()
        .map(|e| (e.actor, e.action, e.subject, e.detail))
        .collect()
}

#[test]
fn every_page_needs_a_signed_in_user_but_health_sign_in_and_hooks_do_not() {
    each_backend(|app| {
        assert_eq!(app.import(SPEC_PIPELINE).status(), 201);
        for path in [
            "/",
            "/pipelines/space-game-web/releases?branch=main&state=failed",
            "/audit",
            "/admin/users",
            "/settings/tokens",
            "/no/such/page",
        ] {
            let res = app.get_anonymous(path);
            assert_eq!(res.status(), 303, "[{}] {path}", app.backend);
            let location = res.headers()["location"].to_str().unwrap().to_string();
            let next = reqwest::Url::parse(&app.url(&location)).unwrap();
            assert_eq!(next.path(), "/login");
            assert_eq!(
                next.query_pairs().find(|(k, _)| k == "next").unwrap().1,
                path,
                "[{}] back to the page asked for",
                app.backend
            );
        }
        for path in ["/api/v1/pipelines", "/api/v1/openapi.json", "/api/v1/nope"] {
            let res = app.get_anonymous(path);
            assert_eq!(res.status(), 401, "[{}] {path}", app.backend);
            let body: Value = res.json().unwrap();
            assert_eq!(body["error"]["code"], "unauthorized", "{path}");
        }
        for path in [
            "/healthz",
            "/readyz",
            "/metrics",
            "/login",
            "/login?next=%2Faudit",
        ] {
            assert_eq!(app.get_anonymous(path).status(), 200, "{path}");
        }
        let css = attrs(&app.page("/"), "link[rel=stylesheet]", "href");
        assert_eq!(app.get_anonymous(&css[0]).status(), 200, "static files");
        // A push webhook authenticates by its signature, not by a session.
        let res = app
            .client
            .post(app.url("/hooks/github/space-game-web"))
            .body("{}")
            .send()
            .unwrap();
        assert_eq!(res.status(), 401, "bad signature, not a sign-in redirect");
        // Without SSO configured the login page offers only the password form.
        let login = Html::parse_document(&app.get_anonymous("/login").text().unwrap());
        assert!(attrs(&login, "a.button", "href").is_empty());
        assert_eq!(app.get_anonymous("/auth/oidc/login").status(), 404);
    });
}

#[test]
fn session_cookies_are_secure_when_the_public_url_is_https() {
    for (label, db) in storage::testing::test_databases().into_iter().take(1) {
        let app = spawn_app_with(label, db, |s| {
            s.public_url = "https://slipway.tailspin.example".into();
        });
        // The sign-in form's session (which holds its CSRF token) already
        // comes in a Secure cookie, so a browser sends it over https only.
        let res = app.get_anonymous("/login");
        assert_eq!(res.status(), 200);
        let cookie = res.headers()["set-cookie"].to_str().unwrap().to_lowercase();
        assert!(
            cookie.contains("secure")
                && cookie.contains("httponly")
                && cookie.contains("samesite=lax"),
            "{cookie}"
        );
    }
    each_backend(|app| {
        let res = app.sign_in(&browser(), "viewer", "a long test password", "/");
        assert_eq!(res.status(), 303);
        let cookie = res.headers()["set-cookie"].to_str().unwrap().to_lowercase();
        assert!(!cookie.contains("secure"), "plain http: {cookie}");
    });
}

#[test]
fn api_tokens_are_created_once_listed_and_revoked_on_the_settings_page() {
    each_backend(|app| {
        let mara = app.signed_in("mara", Role::Deployer);
        let html = app.page_as(&mara, "/settings/tokens");
        assert_eq!(texts(&html, "h1"), vec!["API tokens of mara"]);
        assert!(texts(&html, "p.empty").join(" ").contains("no API tokens"));
        for id in attrs(&html, "main form label", "for") {
            assert_eq!(attrs(&html, &format!("#{id}"), "id").len(), 1, "label {id}");
        }
        let csrf = csrf_of(&html);

        // Without the form's CSRF token nothing is created.
        let res = mara
            .post(app.url("/settings/tokens"))
            .form(&[("name", "ci")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);
        let res = mara
            .post(app.url("/settings/tokens"))
            .form(&[("name", "  "), ("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 422);

        let res = mara
            .post(app.url("/settings/tokens"))
            .form(&[("name", "deploy script"), ("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-store");
        let html = Html::parse_document(&res.text().unwrap());
        let token = attrs(&html, "input#new-token", "value").remove(0);
        assert!(token.starts_with("slw_") && token.len() == 44, "{token}");
        assert!(
            texts(&html, ".created-token")
                .join(" ")
                .contains("shown only this once")
        );

        // It works, as mara, and is stored only as a hash.
        let (status, body) = {
            let res = app.get_with_token("/api/v1/pipelines", &token);
            (res.status(), res.text().unwrap())
        };
        assert_eq!(status, 200, "{body}");
        let rows = storage::list_tokens(&mut app.conn(), user_id(app, "mara")).unwrap();
        assert_eq!(rows.len(), 1);
        assert_ne!(rows[0].token_hash, token);
        assert!(!rows[0].token_hash.contains(&token[4..]));

        // Listed with its name and use, never with its value.
        let html = app.page_as(&mara, "/settings/tokens");
        let body = html.html();
        assert!(!body.contains(&token), "shown once only");
        let row = texts(&html, "table.tokens tbody tr").join(" ");
        assert!(
            row.contains("deploy script") && row.contains("just now"),
            "{row}"
        );
        assert!(row.contains("active"), "{row}");

        // Someone else cannot revoke it; without CSRF nobody can.
        let revoke = attrs(&html, "table.tokens form", "action").remove(0);
        assert_eq!(revoke, format!("/settings/tokens/{}/revoke", rows[0].id));
        let tim = app.signed_in("tim", Role::ReleaseManager);
        let tim_csrf = csrf_of(&app.page_as(&tim, "/settings/tokens"));
        let res = tim
            .post(app.url(&revoke))
            .form(&[("csrf", tim_csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(
            res.status(),
            404,
            "another person's token is not theirs to see"
        );
        let res = mara
            .post(app.url(&revoke))
            .form(&[("csrf", "x")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);
        assert_eq!(
            app.get_with_token("/api/v1/pipelines", &token).status(),
            200
        );

        let res = mara
            .post(app.url(&revoke))
            .form(&[("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/settings/tokens");
        assert_eq!(
            app.get_with_token("/api/v1/pipelines", &token).status(),
            401
        );
        let row = texts(
            &app.page_as(&mara, "/settings/tokens"),
            "table.tokens tbody tr",
        )
        .join(" ");
        assert!(row.contains("revoked"), "{row}");
        let res = mara
            .post(app.url(&revoke))
            .form(&[("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 409, "revoked already");

        // An admin may revoke anyone's token.
        let other = app.token("ops-bot", Role::Deployer);
        let other_id =
            storage::list_tokens(&mut app.conn(), user_id(app, "ops-bot")).unwrap()[0].id;
        let root = admin(app);
        let root_csrf = csrf_of(&app.page_as(&root, "/settings/tokens"));
        let res = root
            .post(app.url(&format!("/settings/tokens/{other_id}/revoke")))
            .form(&[("csrf", root_csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(
            app.get_with_token("/api/v1/pipelines", &other).status(),
            401
        );

        let audit = actions(app);
        for (actor, action, subject) in [
            ("mara", "token.create", "user:mara"),
            ("mara", "token.revoke", "user:mara"),
            ("admin", "token.revoke", "user:ops-bot"),
        ] {
            assert!(
                audit
                    .iter()
                    .any(|(a, x, s, _)| a == actor && x == action && s == subject),
                "{actor} {action} {subject}: {audit:?}"
            );
        }
        assert!(audit.iter().all(|(_, _, _, d)| !d.contains(&token)));
    });
}

#[test]
fn admins_change_roles_groups_and_accounts_on_the_users_page() {
    each_backend(|app| {
        let tim = app.signed_in("tim", Role::Viewer);
        assert_eq!(
            tim.get(app.url("/admin/users")).send().unwrap().status(),
            403
        );
        let html = app.page_as(&tim, "/");
        assert!(attrs(&html, "header a[href='/admin/users']", "href").is_empty());

        let root = admin(app);
        let html = app.page_as(&root, "/admin/users");
        assert_eq!(texts(&html, "h1"), vec!["Users and groups"]);
        assert!(
            !attrs(
                &app.page_as(&root, "/"),
                "header a[href='/admin/users']",
                "href"
            )
            .is_empty()
        );
        let names = texts(&html, "table.users tbody .username");
        assert_eq!(names, vec!["admin", "tim", "viewer"]);
        for id in attrs(&html, "main form label", "for") {
            assert_eq!(attrs(&html, &format!("#{id}"), "id").len(), 1, "label {id}");
        }
        let csrf = csrf_of(&html);
        let id = user_id(app, "tim");
        let post = |path: &str, form: &[(&str, &str)]| {
            root.post(app.url(&format!("/admin/users/{id}/{path}")))
                .form(form)
                .send()
                .unwrap()
        };

        assert_eq!(
            post("role", &[("role", "deployer")]).status(),
            403,
            "no CSRF"
        );
        let res = post("role", &[("role", "deployer"), ("csrf", &csrf)]);
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], format!("/admin/users#user-{id}"));
        assert_eq!(
            post("role", &[("role", "emperor"), ("csrf", &csrf)]).status(),
            422
        );
        assert_eq!(
            post("groups", &[("group", "qa"), ("csrf", &csrf)]).status(),
            303
        );
        assert_eq!(
            post("groups", &[("group", "group:management"), ("csrf", &csrf)]).status(),
            303
        );
        assert_eq!(
            post("groups", &[("group", "not a group"), ("csrf", &csrf)]).status(),
            422
        );
        assert_eq!(
            post("groups/remove", &[("group", "qa"), ("csrf", &csrf)]).status(),
            303
        );
        assert_eq!(
            post("groups/remove", &[("group", "qa"), ("csrf", &csrf)]).status(),
            404
        );

        // Tim's session sees the change at once.
        let who = texts(&app.page_as(&tim, "/"), "header .who span").join(" ");
        assert!(who.contains("Deployer"), "{who}");
        let html = app.page_as(&root, "/admin/users");
        let row = texts(&html, &format!("tr#user-{id}")).join(" ");
        assert!(row.contains("management") && !row.contains(" qa "), "{row}");
        assert_eq!(
            attrs(
                &html,
                &format!("select#role-{id} option[selected]"),
                "value"
            ),
            vec!["deployer"]
        );

        // Disabled: his session and tokens stop working; enabled again: back.
        assert_eq!(post("disable", &[("csrf", &csrf)]).status(), 303);
        assert_eq!(tim.get(app.url("/")).send().unwrap().status(), 303);
        let row = texts(
            &app.page_as(&root, "/admin/users"),
            &format!("tr#user-{id}"),
        )
        .join(" ");
        assert!(row.contains("disabled"), "{row}");
        assert_eq!(post("enable", &[("csrf", &csrf)]).status(), 303);

        // The last admin cannot lock everyone out.
        let me = user_id(app, "admin");
        let res = root
            .post(app.url(&format!("/admin/users/{me}/role")))
            .form(&[("role", "viewer"), ("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 409);
        let res = root
            .post(app.url(&format!("/admin/users/{me}/disable")))
            .form(&[("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 409);

        let audit = actions(app);
        for (action, detail) in [
            ("user.role", "from=viewer to=deployer"),
            ("user.group_add", "group=qa"),
            ("user.group_add", "group=management"),
            ("user.group_remove", "group=qa"),
            ("user.disable", ""),
            ("user.enable", ""),
        ] {
            assert!(
                audit.iter().any(|(a, x, s, d)| a == "admin"
                    && x == action
                    && s == "user:tim"
                    && d == detail),
                "{action} {detail}: {audit:?}"
            );
        }
    });
}

#[test]
fn the_audit_page_filters_and_pages_newest_first() {
    each_backend(|app| {
        {
            let mut conn = app.conn();
            for n in 0..60 {
                let actor = if n % 2 == 0 { "mara" } else { "tim" };
                storage::append_audit(
                    &mut conn,
                    actor,
                    if n % 3 == 0 {
                        "secret.set"
                    } else {
                        "definition.import"
                    },
                    &format!("pipeline:p{}", n % 4),
                    &format!("n={n}"),
                )
                .unwrap();
            }
            // LIKE's wildcards in a filter are taken literally.
            storage::append_audit(&mut conn, "x", "a_b.c", "s", "").unwrap();
            storage::append_audit(&mut conn, "x", "aXb.c", "s", "").unwrap();
        }
        let viewer = app.signed_in("vic", Role::Viewer);
        assert_eq!(viewer.get(app.url("/audit")).send().unwrap().status(), 403);
        let deployer = app.signed_in("dee", Role::Deployer);
        assert_eq!(
            deployer.get(app.url("/audit")).send().unwrap().status(),
            403
        );
        let manager = app.signed_in("rm", Role::ReleaseManager);

        let html = app.page_as(&manager, "/audit");
        for id in attrs(&html, "form.filters label", "for") {
            assert_eq!(
                attrs(&html, &format!("input#{id}"), "id").len(),
                1,
                "label {id}"
            );
        }
        let ids: Vec<i64> = texts(&html, "table.audit tbody tr td:first-child")
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(ids.len(), 50);
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");
        let older = attrs(&html, "a[rel=next]", "href").remove(0);
        assert_eq!(older, format!("/audit?before={}", ids[49]));
        let html = app.page_as(&manager, &older);
        let more: Vec<i64> = texts(&html, "table.audit tbody tr td:first-child")
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        assert!(more[0] < ids[49] && more.windows(2).all(|w| w[0] > w[1]));

        let html = app.page_as(
            &manager,
            "/audit?actor=mara&action=secret&subject=pipeline%3Ap2",
        );
        let rows = texts(&html, "table.audit tbody tr");
        // n even, n % 3 == 0, n % 4 == 2: 6, 18, 30, 42, 54.
        assert_eq!(rows.len(), 5, "{rows:?}");
        assert!(
            rows[0].contains("n=54") && rows[4].contains("n=6"),
            "{rows:?}"
        );
        assert!(
            rows.iter()
                .all(|r| r.contains("mara") && r.contains("secret.set"))
        );
        assert_eq!(attrs(&html, "input#actor", "value"), vec!["mara"]);
        let html = app.page_as(&manager, "/audit?actor=tim&before=20");
        let rows = texts(&html, "table.audit tbody tr td:first-child");
        assert!(!rows.is_empty());
        assert!(rows.iter().all(|id| id.parse::<i64>().unwrap() < 20));
        let html = app.page_as(&manager, "/audit?action=a_b");
        assert_eq!(texts(&html, "table.audit tbody tr td code"), vec!["a_b.c"]);
        let html = app.page_as(&manager, "/audit?actor=nobody");
        assert!(
            texts(&html, "p.empty")
                .join(" ")
                .contains("match these filters")
        );
        assert_eq!(
            manager
                .get(app.url("/audit?before=x"))
                .send()
                .unwrap()
                .status(),
            400
        );
    });
}

fn slipway_cli(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("--data-dir")
        .arg(app.data_dir())
        .arg("--database-url")
        .arg(app.database_url())
        .args(args)
        .env_remove("SLIPWAY_CONFIG")
        .env_remove("SLIPWAY_OIDC_ISSUER")
        .env_remove("SLIPWAY_OIDC_CLIENT_ID")
        .env_remove("SLIPWAY_OIDC_CLIENT_SECRET")
        .output()
        .expect("run slipway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn audit_verify_finds_a_tampered_record_on_both_databases() {
    use slipway::storage::schema::audit_events;
    each_backend(|app| {
        let _ = app.signed_in("mara", Role::ReleaseManager);
        storage::append_audit(
            &mut app.conn(),
            "mara",
            "secret.set",
            "pipeline:x",
            "name=A",
        )
        .unwrap();
        let count = storage::count_audit(&mut app.conn()).unwrap();
        assert!(count >= 3);
        let (code, out, err) = slipway_cli(app, &["audit", "verify"]);
        assert_eq!(code, 0, "[{}] {out}{err}", app.backend);
        assert_eq!(out.trim(), format!("audit chain intact ({count} records)"));

        // Someone with database access rewrites what a record says.
        let victim: i64 = {
            let mut conn = app.conn();
            let rows = storage::list_audit(&mut conn, None, 1000).unwrap();
            let sign_in = rows
                .iter()
                .find(|r| r.action == "auth.sign_in")
                .expect("a sign-in record");
            diesel::update(audit_events::table.find(sign_in.id))
                .set(audit_events::detail.eq("method=password from=somewhere-else"))
                .execute(&mut *conn)
                .unwrap();
            sign_in.id
        };
        let (code, out, err) = slipway_cli(app, &["audit", "verify"]);
        assert_eq!(code, 1, "[{}] {out}{err}", app.backend);
        assert_eq!(out.trim(), format!("broken link at record {victim}"));
        assert!(err.contains(&format!("broken at record {victim}")), "{err}");

        // Also found when the hash is recomputed to match the new text: the
        // next record's link no longer fits.
        let mut conn = app.conn();
        let row = storage::list_audit(&mut conn, None, 1000)
            .unwrap()
            .into_iter()
            .find(|r| r.id == victim)
            .unwrap();
        let hash = storage::audit_hash(
            &row.prev_hash,
            row.at,
            &row.actor,
            &row.action,
            &row.subject,
            &row.detail,
        );
        diesel::update(audit_events::table.find(victim))
            .set(audit_events::hash.eq(&hash))
            .execute(&mut *conn)
            .unwrap();
        drop(conn);
        let (code, out, _) = slipway_cli(app, &["audit", "verify"]);
        assert_eq!(code, 1);
        assert!(out.starts_with("broken link at record "), "{out}");
        let broken: i64 = out.trim().rsplit(' ').next().unwrap().parse().unwrap();
        assert!(broken > victim, "{out}");
    });
}

#[test]
fn serve_refuses_to_start_when_the_sso_issuer_cannot_be_used() {
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("http://127.0.0.1:{}", crate::idp::free_port());
    let run = |issuer: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_slipway"));
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_remove("SLIPWAY_DATABASE_URL")
            .env_remove("SLIPWAY_CONFIG")
            .env("SLIPWAY_OIDC_CLIENT_ID", "slipway")
            .env_remove("SLIPWAY_OIDC_CLIENT_SECRET");
        match issuer {
            Some(issuer) => cmd
                .env("SLIPWAY_OIDC_ISSUER", issuer)
                .env("SLIPWAY_OIDC_CLIENT_SECRET", "s3cret"),
            None => cmd.env_remove("SLIPWAY_OIDC_ISSUER"),
        };
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(Some(&closed));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot use the discovery document of {closed}")),
        "{err}"
    );
    assert!(
        !err.contains("s3cret"),
        "the secret is never printed: {err}"
    );
    // Half a configuration is refused too, naming what is missing.
    let (code, err) = run(None);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("SLIPWAY_OIDC_ISSUER and SLIPWAY_OIDC_CLIENT_SECRET"),
        "{err}"
    );
}
