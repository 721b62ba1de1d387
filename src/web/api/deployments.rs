//! Deployments over the API: deploy a release to a stage
//! (`POST /api/v1/pipelines/{p}/stages/{s}/deployments`), get one with its
//! tasks, tail its log, cancel it, redeploy it.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::builds::{LogQuery, TaskRunDto, log_chunk_dtos};
use super::dto::utc;
use crate::domain::authz::Action;
use crate::engine::deploy::requests::{
    self, DeployOutcome, DeployRequest, DeploymentDetail, DeploymentLog,
};
use crate::web::auth::CurrentUser;
use crate::web::{ApiError, State, WebError, urls};

/// `/api/v1/deployments/{id}`
pub fn deployment_api_url(id: i64) -> String {
    format!("/api/v1/deployments/{id}")
}

/// `/api/v1/deployments/{id}/log`
pub fn log_api_url(id: i64) -> String {
    format!("/api/v1/deployments/{id}/log")
}

/// A deployment with its tasks.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentDetailDto {
    pub id: i64,
    pub pipeline: String,
    /// The release's version.
    pub release: String,
    pub stage: String,
    /// queued, waiting_for_approval, evaluating_gates, running, succeeded,
    /// failed, canceled, rejected, superseded or interrupted.
    pub state: String,
    /// manual, schedule, after:build, after:<stage>, redeploy or rollback.
    pub trigger: String,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// 1 for the first deployment of the release to the stage, then 2, 3…
    pub attempt: i32,
    /// Why it was asked for (a rollback's reason).
    pub reason: Option<String>,
    /// The version of the release that superseded it.
    pub superseded_by: Option<String>,
    /// Why it failed, was canceled or interrupted.
    pub error: Option<String>,
    pub tasks: Vec<TaskRunDto>,
    /// Sign-offs (the approvals issue fills them).
    #[schema(value_type = Vec<Object>)]
    pub approvals: Vec<serde_json::Value>,
    /// Every gate sample of the deployment, oldest first: time, duration,
    /// request (secrets masked as `***`), value, verdict, truncated body.
    #[schema(value_type = Vec<super::gates::GateSampleDto>)]
    pub gate_samples: Vec<serde_json::Value>,
    /// Its gate runs (before and after the stage), each with its checks,
    /// their last result and recent samples.
    pub gates: Vec<super::gates::GateRunDto>,
    /// Its log (`?after=SEQ` for what follows).
    pub log_url: String,
    /// Its page.
    pub url: String,
}

impl From<&DeploymentDetail> for DeploymentDetailDto {
    fn from(detail: &DeploymentDetail) -> Self {
        let d = &detail.deployment;
        DeploymentDetailDto {
            id: d.id,
            pipeline: detail.pipeline.clone(),
            release: detail.release.clone(),
            stage: d.stage.clone(),
            state: d.state.as_str().to_string(),
            trigger: d.trigger.clone(),
            requested_by: d.requested_by.clone(),
            created_at: utc(&d.created_at),
            started_at: d.started_at.as_ref().map(utc),
            finished_at: d.finished_at.as_ref().map(utc),
            attempt: d.attempt,
            reason: d.reason.clone(),
            superseded_by: detail.superseded_by.clone(),
            error: d.error.clone(),
            tasks: detail.tasks.iter().map(TaskRunDto::from).collect(),
            approvals: Vec::new(),
            gate_samples: Vec::new(),
            gates: Vec::new(),
            log_url: log_api_url(d.id),
            url: urls::deployment(&detail.pipeline, &detail.release, d.id),
        }
    }
}

/// What to deploy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    /// The release's version, e.g. `1.0.7`.
    pub release: String,
    /// Deploy a release older than the one in the stage (needs `reason` and
    /// the release manager role).
    #[serde(default)]
    pub rollback: bool,
    /// Why; required for a rollback.
    pub reason: Option<String>,
}

/// A few lines of a deployment's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentLogChunkDto {
    /// Increasing over the deployment; pass the last one as `after`.
    pub seq: i64,
    /// The task it belongs to, and its position (from 0).
    pub task: String,
    pub task_position: i32,
    /// `stdout`, `stderr` or `system` (Slipway's own lines).
    pub stream: String,
    /// Whole lines, each ending in a newline; secret values are `***`.
    pub text: String,
    pub created_at: DateTime<Utc>,
}

/// A deployment's log after a cursor.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentLogDto {
    pub deployment: i64,
    /// The deployment's state when the chunks were read.
    pub state: String,
    /// The deployment ended: once `chunks` is empty, nothing more will come.
    pub finished: bool,
    pub chunks: Vec<DeploymentLogChunkDto>,
    /// The `after` to ask with next.
    pub next_after: i64,
}

impl DeploymentLogDto {
    fn new(log: DeploymentLog, after: i64) -> Self {
        let next_after = log.chunks.last().map(|c| c.seq).unwrap_or(after);
        DeploymentLogDto {
            deployment: log.deployment.id,
            state: log.deployment.state.as_str().to_string(),
            finished: log.finished,
            chunks: log_chunk_dtos!(log.chunks, DeploymentLogChunkDto),
            next_after,
        }
    }
}

/// Routes below `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/pipelines/{pipeline}/stages/{stage}/deployments",
        web::post().to(deploy),
    )
    .route("/deployments/{id}", web::get().to(get))
    .route("/deployments/{id}/log", web::get().to(log))
    .route("/deployments/{id}/cancel", web::post().to(cancel))
    .route("/deployments/{id}/redeploy", web::post().to(redeploy));
}

/// Answers a deploy request: 202 with a new deployment, or 200 with the one
/// already waiting or running for that release and stage.
async fn answer(state: &State, outcome: DeployOutcome) -> Result<HttpResponse, ApiError> {
    let id = outcome.deployment_id();
    let detail = state
        .with_conn::<_, ApiError, _>(move |conn| Ok(requests::deployment_detail(conn, id)?))
        .await?;
    let mut response = match outcome {
        DeployOutcome::Queued(_) => HttpResponse::Accepted(),
        DeployOutcome::AlreadyThere { .. } => HttpResponse::Ok(),
    };
    Ok(response
        .insert_header(("Location", deployment_api_url(id)))
        .json(DeploymentDetailDto::from(&detail)))
}

/// Deploys a release to a stage. Needs the deployer role (a rollback: the
/// release manager role and a reason). The stage rules answer 409 with the
/// reason: the release has not succeeded in the previous stage, or it is
/// older than the one in the stage. When the release waits or runs in the
/// stage already, that deployment is returned with 200.
#[utoipa::path(post, path = "/api/v1/pipelines/{pipeline}/stages/{stage}/deployments", tag = "deployments",
    params(("pipeline" = String, Path, description = "pipeline name"), ("stage" = String, Path, description = "stage name")),
    request_body = DeployBody,
    responses(
        (status = 202, body = DeploymentDetailDto, description = "queued"),
        (status = 200, body = DeploymentDetailDto, description = "the release waits or runs in the stage already"),
        (status = 400, body = crate::web::error::ErrorBody),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody, description = "unknown pipeline, stage or release"),
        (status = 409, body = crate::web::error::ErrorBody, description = "a stage rule refuses it")),
    security(("bearer" = [])))]
pub async fn deploy(
    state: State,
    user: CurrentUser,
    path: web::Path<(String, String)>,
    body: web::Json<DeployBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let action = if body.rollback {
        Action::Rollback
    } else {
        Action::Deploy
    };
    let actor = user.require_action(action)?.username.clone();
    let (pipeline, stage) = path.into_inner();
    if body.release.trim().is_empty() {
        return Err(WebError::BadRequest("`release` must name a version".into()).into());
    }
    let outcome = state
        .engine
        .deploy(DeployRequest {
            pipeline,
            release: body.release.trim().to_string(),
            stage,
            trigger: if body.rollback { "rollback" } else { "manual" }.into(),
            requested_by: actor,
            reason: body.reason,
            operation: None,
            override_reason: None,
        })
        .await?;
    answer(&state, outcome).await
}

/// One deployment with its tasks, its gate runs and every gate sample.
#[utoipa::path(get, path = "/api/v1/deployments/{id}", tag = "deployments",
    params(("id" = i64, Path, description = "deployment id")),
    responses(
        (status = 200, body = DeploymentDetailDto),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    state: State,
    user: CurrentUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    user.require_action(Action::Read)?;
    let id = path.into_inner();
    let (detail, samples, gates, approvals) = state
        .with_conn::<_, ApiError, _>(move |conn| {
            Ok((
                requests::deployment_detail(conn, id)?,
                super::gates::deployment_samples(conn, id)?,
                super::gates::deployment_runs(conn, id)?,
                crate::engine::deploy::approvals::of_deployment(conn, id)?,
            ))
        })
        .await?;
    let mut dto = DeploymentDetailDto::from(&detail);
    dto.gate_samples = samples;
    dto.gates = gates;
    dto.approvals = approvals
        .iter()
        .map(|a| {
            serde_json::to_value(super::approvals::ApprovalDto::new(a, None)).unwrap_or_default()
        })
        .collect();
    Ok(HttpResponse::Ok().json(dto))
}

/// A deployment's log after a cursor, for live tailing: ask again with
/// `after=next_after` until `finished` is true and no chunk comes.
#[utoipa::path(get, path = "/api/v1/deployments/{id}/log", tag = "deployments",
    params(("id" = i64, Path, description = "deployment id"), LogQuery),
    responses(
        (status = 200, body = DeploymentLogDto),
        (status = 400, body = crate::web::error::ErrorBody),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn log(
    state: State,
    user: CurrentUser,
    path: web::Path<i64>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require_action(Action::Read)?;
    let id = path.into_inner();
    let (after, limit) = query.window()?;
    let log = state
        .with_conn::<_, ApiError, _>(move |conn| {
            Ok(requests::deployment_log(conn, id, after, limit)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(DeploymentLogDto::new(log, after)))
}

/// Cancels a waiting or running deployment (its running task is stopped).
/// Needs the deployer role; an ended deployment is a 409.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/cancel", tag = "deployments",
    params(("id" = i64, Path, description = "deployment id")),
    responses(
        (status = 200, body = DeploymentDetailDto),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody),
        (status = 409, body = crate::web::error::ErrorBody, description = "the deployment has ended")),
    security(("bearer" = [])))]
pub async fn cancel(
    state: State,
    user: CurrentUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let actor = user
        .require_action(Action::CancelDeployment)?
        .username
        .clone();
    let id = path.into_inner();
    state.engine.cancel_deployment(id, &actor).await?;
    let detail = state
        .with_conn::<_, ApiError, _>(move |conn| Ok(requests::deployment_detail(conn, id)?))
        .await?;
    Ok(HttpResponse::Ok().json(DeploymentDetailDto::from(&detail)))
}

/// Redeploys: a new attempt of the deployment's release in its stage
/// (trigger `redeploy`), under the stage rules. Needs the deployer role.
#[utoipa::path(post, path = "/api/v1/deployments/{id}/redeploy", tag = "deployments",
    params(("id" = i64, Path, description = "deployment id")),
    responses(
        (status = 202, body = DeploymentDetailDto, description = "the new attempt, queued"),
        (status = 200, body = DeploymentDetailDto, description = "the release waits or runs in the stage already"),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody),
        (status = 409, body = crate::web::error::ErrorBody, description = "a stage rule refuses it")),
    security(("bearer" = [])))]
pub async fn redeploy(
    state: State,
    user: CurrentUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let actor = user.require_action(Action::Deploy)?.username.clone();
    let id = path.into_inner();
    let outcome = state.engine.redeploy(id, &actor).await?;
    answer(&state, outcome).await
}
