//! Server-rendered pages: one module per area, each with its view structs
//! and thin handlers.

pub mod actions;
pub mod admin;
pub mod approvals;
pub mod audit;
pub mod board;
pub mod builds;
pub mod deploy;
pub mod deployments;
pub mod environments;
pub mod gates;
pub mod notifications;
pub mod ops;
pub mod pipelines;
pub mod releases;
pub mod settings;
pub mod stage_overview;
pub mod stages;

use actix_web::{HttpResponse, http::header};
use askama::Template;

use super::WebError;

/// Renders a page template into a 200 response.
pub fn render<T: Template>(page: &T) -> Result<HttpResponse, WebError> {
    let body = page.render().map_err(WebError::internal)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(body))
}

/// A 303 to `location`: where a form post goes on to (post, redirect, get).
pub fn see_other(location: impl Into<String>) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location.into()))
        .finish()
}

/// Where a form goes on to: its `next` when not blank (kept inside Slipway
/// by `safe_next`), else `default`.
pub fn next_or(next: Option<&str>, default: String) -> String {
    match next.map(str::trim).filter(|n| !n.is_empty()) {
        Some(next) => super::session::safe_next(Some(next)),
        None => default,
    }
}
