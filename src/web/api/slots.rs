//! `/api/v1/apps/{app}/…`: swap two slots of an app, list its slots.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::authz::Action;
use crate::engine::SwapDone;
use crate::engine::deploy::swaps::SwapAsk;
use crate::engine::slots::supervisor::Health;
use crate::engine::slots::{SlotView, SwapOutcome};
use crate::web::auth::CurrentUser;
use crate::web::{ApiError, State, WebError};

/// Which slot goes live where.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SwapBody {
    /// The slot whose release goes live (`staging`).
    pub from: String,
    /// The slot it replaces (`production`).
    pub to: String,
    /// Prepare a swap with preview: `from` runs with `to`'s sticky settings
    /// and the swap waits for `POST …/swap/confirm` (or `…/cancel`).
    #[serde(default)]
    pub preview: bool,
    /// A rollback: refused unless it puts back the older release `to` ran
    /// before; needs a `reason`.
    #[serde(default)]
    pub rollback: bool,
    /// Why (required for a rollback).
    #[serde(default)]
    pub reason: Option<String>,
    /// A release manager skips the approvals and gates of the stage that
    /// owns `to`, for this reason (audited as `deployment.override`).
    #[serde(default)]
    pub override_reason: Option<String>,
}

/// What a swap did.
#[derive(Debug, Serialize, ToSchema)]
pub struct SwapDto {
    pub app: String,
    pub from: String,
    pub to: String,
    /// The release now live in `to` (or about to be, when pending).
    pub release: Option<String>,
    /// The release `to` had; it now runs in `from` (swap back to roll back).
    pub replaced: Option<String>,
    /// `swapped`; `pending` for a swap with preview that waits for
    /// confirmation; `waiting` while the deployment it became waits for
    /// the stage's approvals, gates or turn.
    pub state: String,
    /// The deployment of the stage that owns `to`, when the swap is one.
    pub deployment: Option<SwapDeploymentDto>,
}

/// The deployment a swap became.
#[derive(Debug, Serialize, ToSchema)]
pub struct SwapDeploymentDto {
    pub id: i64,
    pub pipeline: String,
    pub stage: String,
    pub release: String,
    /// `swap` or `rollback`.
    pub trigger: String,
    /// The deployment's state (`succeeded`, `waiting_for_approval`, …).
    pub state: String,
}

impl From<SwapOutcome> for SwapDto {
    fn from(o: SwapOutcome) -> Self {
        SwapDto {
            state: if o.pending { "pending" } else { "swapped" }.into(),
            app: o.app,
            from: o.from,
            to: o.to,
            release: o.release,
            replaced: o.replaced,
            deployment: None,
        }
    }
}

/// A slot and what runs there.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlotDto {
    pub app: String,
    pub slot: String,
    pub pipeline: String,
    /// Host names under the router's domain.
    pub hosts: Vec<String>,
    pub release: Option<String>,
    pub previous_release: Option<String>,
    pub since: Option<DateTime<Utc>>,
    /// `running`, `starting`, `restarting`, `stopping`, `stopped`, `failed` or `empty`.
    pub process: String,
    /// `healthy`, `unhealthy` or `unknown`.
    pub health: String,
    pub last_swap_at: Option<DateTime<Utc>>,
}

fn slot_dto(v: SlotView, domain: &str) -> SlotDto {
    SlotDto {
        hosts: v.labels.iter().map(|l| format!("{l}.{domain}")).collect(),
        health: match v.health {
            Health::Healthy => "healthy",
            Health::Unhealthy(_) => "unhealthy",
            Health::Unknown => "unknown",
        }
        .into(),
        app: v.app,
        slot: v.slot,
        pipeline: v.pipeline,
        release: v.release,
        previous_release: v.previous_release,
        since: v.since.map(|t| t.and_utc()),
        process: v.process,
        last_swap_at: v.last_swap_at.map(|t| t.and_utc()),
    }
}

/// Routes below `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/apps/{app}/slots", web::get().to(list))
        .route("/apps/{app}/swap", web::post().to(swap))
        .route("/apps/{app}/swap/confirm", web::post().to(confirm))
        .route("/apps/{app}/swap/cancel", web::post().to(cancel));
}

/// The slots of an app with what each runs.
#[utoipa::path(get, path = "/api/v1/apps/{app}/slots", tag = "slots",
    params(("app" = String, Path, description = "app name")),
    responses(
        (status = 200, body = [SlotDto]),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    state: State,
    user: CurrentUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require_action(Action::Read)?;
    let app = path.into_inner();
    let views = state.engine.slots().list_slots_view().await?;
    let domain = state.settings.router.domain.clone();
    let slots: Vec<SlotDto> = views
        .into_iter()
        .filter(|v| v.app == app)
        .map(|v| slot_dto(v, &domain))
        .collect();
    if slots.is_empty() {
        return Err(WebError::NotFound(format!("There is no app named `{app}`.")).into());
    }
    Ok(HttpResponse::Ok().json(slots))
}

/// Swaps two slots of an app with no failed request: `from` is warmed
/// (health-checked), then both slots' processes and non-sticky settings
/// are exchanged at once. Swapping back is the rollback. With
/// `"preview": true` the swap waits for confirmation. Needs the release
/// manager role.
#[utoipa::path(post, path = "/api/v1/apps/{app}/swap", tag = "slots",
    params(("app" = String, Path, description = "app name")),
    request_body = SwapBody,
    responses(
        (status = 200, body = SwapDto),
        (status = 400, body = crate::web::error::ErrorBody),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody, description = "no such app or slot"),
        (status = 409, body = crate::web::error::ErrorBody, description = "the source runs nothing, is not healthy, or a swap waits for confirmation"),
        (status = 422, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn swap(
    state: State,
    user: CurrentUser,
    path: web::Path<String>,
    body: web::Json<SwapBody>,
) -> Result<HttpResponse, ApiError> {
    let actor = user.require_action(Action::SwapSlots)?.username.clone();
    let app = path.into_inner();
    let body = body.into_inner();
    let (from, to) = (body.from.trim(), body.to.trim());
    if from.is_empty() || to.is_empty() {
        return Err(
            WebError::BadRequest("`from` and `to` name two slots of the app.".into()).into(),
        );
    }
    if body.preview && !body.rollback {
        let outcome = state
            .engine
            .slots()
            .swap_preview(&app, from, to, &actor)
            .await?;
        return Ok(HttpResponse::Ok().json(SwapDto::from(outcome)));
    }
    let ask = SwapAsk {
        app: app.clone(),
        from: from.to_string(),
        to: to.to_string(),
        actor,
        rollback: body.rollback,
        reason: body.reason,
        override_reason: body.override_reason,
        confirm: false,
    };
    let done = state.engine.swap_slots(ask).await?;
    answer(&app, (from, to), done)
}

/// 200 with what the swap did; 202 while its deployment waits; 409 when
/// its deployment failed (nothing changed).
fn answer(app: &str, (from, to): (&str, &str), done: SwapDone) -> Result<HttpResponse, ApiError> {
    let (d, pipeline, version, replaced) = match done {
        SwapDone::Swapped(outcome) => return Ok(HttpResponse::Ok().json(SwapDto::from(outcome))),
        SwapDone::Deployment {
            deployment,
            pipeline,
            version,
            replaced,
        } => (deployment, pipeline, version, replaced),
    };
    use crate::domain::DeploymentState as S;
    let state = match d.state {
        S::Succeeded => "swapped",
        S::Failed | S::Canceled | S::Interrupted | S::Superseded => {
            return Err(WebError::Conflict(format!(
                "Deployment #{} of {version} to {} (the swap of {from} into {to}) {}: {}",
                d.id,
                d.stage,
                d.state.label(),
                d.error.as_deref().unwrap_or("nothing changed")
            ))
            .into());
        }
        _ => "waiting",
    };
    let body = SwapDto {
        app: app.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        release: Some(version.clone()),
        replaced,
        state: state.into(),
        deployment: Some(SwapDeploymentDto {
            id: d.id,
            pipeline,
            stage: d.stage.clone(),
            release: version,
            trigger: d.trigger.clone(),
            state: d.state.as_str().into(),
        }),
    };
    Ok(if state == "swapped" {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::Accepted().json(body)
    })
}

/// Confirms the app's swap with preview. Needs the release manager role.
#[utoipa::path(post, path = "/api/v1/apps/{app}/swap/confirm", tag = "slots",
    params(("app" = String, Path, description = "app name")),
    responses(
        (status = 200, body = SwapDto),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody),
        (status = 409, body = crate::web::error::ErrorBody, description = "no swap waits")),
    security(("bearer" = [])))]
pub async fn confirm(
    state: State,
    user: CurrentUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let actor = user.require_action(Action::SwapSlots)?.username.clone();
    let app = path.into_inner();
    let (from, to) = state.engine.slots().pending_swap(&app).await?;
    // Confirming is the swap: through the stage that owns `to`, like any.
    let done = state
        .engine
        .swap_slots(SwapAsk {
            app: app.clone(),
            from: from.clone(),
            to: to.clone(),
            actor,
            confirm: true,
            ..SwapAsk::default()
        })
        .await?;
    answer(&app, (&from, &to), done)
}

/// Cancels the app's swap with preview. Needs the release manager role.
#[utoipa::path(post, path = "/api/v1/apps/{app}/swap/cancel", tag = "slots",
    params(("app" = String, Path, description = "app name")),
    responses(
        (status = 204, description = "canceled"),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody),
        (status = 409, body = crate::web::error::ErrorBody, description = "no swap waits")),
    security(("bearer" = [])))]
pub async fn cancel(
    state: State,
    user: CurrentUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let actor = user.require_action(Action::SwapSlots)?.username.clone();
    state
        .engine
        .slots()
        .cancel_swap(&path.into_inner(), &actor)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
