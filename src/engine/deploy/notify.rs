//! Notifications (issue 5): outgoing webhooks of a pipeline when an
//! approval is requested, decided, or about to time out
//! (`docs/notifications.md`).
//!
//! The approvals engine calls [`enqueue`] inside the transaction that
//! records the event, so a notice is stored exactly when the event is: one
//! `notification_deliveries` row per notification of the definition that
//! wants the event, holding the notice as JSON. [`Deliveries`], started
//! with the engine, sends them:
//!
//! - **Wake-up.** [`enqueue`] wakes every worker of the process; as the
//!   enqueuing transaction may not have committed yet, a worker woken that
//!   way looks after [`NotifyConfig::settle`]. `Engine::notify_notifications`
//!   wakes it at once; it also looks every [`NotifyConfig::poll`] (other
//!   instances' deliveries) and when the next retry is due.
//! - **Claims.** A due delivery is claimed with a conditional update
//!   (`attempts` as read), which counts the attempt and holds the delivery
//!   for the attempt's time-out plus a minute; several instances on one
//!   database send each attempt once, and a crashed sender's delivery is
//!   tried again after the hold.
//! - **Body.** Rendered from the stored notice at each attempt (the same
//!   bytes every time): generic JSON with `event` and the absolute `url`
//!   ([`NotifyConfig::public_url`] + the notice's path), or a Slack
//!   incoming-webhook message (`text` and `blocks`).
//! - **Signature.** With `secret:`, the secret's value (resolved from the
//!   pipeline's secret store at each attempt, never stored with the
//!   delivery) signs the body: `X-Slipway-Signature: sha256=<hex HMAC-SHA256>`.
//! - **Retries.** A non-2xx answer or no answer is tried again after
//!   [`NotifyConfig::backoff`], doubling each time; after
//!   [`NotifyConfig::max_attempts`] the delivery is `failed` (audited). An
//!   admin may try a failed delivery once more ([`Deliveries::retry_now`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::definition::{NotificationEvent, NotificationFormat};
use crate::domain::{Phase, PipelineDefinition};
use crate::engine::EngineError;
use crate::engine::secrets::SecretKey;
use crate::engine::{ENGINE_ACTOR, blocking};
use crate::storage::notifications::{self as store, AttemptOutcome, NewDelivery};
use crate::storage::{self, Db, DbConn, NotificationDeliveryRow};

/// What happened to an approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// Approvers are asked to decide.
    ApprovalRequested,
    /// The approval was decided (approved, rejected, timed out).
    ApprovalDecided,
    /// The approval times out soon.
    ApprovalExpiring,
}

/// One event about one approval, as the approvals engine reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NoticeKind,
    pub pipeline: String,
    pub release: String,
    pub stage: String,
    /// `before` or `after` the stage's tasks.
    pub phase: Phase,
    pub approval_id: i64,
    pub deployment_id: i64,
    pub requested_by: String,
    /// `alice`, `group:management`, …
    pub approvers: Vec<String>,
    /// `approved`, `rejected` or `timed_out` (decided notices only).
    pub outcome: Option<String>,
    /// Who decided (decided notices only; `slipway` for a time-out).
    pub decided_by: Option<String>,
    pub comment: Option<String>,
    /// When the approval times out (UTC).
    pub deadline: NaiveDateTime,
    /// The approval's path in Slipway (`/approvals/12`); prefixed with the
    /// public URL when sent.
    pub path: String,
}

impl NoticeKind {
    /// The definition's event for this kind.
    pub fn event(self) -> NotificationEvent {
        match self {
            NoticeKind::ApprovalRequested => NotificationEvent::ApprovalRequested,
            NoticeKind::ApprovalDecided => NotificationEvent::ApprovalDecided,
            NoticeKind::ApprovalExpiring => NotificationEvent::ApprovalExpiring,
        }
    }
}

/// How notifications are sent; the defaults suit a server.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    /// Slipway's address as people reach it (links in the bodies);
    /// `Settings::public_url`.
    pub public_url: String,
    /// The wait after the first failed attempt, doubled after each
    /// further one (default 10s).
    pub backoff: Duration,
    /// Attempts before a delivery is `failed` (default 8).
    pub max_attempts: i32,
    /// The worker looks for due deliveries at least this often (default 2s).
    pub poll: Duration,
    /// After a wake-up from [`enqueue`], the worker waits this long for the
    /// enqueuing transaction to commit (default 50ms).
    pub settle: Duration,
    /// The time limit of one attempt (default 10s).
    pub timeout: Duration,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            public_url: "http://127.0.0.1:8080".into(),
            backoff: Duration::from_secs(10),
            max_attempts: 8,
            poll: Duration::from_secs(2),
            settle: Duration::from_millis(50),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Wakes the workers of this process when a delivery is enqueued.
static ENQUEUED: Notify = Notify::const_new();

/// Deliveries claimed at once by one worker.
const BATCH: i64 = 32;

/// Stores `notice` for every notification of `definition` that wants it
/// (delivered later, with retries).
pub fn enqueue(
    conn: &mut DbConn,
    definition: &PipelineDefinition,
    notice: &Notice,
) -> Result<(), EngineError> {
    let event = notice.kind.event();
    let wanted: Vec<_> = definition
        .notifications
        .iter()
        .filter(|n| n.events.contains(&event))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let pipeline =
        storage::find_pipeline(conn, definition.pipeline.as_str())?.ok_or_else(|| {
            EngineError::NotFound(format!("There is no pipeline `{}`.", definition.pipeline))
        })?;
    let body = snapshot(notice)?;
    for n in wanted {
        store::insert_delivery(
            conn,
            &NewDelivery {
                pipeline_id: pipeline.id,
                pipeline: pipeline.name.clone(),
                notification: n.name.clone(),
                url: n.url.clone(),
                format: n.format.as_str().to_string(),
                secret_name: n.secret.as_ref().map(|s| s.name().to_string()),
                event: event.as_str().to_string(),
                body: body.clone(),
            },
        )?;
    }
    ENQUEUED.notify_waiters();
    Ok(())
}

/// The stored form of a notice: its JSON with `event`.
fn snapshot(notice: &Notice) -> Result<String, EngineError> {
    let mut value = serde_json::to_value(notice)
        .map_err(|e| EngineError::Invalid(format!("cannot store the notice: {e}")))?;
    if let Some(object) = value.as_object_mut() {
        object.insert("event".into(), notice.kind.event().as_str().into());
    }
    Ok(value.to_string())
}

fn absolute(public_url: &str, path: &str) -> String {
    format!("{}{path}", public_url.trim_end_matches('/'))
}

fn utc(at: &NaiveDateTime) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The body sent for `notice` in `format`, links under `public_url`.
pub fn render(notice: &Notice, format: NotificationFormat, public_url: &str) -> String {
    let url = absolute(public_url, &notice.path);
    match format {
        NotificationFormat::Generic => {
            let mut value = serde_json::to_value(notice).unwrap_or_default();
            if let Some(object) = value.as_object_mut() {
                object.insert("event".into(), notice.kind.event().as_str().into());
                object.insert("deadline".into(), utc(&notice.deadline).into());
                object.insert("url".into(), url.into());
            }
            value.to_string()
        }
        NotificationFormat::Slack => {
            let text = slack_text(notice, &url);
            serde_json::json!({
                "text": text,
                "blocks": [
                    { "type": "section", "text": { "type": "mrkdwn", "text": text } }
                ],
            })
            .to_string()
        }
    }
}

/// Slack's mrkdwn escapes: `&`, `<` and `>`.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One readable sentence with the link, for Slack-compatible chats.
fn slack_text(n: &Notice, url: &str) -> String {
    let what = slack_escape(&format!(
        "{} {} to {} ({} its tasks)",
        n.pipeline, n.release, n.stage, n.phase
    ));
    let approvers = slack_escape(&n.approvers.join(", "));
    let link = format!("<{}|Open the approval in Slipway>", slack_escape(url));
    match n.kind {
        NoticeKind::ApprovalRequested => format!(
            "Approval requested: {what}, requested by {}. Approvers: {approvers}. Times out at {} UTC. {link}",
            slack_escape(&n.requested_by),
            n.deadline.format("%Y-%m-%d %H:%M"),
        ),
        NoticeKind::ApprovalDecided => {
            let outcome = n.outcome.as_deref().unwrap_or("decided").replace('_', " ");
            let by = n
                .decided_by
                .as_deref()
                .map(|b| format!(" by {}", slack_escape(b)))
                .unwrap_or_default();
            let comment = n
                .comment
                .as_deref()
                .filter(|c| !c.trim().is_empty())
                .map(|c| format!(": \u{201c}{}\u{201d}", slack_escape(c)))
                .unwrap_or_default();
            format!(
                "Approval {}{by}{comment}: {what}. {link}",
                slack_escape(&outcome)
            )
        }
        NoticeKind::ApprovalExpiring => format!(
            "Approval times out soon: {what} times out at {} UTC unless {approvers} decide. {link}",
            n.deadline.format("%Y-%m-%d %H:%M"),
        ),
    }
}

/// The delivery worker and the admin's actions on deliveries; reached as
/// `Engine::notifications`.
#[derive(Clone)]
pub struct Deliveries {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    secret_key: Arc<SecretKey>,
    config: NotifyConfig,
    /// One pooled HTTP client for every notification (no redirects).
    http: reqwest::Client,
    wake: Notify,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Deliveries {
    /// A worker over `db`; nothing runs until [`Deliveries::start`].
    pub fn new(
        db: Db,
        secret_key: Arc<SecretKey>,
        config: NotifyConfig,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Deliveries {
        let http = reqwest::Client::builder()
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot configure the HTTP client; using the defaults");
                reqwest::Client::new()
            });
        Deliveries {
            inner: Arc::new(Inner {
                db,
                secret_key,
                config,
                http,
                wake: Notify::new(),
                shutdown,
                tracker,
            }),
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &NotifyConfig {
        &self.inner.config
    }

    /// Starts the worker on the current runtime.
    pub fn start(&self) {
        let me = self.clone();
        self.inner.tracker.spawn(async move { me.run().await });
    }

    /// Looks for due deliveries now (after a commit that enqueued some).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Tries a `failed` delivery once more, now (`notification.retry` by
    /// `actor`, audited).
    pub async fn retry_now(&self, id: i64, actor: &str) -> Result<(), EngineError> {
        let actor = actor.to_string();
        blocking(&self.inner.db, move |conn| {
            storage::write_transaction(conn, |conn| {
                let row = store::find_delivery(conn, id)?.ok_or_else(|| {
                    EngineError::NotFound(format!("There is no notification delivery #{id}."))
                })?;
                if !store::retry_delivery(conn, id, storage::now())? {
                    return Err(EngineError::Conflict(format!(
                        "Delivery #{id} is {}; only a failed delivery can be retried.",
                        row.state
                    )));
                }
                storage::append_audit(
                    conn,
                    &actor,
                    "notification.retry",
                    &subject(&row),
                    &format!(
                        "delivery=#{id} event={} url={} attempts={}",
                        row.event, row.url, row.attempts
                    ),
                )?;
                Ok(())
            })
        })
        .await?;
        self.wake();
        Ok(())
    }

    async fn run(self) {
        let shutdown = self.inner.shutdown.clone();
        let poll = self.inner.config.poll;
        loop {
            let enqueued = ENQUEUED.notified();
            tokio::pin!(enqueued);
            enqueued.as_mut().enable();
            let woken = self.inner.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let wait = match self.claim_and_send().await {
                Ok(Some(next)) => (next - storage::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(poll),
                Ok(None) => poll,
                Err(e) => {
                    tracing::error!(error = %e, "notification worker");
                    poll
                }
            };
            tokio::select! {
                _ = &mut enqueued => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.inner.config.settle) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                _ = &mut woken => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// Claims the due deliveries and sends each in its own task; returns
    /// when the next pending one is due.
    async fn claim_and_send(&self) -> Result<Option<NaiveDateTime>, EngineError> {
        if self.inner.shutdown.is_cancelled() {
            return Ok(None);
        }
        let hold = chrono::Duration::from_std(self.inner.config.timeout + Duration::from_secs(60))
            .unwrap_or_else(|_| chrono::Duration::seconds(70));
        let (claimed, next) = blocking(&self.inner.db, move |conn| {
            let now = storage::now();
            let mut claimed = Vec::new();
            for row in store::due_deliveries(conn, now, BATCH)? {
                if let Some(row) = store::claim_delivery(conn, row.id, row.attempts, now + hold)? {
                    claimed.push(row);
                }
            }
            let next = store::next_delivery_due(conn)?;
            Ok((claimed, next))
        })
        .await?;
        for row in claimed {
            let me = self.clone();
            self.inner.tracker.spawn(async move {
                let shutdown = me.inner.shutdown.clone();
                tokio::select! {
                    // Abandoned: tried again after the hold.
                    _ = shutdown.cancelled() => {}
                    _ = me.attempt(row) => me.wake(),
                }
            });
        }
        Ok(next)
    }

    /// Sends one claimed attempt and records how it ended.
    async fn attempt(&self, row: NotificationDeliveryRow) {
        let (status, error) = match self.send(&row).await {
            Ok(status) if (200..300).contains(&status) => (Some(status), None),
            Ok(status) => (Some(status), Some(format!("answered HTTP {status}"))),
            Err(error) => (None, Some(error)),
        };
        let outcome = match (status, error) {
            (Some(status), None) => AttemptOutcome::Delivered { status },
            (status, error) => {
                let error = error.unwrap_or_default();
                if row.attempts >= self.inner.config.max_attempts {
                    AttemptOutcome::Failed { status, error }
                } else {
                    let doublings = u32::try_from(row.attempts.saturating_sub(1))
                        .unwrap_or(0)
                        .min(20);
                    let wait = self.inner.config.backoff.saturating_mul(1 << doublings);
                    let wait = chrono::Duration::from_std(wait)
                        .unwrap_or_else(|_| chrono::Duration::hours(1));
                    AttemptOutcome::Retry {
                        status,
                        error,
                        next_at: storage::now() + wait,
                    }
                }
            }
        };
        let (id, attempt) = (row.id, row.attempts);
        let recorded = blocking(&self.inner.db, move |conn| {
            storage::write_transaction(conn, |conn| {
                let changed = store::finish_attempt(conn, id, attempt, &outcome)?;
                if changed && let AttemptOutcome::Failed { error, .. } = &outcome {
                    storage::append_audit(
                        conn,
                        ENGINE_ACTOR,
                        "notification.failed",
                        &subject(&row),
                        &format!(
                            "delivery=#{id} event={} url={} attempts={attempt} error={error}",
                            row.event, row.url
                        ),
                    )?;
                }
                Ok::<_, EngineError>((changed, outcome))
            })
        })
        .await;
        match recorded {
            Ok((true, AttemptOutcome::Failed { error, .. })) => {
                tracing::warn!(delivery = id, attempts = attempt, %error, "notification failed for good");
            }
            Ok((true, AttemptOutcome::Retry { error, .. })) => {
                tracing::info!(delivery = id, attempt, %error, "notification attempt failed; retrying later");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(delivery = id, error = %e, "cannot record a notification attempt")
            }
        }
    }

    /// POSTs the delivery's body; the status of the answer, or why there
    /// was none.
    async fn send(&self, row: &NotificationDeliveryRow) -> Result<i32, String> {
        let notice: Notice = serde_json::from_str(&row.body)
            .map_err(|e| format!("the stored notice does not read: {e}"))?;
        let format = match row.format.as_str() {
            "slack" => NotificationFormat::Slack,
            _ => NotificationFormat::Generic,
        };
        let body = render(&notice, format, &self.inner.config.public_url);
        let signature = match row.secret_name.clone() {
            Some(name) => {
                let (key, pipeline_id) = (self.inner.secret_key.clone(), row.pipeline_id);
                let lookup = name.clone();
                let value = blocking(&self.inner.db, move |conn| {
                    crate::engine::secrets::resolve_secret(conn, &key, pipeline_id, &lookup)
                })
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!(
                        "the secret `{name}` of pipeline `{}` is not set",
                        row.pipeline
                    )
                })?;
                use secrecy::ExposeSecret;
                Some(crate::domain::webhook::sign(
                    value.expose_secret().as_bytes(),
                    body.as_bytes(),
                ))
            }
            None => None,
        };
        let mut request = self
            .inner
            .http
            .post(&row.url)
            .timeout(self.inner.config.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Slipway-Event", &row.event)
            .header("X-Slipway-Delivery", row.id.to_string());
        if let Some(signature) = signature {
            request = request.header("X-Slipway-Signature", signature);
        }
        match request.body(body).send().await {
            Ok(response) => Ok(i32::from(response.status().as_u16())),
            Err(e) => Err(describe(&e)),
        }
    }
}

/// An HTTP error with its causes (reqwest's message alone omits them).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "no answer in time".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The audit subject of a delivery.
fn subject(row: &NotificationDeliveryRow) -> String {
    format!("notification:{}/{}", row.pipeline, row.notification)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn notice(kind: NoticeKind) -> Notice {
        Notice {
            kind,
            pipeline: "shop".into(),
            release: "1.0.7".into(),
            stage: "production".into(),
            phase: Phase::Before,
            approval_id: 12,
            deployment_id: 40,
            requested_by: "dana".into(),
            approvers: vec!["group:management".into(), "mara".into()],
            outcome: None,
            decided_by: None,
            comment: None,
            deadline: chrono::NaiveDate::from_ymd_opt(2026, 12, 3)
                .unwrap()
                .and_hms_opt(9, 30, 0)
                .unwrap(),
            path: "/approvals/12".into(),
        }
    }

    #[test]
    fn generic_body_is_the_notice_with_event_and_absolute_url() {
        let body = render(
            &notice(NoticeKind::ApprovalRequested),
            NotificationFormat::Generic,
            "https://slipway.example/",
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["event"], "approval_requested");
        assert_eq!(v["url"], "https://slipway.example/approvals/12");
        assert_eq!(v["deadline"], "2026-12-03T09:30:00Z");
        assert_eq!(v["approval_id"], 12);
        assert_eq!(v["approvers"][0], "group:management");
        assert_eq!(v["outcome"], serde_json::Value::Null);
    }

    #[test]
    fn slack_body_reads_as_a_sentence_with_the_link() {
        let mut n = notice(NoticeKind::ApprovalDecided);
        n.outcome = Some("rejected".into());
        n.decided_by = Some("mara".into());
        n.comment = Some("error rate <1% & rising".into());
        let body = render(&n, NotificationFormat::Slack, "http://127.0.0.1:8080");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["text"],
            "Approval rejected by mara: \u{201c}error rate &lt;1% &amp; rising\u{201d}: shop 1.0.7 to production (before its tasks). <http://127.0.0.1:8080/approvals/12|Open the approval in Slipway>"
        );
        assert_eq!(v["blocks"][0]["text"]["text"], v["text"]);
        let requested = render(
            &notice(NoticeKind::ApprovalRequested),
            NotificationFormat::Slack,
            "http://x",
        );
        assert!(requested.contains("Approval requested: shop 1.0.7 to production"));
        assert!(requested.contains("Approvers: group:management, mara"));
    }

    #[test]
    fn stored_notice_reads_back() {
        let n = notice(NoticeKind::ApprovalExpiring);
        let stored = snapshot(&n).unwrap();
        let back: Notice = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, n);
        assert!(stored.contains("\"event\":\"approval_expiring\""));
    }
}
