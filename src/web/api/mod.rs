//! The JSON API under `/api/v1`, described by `/api/v1/openapi.json`.

pub mod approvals;
pub mod builds;
pub mod deployments;
pub mod dto;
pub mod gates;
pub mod pipelines;
pub mod releases;
pub mod schedules;
pub mod secrets;
pub mod slots;

use actix_web::{HttpResponse, web};
use utoipa::OpenApi;

use super::WebError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Slipway API",
        description = "Release management: pipelines, releases, deployments. Authenticate with `Authorization: Bearer TOKEN`. A write authenticated by the browser session cookie instead must send the session's CSRF token in `X-CSRF-Token` and come from Slipway's own origin (else 403). Bodies are `application/json` (the pipeline import also takes `application/yaml`); other types are a 415, bodies over 1 MiB a 413. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        pipelines::list,
        pipelines::get,
        pipelines::import,
        pipelines::export,
        releases::list,
        releases::get,
        builds::queue, builds::list, builds::get, builds::log, builds::cancel,
        secrets::list, secrets::set, secrets::delete,
        slots::list, slots::swap, slots::confirm, slots::cancel,
        schedules::get,
        deployments::deploy, deployments::get, deployments::log, deployments::cancel, deployments::redeploy,
        approvals::list, approvals::get, approvals::decide,
        gates::list, gates::get, gates::reevaluate, gates::bypass, gates::answer,
    ),
    components(schemas(crate::web::error::ErrorBody, crate::web::error::ErrorDetail)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

/// Routes below `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json))
        .configure(approvals::routes)
        .configure(builds::routes)
        .configure(deployments::routes)
        .configure(gates::routes)
        .configure(secrets::routes)
        .configure(slots::routes)
        .configure(schedules::routes)
        .route("/pipelines", web::get().to(pipelines::list))
        .route("/pipelines", web::post().to(pipelines::import))
        .route("/pipelines/{pipeline}", web::get().to(pipelines::get))
        .route(
            "/pipelines/{pipeline}/export",
            web::get().to(pipelines::export),
        )
        .route(
            "/pipelines/{pipeline}/releases",
            web::get().to(releases::list),
        )
        .route(
            "/pipelines/{pipeline}/releases/{version}",
            web::get().to(releases::get),
        );
}

/// The page size of a list (`limit`, builds and releases): 1 to 200,
/// default 50.
pub(crate) fn page_size(limit: Option<i64>) -> Result<i64, WebError> {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(WebError::BadRequest(
            "`limit` must be between 1 and 200".into(),
        ));
    }
    Ok(limit)
}
