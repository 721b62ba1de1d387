//! The sign-in page (`GET`/`POST /login`) and sign-out (`POST /logout`).
//! The session's writes are the engine's ([`crate::engine::sessions`]);
//! here the form is read, the cookie set ([`super::session::begin`]) and
//! the answer rendered.

use actix_session::Session;
use actix_web::{HttpRequest, HttpResponse, http::header, web};
use askama::Template;
use serde::Deserialize;

use super::nav::Nav;
use super::pages::render;
use super::session::{begin, check_csrf, safe_next, session_id};
use super::{State, WebError};
use crate::engine::sessions::{self, PasswordSignIn};

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
            Ok(sessions::sign_in_with_password(
                conn,
                &username,
                &password,
                &addr,
                previous.as_deref(),
            )?)
        })
        .await?;
    let (user, sid) = match outcome {
        PasswordSignIn::SignedIn { user, session_id } => (user, session_id),
        PasswordSignIn::Throttled => {
            return again(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                "Too many failed sign-ins for this account or from this address. Wait 15 minutes and try again.",
            );
        }
        PasswordSignIn::Refused => {
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
                Ok(sessions::sign_out(conn, sid.as_deref(), who.as_deref())?)
            })
            .await?;
    }
    session.purge();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .finish())
}
