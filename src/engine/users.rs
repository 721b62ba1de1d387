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
use crate::storage::{self, DbConn, StorageError};

/// A user as the rest of Slipway sees one.
#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub role: Role,
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

/// Checks a local sign-in. Success and failure are both audited (never the
/// password); a disabled or SSO-only account cannot sign in with a password.
pub fn verify_login(
    conn: &mut DbConn,
    username: &str,
    password: &str,
    from: &str,
) -> Result<Option<User>, EngineError> {
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
    Ok(match user {
        Some(u) if ok => Some(User {
            id: u.id,
            username: u.username,
            role: u.role,
        }),
        _ => None,
    })
}

/// A user by id, unless disabled (for sessions).
pub fn active_user(conn: &mut DbConn, id: i64) -> Result<Option<User>, StorageError> {
    Ok(storage::find_user(conn, id)?
        .filter(|u| !u.disabled)
        .map(|u| User {
            id: u.id,
            username: u.username,
            role: u.role,
        }))
}

/// The user a token belongs to, unless it is unknown, revoked or disabled.
pub fn authenticate_token(conn: &mut DbConn, token: &str) -> Result<Option<User>, StorageError> {
    let Some((user, _token)) = storage::find_user_by_token_hash(conn, &hash_token(token))? else {
        return Ok(None);
    };
    if user.disabled {
        return Ok(None);
    }
    Ok(Some(User {
        id: user.id,
        username: user.username,
        role: user.role,
    }))
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
    fn tokens_hash_stably() {
        assert_eq!(hash_token("slw_x"), hash_token("slw_x"));
        assert_ne!(hash_token("slw_x"), hash_token("slw_y"));
        assert_eq!(generate_password().len(), 24);
    }
}
