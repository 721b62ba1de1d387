//! Who is asking, and whether they may.
//!
//! The [`authenticate`] middleware runs once per request:
//! - an API token sent as `Authorization: Bearer TOKEN` is accepted on
//!   every route, pages included; a malformed, unknown or revoked token is
//!   a 401, never silently anonymous;
//! - otherwise the browser session's user (signed in with a password or
//!   through SSO) is loaded, with their groups;
//! - a request without a user is let through only to the public routes
//!   ([`is_public`]: sign-in, SSO, health, metrics, static files and push
//!   webhooks, which carry their own signature). Any other page redirects
//!   (303) to `/login?next=<path and query>`; any other `/api/` route
//!   answers 401 JSON, and `/events` (the live pages' stream) 401.
//!
//! Handlers then ask [`CurrentUser::require_action`], which asks the one
//! authorization function, [`crate::domain::authz::allowed`].

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, http::header};
use chrono::{DateTime, Utc};
use std::future::{Ready, ready};

use super::{ApiError, State, WebError, is_api};
use crate::domain::authz::{self, Action};
use crate::domain::rules::Permission;
use crate::domain::{Role, Stage};
use crate::engine::users;

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A browser session (password or SSO sign-in).
    Session,
    /// An API token (`Authorization: Bearer`).
    Token,
}

/// The user behind the request.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: i64,
    pub username: String,
    pub role: Role,
    /// The user's groups (local and SSO), sorted: approvers and stage
    /// deployers name them as `group:NAME`.
    pub groups: Vec<String>,
    pub method: AuthMethod,
    /// When this session signed in; `None` for API tokens.
    pub signed_in_at: Option<DateTime<Utc>>,
    /// When the person last authenticated at the SSO provider in this
    /// session (the ID token's `auth_time`); `None` after a password
    /// sign-in and for API tokens. See [`AuthUser::sso_within`].
    pub sso_at: Option<DateTime<Utc>>,
}

impl AuthUser {
    fn new(user: users::User, method: AuthMethod) -> AuthUser {
        AuthUser {
            id: user.id,
            username: user.username,
            role: user.role,
            groups: user.groups,
            method,
            signed_in_at: None,
            sso_at: None,
        }
    }

    /// Whether this user's role allows `action` (the one authorization function).
    pub fn allowed(&self, action: Action) -> bool {
        authz::allowed(self.role, action)
    }

    /// Whether the user signed in through SSO at most `max_age` ago (a
    /// "fresh sign-in"). When not, send them to
    /// [`super::oidc::fresh_sign_in_url`].
    pub fn sso_within(&self, max_age: std::time::Duration) -> bool {
        let Some(at) = self.sso_at else {
            return false;
        };
        let age = Utc::now() - at;
        age.num_seconds() <= i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX)
    }

    /// The engine's view of this user (for engine calls that check rights).
    pub fn as_user(&self) -> users::User {
        users::User {
            id: self.id,
            username: self.username.clone(),
            role: self.role,
            groups: self.groups.clone(),
        }
    }
}

/// Whether `user` may start a deployment to `stage` by hand: their role
/// allows deploying, and the stage's `deployers` (users and `group:NAME`),
/// when it lists any, name them (admins may always).
pub fn may_deploy(user: &AuthUser, stage: &Stage) -> bool {
    authz::may_deploy(user.role, &user.username, &user.groups, stage)
}

/// Whether the person looking may deploy to `stage` by hand, for the
/// pages' Deploy / Promote buttons ([`crate::domain::rules::offer`]): the
/// role first, then the stage's `deployers` (the one rule,
/// `authz::may_on_stage`). The handler decides again when it is posted.
pub fn permission(user: Option<&AuthUser>, stage: &Stage) -> Permission<'static> {
    match user {
        None => Permission::SignedOut,
        Some(u) if !u.allowed(Action::Deploy) => Permission::Role(u.role.label()),
        Some(u) if may_deploy(u, stage) => Permission::Allowed,
        Some(_) => Permission::NotDeployer,
    }
}

/// How many approvals wait for the signed-in user, counted by
/// [`authenticate`] for page requests and form posts outside `/api/` (a
/// form answered with its errors shows the same header as the page) and
/// shown in the navigation by [`super::session::Nav`].
#[derive(Debug, Clone, Copy)]
pub struct WaitingApprovals(pub usize);

/// Counts the approvals waiting for the request's user, for a page's
/// navigation (a page, or a form whose answer may be a page); nothing for
/// the API and public routes.
async fn count_approvals(req: &ServiceRequest, state: &State, path: &str) {
    let is_page = matches!(
        *req.method(),
        actix_web::http::Method::GET
            | actix_web::http::Method::HEAD
            | actix_web::http::Method::POST
    ) && !is_api(path)
        && !is_public(path)
        && path != EVENTS;
    let who = req
        .extensions()
        .get::<AuthUser>()
        .map(|u| (u.username.clone(), u.groups.clone()));
    let (true, Some((name, groups))) = (is_page, who) else {
        return;
    };
    match state
        .with_conn::<_, WebError, _>(move |conn| {
            Ok(crate::engine::deploy::approvals::count_waiting_for(
                conn, &name, &groups,
            )?)
        })
        .await
    {
        Ok(n) => {
            req.extensions_mut().insert(WaitingApprovals(n));
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the approvals waiting"),
    }
}

/// The signed-in user, if any (set by [`authenticate`]).
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Option<AuthUser>);

/// The live pages' event stream (`web::events`).
const EVENTS: &str = "/events";

const SIGN_IN: &str = "Sign in first, or send `Authorization: Bearer TOKEN` (create a token on /settings/tokens or with `slipway token create USER`).";

impl CurrentUser {
    /// The user, if they may take `action`; 401 when anonymous, 403 when
    /// their role does not allow it.
    pub fn require_action(&self, action: Action) -> Result<&AuthUser, WebError> {
        match &self.0 {
            None => Err(WebError::Unauthorized(SIGN_IN.into())),
            Some(user) if user.allowed(action) => Ok(user),
            Some(user) => Err(WebError::Forbidden(format!(
                "{} is a {}; to {} needs the {} role or higher.",
                user.username,
                user.role.label(),
                action.describe(),
                action.minimum_role().label()
            ))),
        }
    }
}

impl FromRequest for CurrentUser {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(CurrentUser(req.extensions().get::<AuthUser>().cloned())))
    }
}

/// Routes anyone may reach without signing in: sign-in and sign-out, SSO,
/// health and metrics, static files, and push webhooks (which authenticate
/// by their signature).
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/login" | "/logout" | "/healthz" | "/readyz" | "/metrics"
    ) || path.starts_with("/auth/oidc/")
        || path.starts_with("/static/")
        || path.starts_with("/hooks/")
}

fn rejection(path: &str, message: &str) -> actix_web::Error {
    let e = WebError::Unauthorized(message.to_string());
    if is_api(path) {
        ApiError(e).into()
    } else {
        e.into()
    }
}

/// The bearer token of a request: `Ok(None)` without one, `Err` when the
/// header is not `Bearer TOKEN`.
fn bearer(req: &ServiceRequest) -> Result<Option<String>, &'static str> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| Some(t.to_string()))
        .ok_or("The Authorization header must be `Bearer TOKEN`.")
}

/// Where an anonymous page request is sent: the sign-in page, coming back
/// to the page asked for (for GET and HEAD; after a form post, to the board).
fn sign_in_redirect(req: &ServiceRequest) -> HttpResponse {
    let location = if matches!(
        *req.method(),
        actix_web::http::Method::GET | actix_web::http::Method::HEAD
    ) {
        let here = match req.uri().query() {
            Some(q) => format!("{}?{q}", req.path()),
            None => req.path().to_string(),
        };
        let next = super::session::safe_next(Some(&here));
        format!("/login{}", super::urls::query(&[("next", &next)]))
    } else {
        "/login".to_string()
    };
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Middleware: resolves a bearer token or the session to its user for
/// every route, and turns anonymous requests away from non-public routes.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let path = req.path().to_string();
    let token = match bearer(&req) {
        Ok(t) => t,
        Err(message) => {
            return Ok(req
                .error_response(rejection(&path, message))
                .map_into_right_body());
        }
    };
    let Some(state) = req.app_data::<State>().cloned() else {
        return Err(WebError::internal(anyhow::anyhow!("no app state")).into());
    };
    if let Some(token) = token {
        let found = state
            .with_conn::<_, WebError, _>(move |conn| Ok(users::authenticate_token(conn, &token)?))
            .await;
        match found {
            Ok(Some(user)) => {
                req.extensions_mut()
                    .insert(AuthUser::new(user, AuthMethod::Token));
            }
            Ok(None) => {
                return Ok(req
                    .error_response(rejection(&path, "The API token is unknown or revoked."))
                    .map_into_right_body());
            }
            Err(e) => {
                let e: actix_web::Error = if is_api(&path) {
                    ApiError(e).into()
                } else {
                    e.into()
                };
                return Ok(req.error_response(e).map_into_right_body());
            }
        }
    } else {
        // A browser session: the user id and server-side session id stored
        // at sign-in; the session must still be live in the database.
        let session = actix_session::SessionExt::get_session(&req);
        if let Some(id) = super::session::session_user_id(&session) {
            let sid = super::session::session_id(&session).unwrap_or_default();
            match state
                .with_conn::<_, WebError, _>(move |conn| Ok(users::session_user(conn, &sid, id)?))
                .await
            {
                Ok(Some(user)) => {
                    let mut user = AuthUser::new(user, AuthMethod::Session);
                    user.signed_in_at = super::session::signed_in_at(&session);
                    user.sso_at = super::session::sso_at(&session);
                    req.extensions_mut().insert(user);
                }
                // Signed out, revoked, idle too long, or the user is deleted
                // or disabled since: the session no longer counts.
                Ok(None) => session.purge(),
                Err(e) => return Ok(req.error_response(e).map_into_right_body()),
            }
        }
    }
    let anonymous = req.extensions().get::<AuthUser>().is_none();
    if anonymous && !is_public(&path) {
        // The live pages' event stream answers 401 too: a browser's
        // EventSource cannot follow a redirect to a sign-in page.
        if is_api(&path) || path == EVENTS {
            return Ok(req
                .error_response(rejection(&path, SIGN_IN))
                .map_into_right_body());
        }
        let response = sign_in_redirect(&req);
        return Ok(req.into_response(response).map_into_right_body());
    }
    count_approvals(&req, &state, &path).await;
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn public_routes_are_few() {
        for public in [
            "/login",
            "/logout",
            "/auth/oidc/login",
            "/auth/oidc/callback",
            "/healthz",
            "/readyz",
            "/metrics",
            "/static/slipway.css",
            "/hooks/github/space-game-web",
        ] {
            assert!(is_public(public), "{public}");
        }
        for private in [
            "/",
            "/login/x",
            "/loginx",
            "/audit",
            "/admin/users",
            "/settings/tokens",
            "/api/v1/pipelines",
            "/api/v1/openapi.json",
            "/auth/other",
            "/pipelines/x",
        ] {
            assert!(!is_public(private), "{private}");
        }
    }

    fn user(role: Role, sso_minutes_ago: Option<i64>) -> AuthUser {
        AuthUser {
            id: 1,
            username: "tim".into(),
            role,
            groups: vec!["management".into()],
            method: AuthMethod::Session,
            signed_in_at: None,
            sso_at: sso_minutes_ago.map(|m| Utc::now() - chrono::TimeDelta::minutes(m)),
        }
    }

    #[test]
    fn fresh_sso_sign_in_is_within_max_age() {
        let fifteen = std::time::Duration::from_secs(15 * 60);
        assert!(user(Role::Viewer, Some(3)).sso_within(fifteen));
        assert!(!user(Role::Viewer, Some(20)).sso_within(fifteen));
        assert!(!user(Role::Viewer, None).sso_within(fifteen));
    }

    #[test]
    fn require_action_names_role_and_action() {
        let viewer = CurrentUser(Some(user(Role::Viewer, None)));
        assert!(viewer.require_action(Action::Read).is_ok());
        let err = viewer.require_action(Action::ManageSecrets).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tim is a Viewer; to manage secrets needs the Release manager role or higher."
        );
        assert!(matches!(
            CurrentUser(None).require_action(Action::Read),
            Err(WebError::Unauthorized(_))
        ));
    }
}
