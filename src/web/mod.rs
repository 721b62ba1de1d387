//! The web layer: the single route table, extractors, errors, pages and the
//! JSON API. Handlers are thin: extract, call one engine/storage function,
//! render or serialize.

pub mod api;
pub mod assets;
pub mod auth;
pub mod csrf;
pub mod error;
pub mod events;
pub mod headers;
pub mod hooks;
pub mod login;
pub mod metrics;
pub mod nav;
pub mod oidc;
pub mod pages;
pub mod session;
pub mod urls;
pub mod views;

use std::net::TcpListener;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::config::Settings;
use crate::storage::{Db, DbConn};
pub use error::{ApiError, WebError};

/// What every handler can reach.
pub struct AppState {
    pub db: Db,
    pub settings: Settings,
    pub metrics: metrics::Metrics,
    /// Encrypts and decrypts secret values (`engine::secrets`).
    pub secret_key: std::sync::Arc<crate::engine::secrets::SecretKey>,
    /// The SSO provider, discovered by [`oidc::start`] when
    /// `settings.oidc` is set; empty without SSO.
    pub sso: std::sync::OnceLock<std::sync::Arc<oidc::Sso>>,
    /// The build engine: call `engine.notify()` after queuing a build and
    /// `engine.signal_cancel(id)` after canceling one. Started by `serve`.
    pub engine: crate::engine::runtime::Engine,
}

pub type State = web::Data<AppState>;

impl AppState {
    /// The state of a server over `db` with this (not yet started)
    /// engine; built by `app::Application`, the one place that wires
    /// Slipway together.
    pub fn new(
        db: Db,
        settings: Settings,
        secret_key: std::sync::Arc<crate::engine::secrets::SecretKey>,
        engine: crate::engine::runtime::Engine,
    ) -> web::Data<AppState> {
        web::Data::new(AppState {
            engine,
            db,
            settings,
            metrics: metrics::Metrics::default(),
            secret_key,
            sso: std::sync::OnceLock::new(),
        })
    }

    /// Runs synchronous database work on the blocking pool, never on the executor.
    pub async fn with_conn<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConn) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<WebError> + From<crate::storage::StorageError> + Send + 'static,
    {
        let db = self.db.clone();
        web::block(move || {
            let mut conn = db.get()?;
            f(&mut conn)
        })
        .await
        .map_err(|e| E::from(WebError::from(e)))?
    }
}

/// The route table: pages, API, health and static files.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(pages::board::index))
        .route("/login", web::get().to(login::login_form))
        .route("/login", web::post().to(login::login))
        .route("/logout", web::post().to(login::logout))
        .route("/auth/oidc/login", web::get().to(oidc::login))
        .route("/auth/oidc/callback", web::get().to(oidc::callback))
        .route("/settings/tokens", web::get().to(pages::settings::tokens))
        .route("/settings/tokens", web::post().to(pages::settings::create))
        .route(
            "/settings/tokens/{id}/revoke",
            web::post().to(pages::settings::revoke),
        )
        .route(
            "/settings/sessions/revoke",
            web::post().to(pages::settings::sign_out_everywhere),
        )
        .route("/admin/users", web::get().to(pages::admin::list))
        .route(
            "/admin/users/{id}/role",
            web::post().to(pages::admin::set_role),
        )
        .route(
            "/admin/users/{id}/groups",
            web::post().to(pages::admin::add_group),
        )
        .route(
            "/admin/users/{id}/groups/remove",
            web::post().to(pages::admin::remove_group),
        )
        .route(
            "/admin/users/{id}/disable",
            web::post().to(pages::admin::disable),
        )
        .route(
            "/admin/users/{id}/enable",
            web::post().to(pages::admin::enable),
        )
        .route(
            "/admin/notifications",
            web::get().to(pages::notifications::list),
        )
        .route(
            "/admin/notifications/{id}/retry",
            web::post().to(pages::notifications::retry),
        )
        .route("/audit", web::get().to(pages::audit::list))
        .route(
            "/hooks/{provider}/{pipeline}",
            web::post().to(hooks::receive),
        )
        .route("/events", web::get().to(events::stream))
        .route("/healthz", web::get().to(pages::ops::healthz))
        .route("/readyz", web::get().to(pages::ops::readyz))
        .route("/metrics", web::get().to(pages::ops::metrics))
        .route("/static/{file}", web::get().to(assets::file))
        .route(
            "/pipelines/{pipeline}",
            web::get().to(pages::pipelines::overview),
        )
        .route(
            "/pipelines/{pipeline}/releases",
            web::get().to(pages::releases::history),
        )
        .route(
            "/pipelines/{pipeline}/releases/{version}",
            web::get().to(pages::releases::detail),
        )
        .route(
            "/pipelines/{pipeline}/releases/{version}/artifacts/{path:.+}",
            web::get().to(pages::releases::artifact),
        )
        .route(
            "/pipelines/{pipeline}/stages/{stage}",
            web::get().to(pages::stage_overview::overview),
        )
        .route(
            "/pipelines/{pipeline}/stages/{stage}/configure",
            web::get().to(pages::stages::config),
        )
        .route(
            "/pipelines/{pipeline}/stages/{stage}/configure",
            web::post().to(pages::stages::save),
        )
        // The configuration form posted here before it had its own page.
        .route(
            "/pipelines/{pipeline}/stages/{stage}",
            web::post().to(pages::stages::save),
        )
        .route(
            "/pipelines/{pipeline}/stages/{stage}/rollback",
            web::post().to(pages::deploy::rollback),
        )
        .route(
            "/pipelines/{pipeline}/builds/{number}/retry",
            web::post().to(pages::actions::retry_build),
        )
        .route(
            "/pipelines/{pipeline}/builds",
            web::get().to(pages::builds::list),
        )
        .route(
            "/pipelines/{pipeline}/builds/{number}",
            web::get().to(pages::builds::detail),
        )
        .route(
            "/pipelines/{pipeline}/builds",
            web::post().to(pages::actions::build_now),
        )
        .route(
            "/pipelines/{pipeline}/builds/{number}/cancel",
            web::post().to(pages::actions::cancel_build),
        )
        .route(
            "/pipelines/{pipeline}/secrets",
            web::post().to(pages::actions::set_secret),
        )
        .route(
            "/pipelines/{pipeline}/releases/{version}/deployments/{id}",
            web::get().to(pages::deployments::detail),
        )
        .route(
            "/pipelines/{pipeline}/releases/{version}/deployments/{id}/cancel",
            web::post().to(pages::deployments::cancel),
        )
        .route(
            "/pipelines/{pipeline}/releases/{version}/deployments/{id}/redeploy",
            web::post().to(pages::deployments::redeploy),
        )
        .route(
            "/pipelines/{pipeline}/stages/{stage}/deploy",
            web::post().to(pages::deploy::deploy),
        )
        .route("/environments", web::get().to(pages::environments::index))
        .route("/approvals", web::get().to(pages::approvals::index))
        .route("/approvals/batch", web::post().to(pages::approvals::batch))
        .route("/approvals/{id}", web::get().to(pages::approvals::show))
        .route("/approvals/{id}", web::post().to(pages::approvals::decide))
        .route("/gates", web::get().to(pages::gates::index))
        .route("/gates/{id}", web::get().to(pages::gates::show))
        .route(
            "/gates/{id}/reevaluate",
            web::post().to(pages::gates::reevaluate),
        )
        .route("/gates/{id}/bypass", web::post().to(pages::gates::bypass))
        .route("/gates/{id}/answer", web::post().to(pages::gates::answer))
        .route(
            "/environments/{app}/swap",
            web::post().to(pages::environments::swap),
        )
        .route(
            "/environments/{app}/swap",
            web::get().to(pages::environments::review),
        )
        .route(
            "/environments/{app}/swap/confirm",
            web::post().to(pages::environments::confirm),
        )
        .route(
            "/environments/{app}/swap/cancel",
            web::post().to(pages::environments::cancel),
        )
        .service(web::scope("/api/v1").configure(api::routes));
}

/// The largest request body the API and forms take (1 MiB).
pub const BODY_LIMIT: usize = 1 << 20;

/// Starts the HTTP server on an already bound listener (port 0 in tests).
pub fn server(state: web::Data<AppState>, listener: TcpListener) -> std::io::Result<Server> {
    let session_key = session::load_or_create_key(&state.settings.data_dir)
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    if state.settings.oidc.is_some() && state.sso.get().is_none() {
        return Err(std::io::Error::other(
            "single sign-on is configured but its provider was not discovered (call web::oidc::start first)",
        ));
    }
    let secure_cookies = state.settings.public_url.starts_with("https://");
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(
                web::PathConfig::default()
                    .error_handler(|err, req| bad_input(req, err.to_string())),
            )
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|err, req| bad_input(req, err.to_string())),
            )
            .app_data(
                web::JsonConfig::default()
                    .limit(BODY_LIMIT)
                    .error_handler(json_error),
            )
            .app_data(web::PayloadConfig::default().limit(BODY_LIMIT))
            .configure(routes)
            .default_service(web::to(not_found))
            .wrap(from_fn(csrf::guard))
            .wrap(from_fn(auth::authenticate))
            .wrap(from_fn(error::with_nav))
            .wrap(session::middleware(session_key.clone(), secure_cookies))
            .wrap(from_fn(track))
            .wrap(from_fn(headers::security_headers))
            .wrap(TracingLogger::default())
    })
    .listen(listener)?
    .shutdown_timeout(10)
    .run();
    Ok(server)
}

pub(crate) fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

fn bad_input(req: &HttpRequest, message: String) -> actix_web::Error {
    let e = WebError::BadRequest(message);
    if is_api(req.path()) {
        ApiError(e).into()
    } else {
        e.into()
    }
}

/// A JSON body that cannot be read: 415 without `application/json`, 413
/// over [`BODY_LIMIT`], 400 otherwise.
fn json_error(err: actix_web::error::JsonPayloadError, req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    let e = match err {
        E::ContentType => WebError::UnsupportedMediaType(
            "The body must be JSON sent with Content-Type: application/json.".into(),
        ),
        E::Overflow { .. } | E::OverflowKnownLength { .. } => WebError::PayloadTooLarge(format!(
            "The request body is larger than the {} KiB this route takes.",
            BODY_LIMIT / 1024
        )),
        other => WebError::BadRequest(other.to_string()),
    };
    if is_api(req.path()) {
        ApiError(e).into()
    } else {
        e.into()
    }
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, actix_web::Error> {
    let e = WebError::NotFound(format!("There is no page at {}.", req.path()));
    Err(if is_api(req.path()) {
        ApiError(e).into()
    } else {
        e.into()
    })
}

/// Records every request in the metrics, by route pattern and status.
async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let state = req.app_data::<State>().cloned();
    let method = req.method().to_string();
    let res = next.call(req).await?;
    if let Some(state) = state {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_string());
        state
            .metrics
            .record(&route, &method, res.status().as_u16(), start.elapsed());
    }
    Ok(res)
}

/// A plain-text answer, for the health endpoints.
pub fn text(status: actix_web::http::StatusCode, body: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(body.into())
}
