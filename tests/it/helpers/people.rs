//! People: local users with roles and groups, their API tokens, and
//! browsers signed in through the login form.

use reqwest::blocking::{Client, Response};
use scraper::Html;
use slipway::domain::Role;
use slipway::engine::users;
use slipway::storage::DbConn;

use super::app::TestApp;
use super::html::csrf_of;

/// The password of the users made here (unless a test gives one).
pub const PASSWORD: &str = "a long test password";

/// How long test clients keep an idle connection. The server closes idle
/// keep-alive connections after 5 s; on a loaded machine a request sent on
/// a connection idle for about that long can meet the server's close
/// ("connection reset"), so clients drop them well before.
pub(super) const IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// A browser-like client: keeps cookies, does not follow redirects.
pub fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(IDLE)
        .build()
        .expect("client")
}

/// Creates a local user with a role, groups and a password.
fn create_user(conn: &mut DbConn, username: &str, role: Role, groups: &[&str], password: &str) {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    users::create_user(
        conn,
        users::NewLocalUser {
            username,
            role,
            groups: &groups,
            password,
        },
        "test",
    )
    .expect("user");
}

/// Creates a local user in `groups` with a role, a password
/// ([`PASSWORD`]) and an API token; returns the token.
pub fn user_with_token(conn: &mut DbConn, username: &str, role: Role, groups: &[&str]) -> String {
    create_user(conn, username, role, groups, PASSWORD);
    users::create_token(conn, username, "test", "test").expect("token")
}

/// A user in `groups` with a role, a password ([`PASSWORD`]) and an API
/// token; returns the token.
pub fn member(app: &TestApp, username: &str, role: Role, groups: &[&str]) -> String {
    user_with_token(&mut app.conn(), username, role, groups)
}

impl TestApp {
    /// A user with this role and an API token for them.
    pub fn token(&self, username: &str, role: Role) -> String {
        member(self, username, role, &[])
    }

    /// A new API token of the user `manager` (a release manager, made on
    /// first use).
    pub(super) fn manager_token(&self) -> String {
        let mut conn = self.conn();
        if slipway::storage::find_user_by_name(&mut conn, "manager")
            .expect("lookup")
            .is_none()
        {
            drop(conn);
            return self.token("manager", Role::ReleaseManager);
        }
        users::create_token(&mut conn, "manager", "again", "test").expect("token")
    }

    /// A local user with a password.
    pub fn user(&self, username: &str, role: Role, password: &str) {
        create_user(&mut self.conn(), username, role, &[], password);
    }

    /// Signs `client` in through the login form; returns the answer.
    pub fn sign_in(&self, client: &Client, username: &str, password: &str, next: &str) -> Response {
        let page = client
            .get(self.url(&format!("/login?next={next}")))
            .send()
            .expect("GET /login")
            .text()
            .expect("body");
        let csrf = csrf_of(&Html::parse_document(&page));
        client
            .post(self.url("/login"))
            .form(&[
                ("username", username),
                ("password", password),
                ("csrf", csrf.as_str()),
                ("next", next),
            ])
            .send()
            .expect("POST /login")
    }

    /// A signed-in browser of a new local user with this role (password
    /// `<username>'s long password`).
    pub fn signed_in(&self, username: &str, role: Role) -> Client {
        let password = format!("{username}'s long password");
        self.user(username, role, &password);
        self.browser_of(username, &password, "/")
    }

    /// A signed-in browser of a new local user with this role and the
    /// password [`PASSWORD`].
    pub fn member_browser(&self, username: &str, role: Role) -> Client {
        self.user(username, role, PASSWORD);
        self.browser_of(username, PASSWORD, "/")
    }

    /// GET a page as `client` (a signed-in browser); it must answer 200.
    pub fn page_as(&self, client: &Client, path: &str) -> Html {
        let res = client.get(self.url(path)).send().expect("GET");
        let status = res.status();
        let body = res.text().expect("body");
        assert_eq!(status, 200, "[{}] GET {path}: {body}", self.backend);
        Html::parse_document(&body)
    }

    /// A browser signed in as an existing user, landing on `next`.
    pub fn browser_of(&self, username: &str, password: &str, next: &str) -> Client {
        let client = browser();
        let res = self.sign_in(&client, username, password, next);
        assert_eq!(res.status(), 303, "[{}] sign in {username}", self.backend);
        client
    }
}
