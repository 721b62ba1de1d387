//! `/api/v1/pipelines/{p}/releases`: list (keyset-paginated) and get.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::dto::{ReleaseDto, ReleaseListDto};
use crate::storage;
use crate::web::pages::releases::{HistoryQuery, release_filter};
use crate::web::{ApiError, State, urls};

/// Query of the release list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Releases older than this release id (the `next` link carries it).
    pub before: Option<i64>,
    pub branch: Option<String>,
    /// Releases with a deployment in this state.
    pub state: Option<String>,
    /// With `state`: in this stage.
    pub stage: Option<String>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
}

/// Releases of a pipeline, newest first.
#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/releases", tag = "releases",
    params(("pipeline" = String, Path, description = "pipeline name"), ListQuery),
    responses((status = 200, body = ReleaseListDto), (status = 400, body = crate::web::error::ErrorBody), (status = 404, body = crate::web::error::ErrorBody)))]
pub async fn list(
    state: State,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let query = query.into_inner();
    let limit = super::page_size(query.limit)?;
    let dto = state
        .with_conn::<_, ApiError, _>(move |conn| {
            let pipeline = crate::engine::pipelines::find(conn, &name)?;
            let stages = storage::stages_of_pipelines(conn, &[pipeline.id])?;
            let history = HistoryQuery {
                before: query.before,
                branch: query.branch.clone(),
                state: query.state.clone(),
                stage: query.stage.clone(),
            };
            let filter = release_filter(&history, &stages, limit + 1)?;
            let mut releases = storage::list_releases(conn, pipeline.id, &filter)?;
            let more = releases.len() as i64 > limit;
            releases.truncate(limit as usize);
            let ids: Vec<i64> = releases.iter().map(|r| r.id).collect();
            let deployments = storage::deployments_for_releases(conn, &ids)?;
            let artifacts = storage::artifacts_for_releases(conn, &ids)?;
            let next = if more {
                releases.last().map(|r| {
                    let before = r.id.to_string();
                    let limit = limit.to_string();
                    format!(
                        "/api/v1/pipelines/{}/releases{}",
                        pipeline.name,
                        urls::query(&[
                            ("before", &before),
                            ("branch", filter.branch.as_deref().unwrap_or("")),
                            ("state", filter.state.map(|s| s.as_str()).unwrap_or("")),
                            ("stage", filter.stage.as_deref().unwrap_or("")),
                            ("limit", &limit),
                        ])
                    )
                })
            } else {
                None
            };
            let releases = releases
                .iter()
                .map(|r| {
                    let own_artifacts: Vec<_> = artifacts
                        .iter()
                        .filter(|a| a.release_id == r.id)
                        .cloned()
                        .collect();
                    let own_deployments: Vec<_> = deployments
                        .iter()
                        .filter(|d| d.release_id == r.id)
                        .collect();
                    ReleaseDto::new(&pipeline.name, r, &own_artifacts, &own_deployments, None)
                })
                .collect();
            Ok(ReleaseListDto { releases, next })
        })
        .await?;
    Ok(HttpResponse::Ok().json(dto))
}

/// One release with its artifacts and deployments.
#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/releases/{version}", tag = "releases",
    params(("pipeline" = String, Path, description = "pipeline name"), ("version" = String, Path, description = "release version")),
    responses((status = 200, body = ReleaseDto), (status = 404, body = crate::web::error::ErrorBody)))]
pub async fn get(
    state: State,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (name, version) = path.into_inner();
    let dto = state
        .with_conn::<_, ApiError, _>(move |conn| {
            let pipeline = crate::engine::pipelines::find(conn, &name)?;
            let release = crate::engine::pipelines::find_release(conn, &pipeline, &version)?;
            let artifacts = storage::list_artifacts(conn, release.id)?;
            let deployments = storage::deployments_of_release(conn, release.id)?;
            let fixes = match release.fixes_release_id {
                Some(id) => storage::find_release_by_id(conn, id)?.map(|r| r.version),
                None => None,
            };
            let refs: Vec<_> = deployments.iter().collect();
            Ok(ReleaseDto::new(
                &pipeline.name,
                &release,
                &artifacts,
                &refs,
                fixes,
            ))
        })
        .await?;
    Ok(HttpResponse::Ok().json(dto))
}
