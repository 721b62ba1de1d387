//! `/api/v1/pipelines/{pipeline}/secrets`: set, list (names only), delete.
//! A value goes in, never out.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::authz::Action;
use crate::engine::secrets;
use crate::web::auth::CurrentUser;
use crate::web::{ApiError, State};

/// A secret as the API shows one: its name, never its value.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretDto {
    pub name: String,
    /// When the value last changed.
    pub updated_at: DateTime<Utc>,
}

/// The new value of a secret.
#[derive(Deserialize, ToSchema)]
pub struct SetSecretBody {
    /// The value; stored encrypted, never shown again.
    #[schema(value_type = String, format = Password)]
    pub value: SecretString,
}

/// Routes below `/api/v1`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/pipelines/{pipeline}/secrets", web::get().to(list))
        .route("/pipelines/{pipeline}/secrets/{name}", web::put().to(set))
        .route(
            "/pipelines/{pipeline}/secrets/{name}",
            web::delete().to(delete),
        );
}

/// The names of a pipeline's secrets (never their values).
#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/secrets", tag = "secrets",
    params(("pipeline" = String, Path, description = "pipeline name")),
    responses(
        (status = 200, body = [SecretDto]),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    state: State,
    user: CurrentUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    user.require_action(Action::Read)?;
    let pipeline = path.into_inner();
    let names = state
        .with_conn::<_, ApiError, _>(move |conn| {
            Ok(secrets::list_secret_names_of(conn, &pipeline)?)
        })
        .await?;
    let body: Vec<SecretDto> = names
        .into_iter()
        .map(|s| SecretDto {
            name: s.name,
            updated_at: s.updated_at.and_utc(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(body))
}

/// Sets (creates or replaces) a secret's value. Needs the release manager role.
#[utoipa::path(put, path = "/api/v1/pipelines/{pipeline}/secrets/{name}", tag = "secrets",
    params(
        ("pipeline" = String, Path, description = "pipeline name"),
        ("name" = String, Path, description = "secret name, `[A-Za-z_][A-Za-z0-9_]*`")),
    request_body = SetSecretBody,
    responses(
        (status = 204, description = "stored"),
        (status = 400, body = crate::web::error::ErrorBody),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody),
        (status = 422, body = crate::web::error::ErrorBody, description = "invalid name or empty value")),
    security(("bearer" = [])))]
pub async fn set(
    state: State,
    user: CurrentUser,
    path: web::Path<(String, String)>,
    body: web::Json<SetSecretBody>,
) -> Result<HttpResponse, ApiError> {
    let actor = user.require_action(Action::ManageSecrets)?.username.clone();
    let (pipeline, name) = path.into_inner();
    let value = body.into_inner().value;
    let key = state.secret_key.clone();
    state
        .with_conn::<_, ApiError, _>(move |conn| {
            Ok(secrets::set_secret(
                conn, &key, &pipeline, &name, &value, &actor,
            )?)
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes a secret. Needs the release manager role.
#[utoipa::path(delete, path = "/api/v1/pipelines/{pipeline}/secrets/{name}", tag = "secrets",
    params(
        ("pipeline" = String, Path, description = "pipeline name"),
        ("name" = String, Path, description = "secret name")),
    responses(
        (status = 204, description = "deleted"),
        (status = 401, body = crate::web::error::ErrorBody),
        (status = 403, body = crate::web::error::ErrorBody),
        (status = 404, body = crate::web::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    state: State,
    user: CurrentUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let actor = user.require_action(Action::ManageSecrets)?.username.clone();
    let (pipeline, name) = path.into_inner();
    state
        .with_conn::<_, ApiError, _>(move |conn| {
            Ok(secrets::delete_secret(conn, &pipeline, &name, &actor)?)
        })
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
