//! Users, groups and API tokens.
use chrono::TimeDelta;
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now, write_transaction};
use super::models::{TokenRow, UserRow};
use super::schema::{api_tokens, groups, user_groups, users};
use crate::domain::Role;

/// A user to insert.
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub role: Role,
    /// Argon2 PHC string; `None` for SSO-only users.
    pub password_hash: Option<String>,
    pub email: Option<String>,
    /// The OIDC `sub` of an SSO user.
    pub sso_subject: Option<String>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("role", &self.role)
            .field("email", &self.email)
            .field("sso_subject", &self.sso_subject)
            .finish_non_exhaustive()
    }
}

/// Where a group (or a membership) comes from: managed in Slipway.
pub const GROUP_SOURCE_LOCAL: &str = "local";
/// Where a group (or a membership) comes from: the SSO groups claim,
/// replaced at every SSO sign-in.
pub const GROUP_SOURCE_SSO: &str = "sso";

/// How stale `last_used_at` may get before a token lookup writes it again
/// (so that every API call is not a write).
const LAST_USED_PRECISION: TimeDelta = TimeDelta::seconds(60);

/// Inserts a user; a taken user name (or SSO subject) is a [`StorageError::Conflict`].
pub fn insert_user(conn: &mut DbConn, user: &NewUser) -> Result<UserRow, StorageError> {
    let created_at = now();
    let (id,): (i64,) = diesel::insert_into(users::table)
        .values((
            users::username.eq(&user.username),
            users::display_name.eq(&user.display_name),
            users::email.eq(&user.email),
            users::role.eq(user.role.as_str()),
            users::password_hash.eq(&user.password_hash),
            users::sso_subject.eq(&user.sso_subject),
            users::disabled.eq(false),
            users::created_at.eq(created_at),
        ))
        .returning((users::id,))
        .get_result(conn)
        .map_err(|e| {
            StorageError::from(e).conflict_as(|| format!("user {} already exists", user.username))
        })?;
    Ok(UserRow {
        id,
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        email: user.email.clone(),
        role: user.role,
        password_hash: user.password_hash.clone(),
        sso_subject: user.sso_subject.clone(),
        disabled: false,
        created_at,
    })
}

pub fn find_user_by_name(
    conn: &mut DbConn,
    username: &str,
) -> Result<Option<UserRow>, StorageError> {
    Ok(users::table
        .filter(users::username.eq(username))
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn find_user(conn: &mut DbConn, id: i64) -> Result<Option<UserRow>, StorageError> {
    Ok(users::table
        .find(id)
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn find_user_by_sso_subject(
    conn: &mut DbConn,
    subject: &str,
) -> Result<Option<UserRow>, StorageError> {
    Ok(users::table
        .filter(users::sso_subject.eq(subject))
        .select(UserRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn count_users(conn: &mut DbConn) -> Result<i64, StorageError> {
    Ok(users::table.count().get_result(conn)?)
}

/// Adds a user to a group, creating a local group of that name if needed.
/// Adding a member twice is not an error.
pub fn add_user_to_group(
    conn: &mut DbConn,
    user_id: i64,
    group_name: &str,
) -> Result<(), StorageError> {
    add_membership(conn, user_id, group_name, GROUP_SOURCE_LOCAL).map(|_| ())
}

/// The id of the group `name`, created (with `source`) when missing.
fn ensure_group(conn: &mut DbConn, name: &str, source: &str) -> Result<i64, StorageError> {
    let existing: Option<i64> = groups::table
        .filter(groups::name.eq(name))
        .select(groups::id)
        .first(conn)
        .optional()?;
    match existing {
        Some(id) => Ok(id),
        None => Ok(diesel::insert_into(groups::table)
            .values((
                groups::name.eq(name),
                groups::source.eq(source),
                groups::created_at.eq(now()),
            ))
            .returning(groups::id)
            .get_result(conn)?),
    }
}

/// Makes a user a member of a group (created when missing), the membership
/// coming from `source` (`local` or `sso`). `false` when the user was a
/// member already (whatever the source; the existing membership stays).
pub fn add_membership(
    conn: &mut DbConn,
    user_id: i64,
    group_name: &str,
    source: &str,
) -> Result<bool, StorageError> {
    write_transaction(conn, |conn| {
        let group_id = ensure_group(conn, group_name, source)?;
        let member: i64 = user_groups::table
            .filter(user_groups::user_id.eq(user_id))
            .filter(user_groups::group_id.eq(group_id))
            .count()
            .get_result(conn)?;
        if member > 0 {
            return Ok(false);
        }
        diesel::insert_into(user_groups::table)
            .values((
                user_groups::user_id.eq(user_id),
                user_groups::group_id.eq(group_id),
                user_groups::created_at.eq(now()),
                user_groups::source.eq(source),
            ))
            .execute(conn)?;
        Ok(true)
    })
}

/// Ends a user's membership of a group if it came from `source`; `false`
/// when there was no such membership.
pub fn remove_membership(
    conn: &mut DbConn,
    user_id: i64,
    group_name: &str,
    source: &str,
) -> Result<bool, StorageError> {
    let group_id: Option<i64> = groups::table
        .filter(groups::name.eq(group_name))
        .select(groups::id)
        .first(conn)
        .optional()?;
    let Some(group_id) = group_id else {
        return Ok(false);
    };
    let removed = diesel::delete(
        user_groups::table
            .filter(user_groups::user_id.eq(user_id))
            .filter(user_groups::group_id.eq(group_id))
            .filter(user_groups::source.eq(source)),
    )
    .execute(conn)?;
    Ok(removed > 0)
}

/// A user's group memberships: `(group, source)`, sorted by group.
pub fn user_memberships(
    conn: &mut DbConn,
    user_id: i64,
) -> Result<Vec<(String, String)>, StorageError> {
    Ok(user_groups::table
        .inner_join(groups::table)
        .filter(user_groups::user_id.eq(user_id))
        .order(groups::name.asc())
        .select((groups::name, user_groups::source))
        .load(conn)?)
}

/// Every membership of these users: `(user id, group, source)`, by group.
pub fn memberships_of_users(
    conn: &mut DbConn,
    user_ids: &[i64],
) -> Result<Vec<(i64, String, String)>, StorageError> {
    Ok(user_groups::table
        .inner_join(groups::table)
        .filter(user_groups::user_id.eq_any(user_ids))
        .order((user_groups::user_id.asc(), groups::name.asc()))
        .select((user_groups::user_id, groups::name, user_groups::source))
        .load(conn)?)
}

/// Makes a user's SSO memberships exactly `names`: SSO memberships of other
/// groups end, missing ones are added with source `sso`; local memberships
/// are kept as they are. Returns the groups added and removed.
pub fn replace_sso_memberships(
    conn: &mut DbConn,
    user_id: i64,
    names: &[String],
) -> Result<(Vec<String>, Vec<String>), StorageError> {
    write_transaction(conn, |conn| {
        let current = user_memberships(conn, user_id)?;
        let mut removed = Vec::new();
        for (group, source) in &current {
            if source == GROUP_SOURCE_SSO && !names.contains(group) {
                remove_membership(conn, user_id, group, GROUP_SOURCE_SSO)?;
                removed.push(group.clone());
            }
        }
        let mut added = Vec::new();
        for name in names {
            if add_membership(conn, user_id, name, GROUP_SOURCE_SSO)? {
                added.push(name.clone());
            }
        }
        Ok((added, removed))
    })
}

/// Every user, by user name.
pub fn list_users(conn: &mut DbConn) -> Result<Vec<UserRow>, StorageError> {
    Ok(users::table
        .order(users::username.asc())
        .select(UserRow::as_select())
        .load(conn)?)
}

/// How many enabled admins there are.
pub fn count_active_admins(conn: &mut DbConn) -> Result<i64, StorageError> {
    Ok(users::table
        .filter(users::role.eq(Role::Admin.as_str()))
        .filter(users::disabled.eq(false))
        .count()
        .get_result(conn)?)
}

/// Sets a user's role; `false` when there is no such user.
pub fn set_user_role(conn: &mut DbConn, user_id: i64, role: Role) -> Result<bool, StorageError> {
    let changed = diesel::update(users::table.find(user_id))
        .set(users::role.eq(role.as_str()))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Disables or enables a user; `false` when there is no such user.
pub fn set_user_disabled(
    conn: &mut DbConn,
    user_id: i64,
    disabled: bool,
) -> Result<bool, StorageError> {
    let changed = diesel::update(users::table.find(user_id))
        .set(users::disabled.eq(disabled))
        .execute(conn)?;
    Ok(changed == 1)
}

/// Updates what the identity provider says about an SSO user.
pub fn update_user_profile(
    conn: &mut DbConn,
    user_id: i64,
    display_name: &str,
    email: Option<&str>,
) -> Result<(), StorageError> {
    diesel::update(users::table.find(user_id))
        .set((users::display_name.eq(display_name), users::email.eq(email)))
        .execute(conn)?;
    Ok(())
}

/// The names of a user's groups, sorted.
pub fn user_groups(conn: &mut DbConn, user_id: i64) -> Result<Vec<String>, StorageError> {
    Ok(user_groups::table
        .inner_join(groups::table)
        .filter(user_groups::user_id.eq(user_id))
        .order(groups::name.asc())
        .select(groups::name)
        .load(conn)?)
}

/// Stores a token by its hash (the token itself is never stored).
pub fn insert_token(
    conn: &mut DbConn,
    user_id: i64,
    name: &str,
    token_hash: &str,
) -> Result<TokenRow, StorageError> {
    let created_at = now();
    let (id,): (i64,) = diesel::insert_into(api_tokens::table)
        .values((
            api_tokens::user_id.eq(user_id),
            api_tokens::name.eq(name),
            api_tokens::token_hash.eq(token_hash),
            api_tokens::created_at.eq(created_at),
        ))
        .returning((api_tokens::id,))
        .get_result(conn)
        .map_err(|e| StorageError::from(e).conflict_as(|| "this token exists already".into()))?;
    Ok(TokenRow {
        id,
        user_id,
        name: name.to_string(),
        token_hash: token_hash.to_string(),
        created_at,
        last_used_at: None,
        revoked_at: None,
    })
}

/// The user and token of a token hash, unless the token is revoked. Records
/// the use in `last_used_at` (at most once a minute). The caller decides
/// what a disabled user may do.
pub fn find_user_by_token_hash(
    conn: &mut DbConn,
    token_hash: &str,
) -> Result<Option<(UserRow, TokenRow)>, StorageError> {
    let found: Option<(UserRow, TokenRow)> = api_tokens::table
        .inner_join(users::table)
        .filter(api_tokens::token_hash.eq(token_hash))
        .filter(api_tokens::revoked_at.is_null())
        .select((UserRow::as_select(), TokenRow::as_select()))
        .first(conn)
        .optional()?;
    let Some((user, mut token)) = found else {
        return Ok(None);
    };
    let at = now();
    let stale = token
        .last_used_at
        .is_none_or(|last| at - last >= LAST_USED_PRECISION);
    if stale {
        diesel::update(api_tokens::table.find(token.id))
            .set(api_tokens::last_used_at.eq(at))
            .execute(conn)?;
        token.last_used_at = Some(at);
    }
    Ok(Some((user, token)))
}

/// A user's tokens, newest first (revoked ones included).
pub fn list_tokens(conn: &mut DbConn, user_id: i64) -> Result<Vec<TokenRow>, StorageError> {
    Ok(api_tokens::table
        .filter(api_tokens::user_id.eq(user_id))
        .order(api_tokens::id.desc())
        .select(TokenRow::as_select())
        .load(conn)?)
}

/// Revokes a token; `false` when it does not exist or was revoked already.
pub fn revoke_token(conn: &mut DbConn, token_id: i64) -> Result<bool, StorageError> {
    let changed = diesel::update(
        api_tokens::table
            .find(token_id)
            .filter(api_tokens::revoked_at.is_null()),
    )
    .set(api_tokens::revoked_at.eq(now()))
    .execute(conn)?;
    Ok(changed == 1)
}

/// One token by id (revoked or not).
pub fn find_token(conn: &mut DbConn, token_id: i64) -> Result<Option<TokenRow>, StorageError> {
    Ok(api_tokens::table
        .find(token_id)
        .select(TokenRow::as_select())
        .first(conn)
        .optional()?)
}
