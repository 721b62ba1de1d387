//! Users, groups and API tokens: creation, the first admin, token checks.

use std::path::{Path, PathBuf};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

use super::EngineError;
use crate::domain::Role;
use crate::domain::authz::{self, Action};
use crate::storage::{self, DbConn, StorageError};

/// A user as the rest of Slipway sees one.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
    /// The groups the user is in (local and SSO), sorted.
    pub groups: Vec<String>,
}

impl User {
    fn load(conn: &mut DbConn, row: storage::UserRow) -> Result<User, StorageError> {
        let groups = storage::user_groups(conn, row.id)?;
        Ok(User {
            id: row.id,
            username: row.username,
            role: row.role,
            groups,
        })
    }
}

/// A local account to create.
pub struct NewLocalUser<'a> {
    pub username: &'a str,
    pub role: Role,
    pub groups: &'a [String],
    pub password: &'a str,
}

/// The first admin's user name.
pub const INITIAL_ADMIN: &str = "admin";
/// The file, in the data dir, that holds the first admin's generated password.
pub const INITIAL_ADMIN_PASSWORD_FILE: &str = "initial-admin-password";

/// Prefix of every API token, so that one is recognisable in a leak scan.
const TOKEN_PREFIX: &str = "slw_";

pub fn generate_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// An argon2id hash in PHC format, with its own salt.
pub fn hash_password(password: &str) -> Result<String, EngineError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| EngineError::Invalid(format!("cannot hash the password: {e}")))
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// API tokens are long random strings; a SHA-256 of one is what is stored.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn valid_username(name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "`{name}` is not a valid user name: use 1 to 64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

fn valid_group(name: &str) -> Result<(), EngineError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "`{name}` is not a valid group name: use 1 to 64 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// Creates a local user with its groups, in one transaction with its audit record.
pub fn create_user(
    conn: &mut DbConn,
    new: NewLocalUser<'_>,
    actor: &str,
) -> Result<User, EngineError> {
    valid_username(new.username)?;
    for g in new.groups {
        valid_group(g)?;
    }
    let hash = hash_password(new.password)?;
    storage::write_transaction(conn, |conn| {
        if storage::find_user_by_name(conn, new.username)?.is_some() {
            return Err(EngineError::Conflict(format!(
                "a user named `{}` already exists",
                new.username
            )));
        }
        let id = storage::insert_user(
            conn,
            &storage::NewUser {
                username: new.username.to_string(),
                display_name: new.username.to_string(),
                role: new.role,
                password_hash: Some(hash.clone()),
                email: None,
                sso_subject: None,
            },
        )?
        .id;
        for g in new.groups {
            storage::add_user_to_group(conn, id, g)?;
        }
        let detail = format!(
            "role={} groups=[{}]",
            new.role.as_str(),
            new.groups.join(",")
        );
        storage::append_audit(
            conn,
            actor,
            "user.create",
            &format!("user:{}", new.username),
            &detail,
        )?;
        Ok(User {
            id,
            username: new.username.to_string(),
            role: new.role,
            groups: storage::user_groups(conn, id)?,
        })
    })
}

/// On a database without users, creates `admin` with a generated password
/// written to `<data-dir>/initial-admin-password` (mode 0600). Returns that
/// file's path when it did.
pub fn ensure_initial_admin(
    conn: &mut DbConn,
    data_dir: &Path,
) -> Result<Option<PathBuf>, EngineError> {
    if storage::count_users(conn)? > 0 {
        return Ok(None);
    }
    let password = generate_password();
    let path = data_dir.join(INITIAL_ADMIN_PASSWORD_FILE);
    write_private_file(&path, &format!("{password}\n"))?;
    let created = create_user(
        conn,
        NewLocalUser {
            username: INITIAL_ADMIN,
            role: Role::Admin,
            groups: &[],
            password: &password,
        },
        "system",
    );
    match created {
        Ok(_) => Ok(Some(path)),
        // Another instance made the first admin at the same moment: theirs stands.
        Err(EngineError::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes a file only its owner can read.
pub fn write_private_file(path: &Path, contents: &str) -> Result<(), EngineError> {
    use std::io::Write;
    let io = |source| EngineError::Io {
        context: format!("cannot write {}", path.display()),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    file.write_all(contents.as_bytes()).map_err(io)
}

/// Creates an API token for `username`; returns the token, which is stored
/// only as a hash and so can be shown just this once.
pub fn create_token(
    conn: &mut DbConn,
    username: &str,
    name: &str,
    actor: &str,
) -> Result<String, EngineError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(EngineError::Invalid(
            "A token needs a name of 1 to 100 characters, to recognise it by.".into(),
        ));
    }
    let raw: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let token = format!("{TOKEN_PREFIX}{raw}");
    let hash = hash_token(&token);
    storage::write_transaction(conn, |conn| {
        let user = storage::find_user_by_name(conn, username)?
            .ok_or_else(|| EngineError::NotFound(format!("there is no user `{username}`")))?;
        storage::insert_token(conn, user.id, name, &hash)?;
        storage::append_audit(
            conn,
            actor,
            "token.create",
            &format!("user:{username}"),
            &format!("name={name}"),
        )?;
        Ok(token)
    })
}

/// An argon2id hash checked when the user does not exist, so that a wrong
/// user name takes as long as a wrong password.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password(&generate_password()).unwrap_or_default());

/// Sign-in attempts allowed per account and per address in
/// [`SIGN_IN_WINDOW`]; the next one is refused without checking the password.
pub const MAX_SIGN_IN_ATTEMPTS: i32 = 5;
/// How long a sign-in lock lasts, from the first attempt counted.
pub const SIGN_IN_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// The answer to a local sign-in.
#[derive(Debug)]
pub enum SignIn {
    /// The password is right: the user.
    Accepted(User),
    /// Wrong user name or password (or a disabled or SSO-only account).
    Refused,
    /// Too many attempts for the account or the address in the last
    /// [`SIGN_IN_WINDOW`]: the password was not checked.
    Throttled,
}

/// Checks a local sign-in. The attempt is counted first, atomically in the
/// database, per account (`user:NAME`) and per address (`addr:IP`); beyond
/// [`MAX_SIGN_IN_ATTEMPTS`] in either, the answer is [`SignIn::Throttled`]
/// and the password is not checked (the right one neither). A successful
/// sign-in takes its own attempt back but never lifts a lock early.
/// Success, failure and throttling are audited (never the password); a
/// disabled or SSO-only account cannot sign in with a password.
pub fn verify_login(
    conn: &mut DbConn,
    username: &str,
    password: &str,
    from: &str,
) -> Result<SignIn, EngineError> {
    let user_bucket = format!("user:{}", username.to_lowercase());
    let addr_bucket = format!("addr:{from}");
    let buckets = [user_bucket.as_str(), addr_bucket.as_str()];
    let counts = storage::sessions::count_sign_in_attempt(conn, &buckets, SIGN_IN_WINDOW)?;
    if counts.iter().any(|n| *n > MAX_SIGN_IN_ATTEMPTS) {
        storage::write_transaction(conn, |conn| {
            storage::append_audit(
                conn,
                "anonymous",
                "auth.sign_in_throttled",
                &format!("user:{username}"),
                &format!("method=password from={from}"),
            )
        })?;
        return Ok(SignIn::Throttled);
    }
    let user = storage::find_user_by_name(conn, username)?;
    let ok = match &user {
        Some(u) if !u.disabled => u
            .password_hash
            .as_deref()
            .is_some_and(|h| verify_password(h, password)),
        _ => {
            verify_password(&DUMMY_HASH, password);
            false
        }
    };
    let (action, actor) = if ok {
        ("auth.sign_in", username)
    } else {
        ("auth.sign_in_failed", "anonymous")
    };
    storage::write_transaction(conn, |conn| {
        storage::append_audit(
            conn,
            actor,
            action,
            &format!("user:{username}"),
            &format!("method=password from={from}"),
        )
    })?;
    match user {
        Some(u) if ok => {
            storage::sessions::forgive_sign_in_attempt(conn, &buckets)?;
            Ok(SignIn::Accepted(User::load(conn, u)?))
        }
        _ => Ok(SignIn::Refused),
    }
}

/// How long a browser session lasts without being used.
pub const SESSION_IDLE: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Starts a server-side browser session of `user_id`; returns the session
/// id for the cookie (only its SHA-256 is stored). The user's revoked and
/// idle sessions are deleted on the way.
pub fn start_session(conn: &mut DbConn, user_id: i64) -> Result<String, StorageError> {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes[..]);
    let id = hex::encode(bytes);
    storage::sessions::delete_dead_sessions(conn, user_id, storage::now() - SESSION_IDLE)?;
    storage::sessions::insert_session(conn, &hash_token(&id), user_id)?;
    Ok(id)
}

/// The user of a browser session: `None` when the session is unknown,
/// revoked, unused for [`SESSION_IDLE`], or not `user_id`'s, or the user is
/// disabled.
pub fn session_user(
    conn: &mut DbConn,
    session_id: &str,
    user_id: i64,
) -> Result<Option<User>, StorageError> {
    let Some(row) =
        storage::sessions::find_live_session(conn, &hash_token(session_id), SESSION_IDLE)?
    else {
        return Ok(None);
    };
    if row.user_id != user_id {
        return Ok(None);
    }
    active_user(conn, user_id)
}

/// Ends one browser session (sign-out).
pub fn end_session(conn: &mut DbConn, session_id: &str) -> Result<(), StorageError> {
    storage::sessions::revoke_session(conn, &hash_token(session_id))?;
    Ok(())
}

/// Ends every browser session of `user` ("sign out everywhere"), audited as
/// `auth.sign_out_everywhere`; returns how many were live.
pub fn end_all_sessions(conn: &mut DbConn, user: &User) -> Result<usize, StorageError> {
    storage::write_transaction(conn, |conn| {
        let n = storage::sessions::revoke_user_sessions(conn, user.id)?;
        storage::append_audit(
            conn,
            &user.username,
            "auth.sign_out_everywhere",
            &format!("user:{}", user.username),
            &format!("sessions={n}"),
        )?;
        Ok(n)
    })
}

/// A user by id, unless disabled (for sessions).
pub fn active_user(conn: &mut DbConn, id: i64) -> Result<Option<User>, StorageError> {
    match storage::find_user(conn, id)?.filter(|u| !u.disabled) {
        Some(row) => Ok(Some(User::load(conn, row)?)),
        None => Ok(None),
    }
}

/// The user a token belongs to, unless it is unknown, revoked or disabled.
pub fn authenticate_token(conn: &mut DbConn, token: &str) -> Result<Option<User>, StorageError> {
    let Some((user, _token)) = storage::find_user_by_token_hash(conn, &hash_token(token))? else {
        return Ok(None);
    };
    if user.disabled {
        return Ok(None);
    }
    Ok(Some(User::load(conn, user)?))
}

/// Revokes an API token. Its owner may revoke it, and an admin may revoke
/// anyone's; audited as `token.revoke`. Revoking a revoked token is a
/// conflict, an unknown one not found.
pub fn revoke_token(conn: &mut DbConn, token_id: i64, actor: &User) -> Result<(), EngineError> {
    storage::write_transaction(conn, |conn| {
        let token = storage::find_token(conn, token_id)?
            .ok_or_else(|| EngineError::NotFound(format!("there is no API token {token_id}")))?;
        let action = if token.user_id == actor.id {
            Action::ManageOwnTokens
        } else {
            Action::ManageUsers
        };
        if !authz::allowed(actor.role, action) {
            // Someone else's token: do not even say that it exists.
            return Err(EngineError::NotFound(format!(
                "there is no API token {token_id}"
            )));
        }
        let owner = storage::find_user(conn, token.user_id)?
            .map(|u| u.username)
            .unwrap_or_default();
        if !storage::revoke_token(conn, token_id)? {
            return Err(EngineError::Conflict(format!(
                "the API token `{}` is revoked already",
                token.name
            )));
        }
        storage::append_audit(
            conn,
            &actor.username,
            "token.revoke",
            &format!("user:{owner}"),
            &format!("name={} id={token_id}", token.name),
        )?;
        Ok(())
    })
}

/// What the identity provider says about a person who signed in through SSO
/// (from the validated ID token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoIdentity {
    /// The ID token's `sub`: stable for the person at this provider.
    pub subject: String,
    /// The names to try as the Slipway user name, best first
    /// (`preferred_username`, `email`, `sub`); the first valid one is used.
    pub username_candidates: Vec<String>,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// The groups claim, as sent.
    pub groups: Vec<String>,
}

/// The Slipway group names of a groups claim: a leading `/` (Keycloak's
/// group paths) is dropped; names Slipway cannot hold are left out.
pub fn sso_group_names(claim: &[String]) -> Vec<String> {
    let mut names: Vec<String> = claim
        .iter()
        .map(|g| g.trim().trim_start_matches('/').to_string())
        .filter(|g| valid_group(g).is_ok())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Signs a person in through SSO: finds the user by SSO subject or creates
/// one (role viewer) on the first sign-in, replaces the user's SSO group
/// memberships with the groups claim (local memberships stay), updates name
/// and e-mail, and audits `auth.sign_in` with `method=sso`. A disabled
/// user is refused; a user name already taken by another account is a
/// conflict (never silently linked).
pub fn sso_sign_in(
    conn: &mut DbConn,
    identity: &SsoIdentity,
    from: &str,
) -> Result<User, EngineError> {
    let groups = sso_group_names(&identity.groups);
    type Refusal = (String, &'static str, EngineError);
    let signed_in = storage::write_transaction::<Result<User, Refusal>, EngineError, _>(
        conn,
        |conn| {
            let existing = storage::find_user_by_sso_subject(conn, &identity.subject)?;
            let user = match existing {
                Some(row) if row.disabled => {
                    return Ok(Err((
                        row.username.clone(),
                        "disabled",
                        EngineError::Forbidden(format!(
                            "The account `{}` is disabled. Ask a Slipway administrator to enable it.",
                            row.username
                        )),
                    )));
                }
                Some(row) => row,
                None => {
                    let username = identity
                    .username_candidates
                    .iter()
                    .map(|c| c.trim())
                    .find(|c| valid_username(c).is_ok())
                    .ok_or_else(|| {
                        EngineError::Invalid(
                            "The identity provider sent no usable user name (preferred_username, email or sub).".into(),
                        )
                    })?
                    .to_string();
                    if storage::find_user_by_name(conn, &username)?.is_some() {
                        return Ok(Err((
                            username.clone(),
                            "name_taken",
                            EngineError::Conflict(format!(
                                "A Slipway account named `{username}` exists already and is not linked to this single sign-on identity. Ask a Slipway administrator."
                            )),
                        )));
                    }
                    let row = storage::insert_user(
                        conn,
                        &storage::NewUser {
                            username: username.clone(),
                            display_name: identity
                                .display_name
                                .clone()
                                .unwrap_or_else(|| username.clone()),
                            role: Role::Viewer,
                            password_hash: None,
                            email: identity.email.clone(),
                            sso_subject: Some(identity.subject.clone()),
                        },
                    )?;
                    storage::append_audit(
                        conn,
                        "sso",
                        "user.create",
                        &format!("user:{username}"),
                        &format!("role={} source=sso", Role::Viewer.as_str()),
                    )?;
                    row
                }
            };
            let display_name = identity
                .display_name
                .clone()
                .unwrap_or_else(|| user.display_name.clone());
            let email = identity.email.clone().or_else(|| user.email.clone());
            storage::update_user_profile(conn, user.id, &display_name, email.as_deref())?;
            let (added, removed) = storage::replace_sso_memberships(conn, user.id, &groups)?;
            storage::append_audit(
                conn,
                &user.username,
                "auth.sign_in",
                &format!("user:{}", user.username),
                &format!(
                    "method=sso from={from} groups=[{}] added=[{}] removed=[{}]",
                    groups.join(","),
                    added.join(","),
                    removed.join(",")
                ),
            )?;
            Ok(Ok(User::load(conn, user)?))
        },
    )?;
    match signed_in {
        Ok(user) => Ok(user),
        // Refused: recorded in a transaction of its own.
        Err((username, reason, error)) => {
            storage::write_transaction(conn, |conn| {
                storage::append_audit(
                    conn,
                    "anonymous",
                    "auth.sign_in_failed",
                    &format!("user:{username}"),
                    &format!("method=sso from={from} reason={reason}"),
                )
            })?;
            Err(error)
        }
    }
}

/// A user as the admin page lists one.
#[derive(Debug, Clone)]
pub struct UserSummary {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: Role,
    pub disabled: bool,
    /// Signs in through SSO.
    pub sso: bool,
    /// Signs in with a password.
    pub local: bool,
    /// `(group, source)`, source `local` or `sso`.
    pub groups: Vec<(String, String)>,
    pub created_at: chrono::NaiveDateTime,
}

/// Every user with their groups, by user name.
pub fn list_users(conn: &mut DbConn) -> Result<Vec<UserSummary>, StorageError> {
    let rows = storage::list_users(conn)?;
    let ids: Vec<i64> = rows.iter().map(|u| u.id).collect();
    let memberships = storage::memberships_of_users(conn, &ids)?;
    Ok(rows
        .into_iter()
        .map(|u| UserSummary {
            groups: memberships
                .iter()
                .filter(|(id, _, _)| *id == u.id)
                .map(|(_, g, s)| (g.clone(), s.clone()))
                .collect(),
            id: u.id,
            sso: u.sso_subject.is_some(),
            local: u.password_hash.is_some(),
            username: u.username,
            display_name: u.display_name,
            email: u.email,
            role: u.role,
            disabled: u.disabled,
            created_at: u.created_at,
        })
        .collect())
}

/// A change an admin makes to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    /// Give the user this role.
    Role(Role),
    /// Add a local group membership.
    AddGroup(String),
    /// End a local group membership (SSO ones come from the provider).
    RemoveGroup(String),
    /// Disable (`true`) or enable (`false`) the account; a disabled user's
    /// sessions and tokens stop working at once.
    Disabled(bool),
}

/// Applies an admin's change to a user, in one transaction with its audit
/// record. Needs [`Action::ManageUsers`]; the last enabled admin can be
/// neither demoted nor disabled, and nobody disables themselves.
pub fn change_user(
    conn: &mut DbConn,
    user_id: i64,
    change: &UserChange,
    actor: &User,
) -> Result<(), EngineError> {
    if !authz::allowed(actor.role, Action::ManageUsers) {
        return Err(EngineError::Forbidden(format!(
            "{} is a {}; managing users needs the admin role.",
            actor.username,
            actor.role.label()
        )));
    }
    if let UserChange::AddGroup(g) = change {
        valid_group(g)?;
    }
    storage::write_transaction(conn, |conn| {
        let target = storage::find_user(conn, user_id)?
            .ok_or_else(|| EngineError::NotFound(format!("there is no user {user_id}")))?;
        let subject = format!("user:{}", target.username);
        let last_admin = |conn: &mut DbConn| -> Result<bool, EngineError> {
            Ok(target.role == Role::Admin
                && !target.disabled
                && storage::count_active_admins(conn)? <= 1)
        };
        let (action, detail) = match change {
            UserChange::Role(role) => {
                if *role == target.role {
                    return Ok(());
                }
                if *role != Role::Admin && last_admin(conn)? {
                    return Err(EngineError::Refused(format!(
                        "`{}` is the last admin; make someone else an admin first.",
                        target.username
                    )));
                }
                storage::set_user_role(conn, user_id, *role)?;
                (
                    "user.role",
                    format!("from={} to={}", target.role.as_str(), role.as_str()),
                )
            }
            UserChange::AddGroup(group) => {
                if !storage::add_membership(conn, user_id, group, storage::GROUP_SOURCE_LOCAL)? {
                    return Ok(());
                }
                ("user.group_add", format!("group={group}"))
            }
            UserChange::RemoveGroup(group) => {
                if !storage::remove_membership(conn, user_id, group, storage::GROUP_SOURCE_LOCAL)? {
                    return Err(EngineError::NotFound(format!(
                        "`{}` is not a local member of `{group}`",
                        target.username
                    )));
                }
                ("user.group_remove", format!("group={group}"))
            }
            UserChange::Disabled(disabled) => {
                if *disabled == target.disabled {
                    return Ok(());
                }
                if *disabled && target.id == actor.id {
                    return Err(EngineError::Refused(
                        "You cannot disable your own account.".into(),
                    ));
                }
                if *disabled && last_admin(conn)? {
                    return Err(EngineError::Refused(format!(
                        "`{}` is the last admin; make someone else an admin first.",
                        target.username
                    )));
                }
                storage::set_user_disabled(conn, user_id, *disabled)?;
                if *disabled {
                    storage::sessions::revoke_user_sessions(conn, user_id)?;
                }
                (
                    if *disabled {
                        "user.disable"
                    } else {
                        "user.enable"
                    },
                    String::new(),
                )
            }
        };
        storage::append_audit(conn, &actor.username, action, &subject, &detail)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "wrong"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn usernames_are_checked() {
        assert!(valid_username("mara.s@tailspin").is_ok());
        assert!(valid_username("").is_err());
        assert!(valid_username("a b").is_err());
        assert!(valid_group("management").is_ok());
        assert!(valid_group("group:qa").is_err());
    }

    #[test]
    fn sso_groups_become_slipway_groups() {
        let claim = [
            "/management".to_string(),
            "qa".into(),
            "has space".into(),
            "qa".into(),
            "".into(),
        ];
        assert_eq!(sso_group_names(&claim), vec!["management", "qa"]);
    }

    #[test]
    fn tokens_hash_stably() {
        assert_eq!(hash_token("slw_x"), hash_token("slw_x"));
        assert_ne!(hash_token("slw_x"), hash_token("slw_y"));
        assert_eq!(generate_password().len(), 24);
    }
}
