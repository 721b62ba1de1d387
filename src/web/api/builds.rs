//! `/api/v1/pipelines/{pipeline}/builds`: queue a build of a branch or
//! commit, list and get builds with their tasks, tail a build's log, cancel.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::dto::utc;
use crate::domain::authz::Action;
use crate::engine::builds::{self, BuildDetail, BuildLog, BuildRequest, QueueOutcome};
use crate::storage::TaskRunRow;
use crate::web::auth::CurrentUser;
use crate::web::{ApiError, State, WebError, urls};

/// One task of a build.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskRunDto {
    pub name: String,
    /// `shell` (builds run shell tasks only).
    pub kind: String,
    /// pending, running, succeeded, failed, canceled, skipped or interrupted.
    pub state: String,
    pub exit_code: Option<i32>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<&TaskRunRow> for TaskRunDto {
    fn from(t: &TaskRunRow) -> Self {
        TaskRunDto {
            name: t.name.clone(),
            kind: t.kind.clone(),
            state: t.state.as_str().to_string(),
            exit_code: t.exit_code,
            started_at: t.started_at.as_ref().map(utc),
            finished_at: t.finished_at.as_ref().map(utc),
        }
    }
}

/// A build.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildDto {
    pub pipeline: String,
    pub number: i64,
    /// queued, running, succeeded, failed, canceled or interrupted.
    pub state: String,
    pub branch: Option<String>,
    /// Known once the build checked it out (or when one was asked for).
    pub commit: Option<String>,
    pub message: Option<String>,
    pub author: Option<String>,
    /// `webhook:github`, `poll`, `manual`, `api`, …
    pub trigger: String,
    pub requested_by: String,
    /// Why it failed, was canceled or interrupted.
    pub error: Option<String>,
    /// The version of the release it made.
    pub release: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub tasks: Vec<TaskRunDto>,
    /// The build's page.
    pub url: String,
}

impl From<&BuildDetail> for BuildDto {
    fn from(d: &BuildDetail) -> Self {
        let b = &d.build;
        BuildDto {
            pipeline: d.pipeline.clone(),
            number: b.number,
            state: b.state.as_str().to_string(),
            branch: b.branch.clone(),
            commit: b.commit_sha.clone(),
            message: b.message.clone(),
            author: b.author.clone(),
            trigger: b.trigger.clone(),
            requested_by: b.requested_by.clone(),
            error: b.error.clone(),
            release: d.release.clone(),
            created_at: utc(&b.created_at),
            started_at: b.started_at.as_ref().map(utc),
            finished_at: b.finished_at.as_ref().map(utc),
            tasks: d.tasks.iter().map(TaskRunDto::from).collect(),
            url: urls::build(&d.pipeline, b.number),
        }
    }
}

/// `/api/v1/pipelines/{pipeline}/builds/{number}` (pipeline names need no escaping).
pub fn build_url(pipeline: &str, number: i64) -> String {
    format!("/api/v1/pipelines/{pipeline}/builds/{number}")
}

/// A page of builds, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildListDto {
    pub builds: Vec<BuildDto>,
    /// The URL of the next (older) page, if there is one.
    pub next: Option<String>,
}

/// What to build; both optional (default: the head of the pipeline's branch).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueBody {
    /// A branch (default: the pipeline's `source.branch`).
    pub branch: Option<String>,
    /// A commit id, 4 to 64 hex digits (default: the branch's head).
    pub commit: Option<String>,
}

/// Query of the build list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Builds numbered below this (the `next` link carries it).
    pub before: Option<i64>,
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
}

/// Query of the log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only chunks with a larger `seq` (default 0: from the start).
    pub after: Option<i64>,
    /// At most this many chunks, 1 to 1000 (default 500).
    pub limit: Option<i64>,
}

impl LogQuery {
    /// The cursor and the page size asked for (build and deployment logs).
    pub fn window(&self) -> Result<(i64, i64), WebError> {
        let after = self.after.unwrap_or(0).max(0);
        let limit = self.limit.unwrap_or(500);
        if !(1..=1000).contains(&limit) {
            return Err(WebError::BadRequest(
                "`limit` must be between 1 and 1000".into(),
            ));
        }
        Ok((after, limit))
    }
}

/// A few lines of a build's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogChunkDto {
    /// Increasing over the build; pass the last one as `after`.
    pub seq: i64,
    /// The task it belongs to.
    pub task: String,
    /// The task's position in the build (the build page's live log files
    /// each chunk under its task by this).
    pub task_position: i32,
    /// `stdout`, `stderr` or `system` (Slipway's own lines).
    pub stream: String,
    /// Whole lines, each ending in a newline; secret values are `***`.
    pub text: String,
    pub created_at: DateTime<Utc>,
}

/// A build's log after a cursor.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildLogDto {
    pub pipeline: String,
    pub number: i64,
    /// The build's state when the chunks were read.
    pub state: String,
    /// The build ended: once `chunks` is empty, nothing more will come.
    pub finished: bool,
    pub chunks: Vec<LogChunkDto>,
    /// The `after` to ask with next.
    pub next_after: i64,
}

/// A log's chunks (the engine's build and deployment chunks have the same
/// fields) as `$dto`: `LogChunkDto` or `DeploymentLogChunkDto`.
macro_rules! log_chunk_dtos {
    ($chunks:expr, $dto:ident) => {
        $chunks
            .into_iter()
            .map(|c| $dto {
                seq: c.seq,
                task: c.task,
                task_position: c.task_position,
                stream: c.stream,
                text: c.text,
                created_at: $crate::web::api::dto::utc(&c.created_at),
            })
            .collect()
    };
}
pub(super) use log_chunk_dtos;

impl BuildLogDto {
    fn new(pipeline: &str, log: BuildLog, after: i64) -> Self {
        let next_after = log.chunks.last().map(|c| c.seq).unwrap_or(after);
        BuildLogDto {
            pipeline: pipeline.to_string(),
            number: log.build.number,
            state: log.build.state.as_str().to_string(),
            finished: log.finished,
            chunks: log_chunk_dtos!(log.chunks, LogChunkDto),
            next_after,
        }
    }
}

/// Routes below `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/pipelines/{pipeline}/builds", web::get().to(list))
        .route("/pipelines/{pipeline}/builds", web::post().to(queue))
        .route("/pipelines/{pipeline}/builds/{number}", web::get().to(get))
        .route(
            "/pipelines/{pipeline}/builds/{number}/log",
            web::get().to(log),
        )
        .route(
            "/pipelines/{pipeline}/builds/{number}/cancel",
            web::post().to(cancel),
        );
}

/// Queues a build of a branch or a commit. Needs the deployer role.
#[utoipa::path(post, path = "/api/v1/pipelines/{pipeline}/builds", tag = "builds",
    params(("pipeline" = String, Path, description = "pipeline name")),
    request_body(content = QueueBody, description = "optional; `{}` builds the head of the pipeline's branch"),
    responses(
        (status = 202, body = BuildDto, description = "queued"),
        (status = 400, body = crate::web::error::ErrorBody),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody),
        (status = 422, body = crate::web::error::ErrorBody, description = "malformed branch or commit")),
    security(("bearer" = [])))]
pub async fn queue(
    state: State,
    user: CurrentUser,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let actor = user.require_action(Action::Build)?.username.clone();
    let pipeline = path.into_inner();
    let body: QueueBody = if body.iter().all(u8::is_ascii_whitespace) {
        QueueBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| WebError::BadRequest(format!("The body is not valid JSON: {e}")))?
    };
    let request = BuildRequest {
        pipeline: pipeline.clone(),
        branch: body.branch,
        commit: body.commit,
        trigger: "api".into(),
        requested_by: actor,
    };
    let detail = state
        .with_conn::<_, ApiError, _>(move |conn| match builds::queue_build(conn, &request)? {
            QueueOutcome::Queued(build) => Ok(BuildDetail::queued(&pipeline, *build)),
            QueueOutcome::Filtered { branch } => Err(WebError::Unprocessable(format!(
                "The branch filter of {pipeline} excludes `{branch}`."
            ))
            .into()),
        })
        .await?;
    state.engine.notify();
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", build_url(&detail.pipeline, detail.build.number)))
        .json(BuildDto::from(&detail)))
}

/// Builds of a pipeline, newest first.
#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/builds", tag = "builds",
    params(("pipeline" = String, Path, description = "pipeline name"), ListQuery),
    responses(
        (status = 200, body = BuildListDto),
        (status = 400, body = crate::web::error::ErrorBody),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    state: State,
    user: CurrentUser,
    path: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require_action(Action::Read)?;
    let pipeline = path.into_inner();
    let query = query.into_inner();
    let limit = super::page_size(query.limit)?;
    let name = pipeline.clone();
    let mut page = state
        .with_conn::<_, ApiError, _>(move |conn| {
            Ok(builds::list_builds(conn, &name, query.before, limit + 1)?)
        })
        .await?;
    let more = page.len() as i64 > limit;
    page.truncate(usize::try_from(limit).unwrap_or_default());
    let next = if more {
        page.last().map(|d| {
            let before = d.build.number.to_string();
            let limit = limit.to_string();
            format!(
                "/api/v1/pipelines/{pipeline}/builds{}",
                urls::query(&[("before", &before), ("limit", &limit)])
            )
        })
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(BuildListDto {
        builds: page.iter().map(BuildDto::from).collect(),
        next,
    }))
}

/// One build with its tasks.
#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/builds/{number}", tag = "builds",
    params(("pipeline" = String, Path, description = "pipeline name"), ("number" = i64, Path, description = "build number")),
    responses(
        (status = 200, body = BuildDto),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    state: State,
    user: CurrentUser,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, ApiError> {
    user.require_action(Action::Read)?;
    let (pipeline, number) = path.into_inner();
    let detail = state
        .with_conn::<_, ApiError, _>(move |conn| Ok(builds::build_detail(conn, &pipeline, number)?))
        .await?;
    Ok(HttpResponse::Ok().json(BuildDto::from(&detail)))
}

/// A build's log after a cursor, for live tailing: ask again with
/// `after=next_after` until `finished` is true and no chunk comes.
#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/builds/{number}/log", tag = "builds",
    params(("pipeline" = String, Path, description = "pipeline name"), ("number" = i64, Path, description = "build number"), LogQuery),
    responses(
        (status = 200, body = BuildLogDto),
        (status = 400, body = crate::web::error::ErrorBody),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn log(
    state: State,
    user: CurrentUser,
    path: web::Path<(String, i64)>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    user.require_action(Action::Read)?;
    let (pipeline, number) = path.into_inner();
    let (after, limit) = query.window()?;
    let name = pipeline.clone();
    let log = state
        .with_conn::<_, ApiError, _>(move |conn| {
            Ok(builds::build_log(conn, &name, number, after, limit)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(BuildLogDto::new(&pipeline, log, after)))
}

/// Cancels a queued or running build (its running task is stopped). Needs
/// the deployer role; a finished build is a 409.
#[utoipa::path(post, path = "/api/v1/pipelines/{pipeline}/builds/{number}/cancel", tag = "builds",
    params(("pipeline" = String, Path, description = "pipeline name"), ("number" = i64, Path, description = "build number")),
    responses(
        (status = 200, body = BuildDto),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody),
        (status = 409, body = crate::web::error::ErrorBody, description = "the build has finished")),
    security(("bearer" = [])))]
pub async fn cancel(
    state: State,
    user: CurrentUser,
    path: web::Path<(String, i64)>,
) -> Result<HttpResponse, ApiError> {
    let actor = user.require_action(Action::Build)?.username.clone();
    let (pipeline, number) = path.into_inner();
    let detail = state
        .with_conn::<_, ApiError, _>(move |conn| {
            let build = builds::find_build(conn, &pipeline, number)?;
            builds::cancel_build(conn, build.id, &actor)?;
            Ok(builds::build_detail(conn, &pipeline, number)?)
        })
        .await?;
    state.engine.signal_cancel(detail.build.id);
    state.engine.notify();
    Ok(HttpResponse::Ok().json(BuildDto::from(&detail)))
}
