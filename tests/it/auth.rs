//! Local sign-in, sessions, CSRF and sign-out, as a browser does them.

use scraper::Html;
use slipway::domain::Role;

use crate::helpers::{attrs, browser, csrf_of, each_backend, texts};

#[test]
fn sign_in_shows_the_user_and_sign_out_ends_the_session() {
    each_backend(|app| {
        app.user("mara", Role::ReleaseManager, "correct horse battery");
        let client = browser();
        // Anonymous: every page sends the browser to sign in and come back.
        let res = client.get(app.url("/")).send().unwrap();
        assert_eq!(res.status(), 303);
        assert_eq!(res.headers()["location"], "/login?next=%2F");

        let login = Html::parse_document(
            &client
                .get(app.url("/login"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        for id in attrs(&login, "form label", "for") {
            assert_eq!(
                attrs(&login, &format!("input#{id}"), "id").len(),
                1,
                "label {id}"
            );
        }
        assert_eq!(
            attrs(&login, "input[name=password]", "type"),
            vec!["password"]
        );

        let res = app.sign_in(
            &client,
            "mara",
            "correct horse battery",
            "/pipelines/x/releases?branch=main",
        );
        assert_eq!(res.status(), 303);
        assert_eq!(
            res.headers()["location"],
            "/pipelines/x/releases?branch=main"
        );
        let cookie = res.headers()["set-cookie"].to_str().unwrap().to_lowercase();
        assert!(
            cookie.contains("httponly") && cookie.contains("samesite=lax"),
            "{cookie}"
        );

        let html = Html::parse_document(&client.get(app.url("/")).send().unwrap().text().unwrap());
        let who = texts(&html, "header .who span").join(" ");
        assert!(
            who.contains("mara") && who.contains("Release manager"),
            "{who}"
        );

        // Sign-out without the CSRF token is refused and changes nothing.
        let res = client
            .post(app.url("/logout"))
            .form(&[("csrf", "nope")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);
        let html = Html::parse_document(&client.get(app.url("/")).send().unwrap().text().unwrap());
        assert!(texts(&html, "header .who span").join(" ").contains("mara"));
        let csrf = csrf_of(&html);
        let res = client
            .post(app.url("/logout"))
            .form(&[("csrf", csrf.as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303);
        let res = client.get(app.url("/")).send().unwrap();
        assert_eq!(res.status(), 303, "signed out");
        assert_eq!(res.headers()["location"], "/login?next=%2F");

        // Both are in the audit log, the password nowhere.
        let mut conn = app.conn();
        let events = slipway::storage::list_audit(&mut conn, None, 50).unwrap();
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert!(
            actions.contains(&"auth.sign_in") && actions.contains(&"auth.sign_out"),
            "{actions:?}"
        );
        assert!(events.iter().all(|e| !e.detail.contains("correct horse")));
    });
}

#[test]
fn wrong_passwords_missing_csrf_and_open_redirects_are_refused() {
    each_backend(|app| {
        app.user("tim", Role::Viewer, "a long enough password");
        let client = browser();
        let res = app.sign_in(&client, "tim", "wrong", "/");
        assert_eq!(res.status(), 401);
        let html = Html::parse_document(&res.text().unwrap());
        assert_eq!(
            texts(&html, "p.form-error"),
            vec!["The user name or password is wrong."]
        );
        assert_eq!(attrs(&html, "input#username", "value"), vec!["tim"]);
        let res = app.sign_in(&client, "nobody", "wrong", "/");
        assert_eq!(res.status(), 401);

        // No CSRF token: 403, nobody signed in.
        let res = client
            .post(app.url("/login"))
            .form(&[("username", "tim"), ("password", "a long enough password")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403);

        for evil in [
            "//evil.example/x",
            "https://evil.example",
            "/\\evil.example",
        ] {
            let c = browser();
            let res = app.sign_in(&c, "tim", "a long enough password", &urlencode(evil));
            assert_eq!(res.status(), 303, "{evil}");
            assert_eq!(res.headers()["location"], "/", "{evil}");
        }
    });
}

#[test]
fn repeated_failures_lock_the_account_for_a_while() {
    each_backend(|app| {
        app.user("amita", Role::Deployer, "the right password");
        let client = browser();
        for _ in 0..5 {
            assert_eq!(app.sign_in(&client, "amita", "nope", "/").status(), 401);
        }
        let res = app.sign_in(&client, "amita", "the right password", "/");
        assert_eq!(res.status(), 429);
        assert!(res.text().unwrap().contains("Too many failed sign-ins"));
    });
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}
