//! Who is asking: an API token sent as `Authorization: Bearer TOKEN` is
//! accepted on every route, pages included. The `authenticate` middleware
//! checks it once per request; a malformed, unknown or revoked token is a
//! 401, never silently anonymous. Sign-in with a session comes with the
//! people issue; until then pages are readable without signing in, and
//! changes need a token.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, http::header};
use std::future::{Ready, ready};

use super::{ApiError, State, WebError, is_api};
use crate::domain::Role;
use crate::engine::users;

/// The user behind the request.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: i64,
    pub username: String,
    pub role: Role,
}

/// The signed-in user, if any (set by [`authenticate`]).
#[derive(Debug, Clone)]
pub struct CurrentUser(pub Option<AuthUser>);

impl CurrentUser {
    /// The user, if their role is at least `role`; 401 when anonymous, 403 when too weak.
    pub fn require(&self, role: Role) -> Result<&AuthUser, WebError> {
        match &self.0 {
            None => Err(WebError::Unauthorized(
                "This needs an API token: send `Authorization: Bearer TOKEN` (create one with `slipway token create USER`).".into(),
            )),
            Some(user) if user.role >= role => Ok(user),
            Some(user) => Err(WebError::Forbidden(format!(
                "{} is a {}; this needs the {} role or higher.",
                user.username,
                user.role.label(),
                role.label()
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

/// Middleware: resolves a bearer token to its user for every route.
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
    if token.is_none() {
        // A browser session: the user id stored at sign-in.
        let session = actix_session::SessionExt::get_session(&req);
        if let Some(id) = super::session::session_user_id(&session) {
            let Some(state) = req.app_data::<State>().cloned() else {
                return Err(WebError::internal(anyhow::anyhow!("no app state")).into());
            };
            match state
                .with_conn::<_, WebError, _>(move |conn| Ok(users::active_user(conn, id)?))
                .await
            {
                Ok(Some(user)) => {
                    req.extensions_mut().insert(AuthUser {
                        id: user.id,
                        username: user.username,
                        role: user.role,
                    });
                }
                // Deleted or disabled since: the session no longer counts.
                Ok(None) => session.purge(),
                Err(e) => return Ok(req.error_response(e).map_into_right_body()),
            }
        }
    }
    if let Some(token) = token {
        let Some(state) = req.app_data::<State>().cloned() else {
            return Err(WebError::internal(anyhow::anyhow!("no app state")).into());
        };
        let found = state
            .with_conn::<_, WebError, _>(move |conn| Ok(users::authenticate_token(conn, &token)?))
            .await;
        match found {
            Ok(Some(user)) => {
                req.extensions_mut().insert(AuthUser {
                    id: user.id,
                    username: user.username,
                    role: user.role,
                });
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
    }
    Ok(next.call(req).await?.map_into_left_body())
}
