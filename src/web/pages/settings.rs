//! `/settings/tokens`: the signed-in user's API tokens. A new token is
//! shown once, on the page that answers its creation (never stored, only
//! its SHA-256); revoking needs the form's CSRF token. An admin revokes
//! other people's tokens the same way (`engine::users::revoke_token`).
//! "Sign out everywhere" ends every browser session of the user, this one
//! included (`engine::users::end_all_sessions`).

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, http::header, web};
use askama::Template;
use chrono::Utc;
use serde::Deserialize;

use crate::domain::authz::Action;
use crate::engine::users;
use crate::storage;
use crate::web::auth::CurrentUser;
use crate::web::nav::Nav;
use crate::web::pages::see_other;
use crate::web::session::check_csrf;
use crate::web::views::{ago, iso, time};
use crate::web::{State, WebError};

/// The URL of the page.
pub const TOKENS_URL: &str = "/settings/tokens";

/// A token in the list.
pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub created: String,
    pub created_iso: String,
    pub last_used: Option<String>,
    pub revoked: Option<String>,
    pub revoke_url: String,
}

#[derive(Template)]
#[template(path = "pages/settings/tokens.html")]
pub struct TokensPage {
    pub nav: Nav,
    pub username: String,
    pub tokens: Vec<TokenView>,
    /// The token just created: shown this once.
    pub created: Option<(String, String)>,
    pub error: Option<String>,
    pub name: String,
    /// How many browser sessions of the user are live.
    pub sessions: i64,
    pub sign_out_everywhere_url: &'static str,
}

/// The URL of "Sign out everywhere".
pub const SIGN_OUT_EVERYWHERE_URL: &str = "/settings/sessions/revoke";

async fn page(
    state: &State,
    nav: Nav,
    user_id: i64,
    username: String,
) -> Result<TokensPage, WebError> {
    let (rows, sessions) = state
        .with_conn::<_, WebError, _>(move |conn| {
            Ok((
                storage::list_tokens(conn, user_id)?,
                storage::sessions::count_live_sessions(conn, user_id)?,
            ))
        })
        .await?;
    let now = Utc::now();
    let tokens = rows
        .into_iter()
        .map(|t| TokenView {
            revoke_url: format!("{TOKENS_URL}/{}/revoke", t.id),
            id: t.id,
            name: t.name,
            created: time(&t.created_at),
            created_iso: iso(&t.created_at),
            last_used: t.last_used_at.map(|at| ago(&at, now)),
            revoked: t.revoked_at.map(|at| time(&at)),
        })
        .collect();
    Ok(TokensPage {
        nav,
        username,
        tokens,
        created: None,
        error: None,
        name: String::new(),
        sessions,
        sign_out_everywhere_url: SIGN_OUT_EVERYWHERE_URL,
    })
}

/// Renders with `status`; never cached (it may hold a new token).
fn respond(status: StatusCode, page: &TokensPage) -> Result<HttpResponse, WebError> {
    let body = page.render().map_err(WebError::internal)?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body))
}

/// `GET /settings/tokens`
pub async fn tokens(state: State, nav: Nav, user: CurrentUser) -> Result<HttpResponse, WebError> {
    let user = user.require_action(Action::ManageOwnTokens)?;
    let page = page(&state, nav, user.id, user.username.clone()).await?;
    respond(StatusCode::OK, &page)
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub csrf: String,
}

/// `POST /settings/tokens`: creates a token and shows it once.
pub async fn create(
    state: State,
    session: Session,
    nav: Nav,
    user: CurrentUser,
    form: web::Form<CreateForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let user = user.require_action(Action::ManageOwnTokens)?.clone();
    let name = form.name.trim().to_string();
    let (owner, token_name) = (user.username.clone(), name.clone());
    let created = state
        .with_conn::<_, WebError, _>(move |conn| {
            match users::create_token(conn, &owner, &token_name, &owner) {
                Ok(token) => Ok(Ok(token)),
                Err(crate::engine::EngineError::Invalid(message)) => Ok(Err(message)),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
    let mut page = page(&state, nav, user.id, user.username.clone()).await?;
    match created {
        Ok(token) => {
            page.created = Some((name, token));
            respond(StatusCode::OK, &page)
        }
        Err(message) => {
            page.error = Some(message);
            page.name = name;
            respond(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    pub csrf: String,
}

/// `POST /settings/tokens/{id}/revoke`: the owner's own token, or (for an
/// admin) anyone's.
pub async fn revoke(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<i64>,
    form: web::Form<RevokeForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let actor = user.require_action(Action::ManageOwnTokens)?.as_user();
    let id = path.into_inner();
    state
        .with_conn::<_, WebError, _>(move |conn| Ok(users::revoke_token(conn, id, &actor)?))
        .await?;
    Ok(see_other(TOKENS_URL))
}

/// `POST /settings/sessions/revoke`: ends every browser session of the
/// signed-in user (this one too) and goes to the board, which asks to sign
/// in again.
pub async fn sign_out_everywhere(
    state: State,
    session: Session,
    user: CurrentUser,
    form: web::Form<RevokeForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let actor = user.require_action(Action::ManageOwnTokens)?.as_user();
    state
        .with_conn::<_, WebError, _>(move |conn| Ok(users::end_all_sessions(conn, &actor)?))
        .await?;
    session.purge();
    Ok(see_other("/"))
}
