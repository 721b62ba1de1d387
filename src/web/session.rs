//! Browser sessions: local sign-in and sign-out, the session key, CSRF
//! tokens for every form, and the per-page context (who is signed in).
//!
//! Cookies are `HttpOnly`, `SameSite=Lax`, and `Secure` when the public URL
//! is https. The session key lives in `<data-dir>/session.key` (mode 0600) so
//! that a restart, or a second instance on the same data, keeps everyone
//! signed in.
//!
//! The (encrypted) cookie carries a random session id; the server keeps the
//! session in its `sessions` table and checks it on every request
//! ([`super::auth::authenticate`]), so sign-out, disabling the user and
//! "sign out everywhere" end it even for a copied cookie.

use std::future::{Ready, ready};
use std::path::Path;

use actix_session::config::{CookieContentSecurity, PersistentSession};
use actix_session::storage::CookieSessionStore;
use actix_session::{Session, SessionExt, SessionMiddleware};
use actix_web::cookie::{Key, SameSite};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, http::header, web};
use askama::Template;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Deserialize;

use super::auth::AuthUser;
use super::pages::render;
use super::{State, WebError};
use crate::domain::authz::Action;
use crate::engine::users;

/// Session keys.
const USER_ID: &str = "user_id";
/// The server-side session's id (see [`users::start_session`]).
const SESSION_ID: &str = "sid";
const CSRF: &str = "csrf";
/// A message for the next page ([`set_flash`]).
const FLASH: &str = "flash";
/// When the session's user signed in (Unix seconds).
const SIGNED_IN_AT: &str = "signed_in_at";
/// When the session's user last authenticated at the SSO provider (Unix
/// seconds, the ID token's `auth_time`); absent after a password sign-in.
const SSO_AT: &str = "sso_at";

/// Loads `<data-dir>/session.key`, creating 64 random bytes (hex) on first use.
pub fn load_or_create_key(data_dir: &Path) -> anyhow::Result<Key> {
    let path = data_dir.join("session.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).map_err(|_| {
                anyhow::anyhow!("{} is not a hex session key; delete it to make a new one (everyone is signed out)", path.display())
            })?;
            anyhow::ensure!(
                bytes.len() >= 64,
                "{} holds {} bytes; a session key needs 64",
                path.display(),
                bytes.len()
            );
            Ok(Key::from(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 64];
            rand::rng().fill(&mut bytes[..]);
            crate::engine::users::write_private_file(&path, &hex::encode(bytes))?;
            Ok(Key::from(&bytes))
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// The session middleware with Slipway's cookie settings.
pub fn middleware(key: Key, secure: bool) -> SessionMiddleware<CookieSessionStore> {
    SessionMiddleware::builder(CookieSessionStore::default(), key)
        .cookie_name("slipway_session".into())
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_secure(secure)
        .cookie_content_security(CookieContentSecurity::Private)
        .session_lifecycle(
            PersistentSession::default().session_ttl(actix_web::cookie::time::Duration::days(7)),
        )
        .build()
}

/// The signed-in user's id from the session, if any.
pub fn session_user_id(session: &Session) -> Option<i64> {
    session.get::<i64>(USER_ID).ok().flatten()
}

/// The server-side session id of the cookie, if any.
pub fn session_id(session: &Session) -> Option<String> {
    session.get::<String>(SESSION_ID).ok().flatten()
}

fn session_time(session: &Session, key: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    session
        .get::<i64>(key)
        .ok()
        .flatten()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
}

/// When the session's user signed in (by password or SSO).
pub fn signed_in_at(session: &Session) -> Option<chrono::DateTime<chrono::Utc>> {
    session_time(session, SIGNED_IN_AT)
}

/// When the session's user last signed in through SSO, if they did.
pub fn sso_at(session: &Session) -> Option<chrono::DateTime<chrono::Utc>> {
    session_time(session, SSO_AT)
}

/// Signs `user_id` in on this session: a new cookie (no fixation) holding
/// `session_id` (from [`users::start_session`]), a fresh CSRF token,
/// `signed_in_at` now, and `sso_at` for an SSO sign-in (cleared for a
/// password one).
pub fn begin(
    session: &Session,
    user_id: i64,
    session_id: &str,
    sso_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<(), WebError> {
    session.renew();
    session
        .insert(USER_ID, user_id)
        .map_err(WebError::internal)?;
    session
        .insert(SESSION_ID, session_id)
        .map_err(WebError::internal)?;
    session
        .insert(CSRF, new_token())
        .map_err(WebError::internal)?;
    session
        .insert(SIGNED_IN_AT, chrono::Utc::now().timestamp())
        .map_err(WebError::internal)?;
    match sso_at {
        Some(at) => session
            .insert(SSO_AT, at.timestamp())
            .map_err(WebError::internal)?,
        None => {
            session.remove(SSO_AT);
        }
    }
    Ok(())
}

fn new_token() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The session's CSRF token, created on first use.
pub fn csrf_token(session: &Session) -> String {
    if let Ok(Some(token)) = session.get::<String>(CSRF) {
        return token;
    }
    let token = new_token();
    let _ = session.insert(CSRF, &token);
    token
}

/// Leaves `message` for the next page this session shows (after a form
/// post redirects): it appears once, at the top, as a status message.
pub fn set_flash(session: &Session, message: impl Into<String>) {
    if let Err(e) = session.insert(FLASH, message.into()) {
        tracing::warn!(error = %e, "cannot keep a message for the next page");
    }
}

/// Checks a form's CSRF token against the session's, in constant time.
pub fn check_csrf(session: &Session, submitted: &str) -> Result<(), WebError> {
    let expected = session
        .get::<String>(CSRF)
        .ok()
        .flatten()
        .unwrap_or_default();
    let same = !expected.is_empty()
        && expected.len() == submitted.len()
        && expected
            .bytes()
            .zip(submitted.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(WebError::Forbidden(
            "The form has expired or did not come from Slipway (CSRF check failed). Reload the page and try again.".into(),
        ))
    }
}

/// What every page's layout needs: who is signed in, and the CSRF token
/// for the sign-out button.
#[derive(Debug, Clone)]
pub struct Nav {
    pub user: Option<String>,
    pub role: Option<&'static str>,
    pub csrf: String,
    /// The current path, for "sign in and come back here".
    pub here: String,
    /// The signed-in user's role, for [`Nav::may`].
    pub rank: Option<crate::domain::Role>,
    /// How many approvals wait for the signed-in user ("Approvals (N)"),
    /// counted once per page request by [`super::auth::authenticate`].
    pub approvals: Option<usize>,
    /// What the last form did ("1.0.2 is queued for test."), shown once
    /// at the top of the next page (see [`set_flash`]).
    pub flash: Option<String>,
}

impl Nav {
    /// For pages rendered without a request: nobody signed in. (An error
    /// page starts with it; [`super::error::with_nav`] renders it again
    /// with the request's.)
    pub fn anonymous() -> Nav {
        Nav {
            user: None,
            role: None,
            csrf: String::new(),
            here: "/".into(),
            rank: None,
            approvals: None,
            flash: None,
        }
    }

    /// Whether the signed-in user may take `action` (to show or hide a
    /// form; the handler decides again).
    pub fn may(&self, action: Action) -> bool {
        self.rank
            .is_some_and(|role| crate::domain::authz::allowed(role, action))
    }

    /// How a navigation link to `section` marks the current page:
    /// `aria-current="page"` on the page itself, `"true"` on a page under
    /// it (a pipeline under the release board, one gate under the gates),
    /// nothing elsewhere. The stylesheet gives both a visible bar.
    pub fn current(&self, section: &str) -> Option<&'static str> {
        let path = self.here.split('?').next().unwrap_or_default();
        if path == section {
            return Some("page");
        }
        let under = match section {
            "/" => path.starts_with("/pipelines/"),
            _ => path
                .strip_prefix(section)
                .is_some_and(|rest| rest.starts_with('/')),
        };
        under.then_some("true")
    }

    /// `/login?next=<this page>`
    pub fn login_url(&self) -> String {
        format!("/login{}", super::urls::query(&[("next", &self.here)]))
    }
}

impl Nav {
    /// The navigation of `req`: its signed-in user (set by
    /// [`super::auth::authenticate`]) and their waiting approvals, the
    /// session's CSRF token, and the path. Pages get it as an extractor;
    /// error pages from [`super::error::with_nav`], so every page of a
    /// signed-in person has the same header, after a form post too.
    pub fn of(req: &HttpRequest) -> Nav {
        let session = req.get_session();
        let user = req.extensions().get::<AuthUser>().cloned();
        let approvals = req
            .extensions()
            .get::<super::auth::WaitingApprovals>()
            .map(|w| w.0);
        let here = match req.uri().query() {
            Some(q) => format!("{}?{q}", req.path()),
            None => req.path().to_string(),
        };
        // A page shows the message once; a form post leaves it for the
        // page it redirects to.
        let flash = if req.method() == actix_web::http::Method::GET {
            session.remove_as::<String>(FLASH).and_then(Result::ok)
        } else {
            None
        };
        Nav {
            flash,
            rank: user.as_ref().map(|u| u.role),
            role: user.as_ref().map(|u| u.role.label()),
            user: user.map(|u| u.username),
            csrf: csrf_token(&session),
            here,
            approvals,
        }
    }
}

impl FromRequest for Nav {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Nav::of(req)))
    }
}

/// `next` only ever leads back into Slipway: a local absolute path, not
/// `//host` or `/\host`, no scheme.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && !n.contains("://")
                && !n.chars().any(|c| c.is_control()) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[derive(Template)]
#[template(path = "pages/login.html")]
pub struct LoginPage {
    pub nav: Nav,
    pub next: String,
    pub username: String,
    pub error: Option<String>,
    /// "Sign in with SSO", when single sign-on is configured.
    pub sso_url: Option<String>,
}

/// The "Sign in with SSO" link, coming back to `next`.
fn sso_url(state: &super::AppState, next: &str) -> Option<String> {
    state
        .sso
        .get()
        .map(|_| format!("/auth/oidc/login{}", super::urls::query(&[("next", next)])))
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub async fn login_form(
    state: State,
    nav: Nav,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, WebError> {
    let next = safe_next(query.next.as_deref());
    render(&LoginPage {
        sso_url: sso_url(&state, &next),
        next,
        nav,
        username: String::new(),
        error: None,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    csrf: String,
}

fn client_addr(req: &HttpRequest) -> String {
    req.peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub async fn login(
    state: State,
    req: HttpRequest,
    session: Session,
    nav: Nav,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, WebError> {
    let form = form.into_inner();
    check_csrf(&session, &form.csrf)?;
    let next = safe_next(form.next.as_deref());
    let addr = client_addr(&req);
    let again =
        |status: actix_web::http::StatusCode, message: &str| -> Result<HttpResponse, WebError> {
            let page = LoginPage {
                nav: nav.clone(),
                next: next.clone(),
                username: form.username.clone(),
                error: Some(message.to_string()),
                sso_url: sso_url(&state, &next),
            };
            let body = page.render().map_err(WebError::internal)?;
            Ok(HttpResponse::build(status)
                .content_type("text/html; charset=utf-8")
                .body(body))
        };
    let (username, password) = (form.username.clone(), form.password.clone());
    let previous = session_id(&session);
    let outcome = state
        .with_conn::<_, WebError, _>(move |conn| {
            match users::verify_login(conn, &username, &password, &addr)? {
                users::SignIn::Accepted(user) => {
                    if let Some(old) = previous {
                        users::end_session(conn, &old)?;
                    }
                    let sid = users::start_session(conn, user.id)?;
                    Ok(Ok((user, sid)))
                }
                other => Ok(Err(other)),
            }
        })
        .await?;
    let (user, sid) = match outcome {
        Ok(signed_in) => signed_in,
        Err(users::SignIn::Throttled) => {
            return again(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins for this account or from this address. Wait 15 minutes and try again.",
            );
        }
        Err(_) => {
            return again(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "The user name or password is wrong.",
            );
        }
    };
    begin(&session, user.id, &sid, None)?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next))
        .finish())
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    state: State,
    session: Session,
    nav: Nav,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let sid = session_id(&session);
    let who = nav.user;
    if who.is_some() || sid.is_some() {
        state
            .with_conn::<_, WebError, _>(move |conn| {
                if let Some(sid) = sid {
                    users::end_session(conn, &sid)?;
                }
                let Some(user) = who else {
                    return Ok(());
                };
                let actor = user.clone();
                crate::storage::write_transaction(conn, |conn| {
                    crate::storage::append_audit(
                        conn,
                        &actor,
                        "auth.sign_out",
                        &format!("user:{user}"),
                        "",
                    )
                })?;
                Ok(())
            })
            .await?;
    }
    session.purge();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_only_leads_back_into_slipway() {
        assert_eq!(safe_next(Some("/pipelines/x?a=1")), "/pipelines/x?a=1");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "evil",
            "/x\r\nSet-Cookie: a",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
