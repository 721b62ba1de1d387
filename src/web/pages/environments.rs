//! `/environments`: every app and slot — its host names, the release it
//! runs and since when, its process and health, its last swap — with Swap,
//! Roll back and (for a swap with preview) Confirm/Cancel forms for
//! release managers.

use actix_session::Session;
use actix_web::{HttpResponse, web};
use askama::Template;
use serde::Deserialize;

use super::render;
use super::see_other;
use crate::domain::authz::Action;
use crate::domain::{SwapState, slot_ops};
use crate::engine::deploy::swaps::{SwapAsk, SwapReview};
use crate::engine::runtime::SwapDone;
use crate::engine::slots::SlotView;
use crate::engine::slots::supervisor::Health;
use crate::web::auth::CurrentUser;
use crate::web::nav::Nav;
use crate::web::session::check_csrf;
use crate::web::views::time;
use crate::web::{State, WebError, urls};

/// A symbol, a word and a CSS class: never colour alone.
pub struct Mark {
    pub class: &'static str,
    pub symbol: &'static str,
    pub label: String,
}

pub struct HostLink {
    pub name: String,
    pub url: String,
}

pub struct SlotRowView {
    pub slot: String,
    pub hosts: Vec<HostLink>,
    pub release: Option<(String, String)>,
    pub previous: Option<(String, String)>,
    pub since: Option<String>,
    pub process: Mark,
    pub health: Mark,
    pub health_detail: Option<String>,
    pub last_swap: Option<String>,
    pub error: Option<String>,
    /// Other slots it can be swapped into (the preferred one first).
    pub swap_targets: Vec<String>,
    /// `(from, to, version)` of the swap back that puts the older release
    /// this slot ran before back in: the rollback (offered only then).
    pub rollback: Option<(String, String, String)>,
    /// The stage the slot belongs to, and its approvals and gates in words.
    pub stage: Option<(String, String, Vec<String>)>,
}

pub struct AppSection {
    pub app: String,
    pub pipeline: String,
    pub pipeline_url: String,
    pub swap_url: String,
    pub confirm_url: String,
    pub cancel_url: String,
    pub pending: Option<(String, String)>,
    pub slots: Vec<SlotRowView>,
    /// What the last swap did, when the page comes right after one.
    pub done: Option<String>,
}

#[derive(Template)]
#[template(path = "pages/environments.html")]
pub struct EnvironmentsPage {
    pub nav: Nav,
    pub apps: Vec<AppSection>,
    pub router: String,
    pub can_swap: bool,
}

fn process_mark(view: &SlotView) -> Mark {
    let (class, symbol) = match view.process.as_str() {
        "running" => ("ok", "●"),
        "starting" => ("running", "◌"),
        "restarting" => ("waiting", "↻"),
        "stopping" => ("muted", "◼"),
        "empty" => ("muted", "—"),
        "failed" => ("bad", "✖"),
        _ => ("bad", "■"),
    };
    let label = match view.process.as_str() {
        "empty" => "nothing deployed".to_string(),
        "restarting" => format!(
            "restarting ({} restart{})",
            view.restarts,
            if view.restarts == 1 { "" } else { "s" }
        ),
        "running" if view.restarts > 0 => format!(
            "running ({} restart{})",
            view.restarts,
            if view.restarts == 1 { "" } else { "s" }
        ),
        other => other.to_string(),
    };
    Mark {
        class,
        symbol,
        label,
    }
}

fn health_mark(view: &SlotView) -> (Mark, Option<String>) {
    match &view.health {
        Health::Healthy => (
            Mark {
                class: "ok",
                symbol: "✔",
                label: "healthy".into(),
            },
            None,
        ),
        Health::Unhealthy(why) => (
            Mark {
                class: "bad",
                symbol: "✖",
                label: "unhealthy".into(),
            },
            Some(why.clone()),
        ),
        Health::Unknown => (
            Mark {
                class: "muted",
                symbol: "?",
                label: if view.release.is_some() {
                    "not checked yet".into()
                } else {
                    "—".into()
                },
            },
            None,
        ),
    }
}

/// Builds the page's sections from the engine's view of the slots.
pub fn sections(views: &[SlotView], domain: &str, port: u16) -> Vec<AppSection> {
    let mut apps: Vec<AppSection> = Vec::new();
    for view in views {
        if apps.last().map(|a| a.app.as_str()) != Some(view.app.as_str()) {
            apps.push(AppSection {
                app: view.app.clone(),
                pipeline: view.pipeline.clone(),
                pipeline_url: urls::pipeline(&view.pipeline),
                swap_url: urls::app_swap(&view.app),
                confirm_url: urls::app_swap_confirm(&view.app),
                cancel_url: urls::app_swap_cancel(&view.app),
                pending: view.pending_swap.clone(),
                slots: Vec::new(),
                done: None,
            });
        }
        let siblings: Vec<String> = views
            .iter()
            .filter(|v| v.app == view.app && v.slot != view.slot)
            .map(|v| v.slot.clone())
            .collect();
        let mut targets = siblings.clone();
        // Production first: the usual swap.
        targets.sort_by_key(|s| s != crate::engine::slots::router::PRODUCTION_SLOT);
        let (health, health_detail) = health_mark(view);
        let release_link = |v: &Option<String>| {
            v.as_ref()
                .map(|v| (v.clone(), urls::release(&view.pipeline, v)))
        };
        // Swapping back is a rollback only when the partner holds the older
        // release this slot ran before (never "roll back" to a newer one).
        let rollback = view.last_swap.as_ref().and_then(|s| {
            let partner = views
                .iter()
                .find(|v| v.app == view.app && v.slot == s.from)?;
            (s.state == SwapState::Succeeded
                && s.to == view.slot
                && slot_ops::is_rollback(
                    view.release_id,
                    partner.release_id,
                    view.previous_release_id,
                ))
            .then(|| {
                (
                    s.from.clone(),
                    s.to.clone(),
                    partner.release.clone().unwrap_or_default(),
                )
            })
        });
        let Some(section) = apps.last_mut() else {
            continue;
        };
        section.slots.push(SlotRowView {
            slot: view.slot.clone(),
            hosts: view
                .labels
                .iter()
                .map(|l| {
                    let name = format!("{l}.{domain}");
                    HostLink {
                        url: format!("http://{name}:{port}/"),
                        name,
                    }
                })
                .collect(),
            release: release_link(&view.release),
            previous: release_link(&view.previous_release),
            since: view.since.as_ref().map(time),
            process: process_mark(view),
            health,
            health_detail,
            last_swap: view.last_swap.as_ref().map(|s| {
                format!(
                    "{} → {}, {} by {}{}",
                    s.from,
                    s.to,
                    time(&s.at),
                    s.by,
                    if s.state == SwapState::Succeeded {
                        String::new()
                    } else {
                        format!(" ({})", s.state)
                    }
                )
            }),
            error: view.error.clone(),
            swap_targets: if view.release.is_some() {
                targets
            } else {
                Vec::new()
            },
            rollback,
            stage: view.stage.as_ref().map(|(name, guards)| {
                (
                    name.clone(),
                    urls::stage(&view.pipeline, name),
                    guards.clone(),
                )
            }),
        });
    }
    apps
}

#[derive(Debug, Deserialize)]
pub struct IndexQuery {
    /// The app whose last swap the page reports (right after a swap).
    #[serde(default)]
    pub swapped: Option<String>,
}

/// What the newest swap of a slot of `app` did, in words.
fn swap_done(views: &[SlotView], app: &str) -> Option<String> {
    let last = views
        .iter()
        .filter(|v| v.app == app)
        .filter_map(|v| v.last_swap.as_ref())
        .max_by_key(|s| s.at)?;
    let into = views.iter().find(|v| v.app == app && v.slot == last.to)?;
    let out = views.iter().find(|v| v.app == app && v.slot == last.from)?;
    Some(if last.state == SwapState::Succeeded {
        format!(
            "Swapped {} into {} ({}): {} now serves {}; {} holds {}.",
            last.from,
            last.to,
            app,
            last.to,
            into.release.as_deref().unwrap_or("nothing"),
            last.from,
            out.release.as_deref().unwrap_or("nothing"),
        )
    } else {
        format!(
            "The swap of {} into {} ({}) {}; nothing changed.",
            last.from, last.to, app, last.state
        )
    })
}

/// `GET /environments`
pub async fn index(
    state: State,
    nav: Nav,
    query: web::Query<IndexQuery>,
) -> Result<HttpResponse, WebError> {
    let views = state.engine.slots().list_slots_view().await?;
    let domain = state.settings.router.domain.clone();
    let port = state
        .engine
        .slots()
        .router_addr()
        .map(|a| a.port())
        .unwrap_or(state.settings.router.listen.port());
    let can_swap = nav.user.is_some();
    let mut apps = sections(&views, &domain, port);
    if let Some(app) = &query.swapped
        && let Some(section) = apps.iter_mut().find(|a| &a.app == app)
    {
        section.done = swap_done(&views, app);
    }
    render(&EnvironmentsPage {
        apps,
        router: format!("{domain}:{port}"),
        can_swap,
        nav,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct SwapForm {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// `on` for a swap with preview.
    #[serde(default)]
    pub preview: Option<String>,
    /// `on` for the Roll back action.
    #[serde(default)]
    pub rollback: Option<String>,
    /// Why (required for a rollback).
    #[serde(default)]
    pub reason: String,
    /// `on`: a release manager overrides the stage's approvals and gates.
    #[serde(rename = "override", default)]
    pub override_guards: Option<String>,
    #[serde(default)]
    pub override_reason: String,
    /// `on`: confirms the swap with preview that waits.
    #[serde(default)]
    pub confirm: Option<String>,
    #[serde(default)]
    pub csrf: String,
}

fn on(flag: &Option<String>) -> bool {
    flag.as_deref().is_some_and(|v| !v.is_empty())
}

/// The confirmation page of a swap or rollback: what will change.
#[derive(Template)]
#[template(path = "pages/swap_review.html")]
pub struct SwapReviewPage {
    pub nav: Nav,
    pub review: SwapReview,
    pub heading: String,
    /// The Roll back action (a reason is required).
    pub rollback: bool,
    pub preview: bool,
    /// The person may override the stage's approvals and gates.
    pub may_override: bool,
    pub swap_url: String,
    pub stage_url: Option<String>,
    pub incoming_url: String,
    pub outgoing_url: Option<String>,
    /// Why the last attempt was refused (the form comes back with it).
    pub error: Option<String>,
    pub reason: String,
    pub override_checked: bool,
    pub override_reason: String,
}

impl SwapReviewPage {
    fn new(nav: Nav, review: SwapReview, form: &SwapForm, may_override: bool) -> SwapReviewPage {
        let rollback = on(&form.rollback);
        let preview = on(&form.preview) && !review.confirms_preview();
        let heading = if rollback {
            format!("Roll back {} to {}", review.to, review.incoming)
        } else if review.confirms_preview() {
            format!("Confirm the swap of {} into {}", review.from, review.to)
        } else if preview {
            format!(
                "Prepare a swap of {} into {} with preview",
                review.from, review.to
            )
        } else {
            format!("Swap {} into {}", review.from, review.to)
        };
        SwapReviewPage {
            heading,
            rollback,
            preview,
            may_override: may_override && !review.guards.is_empty() && !preview,
            swap_url: urls::app_swap(&review.app),
            stage_url: review
                .stage
                .as_ref()
                .map(|s| urls::stage(&review.pipeline, s)),
            incoming_url: urls::release(&review.pipeline, &review.incoming),
            outgoing_url: review
                .outgoing
                .as_ref()
                .map(|v| urls::release(&review.pipeline, v)),
            error: None,
            reason: form.reason.clone(),
            override_checked: on(&form.override_guards),
            override_reason: form.override_reason.clone(),
            review,
            nav,
        }
    }
}

fn slots_named(form: &SwapForm) -> Result<(String, String), WebError> {
    let (from, to) = (form.from.trim(), form.to.trim());
    if from.is_empty() || to.is_empty() {
        return Err(WebError::BadRequest(
            "Say which slot to swap (from) into which (to).".into(),
        ));
    }
    Ok((from.to_string(), to.to_string()))
}

async fn review_of(state: &State, app: &str, from: &str, to: &str) -> Result<SwapReview, WebError> {
    let (app, from, to) = (app.to_string(), from.to_string(), to.to_string());
    state
        .with_conn::<_, WebError, _>(move |conn| {
            Ok(crate::engine::deploy::swaps::review(
                conn, &app, &from, &to,
            )?)
        })
        .await
}

/// `GET /environments/{app}/swap?from=…&to=…[&rollback=on][&preview=on]`:
/// the confirmation page — releases before and after, the settings that
/// move, the stage whose approvals and gates the swap goes through.
pub async fn review(
    state: State,
    nav: Nav,
    user: CurrentUser,
    path: web::Path<String>,
    query: web::Query<SwapForm>,
) -> Result<HttpResponse, WebError> {
    let may_override = user
        .require_action(Action::SwapSlots)?
        .allowed(Action::OverrideGates);
    let (from, to) = slots_named(&query)?;
    let review = review_of(&state, &path.into_inner(), &from, &to).await?;
    render(&SwapReviewPage::new(nav, review, &query, may_override))
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

fn back() -> HttpResponse {
    see_other(urls::environments())
}

/// `POST /environments/{app}/swap`: swap (or prepare a swap with preview).
pub async fn swap(
    state: State,
    session: Session,
    nav: Nav,
    user: CurrentUser,
    path: web::Path<String>,
    form: web::Form<SwapForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let me = user.require_action(Action::SwapSlots)?;
    let (actor, may_override) = (me.username.clone(), me.allowed(Action::OverrideGates));
    let app = path.into_inner();
    let form = form.into_inner();
    let (from, to) = slots_named(&form)?;
    if on(&form.preview) && !on(&form.rollback) {
        // Prepares the swap only (no traffic moves): confirming it is the
        // swap that goes through the stage.
        state
            .engine
            .slots()
            .swap_preview(&app, &from, &to, &actor)
            .await?;
        return Ok(back());
    }
    let override_reason = on(&form.override_guards).then(|| form.override_reason.clone());
    if override_reason
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        return refused(
            &state,
            nav,
            (&app, &form, may_override),
            WebError::BadRequest("An override needs a reason.".into()),
        )
        .await;
    }
    let ask = SwapAsk {
        app: app.clone(),
        from,
        to,
        actor,
        rollback: on(&form.rollback),
        reason: Some(form.reason.clone()),
        override_reason,
        confirm: on(&form.confirm),
    };
    match state.engine.swap_slots(ask).await {
        Ok(done) => Ok(after_swap(&app, done)),
        Err(e) => refused(&state, nav, (&app, &form, may_override), e.into()).await,
    }
}

/// Where a swap ends: the deployment it became, or the page saying what
/// the swap did.
fn after_swap(app: &str, done: SwapDone) -> HttpResponse {
    let location = match done {
        SwapDone::Deployment {
            deployment,
            pipeline,
            version,
            ..
        } => urls::deployment(&pipeline, &version, deployment.id),
        SwapDone::Swapped(_) => format!(
            "{}{}",
            urls::environments(),
            urls::query(&[("swapped", app)])
        ),
    };
    see_other(location)
}

/// The confirmation page again, with why the swap was refused (and the
/// status of the refusal); an error without a page to show is returned.
async fn refused(
    state: &State,
    nav: Nav,
    (app, form, may_override): (&str, &SwapForm, bool),
    error: WebError,
) -> Result<HttpResponse, WebError> {
    let Ok(review) = review_of(state, app, form.from.trim(), form.to.trim()).await else {
        return Err(error);
    };
    let status = actix_web::ResponseError::status_code(&error);
    if status.is_server_error() {
        return Err(error);
    }
    let mut page = SwapReviewPage::new(nav, review, form, may_override);
    page.error = Some(error.to_string());
    let body = page.render().map_err(WebError::internal)?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// `POST /environments/{app}/swap/confirm`
pub async fn confirm(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let actor = user.require_action(Action::SwapSlots)?.username.clone();
    let app = path.into_inner();
    let (from, to) = state.engine.slots().pending_swap(&app).await?;
    // Confirming goes through the stage that owns the target slot, like
    // any swap.
    let done = state
        .engine
        .swap_slots(SwapAsk {
            app: app.clone(),
            from,
            to,
            actor,
            confirm: true,
            ..SwapAsk::default()
        })
        .await?;
    Ok(after_swap(&app, done))
}

/// `POST /environments/{app}/swap/cancel`
pub async fn cancel(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let actor = user.require_action(Action::SwapSlots)?.username.clone();
    state
        .engine
        .slots()
        .cancel_swap(&path.into_inner(), &actor)
        .await?;
    Ok(back())
}
