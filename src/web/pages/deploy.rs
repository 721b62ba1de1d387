//! The "Deploy" form of a stage: a release picker (with what each release
//! has done in the stage before) and, for release managers, a rollback with
//! its reason. The form is the partial `templates/partials/deploy_form.html`;
//! a page that includes it has a field `deploy_form: DeployFormView`
//! (build it with [`deploy_form`]). It posts to
//! `POST /pipelines/{p}/stages/{s}/deploy` ([`deploy`]), which redirects to
//! the new deployment's page, or answers the stage rule's refusal (409).

use actix_session::Session;
use actix_web::{HttpResponse, http::header, web};
use serde::Deserialize;

use crate::domain::DeploymentState;
use crate::domain::authz::Action;
use crate::engine::deployments::{DeployRequest, deployment_detail};
use crate::engine::{EngineError, pipelines};
use crate::storage::{self, DbConn};
use crate::web::auth::CurrentUser;
use crate::web::session::{Nav, check_csrf};
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
    /// Whether the signed-in user may roll back (release manager or admin).
    pub can_roll_back: bool,
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
    // What is live in the stage (`engine::live`): what its slot serves, or
    // what its newest succeeded deployment put there.
    let live = crate::engine::live::live_of(conn, loaded.id, &loaded.name, &loaded.definition)?
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
        action: format!("{}/deploy", urls::stage(&loaded.name, stage)),
        csrf: nav.csrf.clone(),
        stage: stage.to_string(),
        signed_in: nav.user.is_some(),
        can_roll_back: nav.may(Action::Rollback),
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
    /// A checkbox: present (any value) when ticked.
    #[serde(default)]
    pub rollback: Option<String>,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub csrf: String,
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
    let id = outcome.deployment_id();
    let detail = state
        .with_conn::<_, WebError, _>(move |conn| Ok(deployment_detail(conn, id)?))
        .await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((
            header::LOCATION,
            urls::deployment(&detail.pipeline, &detail.release, id),
        ))
        .finish())
}
