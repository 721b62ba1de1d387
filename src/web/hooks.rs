//! `POST /hooks/{provider}/{pipeline}`: push webhooks of GitHub, GitLab,
//! Gitea and the generic HMAC shape (`docs/webhooks.md`).
//!
//! In order: the provider must be known (404) and the body at most 1 MiB
//! (413); the pipeline must exist (404) and have a webhook secret whose
//! value is set (401: an unsigned delivery is never accepted); the
//! signature must match (401); the payload must parse (400). Then ping and
//! other events, deleted refs and tags the version template does not use
//! are acknowledged and ignored (200); a delivery id seen before, or the
//! same signed body seen before (under any id, on any provider's path), is
//! acknowledged as a duplicate (200) and starts nothing; a push queues a
//! build — unless the branch filter excludes the branch — and answers 202
//! with it. Recording the delivery and queuing the build are one
//! transaction, so a failed queue does not swallow the provider's retry.
//! Nothing is stored before the signature is verified. Answers are JSON.

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::domain::webhook::{self, Headers, Provider, PushEvent, WebhookError, WebhookEvent};
use crate::engine::builds::{self, BuildRequest, QueueOutcome};
use crate::engine::{EngineError, pipelines, secrets};
use crate::storage::{self, webhooks};
use crate::web::api::builds::BuildDto;
use crate::web::{ApiError, State, WebError};

/// The largest delivery accepted.
pub const MAX_BODY: usize = 1 << 20;

/// What the route did with a verified delivery.
enum Handled {
    Queued(Box<builds::BuildDetail>),
    Ignored(String),
    Duplicate,
}

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
    let handled = state
        .with_conn::<_, ApiError, _>(move |conn| {
            let loaded = pipelines::load(conn, &pipeline)?;
            let Some(secret_ref) = loaded.definition.source.webhook_secret.clone() else {
                return Err(WebError::Unauthorized(format!(
                    "webhook secret not configured: {}",
                    WebhookError::NoSecret
                ))
                .into());
            };
            let secret = secrets::resolve_secret(conn, &key, loaded.id, secret_ref.name())?
                .ok_or_else(|| {
                    WebError::Unauthorized(format!(
                        "webhook secret not configured: the secret {} of {} has no value yet; set it with `slipway secret set {} {}`",
                        secret_ref.name(),
                        loaded.name,
                        loaded.name,
                        secret_ref.name()
                    ))
                })?;
            webhook::verify(provider, secret.expose_secret().as_bytes(), &headers, &body)
                .map_err(webhook_error)?;
            let event = webhook::parse(provider, &headers, &body).map_err(webhook_error)?;
            let push = match event {
                WebhookEvent::Push(push) => push,
                WebhookEvent::Ping => return Ok(Handled::Ignored("ping".into())),
                WebhookEvent::Ignored { event } => {
                    return Ok(Handled::Ignored(format!("`{event}` events start nothing")));
                }
            };
            let Some(request) = build_request(provider, &loaded, &push)? else {
                return Ok(Handled::Ignored(ignored_push(&push)));
            };
            // A push the pipeline does not build is ignored before it is
            // recorded, so it can be delivered again once the filter takes it.
            if let Some(branch) = request.branch.as_deref()
                && !crate::domain::branch_may_build(&loaded.definition.source, &request.trigger, branch)
            {
                return Ok(Handled::Ignored(format!(
                    "the branch filter excludes `{branch}`"
                )));
            }
            let delivery = webhook::delivery_id(provider, &headers);
            let digest = webhook::body_digest(&body);
            storage::write_transaction::<_, EngineError, _>(conn, |conn| {
                // Both must be new: the id (a provider's retry) and the
                // signed body (a replay under another id or provider path).
                if let Some(id) = &delivery
                    && !webhooks::record_delivery(conn, loaded.id, provider.as_str(), id)?
                {
                    return Ok(Handled::Duplicate);
                }
                if !webhooks::record_delivery(conn, loaded.id, webhook::ANY_PROVIDER, &digest)? {
                    return Ok(Handled::Duplicate);
                }
                match builds::queue_build(conn, &request)? {
                    QueueOutcome::Queued(build) => Ok(Handled::Queued(Box::new(
                        builds::BuildDetail::queued(&loaded.name, *build),
                    ))),
                    QueueOutcome::Filtered { branch } => Ok(Handled::Ignored(format!(
                        "the branch filter excludes `{branch}`"
                    ))),
                }
            })
            .map_err(ApiError::from)
        })
        .await?;
    Ok(match handled {
        Handled::Queued(detail) => {
            state.engine.notify();
            HttpResponse::Accepted().json(json!({
                "status": "queued",
                "build": BuildDto::from(detail.as_ref()),
            }))
        }
        Handled::Ignored(reason) => HttpResponse::Ok().json(json!({
            "status": "ignored",
            "reason": reason,
        })),
        Handled::Duplicate => HttpResponse::Ok().json(json!({
            "status": "duplicate",
            "reason": "this delivery was received before",
        })),
    })
}

fn webhook_error(e: WebhookError) -> ApiError {
    if e.is_unauthorized() {
        WebError::Unauthorized(e.to_string()).into()
    } else {
        WebError::BadRequest(e.to_string()).into()
    }
}

/// The build a push asks for, or `None` when it starts nothing: a deleted
/// ref, a tag when the version template does not use `{tag}`, a ref that
/// is neither a branch nor a tag.
fn build_request(
    provider: Provider,
    loaded: &pipelines::LoadedPipeline,
    push: &PushEvent,
) -> Result<Option<BuildRequest>, EngineError> {
    if push.deleted {
        return Ok(None);
    }
    let branch = match (&push.branch, &push.tag) {
        (Some(branch), _) => branch.clone(),
        (None, Some(_)) if loaded.definition.version.as_str().contains("{tag}") => {
            loaded.definition.source.branch.clone()
        }
        _ => return Ok(None),
    };
    Ok(Some(BuildRequest {
        pipeline: loaded.name.clone(),
        branch: Some(branch),
        commit: Some(push.commit.clone()),
        trigger: format!("webhook:{}", provider.as_str()),
        requested_by: push
            .pusher
            .clone()
            .map(|p| format!("{p} via {}", provider.as_str()))
            .unwrap_or_else(|| provider.as_str().to_string()),
    }))
}

fn ignored_push(push: &PushEvent) -> String {
    if push.deleted {
        format!("`{}` was deleted", push.git_ref)
    } else if push.tag.is_some() {
        format!(
            "`{}` is a tag and the version template does not use {{tag}}",
            push.git_ref
        )
    } else {
        format!("`{}` is neither a branch nor a tag", push.git_ref)
    }
}
