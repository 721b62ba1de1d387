//! One client connection of the router: who it is, and the upstream
//! connection its requests go over, pinned to the [`Backend`] it was opened
//! to and kept as the backend's spare when the client goes.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response};

use super::ProxyBody;
use super::table::Backend;
use super::upstream::{ProxyError, Upstream, bodiless_copy, connect};

/// One client connection: who it is, and the upstream connection its
/// requests go over (pinned to the backend it was opened to).
pub(super) struct ClientConn {
    pub(super) ip: IpAddr,
    /// The peer's address as a header value (`X-Forwarded-For`).
    pub(super) peer_header: HeaderValue,
    pub(super) pinned: Mutex<Option<(Arc<Backend>, Upstream)>>,
}

impl ClientConn {
    pub(super) fn new(peer: SocketAddr) -> ClientConn {
        ClientConn {
            ip: peer.ip(),
            peer_header: HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            pinned: Mutex::new(None),
        }
    }

    pub(super) fn pinned(&self) -> std::sync::MutexGuard<'_, Option<(Arc<Backend>, Upstream)>> {
        self.pinned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An open connection to `backend`: the pinned one, else a spare of
    /// the backend's, else `None` (connect). `check`: the pinned one only
    /// when seen open (a request that must not be sent twice). A connection
    /// pinned to another backend (the route moved) goes back to that
    /// backend.
    pub(super) fn upstream_to(&self, backend: &Arc<Backend>, check: bool) -> Option<Upstream> {
        let previous = self.pinned().take();
        match previous {
            Some((b, conn)) if Arc::ptr_eq(&b, backend) => {
                let open = if check {
                    conn.alive()
                } else {
                    !conn.sender.is_closed()
                };
                if open {
                    Some(conn)
                } else {
                    backend.take_spare()
                }
            }
            Some((b, conn)) => {
                b.give_back(conn);
                backend.take_spare()
            }
            None => backend.take_spare(),
        }
    }

    pub(super) fn pin(&self, backend: Arc<Backend>, conn: Upstream) {
        *self.pinned() = Some((backend, conn));
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        let pinned = self
            .pinned
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some((backend, conn)) = pinned {
            backend.give_back(conn);
        }
    }
}

/// Sends `request` over the client connection's upstream connection to
/// `backend` (opened when there is none), and pins that connection for the
/// client's next request. A `retryable` request goes on the pinned
/// connection unless hyper knows it closed, and is sent again on a fresh
/// connection when that one broke before an answer came; any other request
/// goes only on a connection seen open. A request hyper could not send at
/// all is sent on a fresh connection.
pub(super) async fn send(
    client: &ClientConn,
    backend: &Arc<Backend>,
    request: Request<ProxyBody>,
    retryable: bool,
) -> Result<Response<Incoming>, ProxyError> {
    let reused = client.upstream_to(backend, !retryable);
    let request = match reused {
        Some(mut conn) => {
            let copy = retryable.then(|| bodiless_copy(&request));
            let ready = conn.sender.ready().await.is_ok();
            let failed = if ready {
                match conn.sender.try_send_request(request).await {
                    Ok(response) => {
                        client.pin(Arc::clone(backend), conn);
                        return Ok(response);
                    }
                    Err(mut e) => match (e.take_message(), copy) {
                        (Some(request), _) => Ok(request),
                        (None, Some(copy)) => Ok(copy),
                        (None, None) => Err(e.into_error()),
                    },
                }
            } else {
                // Closed while idle: nothing was sent.
                Ok(request)
            };
            match failed {
                Ok(request) => {
                    tracing::debug!(
                        backend = backend.label(),
                        "sending again on a fresh connection"
                    );
                    request
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => request,
    };
    let mut conn = connect(backend.addr).await?;
    conn.sender.ready().await?;
    let response = conn.sender.send_request(request).await?;
    client.pin(Arc::clone(backend), conn);
    Ok(response)
}
