//! `GET /events`: the live pages' Server-Sent Events stream (issue 13,
//! item 4; `engine::changes` watches the database).
//!
//! - On connecting, a `hello` event with `{"ms_since_change": N}` (how long
//!   ago the last change was seen, or `null`: a page served less than that
//!   ago refreshes once, since that change may have come before its
//!   stream) and `retry: 2000`, the browser's reconnect delay.
//! - Then one message per change: `id: SEQ` and `data: {"seq": SEQ,
//!   "topics": ["deployments", "gates"]}`; after a subscriber fell behind,
//!   one message naming every topic. `static/slipway.js` refetches the page
//!   and swaps its `data-live` regions whose topics moved.
//! - A comment every [`HEARTBEAT`] keeps proxies from closing an idle stream.
//! - A stream lasts at most [`LIFETIME`]: the browser reconnects through the
//!   sign-in middleware again, so a revoked session or token stops
//!   receiving within that time.
//! - It ends at once when the server stops (`Changes::close`, the engine's
//!   shutdown), so an open page never holds up a graceful stop.
//!
//! Signed-in users only (session or API token, like every page); anonymous
//! requests get 401 (a redirect to the sign-in page would make the browser
//! retry it forever). At most `engine::changes::MAX_STREAMS_PER_USER` streams
//! per user (429 past it).

use std::convert::Infallible;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{HttpResponse, http::header};
use tokio::time::{Instant, MissedTickBehavior};

use super::auth::CurrentUser;
use super::{State, WebError};
use crate::domain::authz::Action;
use crate::engine::changes::{Change, Next, SubscribeError, Subscription, Topic};

/// A comment this often on an idle stream.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// The longest a stream stays open before the browser reconnects.
pub const LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The browser's reconnect delay, in milliseconds.
const RETRY_MS: u32 = 2_000;

/// `GET /events`
pub async fn stream(state: State, user: CurrentUser) -> Result<HttpResponse, WebError> {
    let user = user.require_action(Action::Read)?;
    let subscription = match state.engine.changes().subscribe(&user.username) {
        Ok(s) => s,
        Err(e @ SubscribeError::TooMany { .. }) => {
            return Ok(super::text(StatusCode::TOO_MANY_REQUESTS, e.to_string()));
        }
        Err(e @ SubscribeError::Closed) => {
            return Ok(super::text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()));
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache, no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(events(subscription, HEARTBEAT, LIFETIME)))
}

struct Stream {
    subscription: Subscription,
    heartbeat: tokio::time::Interval,
    until: Instant,
    greeted: bool,
}

/// The stream of one subscription: the greeting, then changes and
/// heartbeats until the hub closes or `lifetime` is over.
pub fn events(
    subscription: Subscription,
    heartbeat: Duration,
    lifetime: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    let mut ticks = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = Stream {
        subscription,
        heartbeat: ticks,
        until: Instant::now() + lifetime,
        greeted: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if !s.greeted {
            s.greeted = true;
            let since = s
                .subscription
                .since_last_change()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            let data = serde_json::json!({ "ms_since_change": since });
            let hello = format!("retry: {RETRY_MS}\nevent: hello\ndata: {data}\n\n");
            return Some((Ok(Bytes::from(hello)), s));
        }
        if s.subscription.is_closed() {
            return None;
        }
        let text = tokio::select! {
            next = s.subscription.next() => match next {
                Next::Change(change) => message(&change),
                Next::Missed => message(&Change {
                    seq: 0,
                    topics: Topic::ALL.into_iter().collect(),
                }),
                Next::Closed => return None,
            },
            _ = s.heartbeat.tick() => ": keep-alive\n\n".to_string(),
            () = tokio::time::sleep_until(s.until) => return None,
        };
        Some((Ok(Bytes::from(text)), s))
    })
}

/// One change as an SSE message.
pub fn message(change: &Change) -> String {
    let topics: Vec<&str> = change.topics.iter().map(|t| t.as_str()).collect();
    let data = serde_json::json!({ "seq": change.seq, "topics": topics });
    if change.seq == 0 {
        format!("data: {data}\n\n")
    } else {
        format!("id: {}\ndata: {data}\n\n", change.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_one_message_with_its_topics() {
        let change = Change {
            seq: 7,
            topics: [Topic::Gates, Topic::Deployments].into_iter().collect(),
        };
        assert_eq!(
            message(&change),
            "id: 7\ndata: {\"seq\":7,\"topics\":[\"deployments\",\"gates\"]}\n\n"
        );
    }
}
