//! Approvals over the API: the approvals waiting for the caller
//! (`GET /api/v1/approvals`), one approval (`GET /api/v1/approvals/{id}`)
//! and a decision on it (`POST /api/v1/approvals/{id}` with
//! `{"decision": "approve"|"reject"|"defer", "comment": "...", "until": RFC3339}`).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::dto::utc;
use crate::domain::Decision;
use crate::domain::authz::Action;
use crate::engine::deploy::approvals::{self, ApprovalItem, DecideError, DecisionInput, Person};
use crate::web::auth::{AuthUser, CurrentUser};
use crate::web::{ApiError, State, WebError, urls};

/// A commit the release adds over the one in the stage.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommitDto {
    pub sha: String,
    pub author: String,
    pub subject: String,
}

/// One person's decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionDto {
    pub user: String,
    /// `approve`, `reject` or `defer`.
    pub decision: String,
    pub comment: Option<String>,
    /// For `defer`.
    pub until: Option<DateTime<Utc>>,
    pub decided_at: DateTime<Utc>,
}

/// An approval a deployment waits for (or waited for).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalDto {
    pub id: i64,
    pub pipeline: String,
    pub release: String,
    pub stage: String,
    /// `before` or `after` the stage's tasks.
    pub phase: String,
    /// `pending`, `approved`, `rejected`, `timed_out`, `superseded` or `canceled`.
    pub state: String,
    pub deployment_id: i64,
    pub requested_by: String,
    /// `alice`, `group:management`, …
    pub approvers: Vec<String>,
    /// `any`, `all` or `n:K`.
    pub policy: String,
    /// Who is still needed, while pending.
    pub needed: Option<String>,
    /// Seconds of SSO sign-in freshness the stage asks for.
    pub fresh_sign_in_seconds: Option<i64>,
    pub requester_can_approve: bool,
    pub exclude_authors: bool,
    /// The release in the stage when approval was requested.
    pub base_release: Option<String>,
    /// What the release adds over `base_release`, newest first.
    pub commits: Vec<CommitDto>,
    pub decisions: Vec<DecisionDto>,
    pub created_at: DateTime<Utc>,
    /// When it times out (rejected with reason "timed out").
    pub deadline: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub closed_by: Option<String>,
    /// Why it closed.
    pub reason: Option<String>,
    /// When the caller deferred it to (while that is in the future).
    pub deferred_until: Option<DateTime<Utc>>,
    /// Its page.
    pub url: String,
    pub deployment_url: String,
}

impl ApprovalDto {
    pub fn new(item: &ApprovalItem, viewer: Option<&str>) -> ApprovalDto {
        let a = &item.approval;
        let now = crate::storage::now();
        ApprovalDto {
            id: a.id,
            pipeline: item.pipeline.clone(),
            release: item.release.clone(),
            stage: item.deployment.stage.clone(),
            phase: a.phase.to_string(),
            state: a.state.to_string(),
            deployment_id: a.deployment_id,
            requested_by: a.requested_by.clone(),
            approvers: item.approvers.clone(),
            policy: a.policy.clone(),
            needed: item.needed.clone(),
            fresh_sign_in_seconds: a.fresh_sign_in_secs,
            requester_can_approve: a.requester_can_approve,
            exclude_authors: a.exclude_authors,
            base_release: a.base_release.clone(),
            commits: item
                .commits
                .iter()
                .map(|c| CommitDto {
                    sha: c.sha.clone(),
                    author: c.author.clone(),
                    subject: c.subject.clone(),
                })
                .collect(),
            decisions: item
                .decisions
                .iter()
                .map(|d| DecisionDto {
                    user: d.user_name.clone(),
                    decision: d.decision.clone(),
                    comment: d.comment.clone(),
                    until: d.defer_until.as_ref().map(utc),
                    decided_at: utc(&d.created_at),
                })
                .collect(),
            created_at: utc(&a.created_at),
            deadline: utc(&a.deadline),
            closed_at: a.closed_at.as_ref().map(utc),
            closed_by: a.closed_by.clone(),
            reason: a.reason.clone(),
            deferred_until: viewer
                .and_then(|v| item.deferred_until(v, now))
                .as_ref()
                .map(utc),
            url: urls::approval(a.id),
            deployment_url: urls::deployment(&item.pipeline, &item.release, a.deployment_id),
        }
    }
}

/// The approvals waiting for the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalListDto {
    pub approvals: Vec<ApprovalDto>,
}

/// A decision on an approval.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// `approve`, `reject` or `defer`.
    pub decision: String,
    /// Why; required to reject.
    #[serde(default)]
    pub comment: Option<String>,
    /// For `defer`: when to ask again (RFC 3339).
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

/// The engine's view of the person deciding.
pub fn person(user: &AuthUser) -> Person {
    Person {
        user: user.username.clone(),
        groups: user.groups.clone(),
        email: None,
        sso_at: user.sso_at,
    }
}

/// The approvals waiting for the caller (listed directly or through a
/// group, not yet decided by them), oldest first; ones the caller deferred
/// carry `deferred_until`.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals",
    responses((status = 200, body = ApprovalListDto), (status = 401, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(state: State, user: CurrentUser) -> Result<HttpResponse, ApiError> {
    let me = user.require_action(Action::Read)?.clone();
    let items = state
        .with_conn::<_, ApiError, _>(move |conn| {
            let items = approvals::waiting_for(conn, &me.username, &me.groups)?;
            Ok(items
                .iter()
                .map(|i| ApprovalDto::new(i, Some(&me.username)))
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(HttpResponse::Ok().json(ApprovalListDto { approvals: items }))
}

/// One approval with its decisions.
#[utoipa::path(get, path = "/api/v1/approvals/{id}", tag = "approvals",
    params(("id" = i64, Path, description = "approval id")),
    responses(
        (status = 200, body = ApprovalDto),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    state: State,
    user: CurrentUser,
    path: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let me = user.require_action(Action::Read)?.username.clone();
    let id = path.into_inner();
    let item = state
        .with_conn::<_, ApiError, _>(move |conn| Ok(approvals::find_item(conn, id)?))
        .await?;
    Ok(HttpResponse::Ok().json(ApprovalDto::new(&item, Some(&me))))
}

/// Maps a refused decision to the API's answer.
pub fn decide_error(e: DecideError) -> WebError {
    match e {
        DecideError::Engine(e) => e.into(),
        DecideError::FreshSignIn { message, .. } => WebError::Forbidden(format!(
            "{message} (sign in through SSO in the browser and decide on the approval page)"
        )),
    }
}

/// Approves, rejects (a comment is required) or defers (to `until`) an
/// approval. Only its approvers may; the requester may not approve unless
/// the stage allows it. Answers the approval after the decision.
#[utoipa::path(post, path = "/api/v1/approvals/{id}", tag = "approvals",
    params(("id" = i64, Path, description = "approval id")),
    request_body = DecisionBody,
    responses(
        (status = 200, body = ApprovalDto),
        (status = 400, body = crate::web::error::ErrorBody),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody, description = "not an approver, separation of duties, or a fresh SSO sign-in is needed"),
        (status = 404, body = crate::web::error::ErrorBody),
        (status = 409, body = crate::web::error::ErrorBody, description = "already decided, or the approval closed"),
        (status = 422, body = crate::web::error::ErrorBody, description = "a rejection without a comment, or a bad `until`")),
    security(("bearer" = [])))]
pub async fn decide(
    state: State,
    user: CurrentUser,
    path: web::Path<i64>,
    body: web::Json<DecisionBody>,
) -> Result<HttpResponse, ApiError> {
    let me = user.require_action(Action::Approve)?.clone();
    let id = path.into_inner();
    let body = body.into_inner();
    let decision: Decision = body.decision.trim().parse().map_err(|_| {
        WebError::BadRequest(format!(
            "`decision` must be approve, reject or defer (got `{}`)",
            body.decision
        ))
    })?;
    state
        .engine
        .decide_approval(
            id,
            person(&me),
            DecisionInput {
                decision,
                comment: body.comment,
                until: body.until,
            },
        )
        .await
        .map_err(decide_error)?;
    let item = state
        .with_conn::<_, ApiError, _>(move |conn| Ok(approvals::find_item(conn, id)?))
        .await?;
    Ok(HttpResponse::Ok().json(ApprovalDto::new(&item, Some(&me.username))))
}

/// Routes below `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/approvals", web::get().to(list))
        .route("/approvals/{id}", web::get().to(get))
        .route("/approvals/{id}", web::post().to(decide));
}
