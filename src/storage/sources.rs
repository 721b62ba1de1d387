//! What polling saw of a pipeline's repository: the head commit of a
//! branch, and why the last look failed.
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now, write_transaction};
use super::models::SourceHeadRow;
use super::schema::source_heads;

/// The last seen head of `branch`, if polling looked at it before.
pub fn find_source_head(
    conn: &mut DbConn,
    pipeline_id: i64,
    branch: &str,
) -> Result<Option<SourceHeadRow>, StorageError> {
    Ok(source_heads::table
        .filter(source_heads::pipeline_id.eq(pipeline_id))
        .filter(source_heads::branch.eq(branch))
        .select(SourceHeadRow::as_select())
        .first(conn)
        .optional()?)
}

/// Every polled branch of a pipeline (for its page: last look, last error).
pub fn source_heads_of_pipeline(
    conn: &mut DbConn,
    pipeline_id: i64,
) -> Result<Vec<SourceHeadRow>, StorageError> {
    Ok(source_heads::table
        .filter(source_heads::pipeline_id.eq(pipeline_id))
        .order(source_heads::branch.asc())
        .select(SourceHeadRow::as_select())
        .load(conn)?)
}

/// Moves the head of `branch` from `seen` (what the caller read) to `head`,
/// clearing the error. Conditional, so when two instances poll at once only
/// one of them moves it and queues a build: `false` means someone else did.
pub fn advance_source_head(
    conn: &mut DbConn,
    pipeline_id: i64,
    branch: &str,
    seen: Option<&SourceHeadRow>,
    head: &str,
) -> Result<bool, StorageError> {
    let at = now();
    match seen {
        None => insert_unless_taken(conn, |conn| {
            diesel::insert_into(source_heads::table)
                .values((
                    source_heads::pipeline_id.eq(pipeline_id),
                    source_heads::branch.eq(branch),
                    source_heads::commit_sha.eq(head),
                    source_heads::checked_at.eq(at),
                    source_heads::changed_at.eq(at),
                ))
                .execute(conn)
        }),
        Some(row) => {
            let target = source_heads::table.find(row.id);
            let moved = (
                source_heads::commit_sha.eq(head),
                source_heads::error.eq(None::<String>),
                source_heads::checked_at.eq(at),
                source_heads::changed_at.eq(at),
            );
            let changed = match &row.commit_sha {
                Some(old) => diesel::update(target.filter(source_heads::commit_sha.eq(old)))
                    .set(moved)
                    .execute(conn)?,
                None => diesel::update(target.filter(source_heads::commit_sha.is_null()))
                    .set(moved)
                    .execute(conn)?,
            };
            Ok(changed > 0)
        }
    }
}

/// Records a look at `branch` that found nothing new (`error: None`) or
/// failed (`error: Some(why)`), creating the row when missing.
pub fn record_source_check(
    conn: &mut DbConn,
    pipeline_id: i64,
    branch: &str,
    error: Option<&str>,
) -> Result<(), StorageError> {
    let at = now();
    let updated = diesel::update(
        source_heads::table
            .filter(source_heads::pipeline_id.eq(pipeline_id))
            .filter(source_heads::branch.eq(branch)),
    )
    .set((
        source_heads::error.eq(error),
        source_heads::checked_at.eq(at),
    ))
    .execute(conn)?;
    if updated == 0 {
        insert_unless_taken(conn, |conn| {
            diesel::insert_into(source_heads::table)
                .values((
                    source_heads::pipeline_id.eq(pipeline_id),
                    source_heads::branch.eq(branch),
                    source_heads::commit_sha.eq(None::<String>),
                    source_heads::error.eq(error),
                    source_heads::checked_at.eq(at),
                    source_heads::changed_at.eq(at),
                ))
                .execute(conn)
        })?;
    }
    Ok(())
}

/// Runs `insert` (of a `source_heads` row) in a savepoint, since on
/// PostgreSQL a failed insert would abort the caller's whole transaction.
/// `Ok(false)` when another instance inserted the row first (a conflict).
fn insert_unless_taken(
    conn: &mut DbConn,
    insert: impl FnOnce(&mut DbConn) -> QueryResult<usize>,
) -> Result<bool, StorageError> {
    match write_transaction(conn, |conn| insert(conn).map_err(StorageError::from)) {
        Ok(n) => Ok(n > 0),
        Err(StorageError::Conflict(_)) => Ok(false),
        Err(other) => Err(other),
    }
}
