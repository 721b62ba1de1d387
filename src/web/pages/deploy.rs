//! The "Deploy" form of a stage: a release picker (with what each release
//! has done in the stage before). The form is the partial
//! `templates/partials/deploy_form.html`; a page that includes it has a
//! field `deploy_form: DeployFormView` (build it with [`deploy_form`]). It
//! posts to `POST /pipelines/{p}/stages/{s}/deploy` ([`deploy`]), which
//! redirects to the new deployment's page (or, with a `next` field, back to
//! the page the button was on, with a message), or answers the stage
//! rule's refusal (409). The board's and the release page's "Deploy to" /
//! "Promote to" buttons post there too.
//!
//! Rolling back is its own form, "Roll back STAGE" (`partials/rollback_form.html`,
//! [`rollback_form`]), posting to `POST /pipelines/{p}/stages/{s}/rollback`
//! ([`rollback`]): a release that was live in the stage before, and a
//! required reason.

use actix_session::Session;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use crate::domain::DeploymentState;
use crate::domain::authz::Action;
use crate::engine::deploy::requests::{DeployOutcome, DeployRequest, deployment_detail};
use crate::engine::{EngineError, pipelines};
use crate::storage::{self, DbConn};
use crate::web::auth::CurrentUser;
use crate::web::nav::Nav;
use crate::web::pages::{next_or, see_other};
use crate::web::session::{check_csrf, set_flash};
use crate::web::{State, WebError, urls};

/// How many releases the picker offers (newest first).
pub const PICKER_SIZE: i64 = 25;

/// One release in the picker.
#[derive(Debug, Clone)]
pub struct ReleaseOption {
    pub version: String,
    /// What it did in the previous stage and in this one, for people.
    pub note: String,
    /// Preselected (the newest release that may go in).
    pub selected: bool,
}

/// The Deploy form of one stage.
#[derive(Debug, Clone)]
pub struct DeployFormView {
    /// Where the form posts.
    pub action: String,
    pub csrf: String,
    pub stage: String,
    /// Whether someone is signed in (the server checks the role).
    pub signed_in: bool,
    /// Why the person looking may not deploy here, when the page knows
    /// ("you are not a deployer of production"); the form is not shown.
    pub why_not: Option<String>,
    /// The release in the stage now.
    pub current: Option<String>,
    /// Where releases come from: `stage dev`, or `the build`.
    pub source: String,
    pub releases: Vec<ReleaseOption>,
}

/// Builds the Deploy form of `stage` (blocking; run it in `with_conn`).
pub fn deploy_form(
    conn: &mut DbConn,
    pipeline: &str,
    stage: &str,
    nav: &Nav,
) -> Result<DeployFormView, EngineError> {
    let loaded = pipelines::load(conn, pipeline)?;
    let previous = loaded
        .definition
        .previous_stage(stage)
        .map(|s| s.name.as_str().to_string());
    let releases = storage::list_releases(
        conn,
        loaded.id,
        &storage::ReleaseFilter {
            limit: PICKER_SIZE,
            ..storage::ReleaseFilter::default()
        },
    )?;
    let ids: Vec<i64> = releases.iter().map(|r| r.id).collect();
    let deployments = storage::deployments_for_releases(conn, &ids)?;
    // What is live in the stage (`engine::deploy::live`): what its slot serves, or
    // what its newest succeeded deployment put there.
    let live =
        crate::engine::deploy::live::live_of(conn, loaded.id, &loaded.name, &loaded.definition)?
            .remove(stage);
    let current_version = live.as_ref().map(|l| l.version.clone());
    let mut preselected = false;
    let options = releases
        .iter()
        .map(|r| {
            let of = |s: &str, state: Option<DeploymentState>| {
                deployments.iter().any(|d| {
                    d.release_id == r.id && d.stage == s && state.is_none_or(|st| d.state == st)
                })
            };
            let ready = previous
                .as_deref()
                .is_none_or(|p| of(p, Some(DeploymentState::Succeeded)));
            let here = live.as_ref().is_some_and(|l| l.release_id == r.id);
            let note = if here {
                format!("live in {stage} now")
            } else if !ready {
                format!(
                    "not yet succeeded in {}",
                    previous.as_deref().unwrap_or("the build")
                )
            } else if of(stage, None) {
                format!("deployed to {stage} before")
            } else {
                "ready".to_string()
            };
            let selected = ready && !preselected;
            preselected |= selected;
            ReleaseOption {
                version: r.version.clone(),
                note,
                selected,
            }
        })
        .collect();
    Ok(DeployFormView {
        action: urls::stage_deploy(&loaded.name, stage),
        csrf: nav.csrf.clone(),
        stage: stage.to_string(),
        signed_in: nav.user.is_some(),
        why_not: None,
        current: current_version,
        source: previous
            .map(|p| format!("stage {p}"))
            .unwrap_or_else(|| "the build".into()),
        releases: options,
    })
}

/// The Deploy form's fields.
#[derive(Debug, Deserialize)]
pub struct DeployForm {
    #[serde(default)]
    pub release: String,
    /// Older forms had a rollback checkbox: present (any value) when
    /// ticked. Still honoured; the pages use the Roll back form.
    #[serde(default)]
    pub rollback: Option<String>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub csrf: String,
    /// Where to go back to (a local path), with a message; without it the
    /// new deployment's page is shown.
    #[serde(default)]
    pub next: Option<String>,
}

/// "1.0.2 is queued for test (deployment #7)." — what a deploy did.
fn outcome_words(outcome: &DeployOutcome, version: &str, stage: &str, rollback: bool) -> String {
    let id = outcome.deployment_id();
    match (outcome, rollback) {
        (DeployOutcome::AlreadyThere { .. }, _) => {
            format!("{version} is on its way to {stage} already (deployment #{id}).")
        }
        (DeployOutcome::Queued(_), true) => {
            format!("Rolling back {stage} to {version}: deployment #{id} is queued.")
        }
        (DeployOutcome::Queued(_), false) => {
            format!("{version} is queued for {stage} (deployment #{id}).")
        }
    }
}

/// Where a form goes after it did its work: `next` (a local path) with a
/// message, or the deployment's page.
async fn after_deploy(
    state: &State,
    session: &Session,
    outcome: &DeployOutcome,
    next: Option<&str>,
    rollback: bool,
) -> Result<HttpResponse, WebError> {
    let id = outcome.deployment_id();
    let detail = state
        .with_conn::<_, WebError, _>(move |conn| Ok(deployment_detail(conn, id)?))
        .await?;
    let words = outcome_words(outcome, &detail.release, &detail.deployment.stage, rollback);
    set_flash(session, words);
    Ok(see_other(next_or(
        next,
        urls::deployment(&detail.pipeline, &detail.release, id),
    )))
}

/// `POST /pipelines/{p}/stages/{s}/deploy`: deploys the picked release and
/// shows its deployment.
pub async fn deploy(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<(String, String)>,
    form: web::Form<DeployForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let form = form.into_inner();
    let rollback = form.rollback.is_some();
    let action = if rollback {
        Action::Rollback
    } else {
        Action::Deploy
    };
    let user = user.require_action(action)?;
    let (pipeline, stage) = path.into_inner();
    let release = form.release.trim().to_string();
    if release.is_empty() {
        return Err(WebError::Unprocessable("Pick a release to deploy.".into()));
    }
    let outcome = state
        .engine
        .deploy(DeployRequest {
            pipeline,
            release,
            stage,
            trigger: if rollback { "rollback" } else { "manual" }.into(),
            requested_by: user.username.clone(),
            reason: Some(form.reason).filter(|r| !r.trim().is_empty()),
            operation: None,
            override_reason: None,
        })
        .await?;
    after_deploy(&state, &session, &outcome, form.next.as_deref(), rollback).await
}

/// One release in the rollback picker.
#[derive(Debug, Clone)]
pub struct RollbackOption {
    pub version: String,
    /// "live until 3 Dec 10:02" or "live before".
    pub note: String,
}

/// The "Roll back STAGE" form: releases that were live in the stage before
/// the one there now, and a required reason.
#[derive(Debug, Clone)]
pub struct RollbackFormView {
    pub action: String,
    pub csrf: String,
    pub stage: String,
    /// The release live in the stage now.
    pub current: Option<String>,
    /// Whether the signed-in user may roll back (release manager or admin,
    /// and a deployer of the stage when it lists them).
    pub allowed: bool,
    /// Why not, in words, when not.
    pub why_not: Option<String>,
    pub releases: Vec<RollbackOption>,
}

/// How many earlier live releases the rollback picker offers.
pub const ROLLBACK_CHOICES: i64 = 20;

/// Builds the Roll back form of `stage` (blocking; run it in `with_conn`).
/// `permission`: may this person roll back this stage.
pub fn rollback_form(
    conn: &mut DbConn,
    pipeline: &str,
    stage: &str,
    nav: &Nav,
    permission: Result<(), String>,
) -> Result<RollbackFormView, EngineError> {
    let loaded = pipelines::load(conn, pipeline)?;
    let current = storage::deployments::current_deployment(conn, loaded.id, stage)?;
    let ids = storage::deployments::releases_succeeded_in_stage(
        conn,
        loaded.id,
        stage,
        ROLLBACK_CHOICES + 1,
    )?;
    let versions = storage::schedules::release_versions(conn, &ids)?;
    let current_id = current.as_ref().map(|c| c.release_id);
    let version_of = |id: i64| {
        versions
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let releases = ids
        .iter()
        .filter(|id| current_id.is_some_and(|c| **id < c))
        .take(usize::try_from(ROLLBACK_CHOICES).unwrap_or(0))
        .map(|id| RollbackOption {
            version: version_of(*id),
            note: format!("was live in {stage} before"),
        })
        .collect();
    Ok(RollbackFormView {
        action: urls::stage_rollback(&loaded.name, stage),
        csrf: nav.csrf.clone(),
        stage: stage.to_string(),
        current: current_id.map(version_of),
        allowed: permission.is_ok(),
        why_not: permission.err(),
        releases,
    })
}

/// The Roll back form's fields.
#[derive(Debug, Deserialize)]
pub struct RollbackForm {
    #[serde(default)]
    pub release: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub csrf: String,
}

/// `POST /pipelines/{p}/stages/{s}/rollback`: deploys an older release
/// that was live in the stage before (trigger `rollback`, with the
/// reason), and goes back to the stage's overview with a message. A blank
/// reason is a 422 with a message; the stage rules answer the rest.
pub async fn rollback(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<(String, String)>,
    form: web::Form<RollbackForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let user = user.require_action(Action::Rollback)?;
    let (pipeline, stage) = path.into_inner();
    let form = form.into_inner();
    let release = form.release.trim().to_string();
    if release.is_empty() {
        return Err(WebError::Unprocessable(format!(
            "Pick the release to roll {stage} back to."
        )));
    }
    let reason = form.reason.trim().to_string();
    if reason.is_empty() {
        return Err(WebError::Unprocessable(format!(
            "A rollback of {stage} to {release} needs a reason: say what is wrong with the release there now."
        )));
    }
    let back = urls::stage(&pipeline, &stage);
    let outcome = state
        .engine
        .deploy(DeployRequest {
            pipeline,
            release,
            stage,
            trigger: "rollback".into(),
            requested_by: user.username.clone(),
            reason: Some(reason),
            operation: None,
            override_reason: None,
        })
        .await?;
    after_deploy(&state, &session, &outcome, Some(&back), true).await
}
