//! Cross-site request forgery, for the API as for the pages.
//!
//! The [`guard`] middleware runs after [`super::auth::authenticate`], for
//! every state-changing request (any method but GET, HEAD, OPTIONS, TRACE):
//! - requests authenticated by an API token (`Authorization: Bearer`) and
//!   signed push webhooks (`/hooks/`) pass: a browser never sends either on
//!   its own;
//! - any other request is refused (403) when it says it comes from another
//!   site: an `Origin` that is not Slipway's own (the public URL's, or the
//!   request's own scheme and host), or a `Sec-Fetch-Site` other than
//!   `same-origin` or `none`;
//! - a request to `/api/` authenticated by the session cookie must carry the
//!   session's CSRF token in `X-CSRF-Token` (pages read it from
//!   `<meta name="csrf-token">`); forms send it as the `csrf` field, which
//!   each page handler checks ([`super::session::check_csrf`]);
//! - a request to `/api/` with a body must say what it is: JSON bodies need
//!   `Content-Type: application/json`, and the pipeline import takes YAML
//!   (`application/yaml`, `application/x-yaml`, `text/yaml`) or JSON;
//!   anything else is a 415.
//!
//! It also gives the API's 413 (a body over the size limit) the API's JSON
//! error shape.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};

use super::auth::{AuthMethod, AuthUser};
use super::{ApiError, State, WebError, is_api};

/// The header an API call made with the session cookie carries its CSRF
/// token in.
pub const CSRF_HEADER: &str = "X-CSRF-Token";

/// The route that takes a YAML body.
const IMPORT_PATH: &str = "/api/v1/pipelines";

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// `scheme://host[:port]` of a URL or an `Origin`, lowercased, without a
/// default port; `None` when it is not an http(s) origin.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    let authority = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority
        .strip_suffix(default_port)
        .unwrap_or(&authority)
        .to_string();
    Some(format!("{scheme}://{authority}"))
}

/// Why a state-changing request looks cross-site, if it does.
fn cross_site(req: &ServiceRequest, public_url: &str) -> Option<String> {
    if let Some(site) = req.headers().get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default().to_ascii_lowercase();
        if site != "same-origin" && site != "none" {
            return Some(format!(
                "The request came from another site (Sec-Fetch-Site: {site})."
            ));
        }
    }
    let origin = req.headers().get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or_default();
    let own = {
        let info = req.connection_info();
        [
            origin_of(public_url),
            origin_of(&format!("{}://{}", info.scheme(), info.host())),
        ]
    };
    match origin_of(origin) {
        Some(o) if own.iter().flatten().any(|own| *own == o) => None,
        _ => Some(format!(
            "The request came from another origin ({origin}), not from Slipway."
        )),
    }
}

/// The content types a body of this route may have.
fn accepted_types(path: &str, method: &Method) -> &'static [&'static str] {
    if path == IMPORT_PATH && *method == Method::POST {
        &[
            "application/yaml",
            "application/x-yaml",
            "text/yaml",
            "application/json",
        ]
    } else {
        &["application/json"]
    }
}

fn has_body(req: &ServiceRequest) -> bool {
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => req.headers().contains_key(header::TRANSFER_ENCODING),
    }
}

fn media_type(req: &ServiceRequest) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether the submitted token is the session's, in constant time.
fn same_token(expected: &str, submitted: &str) -> bool {
    !expected.is_empty()
        && expected.len() == submitted.len()
        && expected
            .bytes()
            .zip(submitted.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What the guard refuses a request for, if anything.
fn refusal(req: &ServiceRequest) -> Option<WebError> {
    // The path as the router matches it (percent-decoded): `/%61pi/…`
    // reaches the API and must be checked as the API.
    let path = req.match_info().as_str();
    if is_safe(req.method()) || path.starts_with("/hooks/") {
        return None;
    }
    let method = req.extensions().get::<AuthUser>().map(|u| u.method);
    let api = is_api(path);
    if method != Some(AuthMethod::Token) {
        let public_url = req
            .app_data::<State>()
            .map(|s| s.settings.public_url.clone())
            .unwrap_or_default();
        if let Some(why) = cross_site(req, &public_url) {
            return Some(WebError::Forbidden(format!(
                "{why} Slipway refuses changes sent by other sites with your session."
            )));
        }
        if api && method == Some(AuthMethod::Session) {
            let session = actix_session::SessionExt::get_session(req);
            let expected = session
                .get::<String>("csrf")
                .ok()
                .flatten()
                .unwrap_or_default();
            let submitted = req
                .headers()
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !same_token(&expected, submitted) {
                return Some(WebError::Forbidden(format!(
                    "An API call signed in by the session cookie must send the session's CSRF token in the {CSRF_HEADER} header (pages have it in <meta name=\"csrf-token\">); scripts should use `Authorization: Bearer TOKEN` instead."
                )));
            }
        }
    }
    if api && has_body(req) {
        let accepted = accepted_types(path, req.method());
        let given = media_type(req);
        if !accepted.contains(&given.as_str()) {
            let given = if given.is_empty() {
                "no Content-Type".to_string()
            } else {
                format!("Content-Type {given}")
            };
            return Some(WebError::UnsupportedMediaType(format!(
                "The body was sent with {given}; this route takes {}.",
                accepted.join(", ")
            )));
        }
    }
    None
}

/// Middleware: the rules in the module documentation.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if let Some(e) = refusal(&req) {
        let response = if is_api(req.match_info().as_str()) {
            ApiError(e).error_response()
        } else {
            e.error_response()
        };
        return Ok(req.into_response(response).map_into_right_body());
    }
    let api = is_api(req.match_info().as_str());
    let res = next.call(req).await?;
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if api && res.status() == StatusCode::PAYLOAD_TOO_LARGE && !json {
        let e = ApiError(WebError::PayloadTooLarge(format!(
            "The request body is larger than the {} KiB this route takes.",
            super::BODY_LIMIT / 1024
        )));
        let (req, _) = res.into_parts();
        return Ok(ServiceResponse::new(req, e.error_response()).map_into_right_body());
    }
    Ok(res.map_into_left_body())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalized() {
        assert_eq!(
            origin_of("http://127.0.0.1:8080/x?y").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(
            origin_of("HTTPS://Slipway.Example:443/").as_deref(),
            Some("https://slipway.example")
        );
        assert_eq!(
            origin_of("http://slipway.example:80").as_deref(),
            Some("http://slipway.example")
        );
        assert_eq!(origin_of("null"), None);
        assert_eq!(origin_of("file:///etc"), None);
        assert_eq!(origin_of("http://user@evil.example"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", ""));
    }
}
