//! Gates over the API: the runs being evaluated and the recent ones with
//! their checks and samples (`GET /api/v1/gates`), one run
//! (`GET /api/v1/gates/{id}`), re-evaluate now and bypass with a reason
//! (release manager), answer a run's question (the stage's approvers).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::dto::utc;
use crate::domain::GateRunState;
use crate::domain::authz::Action;
use crate::engine::deploy::gates::questions::{Answerer, GateAnswer};
use crate::engine::deploy::gates::{self, GateRunView};
use crate::storage::{DbConn, GateSampleRow};
use crate::web::auth::CurrentUser;
use crate::web::{ApiError, State, WebError, urls};

/// One sample of one check.
#[derive(Debug, Serialize, ToSchema)]
pub struct GateSampleDto {
    pub id: i64,
    pub gate_run_id: Option<i64>,
    /// `before` or `after` the stage.
    pub phase: String,
    pub check: String,
    pub round: i32,
    pub sampled_at: DateTime<Utc>,
    /// When the round was due.
    pub scheduled_at: Option<DateTime<Utc>>,
    pub duration_ms: i64,
    /// The request as sent, secrets masked.
    pub request: String,
    /// The status, the extracted number or the exit code (or why none).
    pub value: String,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    /// The answer, truncated to 2 KiB.
    pub body: Option<String>,
}

impl From<&GateSampleRow> for GateSampleDto {
    fn from(s: &GateSampleRow) -> Self {
        GateSampleDto {
            id: s.id,
            gate_run_id: s.gate_run_id,
            phase: s.phase.to_string(),
            check: s.check_name.clone(),
            round: s.round,
            sampled_at: utc(&s.sampled_at),
            scheduled_at: s.scheduled_at.as_ref().map(utc),
            duration_ms: s.duration_ms,
            request: s.request.clone(),
            value: s.value.clone(),
            verdict: s.verdict.clone(),
            body: s.body.clone(),
        }
    }
}

/// One check of a run with its last result and recent samples.
#[derive(Debug, Serialize, ToSchema)]
pub struct GateCheckDto {
    pub name: String,
    /// The last verdict (`None` before the first sample).
    pub verdict: Option<String>,
    pub value: Option<String>,
    pub samples: Vec<GateSampleDto>,
}

/// A gate run.
#[derive(Debug, Serialize, ToSchema)]
pub struct GateRunDto {
    pub id: i64,
    pub deployment_id: i64,
    pub pipeline: String,
    pub release: String,
    pub stage: String,
    /// `before` or `after` the stage.
    pub phase: String,
    /// `evaluating`, `passed`, `failed`, `bypassed` or `canceled`.
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub deadline_at: DateTime<Utc>,
    pub next_at: Option<DateTime<Utc>>,
    /// Seconds until the deadline (0 once reached or ended).
    pub time_left_seconds: i64,
    pub rounds: i32,
    pub green_since: Option<DateTime<Utc>>,
    /// Why it failed or was bypassed.
    pub reason: Option<String>,
    /// A question to the stage's approvers about inconclusive samples.
    pub question: Option<String>,
    pub finished_by: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
    pub checks: Vec<GateCheckDto>,
    /// Its page.
    pub url: String,
}

impl From<&GateRunView> for GateRunDto {
    fn from(v: &GateRunView) -> Self {
        let r = &v.run;
        let left = if r.state == GateRunState::Evaluating {
            (r.deadline_at - crate::storage::now()).num_seconds().max(0)
        } else {
            0
        };
        GateRunDto {
            id: r.id,
            deployment_id: r.deployment_id,
            pipeline: r.pipeline.clone(),
            release: r.release_version.clone(),
            stage: r.stage.clone(),
            phase: r.phase.to_string(),
            state: r.state.to_string(),
            started_at: utc(&r.started_at),
            deadline_at: utc(&r.deadline_at),
            next_at: r.next_at.as_ref().map(utc),
            time_left_seconds: left,
            rounds: r.round,
            green_since: r.green_since.as_ref().map(utc),
            reason: r.reason.clone(),
            question: r.question.clone(),
            finished_by: r.finished_by.clone(),
            finished_at: r.finished_at.as_ref().map(utc),
            checks: v
                .checks
                .iter()
                .map(|c| GateCheckDto {
                    name: c.name.clone(),
                    verdict: c.last.as_ref().and_then(|l| l.verdict.clone()),
                    value: c.last.as_ref().and_then(|l| l.value.clone()),
                    samples: c.samples.iter().map(GateSampleDto::from).collect(),
                })
                .collect(),
            url: urls::gate_run(r.id),
        }
    }
}

/// Gate runs being evaluated and the recent finished ones.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatesDto {
    pub evaluating: Vec<GateRunDto>,
    pub recent: Vec<GateRunDto>,
}

/// Why a gate is bypassed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BypassBody {
    pub reason: String,
}

/// An answer to a gate run's question.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// `continue` (keep sampling), `pass` (treat the gate as passed) or
    /// `fail` (fail the deployment).
    pub answer: String,
    /// Why; required to pass or fail.
    #[serde(default)]
    pub comment: String,
}

/// The gate runs of a deployment with their checks and recent samples, for
/// `GET /api/v1/deployments/{id}`.
pub fn deployment_runs(conn: &mut DbConn, deployment_id: i64) -> Result<Vec<GateRunDto>, ApiError> {
    Ok(
        crate::storage::gates::gate_runs_of_deployment(conn, deployment_id)?
            .into_iter()
            .map(|run| gates::run_view(conn, run).map(|v| GateRunDto::from(&v)))
            .collect::<Result<_, _>>()?,
    )
}

/// The samples of a deployment as JSON values, for `GET /api/v1/deployments/{id}`.
pub fn deployment_samples(
    conn: &mut DbConn,
    deployment_id: i64,
) -> Result<Vec<serde_json::Value>, ApiError> {
    Ok(gates::samples_of_deployment(conn, deployment_id)?
        .iter()
        .map(|s| serde_json::to_value(GateSampleDto::from(s)).unwrap_or_default())
        .collect())
}

/// Recent finished runs listed.
const RECENT: i64 = 20;

/// Gate runs being evaluated, and the 20 most recently finished, with their
/// checks and recent samples.
#[utoipa::path(get, path = "/api/v1/gates", tag = "gates",
    responses((status = 200, body = GatesDto), (status = 401, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(state: State, user: CurrentUser) -> Result<HttpResponse, ApiError> {
    user.require_action(Action::Read)?;
    let overview = state
        .with_conn::<_, ApiError, _>(|conn| Ok(gates::overview(conn, RECENT)?))
        .await?;
    Ok(HttpResponse::Ok().json(GatesDto {
        evaluating: overview.evaluating.iter().map(GateRunDto::from).collect(),
        recent: overview.recent.iter().map(GateRunDto::from).collect(),
    }))
}

/// One gate run.
#[utoipa::path(get, path = "/api/v1/gates/{id}", tag = "gates",
    params(("id" = i64, Path, description = "gate run id")),
    responses((status = 200, body = GateRunDto), (status = 404, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    state: State,
    user: CurrentUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    user.require_action(Action::Read)?;
    let id = path.into_inner();
    let view = state
        .with_conn::<_, ApiError, _>(move |conn| Ok(gates::gate_run(conn, id)?))
        .await?;
    Ok(HttpResponse::Ok().json(GateRunDto::from(&view)))
}

/// Samples a gate run now (release manager).
#[utoipa::path(post, path = "/api/v1/gates/{id}/reevaluate", tag = "gates",
    params(("id" = i64, Path, description = "gate run id")),
    responses((status = 202, description = "sampling now"), (status = 403, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody), (status = 409, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn reevaluate(
    state: State,
    user: CurrentUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let actor = user.require_action(Action::OverrideGates)?.username.clone();
    state
        .engine
        .gates()
        .reevaluate(path.into_inner(), &actor)
        .await?;
    Ok(HttpResponse::Accepted().finish())
}

/// Lets a gate run pass without its checks, with a recorded reason
/// (release manager, audited).
#[utoipa::path(post, path = "/api/v1/gates/{id}/bypass", tag = "gates",
    params(("id" = i64, Path, description = "gate run id")),
    request_body = BypassBody,
    responses((status = 200, body = GateRunDto), (status = 403, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody), (status = 409, body = crate::web::error::ErrorBody),
        (status = 422, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn bypass(
    state: State,
    user: CurrentUser,
    path: web::Path<i64>,
    body: web::Json<BypassBody>,
) -> Result<HttpResponse, ApiError> {
    let actor = user.require_action(Action::OverrideGates)?.username.clone();
    let id = path.into_inner();
    if body.reason.trim().is_empty() {
        return Err(WebError::Unprocessable("bypassing a gate needs a `reason`".into()).into());
    }
    state
        .engine
        .gates()
        .bypass(id, &actor, &body.reason)
        .await?;
    let view = state
        .with_conn::<_, ApiError, _>(move |conn| Ok(gates::gate_run(conn, id)?))
        .await?;
    Ok(HttpResponse::Ok().json(GateRunDto::from(&view)))
}

/// Answers the question a gate run asks about inconclusive samples
/// (`on_inconclusive: ask`): the stage's approvers (any release manager when
/// the stage has no approvals) answer `continue`, `pass` or `fail` (the last
/// two with a comment). Audited; a second answer to the same question is 409.
#[utoipa::path(post, path = "/api/v1/gates/{id}/answer", tag = "gates",
    params(("id" = i64, Path, description = "gate run id")),
    request_body = AnswerBody,
    responses((status = 200, body = GateRunDto), (status = 400, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody, description = "not an approver of the stage"),
        (status = 404, body = crate::web::error::ErrorBody),
        (status = 409, body = crate::web::error::ErrorBody, description = "no open question (answered already, or the run ended)"),
        (status = 422, body = crate::web::error::ErrorBody, description = "unknown answer, or no comment")),
    security(("bearer" = [])))]
pub async fn answer(
    state: State,
    user: CurrentUser,
    path: web::Path<i64>,
    body: web::Json<AnswerBody>,
) -> Result<HttpResponse, ApiError> {
    let user = user.require_action(Action::Read)?;
    let who = Answerer {
        username: user.username.clone(),
        role: user.role,
        groups: user.groups.clone(),
    };
    let id = path.into_inner();
    let answer = GateAnswer::parse(&body.answer)?;
    state
        .engine
        .gates()
        .answer(id, who, answer, &body.comment)
        .await?;
    let view = state
        .with_conn::<_, ApiError, _>(move |conn| Ok(gates::gate_run(conn, id)?))
        .await?;
    Ok(HttpResponse::Ok().json(GateRunDto::from(&view)))
}

/// Routes below `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/gates", web::get().to(list))
        .route("/gates/{id}", web::get().to(get))
        .route("/gates/{id}/reevaluate", web::post().to(reevaluate))
        .route("/gates/{id}/bypass", web::post().to(bypass))
        .route("/gates/{id}/answer", web::post().to(answer));
}
