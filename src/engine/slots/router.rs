//! The slot router: a reverse proxy in `slipway serve` (`--router-listen`,
//! default `127.0.0.1:8081`) that sends each request to the process of the
//! slot its host names.
//!
//! - Slot `S` of app `A` answers to `A-S.<domain>` and, for the slot named
//!   `production`, also to `A.<domain>` (`<domain>` is `localhost` unless
//!   `--router-domain` / `SLIPWAY_ROUTER_DOMAIN` says otherwise). The
//!   [`RouteTable`] is keyed by the label in front of the domain (`A-S`, `A`).
//!   The host is the request target's authority when the target is in
//!   absolute form (`GET http://A.localhost/ HTTP/1.1`), else `Host:`.
//! - The table is an `ArcSwap` of an immutable map: a request loads it
//!   without a lock, and a change (a deployment, a swap) stores a whole new
//!   map, so a swap moves both host names at the same instant.
//! - **Message framing is hyper's** (docs/decisions.md, "The router's HTTP
//!   comes from hyper"): each client connection is served by hyper's
//!   HTTP/1.1 server, each request goes to the app over hyper's HTTP/1.1
//!   client, and neither side's bytes are parsed here. The router only
//!   decides what the app sees: the request target in origin form, HTTP/1.1,
//!   the hop-by-hop headers removed (the ones `Connection` names too, but
//!   never `Content-Length`, `Transfer-Encoding` or `Host`: RFC 9110
//!   §7.6.1), the body's framing set from what hyper read (`Content-Length`
//!   with its one exact value, or `Transfer-Encoding: chunked`; any other
//!   transfer coding is refused with 501), and `X-Forwarded-For/Host/Proto`
//!   set by the router whatever the client sent.
//! - **Bodies**: a request's body, up to [`BUFFERED_BODY`], is read whole
//!   before the router connects to the app (within
//!   [`BUFFERED_BODY_TIMEOUT`], else 408), so a client that sends its body
//!   slowly holds no connection of the app's. Of a larger body that much is
//!   read first, and the rest streams within [`STREAMED_BODY_TIMEOUT`]. At
//!   most [`MAX_UPLOADS_PER_CLIENT`] requests of one client address may be
//!   sending their body at once (429 beyond). A request head must arrive
//!   within [`HEAD_TIMEOUT`]. Responses stream (the first piece of a
//!   response of known length is read before its head goes out, so both
//!   leave in one write: `ReadAhead`).
//! - Connections to the apps are kept alive and *pinned*: a client
//!   connection sends its requests (one after the other, as HTTP/1.1 does)
//!   over one upstream connection of its own, so a request takes no pool
//!   lock. When the client goes, its upstream connection is kept as a spare
//!   on the [`Backend`] for the next client connection. A body-less
//!   idempotent request whose kept-alive connection turns out closed is
//!   sent again on a fresh one; any other request goes only on a connection
//!   seen open.
//! - `Upgrade` (WebSocket): `Connection: upgrade` and `Upgrade` are passed
//!   on, and after the app's `101 Switching Protocols` the two connections
//!   are joined until either closes. `CONNECT` is refused (405).
//! - Every forwarded request counts as *in flight* on its [`Backend`] until
//!   its response body has been sent (a WebSocket until it closes), so a
//!   replaced process is stopped only once the requests it took have
//!   finished ([`Backend::drain`]). A request that picked a backend just as
//!   it was retired goes to the new one.
//! - Answers of its own: `404` for a host that names no slot, `503` when the
//!   slot runs nothing, `502` when its process does not answer, `400` for a
//!   request without a host or with two — each a small HTML page that says
//!   which. Heads hyper cannot parse get hyper's own 400 (431 when too
//!   large), and the connection closes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The default address of the router (`--router-listen`).
pub const DEFAULT_ROUTER_LISTEN: &str = "127.0.0.1:8081";
/// The default domain of slot host names (`--router-domain`).
pub const DEFAULT_ROUTER_DOMAIN: &str = "localhost";
/// The slot that also answers to the app's bare host name.
pub const PRODUCTION_SLOT: &str = "production";

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

/// How long connecting to a slot's process may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle upstream connections a backend keeps for new client connections.
const MAX_SPARE: usize = 64;
/// How long open connections may take to finish when the router stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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

/// The process a slot's requests go to: `127.0.0.1:PORT`, with the count
/// of requests it is serving.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    /// For logs and pages: `APP/SLOT release VERSION`.
    label: String,
    in_flight: AtomicUsize,
    retired: AtomicBool,
    /// Whether the slot's own process listens on the port now (see
    /// [`Backend::set_serving`]); while not, requests get a 503 page and
    /// never reach whatever else may listen there.
    serving: AtomicBool,
    idle: Notify,
    /// Idle keep-alive connections to the process, for the next client
    /// connection (touched when a client connection starts or ends).
    spare: Mutex<Vec<Upstream>>,
}

impl Backend {
    /// A backend at `127.0.0.1:port`.
    pub fn new(port: u16, label: impl Into<String>) -> Backend {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Backend {
            addr,
            label: label.into(),
            in_flight: AtomicUsize::new(0),
            retired: AtomicBool::new(false),
            serving: AtomicBool::new(true),
            idle: Notify::new(),
            spare: Mutex::new(Vec::new()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Marks whether the slot's process is confirmed to listen on the port
    /// (the supervisor clears it when the process exits and sets it when
    /// the restarted process's own socket is listening). A new backend
    /// serves.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::SeqCst);
    }

    /// Whether requests may go to it now.
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// Requests it is serving now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts a request in; `None` when the backend was retired (the
    /// caller looks the route up again).
    fn enter(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(Arc::clone(self));
        // Checked after counting in (both SeqCst): either `drain` sees this
        // request, or this request sees the backend retired.
        if self.retired.load(Ordering::SeqCst) {
            drop(guard);
            return None;
        }
        Some(guard)
    }

    /// Takes no new requests (call after the route moved away), then waits
    /// until the ones it took have finished, at most `timeout`. Returns
    /// whether it drained.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.retired.store(true, Ordering::SeqCst);
        // Its idle connections close now; busy ones end with their client.
        self.spares().clear();
        let wait = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl Backend {
    fn spares(&self) -> std::sync::MutexGuard<'_, Vec<Upstream>> {
        self.spare
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection to the process, if one is open.
    fn take_spare(&self) -> Option<Upstream> {
        let mut spare = self.spares();
        while let Some(conn) = spare.pop() {
            if conn.alive() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps an idle connection for the next client (unless retired).
    fn give_back(&self, conn: Upstream) {
        if conn.sender.is_closed() {
            return;
        }
        let mut spare = self.spares();
        // Checked under the lock `drain` clears the spares with.
        if spare.len() < MAX_SPARE && !self.retired.load(Ordering::SeqCst) {
            spare.push(conn);
        }
    }
}

/// One request in flight on a backend, until dropped.
#[derive(Debug)]
struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Where a host name leads.
#[derive(Debug, Clone)]
pub enum Route {
    /// A slot with a process.
    Backend(Arc<Backend>),
    /// A slot that runs nothing (503).
    Idle { app: String, slot: String },
}

/// Host label → route, swapped whole.
#[derive(Debug, Default)]
pub struct RouteTable {
    map: ArcSwap<HashMap<String, Route>>,
    /// Serializes writers (they copy, change and store the map).
    write: Mutex<()>,
}

/// The labels a slot answers to: `APP-SLOT`, and `APP` for `production`.
pub fn labels(app: &str, slot: &str) -> Vec<String> {
    let mut labels = vec![format!("{app}-{slot}")];
    if slot == PRODUCTION_SLOT {
        labels.push(app.to_string());
    }
    labels
}

/// The host names of a slot under `domain`: `APP-SLOT.domain` (and `APP.domain`).
pub fn host_names(app: &str, slot: &str, domain: &str) -> Vec<String> {
    labels(app, slot)
        .into_iter()
        .map(|l| format!("{l}.{domain}"))
        .collect()
}

impl RouteTable {
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// The route of a label, without taking a lock.
    pub fn lookup(&self, label: &str) -> Option<Route> {
        self.map.load().get(label).cloned()
    }

    /// Applies `change` to a copy of the table and stores it: readers see
    /// the table before or after, never half of it.
    pub fn update(&self, change: impl FnOnce(&mut HashMap<String, Route>)) {
        let _writer = self
            .write
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = HashMap::clone(&self.map.load());
        change(&mut next);
        self.map.store(Arc::new(next));
    }

    /// Points every label of (app, slot) at `route`, within `change`.
    pub fn set(map: &mut HashMap<String, Route>, app: &str, slot: &str, route: Route) {
        for label in labels(app, slot) {
            map.insert(label, route.clone());
        }
    }
}

/// What the router needs to answer.
struct RouterCtx {
    table: Arc<RouteTable>,
    /// `.localhost`, lower case, with the leading dot.
    suffix: String,
    limits: Limits,
    uploads: Arc<Uploads>,
}

/// Requests whose body is still arriving, per client address.
#[derive(Debug, Default)]
struct Uploads {
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// One request whose body is still arriving, until dropped.
#[derive(Debug)]
struct Upload {
    uploads: Arc<Uploads>,
    client: IpAddr,
}

impl Uploads {
    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_client
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a request of `client` in, unless it has `max` already.
    fn enter(self: &Arc<Self>, client: IpAddr, max: usize) -> Option<Upload> {
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

/// One HTTP/1.1 connection to a slot's process.
#[derive(Debug)]
struct Upstream {
    sender: SendRequest<ProxyBody>,
    /// The same socket (a second descriptor of it), to see whether the
    /// process closed the connection while it was idle without reading
    /// from it.
    probe: std::net::TcpStream,
}

impl Upstream {
    /// Whether the process still keeps this idle connection open (it has
    /// not closed it, nor sent anything unasked): one system call.
    fn alive(&self) -> bool {
        if self.sender.is_closed() {
            return false;
        }
        // A peek, so the check does not depend on hyper's connection task
        // having seen the socket's last event yet.
        let mut byte = [0u8; 1];
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        matches!(
            rustix::net::recv(&self.probe, &mut byte, flags),
            Err(rustix::io::Errno::AGAIN)
        )
    }
}

/// One client connection: who it is, and the upstream connection its
/// requests go over (pinned to the backend it was opened to).
struct ClientConn {
    ip: IpAddr,
    /// The peer's address as a header value (`X-Forwarded-For`).
    peer_header: HeaderValue,
    pinned: Mutex<Option<(Arc<Backend>, Upstream)>>,
}

impl ClientConn {
    fn new(peer: SocketAddr) -> ClientConn {
        ClientConn {
            ip: peer.ip(),
            peer_header: HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            pinned: Mutex::new(None),
        }
    }

    fn pinned(&self) -> std::sync::MutexGuard<'_, Option<(Arc<Backend>, Upstream)>> {
        self.pinned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An open connection to `backend`: the pinned one, else a spare of
    /// the backend's, else `None` (connect). `check`: the pinned one only
    /// when seen open (a request that must not be sent twice). A connection
    /// pinned to another backend (the route moved) goes back to that
    /// backend.
    fn upstream_to(&self, backend: &Arc<Backend>, check: bool) -> Option<Upstream> {
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

    fn pin(&self, backend: Arc<Backend>, conn: Upstream) {
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

type ProxyError = Box<dyn std::error::Error + Send + Sync>;

/// A new HTTP/1.1 connection to a slot's process.
async fn connect(addr: SocketAddr) -> Result<Upstream, ProxyError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))??;
    stream.set_nodelay(true)?;
    let stream = stream.into_std()?;
    let probe = stream.try_clone()?;
    let stream = tokio::net::TcpStream::from_std(stream)?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        // Ends when the process or the router closes it (or, after a
        // `101`, hands the socket to the tunnel).
        let _ = conn.with_upgrades().await;
    });
    Ok(Upstream { sender, probe })
}

/// A request body for the app: read whole, or its first part read and the
/// rest streaming.
type ProxyBody = Either<Full<Bytes>, Streamed>;
type ResponseBody = Either<Tracked<ReadAhead>, Full<Bytes>>;

/// Headers that concern one connection, never forwarded as they came.
/// `Transfer-Encoding` and `Content-Length` are set again from what hyper
/// read, `Upgrade` for an upgrade.
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::UPGRADE,
];

/// Headers a `Connection` header can never remove: the message's framing
/// and its host (RFC 9110 §7.6.1).
const NEVER_CONNECTION_LISTED: [HeaderName; 3] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::HOST,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Runs the router on `listener` until `shutdown`, then lets open
/// requests finish (at most 5 s).
pub async fn serve(
    listener: tokio::net::TcpListener,
    table: Arc<RouteTable>,
    domain: &str,
    shutdown: CancellationToken,
) {
    serve_with(listener, table, domain, shutdown, Limits::default()).await;
}

/// [`serve`] with other limits than the default ones.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    table: Arc<RouteTable>,
    domain: &str,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_header_size(MAX_HEAD)
        .title_case_headers(true)
        .keep_alive(true);
    let ctx = Arc::new(RouterCtx {
        table,
        suffix: format!(".{}", domain.trim_matches('.').to_ascii_lowercase()),
        limits,
        uploads: Arc::new(Uploads::default()),
    });
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Too many open files and the like: wait a little, go on.
                tracing::warn!(error = %e, "slot router cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx = Arc::clone(&ctx);
        let client = Arc::new(ClientConn::new(peer));
        let service = hyper::service::service_fn(move |req| {
            let ctx = Arc::clone(&ctx);
            let client = Arc::clone(&client);
            async move { Ok::<_, Infallible>(handle(&ctx, &client, req).await) }
        });
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = shutdown.child_token();
        connections.spawn(async move {
            tokio::pin!(conn);
            // A client that goes away mid-request is not news.
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.cancelled() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("slot router: open connections did not finish in 5 s");
    }
}

/// The label a host (`name[:port]`) names under the router's domain, if any.
fn label_of<'a>(host: &'a str, suffix: &str) -> Option<&'a str> {
    // Strip a port (`name:8081`); IPv6 literals name no slot anyway.
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() <= suffix.len() {
        return None;
    }
    let (label, tail) = name.split_at(name.len() - suffix.len());
    tail.eq_ignore_ascii_case(suffix).then_some(label)
}

/// The host a request is for: its target's authority when the target is
/// absolute (RFC 9112 §3.2.2: `Host` is then ignored and replaced), else
/// its one `Host` header.
fn request_host<B>(req: &Request<B>) -> Result<HeaderValue, Page> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "Two host names",
            "The request has more than one Host header; Slipway's slot router takes a request for one host only.",
        ));
    }
    if let Some(authority) = req.uri().authority() {
        if req.uri().scheme().is_none() {
            return Err(Page::new(
                StatusCode::BAD_REQUEST,
                "Bad request target",
                "The request target is a bare host name, which only CONNECT uses; send a path (/…) or an absolute URL.",
            ));
        }
        // Without any user information (`user@`).
        let host = match authority.port() {
            Some(port) => format!("{}:{}", authority.host(), port.as_str()),
            None => authority.host().to_string(),
        };
        return HeaderValue::from_str(&host).map_err(|_| {
            Page::new(
                StatusCode::BAD_REQUEST,
                "Bad request target",
                "The request target's host name is not valid.",
            )
        });
    }
    match first {
        Some(host) => Ok(host.clone()),
        None => Err(Page::new(
            StatusCode::BAD_REQUEST,
            "No host name",
            "The request has no Host header, so Slipway's slot router cannot tell which app it is for.",
        )),
    }
}

/// How the request's body is delimited, as hyper read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked` (and no other coding).
    Chunked,
}

/// The request body's framing. hyper has refused (400) what it cannot
/// frame: `Transfer-Encoding` without chunked last, differing or invalid
/// lengths (`Content-Length: 3, 4`, `3, 3`); with both headers it dropped
/// `Content-Length` (RFC 9112 §6.3) and closes the connection afterwards.
/// Codings besides chunked (`gzip, chunked`) are refused here: the router
/// would have to pass them on as they came, and does not.
fn framing(req: &Request<Incoming>) -> Result<Framing, Page> {
    let headers = req.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let mut codings = Vec::new();
        for value in headers.get_all(header::TRANSFER_ENCODING) {
            let Ok(value) = value.to_str() else {
                codings.push("?".to_string());
                continue;
            };
            codings.extend(
                value
                    .split(',')
                    .map(|c| c.trim().to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            );
        }
        if codings != ["chunked"] {
            return Err(Page::new(
                StatusCode::NOT_IMPLEMENTED,
                "Transfer coding not supported",
                format!(
                    "Slipway's slot router passes on request bodies sent with the chunked transfer coding alone; this request uses {}.",
                    codings.join(", ")
                ),
            ));
        }
        return Ok(Framing::Chunked);
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return match req.body().size_hint().exact() {
            Some(length) => Ok(Framing::Length(length)),
            None => Err(Page::new(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The request's Content-Length is not valid.",
            )),
        };
    }
    Ok(Framing::None)
}

/// Whether the request asks to switch protocols (`Connection: upgrade`
/// with an `Upgrade` header, HTTP/1.1).
fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The tokens of the `Connection` headers.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

async fn handle(
    ctx: &RouterCtx,
    client: &ClientConn,
    mut req: Request<Incoming>,
) -> Response<ResponseBody> {
    // Whether a body may still be unread when the router answers itself:
    // then the connection closes after the answer.
    let unread = !req.body().is_end_stream();
    if req.method() == Method::CONNECT {
        let mut response = Page::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported",
            "Slipway's slot router forwards requests to slots; it does not open tunnels.",
        )
        .response(true);
        response.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return response;
    }
    let host = match request_host(&req) {
        Ok(host) => host,
        // A malformed request: the connection ends with the answer.
        Err(page) => return page.response(true),
    };
    let framing = match framing(&req) {
        Ok(framing) => framing,
        Err(page) => return page.response(true),
    };
    let host_str = host.to_str().unwrap_or_default();
    let label = label_of(host_str, &ctx.suffix).map(|l| {
        if l.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(l.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(l)
        }
    });
    let lookup = || label.as_deref().and_then(|l| ctx.table.lookup(l));
    let mut route = lookup();
    // A request that picked a backend as it was retired looks again (a
    // deployment or swap just moved the route; the new one is in the table).
    for _ in 0..3 {
        match route {
            None => {
                let suffix = &ctx.suffix;
                return Page::new(
                    StatusCode::NOT_FOUND,
                    "No such slot",
                    format!(
                        "{host_str} names no slot of an app on this Slipway. Slots answer to APP-SLOT{suffix} (and the production slot to APP{suffix})."
                    ),
                )
                .response(unread);
            }
            Some(Route::Idle { app, slot }) => {
                return Page::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Nothing is running in this slot",
                    format!(
                        "The slot {slot} of {app} has no release running yet. Deploy one to it (a deploy_slot task), or swap a slot into it."
                    ),
                )
                .response(unread);
            }
            Some(Route::Backend(backend)) if !backend.serving() => {
                return Page::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The slot's process is restarting",
                    format!(
                        "The process of {} is not listening right now; it is being started again. Try again in a moment.",
                        backend.label()
                    ),
                )
                .response(unread);
            }
            Some(Route::Backend(backend)) => match backend.enter() {
                Some(guard) => {
                    let upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
                    return forward(ctx, client, req, host, framing, upgrade, guard).await;
                }
                None => {
                    tokio::task::yield_now().await;
                    route = lookup();
                }
            },
        }
    }
    Page::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The slot is changing",
        "The slot's process was being replaced; try again.",
    )
    .response(unread)
}

/// The request's body for the app: read whole when it is at most
/// [`Limits::buffered_body`] long, else its first part read and the rest
/// streaming. Holds an [`Upload`] of the client's while the body arrives.
async fn request_body(
    ctx: &RouterCtx,
    client: &ClientConn,
    mut body: Incoming,
    framing: Framing,
    timed_out: &Arc<AtomicBool>,
) -> Result<ProxyBody, Page> {
    if framing == Framing::None || body.is_end_stream() {
        return Ok(Either::Left(Full::new(Bytes::new())));
    }
    let limits = &ctx.limits;
    let Some(upload) = ctx.uploads.enter(client.ip, limits.uploads_per_client) else {
        return Err(Page::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many uploads at once",
            format!(
                "Your address is sending {} request bodies through Slipway's slot router already; send this one when one of them has finished.",
                limits.uploads_per_client
            ),
        ));
    };
    let deadline = tokio::time::Instant::now() + limits.streamed_body_timeout;
    let first = tokio::time::timeout(
        limits.buffered_body_timeout,
        read_first(&mut body, limits.buffered_body),
    )
    .await;
    match first {
        Err(_) => Err(Page::new(
            StatusCode::REQUEST_TIMEOUT,
            "The request's body did not arrive",
            format!(
                "Slipway's slot router waited {} s for the request's body; send it at once after the request's head.",
                limits.buffered_body_timeout.as_secs()
            ),
        )),
        Ok(Err(e)) => Err(Page::new(
            StatusCode::BAD_REQUEST,
            "Bad request body",
            format!("Slipway's slot router could not read the request's body: {e}."),
        )),
        Ok(Ok((first, true))) => Ok(Either::Left(Full::new(first))),
        Ok(Ok((first, false))) => Ok(Either::Right(Streamed {
            first: (!first.is_empty()).then_some(first),
            rest: body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout: limits.streamed_body_timeout,
            started: tokio::time::Instant::now(),
            received: 0,
            min_rate: limits.min_streamed_rate,
            grace: limits.streamed_body_grace,
            tick: Box::pin(tokio::time::sleep(limits.streamed_body_grace)),
            timed_out: Arc::clone(timed_out),
            upload: Some(upload),
        })),
    }
}

/// Reads a body until its end or until `limit` bytes came; the bytes, and
/// whether that was the whole body. Trailers are dropped.
async fn read_first(body: &mut Incoming, limit: usize) -> Result<(Bytes, bool), hyper::Error> {
    let mut parts: Vec<Bytes> = Vec::new();
    let mut len = 0;
    while len < limit {
        match body.frame().await {
            None => return Ok((join(parts, len), true)),
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    len += data.len();
                    parts.push(data);
                }
            }
        }
    }
    Ok((join(parts, len), body.is_end_stream()))
}

fn join(mut parts: Vec<Bytes>, len: usize) -> Bytes {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut all = Vec::with_capacity(len);
    for part in parts {
        all.extend_from_slice(&part);
    }
    Bytes::from(all)
}

async fn forward(
    ctx: &RouterCtx,
    client: &ClientConn,
    req: Request<Incoming>,
    host: HeaderValue,
    framing: Framing,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    guard: InFlight,
) -> Response<ResponseBody> {
    let backend = Arc::clone(&guard.0);
    let (mut parts, body) = req.into_parts();
    // HTTP/1.1 to the process: the request target is the path (and query).
    let path = match parts.uri.path_and_query() {
        Some(path) => path.clone(),
        None => PathAndQuery::from_static("/"),
    };
    parts.uri = Uri::from(path);
    // The router speaks HTTP/1.1 to the app whatever the client spoke.
    parts.version = Version::HTTP_11;
    let upgrade_to = upgrade
        .is_some()
        .then(|| parts.headers.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(&mut parts.headers);
    match framing {
        Framing::None => {}
        Framing::Length(length) => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        Framing::Chunked => {
            parts.headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
    }
    if let Some(protocol) = upgrade_to {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }
    parts.headers.insert(header::HOST, host.clone());
    forwarded_headers(&mut parts.headers, &client.peer_header, host);
    // The body (or its first part) comes before the connection to the app.
    let timed_out = Arc::new(AtomicBool::new(false));
    let body = match request_body(ctx, client, body, framing, &timed_out).await {
        Ok(body) => body,
        Err(page) => return page.response(true),
    };
    // Whether part of the body may stay unread if the app does not answer.
    let streamed = matches!(body, Either::Right(_));
    // A request without a body can be sent again if the kept-alive
    // connection it went out on was closed by the app meanwhile.
    let retryable = framing == Framing::None
        && upgrade.is_none()
        && matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::PUT
        );
    let request = Request::from_parts(parts, body);
    let mut response = match send(client, &backend, request, retryable).await {
        Ok(response) => response,
        Err(_) if timed_out.load(Ordering::SeqCst) => {
            return Page::new(
                StatusCode::REQUEST_TIMEOUT,
                "The request's body did not arrive",
                format!(
                    "Slipway's slot router waited {} s for the request's body to end.",
                    ctx.limits.streamed_body_timeout.as_secs()
                ),
            )
            .response(true);
        }
        Err(e) => {
            tracing::warn!(backend = backend.label(), error = %e, "slot process did not answer");
            return Page::new(
                StatusCode::BAD_GATEWAY,
                "The slot's process does not answer",
                format!(
                    "Slipway forwarded the request to {} ({}), which did not answer: {}. It may be starting, restarting after a crash, or stopped; the environments page says which.",
                    backend.label(),
                    backend.addr,
                    error_chain(e.as_ref())
                ),
            )
            .response(streamed);
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // The connection to the app becomes the tunnel's; it is not reused.
        drop(client.pinned().take());
        let Some(client_side) = upgrade else {
            tracing::warn!(
                backend = backend.label(),
                "slot process switched protocols unasked"
            );
            return Page::new(
                StatusCode::BAD_GATEWAY,
                "The slot's process answered wrongly",
                "The slot's process switched protocols though the request did not ask to.",
            )
            .response(true);
        };
        let app_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            // Counted in flight while it lasts.
            let _guard = guard;
            if let (Ok(app), Ok(client)) = tokio::join!(app_side, client_side) {
                let mut app = TokioIo::new(app);
                let mut client = TokioIo::new(client);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut app).await;
            }
        });
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            parts.headers.insert(header::UPGRADE, protocol);
        }
        return Response::from_parts(parts, Either::Right(Full::new(Bytes::new())));
    }
    let (mut parts, body) = response.into_parts();
    // An HTTP/1.0 app (python's http.server) must not end the client's
    // keep-alive connection.
    parts.version = Version::HTTP_11;
    response_headers(&mut parts.headers);
    let body = ReadAhead::new(body).await;
    Response::from_parts(
        parts,
        Either::Left(Tracked {
            inner: body,
            _guard: guard,
        }),
    )
}

/// Sends `request` over the client connection's upstream connection to
/// `backend` (opened when there is none), and pins that connection for the
/// client's next request. A `retryable` request goes on the pinned
/// connection unless hyper knows it closed, and is sent again on a fresh
/// connection when that one broke before an answer came; any other request
/// goes only on a connection seen open. A request hyper could not send at
/// all is sent on a fresh connection.
async fn send(
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

/// A copy of a request without a body (sent again when its connection broke).
fn bodiless_copy(request: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut copy = Request::new(Either::Left(Full::new(Bytes::new())));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Removes the headers that concern one connection: the standard ones
/// ([`HOP_BY_HOP`]) and those `Connection` names — except the framing
/// headers and `Host`, which `Connection` never removes.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .filter(|name| !NEVER_CONNECTION_LISTED.contains(name))
            .collect();
        for name in &listed {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// A response's headers for the client: hop-by-hop ones removed, its
/// framing left to hyper (`Content-Length` kept as one value, a transfer
/// coding besides chunked kept as it came; hyper chunks or counts).
fn response_headers(headers: &mut HeaderMap) {
    let length = headers
        .contains_key(header::CONTENT_LENGTH)
        .then(|| content_length(headers))
        .flatten();
    let codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .filter(|v| !v.as_bytes().eq_ignore_ascii_case(b"chunked"))
        .cloned()
        .collect::<Vec<_>>();
    strip_hop_by_hop(headers);
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    for coding in codings {
        headers.append(header::TRANSFER_ENCODING, coding);
    }
}

/// The one length all `Content-Length` values say (hyper's client has
/// refused a response whose values differ).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.to_str().ok()?.split(',') {
            let n: u64 = part.trim().parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    length
}

/// Sets `X-Forwarded-For` (the client's address), `X-Forwarded-Host` and
/// `X-Forwarded-Proto`, replacing whatever the client sent in them (and
/// in `Forwarded`): the router is where requests enter, so a client's own
/// values would only be forged.
fn forwarded_headers(headers: &mut HeaderMap, peer: &HeaderValue, host: HeaderValue) {
    headers.remove(FORWARDED);
    headers.insert(X_FORWARDED_FOR, peer.clone());
    headers.insert(X_FORWARDED_HOST, host);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

/// Answers of the router's own.
struct Page {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl Page {
    fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Page {
        Page {
            status,
            title,
            message: message.into(),
        }
    }

    /// The page as a response; `close`: the connection closes after it
    /// (a request body may be unread).
    fn response(self, close: bool) -> Response<ResponseBody> {
        let body = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {title} · Slipway slot router</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}</style></head>\
<body><h1>{code} · {title}</h1><p>{message}</p><p><small>Slipway slot router</small></p></body></html>\n",
            code = self.status.as_u16(),
            title = escape(self.title),
            message = escape(&self.message),
        );
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A request body longer than [`Limits::buffered_body`]: its first part,
/// read already, then the rest as it arrives, cut off at the deadline.
struct Streamed {
    first: Option<Bytes>,
    rest: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    /// When streaming began, and the bytes streamed since (the first part
    /// not counted): checked against `min_rate` after `grace`, at `tick`.
    started: tokio::time::Instant,
    received: u64,
    min_rate: u64,
    grace: Duration,
    tick: Pin<Box<tokio::time::Sleep>>,
    /// Set when the deadline cut the body off.
    timed_out: Arc<AtomicBool>,
    /// Counted as an upload of the client's until the body ended.
    upload: Option<Upload>,
}

impl Body for Streamed {
    type Data = Bytes;
    type Error = ProxyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        match Pin::new(&mut this.rest).poll_frame(cx) {
            Poll::Ready(None) => {
                this.upload = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                }
                if this.rest.is_end_stream() {
                    this.upload = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.upload = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.upload = None;
                    this.timed_out.store(true, Ordering::SeqCst);
                    return Poll::Ready(Some(Err(format!(
                        "the request's body did not end within {} s",
                        this.timeout.as_secs()
                    )
                    .into())));
                }
                while this.tick.as_mut().poll(cx).is_ready() {
                    let counted = this.started.elapsed().saturating_sub(this.grace);
                    let due = this.min_rate.saturating_mul(counted.as_millis() as u64) / 1000;
                    if this.received < due {
                        this.upload = None;
                        this.timed_out.store(true, Ordering::SeqCst);
                        return Poll::Ready(Some(Err(format!(
                            "the request's body arrived slower than {} bytes a second",
                            this.min_rate
                        )
                        .into())));
                    }
                    let next = tokio::time::Instant::now() + Duration::from_millis(250);
                    this.tick.as_mut().reset(next);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self.first.as_ref().map_or(0, |f| f.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint.set_lower(rest.lower().saturating_add(first));
        hint
    }
}

/// A response body that keeps its request counted in flight until it ends.
struct Tracked<B> {
    inner: B,
    _guard: InFlight,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body of the app's, with its first frame read before the
/// response goes to the client when its length is known (`Content-Length`).
///
/// The client then gets the head and a small body in one write: sent
/// straight away, the head would go out alone while the body is still on
/// its way from the app's connection, and each response would cost the
/// router and the client a second write and a second read. Bodies of
/// unknown length (chunked: event streams, long polls) are not waited for.
struct ReadAhead {
    first: Option<Result<Frame<Bytes>, hyper::Error>>,
    rest: Incoming,
}

impl ReadAhead {
    async fn new(mut body: Incoming) -> ReadAhead {
        let first = if !body.is_end_stream() && body.size_hint().exact().is_some() {
            body.frame().await
        } else {
            None
        };
        ReadAhead { first, rest: body }
    }
}

impl Body for ReadAhead {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match this.first.take() {
            Some(first) => Poll::Ready(Some(first)),
            None => Pin::new(&mut this.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self.rest.size_hint();
        let first = match &self.first {
            Some(Ok(frame)) => frame.data_ref().map_or(0, |data| data.len() as u64),
            _ => 0,
        };
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint.set_lower(rest.lower().saturating_add(first));
        hint
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use http_body_util::{BodyExt, Empty, Full};
    use hyper::body::Bytes;
    use hyper::client::conn::http1::SendRequest;
    use hyper::{Request, Response, header};
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn collect_body<B: hyper::body::Body>(body: B) -> Result<Bytes, B::Error> {
        Ok(body.collect().await?.to_bytes())
    }

    #[test]
    fn labels_come_from_host_names() {
        let suffix = ".localhost";
        assert_eq!(
            label_of("space-game-dev.localhost:8081", suffix),
            Some("space-game-dev")
        );
        assert_eq!(
            label_of("Space-Game.LOCALHOST.", suffix),
            Some("Space-Game")
        );
        assert_eq!(label_of("localhost:8081", suffix), None);
        assert_eq!(label_of(".localhost", suffix), None);
        assert_eq!(label_of("example.com", suffix), None);
        assert_eq!(label_of("app.localhost.evil", suffix), None);
        assert_eq!(labels("web", "production"), vec!["web-production", "web"]);
        assert_eq!(labels("web", "dev"), vec!["web-dev"]);
        assert_eq!(
            host_names("web", "staging", "slots.example"),
            vec!["web-staging.slots.example"]
        );
    }

    #[test]
    fn connection_removes_hop_by_hop_headers_but_never_framing_or_host() {
        let mut h = HeaderMap::new();
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private, Content-Length"),
        );
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("transfer-encoding, host"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::HOST, HeaderValue::from_static("web.localhost"));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.1.2.3"));
        h.insert(FORWARDED, HeaderValue::from_static("for=10.1.2.3"));
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("x-private").is_none());
        assert!(h.get("keep-alive").is_none());
        assert_eq!(h[header::HOST], "web.localhost");
        assert_eq!(h[header::ACCEPT], "text/html");
        // The framing headers go as hop-by-hop ones, to be set again from
        // what hyper read; never because `Connection` named them.
        assert!(h.get(header::CONTENT_LENGTH).is_none());
        forwarded_headers(
            &mut h,
            &HeaderValue::from_static("127.0.0.1"),
            HeaderValue::from_static("web.localhost:8081"),
        );
        assert_eq!(h[X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[X_FORWARDED_HOST], "web.localhost:8081");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert!(h.get(FORWARDED).is_none());

        // A response keeps its length (as one value) whatever `Connection`
        // says, and a transfer coding besides chunked.
        let mut r = HeaderMap::new();
        r.insert(
            header::CONNECTION,
            HeaderValue::from_static("content-length, transfer-encoding"),
        );
        r.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5, 5"));
        r.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("gzip, chunked"),
        );
        response_headers(&mut r);
        assert_eq!(r[header::CONTENT_LENGTH], "5");
        assert_eq!(r[header::TRANSFER_ENCODING], "gzip, chunked");
        assert!(r.get(header::CONNECTION).is_none());
    }

    #[tokio::test]
    async fn drain_waits_for_requests_in_flight() {
        let backend = Arc::new(Backend::new(1, "web/dev"));
        let guard = backend.enter().unwrap();
        assert_eq!(backend.in_flight(), 1);
        let b = Arc::clone(&backend);
        let drained = tokio::spawn(async move { b.drain(Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!drained.is_finished());
        // Retired: a new request is turned away.
        assert!(backend.enter().is_none());
        drop(guard);
        assert!(drained.await.unwrap());
        assert_eq!(backend.in_flight(), 0);
    }

    /// An app that answers `conn N` (the number of the connection the
    /// request came on), counting the connections it accepted.
    async fn counting_app() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                            "conn {n}"
                        )))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    /// A keep-alive client connection to the router; GETs with `Host: host`.
    async fn client_conn(router: SocketAddr) -> SendRequest<Empty<Bytes>> {
        let stream = tokio::net::TcpStream::connect(router).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    async fn get(sender: &mut SendRequest<Empty<Bytes>>, host: &str) -> String {
        sender.ready().await.unwrap();
        let request = Request::get("/")
            .header(header::HOST, host)
            .body(Empty::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let body = collect_body(response.into_body()).await.unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Issue 13 (7): while the slot's own process is not confirmed on its
    /// port, the router answers 503 itself and never forwards to whatever
    /// listens there.
    #[tokio::test]
    async fn a_backend_that_is_not_serving_gets_no_request() {
        let (app, accepted) = counting_app().await;
        let (router, backend, stop) = router_to(app).await;
        let mut sender = client_conn(router).await;
        backend.set_serving(false);
        let page = get(&mut sender, "web.localhost").await;
        assert!(page.contains("restarting"), "{page}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "the app got a request");
        backend.set_serving(true);
        let page = get(&mut sender, "web.localhost").await;
        assert!(!page.contains("restarting"), "{page}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        stop.cancel();
    }

    #[tokio::test]
    async fn upstream_connections_are_pinned_and_handed_on() {
        let (app, accepted) = counting_app().await;
        let table = Arc::new(RouteTable::new());
        let backend = Arc::new(Backend::new(app.port(), "web/production"));
        table.update(|m| {
            RouteTable::set(m, "web", "production", Route::Backend(Arc::clone(&backend)))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            Arc::clone(&table),
            "localhost",
            stop.clone(),
        ));

        // One client connection: every request on one upstream connection.
        let mut first = client_conn(router).await;
        for _ in 0..3 {
            assert_eq!(get(&mut first, "web.localhost").await, "conn 1");
        }
        // A second client at the same time gets a connection of its own.
        let mut second = client_conn(router).await;
        assert_eq!(get(&mut second, "web-production.localhost").await, "conn 2");
        assert_eq!(get(&mut first, "web.localhost").await, "conn 1");
        // A client that goes hands its connection on to the next one.
        drop(first);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while backend.spares().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no spare connection");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut third = client_conn(router).await;
        assert_eq!(get(&mut third, "web.localhost").await, "conn 1");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Draining closes the spares: none is kept for a retired backend.
        drop(second);
        assert!(backend.drain(Duration::from_secs(1)).await);
        assert!(backend.spares().is_empty());
        stop.cancel();
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_not_waited_for() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An app that sends a chunked head at once and its body only later.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = listener.local_addr().unwrap();
        let go_on = Arc::new(Notify::new());
        let release = Arc::clone(&go_on);
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            release.notified().await;
            stream.write_all(b"5\r\nhello\r\n0\r\n\r\n").await.unwrap();
            let _ = stream.read(&mut buf).await;
        });
        let table = Arc::new(RouteTable::new());
        let backend = Arc::new(Backend::new(app.port(), "web/production"));
        table.update(|m| RouteTable::set(m, "web", "production", Route::Backend(backend)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, table, "localhost", stop.clone()));
        let mut client = client_conn(router).await;
        let request = Request::get("/")
            .header(header::HOST, "web.localhost")
            .body(Empty::new())
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(5), client.send_request(request))
            .await
            .expect("the head came before the body")
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        go_on.notify_one();
        let body = collect_body(response.into_body()).await.unwrap();
        assert_eq!(&body[..], b"hello");
        stop.cancel();
    }

    #[test]
    fn the_table_moves_both_names_at_once() {
        let table = RouteTable::new();
        let a = Arc::new(Backend::new(1000, "a"));
        let b = Arc::new(Backend::new(2000, "b"));
        table.update(|m| {
            RouteTable::set(m, "web", "staging", Route::Backend(Arc::clone(&a)));
            RouteTable::set(m, "web", "production", Route::Backend(Arc::clone(&b)));
        });
        let port = |label: &str| match table.lookup(label) {
            Some(Route::Backend(b)) => b.addr().port(),
            _ => 0,
        };
        assert_eq!(
            (port("web"), port("web-production"), port("web-staging")),
            (2000, 2000, 1000)
        );
        table.update(|m| {
            RouteTable::set(m, "web", "staging", Route::Backend(Arc::clone(&b)));
            RouteTable::set(m, "web", "production", Route::Backend(Arc::clone(&a)));
        });
        assert_eq!(
            (port("web"), port("web-production"), port("web-staging")),
            (1000, 1000, 2000)
        );
        assert!(table.lookup("web-dev").is_none());
    }

    /// A router on a free port with `web` (production) and `web-dev` routed
    /// to `app` and `web-idle` running nothing.
    async fn router_to(app: SocketAddr) -> (SocketAddr, Arc<Backend>, CancellationToken) {
        let table = Arc::new(RouteTable::new());
        let backend = Arc::new(Backend::new(app.port(), "web/production"));
        table.update(|m| {
            RouteTable::set(m, "web", "production", Route::Backend(Arc::clone(&backend)));
            RouteTable::set(m, "web", "dev", Route::Backend(Arc::clone(&backend)));
            RouteTable::set(
                m,
                "web",
                "idle",
                Route::Idle {
                    app: "web".into(),
                    slot: "idle".into(),
                },
            );
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, table, "localhost", stop.clone()));
        (router, backend, stop)
    }

    /// An app that answers every request with what it got: method, target,
    /// the headers the router sets, and the body.
    async fn echo_app() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        |req: Request<hyper::body::Incoming>| async move {
                            let h = |name: &str| {
                                req.headers()
                                    .get(name)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("-")
                                    .to_string()
                            };
                            let head = format!(
                                "{} {} host={} xff={} xfh={} xfp={} conn={} te={} private={}",
                                req.method(),
                                req.uri(),
                                h("host"),
                                h("x-forwarded-for"),
                                h("x-forwarded-host"),
                                h("x-forwarded-proto"),
                                h("connection"),
                                h("transfer-encoding"),
                                h("x-private"),
                            );
                            let body = collect_body(req.into_body()).await.unwrap_or_default();
                            let text = format!("{head} body={}", String::from_utf8_lossy(&body));
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    /// Sends `bytes` on a new connection to the router and reads until the
    /// router closes it.
    async fn raw(router: SocketAddr, bytes: &[u8]) -> String {
        let mut stream = TcpStream::connect(router).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        read_to_close(&mut stream).await
    }

    async fn read_to_close(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
            .await
            .expect("the router closed the connection")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Reads from `stream` until `text` has come.
    async fn read_until(stream: &mut TcpStream, text: &str) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(text) {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {text:?} in {:?}", String::from_utf8_lossy(&got)))
                .unwrap();
            assert!(
                n > 0,
                "closed before {text:?}: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn bodies_headers_and_pipelined_requests_reach_the_app() {
        let (router, _backend, stop) = router_to(echo_app().await).await;
        // A chunked upload in pieces, then a pipelined GET that closes.
        let got = raw(
            router,
            b"POST /up?x=1 HTTP/1.1\r\nHost: Web.Localhost:8081\r\nTransfer-Encoding: chunked\r\n\
              Connection: keep-alive, x-private\r\nX-Private: secret\r\nX-Forwarded-For: 10.9.9.9\r\n\
              X-Forwarded-Proto: https\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
              GET http://web-dev.localhost/next HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .await;
        let first = "POST /up?x=1 host=Web.Localhost:8081 xff=127.0.0.1 \
                     xfh=Web.Localhost:8081 xfp=http conn=- te=chunked private=- body=hello world";
        let second = "GET /next host=web-dev.localhost xff=127.0.0.1 xfh=web-dev.localhost \
                      xfp=http conn=- te=- private=- body=";
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains(first), "{got}");
        let at = got.find(first).unwrap();
        assert!(got[at..].contains("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(
            got.contains("connection: close\r\n") || got.contains("Connection: close\r\n"),
            "{got}"
        );
        assert!(got.ends_with(second), "{got}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_client_that_expects_100_continue_gets_it_before_sending_its_body() {
        let (router, _backend, stop) = router_to(echo_app().await).await;
        let mut stream = TcpStream::connect(router).await.unwrap();
        stream
            .write_all(b"PUT /f HTTP/1.1\r\nHost: web.localhost\r\nExpect: 100-continue\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let interim = read_until(&mut stream, "\r\n\r\n").await;
        assert!(
            interim.starts_with("HTTP/1.1 100 Continue\r\n"),
            "{interim}"
        );
        stream.write_all(b"data").await.unwrap();
        let got = read_to_close(&mut stream).await;
        assert!(got.contains("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with("body=data"), "{got}");
        stop.cancel();
    }

    /// An app of `answer`s: for each connection, reads one request head,
    /// writes `answer`, and closes (unless `keep`: then it reads on and
    /// echoes whatever comes, as a tunnel). Counts the connections closed.
    async fn scripted_app(answer: &'static [u8], keep: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closed = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&closed);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let _ = read_until(&mut stream, "\r\n\r\n").await;
                    stream.write_all(answer).await.unwrap();
                    if keep {
                        let mut buf = [0u8; 1024];
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                    drop(stream);
                    count.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (addr, closed)
    }

    #[tokio::test]
    async fn an_answer_that_ends_with_its_connection_is_chunked_for_the_client() {
        // python's http.server without a Content-Length: HTTP/1.0, body
        // until it closes.
        let (app, _) = scripted_app(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello",
            false,
        )
        .await;
        let (router, _backend, stop) = router_to(app).await;
        let mut stream = TcpStream::connect(router).await.unwrap();
        for _ in 0..2 {
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
                .await
                .unwrap();
            let got = read_until(&mut stream, "0\r\n\r\n").await;
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            assert!(got.contains("Transfer-Encoding: chunked\r\n"), "{got}");
            assert!(got.ends_with("\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), "{got}");
        }
        // An HTTP/1.0 client gets it as it came, and the connection closes
        // (`raw` reads until it does).
        let got = raw(router, b"GET / HTTP/1.0\r\nHost: web.localhost\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.0 200 OK\r\n"), "{got}");
        assert!(!got.contains("Transfer-Encoding"), "{got}");
        assert!(got.ends_with("\r\n\r\nhello"), "{got}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_kept_alive_connection_the_app_closed_is_not_a_failed_request() {
        // Answers one request per connection, then closes without saying so.
        let (app, closed) =
            scripted_app(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
        let (router, _backend, stop) = router_to(app).await;
        let mut stream = TcpStream::connect(router).await.unwrap();
        let request = b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\n";
        let post = b"POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 1\r\n\r\nx";
        stream.write_all(request).await.unwrap();
        assert!(
            read_until(&mut stream, "\r\n\r\nok")
                .await
                .starts_with("HTTP/1.1 200 OK")
        );
        // A GET is sent again on a fresh connection when the kept one is dead.
        stream.write_all(request).await.unwrap();
        assert!(
            read_until(&mut stream, "\r\n\r\nok")
                .await
                .starts_with("HTTP/1.1 200 OK")
        );
        // A POST is never sent twice: it goes only on a connection seen open.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while closed.load(Ordering::SeqCst) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the app did not close"
            );
            tokio::task::yield_now().await;
        }
        stream.write_all(post).await.unwrap();
        assert!(
            read_until(&mut stream, "\r\n\r\nok")
                .await
                .starts_with("HTTP/1.1 200 OK")
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn an_upgrade_joins_the_two_connections() {
        let (app, _) = scripted_app(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            true,
        )
        .await;
        let (router, _backend, stop) = router_to(app).await;
        let mut stream = TcpStream::connect(router).await.unwrap();
        stream
            .write_all(b"GET /ws HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        let head = read_until(&mut stream, "\r\n\r\n").await;
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}"
        );
        assert!(head.contains("Upgrade: websocket\r\n"), "{head}");
        stream.write_all(b"ping").await.unwrap();
        assert_eq!(read_until(&mut stream, "ping").await, "ping");
        drop(stream);
        stop.cancel();
    }

    #[tokio::test]
    async fn the_router_answers_for_missing_slots_bad_requests_and_dead_processes() {
        // A port nothing listens on.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (router, _backend, stop) = router_to(dead).await;
        // Two body-less requests on one connection: each answered, kept alive.
        let got = raw(
            router,
            b"GET / HTTP/1.1\r\nHost: nope.localhost\r\n\r\nHEAD / HTTP/1.1\r\nHost: web-idle.localhost\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 404 Not Found\r\n"), "{got}");
        assert!(got.contains("No such slot"), "{got}");
        assert!(
            got.contains("HTTP/1.1 503 Service Unavailable\r\n"),
            "{got}"
        );
        assert!(got.contains("Connection: close\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\n"), "HEAD has no body: {got}");
        let got = raw(
            router,
            b"GET / HTTP/1.1\r\nHost: web.localhost\r\n\r\nGET / HTTP/1.1\r\nHost: web.localhost\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{got}");
        assert!(got.contains("does not answer"), "{got}");
        assert_eq!(
            got.matches("HTTP/1.1 502 Bad Gateway\r\n").count(),
            2,
            "kept alive: {got}"
        );
        // (Both Content-Length and Transfer-Encoding: tests/it/router.rs.)
        let got = raw(router, b"POST / HTTP/1.1\r\nHost: web.localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 501 Not Implemented\r\n"), "{got}");
        assert!(got.contains("chunked transfer coding alone"), "{got}");
        let got = raw(router, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
        assert!(got.contains("no Host header"), "{got}");
        let mut big = b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Big: ".to_vec();
        big.resize(MAX_HEAD + 100, b'a');
        let got = raw(router, &big).await;
        assert!(
            got.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{got}"
        );
        stop.cancel();
    }
}
