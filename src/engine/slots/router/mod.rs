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

mod body;
mod client;
mod headers;
mod limits;
mod page;
mod table;
#[cfg(test)]
mod tests;
mod upstream;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::{Either, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;

use self::body::{ReadAhead, Streamed, Tracked, request_body};
use self::client::{ClientConn, send};
use self::headers::{
    Framing, forwarded_headers, framing, label_of, request_host, response_headers,
    strip_hop_by_hop, wants_upgrade,
};
use self::limits::Uploads;
pub use self::limits::{
    BUFFERED_BODY, BUFFERED_BODY_TIMEOUT, HEAD_TIMEOUT, Limits, MAX_HEAD, MAX_UPLOADS_PER_CLIENT,
    MIN_STREAMED_RATE, STREAMED_BODY_GRACE, STREAMED_BODY_TIMEOUT,
};
use self::page::Page;
use self::table::InFlight;
pub use self::table::{Backend, Route, RouteTable, host_names, labels};

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
/// How long open connections may take to finish when the router stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the router needs to answer.
struct RouterCtx {
    table: Arc<RouteTable>,
    /// `.localhost`, lower case, with the leading dot.
    suffix: String,
    limits: Limits,
    uploads: Arc<Uploads>,
}

/// A request body for the app: read whole, or its first part read and the
/// rest streaming.
type ProxyBody = Either<Full<Bytes>, Streamed>;
type ResponseBody = Either<Tracked<ReadAhead>, Full<Bytes>>;

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
