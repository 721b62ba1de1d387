//! Log chunks: the output of task runs, a few lines per row, numbered by
//! `seq`. A build numbers the chunks of all its tasks in one sequence, so
//! `seq` orders a whole build's log and is the cursor of live tailing
//! (`log_chunks_of_build_after`).
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now};
use super::models::LogChunkRow;
use super::schema::{log_chunks, task_runs};

/// A chunk to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLogChunk {
    pub task_run_id: i64,
    /// Increasing within the build (or deployment) the task run belongs to.
    pub seq: i64,
    /// `stdout`, `stderr` or `system` (Slipway's own lines).
    pub stream: String,
    /// Whole lines, each ending in `\n`.
    pub text: String,
}

/// Appends a chunk. A `seq` used twice for a task run is a conflict.
pub fn append_log_chunk(conn: &mut DbConn, chunk: &NewLogChunk) -> Result<(), StorageError> {
    diesel::insert_into(log_chunks::table)
        .values((
            log_chunks::task_run_id.eq(chunk.task_run_id),
            log_chunks::seq.eq(chunk.seq),
            log_chunks::stream.eq(&chunk.stream),
            log_chunks::text.eq(&chunk.text),
            log_chunks::created_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// The chunks of one task run with `seq > after_seq`, in order, at most `limit`.
pub fn log_chunks_after(
    conn: &mut DbConn,
    task_run_id: i64,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<LogChunkRow>, StorageError> {
    Ok(log_chunks::table
        .filter(log_chunks::task_run_id.eq(task_run_id))
        .filter(log_chunks::seq.gt(after_seq))
        .order(log_chunks::seq.asc())
        .limit(limit.max(0))
        .select(LogChunkRow::as_select())
        .load(conn)?)
}

/// The chunks of every task of a build with `seq > after_seq`, in order,
/// at most `limit` (live tailing: pass the last `seq` seen).
pub fn log_chunks_of_build_after(
    conn: &mut DbConn,
    build_id: i64,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<LogChunkRow>, StorageError> {
    Ok(log_chunks::table
        .inner_join(task_runs::table)
        .filter(task_runs::build_id.eq(build_id))
        .filter(log_chunks::seq.gt(after_seq))
        .order(log_chunks::seq.asc())
        .limit(limit.max(0))
        .select(LogChunkRow::as_select())
        .load(conn)?)
}
