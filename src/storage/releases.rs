//! Releases and their artifacts. A release is written once and never updated.
use diesel::dsl::exists;
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now, write_transaction};
use super::models::{ArtifactRow, DeploymentRow, ReleaseRow};
use super::schema::{artifacts, deployments, releases};
use crate::domain::DeploymentState;

/// A release to insert; `created_at` is set by [`insert_release`].
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = releases)]
pub struct NewRelease {
    pub pipeline_id: i64,
    pub version: String,
    pub build_id: Option<i64>,
    pub revision_id: i64,
    pub commit_sha: String,
    pub branch: String,
    pub message: String,
    pub author: String,
    pub fixes_release_id: Option<i64>,
}

/// An artifact of a release being inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewArtifact {
    /// Relative to the build workspace, e.g. `dist/app.js`.
    pub path: String,
    pub sha256: String,
    pub size: i64,
}

/// Which releases [`list_releases`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseFilter {
    /// Only releases with `id < before` (the next page after the last id shown).
    pub before: Option<i64>,
    pub branch: Option<String>,
    /// Only releases that have a deployment in this state…
    pub state: Option<DeploymentState>,
    /// …in this stage (applies with `state` only).
    pub stage: Option<String>,
    pub limit: i64,
}

/// Inserts a release and its artifacts in one transaction. A version already
/// used in the pipeline (or a build already released) is a
/// [`StorageError::Conflict`].
pub fn insert_release(
    conn: &mut DbConn,
    release: &NewRelease,
    release_artifacts: &[NewArtifact],
) -> Result<ReleaseRow, StorageError> {
    write_transaction(conn, |conn| {
        let created_at = now();
        let (id,): (i64,) = diesel::insert_into(releases::table)
            .values((release, releases::created_at.eq(created_at)))
            .returning((releases::id,))
            .get_result(conn)
            .map_err(|e| {
                StorageError::from(e).conflict_as(|| {
                    format!(
                        "release {} already exists in this pipeline (or its build was already released)",
                        release.version
                    )
                })
            })?;
        // One by one: batch inserts do not compile on the MultiConnection.
        for artifact in release_artifacts {
            diesel::insert_into(artifacts::table)
                .values((
                    artifacts::release_id.eq(id),
                    artifacts::path.eq(&artifact.path),
                    artifacts::sha256.eq(&artifact.sha256),
                    artifacts::size.eq(artifact.size),
                    artifacts::created_at.eq(created_at),
                ))
                .execute(conn)
                .map_err(|e| {
                    StorageError::from(e)
                        .conflict_as(|| format!("artifact {} is listed twice", artifact.path))
                })?;
        }
        Ok(ReleaseRow {
            id,
            pipeline_id: release.pipeline_id,
            version: release.version.clone(),
            build_id: release.build_id,
            revision_id: release.revision_id,
            commit_sha: release.commit_sha.clone(),
            branch: release.branch.clone(),
            message: release.message.clone(),
            author: release.author.clone(),
            fixes_release_id: release.fixes_release_id,
            created_at,
        })
    })
}

pub fn find_release(
    conn: &mut DbConn,
    pipeline_id: i64,
    version: &str,
) -> Result<Option<ReleaseRow>, StorageError> {
    Ok(releases::table
        .filter(releases::pipeline_id.eq(pipeline_id))
        .filter(releases::version.eq(version))
        .select(ReleaseRow::as_select())
        .first(conn)
        .optional()?)
}

/// A release by id, if it exists.
pub fn find_release_by_id(conn: &mut DbConn, id: i64) -> Result<Option<ReleaseRow>, StorageError> {
    Ok(releases::table
        .find(id)
        .select(ReleaseRow::as_select())
        .first(conn)
        .optional()?)
}

/// The releases of `ids` (those that exist), in one query.
pub fn find_releases_by_ids(
    conn: &mut DbConn,
    ids: &[i64],
) -> Result<Vec<ReleaseRow>, StorageError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(releases::table
        .filter(releases::id.eq_any(ids))
        .select(ReleaseRow::as_select())
        .load(conn)?)
}

/// The artifacts of a release, by path.
pub fn list_artifacts(
    conn: &mut DbConn,
    release_id: i64,
) -> Result<Vec<ArtifactRow>, StorageError> {
    Ok(artifacts::table
        .filter(artifacts::release_id.eq(release_id))
        .order(artifacts::path.asc())
        .select(ArtifactRow::as_select())
        .load(conn)?)
}

/// The artifacts of these releases (one query), by release and path.
pub fn artifacts_for_releases(
    conn: &mut DbConn,
    release_ids: &[i64],
) -> Result<Vec<ArtifactRow>, StorageError> {
    if release_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(artifacts::table
        .filter(artifacts::release_id.eq_any(release_ids))
        .order((artifacts::release_id.asc(), artifacts::path.asc()))
        .select(ArtifactRow::as_select())
        .load(conn)?)
}

/// A page of a pipeline's releases, newest first (`id` descending), at most
/// `filter.limit` of them. The next page is `before = last id of this page`.
pub fn list_releases(
    conn: &mut DbConn,
    pipeline_id: i64,
    filter: &ReleaseFilter,
) -> Result<Vec<ReleaseRow>, StorageError> {
    let mut query = releases::table
        .filter(releases::pipeline_id.eq(pipeline_id))
        .select(ReleaseRow::as_select())
        .into_boxed();
    if let Some(before) = filter.before {
        query = query.filter(releases::id.lt(before));
    }
    if let Some(branch) = &filter.branch {
        query = query.filter(releases::branch.eq(branch.clone()));
    }
    if let Some(state) = &filter.state {
        // `pipeline_id` is redundant here but lets the planner seek the
        // (pipeline_id, state, release_id) index for each release.
        let in_state = deployments::table
            .filter(deployments::pipeline_id.eq(pipeline_id))
            .filter(deployments::release_id.eq(releases::id))
            .filter(deployments::state.eq(state.as_str()));
        query = match &filter.stage {
            Some(stage) => query.filter(exists(
                in_state.filter(deployments::stage.eq(stage.clone())),
            )),
            None => query.filter(exists(in_state)),
        };
    }
    Ok(query
        .order(releases::id.desc())
        .limit(filter.limit.max(0))
        .load(conn)?)
}

/// The newest `limit` releases of a pipeline, for the board.
pub fn board_releases(
    conn: &mut DbConn,
    pipeline_id: i64,
    limit: i64,
) -> Result<Vec<ReleaseRow>, StorageError> {
    list_releases(
        conn,
        pipeline_id,
        &ReleaseFilter {
            limit,
            ..ReleaseFilter::default()
        },
    )
}

/// Every deployment of these releases in one query (oldest first), so a page
/// showing N releases does not run N queries.
pub fn deployments_for_releases(
    conn: &mut DbConn,
    release_ids: &[i64],
) -> Result<Vec<DeploymentRow>, StorageError> {
    if release_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(deployments::table
        .filter(deployments::release_id.eq_any(release_ids))
        .order(deployments::id.asc())
        .select(DeploymentRow::as_select())
        .load(conn)?)
}
