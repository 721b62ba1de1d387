//! `/healthz`, `/readyz`, `/metrics`.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;

use crate::web::{State, text};

/// Liveness: the process answers.
pub async fn healthz() -> HttpResponse {
    text(StatusCode::OK, "ok\n")
}

/// Readiness: the database answers and every migration is applied.
pub async fn readyz(state: State) -> HttpResponse {
    let db = state.db.clone();
    let checked = actix_web::web::block(move || {
        db.ping()?;
        db.pending_migrations()
    })
    .await;
    match checked {
        Ok(Ok(0)) => text(StatusCode::OK, "ready\n"),
        Ok(Ok(n)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: {} pending\n",
                crate::web::views::plural(n, "migration", "migrations")
            ),
        ),
        Ok(Err(e)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: database: {e}\n"),
        ),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}

/// Prometheus text format.
pub async fn metrics(state: State) -> HttpResponse {
    let (connections, idle) = state.db.pool_state();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(connections, idle))
}
