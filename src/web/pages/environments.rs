//! `/environments`: every app and slot — its host names, the release it
//! runs and since when, its process and health, its last swap — with Swap,
//! Roll back and (for a swap with preview) Confirm/Cancel forms for
//! release managers.

use actix_session::Session;
use actix_web::{HttpResponse, http::header, web};
use askama::Template;
use serde::Deserialize;

use super::render;
use crate::domain::authz::Action;
use crate::engine::slots::SlotView;
use crate::engine::slots::supervisor::Health;
use crate::web::auth::CurrentUser;
use crate::web::session::{Nav, check_csrf};
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
    /// `(from, to)` of the last swap into this slot, to repeat it (the rollback).
    pub rollback: Option<(String, String, String)>,
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
        let rollback = view.last_swap.as_ref().and_then(|s| {
            (s.state == "succeeded" && s.to == view.slot && view.previous_release.is_some()).then(
                || {
                    (
                        s.from.clone(),
                        s.to.clone(),
                        view.previous_release.clone().unwrap_or_default(),
                    )
                },
            )
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
                    if s.state == "succeeded" {
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
        });
    }
    apps
}

/// `GET /environments`
pub async fn index(state: State, nav: Nav) -> Result<HttpResponse, WebError> {
    let views = state.engine.slots().list_slots_view().await?;
    let domain = state.settings.router.domain.clone();
    let port = state
        .engine
        .slots()
        .router_addr()
        .map(|a| a.port())
        .unwrap_or(state.settings.router.listen.port());
    let can_swap = nav.user.is_some();
    render(&EnvironmentsPage {
        apps: sections(&views, &domain, port),
        router: format!("{domain}:{port}"),
        can_swap,
        nav,
    })
}

#[derive(Debug, Deserialize)]
pub struct SwapForm {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// `on` for a swap with preview.
    #[serde(default)]
    pub preview: Option<String>,
    #[serde(default)]
    pub csrf: String,
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

fn back() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, urls::environments()))
        .finish()
}

/// `POST /environments/{app}/swap`: swap (or prepare a swap with preview).
pub async fn swap(
    state: State,
    session: Session,
    user: CurrentUser,
    path: web::Path<String>,
    form: web::Form<SwapForm>,
) -> Result<HttpResponse, WebError> {
    check_csrf(&session, &form.csrf)?;
    let actor = user.require_action(Action::SwapSlots)?.username.clone();
    let app = path.into_inner();
    let (from, to) = (form.from.trim(), form.to.trim());
    if from.is_empty() || to.is_empty() {
        return Err(WebError::BadRequest(
            "Say which slot to swap (from) into which (to).".into(),
        ));
    }
    let slots = state.engine.slots();
    if form.preview.as_deref().is_some_and(|p| !p.is_empty()) {
        slots.swap_preview(&app, from, to, &actor).await?;
    } else {
        slots.swap(&app, from, to, &actor, None).await?;
    }
    Ok(back())
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
    state
        .engine
        .slots()
        .confirm_swap(&path.into_inner(), &actor)
        .await?;
    Ok(back())
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
