//! The browser's session cookie: what it holds and the helpers that read
//! and write it — the signed-in user and server-side session id, when the
//! person signed in, the CSRF token of every form, and a message for the
//! next page. The page header (`web::nav`) and the sign-in pages
//! (`web::login`) build on it.
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

use std::path::Path;

use actix_session::config::{CookieContentSecurity, PersistentSession};
use actix_session::storage::CookieSessionStore;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{Key, SameSite};
use rand::Rng;
use rand::distr::Alphanumeric;

use super::WebError;

/// Session keys.
const USER_ID: &str = "user_id";
/// The server-side session's id (see [`crate::engine::users::start_session`]).
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
/// `session_id` (from [`crate::engine::users::start_session`]), a fresh CSRF token,
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

/// Takes the message [`set_flash`] left, if any: it is shown once.
pub fn take_flash(session: &Session) -> Option<String> {
    session.remove_as::<String>(FLASH).and_then(Result::ok)
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
