//! `/pipelines/{p}/stages/{s}`: a stage's overview, the page for the day's
//! work — what is live there, its next fire, the queue, the recent
//! deployments (a failed one with Retry), the Deploy form at the top, the
//! separate "Roll back STAGE" form, and a read-only summary of its
//! configuration (trigger and schedule, approvals, gates, tasks, queue,
//! deployers) that links to the form at `…/configure` (`stages`).
//! `docs/decisions.md` ("The stage page: an overview and a configuration
//! page") says why.

use actix_web::{HttpResponse, web};
use askama::Template;

use super::deploy::{DeployFormView, RollbackFormView, deploy_form, rollback_form};
use super::pipelines::trigger_text;
use super::render;
use super::stages::{
    ApprovalView, FireTime, GateView, deployers_text, environment_text, fire_time, fire_times,
    guard_views, task_summary,
};
use crate::domain::authz::{self, Action};
use crate::domain::rules::{self, Offer, OfferFacts, ReleaseRef};
use crate::domain::{QueueMode, Trigger};
use crate::engine::deploy::live;
use crate::engine::pipelines;
use crate::storage::schedules as store;
use crate::storage::{self, DbConn, DeploymentRow};
use crate::web::auth::{AuthUser, CurrentUser, permission};
use crate::web::session::Nav;
use crate::web::views::{StateBadge, time, trigger_words};
use crate::web::{State, WebError, urls};

/// How many recent deployments the overview lists.
pub const RECENT: i64 = 10;

/// The release live in the stage (`engine::deploy::live`: what its slot serves,
/// or what its last successful deployment put there).
pub struct LiveView {
    pub version: String,
    pub release_url: String,
    /// The deployment that put it there, if one of this stage did.
    pub deployment_url: Option<String>,
    /// Since when.
    pub since: Option<String>,
    /// How it got there, in words.
    pub trigger: String,
    /// The slot it runs in, "app/slot".
    pub slot: Option<String>,
    /// What a rollback replaced.
    pub replaced: Option<String>,
}

/// A deployment in the queue or the recent list.
pub struct DeploymentItem {
    pub id: i64,
    pub version: String,
    pub release_url: String,
    pub url: String,
    pub attempt: i32,
    pub badge: StateBadge,
    pub trigger: String,
    pub requested_by: String,
    pub created: String,
    pub reason: Option<String>,
    /// Where its Retry form posts (a failed or interrupted newest attempt
    /// the person may deploy again).
    pub retry_url: Option<String>,
}

#[derive(Template)]
#[template(path = "pages/stage_overview.html")]
pub struct StageOverviewPage {
    pub nav: Nav,
    pub pipeline: String,
    pub pipeline_url: String,
    pub stage: String,
    pub position: usize,
    pub previous: String,
    pub configure_url: String,
    pub revision: i32,
    pub live: Option<LiveView>,
    /// The trigger in words.
    pub trigger: String,
    pub timezone: Option<String>,
    pub next_fire: Option<FireTime>,
    pub fire_times: Vec<FireTime>,
    /// Waiting deployments (queued, for approval, on gates), next first.
    pub queue: Vec<DeploymentItem>,
    pub recent: Vec<DeploymentItem>,
    pub deploy_form: DeployFormView,
    pub rollback_form: RollbackFormView,
    pub environment: String,
    pub approvals: Vec<ApprovalView>,
    pub gates: Vec<GateView>,
    pub tasks: Vec<String>,
    /// "one at a time, only the latest waiting release".
    pub queue_policy: String,
    pub deployers: String,
}

/// Whether `user` may roll `stage` back, or why not in words.
fn may_roll_back(user: Option<&AuthUser>, stage: &crate::domain::Stage) -> Result<(), String> {
    match user {
        None => Err("Sign in as a release manager to roll back.".into()),
        Some(u) if !u.allowed(Action::Rollback) => Err(format!(
            "Rolling back needs the release manager role; you are a {}.",
            u.role.label().to_lowercase()
        )),
        Some(u)
            if !authz::may_on_stage(u.role, Action::Rollback, &u.username, &u.groups, stage) =>
        {
            Err(format!("You are not a deployer of {}.", stage.name))
        }
        Some(_) => Ok(()),
    }
}

fn queue_words(parallel: u32, policy: QueueMode) -> String {
    let running = if parallel == 1 {
        "one deployment at a time".to_string()
    } else {
        format!("up to {parallel} deployments at a time")
    };
    match policy {
        QueueMode::LatestOnly => {
            format!("{running}; of the waiting releases only the newest deploys")
        }
        QueueMode::Sequence => format!("{running}; waiting releases deploy in order"),
    }
}

fn load(
    conn: &mut DbConn,
    nav: Nav,
    user: Option<&AuthUser>,
    name: &str,
    stage_name: &str,
) -> Result<StageOverviewPage, WebError> {
    let loaded = pipelines::load(conn, name)?;
    let Some(index) = loaded.definition.stage_index(stage_name) else {
        return Err(WebError::NotFound(format!(
            "{} has no stage named `{stage_name}`.",
            loaded.name
        )));
    };
    let def = &loaded.definition;
    let stage = &def.stages[index];
    let pipeline = loaded.name.clone();
    let current = storage::deployments::current_deployment(conn, loaded.id, stage_name)?;
    let queue = storage::deployments::waiting_deployments(conn, loaded.id, stage_name)?;
    let recent =
        storage::deployments::recent_deployments_of_stage(conn, loaded.id, stage_name, RECENT)?;
    let mut ids: Vec<i64> = queue
        .iter()
        .chain(recent.iter())
        .chain(current.iter())
        .map(|d| d.release_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let versions = store::release_versions(conn, &ids)?;
    let version_of = |id: i64| {
        versions
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let stage_row = store::find_stage(conn, loaded.id, stage_name)?;
    let live = live::live_of(conn, loaded.id, &loaded.name, def)?.remove(stage_name);
    let mut deploy = deploy_form(conn, &pipeline, stage_name, &nav)?;
    deploy.why_not = match permission(user, stage) {
        rules::Permission::Role(role) => Some(format!(
            "A {} may not deploy; deploying needs the deployer role.",
            role.to_lowercase()
        )),
        rules::Permission::NotDeployer => Some(format!(
            "You are not a deployer of {stage_name}; its deployers are {}.",
            deployers_text(stage)
        )),
        rules::Permission::Allowed | rules::Permission::SignedOut => None,
    };
    let rollback = rollback_form(
        conn,
        &pipeline,
        stage_name,
        &nav,
        may_roll_back(user, stage),
    )?;

    let current_ref = current.as_ref().map(|c| c.release_id);
    let may_deploy = matches!(permission(user, stage), rules::Permission::Allowed);
    let item = |d: &DeploymentRow, newest_attempt: bool| {
        let version = version_of(d.release_id);
        let retry = newest_attempt
            && may_deploy
            && rules::offer(&OfferFacts {
                stage: stage_name,
                previous_stage: None,
                release: ReleaseRef {
                    id: d.release_id,
                    version: &version,
                },
                succeeded_in_previous: true,
                current: current_ref.map(|id| ReleaseRef { id, version: "" }),
                latest_here: Some(d.state),
                permission: rules::Permission::Allowed,
            }) == Offer::Retry;
        DeploymentItem {
            id: d.id,
            release_url: urls::release(&pipeline, &version),
            url: urls::deployment(&pipeline, &version, d.id),
            retry_url: retry.then(|| urls::deployment_redeploy(&pipeline, &version, d.id)),
            version,
            attempt: d.attempt,
            badge: StateBadge::of(d.state),
            trigger: trigger_words(&d.trigger),
            requested_by: d.requested_by.clone(),
            created: time(&d.created_at),
            reason: d.reason.clone(),
        }
    };
    let recent_items: Vec<DeploymentItem> = recent
        .iter()
        .enumerate()
        .map(|(i, d)| {
            // Only the newest attempt of a release is retried.
            let newest = !recent[..i].iter().any(|n| n.release_id == d.release_id);
            item(d, newest)
        })
        .collect();
    let queue_items = queue.iter().map(|d| item(d, false)).collect();

    let (timezone, fire_times_now, tz) = match &stage.trigger {
        Trigger::Schedule(s) => (
            Some(s.timezone.name().to_string()),
            fire_times(s),
            s.timezone,
        ),
        _ => (None, Vec::new(), chrono_tz::UTC),
    };
    let (approvals, gates) = guard_views(stage);
    Ok(StageOverviewPage {
        pipeline_url: urls::pipeline(&pipeline),
        configure_url: urls::stage_configure(&pipeline, stage_name),
        stage: stage_name.to_string(),
        position: index + 1,
        previous: index
            .checked_sub(1)
            .and_then(|i| def.stages.get(i))
            .map(|p| format!("stage {}", p.name))
            .unwrap_or_else(|| "the build".into()),
        revision: loaded.revision,
        live: live.map(|l| LiveView {
            release_url: urls::release(&pipeline, &l.version),
            deployment_url: l
                .deployment
                .as_ref()
                .map(|d| urls::deployment(&pipeline, &l.version, d.id)),
            since: l.since.as_ref().map(time),
            trigger: trigger_words(l.trigger()),
            slot: l.slot.as_ref().map(|(app, slot)| format!("{app}/{slot}")),
            replaced: l.replaced.clone(),
            version: l.version,
        }),
        trigger: trigger_text(&stage.trigger),
        next_fire: timezone.as_ref().and_then(|_| {
            stage_row
                .as_ref()
                .and_then(|r| r.next_fire_at)
                .map(|t| fire_time(t.and_utc(), tz))
        }),
        timezone,
        fire_times: fire_times_now,
        queue: queue_items,
        recent: recent_items,
        deploy_form: deploy,
        rollback_form: rollback,
        environment: environment_text(stage),
        approvals,
        gates,
        tasks: stage.tasks.iter().map(task_summary).collect(),
        queue_policy: queue_words(stage.queue.parallel, stage.queue.policy),
        deployers: deployers_text(stage),
        pipeline,
        nav,
    })
}

/// `GET /pipelines/{p}/stages/{s}`
pub async fn overview(
    state: State,
    nav: Nav,
    user: CurrentUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, WebError> {
    let (name, stage) = path.into_inner();
    let page = state
        .with_conn::<_, WebError, _>(move |conn| load(conn, nav, user.0.as_ref(), &name, &stage))
        .await?;
    render(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_policy_in_words() {
        assert_eq!(
            queue_words(1, QueueMode::LatestOnly),
            "one deployment at a time; of the waiting releases only the newest deploys"
        );
        assert_eq!(
            queue_words(3, QueueMode::Sequence),
            "up to 3 deployments at a time; waiting releases deploy in order"
        );
    }
}
