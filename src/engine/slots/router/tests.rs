//! The router's unit tests: host names, framing, and whole exchanges
//! against a small app on a loopback port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;

use super::headers::{FORWARDED, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use hyper::header::HeaderMap;
use std::convert::Infallible;
use tokio::sync::Notify;

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
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!("conn {n}")))))
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
    table.update(|m| RouteTable::set(m, "web", "production", Route::Backend(Arc::clone(&backend))));
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
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
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
                    });
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
