//! Browser sessions kept on the server, and the sign-in attempt counter.
//!
//! A session row is found by the SHA-256 of the id its cookie carries;
//! revoking sets `revoked_at`. Sign-in attempts are counted per bucket
//! (`user:NAME`, `addr:IP`) by one upsert-increment statement, so that
//! parallel attempts can never all read the same old count.
use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Timestamp};

use super::StorageError;
use super::conn::{DbConn, now, write_transaction};
use super::schema::{sessions, sign_in_attempts};

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct SessionRow {
    pub id: i64,
    /// sha256 hex of the cookie's session id (the id itself is never stored).
    pub id_hash: String,
    pub user_id: i64,
    pub created_at: NaiveDateTime,
    pub last_seen_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
}

/// `last_seen_at` is written at most this often per session.
const LAST_SEEN_PRECISION: TimeDelta = TimeDelta::minutes(1);

/// Stores a new session of `user_id`.
pub fn insert_session(
    conn: &mut DbConn,
    id_hash: &str,
    user_id: i64,
) -> Result<SessionRow, StorageError> {
    let at = now();
    let (id,): (i64,) = diesel::insert_into(sessions::table)
        .values((
            sessions::id_hash.eq(id_hash),
            sessions::user_id.eq(user_id),
            sessions::created_at.eq(at),
            sessions::last_seen_at.eq(at),
        ))
        .returning((sessions::id,))
        .get_result(conn)?;
    Ok(SessionRow {
        id,
        id_hash: id_hash.to_string(),
        user_id,
        created_at: at,
        last_seen_at: at,
        revoked_at: None,
    })
}

/// The session of an id hash unless it is revoked or was last used more
/// than `idle` ago; records the use in `last_seen_at` (at most once a
/// minute).
pub fn find_live_session(
    conn: &mut DbConn,
    id_hash: &str,
    idle: chrono::TimeDelta,
) -> Result<Option<SessionRow>, StorageError> {
    let found = sessions::table
        .filter(sessions::id_hash.eq(id_hash))
        .filter(sessions::revoked_at.is_null())
        .filter(sessions::last_seen_at.ge(now() - idle))
        .select(SessionRow::as_select())
        .first(conn)
        .optional()?;
    let Some(mut row) = found else {
        return Ok(None);
    };
    let at = now();
    if at - row.last_seen_at >= LAST_SEEN_PRECISION {
        diesel::update(sessions::table.find(row.id))
            .set(sessions::last_seen_at.eq(at))
            .execute(conn)?;
        row.last_seen_at = at;
    }
    Ok(Some(row))
}

/// Revokes one session; `false` when unknown or revoked already.
pub fn revoke_session(conn: &mut DbConn, id_hash: &str) -> Result<bool, StorageError> {
    let changed = diesel::update(
        sessions::table
            .filter(sessions::id_hash.eq(id_hash))
            .filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(now()))
    .execute(conn)?;
    Ok(changed == 1)
}

/// Revokes every live session of a user; returns how many.
pub fn revoke_user_sessions(conn: &mut DbConn, user_id: i64) -> Result<usize, StorageError> {
    Ok(diesel::update(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::revoked_at.is_null()),
    )
    .set(sessions::revoked_at.eq(now()))
    .execute(conn)?)
}

/// Deletes a user's sessions that were revoked, or unused since `idle_before`
/// (they can never be used again); returns how many.
pub fn delete_dead_sessions(
    conn: &mut DbConn,
    user_id: i64,
    idle_before: NaiveDateTime,
) -> Result<usize, StorageError> {
    Ok(diesel::delete(
        sessions::table
            .filter(sessions::user_id.eq(user_id))
            .filter(
                sessions::revoked_at
                    .is_not_null()
                    .or(sessions::last_seen_at.lt(idle_before)),
            ),
    )
    .execute(conn)?)
}

/// How many live sessions a user has.
pub fn count_live_sessions(conn: &mut DbConn, user_id: i64) -> Result<i64, StorageError> {
    Ok(sessions::table
        .filter(sessions::user_id.eq(user_id))
        .filter(sessions::revoked_at.is_null())
        .count()
        .get_result(conn)?)
}

/// Runs the same diesel code on the inner connection of either backend
/// (for `ON CONFLICT`, which does not compile on the enum).
macro_rules! on_inner {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            DbConn::Pg($c) => $body,
            DbConn::Sqlite($c) => $body,
        }
    };
}

/// Counts one sign-in attempt in each bucket, atomically, and returns the
/// counts within the current window (one per bucket, in order). A bucket's
/// window starts at its first attempt and lasts `window`; an attempt after
/// that starts a new window at 1.
pub fn count_sign_in_attempt(
    conn: &mut DbConn,
    buckets: &[&str],
    window: TimeDelta,
) -> Result<Vec<i32>, StorageError> {
    write_transaction(conn, |conn| {
        let at = now();
        let expired = at - window;
        // Windows that ended count nothing any more.
        diesel::delete(sign_in_attempts::table.filter(sign_in_attempts::window_start.le(expired)))
            .execute(conn)?;
        let mut counts = Vec::with_capacity(buckets.len());
        for bucket in buckets {
            let attempts =
                diesel::dsl::sql::<Integer>("CASE WHEN sign_in_attempts.window_start <= ")
                    .bind::<Timestamp, _>(expired)
                    .sql(" THEN 1 ELSE sign_in_attempts.attempts + 1 END");
            let window_start =
                diesel::dsl::sql::<Timestamp>("CASE WHEN sign_in_attempts.window_start <= ")
                    .bind::<Timestamp, _>(expired)
                    .sql(" THEN ")
                    .bind::<Timestamp, _>(at)
                    .sql(" ELSE sign_in_attempts.window_start END");
            let insert = diesel::insert_into(sign_in_attempts::table)
                .values((
                    sign_in_attempts::bucket.eq(*bucket),
                    sign_in_attempts::window_start.eq(at),
                    sign_in_attempts::attempts.eq(1),
                ))
                .on_conflict(sign_in_attempts::bucket)
                .do_update()
                .set((
                    sign_in_attempts::attempts.eq(attempts),
                    sign_in_attempts::window_start.eq(window_start),
                ))
                .returning(sign_in_attempts::attempts);
            let count: i32 = on_inner!(conn, |c| insert.get_result(c)?);
            counts.push(count);
        }
        Ok(counts)
    })
}

/// Takes back one attempt from each bucket (after a successful sign-in,
/// which is not a failure; the failures counted before stay).
pub fn forgive_sign_in_attempt(conn: &mut DbConn, buckets: &[&str]) -> Result<(), StorageError> {
    write_transaction(conn, |conn| {
        for bucket in buckets {
            diesel::update(
                sign_in_attempts::table
                    .filter(sign_in_attempts::bucket.eq(*bucket))
                    .filter(sign_in_attempts::attempts.gt(0)),
            )
            .set(sign_in_attempts::attempts.eq(sign_in_attempts::attempts - 1))
            .execute(conn)?;
        }
        Ok(())
    })
}
