//! Single sign-on through OpenID Connect (`oauth2` + `openidconnect`).
//!
//! - At start-up [`start`] fetches the provider's discovery document and
//!   keys from `SLIPWAY_OIDC_ISSUER`; an unreachable issuer or a malformed
//!   document stops the server with a message that says so.
//! - `GET /auth/oidc/login?next=…[&max_age=SECONDS]` starts the
//!   authorization code flow with PKCE (S256). `state`, `nonce`, the PKCE
//!   verifier and `next` wait in the (encrypted) session cookie. With
//!   `max_age` the provider is asked to authenticate the person again
//!   (`max_age` + `prompt=login`): that is how a fresh sign-in is demanded
//!   ([`fresh_sign_in_url`]).
//! - `GET /auth/oidc/callback` checks `state` (and `iss` when sent),
//!   exchanges the code, and has openidconnect validate the ID token
//!   (signature against the provider's keys, issuer, audience, expiry,
//!   nonce). The user is provisioned on the first sign-in (role viewer),
//!   their SSO groups replaced from the groups claim
//!   (`engine::users::sso_sign_in`), and the session renewed with
//!   `signed_in_at` and `sso_at`.
//! - Whatever goes wrong at the provider or in the callback ends on a page
//!   that says what happened, with a 400 (a request Slipway did not start)
//!   or 401 (the provider refused, or its answer did not check out).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, http::header, web};
use anyhow::Context;
use askama::Template;
use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthenticationFlow, AuthorizationCode, ClaimsVerificationError, Client,
    ClientId, ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet,
    EndpointSet, IdTokenClaims, IdTokenFields, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope, StandardErrorResponse,
    StandardTokenResponse,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::nav::Nav;
use super::session::safe_next;
use super::{AppState, State, WebError};
use crate::config::OidcSettings;
use crate::engine::users::SsoIdentity;

/// Every claim of the ID token that openidconnect does not model itself,
/// so that the groups claim can have any name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OtherClaims(serde_json::Map<String, serde_json::Value>);

impl AdditionalClaims for OtherClaims {}

type Claims = IdTokenClaims<OtherClaims, CoreGenderClaim>;

type TokenResponse = StandardTokenResponse<
    IdTokenFields<
        OtherClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// How long a call to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `next` may be before it is replaced by `/` (it rides in the cookie).
const MAX_NEXT_LEN: usize = 1024;
/// The session key of a sign-in under way.
const PENDING: &str = "oidc_pending";
/// Clock skew allowed when checking `auth_time` against `max_age`.
const AUTH_TIME_SKEW_SECS: i64 = 60;

/// The configured provider: its discovered metadata and keys as a client.
pub struct Sso {
    settings: OidcSettings,
    redirect_uri: RedirectUrl,
    http: openidconnect::reqwest::Client,
    /// Re-discovered when an ID token is signed by a key we have not seen
    /// (the provider rotated its keys).
    client: RwLock<Arc<Discovered>>,
}

struct Discovered {
    client: OidcClient,
    /// Whether the provider lists a `groups` scope (then it is asked for).
    groups_scope: bool,
}

impl std::fmt::Debug for Sso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sso")
            .field("issuer", &self.settings.issuer)
            .field("client_id", &self.settings.client_id)
            .finish_non_exhaustive()
    }
}

impl Sso {
    /// Fetches the discovery document and keys of the issuer; fails with a
    /// message naming the issuer when it cannot be reached or its
    /// discovery is malformed.
    pub async fn discover(settings: &OidcSettings, public_url: &str) -> anyhow::Result<Sso> {
        let redirect_uri = RedirectUrl::new(OidcSettings::redirect_uri(public_url))
            .with_context(|| format!("SLIPWAY_PUBLIC_URL: `{public_url}` is not a URL"))?;
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects would open the token call to SSRF.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .context("cannot build the HTTP client for single sign-on")?;
        let discovered = discover(settings, &redirect_uri, &http).await?;
        Ok(Sso {
            settings: settings.clone(),
            redirect_uri,
            http,
            client: RwLock::new(Arc::new(discovered)),
        })
    }

    fn current(&self) -> Arc<Discovered> {
        match self.client.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn refresh(&self) -> anyhow::Result<Arc<Discovered>> {
        let fresh = Arc::new(discover(&self.settings, &self.redirect_uri, &self.http).await?);
        match self.client.write() {
            Ok(mut guard) => *guard = fresh.clone(),
            Err(poisoned) => *poisoned.into_inner() = fresh.clone(),
        }
        Ok(fresh)
    }
}

async fn discover(
    settings: &OidcSettings,
    redirect_uri: &RedirectUrl,
    http: &openidconnect::reqwest::Client,
) -> anyhow::Result<Discovered> {
    let issuer = IssuerUrl::new(settings.issuer.clone())
        .with_context(|| format!("SLIPWAY_OIDC_ISSUER: `{}` is not a URL", settings.issuer))?;
    let metadata = CoreProviderMetadata::discover_async(issuer, http)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "single sign-on: cannot use the discovery document of {} ({}/.well-known/openid-configuration): {}",
                settings.issuer,
                settings.issuer.trim_end_matches('/'),
                error_chain(&e)
            )
        })?;
    if metadata.token_endpoint().is_none() {
        anyhow::bail!(
            "single sign-on: the discovery document of {} has no token_endpoint",
            settings.issuer
        );
    }
    let groups_scope = metadata
        .scopes_supported()
        .is_some_and(|scopes| scopes.iter().any(|s| s.as_str() == "groups"));
    let client = OidcClient::from_provider_metadata(
        metadata,
        ClientId::new(settings.client_id.clone()),
        Some(ClientSecret::new(
            settings.client_secret.expose_secret().to_string(),
        )),
    )
    .set_redirect_uri(redirect_uri.clone());
    Ok(Discovered {
        client,
        groups_scope,
    })
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Discovers the configured provider, if any, and keeps it in the state.
/// `serve` (and the tests) call this before [`super::server`].
pub async fn start(state: &AppState) -> anyhow::Result<()> {
    let Some(settings) = &state.settings.oidc else {
        return Ok(());
    };
    let sso = Sso::discover(settings, &state.settings.public_url).await?;
    tracing::info!(issuer = %settings.issuer, "single sign-on through {}", settings.issuer);
    // A second call keeps the first provider; both came from the same settings.
    let _ = state.sso.set(Arc::new(sso));
    Ok(())
}

/// Where to send a person who must sign in through SSO again (at most
/// `max_age` ago) before coming back to `next`: the provider is asked to
/// authenticate them anew (`prompt=login`, `max_age`). After it,
/// [`super::auth::AuthUser::sso_at`] is the time of that sign-in.
pub fn fresh_sign_in_url(next: &str, max_age: Duration) -> String {
    format!(
        "/auth/oidc/login{}",
        super::urls::query(&[
            ("next", &safe_next(Some(next))),
            ("max_age", &max_age.as_secs().to_string()),
        ])
    )
}

/// A sign-in under way, kept in the session between login and callback.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
    max_age: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    /// Demand a sign-in at most this many seconds old.
    max_age: Option<u64>,
}

/// The provider of this server, or a 404 page when SSO is not configured.
fn provider(state: &AppState) -> Result<Arc<Sso>, WebError> {
    state.sso.get().cloned().ok_or_else(|| {
        WebError::NotFound("Single sign-on is not configured on this Slipway.".into())
    })
}

/// `GET /auth/oidc/login?next=…[&max_age=SECONDS]`: off to the provider.
pub async fn login(
    state: State,
    session: Session,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, WebError> {
    let sso = provider(&state)?;
    let discovered = sso.current();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = discovered
        .client
        .authorize_url(
            AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge);
    if discovered.groups_scope {
        request = request.add_scope(Scope::new("groups".into()));
    }
    if let Some(max_age) = query.max_age {
        request = request
            .set_max_age(Duration::from_secs(max_age))
            .add_prompt(CoreAuthPrompt::Login);
    }
    let (url, csrf_state, nonce) = request.url();
    let next = match query.next.as_deref() {
        Some(n) if n.len() <= MAX_NEXT_LEN => safe_next(Some(n)),
        _ => "/".to_string(),
    };
    let pending = Pending {
        state: csrf_state.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        next,
        max_age: query.max_age,
    };
    session
        .insert(PENDING, &pending)
        .map_err(WebError::internal)?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url.to_string()))
        .finish())
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Template)]
#[template(path = "pages/sso_error.html")]
struct FailurePage {
    nav: Nav,
    status: u16,
    message: String,
    retry: String,
}

/// Why a callback did not sign anyone in.
struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    fn bad(message: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn refused(message: impl Into<String>) -> Failure {
        Failure {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }
}

impl From<WebError> for Failure {
    fn from(e: WebError) -> Failure {
        use actix_web::ResponseError;
        if let WebError::Internal(inner) = &e {
            tracing::error!(error = format!("{inner:#}"), "single sign-on failed");
        }
        Failure {
            status: e.status_code(),
            message: e.public_message(),
        }
    }
}

fn failure_page(nav: Nav, failure: Failure, next: &str) -> HttpResponse {
    let retry = format!("/login{}", super::urls::query(&[("next", next)]));
    let page = FailurePage {
        nav,
        status: failure.status.as_u16(),
        message: failure.message,
        retry,
    };
    match page.render() {
        Ok(body) => HttpResponse::build(failure.status)
            .content_type("text/html; charset=utf-8")
            .body(body),
        Err(e) => actix_web::ResponseError::error_response(&WebError::internal(e)),
    }
}

/// `GET /auth/oidc/callback`: back from the provider.
pub async fn callback(
    state: State,
    req: HttpRequest,
    session: Session,
    nav: Nav,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    let pending = session.remove_as::<Pending>(PENDING).and_then(Result::ok);
    let next = pending
        .as_ref()
        .map(|p| p.next.clone())
        .unwrap_or_else(|| "/".into());
    match finish(&state, &req, &session, pending, query.into_inner()).await {
        Ok(location) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, location))
            .finish(),
        Err(failure) => failure_page(nav, failure, &next),
    }
}

async fn finish(
    state: &AppState,
    req: &HttpRequest,
    session: &Session,
    pending: Option<Pending>,
    query: CallbackQuery,
) -> Result<String, Failure> {
    let sso = provider(state)?;
    let Some(pending) = pending else {
        return Err(Failure::bad(
            "This sign-in was not started from this browser, or it was finished already. Start again from the sign-in page.",
        ));
    };
    let same_state = query
        .state
        .as_deref()
        .is_some_and(|s| constant_time_eq(s.as_bytes(), pending.state.as_bytes()));
    if !same_state {
        return Err(Failure::bad(
            "The answer from the identity provider does not belong to the sign-in this browser started (its state does not match). Start again from the sign-in page.",
        ));
    }
    if let Some(iss) = &query.iss
        && iss != &sso.settings.issuer
    {
        return Err(Failure::bad(format!(
            "The answer came from `{iss}`, not from the configured identity provider."
        )));
    }
    if let Some(error) = &query.error {
        let what = match error.as_str() {
            "access_denied" => "Sign-in was canceled or refused at the identity provider",
            "login_required" | "interaction_required" | "consent_required" => {
                "The identity provider needs you to sign in there first"
            }
            _ => "The identity provider refused the sign-in",
        };
        let detail = query
            .error_description
            .as_deref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return Err(Failure::refused(format!("{what} ({error}{detail}).")));
    }
    let Some(code) = query.code.filter(|c| !c.is_empty()) else {
        return Err(Failure::bad(
            "The identity provider sent neither a code nor an error.",
        ));
    };

    let discovered = sso.current();
    let token = discovered
        .client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| Failure::from(WebError::internal(e)))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()))
        .request_async(&sso.http)
        .await
        .map_err(|e| match &e {
            RequestTokenError::ServerResponse(answer) => Failure::refused(format!(
                "The identity provider did not accept the sign-in code ({}{}); it may have expired or been used already. Sign in again.",
                answer.error(),
                answer
                    .error_description()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            )),
            other => Failure::refused(format!(
                "Slipway could not redeem the sign-in code at the identity provider: {}. Sign in again.",
                error_chain(other)
            )),
        })?;
    let id_token = openidconnect::TokenResponse::id_token(&token)
        .ok_or_else(|| Failure::refused("The identity provider sent no ID token."))?;
    let nonce = Nonce::new(pending.nonce.clone());
    let claims: Claims = match id_token.claims(&discovered.client.id_token_verifier(), &nonce) {
        Ok(claims) => claims.clone(),
        Err(ClaimsVerificationError::SignatureVerification(_)) => {
            // Perhaps the provider rotated its keys: fetch them and look again.
            let fresh = sso
                .refresh()
                .await
                .map_err(|e| Failure::refused(format!("{e:#}")))?;
            id_token
                .claims(&fresh.client.id_token_verifier(), &nonce)
                .map_err(invalid_token)?
                .clone()
        }
        Err(e) => return Err(invalid_token(e)),
    };
    let auth_time = claims.auth_time();
    if let Some(max_age) = pending.max_age {
        let fresh_enough = auth_time.is_some_and(|at| {
            (Utc::now() - at).num_seconds() <= max_age as i64 + AUTH_TIME_SKEW_SECS
        });
        if !fresh_enough {
            return Err(Failure::refused(
                "A fresh sign-in was asked for, but the identity provider did not sign you in again. Sign in again.",
            ));
        }
    }
    let identity = identity(&claims, &sso.settings.groups_claim);
    let from = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let previous = super::session::session_id(session);
    let (user, sid) = state
        .with_conn::<_, WebError, _>(move |conn| {
            Ok(crate::engine::sessions::sign_in_with_sso(
                conn,
                &identity,
                &from,
                previous.as_deref(),
            )?)
        })
        .await?;
    super::session::begin(
        session,
        user.id,
        &sid,
        Some(auth_time.unwrap_or_else(Utc::now)),
    )?;
    Ok(pending.next)
}

fn invalid_token(e: ClaimsVerificationError) -> Failure {
    Failure::refused(format!(
        "The ID token from the identity provider is not valid ({e}). Sign in again."
    ))
}

/// Who the validated claims say signed in.
fn identity(claims: &Claims, groups_claim: &str) -> SsoIdentity {
    let subject = claims.subject().as_str().to_string();
    let email = claims.email().map(|e| e.as_str().to_string());
    let mut candidates = Vec::new();
    if let Some(name) = claims.preferred_username() {
        candidates.push(name.as_str().to_string());
    }
    candidates.extend(email.clone());
    candidates.push(subject.clone());
    let display_name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().to_string());
    SsoIdentity {
        subject,
        username_candidates: candidates,
        display_name,
        email,
        groups: groups_of(claims.additional_claims(), groups_claim),
    }
}

/// The groups claim as a list: an array of strings, or one string.
fn groups_of(claims: &OtherClaims, name: &str) -> Vec<String> {
    match claims.0.get(name) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// When the session's user last signed in through SSO, if ever in this session.
pub fn sso_signed_in_at(session: &Session) -> Option<DateTime<Utc>> {
    super::session::sso_at(session)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn fresh_sign_in_urls_stay_inside_slipway() {
        assert_eq!(
            fresh_sign_in_url("/approvals?x=1", Duration::from_secs(900)),
            "/auth/oidc/login?next=%2Fapprovals%3Fx%3D1&max_age=900"
        );
        assert_eq!(
            fresh_sign_in_url("https://evil.example", Duration::from_secs(60)),
            "/auth/oidc/login?next=%2F&max_age=60"
        );
    }

    #[test]
    fn groups_come_as_a_list_or_one_name() {
        let claims: OtherClaims =
            serde_json::from_str(r#"{"groups": ["management", 3, "qa"], "roles": "ops"}"#).unwrap();
        assert_eq!(groups_of(&claims, "groups"), vec!["management", "qa"]);
        assert_eq!(groups_of(&claims, "roles"), vec!["ops"]);
        assert!(groups_of(&claims, "missing").is_empty());
    }
}
