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

/// The session cookie (`name=value`) a sign-in answer sets.
fn session_cookie(res: &reqwest::blocking::Response) -> String {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("slipway_session="))
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string()
}

/// What a request with only `cookie` gets: the board page and the API.
fn with_cookie(app: &crate::helpers::TestApp, cookie: &str) -> (u16, u16) {
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client
        .get(app.url("/"))
        .header("Cookie", cookie)
        .send()
        .unwrap();
    let page_status = page.status().as_u16();
    if page_status == 303 {
        assert!(
            page.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("/login"),
            "back to sign-in"
        );
    }
    let api = client
        .get(app.url("/api/v1/pipelines"))
        .header("Cookie", cookie)
        .send()
        .unwrap()
        .status()
        .as_u16();
    (page_status, api)
}

#[test]
fn a_cookie_copied_before_sign_out_no_longer_works_after() {
    each_backend(|app| {
        let b = &app.backend;
        app.user("mara", Role::ReleaseManager, "correct horse battery");
        let client = browser();
        let res = app.sign_in(&client, "mara", "correct horse battery", "/");
        assert_eq!(res.status(), 303, "[{b}]");
        let copied = session_cookie(&res);
        assert_eq!(
            with_cookie(app, &copied),
            (200, 200),
            "[{b}] the copy works"
        );

        let html = Html::parse_document(&client.get(app.url("/")).send().unwrap().text().unwrap());
        let res = client
            .post(app.url("/logout"))
            .form(&[("csrf", csrf_of(&html).as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303, "[{b}]");
        assert_eq!(with_cookie(app, &copied), (303, 401), "[{b}] revoked");
    });
}

/// A session unused for longer than `SESSION_IDLE` (7 days) has ended,
/// however often its cookie is presented afterwards.
#[test]
fn a_session_idle_for_a_week_has_ended() {
    each_backend(|app| {
        use diesel::prelude::*;
        use slipway::storage::schema::sessions;
        let b = &app.backend;
        app.user("ida", Role::Viewer, "ida's long password");
        let client = browser();
        let res = app.sign_in(&client, "ida", "ida's long password", "/");
        let copied = session_cookie(&res);
        assert_eq!(with_cookie(app, &copied), (200, 200), "[{b}]");
        let long_ago = slipway::storage::now()
            - slipway::engine::users::SESSION_IDLE
            - chrono::TimeDelta::minutes(1);
        let mut conn = app.conn();
        diesel::update(sessions::table)
            .set(sessions::last_seen_at.eq(long_ago))
            .execute(&mut *conn)
            .unwrap();
        drop(conn);
        assert_eq!(with_cookie(app, &copied), (303, 401), "[{b}] idle too long");
    });
}

#[test]
fn disabling_a_user_ends_their_sessions_for_good() {
    each_backend(|app| {
        let b = &app.backend;
        app.user("tim", Role::Deployer, "tim's long password");
        let client = browser();
        let res = app.sign_in(&client, "tim", "tim's long password", "/");
        let copied = session_cookie(&res);
        assert_eq!(with_cookie(app, &copied), (200, 200), "[{b}]");

        let admin = app.signed_in("boss", Role::Admin);
        let tim = {
            let mut conn = app.conn();
            slipway::storage::find_user_by_name(&mut conn, "tim")
                .unwrap()
                .unwrap()
                .id
        };
        let html = Html::parse_document(
            &admin
                .get(app.url("/admin/users"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        let csrf = csrf_of(&html);
        for action in ["disable", "enable"] {
            let res = admin
                .post(app.url(&format!("/admin/users/{tim}/{action}")))
                .form(&[("csrf", csrf.as_str())])
                .send()
                .unwrap();
            assert_eq!(res.status(), 303, "[{b}] {action}");
        }
        // Enabled again, tim signs in afresh: the old sessions stay ended.
        assert_eq!(with_cookie(app, &copied), (303, 401), "[{b}]");
        assert_eq!(
            client.get(app.url("/")).send().unwrap().status(),
            303,
            "[{b}]"
        );
        let res = app.sign_in(&client, "tim", "tim's long password", "/");
        assert_eq!(res.status(), 303, "[{b}]");
        assert_eq!(
            client.get(app.url("/")).send().unwrap().status(),
            200,
            "[{b}]"
        );
    });
}

#[test]
fn sign_out_everywhere_ends_every_session_of_the_user() {
    each_backend(|app| {
        let b = &app.backend;
        app.user("amita", Role::Viewer, "amita's long password");
        let laptop = browser();
        let phone = browser();
        app.sign_in(&laptop, "amita", "amita's long password", "/");
        app.sign_in(&phone, "amita", "amita's long password", "/");
        let other = app.signed_in("zoe", Role::Viewer);

        let html = Html::parse_document(
            &laptop
                .get(app.url("/settings/tokens"))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        let lead = texts(&html, "main p").join(" ");
        assert!(lead.contains("2 browser sessions"), "[{b}] {lead}");
        let forms = attrs(&html, "form[action='/settings/sessions/revoke']", "method");
        assert_eq!(forms, vec!["post"], "[{b}]");
        // The page's title is its name, not a copy of its content.
        let title = texts(&html, "title").join(" ");
        assert!(title.starts_with("API tokens"), "[{b}] {title}");
        assert!(!title.contains("Sign out everywhere"), "[{b}] {title}");
        assert_eq!(
            texts(&html, "form[action='/settings/sessions/revoke'] button"),
            vec!["Sign out everywhere"],
            "[{b}]"
        );
        // Without the form's CSRF token: refused, nobody signed out.
        let res = laptop
            .post(app.url("/settings/sessions/revoke"))
            .form(&[("csrf", "nope")])
            .send()
            .unwrap();
        assert_eq!(res.status(), 403, "[{b}]");
        assert_eq!(
            phone.get(app.url("/")).send().unwrap().status(),
            200,
            "[{b}]"
        );

        let res = laptop
            .post(app.url("/settings/sessions/revoke"))
            .form(&[("csrf", csrf_of(&html).as_str())])
            .send()
            .unwrap();
        assert_eq!(res.status(), 303, "[{b}]");
        assert_eq!(res.headers()["location"], "/", "[{b}]");
        for client in [&laptop, &phone] {
            assert_eq!(
                client.get(app.url("/")).send().unwrap().status(),
                303,
                "[{b}]"
            );
        }
        assert_eq!(
            other.get(app.url("/")).send().unwrap().status(),
            200,
            "[{b}] others stay"
        );
        let mut conn = app.conn();
        let events = slipway::storage::list_audit(&mut conn, None, 50).unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.action == "auth.sign_out_everywhere" && e.actor == "amita"),
            "[{b}]"
        );
    });
}

/// `n` sign-ins of `username` at once, each from its own browser; the
/// password of try `i` is `password(i)`. Returns the statuses.
fn parallel_sign_ins(
    app: &crate::helpers::TestApp,
    username: &str,
    n: usize,
    password: impl Fn(usize) -> String + Sync,
) -> Vec<u16> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, password) = (&barrier, &password);
                s.spawn(move || {
                    let client = browser();
                    let page = client
                        .get(app.url("/login"))
                        .send()
                        .unwrap()
                        .text()
                        .unwrap();
                    let csrf = csrf_of(&Html::parse_document(&page));
                    barrier.wait();
                    client
                        .post(app.url("/login"))
                        .form(&[
                            ("username", username),
                            ("password", password(i).as_str()),
                            ("csrf", csrf.as_str()),
                        ])
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn failed_sign_ins(app: &crate::helpers::TestApp, username: &str) -> usize {
    let mut conn = app.conn();
    slipway::storage::list_audit(&mut conn, None, 500)
        .unwrap()
        .iter()
        .filter(|e| e.action == "auth.sign_in_failed" && e.subject == format!("user:{username}"))
        .count()
}

#[test]
fn parallel_wrong_passwords_are_counted_before_any_is_checked() {
    each_backend(|app| {
        let b = &app.backend;
        app.user("amita", Role::Deployer, "the right password");
        let statuses = parallel_sign_ins(app, "amita", 30, |i| format!("wrong {i}"));
        let checked = statuses.iter().filter(|s| **s == 401).count();
        let throttled = statuses.iter().filter(|s| **s == 429).count();
        assert!(checked <= 5, "[{b}] {statuses:?}");
        assert_eq!(checked + throttled, 30, "[{b}] {statuses:?}");
        assert!(failed_sign_ins(app, "amita") <= 5, "[{b}]");
        // Locked: the right password is refused too, without being checked.
        let res = app.sign_in(&browser(), "amita", "the right password", "/");
        assert_eq!(res.status(), 429, "[{b}]");
    });
}

#[test]
fn the_right_password_among_parallel_guesses_is_refused_once_locked() {
    each_backend(|app| {
        let b = &app.backend;
        app.user("tim", Role::Deployer, "the right password");
        let statuses = parallel_sign_ins(app, "tim", 40, |i| {
            if i % 8 == 7 {
                "the right password".to_string()
            } else {
                format!("guess {i}")
            }
        });
        // At most 5 wrong guesses were checked; the rest were not looked at.
        let wrong = statuses.iter().filter(|s| **s == 401).count();
        assert!(wrong <= 5, "[{b}] at most 5 checked: {statuses:?}");
        assert!(
            statuses.iter().all(|s| [303, 401, 429].contains(s)),
            "[{b}] {statuses:?}"
        );
        assert!(
            statuses.iter().filter(|s| **s == 429).count() >= 30,
            "[{b}] {statuses:?}"
        );
        assert!(failed_sign_ins(app, "tim") <= 5, "[{b}]");
        let res = app.sign_in(&browser(), "tim", "the right password", "/");
        assert_eq!(res.status(), 429, "[{b}] locked");
        assert!(
            res.text().unwrap().contains("Too many failed sign-ins"),
            "[{b}]"
        );
    });
}
