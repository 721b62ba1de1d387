//! `/pipelines/{p}/releases/{v}/deployments/{id}`: one deployment with its
//! tasks and logs (live while it runs), the evidence of its gates (every
//! run with its checks and samples, `partials/gate_evidence.html`), and its
//! Cancel and Redeploy forms.

use actix_session::Session;
use actix_web::{HttpResponse, web};
use askama::Template;

use super::actions::CsrfForm;
use super::builds::{TaskView, task_views};
use super::gates::{GateRunEvidence, gate_evidence};
use super::render;
use crate::domain::DeploymentState;
use crate::domain::authz::Action;
use crate::engine::deploy::requests::{self, DeploymentDetail};
use crate::web::api::deployments::log_api_url;
use crate::web::auth::CurrentUser;
use crate::web::nav::Nav;
use crate::web::pages::{next_or, see_other};
use crate::web::session::{check_csrf, set_flash};
use crate::web::views::{StateBadge, time};
use crate::web::{State, WebError, urls};

#[derive(Template)]
#[template(path = "pages/deployment.html")]
pub struct DeploymentPage {
    pub nav: Nav,
    pub id: i64,
    pub pipeline: String,
    pub pipeline_url: String,
    pub version: String,
    pub release_url: String,
    pub stage: String,
    pub stage_url: String,
    pub attempt: i32,
    pub badge: StateBadge,
    pub trigger: String,
    pub requested_by: String,
    pub reason: Option<String>,
    /// A swap or rollback of slots: what it swaps ("staging into production").
    pub swap: Option<String>,
    /// A release manager's override of the stage's approvals and gates:
    /// (who, why).
    pub overridden: Option<(String, String)>,
    /// The superseding release's version and page.
    pub superseded_by: Option<(String, String)>,
    pub error: Option<String>,
    /// What a waiting deployment waits for.
    pub waiting: Option<String>,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub ended: bool,
    pub tasks: Vec<TaskView>,
    /// Its gate runs with their samples.
    pub gate_evidence: Vec<GateRunEvidence>,
    /// Its approvals (`partials/approvals_of_deployment.html`).
    pub approvals: Vec<super::approvals::ApprovalSummary>,
    /// The last log sequence number shown, for live tailing.
    pub last_seq: i64,
    pub log_url: String,
    pub cancel_url: String,
    pub redeploy_url: String,
    /// It failed or was interrupted: the Redeploy button says Retry.
    pub retry: bool,
}

/// How many log chunks the page shows at once (the rest: the log API).
const LOG_CHUNKS: i64 = 5000;

fn waiting_text(state: DeploymentState, stage: &str) -> Option<String> {
    match state {
        DeploymentState::Queued => Some(format!(
            "Queued: it starts when {stage} has room (its queue policy says how many run at once)."
        )),
        DeploymentState::WaitingForApproval => Some(format!(
            "Waiting for the approvals of {stage}; approvers decide on the approval page."
        )),
        DeploymentState::EvaluatingGates => {
            Some(format!("Waiting for the gates of {stage} to pass."))
        }
        _ => None,
    }
}

/// The deployment, checked against the pipeline and version of the URL.
async fn load(
    state: &State,
    pipeline: &str,
    version: &str,
    id: i64,
) -> Result<DeploymentDetail, WebError> {
    let detail = state
        .with_conn::<_, WebError, _>(move |conn| Ok(requests::deployment_detail(conn, id)?))
        .await?;
    if detail.pipeline != pipeline || detail.release != version {
        return Err(WebError::NotFound(format!(
            "{pipeline} {version} has no deployment #{id}."
        )));
    }
    Ok(detail)
}

pub async fn detail(
    state: State,
    nav: Nav,
    path: web::Path<(String, String, i64)>,
) -> Result<HttpResponse, WebError> {
    let (pipeline, version, id) = path.into_inner();
    let detail = load(&state, &pipeline, &version, id).await?;
    let (log, evidence, approvals) = state
        .with_conn::<_, WebError, _>(move |conn| {
            Ok((
                requests::deployment_log(conn, id, 0, LOG_CHUNKS)?,
                gate_evidence(conn, id)?,
                super::approvals::approvals_of_deployment(conn, id)?,
            ))
        })
        .await?;
    let d = &detail.deployment;
    let page_url = urls::deployment(&pipeline, &version, id);
    render(&DeploymentPage {
        id,
        pipeline_url: urls::pipeline(&pipeline),
        release_url: urls::release(&pipeline, &version),
        stage_url: urls::stage(&pipeline, &d.stage),
        stage: d.stage.clone(),
        attempt: d.attempt,
        badge: StateBadge::of(d.state),
        trigger: crate::web::views::trigger_words(&d.trigger),
        requested_by: d.requested_by.clone(),
        reason: d.reason.clone(),
        swap: crate::domain::SlotOperation::from_json(d.operation.as_deref())
            .map(|op| format!("{} into {} (app {})", op.from, op.to, op.app)),
        overridden: d
            .override_by
            .clone()
            .map(|by| (by, d.override_reason.clone().unwrap_or_default())),
        superseded_by: detail
            .superseded_by
            .as_ref()
            .map(|v| (v.clone(), urls::release(&pipeline, v))),
        error: d.error.clone(),
        waiting: waiting_text(d.state, &d.stage),
        created: time(&d.created_at),
        started: d.started_at.as_ref().map(time),
        finished: d.finished_at.as_ref().map(time),
        ended: d.state.is_terminal(),
        tasks: task_views(&detail.tasks, &log.chunks, |c| {
            (c.task_position, c.stream.as_str(), c.text.as_str())
        }),
        gate_evidence: evidence,
        approvals,
        last_seq: log.chunks.last().map(|c| c.seq).unwrap_or(0),
        log_url: log_api_url(id),
        cancel_url: format!("{page_url}/cancel"),
        redeploy_url: urls::deployment_redeploy(&pipeline, &version, id),
        retry: matches!(
            d.state,
            DeploymentState::Failed | DeploymentState::Interrupted
        ),
        nav,
        pipeline,
        version,
    })
}

/// `POST …/deployments/{id}/cancel`
pub async fn cancel(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<(String, String, i64)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let user = user.require_action(Action::CancelDeployment)?;
    let (pipeline, version, id) = path.into_inner();
    load(&state, &pipeline, &version, id).await?;
    state.engine.cancel_deployment(id, &user.username).await?;
    Ok(see_other(urls::deployment(&pipeline, &version, id)))
}

/// The Redeploy / Retry form: its CSRF token and, from the board or a
/// list, where to go back to.
#[derive(Debug, serde::Deserialize)]
pub struct RedeployForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub next: Option<String>,
}

/// `POST …/deployments/{id}/redeploy`: the same release to the same stage
/// again (Redeploy, or Retry of a failed attempt); shows the new attempt,
/// or goes back to `next` with a message.
pub async fn redeploy(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<(String, String, i64)>,
    form: web::Form<RedeployForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let user = user.require_action(Action::Deploy)?;
    let (pipeline, version, id) = path.into_inner();
    let old = load(&state, &pipeline, &version, id).await?;
    let outcome = state.engine.redeploy(id, &user.username).await?;
    let new = outcome.deployment_id();
    let stage = &old.deployment.stage;
    set_flash(
        &session,
        match outcome {
            requests::DeployOutcome::Queued(_) => {
                format!("{version} is queued for {stage} again (deployment #{new}).")
            }
            requests::DeployOutcome::AlreadyThere { .. } => {
                format!("{version} is on its way to {stage} already (deployment #{new}).")
            }
        },
    );
    Ok(see_other(next_or(
        form.next.as_deref(),
        urls::deployment(&pipeline, &version, new),
    )))
}
