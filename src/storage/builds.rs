//! Builds: the first stage of a pipeline, numbered per pipeline.
use diesel::dsl::max;
use diesel::prelude::*;

use super::StorageError;
use super::audit::append_audit;
use super::conn::{DbConn, now, write_transaction};
use super::models::BuildRow;
use super::runs::run_lease_queries;
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
        if !lock_pipeline(conn, build.pipeline_id)? {
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

/// Locks the pipeline row until the end of the transaction (a no-op
/// update), so that concurrent writers of the same pipeline's builds (two
/// instances claiming, numbering) take turns. `false` when it does not exist.
fn lock_pipeline(conn: &mut DbConn, pipeline_id: i64) -> Result<bool, StorageError> {
    let locked = diesel::update(pipelines::table.find(pipeline_id))
        .set(pipelines::current_revision.eq(pipelines::current_revision))
        .execute(conn)?;
    Ok(locked > 0)
}

/// Queued builds, oldest first (the dispatcher's work list).
pub fn queued_builds(conn: &mut DbConn, limit: i64) -> Result<Vec<BuildRow>, StorageError> {
    Ok(builds::table
        .filter(builds::state.eq(BuildState::Queued.as_str()))
        .order(builds::id.asc())
        .limit(limit.max(0))
        .select(BuildRow::as_select())
        .load(conn)?)
}

/// How many builds of a pipeline are running.
pub fn count_running_builds(conn: &mut DbConn, pipeline_id: i64) -> Result<i64, StorageError> {
    Ok(builds::table
        .filter(builds::pipeline_id.eq(pipeline_id))
        .filter(builds::state.eq(BuildState::Running.as_str()))
        .count()
        .get_result(conn)?)
}

/// Claims a queued build for `runner`: `queued → running`, only while the
/// pipeline has fewer than `max_running` running builds, with its
/// `build.start` audit record by `actor` in the same transaction.
/// Race-free across instances: the pipeline row is locked and the update
/// is conditional on the state, so a build is claimed at most once.
/// Returns the claimed row, or `None` when it was taken, canceled, or the
/// pipeline is at its limit.
pub fn claim_build(
    conn: &mut DbConn,
    build_id: i64,
    runner: &str,
    max_running: i64,
    actor: &str,
) -> Result<Option<BuildRow>, StorageError> {
    write_transaction(conn, |conn| {
        let Some(build) = find_build(conn, build_id)? else {
            return Ok(None);
        };
        if build.state != BuildState::Queued || !lock_pipeline(conn, build.pipeline_id)? {
            return Ok(None);
        }
        if count_running_builds(conn, build.pipeline_id)? >= max_running {
            return Ok(None);
        }
        let at = now();
        let claimed = diesel::update(
            builds::table
                .find(build_id)
                .filter(builds::state.eq(BuildState::Queued.as_str())),
        )
        .set((
            builds::state.eq(BuildState::Running.as_str()),
            builds::runner.eq(runner),
            builds::heartbeat_at.eq(at),
            builds::started_at.eq(at),
        ))
        .execute(conn)?;
        if claimed == 0 {
            return Ok(None);
        }
        let pipeline: String = pipelines::table
            .find(build.pipeline_id)
            .select(pipelines::name)
            .first(conn)?;
        append_audit(
            conn,
            actor,
            "build.start",
            &format!("build:{pipeline}#{}", build.number),
            &format!("runner={runner}"),
        )?;
        Ok(Some(BuildRow {
            state: BuildState::Running,
            runner: Some(runner.to_string()),
            heartbeat_at: Some(at),
            started_at: Some(at),
            ..build
        }))
    })
}

/// The commit a running build checked out, with its branch, message and author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCommit {
    pub branch: String,
    pub commit_sha: String,
    pub message: String,
    pub author: String,
}

/// Records the commit of a running build; `false` when it no longer runs.
pub fn set_build_commit(
    conn: &mut DbConn,
    build_id: i64,
    commit: &BuildCommit,
) -> Result<bool, StorageError> {
    let updated = diesel::update(
        builds::table
            .find(build_id)
            .filter(builds::state.eq(BuildState::Running.as_str())),
    )
    .set((
        builds::branch.eq(&commit.branch),
        builds::commit_sha.eq(&commit.commit_sha),
        builds::message.eq(&commit.message),
        builds::author.eq(&commit.author),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

/// Moves a build from `from` to `to` (the caller checked the domain
/// transition), recording `error`; `finished_at` is set when `to` is
/// terminal. Conditional on the current state: `false` when the build was
/// not in `from` (someone else moved it first).
pub fn transition_build(
    conn: &mut DbConn,
    build_id: i64,
    from: BuildState,
    to: BuildState,
    error: Option<&str>,
) -> Result<bool, StorageError> {
    let finished_at = to.is_terminal().then(now);
    let updated = diesel::update(
        builds::table
            .find(build_id)
            .filter(builds::state.eq(from.as_str())),
    )
    .set((
        builds::state.eq(to.as_str()),
        builds::error.eq(error),
        builds::finished_at.eq(finished_at),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

run_lease_queries! {
    table: builds, row: BuildRow, state: BuildState,
    /// Marks the running builds of `runner` alive; returns how many.
    heartbeat: heartbeat_builds,
    /// Running builds whose runner is gone: those of any runner not heard from
    /// since `stale_before`, and, when given, every one of `runner` (an
    /// instance that has just started: its running builds are left over from
    /// its previous process).
    orphaned: orphaned_builds,
    /// The states of these builds, by id.
    states: build_states,
}

/// A page of a pipeline's builds, newest first (by number), at most `limit`;
/// `before` is a build number (the next page after the last one shown).
pub fn list_builds(
    conn: &mut DbConn,
    pipeline_id: i64,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<BuildRow>, StorageError> {
    let mut query = builds::table
        .filter(builds::pipeline_id.eq(pipeline_id))
        .select(BuildRow::as_select())
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(builds::number.lt(before));
    }
    Ok(query
        .order(builds::number.desc())
        .limit(limit.max(0))
        .load(conn)?)
}

/// The release versions of these builds (`(build id, version)`), for those
/// that made one.
pub fn release_versions_of_builds(
    conn: &mut DbConn,
    build_ids: &[i64],
) -> Result<Vec<(i64, String)>, StorageError> {
    use super::schema::releases;
    if build_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Option<i64>, String)> = releases::table
        .filter(releases::build_id.eq_any(build_ids))
        .select((releases::build_id, releases::version))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, version)| id.map(|id| (id, version)))
        .collect())
}

/// Builds that are queued or running, oldest first, in one query (the board
/// shows them).
pub fn unfinished_builds(conn: &mut DbConn) -> Result<Vec<BuildRow>, StorageError> {
    Ok(builds::table
        .filter(builds::state.eq_any([BuildState::Queued.as_str(), BuildState::Running.as_str()]))
        .order(builds::id.asc())
        .select(BuildRow::as_select())
        .load(conn)?)
}

/// The newest build of each of these pipelines (one query).
pub fn newest_builds(
    conn: &mut DbConn,
    pipeline_ids: &[i64],
) -> Result<Vec<BuildRow>, StorageError> {
    if pipeline_ids.is_empty() {
        return Ok(Vec::new());
    }
    let newest = diesel::alias!(builds as newest);
    let newest_ids = newest
        .filter(newest.field(builds::pipeline_id).eq_any(pipeline_ids))
        .group_by(newest.field(builds::pipeline_id))
        .select(max(newest.field(builds::id)));
    Ok(builds::table
        .filter(builds::id.nullable().eq_any(newest_ids))
        .select(BuildRow::as_select())
        .load(conn)?)
}
