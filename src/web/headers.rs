//! Security headers on every answer (issue 12, item 6).
//!
//! Pages allow scripts, styles, images and fetches from Slipway itself only:
//! there is no inline `<script>` body or `style` attribute anywhere, so the
//! policy needs no `'unsafe-inline'`. Nothing may frame Slipway, forms post
//! only to Slipway, and `Strict-Transport-Security` is sent when the public
//! URL is https.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;

use super::State;

/// The `Content-Security-Policy` of every answer. With single sign-on,
/// forms may also lead to the identity provider's origin (a form post that
/// needs a fresh sign-in redirects there, and `form-action` covers
/// redirects).
pub fn content_security_policy(sso_issuer: Option<&str>) -> String {
    let sso = sso_issuer
        .and_then(super::csrf::origin_of)
        .map(|origin| format!(" {origin}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; frame-ancestors 'none'; form-action 'self'{sso}; base-uri 'none'; object-src 'none'"
    )
}

/// The `Permissions-Policy`: no powerful browser feature is used.
pub const PERMISSIONS_POLICY: &str = "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), midi=(), magnetometer=(), gyroscope=(), accelerometer=(), display-capture=(), interest-cohort=()";

/// `Strict-Transport-Security` when the public URL is https.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000; includeSubDomains";

/// Middleware: adds the headers (unless a handler set its own).
pub async fn security_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let (https, csp) = match req.app_data::<State>() {
        Some(s) => (
            s.settings.public_url.starts_with("https://"),
            content_security_policy(s.settings.oidc.as_ref().map(|o| o.issuer.as_str())),
        ),
        None => (false, content_security_policy(None)),
    };
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY)
        && let Ok(value) = HeaderValue::from_str(&csp)
    {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    let mut set = |name: HeaderName, value: &'static str| {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "same-origin");
    set(
        HeaderName::from_static("permissions-policy"),
        PERMISSIONS_POLICY,
    );
    if https {
        set(header::STRICT_TRANSPORT_SECURITY, STRICT_TRANSPORT_SECURITY);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_may_lead_only_to_slipway_and_the_sso_provider() {
        assert!(content_security_policy(None).contains("form-action 'self';"));
        assert!(
            content_security_policy(Some("https://idp.example/realms/x"))
                .contains("form-action 'self' https://idp.example;")
        );
        assert!(!content_security_policy(Some("https://idp.example")).contains("unsafe-inline"));
    }
}
