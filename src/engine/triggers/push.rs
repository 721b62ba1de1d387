//! Receiving a push: the use case behind `POST /hooks/{provider}/{pipeline}`
//! (`docs/webhooks.md`). The web handler reads the request (provider from
//! the path, body at most [`MAX_BODY`]) and answers [`receive`]'s outcome;
//! every decision and write is here.
//!
//! In order: the pipeline must exist (`NotFound`) and have a webhook secret
//! whose value is set ([`PushError::Unauthorized`]: an unsigned delivery is
//! never accepted); the signature must match (`Unauthorized`); the payload
//! must parse ([`PushError::BadPayload`]). Then ping and other events,
//! deleted refs and tags the version template does not use are ignored; a
//! delivery id seen before, or the same signed body seen before (under any
//! id, on any provider's path), is a [`PushOutcome::Duplicate`] and starts
//! nothing; a push queues a build — unless the branch filter excludes the
//! branch. Recording the delivery and queuing the build are one
//! transaction, so a failed queue does not swallow the provider's retry.
//! Nothing is stored before the signature is verified.

use secrecy::ExposeSecret;

use crate::domain::webhook::{self, Headers, Provider, PushEvent, WebhookError, WebhookEvent};
use crate::engine::builds::{self, BuildDetail, BuildRequest, QueueOutcome};
use crate::engine::secrets::{self, SecretKey};
use crate::engine::{EngineError, pipelines};
use crate::storage::{self, DbConn, webhooks};

/// The largest delivery accepted.
pub const MAX_BODY: usize = 1 << 20;

/// One delivery, as read from the request.
pub struct Delivery<'a> {
    /// Which provider's path it came in on.
    pub provider: Provider,
    /// The pipeline named by the path.
    pub pipeline: &'a str,
    pub headers: &'a Headers,
    /// The raw body: the signature covers these bytes.
    pub body: &'a [u8],
}

/// What a verified delivery did.
#[derive(Debug)]
pub enum PushOutcome {
    /// A build was queued (wake the dispatcher).
    Queued(Box<BuildDetail>),
    /// Acknowledged, starts nothing; the reason in words.
    Ignored(String),
    /// This delivery (its id, or its signed body) was received before.
    Duplicate,
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The delivery cannot be verified (no secret, no or a wrong
    /// signature): nothing changes.
    #[error("{0}")]
    Unauthorized(String),
    /// A verified delivery whose payload does not parse.
    #[error("{0}")]
    BadPayload(String),
    #[error(transparent)]
    Failed(#[from] EngineError),
}

impl From<WebhookError> for PushError {
    fn from(e: WebhookError) -> Self {
        if e.is_unauthorized() {
            PushError::Unauthorized(e.to_string())
        } else {
            PushError::BadPayload(e.to_string())
        }
    }
}

/// Verifies `delivery` against its pipeline's webhook secret and, for a
/// new push the pipeline builds, records it and queues its build.
pub fn receive(
    conn: &mut DbConn,
    key: &SecretKey,
    delivery: &Delivery<'_>,
) -> Result<PushOutcome, PushError> {
    let Delivery {
        provider,
        pipeline,
        headers,
        body,
    } = *delivery;
    let loaded = pipelines::load(conn, pipeline)?;
    let Some(secret_ref) = loaded.definition.source.webhook_secret.clone() else {
        return Err(PushError::Unauthorized(format!(
            "webhook secret not configured: {}",
            WebhookError::NoSecret
        )));
    };
    let secret = secrets::resolve_secret(conn, key, loaded.id, secret_ref.name())?
        .ok_or_else(|| {
            PushError::Unauthorized(format!(
                "webhook secret not configured: the secret {} of {} has no value yet; set it with `slipway secret set {} {}`",
                secret_ref.name(),
                loaded.name,
                loaded.name,
                secret_ref.name()
            ))
        })?;
    webhook::verify(provider, secret.expose_secret().as_bytes(), headers, body)?;
    let push = match webhook::parse(provider, headers, body)? {
        WebhookEvent::Push(push) => push,
        WebhookEvent::Ping => return Ok(PushOutcome::Ignored("ping".into())),
        WebhookEvent::Ignored { event } => {
            return Ok(PushOutcome::Ignored(format!(
                "`{event}` events start nothing"
            )));
        }
    };
    let Some(request) = build_request(provider, &loaded, &push) else {
        return Ok(PushOutcome::Ignored(ignored_push(&push)));
    };
    // A push the pipeline does not build is ignored before it is recorded,
    // so it can be delivered again once the filter takes it.
    if let Some(branch) = request.branch.as_deref()
        && !crate::domain::branch_may_build(&loaded.definition.source, &request.trigger, branch)
    {
        return Ok(PushOutcome::Ignored(filtered(branch)));
    }
    let delivery_id = webhook::delivery_id(provider, headers);
    let digest = webhook::body_digest(body);
    let outcome = storage::write_transaction::<_, EngineError, _>(conn, |conn| {
        // Both must be new: the id (a provider's retry) and the signed body
        // (a replay under another id or provider path).
        if let Some(id) = &delivery_id
            && !webhooks::record_delivery(conn, loaded.id, provider.as_str(), id)?
        {
            return Ok(PushOutcome::Duplicate);
        }
        if !webhooks::record_delivery(conn, loaded.id, webhook::ANY_PROVIDER, &digest)? {
            return Ok(PushOutcome::Duplicate);
        }
        Ok(match builds::queue_build(conn, &request)? {
            QueueOutcome::Queued(build) => {
                PushOutcome::Queued(Box::new(BuildDetail::queued(&loaded.name, *build)))
            }
            QueueOutcome::Filtered { branch } => PushOutcome::Ignored(filtered(&branch)),
        })
    })?;
    Ok(outcome)
}

fn filtered(branch: &str) -> String {
    format!("the branch filter excludes `{branch}`")
}

/// The build a push asks for, or `None` when it starts nothing: a deleted
/// ref, a tag when the version template does not use `{tag}`, a ref that
/// is neither a branch nor a tag.
fn build_request(
    provider: Provider,
    loaded: &pipelines::LoadedPipeline,
    push: &PushEvent,
) -> Option<BuildRequest> {
    if push.deleted {
        return None;
    }
    let branch = match (&push.branch, &push.tag) {
        (Some(branch), _) => branch.clone(),
        (None, Some(_)) if loaded.definition.version.as_str().contains("{tag}") => {
            loaded.definition.source.branch.clone()
        }
        _ => return None,
    };
    Some(BuildRequest {
        pipeline: loaded.name.clone(),
        branch: Some(branch),
        commit: Some(push.commit.clone()),
        trigger: format!("webhook:{}", provider.as_str()),
        requested_by: push
            .pusher
            .clone()
            .map(|p| format!("{p} via {}", provider.as_str()))
            .unwrap_or_else(|| provider.as_str().to_string()),
    })
}

/// Why a push that asks for no build is ignored, in words.
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
