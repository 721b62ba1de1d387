//! The router's limits on slow and large requests, and the count of
//! uploads per client address that enforces [`Limits::uploads_per_client`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a client may take to send a request head, counted from when
/// the router starts waiting for it — so also how long an idle keep-alive
/// connection stays open. A client that is slower is disconnected.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest request head (request line and header fields) the router
/// reads, in bytes; a longer one is answered 431 and the connection closed.
pub const MAX_HEAD: usize = 64 * 1024;
/// Request bodies up to this many bytes are read whole before the router
/// connects to the slot's process; of a larger body, this much is read
/// first. A slow client thus holds no connection (nor thread) of the app's
/// while its body trickles in.
pub const BUFFERED_BODY: usize = 64 * 1024;
/// How long the part of a body read before connecting ([`BUFFERED_BODY`])
/// may take to arrive; a slower request is answered 408 and its
/// connection closed.
pub const BUFFERED_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a body larger than [`BUFFERED_BODY`] may take to arrive in
/// all, counted from the request's head; then the request is cut off
/// (408 when no answer has started).
pub const STREAMED_BODY_TIMEOUT: Duration = Duration::from_secs(300);
/// The slowest a body larger than [`BUFFERED_BODY`] may arrive, in bytes a
/// second on average, once [`STREAMED_BODY_GRACE`] has passed: a client
/// that trickles a large upload cannot hold the app's connection (and
/// worker) for the whole [`STREAMED_BODY_TIMEOUT`].
pub const MIN_STREAMED_RATE: u64 = 1024;
/// How long a streamed body may arrive before [`MIN_STREAMED_RATE`] counts.
pub const STREAMED_BODY_GRACE: Duration = Duration::from_secs(10);
/// Requests from one client address (IP) whose body is still arriving, at
/// most, at any moment; one more is answered 429 and its connection closed.
/// Behind a TLS proxy on the same machine every client has the proxy's
/// address, so this is then a limit for all clients together.
pub const MAX_UPLOADS_PER_CLIENT: usize = 64;

/// The router's limits on slow and large requests (the constants above,
/// unless a test chooses shorter ones).
#[derive(Debug, Clone)]
pub struct Limits {
    /// [`HEAD_TIMEOUT`].
    pub head_timeout: Duration,
    /// [`BUFFERED_BODY`].
    pub buffered_body: usize,
    /// [`BUFFERED_BODY_TIMEOUT`].
    pub buffered_body_timeout: Duration,
    /// [`STREAMED_BODY_TIMEOUT`].
    pub streamed_body_timeout: Duration,
    /// [`MIN_STREAMED_RATE`].
    pub min_streamed_rate: u64,
    /// [`STREAMED_BODY_GRACE`].
    pub streamed_body_grace: Duration,
    /// [`MAX_UPLOADS_PER_CLIENT`].
    pub uploads_per_client: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            head_timeout: HEAD_TIMEOUT,
            buffered_body: BUFFERED_BODY,
            buffered_body_timeout: BUFFERED_BODY_TIMEOUT,
            streamed_body_timeout: STREAMED_BODY_TIMEOUT,
            min_streamed_rate: MIN_STREAMED_RATE,
            streamed_body_grace: STREAMED_BODY_GRACE,
            uploads_per_client: MAX_UPLOADS_PER_CLIENT,
        }
    }
}

/// Requests whose body is still arriving, per client address.
#[derive(Debug, Default)]
pub(super) struct Uploads {
    pub(super) per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// One request whose body is still arriving, until dropped.
#[derive(Debug)]
pub(super) struct Upload {
    pub(super) uploads: Arc<Uploads>,
    pub(super) client: IpAddr,
}

impl Uploads {
    pub(super) fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a request of `client` in, unless it has `max` already.
    pub(super) fn enter(self: &Arc<Self>, client: IpAddr, max: usize) -> Option<Upload> {
        let mut counts = self.counts();
        let count = counts.entry(client).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Upload {
            uploads: Arc::clone(self),
            client,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let mut counts = self.uploads.counts();
        if let Some(count) = counts.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}
