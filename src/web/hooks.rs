//! `POST /hooks/{provider}/{pipeline}`: push webhooks of GitHub, GitLab,
//! Gitea and the generic HMAC shape (`docs/webhooks.md`).
//!
//! A thin handler over the engine's use case ([`crate::engine::triggers::push`]):
//! the provider must be known (404) and the body at most 1 MiB (413);
//! then the engine decides, and its outcome is answered here: an unknown
//! pipeline 404, a delivery that cannot be verified 401, a payload that
//! does not parse 400; ignored events and duplicates 200, a queued build
//! 202 with it. Answers are JSON.

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::json;

use crate::domain::webhook::{Headers, Provider, WebhookError};
use crate::engine::triggers::push::{self, Delivery, MAX_BODY, PushError, PushOutcome};
use crate::web::api::builds::BuildDto;
use crate::web::{ApiError, State, WebError};

/// Receives a delivery.
pub async fn receive(
    state: State,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    mut payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (provider, pipeline) = path.into_inner();
    let provider: Provider = provider
        .parse()
        .map_err(|e: WebhookError| WebError::NotFound(e.to_string()))?;
    let too_large = || {
        WebError::PayloadTooLarge(format!(
            "A webhook delivery is at most {} MiB.",
            MAX_BODY >> 20
        ))
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large().into());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| WebError::BadRequest(format!("cannot read the body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large().into());
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    let headers: Headers = req
        .headers()
        .iter()
        .filter_map(|(name, value)| value.to_str().ok().map(|v| (name.as_str(), v.to_string())))
        .collect();
    let key = state.secret_key.clone();
    let outcome = state
        .with_conn::<_, ApiError, _>(move |conn| {
            let delivery = Delivery {
                provider,
                pipeline: &pipeline,
                headers: &headers,
                body: &body,
            };
            push::receive(conn, &key, &delivery).map_err(push_error)
        })
        .await?;
    Ok(match outcome {
        PushOutcome::Queued(detail) => {
            state.engine.notify();
            HttpResponse::Accepted().json(json!({
                "status": "queued",
                "build": BuildDto::from(detail.as_ref()),
            }))
        }
        PushOutcome::Ignored(reason) => HttpResponse::Ok().json(json!({
            "status": "ignored",
            "reason": reason,
        })),
        PushOutcome::Duplicate => HttpResponse::Ok().json(json!({
            "status": "duplicate",
            "reason": "this delivery was received before",
        })),
    })
}

/// A refused delivery's answer: 401 when it cannot be verified, 400 when
/// its payload does not parse, else the engine error's.
fn push_error(e: PushError) -> ApiError {
    match e {
        PushError::Unauthorized(m) => WebError::Unauthorized(m).into(),
        PushError::BadPayload(m) => WebError::BadRequest(m).into(),
        PushError::Failed(e) => e.into(),
    }
}
