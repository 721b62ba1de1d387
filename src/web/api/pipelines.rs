//! `/api/v1/pipelines`: list, get, import (YAML body), export.

use actix_web::{HttpRequest, HttpResponse, web};

use super::dto::{PipelineDto, PipelineSummaryDto, SourceDto, StageDto, StageSummaryDto};
use crate::domain::authz::Action;
use crate::engine::pipelines::{self, ImportOutcome};
use crate::storage;
use crate::web::auth::CurrentUser;
use crate::web::{ApiError, State, WebError, urls};

/// All pipelines.
#[utoipa::path(get, path = "/api/v1/pipelines", tag = "pipelines",
    responses((status = 200, body = [PipelineSummaryDto])))]
pub async fn list(state: State) -> Result<HttpResponse, ApiError> {
    let list = state
        .with_conn::<_, ApiError, _>(|conn| {
            let pipelines = storage::list_pipelines(conn)?;
            let ids: Vec<i64> = pipelines.iter().map(|p| p.id).collect();
            let stages = storage::stages_of_pipelines(conn, &ids)?;
            Ok(pipelines
                .into_iter()
                .map(|p| PipelineSummaryDto {
                    stages: stages
                        .iter()
                        .filter(|s| s.pipeline_id == p.id)
                        .map(|s| StageSummaryDto {
                            name: s.name.clone(),
                            trigger: s.trigger_kind.clone(),
                        })
                        .collect(),
                    url: urls::pipeline(&p.name),
                    revision: p.current_revision,
                    created_at: p.created_at.and_utc(),
                    updated_at: p.updated_at.and_utc(),
                    name: p.name,
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(HttpResponse::Ok().json(list))
}

/// One pipeline with its stages.
#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}", tag = "pipelines",
    params(("pipeline" = String, Path, description = "pipeline name")),
    responses((status = 200, body = PipelineDto), (status = 404, body = crate::web::error::ErrorBody)))]
pub async fn get(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let dto = state
        .with_conn::<_, ApiError, _>(move |conn| {
            let loaded = pipelines::load(conn, &name)?;
            let row = crate::engine::pipelines::find(conn, &name)?;
            let mut live = crate::engine::deploy::live::live_of(
                conn,
                loaded.id,
                &loaded.name,
                &loaded.definition,
            )?;
            let def = loaded.definition;
            Ok(PipelineDto {
                url: urls::pipeline(&loaded.name),
                description: def.description.clone(),
                revision: loaded.revision,
                source: SourceDto {
                    repo: def.source.repo.clone(),
                    branch: def.source.branch.clone(),
                },
                version_template: def.version.as_str().to_string(),
                stages: def
                    .stages
                    .iter()
                    .map(|s| StageDto {
                        live: live
                            .remove(s.name.as_str())
                            .map(|l| crate::web::api::dto::LiveDto {
                                trigger: l.trigger().to_string(),
                                release: l.version,
                                since: l.since.map(|t| t.and_utc()),
                                deployment_id: l.deployment.map(|d| d.id),
                                replaced: l.replaced,
                            }),
                        name: s.name.as_str().to_string(),
                        trigger: match s.trigger {
                            crate::domain::Trigger::Manual => "manual",
                            crate::domain::Trigger::After { .. } => "after",
                            crate::domain::Trigger::Schedule(_) => "schedule",
                        }
                        .to_string(),
                    })
                    .collect(),
                created_at: row.created_at.and_utc(),
                updated_at: row.updated_at.and_utc(),
                name: loaded.name,
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(dto))
}

/// Imports a pipeline definition (the YAML document is the request body).
/// Creates the pipeline (201), stores a new revision (200), or reports that
/// nothing changed (200, `unchanged: true`). Needs the release manager role.
#[utoipa::path(post, path = "/api/v1/pipelines", tag = "pipelines",
    request_body(content = String, content_type = "application/yaml", description = "the pipeline definition"),
    responses(
        (status = 201, body = ImportOutcome, description = "created"),
        (status = 200, body = ImportOutcome, description = "new revision, or unchanged"),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody),
        (status = 413, body = crate::web::error::ErrorBody, description = "the definition is larger than 256 KiB"),
        (status = 422, body = crate::web::error::ErrorBody, description = "the definition is invalid; the message names line, column and field")),
    security(("bearer" = [])))]
pub async fn import(
    state: State,
    user: CurrentUser,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let actor = user
        .require_action(Action::ImportPipeline)?
        .username
        .clone();
    let yaml = std::str::from_utf8(&body)
        .map_err(|_| WebError::BadRequest("The request body must be UTF-8 YAML.".into()))?
        .to_string();
    if yaml.trim().is_empty() {
        return Err(WebError::BadRequest(
            "The request body must be a pipeline definition in YAML.".into(),
        )
        .into());
    }
    let comment = req
        .headers()
        .get("X-Slipway-Comment")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // Parsing is pure: do it before taking a connection, off the workers.
    let definition = pipelines::parse_bounded(yaml, "request body").await?;
    let outcome = state
        .with_conn::<_, ApiError, _>(move |conn| {
            Ok(pipelines::import(
                conn,
                definition,
                None,
                &actor,
                comment.as_deref(),
            )?)
        })
        .await?;
    let mut response = if outcome.created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    Ok(response
        .insert_header((
            "Location",
            format!("/api/v1/pipelines/{}", outcome.pipeline),
        ))
        .json(outcome))
}

/// The current definition as canonical YAML.
#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/export", tag = "pipelines",
    params(("pipeline" = String, Path, description = "pipeline name")),
    responses((status = 200, content_type = "application/yaml", body = String), (status = 404, body = crate::web::error::ErrorBody)))]
pub async fn export(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let yaml = state
        .with_conn::<_, ApiError, _>(move |conn| Ok(pipelines::export(conn, &name)?))
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("application/yaml; charset=utf-8")
        .body(yaml))
}
