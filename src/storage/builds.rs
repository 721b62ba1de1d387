//! Builds: the first stage of a pipeline, numbered per pipeline.
use diesel::dsl::max;
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now, write_transaction};
use super::models::BuildRow;
use super::schema::{builds, pipelines};
use crate::domain::BuildState;

/// A build to insert; `number` and `created_at` are set by [`insert_build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBuild {
    pub pipeline_id: i64,
    pub state: BuildState,
    /// The branch asked for (or pushed to).
    pub branch: Option<String>,
    /// The commit, when known already (a push, or a build of a commit).
    pub commit_sha: Option<String>,
    pub message: Option<String>,
    pub author: Option<String>,
    pub requested_by: String,
    /// `webhook`, `poll`, `manual`, `api`…
    pub trigger: String,
}

/// The number the next build of this pipeline gets (1 for the first).
pub fn next_build_number(conn: &mut DbConn, pipeline_id: i64) -> Result<i64, StorageError> {
    let last: Option<i64> = builds::table
        .filter(builds::pipeline_id.eq(pipeline_id))
        .select(max(builds::number))
        .first(conn)?;
    Ok(last.unwrap_or(0) + 1)
}

/// Inserts a build with the next number of its pipeline. The pipeline row
/// is locked first, so concurrent inserts number their builds in turn.
pub fn insert_build(conn: &mut DbConn, build: &NewBuild) -> Result<BuildRow, StorageError> {
    write_transaction(conn, |conn| {
        let locked = diesel::update(pipelines::table.find(build.pipeline_id))
            .set(pipelines::current_revision.eq(pipelines::current_revision))
            .execute(conn)?;
        if locked == 0 {
            return Err(StorageError::NotFound);
        }
        let number = next_build_number(conn, build.pipeline_id)?;
        let created_at = now();
        let (id,): (i64,) = diesel::insert_into(builds::table)
            .values((
                builds::pipeline_id.eq(build.pipeline_id),
                builds::number.eq(number),
                builds::state.eq(build.state.as_str()),
                builds::branch.eq(&build.branch),
                builds::commit_sha.eq(&build.commit_sha),
                builds::message.eq(&build.message),
                builds::author.eq(&build.author),
                builds::requested_by.eq(&build.requested_by),
                builds::trigger.eq(&build.trigger),
                builds::created_at.eq(created_at),
            ))
            .returning((builds::id,))
            .get_result(conn)?;
        Ok(BuildRow {
            id,
            pipeline_id: build.pipeline_id,
            number,
            state: build.state,
            branch: build.branch.clone(),
            commit_sha: build.commit_sha.clone(),
            message: build.message.clone(),
            author: build.author.clone(),
            requested_by: build.requested_by.clone(),
            trigger: build.trigger.clone(),
            error: None,
            runner: None,
            heartbeat_at: None,
            created_at,
            started_at: None,
            finished_at: None,
        })
    })
}

pub fn find_build(conn: &mut DbConn, id: i64) -> Result<Option<BuildRow>, StorageError> {
    Ok(builds::table
        .find(id)
        .select(BuildRow::as_select())
        .first(conn)
        .optional()?)
}

/// A build by its number within its pipeline.
pub fn find_build_by_number(
    conn: &mut DbConn,
    pipeline_id: i64,
    number: i64,
) -> Result<Option<BuildRow>, StorageError> {
    Ok(builds::table
        .filter(builds::pipeline_id.eq(pipeline_id))
        .filter(builds::number.eq(number))
        .select(BuildRow::as_select())
        .first(conn)
        .optional()?)
}
