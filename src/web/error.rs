//! One error type for handlers: an HTML error page for pages, the JSON
//! error shape of SPEC §3 for the API (`ApiError`). 5xx are logged with
//! their whole cause chain; their text never reaches the client.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use serde::Serialize;

use crate::engine::EngineError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl WebError {
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        WebError::Internal(e.into())
    }

    /// A short machine-readable code for the JSON error shape.
    pub fn code(&self) -> &'static str {
        match self {
            WebError::NotFound(_) => "not_found",
            WebError::BadRequest(_) => "bad_request",
            WebError::Unprocessable(_) => "invalid",
            WebError::Conflict(_) => "conflict",
            WebError::Unauthorized(_) => "unauthorized",
            WebError::Forbidden(_) => "forbidden",
            WebError::PayloadTooLarge(_) => "payload_too_large",
            WebError::UnsupportedMediaType(_) => "unsupported_media_type",
            WebError::Internal(_) => "internal",
        }
    }

    /// What a client may read: the message, except for internal errors.
    pub fn public_message(&self) -> String {
        match self {
            WebError::Internal(_) => {
                "Something went wrong inside Slipway; the error is in the server log.".into()
            }
            other => other.to_string(),
        }
    }

    fn log(&self) {
        if let WebError::Internal(e) = self {
            tracing::error!(error = format!("{e:#}"), "internal error");
        }
    }
}

/// How the engine's errors answer over HTTP (the engine knows no HTTP).
impl From<EngineError> for WebError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(m) => WebError::Unprocessable(m),
            EngineError::Definition(d) => WebError::Unprocessable(d.to_string()),
            EngineError::NotFound(m) => WebError::NotFound(m),
            EngineError::Conflict(m) => WebError::Conflict(m),
            EngineError::Refused(m) => WebError::Conflict(m),
            EngineError::Forbidden(m) => WebError::Forbidden(m),
            EngineError::TooLarge(m) => WebError::PayloadTooLarge(m),
            EngineError::Storage(s) => s.into(),
            EngineError::Io { .. } => WebError::internal(e),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError(e.into())
    }
}

impl From<StorageError> for WebError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => WebError::NotFound("Not found.".into()),
            StorageError::Conflict(m) => WebError::Conflict(m),
            other => WebError::Internal(other.into()),
        }
    }
}

impl From<actix_web::error::BlockingError> for WebError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        WebError::Internal(anyhow::anyhow!("blocking task failed: {e}"))
    }
}

#[derive(Template)]
#[template(path = "errors/error.html")]
struct ErrorPage<'a> {
    nav: super::nav::Nav,
    title: &'a str,
    status: u16,
    message: &'a str,
}

impl ResponseError for WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            WebError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        self.log();
        HttpResponse::build(self.status_code())
            .content_type("text/html; charset=utf-8")
            .body(self.page(super::nav::Nav::anonymous()))
    }
}

impl WebError {
    /// The error page's HTML, with `nav` as its header.
    fn page(&self, nav: super::nav::Nav) -> String {
        let status = self.status_code();
        let title = match self {
            WebError::NotFound(_) => "Not found",
            WebError::Unauthorized(_) => "Sign-in required",
            WebError::Forbidden(_) => "Not allowed",
            WebError::Internal(_) => "Server error",
            _ => "Cannot do that",
        };
        let message = self.public_message();
        ErrorPage {
            nav,
            title,
            status: status.as_u16(),
            message: &message,
        }
        .render()
        .unwrap_or_else(|_| format!("{} {}", status.as_u16(), title))
    }
}

/// Middleware: an HTML error page gets the request's navigation (who is
/// signed in, their approvals, the current section), the same header as
/// every other page. [`ResponseError::error_response`] has no request, so
/// it renders an anonymous header; this renders the page again.
pub async fn with_nav(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let res = next.call(req).await?;
    let page = res
        .response()
        .error()
        .and_then(|e| e.as_error::<WebError>())
        .map(|e| e.page(super::nav::Nav::of(res.request())));
    Ok(match page {
        Some(body) => res.map_body(|_, _| BoxBody::new(body)),
        None => res.map_into_boxed_body(),
    })
}

/// The API's face of [`WebError`]: `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] pub WebError);

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        ApiError(e.into())
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError(e.into())
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.log();
        HttpResponse::build(self.status_code()).json(ErrorBody {
            error: ErrorDetail {
                code: self.0.code().into(),
                message: self.0.public_message(),
            },
        })
    }
}
