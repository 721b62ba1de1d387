//! Signing in and out of a browser session, as use cases: the web layer
//! keeps the cookie (`web::session`) and asks here for every write.
//!
//! A sign-in (by password or SSO) ends the server-side session the browser
//! had before, if any, and starts a new one, so a cookie planted before
//! the sign-in is worth nothing after it. A sign-out ends the session and
//! is audited as `auth.sign_out`. The sessions themselves (start, look up,
//! end) are [`super::users`]'s.

use super::EngineError;
use super::users::{self, SignIn, SsoIdentity, User};
use crate::storage::{self, DbConn};

/// What a password sign-in came to.
#[derive(Debug)]
pub enum PasswordSignIn {
    /// The password is right: a new session (its id, for the cookie).
    SignedIn { user: User, session_id: String },
    /// Too many failed attempts for the account or the address.
    Throttled,
    /// The user name or password is wrong (or the account cannot sign in
    /// with a password).
    Refused,
}

/// Checks a local sign-in ([`users::verify_login`]: counted, throttled and
/// audited there) and, when accepted, replaces the browser's `previous`
/// session with a new one.
pub fn sign_in_with_password(
    conn: &mut DbConn,
    username: &str,
    password: &str,
    from: &str,
    previous: Option<&str>,
) -> Result<PasswordSignIn, EngineError> {
    match users::verify_login(conn, username, password, from)? {
        SignIn::Accepted(user) => {
            let session_id = replace_session(conn, previous, user.id)?;
            Ok(PasswordSignIn::SignedIn { user, session_id })
        }
        SignIn::Throttled => Ok(PasswordSignIn::Throttled),
        SignIn::Refused => Ok(PasswordSignIn::Refused),
    }
}

/// Signs in the person the SSO provider vouched for
/// ([`users::sso_sign_in`]: provisioning and group sync there) and replaces
/// the browser's `previous` session with a new one; returns the user and
/// the new session's id.
pub fn sign_in_with_sso(
    conn: &mut DbConn,
    identity: &SsoIdentity,
    from: &str,
    previous: Option<&str>,
) -> Result<(User, String), EngineError> {
    let user = users::sso_sign_in(conn, identity, from)?;
    let session_id = replace_session(conn, previous, user.id)?;
    Ok((user, session_id))
}

/// Ends the browser's session `session_id`, if it has one, and audits the
/// sign-out of `username`, if someone was signed in.
pub fn sign_out(
    conn: &mut DbConn,
    session_id: Option<&str>,
    username: Option<&str>,
) -> Result<(), EngineError> {
    if let Some(sid) = session_id {
        users::end_session(conn, sid)?;
    }
    let Some(username) = username else {
        return Ok(());
    };
    storage::write_transaction(conn, |conn| {
        storage::append_audit(
            conn,
            username,
            "auth.sign_out",
            &format!("user:{username}"),
            "",
        )
    })?;
    Ok(())
}

/// Ends `previous` (if any) and starts a session of `user_id`.
fn replace_session(
    conn: &mut DbConn,
    previous: Option<&str>,
    user_id: i64,
) -> Result<String, EngineError> {
    if let Some(old) = previous {
        users::end_session(conn, old)?;
    }
    Ok(users::start_session(conn, user_id)?)
}
