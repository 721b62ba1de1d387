//! The slot router: a reverse proxy in `slipway serve` (`--router-listen`,
//! default `127.0.0.1:8081`) that sends each request to the process of the
//! slot its `Host:` names.
//!
//! - Slot `S` of app `A` answers to `A-S.<domain>` and, for the slot named
//!   `production`, also to `A.<domain>` (`<domain>` is `localhost` unless
//!   `--router-domain` / `SLIPWAY_ROUTER_DOMAIN` says otherwise). The
//!   [`RouteTable`] is keyed by the label in front of the domain (`A-S`, `A`).
//! - The table is an `ArcSwap` of an immutable map: a request loads it
//!   without a lock, and a change (a deployment, a swap) stores a whole new
//!   map, so a swap moves both host names at the same instant.
//! - Bodies stream both ways (nothing is buffered whole; the first chunk
//!   of a response of known length is read before the head is sent, so
//!   both leave in one write: `ReadAhead`). Hop-by-hop headers
//!   are removed; `X-Forwarded-For` is appended to, `X-Forwarded-Host` and
//!   `X-Forwarded-Proto` are set.
//! - Connections to the apps are kept alive and *pinned*: a client
//!   connection sends its requests (one after the other, as HTTP/1.1 does)
//!   over one upstream connection of its own, so a request takes no pool
//!   lock and spawns no task. When the client goes, its upstream connection
//!   is kept as a spare on the [`Backend`] for the next client connection
//!   (a lock per client connection, not per request). A request whose
//!   upstream connection turns out closed is sent again on a fresh one.
//! - Every forwarded request counts as *in flight* on its [`Backend`] until
//!   its response body has been sent, so a replaced process is stopped only
//!   once the requests it took have finished ([`Backend::drain`]). A request
//!   that picked a backend just as it was retired goes to the new one.
//! - Answers of its own: `404` for a host that names no slot, `503` when the
//!   slot runs nothing, `502` when its process does not answer — each a small
//!   HTML page that says which.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http_body_util::{BodyExt, Either, Empty, Full};
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

/// How long connecting to a slot's process may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle upstream connections a backend keeps for new client connections.
const MAX_SPARE: usize = 64;

/// One HTTP/1.1 connection to a slot's process.
type Upstream = SendRequest<ProxyBody>;

/// The process a slot's requests go to: `127.0.0.1:PORT`, with the count
/// of requests it is serving.
#[derive(Debug)]
pub struct Backend {
    addr: SocketAddr,
    /// For logs and pages: `APP/SLOT release VERSION`.
    label: String,
    in_flight: AtomicUsize,
    retired: AtomicBool,
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
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps an idle connection for the next client (unless retired).
    fn give_back(&self, conn: Upstream) {
        if conn.is_closed() {
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
}

/// One client connection: who it is, and the upstream connection its
/// requests go over (pinned to the backend it was opened to).
struct ClientConn {
    /// The peer's address as a header value (`X-Forwarded-For`).
    peer_header: HeaderValue,
    pinned: Mutex<Option<(Arc<Backend>, Upstream)>>,
}

impl ClientConn {
    fn new(peer: SocketAddr) -> ClientConn {
        ClientConn {
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
    /// the backend's, else `None` (connect). A connection pinned to
    /// another backend (the route moved) goes back to that backend.
    fn upstream_to(&self, backend: &Arc<Backend>) -> Option<Upstream> {
        let previous = self.pinned().take();
        match previous {
            Some((b, conn)) if Arc::ptr_eq(&b, backend) && !conn.is_closed() => Some(conn),
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
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        // Ends when the process or the router closes it.
        let _ = conn.await;
    });
    Ok(sender)
}

type ProxyBody = Either<Incoming, Empty<Bytes>>;
type ResponseBody = Either<Tracked<ReadAhead>, Full<Bytes>>;

/// Headers that concern one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Runs the router on `listener` until `shutdown`, then lets open
/// requests finish (at most 5 s).
pub async fn serve(
    listener: tokio::net::TcpListener,
    table: Arc<RouteTable>,
    domain: &str,
    shutdown: CancellationToken,
) {
    let ctx = Arc::new(RouterCtx {
        table,
        suffix: format!(".{}", domain.trim_matches('.').to_ascii_lowercase()),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away mid-request is not news.
            let _ = conn.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("slot router: open connections did not finish in 5 s");
    }
}

/// The label a `Host:` value names under the router's domain, if any.
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

/// The host a request names: its `Host` header, else its target's authority.
fn request_host(req: &Request<Incoming>) -> Option<HeaderValue> {
    match req.headers().get(header::HOST) {
        Some(host) => Some(host.clone()),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

async fn handle(
    ctx: &RouterCtx,
    client: &ClientConn,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let Some(host_value) = request_host(&req) else {
        return page(
            StatusCode::BAD_REQUEST,
            "No host name",
            "The request has no Host header, so Slipway's slot router cannot tell which app it is for.",
        );
    };
    let host = host_value.to_str().unwrap_or_default();
    let label = label_of(host, &ctx.suffix).map(|l| {
        if l.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(l.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(l)
        }
    });
    let mut route = label.as_deref().and_then(|l| ctx.table.lookup(l));
    // A request that picked a backend as it was retired looks again (a
    // deployment or swap just moved the route; the new one is in the table).
    for _ in 0..3 {
        match route {
            None => {
                return page(
                    StatusCode::NOT_FOUND,
                    "No such slot",
                    &format!(
                        "{} names no slot of an app on this Slipway. Slots answer to APP-SLOT{} (and the production slot to APP{}).",
                        host, ctx.suffix, ctx.suffix
                    ),
                );
            }
            Some(Route::Idle { app, slot }) => {
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Nothing is running in this slot",
                    &format!(
                        "The slot {slot} of {app} has no release running yet. Deploy one to it (a deploy_slot task), or swap a slot into it."
                    ),
                );
            }
            Some(Route::Backend(backend)) => match backend.enter() {
                Some(guard) => {
                    let host_value = host_value.clone();
                    return forward(client, req, host_value, guard).await;
                }
                None => {
                    tokio::task::yield_now().await;
                    route = label.as_deref().and_then(|l| ctx.table.lookup(l));
                }
            },
        }
    }
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The slot is changing",
        "The slot's process was being replaced; try again.",
    )
}

async fn forward(
    client: &ClientConn,
    req: Request<Incoming>,
    host: HeaderValue,
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
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST) {
        parts.headers.insert(header::HOST, host.clone());
    }
    forwarded_headers(&mut parts.headers, &client.peer_header, host);
    // The process reads the authority from `Host`, which stays as the
    // client sent it; the connection is to `backend.addr`.
    //
    // A request without a body can be sent again if the kept-alive
    // connection it went out on was closed by the app meanwhile.
    let retryable = body.is_end_stream()
        && matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE | Method::PUT
        );
    let request = Request::from_parts(parts, Either::Left(body));
    match send(client, &backend, request, retryable).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            // An HTTP/1.0 app (python's http.server) must not end the
            // client's keep-alive connection.
            parts.version = Version::HTTP_11;
            strip_hop_by_hop(&mut parts.headers);
            let body = ReadAhead::new(body).await;
            Response::from_parts(
                parts,
                Either::Left(Tracked {
                    inner: body,
                    _guard: guard,
                }),
            )
        }
        Err(e) => {
            tracing::warn!(backend = backend.label(), error = %e, "slot process did not answer");
            page(
                StatusCode::BAD_GATEWAY,
                "The slot's process does not answer",
                &format!(
                    "Slipway forwarded the request to {} ({}), which did not answer: {}. It may be starting, restarting after a crash, or stopped; the environments page says which.",
                    backend.label(),
                    backend.addr,
                    error_chain(e.as_ref())
                ),
            )
        }
    }
}

/// Sends `request` over the client connection's upstream connection to
/// `backend` (opened when there is none), and pins that connection for the
/// client's next request. A request the kept-alive connection could not
/// take is sent on a fresh connection; so is a `retryable` one whose
/// connection broke before an answer came.
async fn send(
    client: &ClientConn,
    backend: &Arc<Backend>,
    request: Request<ProxyBody>,
    retryable: bool,
) -> Result<Response<Incoming>, ProxyError> {
    let reused = client.upstream_to(backend);
    let request = match reused {
        Some(mut conn) => {
            let copy = retryable.then(|| bodiless_copy(&request));
            let ready = conn.ready().await.is_ok();
            let failed = if ready {
                match conn.try_send_request(request).await {
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
    conn.ready().await?;
    let response = conn.send_request(request).await?;
    client.pin(Arc::clone(backend), conn);
    Ok(response)
}

/// A copy of a request without a body (sent again when its connection broke).
fn bodiless_copy(request: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut copy = Request::new(Either::Right(Empty::new()));
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

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in &listed {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    // Upgrades (WebSocket) are not proxied: without `Connection: upgrade`
    // the header means nothing.
    headers.remove(header::UPGRADE);
}

fn forwarded_headers(headers: &mut HeaderMap, peer: &HeaderValue, host: HeaderValue) {
    let appended = match headers.get(&X_FORWARDED_FOR).map(HeaderValue::to_str) {
        Some(Ok(before)) if !before.trim().is_empty() => {
            let client = peer.to_str().unwrap_or_default();
            HeaderValue::from_str(&format!("{before}, {client}")).ok()
        }
        _ => None,
    };
    headers.insert(X_FORWARDED_FOR, appended.unwrap_or_else(|| peer.clone()));
    headers.insert(X_FORWARDED_HOST, host);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

/// A small HTML page of the router's own.
fn page(status: StatusCode, title: &str, message: &str) -> Response<ResponseBody> {
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {title} · Slipway slot router</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}</style></head>\
<body><h1>{code} · {title}</h1><p>{message}</p><p><small>Slipway slot router</small></p></body></html>\n",
        code = status.as_u16(),
        title = escape(title),
        message = escape(message),
    );
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
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

/// Reads a whole body (for tests and the benchmark).
pub async fn collect_body<B>(body: B) -> Result<Bytes, B::Error>
where
    B: Body,
{
    Ok(body.collect().await?.to_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
    fn hop_by_hop_headers_go_and_forwarded_headers_come() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.1.2.3"));
        strip_hop_by_hop(&mut h);
        forwarded_headers(
            &mut h,
            &HeaderValue::from_static("127.0.0.1"),
            HeaderValue::from_static("web.localhost:8081"),
        );
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("x-private").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h[header::ACCEPT], "text/html");
        assert_eq!(h[X_FORWARDED_FOR], "10.1.2.3, 127.0.0.1");
        assert_eq!(h[X_FORWARDED_HOST], "web.localhost:8081");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
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
}
