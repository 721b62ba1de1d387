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
//! - Each client connection is **one task** that reads a request head,
//!   writes the rewritten head to the slot's process, and relays the
//!   answer, on sockets it owns: no channel, no second task, no header map
//!   (heads are parsed by `httparse` and rewritten byte for byte, see
//!   [`super::http1`]), so a request costs about the four socket calls it
//!   must make. Bodies stream both ways in 16 KiB reads (nothing is
//!   buffered whole; the first piece of a response of known length is read
//!   before the head is sent, so both leave in one write). Hop-by-hop
//!   headers are removed; `X-Forwarded-For` is appended to,
//!   `X-Forwarded-Host` and `X-Forwarded-Proto` are set. A `101 Switching
//!   Protocols` answer (WebSocket) joins the two connections until either
//!   closes.
//! - Connections to the apps are kept alive and *pinned*: a client
//!   connection sends its requests (one after the other, as HTTP/1.1 does)
//!   over one upstream connection of its own, so a request takes no pool
//!   lock. When the client goes, its upstream connection is kept as a
//!   spare on the [`Backend`] for the next client connection (a lock per
//!   client connection, not per request). A body-less idempotent request
//!   whose kept-alive connection turns out closed is sent again on a fresh
//!   one; any other request goes only on a connection seen open.
//! - Every forwarded request counts as *in flight* on its [`Backend`] until
//!   its response body has been sent, so a replaced process is stopped only
//!   once the requests it took have finished ([`Backend::drain`]). A request
//!   that picked a backend just as it was retired goes to the new one.
//! - Answers of its own: `404` for a host that names no slot, `503` when the
//!   slot runs nothing, `502` when its process does not answer — each a small
//!   HTML page that says which.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::http1;

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
            if conn.alive() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps an idle connection for the next client (unless retired).
    fn give_back(&self, conn: Upstream) {
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
    shutdown: CancellationToken,
}

/// Bytes read from a connection and not used yet.
#[derive(Debug)]
struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

/// What a read asks for at first; a head may grow it to [`http1::MAX_HEAD`].
const READ_SIZE: usize = 16 * 1024;

impl Buf {
    fn new() -> Buf {
        Buf {
            data: vec![0; READ_SIZE],
            start: 0,
            end: 0,
        }
    }

    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads what `stream` has (at least a byte, or 0 at its end).
    async fn read_from(&mut self, stream: &mut TcpStream) -> std::io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // A head longer than a read: grow, up to the head limit
                // (the parser refuses a longer one before this is reached).
                let len = (self.data.len() * 2).min(http1::MAX_HEAD + READ_SIZE);
                self.data.resize(len, 0);
            }
        }
        if self.end == self.data.len() {
            // Never reached (heads are refused before, bodies are passed on
            // as they come), but a full buffer must not read as the end.
            return Err(std::io::Error::other("the read buffer is full"));
        }
        let n = stream.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

/// A connection to a slot's process, with what was read from it beyond
/// the last response (nothing, between exchanges).
#[derive(Debug)]
pub(crate) struct Upstream {
    stream: TcpStream,
    buf: Buf,
}

impl Upstream {
    /// A new connection to a slot's process.
    async fn connect(addr: SocketAddr) -> Result<Upstream, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(Upstream {
            stream,
            buf: Buf::new(),
        })
    }

    /// Whether the process still keeps this idle connection open (it has
    /// not closed it, nor sent anything unasked): one system call.
    fn alive(&self) -> bool {
        // A peek, so the check does not depend on the runtime having
        // seen the socket's last event yet.
        let mut byte = [0u8; 1];
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        matches!(
            rustix::net::recv(&self.stream, &mut byte, flags),
            Err(rustix::io::Errno::AGAIN)
        )
    }
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
}

/// Why an exchange went wrong, and what the client is told.
enum Failure {
    /// Answer with a page of the router's own.
    Page(Page),
    /// Nothing more can be said on this connection (the client went, or
    /// the response was cut off half way): close it.
    Close,
}

/// How a body moved from one connection to the other.
enum PumpError {
    /// The sending side closed or failed before the body ended.
    Source(String),
    /// The receiving side could not take it.
    Sink(std::io::Error),
}

/// Moves a body from `src` (what `buf` holds first) to `dst`, as `body`
/// frames it, with `out` holding bytes to write first (a head). `hold`:
/// do not write `out` alone while the body has not started (so a head and
/// a small body leave in one write).
async fn pump(
    body: &mut http1::BodyRelay,
    src: &mut TcpStream,
    buf: &mut Buf,
    dst: &mut TcpStream,
    out: &mut Vec<u8>,
    mut hold: bool,
) -> Result<(), PumpError> {
    loop {
        let used = body
            .take(buf.filled(), out)
            .map_err(|e| PumpError::Source(e.to_string()))?;
        buf.consume(used);
        if body.done() {
            break;
        }
        if used > 0 {
            hold = false;
        }
        if !out.is_empty() && !hold {
            dst.write_all(out).await.map_err(PumpError::Sink)?;
            out.clear();
        }
        hold = false;
        match buf.read_from(src).await {
            Ok(0) => {
                body.at_end(out)
                    .map_err(|e| PumpError::Source(e.to_string()))?;
                break;
            }
            Ok(_) => {}
            Err(e) => return Err(PumpError::Source(e.to_string())),
        }
    }
    if !out.is_empty() {
        dst.write_all(out).await.map_err(PumpError::Sink)?;
        out.clear();
    }
    Ok(())
}

/// One client connection: its requests, one after the other, each sent
/// on the upstream connection pinned to it.
struct ClientConn {
    ctx: Arc<RouterCtx>,
    stream: TcpStream,
    buf: Buf,
    /// The client's address (`X-Forwarded-For`).
    peer: String,
    pinned: Option<(Arc<Backend>, Upstream)>,
    /// The router's shutdown, as a token of the connection's own (waiting
    /// on it takes no lock shared with other connections).
    shutdown: CancellationToken,
    /// When reading a request head times out, and since when it is set.
    idle: std::pin::Pin<Box<tokio::time::Sleep>>,
    idle_from: tokio::time::Instant,
    /// The request head for the process, the response head for the
    /// client, and bytes to write.
    head: Vec<u8>,
    res_head: Vec<u8>,
    out: Vec<u8>,
}

/// How long a client may take to send a request's head (also how long an
/// idle keep-alive connection is kept).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

impl ClientConn {
    async fn run(mut self) {
        loop {
            let request = match self.read_head().await {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(page) => {
                    self.answer(&page, false, false).await;
                    self.linger().await;
                    return;
                }
            };
            self.buf.consume(request.head_len);
            let keep_alive = match self.exchange(&request).await {
                Ok(keep_alive) => keep_alive,
                Err(Failure::Page(page)) => {
                    // Unread body bytes would be taken for the next request.
                    let keep = request.keep_alive && request.body == http1::Framing::Empty;
                    let answered = self.answer(&page, request.is_head, keep).await;
                    if !keep {
                        self.linger().await;
                        return;
                    }
                    answered
                }
                Err(Failure::Close) => false,
            };
            if !keep_alive || self.shutdown.is_cancelled() {
                let _ = self.stream.shutdown().await;
                return;
            }
        }
    }

    /// Reads the next request's head. `Ok(None)`: the client closed, was
    /// idle too long, or the router is shutting down.
    async fn read_head(&mut self) -> Result<Option<http1::Request>, Page> {
        // The timer is moved at most once a second (a head may take 29 to
        // 30 s), not once a request.
        let now = tokio::time::Instant::now();
        if now.duration_since(self.idle_from) >= Duration::from_secs(1) {
            self.idle.as_mut().reset(now + HEAD_TIMEOUT);
            self.idle_from = now;
        }
        loop {
            if !self.buf.is_empty() {
                match http1::request(self.buf.filled(), &self.peer, &mut self.head) {
                    Ok(Some(request)) => return Ok(Some(request)),
                    Ok(None) => {}
                    Err(e @ http1::HeadError::TooLarge) => {
                        return Err(Page::new(
                            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                            "Request head too large",
                            format!("The slot router cannot take this request: {e}."),
                        ));
                    }
                    Err(e) => {
                        return Err(Page::new(
                            StatusCode::BAD_REQUEST,
                            "Bad request",
                            format!("The slot router cannot read this request: {e}."),
                        ));
                    }
                }
            }
            let read = tokio::select! {
                read = self.buf.read_from(&mut self.stream) => read,
                _ = &mut self.idle => return Ok(None),
                _ = self.shutdown.cancelled(), if self.buf.is_empty() => return Ok(None),
            };
            match read {
                Ok(n) if n > 0 => {}
                // Closed or failed.
                _ => return Ok(None),
            }
        }
    }

    /// Closes after an answer sent before the request was read whole: the
    /// client's unread bytes are read and dropped for a moment, so that
    /// closing does not reset the connection before the answer is read.
    async fn linger(&mut self) {
        let _ = self.stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }

    /// Writes a page of the router's own; whether it was written.
    async fn answer(&mut self, page: &Page, is_head: bool, keep_alive: bool) -> bool {
        let bytes = page_bytes(page, is_head, keep_alive);
        self.stream.write_all(&bytes).await.is_ok()
    }

    /// Routes one request and relays its exchange; whether the client's
    /// connection goes on.
    async fn exchange(&mut self, request: &http1::Request) -> Result<bool, Failure> {
        let Some(host) = request.host.as_deref() else {
            return Err(Failure::Page(Page::new(
                StatusCode::BAD_REQUEST,
                "No host name",
                "The request has no Host header, so Slipway's slot router cannot tell which app it is for.",
            )));
        };
        let ctx = Arc::clone(&self.ctx);
        let suffix = &ctx.suffix;
        let label = label_of(host, suffix).map(|l| {
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
                    return Err(Failure::Page(Page::new(
                        StatusCode::NOT_FOUND,
                        "No such slot",
                        format!(
                            "{host} names no slot of an app on this Slipway. Slots answer to APP-SLOT{suffix} (and the production slot to APP{suffix})."
                        ),
                    )));
                }
                Some(Route::Idle { app, slot }) => {
                    return Err(Failure::Page(Page::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Nothing is running in this slot",
                        format!(
                            "The slot {slot} of {app} has no release running yet. Deploy one to it (a deploy_slot task), or swap a slot into it."
                        ),
                    )));
                }
                Some(Route::Backend(backend)) => match backend.enter() {
                    Some(guard) => return self.forward(request, guard).await,
                    None => {
                        tokio::task::yield_now().await;
                        route = lookup();
                    }
                },
            }
        }
        Err(Failure::Page(Page::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The slot is changing",
            "The slot's process was being replaced; try again.",
        )))
    }

    /// The upstream connection for a request to `backend`: the pinned one,
    /// else a spare of the backend's, else `None` (connect). A connection
    /// pinned to another backend (the route moved) goes back to it.
    fn upstream_to(&mut self, backend: &Arc<Backend>, check: bool) -> Option<Upstream> {
        match self.pinned.take() {
            Some((b, conn)) if Arc::ptr_eq(&b, backend) => {
                if !check || conn.alive() {
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

    fn unreachable(backend: &Backend, why: &str) -> Failure {
        tracing::warn!(
            backend = backend.label(),
            error = why,
            "slot process did not answer"
        );
        Failure::Page(Page::new(
            StatusCode::BAD_GATEWAY,
            "The slot's process does not answer",
            format!(
                "Slipway forwarded the request to {} ({}), which did not answer: {why}. It may be starting, restarting after a crash, or stopped; the environments page says which.",
                backend.label(),
                backend.addr,
            ),
        ))
    }

    async fn forward(
        &mut self,
        request: &http1::Request,
        guard: InFlight,
    ) -> Result<bool, Failure> {
        let backend = Arc::clone(&guard.0);
        // A connection kept alive may have been closed by the process
        // meanwhile: a request that can be sent again is, on a fresh
        // connection; any other is sent only on a connection seen open.
        let reused = self.upstream_to(&backend, !request.retryable);
        let mut fresh = reused.is_none();
        let mut upstream = match reused {
            Some(conn) => conn,
            None => Upstream::connect(backend.addr)
                .await
                .map_err(|e| Self::unreachable(&backend, &e))?,
        };
        let client = http1::ClientSide {
            is_head: request.is_head,
            http10: request.http10,
            keep_alive: request.keep_alive,
        };
        // The head (and a body) to the process, then the head of its answer.
        let relayed = loop {
            match self.send(request, &mut upstream, client).await {
                Ok(relayed) => break relayed,
                Err(SendError::Retry(why)) if !fresh && request.retryable => {
                    tracing::debug!(
                        backend = backend.label(),
                        error = why,
                        "sending again on a fresh connection"
                    );
                    upstream = Upstream::connect(backend.addr)
                        .await
                        .map_err(|e| Self::unreachable(&backend, &e))?;
                    fresh = true;
                }
                Err(SendError::Retry(why)) | Err(SendError::Upstream(why)) => {
                    return Err(Self::unreachable(&backend, &why));
                }
                Err(SendError::Client) => return Err(Failure::Close),
            }
        };
        if relayed.response.status == 101 {
            return self.tunnel(upstream).await;
        }
        // The answer's body, after its head (in the same write when the
        // body is there or on its way: read-ahead for a known length).
        let mut body = http1::BodyRelay::new(relayed.response.body, relayed.relay);
        self.out.clear();
        self.out.extend_from_slice(&self.res_head);
        let hold = matches!(relayed.response.body, http1::Framing::Length(_));
        let pumped = pump(
            &mut body,
            &mut upstream.stream,
            &mut upstream.buf,
            &mut self.stream,
            &mut self.out,
            hold,
        )
        .await;
        drop(guard);
        match pumped {
            Ok(()) => {
                if relayed.response.reusable && upstream.buf.is_empty() {
                    self.pinned = Some((backend, upstream));
                }
                Ok(relayed.client_keep_alive)
            }
            Err(PumpError::Source(why)) => {
                tracing::warn!(
                    backend = backend.label(),
                    error = why,
                    "slot process cut a response off"
                );
                Err(Failure::Close)
            }
            Err(PumpError::Sink(_)) => Err(Failure::Close),
        }
    }

    /// Sends the request (head in `self.head`, body from the client) on
    /// `upstream` and reads the head of the final answer into
    /// `self.res_head` (interim `1xx` answers are passed on to the client;
    /// when the client expects `100 Continue`, the router sends it itself
    /// before reading the body, and one from the app follows harmlessly).
    async fn send(
        &mut self,
        request: &http1::Request,
        upstream: &mut Upstream,
        client: http1::ClientSide,
    ) -> Result<http1::Relayed, SendError> {
        self.out.clear();
        self.out.extend_from_slice(&self.head);
        if request.body == http1::Framing::Empty {
            upstream
                .stream
                .write_all(&self.out)
                .await
                .map_err(|e| SendError::Retry(e.to_string()))?;
        } else {
            if request.expect_continue && !request.http10 && self.buf.is_empty() {
                // The client waits for this before its body.
                self.stream
                    .write_all(CONTINUE)
                    .await
                    .map_err(|_| SendError::Client)?;
            }
            let mut body = http1::BodyRelay::new(request.body, http1::Relay::AsIs);
            pump(
                &mut body,
                &mut self.stream,
                &mut self.buf,
                &mut upstream.stream,
                &mut self.out,
                false,
            )
            .await
            .map_err(|e| match e {
                PumpError::Source(_) => SendError::Client,
                PumpError::Sink(e) => SendError::Upstream(e.to_string()),
            })?;
        }
        let mut answered = false;
        loop {
            if !upstream.buf.is_empty() {
                answered = true;
                let parsed = http1::response(upstream.buf.filled(), client, &mut self.res_head)
                    .map_err(|e| SendError::Upstream(e.to_string()))?;
                if let Some(relayed) = parsed {
                    upstream.buf.consume(relayed.response.head_len);
                    let status = relayed.response.status;
                    if (100..200).contains(&status) && status != 101 {
                        if !request.http10 {
                            self.stream
                                .write_all(&self.res_head)
                                .await
                                .map_err(|_| SendError::Client)?;
                        }
                        continue;
                    }
                    if status == 101 && !request.upgrade {
                        return Err(SendError::Upstream(
                            "it switched protocols unasked".to_string(),
                        ));
                    }
                    return Ok(relayed);
                }
            }
            match upstream.buf.read_from(&mut upstream.stream).await {
                Ok(n) if n > 0 => {}
                Ok(_) if !answered => {
                    return Err(SendError::Retry("it closed the connection".to_string()));
                }
                Ok(_) => {
                    return Err(SendError::Upstream(
                        "it closed the connection in the middle of its answer".to_string(),
                    ));
                }
                Err(e) if !answered => return Err(SendError::Retry(e.to_string())),
                Err(e) => return Err(SendError::Upstream(e.to_string())),
            }
        }
    }

    /// After `101 Switching Protocols` (a WebSocket): the two connections
    /// are joined until either closes.
    async fn tunnel(&mut self, mut upstream: Upstream) -> Result<bool, Failure> {
        self.out.clear();
        self.out.extend_from_slice(&self.res_head);
        self.out.extend_from_slice(upstream.buf.filled());
        upstream.buf.consume(usize::MAX);
        if self.stream.write_all(&self.out).await.is_err() {
            return Err(Failure::Close);
        }
        if !self.buf.is_empty() {
            let early = self.buf.filled().to_vec();
            self.buf.consume(usize::MAX);
            if upstream.stream.write_all(&early).await.is_err() {
                return Err(Failure::Close);
            }
        }
        let _ = tokio::io::copy_bidirectional(&mut self.stream, &mut upstream.stream).await;
        Ok(false)
    }
}

enum SendError {
    /// Nothing came back: the connection may have been closed while idle.
    Retry(String),
    /// The process answered wrongly or went away mid-exchange.
    Upstream(String),
    /// The client went away.
    Client,
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        if let Some((backend, conn)) = self.pinned.take() {
            backend.give_back(conn);
        }
    }
}

/// Runs the router on `listener` until `shutdown`, then lets open
/// requests finish (at most 5 s). Connections are tasks on the caller's
/// runtime: `serve`'s multi-thread one, whose work stealing keeps the tail
/// short when the cores are shared with the apps (a single-threaded
/// runtime per core was tried: less CPU, but a p99 three times longer at
/// half load, docs/performance.md).
pub async fn serve(
    listener: tokio::net::TcpListener,
    table: Arc<RouteTable>,
    domain: &str,
    shutdown: CancellationToken,
) {
    let ctx = Arc::new(RouterCtx {
        table,
        suffix: format!(".{}", domain.trim_matches('.').to_ascii_lowercase()),
        shutdown,
    });
    accept_loop(listener, ctx).await;
}

/// Accepts and serves connections until shutdown.
async fn accept_loop(listener: tokio::net::TcpListener, ctx: Arc<RouterCtx>) {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = ctx.shutdown.cancelled() => break,
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
        let conn = ClientConn {
            ctx: Arc::clone(&ctx),
            stream,
            buf: Buf::new(),
            peer: peer.ip().to_string(),
            pinned: None,
            shutdown: ctx.shutdown.child_token(),
            idle: Box::pin(tokio::time::sleep(HEAD_TIMEOUT)),
            idle_from: tokio::time::Instant::now(),
            head: Vec::with_capacity(1024),
            res_head: Vec::with_capacity(1024),
            out: Vec::with_capacity(READ_SIZE),
        };
        connections.spawn(conn.run());
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(Duration::from_secs(5), connections.wait())
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

/// A whole response of the router's own: a small HTML page.
fn page_bytes(page: &Page, is_head: bool, keep_alive: bool) -> Vec<u8> {
    let status = page.status;
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {title} · Slipway slot router</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}</style></head>\
<body><h1>{code} · {title}</h1><p>{message}</p><p><small>Slipway slot router</small></p></body></html>\n",
        code = status.as_u16(),
        title = escape(page.title),
        message = escape(&page.message),
    );
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: {}\r\n{}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" },
    )
    .into_bytes();
    if !is_head {
        out.extend_from_slice(body.as_bytes());
    }
    out
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
        let first = "POST /up?x=1 host=Web.Localhost:8081 xff=10.9.9.9, 127.0.0.1 \
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
        // An HTTP/1.0 client gets it as it came, and the connection closes.
        let got = raw(router, b"GET / HTTP/1.0\r\nHost: web.localhost\r\n\r\n").await;
        assert!(got.contains("Connection: close\r\n"), "{got}");
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
        assert!(
            got.ends_with("Connection: close\r\n\r\n"),
            "HEAD has no body: {got}"
        );
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
        let got = raw(router, b"POST / HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
        assert!(
            got.contains("both Transfer-Encoding and Content-Length"),
            "{got}"
        );
        let got = raw(router, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
        assert!(got.contains("no Host header"), "{got}");
        let mut big = b"GET / HTTP/1.1\r\nHost: web.localhost\r\nX-Big: ".to_vec();
        big.resize(http1::MAX_HEAD + 100, b'a');
        let got = raw(router, &big).await;
        assert!(
            got.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{got}"
        );
        stop.cancel();
    }
}
