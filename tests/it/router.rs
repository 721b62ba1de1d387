//! The slot router against request smuggling and slow bodies (issue 12,
//! items 1 and 7): raw-TCP clients send byte-exact request shapes through
//! the router (`router::serve`, as `slipway serve` runs it) to keep-alive
//! apps (hyper servers) that record every request they parse and every
//! byte they receive. Each shape asserts that the app saw exactly the
//! request the client sent (or nothing, when the router refused it), and
//! that an innocent request on another connection afterwards gets its own
//! answer. No database: the router needs none.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use slipway::engine::slots::router::{self, Backend, Limits, Route, RouteTable};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// A request as the app parsed it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    /// Header lines in order, names lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn one(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "more than one {name}: {self:?}");
        all.first().copied()
    }
}

/// An app behind the router: a keep-alive hyper server that records what
/// it parses and receives, and answers `METHOD TARGET`.
#[derive(Clone)]
struct App {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Every byte the app read, all connections together.
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl App {
    /// `permits`: requests it serves at once (each holds one while it reads
    /// its body), like an app with a fixed number of workers.
    async fn start(permits: usize) -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = App {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            bytes: Arc::default(),
        };
        let workers = Arc::new(Semaphore::new(permits));
        let this = app.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, bytes, workers) = (
                    Arc::clone(&this.seen),
                    Arc::clone(&this.bytes),
                    Arc::clone(&workers),
                );
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (seen, workers) = (Arc::clone(&seen), Arc::clone(&workers));
                        async move {
                            let _worker = workers.acquire().await.unwrap();
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes().to_vec());
                            let Ok(body) = body else {
                                return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                                    "bad body",
                                ))));
                            };
                            let request = Seen {
                                method: parts.method.to_string(),
                                target: parts.uri.to_string(),
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (
                                            n.as_str().to_string(),
                                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                        )
                                    })
                                    .collect(),
                                body,
                            };
                            let answer = format!("{} {}", request.method, request.target);
                            seen.lock().unwrap().push(request);
                            Ok(Response::new(Full::new(Bytes::from(answer))))
                        }
                    });
                    let io = TokioIo::new(Tap {
                        inner: stream,
                        bytes,
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        app
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }
}

/// A socket that copies what is read from it.
struct Tap {
    inner: TcpStream,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.bytes
                .lock()
                .unwrap()
                .extend_from_slice(&buf.filled()[before..]);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Tap {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A router with `web` (production) leading to one app and `other`
/// (production) to another.
struct Fixture {
    router: SocketAddr,
    web: App,
    other: App,
    stop: CancellationToken,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with(Limits::default(), 64).await
    }

    async fn with(limits: Limits, app_workers: usize) -> Fixture {
        let web = App::start(app_workers).await;
        let other = App::start(app_workers).await;
        let table = Arc::new(RouteTable::new());
        table.update(|m| {
            for (name, app) in [("web", &web), ("other", &other)] {
                let backend = Arc::new(Backend::new(app.addr.port(), format!("{name}/production")));
                RouteTable::set(m, name, "production", Route::Backend(backend));
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(router::serve_with(
            listener,
            table,
            "localhost",
            stop.clone(),
            limits,
        ));
        Fixture {
            router,
            web,
            other,
            stop,
        }
    }

    /// Sends an innocent request with a cookie on a new connection and
    /// checks it got its own answer, and the app saw it as sent.
    async fn innocent(&self) {
        let mut stream = TcpStream::connect(self.router).await.unwrap();
        stream
            .write_all(
                b"GET /innocent?n=1 HTTP/1.1\r\nHost: web.localhost\r\nCookie: session=victim\r\n\
                  Authorization: Bearer victim\r\n\r\n",
            )
            .await
            .unwrap();
        let answer = read_response(&mut stream).await.expect("an answer");
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (200, "GET /innocent?n=1")
        );
        let seen = self.web.seen();
        let last = seen.last().expect("the app saw the innocent request");
        assert_eq!(
            (last.method.as_str(), last.target.as_str()),
            ("GET", "/innocent?n=1")
        );
        assert_eq!(last.one("cookie"), Some("session=victim"));
        assert!(last.body.is_empty(), "{last:?}");
        for request in &seen {
            assert!(
                !request.target.contains("smuggled"),
                "the app parsed a request no client sent: {seen:#?}"
            );
        }
        assert!(self.other.seen().is_empty(), "{:?}", self.other.seen());
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One response read off a client connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response (its head, then a `Content-Length` or chunked body,
/// or everything until the router closes); `None` when the connection
/// closed before a response.
async fn read_response(stream: &mut TcpStream) -> Option<Answer> {
    let mut got: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Duration::from_secs(10);
    let head_end = loop {
        if let Some(at) = find(&got, b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(deadline, stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let lower = head.to_ascii_lowercase();
    let length = lower.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = lower.contains("transfer-encoding: chunked");
    let mut body = got[head_end..].to_vec();
    loop {
        let complete = match length {
            Some(length) => body.len() >= length,
            None if chunked => find(&body, b"0\r\n\r\n").is_some(),
            None => false,
        };
        if complete {
            break;
        }
        let n = tokio::time::timeout(deadline, stream.read(&mut buf))
            .await
            .expect("the response's body within 10 s")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some(Answer {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the app must have seen of an attack.
enum Expect {
    /// The router refused it: this status class, and not a byte reached
    /// any app.
    Refused(u16),
    /// The app parsed exactly this one request: method, target, body, and
    /// how its body was framed (`Some(n)`: `Content-Length: n`; `None`:
    /// chunked).
    One {
        method: &'static str,
        target: &'static str,
        body: Vec<u8>,
        length: Option<usize>,
    },
}

/// A request that a keep-alive app would read as a second request if the
/// router forwarded a body without its framing.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: web.localhost\r\n\r\n";

async fn attack(name: &str, bytes: Vec<u8>, expect: Expect) {
    let f = Fixture::new().await;
    let mut stream = TcpStream::connect(f.router).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let answer = read_response(&mut stream).await;
    match expect {
        Expect::Refused(class) => {
            let answer = answer.unwrap_or_else(|| panic!("{name}: closed without an answer"));
            assert_eq!(answer.status / 100, class / 100, "{name}: {answer:?}");
            // The router closes a connection whose request it refused.
            assert!(
                read_response(&mut stream).await.is_none(),
                "{name}: the connection stayed open"
            );
            assert_eq!(f.web.received(), "", "{name}: bytes reached the app");
            assert!(f.web.seen().is_empty(), "{name}");
        }
        Expect::One {
            method,
            target,
            ref body,
            length,
        } => {
            let answer = answer.unwrap_or_else(|| panic!("{name}: closed without an answer"));
            assert_eq!(
                (answer.status, answer.body.clone()),
                (200, format!("{method} {target}")),
                "{name}: {answer:?}"
            );
            let seen = f.web.seen();
            assert_eq!(seen.len(), 1, "{name}: {seen:#?}");
            let request = &seen[0];
            assert_eq!(
                (request.method.as_str(), request.target.as_str()),
                (method, target),
                "{name}"
            );
            assert_eq!(
                String::from_utf8_lossy(&request.body),
                String::from_utf8_lossy(body),
                "{name}"
            );
            let received = f.web.received().to_ascii_lowercase();
            match length {
                Some(length) => {
                    assert_eq!(
                        request.one("content-length"),
                        Some(length.to_string().as_str()),
                        "{name}"
                    );
                    assert!(
                        request.all("transfer-encoding").is_empty(),
                        "{name}: {request:?}"
                    );
                    assert_eq!(
                        received.matches("content-length:").count(),
                        1,
                        "{name}: {received}"
                    );
                }
                None => {
                    assert_eq!(request.one("transfer-encoding"), Some("chunked"), "{name}");
                    assert!(
                        request.all("content-length").is_empty(),
                        "{name}: {request:?}"
                    );
                    assert_eq!(
                        received.matches("transfer-encoding:").count(),
                        1,
                        "{name}: {received}"
                    );
                    assert!(!received.contains("content-length:"), "{name}: {received}");
                }
            }
            assert!(request.all("connection").is_empty(), "{name}: {request:?}");
        }
    }
    // The attacker goes; an innocent client comes.
    drop(stream);
    f.innocent().await;
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /a HTTP/1.1\r\nHost: web.localhost\r\n{headers}\r\n{body}").into_bytes()
}

fn chunked(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n0\r\n\r\n", data.len())
}

#[tokio::test]
async fn connection_never_removes_content_length() {
    let n = SMUGGLED.len();
    for connection in ["Content-Length", "content-length", "close, Content-Length"] {
        attack(
            &format!("Connection: {connection}"),
            post(
                &format!("Connection: {connection}\r\nContent-Length: {n}\r\n"),
                SMUGGLED,
            ),
            Expect::One {
                method: "POST",
                target: "/a",
                body: SMUGGLED.as_bytes().to_vec(),
                length: Some(n),
            },
        )
        .await;
    }
    // Nor Transfer-Encoding, nor Host.
    attack(
        "Connection: Transfer-Encoding",
        post(
            "Connection: Transfer-Encoding, Host\r\nTransfer-Encoding: chunked\r\n",
            &chunked(SMUGGLED),
        ),
        Expect::One {
            method: "POST",
            target: "/a",
            body: SMUGGLED.as_bytes().to_vec(),
            length: None,
        },
    )
    .await;
}

#[tokio::test]
async fn content_length_and_transfer_encoding_together_are_read_as_chunked() {
    // CL.TE: a front end that counted all the bytes would pass the
    // smuggled request on as part of the body; the router reads the chunked
    // body and closes the connection, leaving the rest unread.
    let cl_te = format!("{}{SMUGGLED}", chunked("hello"));
    attack(
        "CL.TE",
        post(
            &format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                cl_te.len()
            ),
            &cl_te,
        ),
        Expect::One {
            method: "POST",
            target: "/a",
            body: b"hello".to_vec(),
            length: None,
        },
    )
    .await;
    // TE.CL: a back end that counted 4 bytes would read the chunk as a
    // request; the app gets the chunked body, without the Content-Length.
    attack(
        "TE.CL",
        post(
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
            &chunked(SMUGGLED),
        ),
        Expect::One {
            method: "POST",
            target: "/a",
            body: SMUGGLED.as_bytes().to_vec(),
            length: None,
        },
    )
    .await;
}

#[tokio::test]
async fn obfuscated_transfer_encodings_are_refused_or_read_as_chunked() {
    let body = format!("{}{SMUGGLED}", chunked("hello"));
    let cl = format!("Content-Length: {}\r\n", body.len());
    for (name, te) in [
        ("xchunked", "Transfer-Encoding: xchunked\r\n"),
        (
            "chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        ("space before the colon", "Transfer-Encoding : chunked\r\n"),
        (
            "two lines, last not chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n",
        ),
    ] {
        attack(
            name,
            post(&format!("{te}{cl}"), &body),
            Expect::Refused(400),
        )
        .await;
    }
    // Codings besides chunked would have to reach the app as they came.
    attack(
        "gzip, chunked",
        post("Transfer-Encoding: gzip, chunked\r\n", &chunked("x")),
        Expect::Refused(501),
    )
    .await;
    // Whitespace around the value is not part of it: plain chunked.
    for (name, te) in [
        ("leading space", "Transfer-Encoding:  chunked\r\n"),
        ("tab", "Transfer-Encoding:\tchunked\r\n"),
        ("tab after", "Transfer-Encoding: chunked\t\r\n"),
    ] {
        attack(
            name,
            post(&format!("{te}{cl}"), &body),
            Expect::One {
                method: "POST",
                target: "/a",
                body: b"hello".to_vec(),
                length: None,
            },
        )
        .await;
    }
}

#[tokio::test]
async fn content_lengths_reach_the_app_as_one_value_or_are_refused() {
    // Two equal lines: one Content-Length for the app.
    attack(
        "Content-Length twice",
        post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"),
        Expect::One {
            method: "POST",
            target: "/a",
            body: b"abc".to_vec(),
            length: Some(3),
        },
    )
    .await;
    for (name, cl) in [
        ("3, 3", "Content-Length: 3, 3\r\n"),
        ("3, 4", "Content-Length: 3, 4\r\n"),
        (
            "two lines differing",
            "Content-Length: 3\r\nContent-Length: 4\r\n",
        ),
        ("sign", "Content-Length: +3\r\n"),
    ] {
        attack(name, post(cl, "abcd"), Expect::Refused(400)).await;
    }
}

#[tokio::test]
async fn bare_line_feeds_folding_and_odd_targets() {
    // Bare LF ends lines as CRLF does (RFC 9112 §2.2): one request, framed
    // by its Content-Length, the rest never a request.
    attack(
        "bare LF",
        b"POST /a HTTP/1.1\nHost: web.localhost\nContent-Length: 3\n\nabc".to_vec(),
        Expect::One {
            method: "POST",
            target: "/a",
            body: b"abc".to_vec(),
            length: Some(3),
        },
    )
    .await;
    // Folded header lines (obs-fold) are refused.
    attack(
        "obs-fold",
        post(
            "X-Note: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
            "abc",
        ),
        Expect::Refused(400),
    )
    .await;
    attack(
        "two Host headers",
        b"GET / HTTP/1.1\r\nHost: web.localhost\r\nHost: other.localhost\r\n\r\n".to_vec(),
        Expect::Refused(400),
    )
    .await;
    attack(
        "no Host",
        b"GET / HTTP/1.1\r\nContent-Length: 0\r\nX: y\r\n\r\n".to_vec(),
        Expect::Refused(400),
    )
    .await;
    attack(
        "CONNECT",
        b"CONNECT web.localhost:80 HTTP/1.1\r\nHost: web.localhost:80\r\n\r\n".to_vec(),
        Expect::Refused(405),
    )
    .await;
}

#[tokio::test]
async fn an_absolute_target_is_routed_by_its_own_host() {
    let f = Fixture::new().await;
    let mut stream = TcpStream::connect(f.router).await.unwrap();
    stream
        .write_all(b"GET http://web.localhost/abs?q=1 HTTP/1.1\r\nHost: other.localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut stream).await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "GET /abs?q=1"));
    assert!(f.other.seen().is_empty(), "{:?}", f.other.seen());
    let seen = f.web.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].one("host"), Some("web.localhost"));
    assert_eq!(seen[0].one("x-forwarded-host"), Some("web.localhost"));
    drop(stream);
    f.innocent().await;
}

#[tokio::test]
async fn forwarded_headers_are_the_routers_own() {
    let f = Fixture::new().await;
    let mut stream = TcpStream::connect(f.router).await.unwrap();
    stream
        .write_all(
            b"GET /f HTTP/1.1\r\nHost: web.localhost:8081\r\nX-Forwarded-For: 203.0.113.9\r\n\
              X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Host: evil.example\r\n\
              X-Forwarded-Proto: https\r\nForwarded: for=203.0.113.9;proto=https\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_response(&mut stream).await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "GET /f"));
    let seen = f.web.seen();
    assert_eq!(seen[0].one("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen[0].one("x-forwarded-host"), Some("web.localhost:8081"));
    assert_eq!(seen[0].one("x-forwarded-proto"), Some("http"));
    assert_eq!(seen[0].one("forwarded"), None);
    drop(stream);
    f.innocent().await;
}

/// Waits until `cond` holds, at most `secs`.
async fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn slow_bodies_hold_no_worker_of_the_app() {
    // An app with 8 workers (each busy while it reads a request's body),
    // and 120 clients that send a POST's head and the first byte of its
    // body, then wait.
    let f = Fixture::with(Limits::default(), 8).await;
    let (release, released) = tokio::sync::watch::channel(false);
    let refused = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..120 {
        let (router, mut released, refused) = (f.router, released.clone(), Arc::clone(&refused));
        clients.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(router).await.unwrap();
            stream
                .write_all(b"POST /slow HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0")
                .await
                .unwrap();
            let mut first = [0u8; 1];
            let answered = tokio::select! {
                // Refused at once (too many uploads from one address).
                _ = stream.peek(&mut first) => true,
                _ = async { released.wait_for(|go| *go).await.map(|_| ()) } => false,
            };
            if answered {
                let answer = read_response(&mut stream).await.unwrap();
                assert_eq!(answer.status, 429, "{answer:?}");
                assert!(answer.body.contains("Too many uploads"), "{answer:?}");
                refused.fetch_add(1, Ordering::SeqCst);
                return None;
            }
            stream.write_all(b"123456789").await.unwrap();
            Some(read_response(&mut stream).await.unwrap())
        }));
    }
    // The router holds 64 of the bodies (its limit per client address) and
    // refuses the other 56.
    wait_until("56 refused uploads", 20, || {
        refused.load(Ordering::SeqCst) >= 120 - router::MAX_UPLOADS_PER_CLIENT
    })
    .await;
    // A normal request through the router is answered at once.
    let started = Instant::now();
    let mut stream = TcpStream::connect(f.router).await.unwrap();
    stream
        .write_all(b"GET /quick HTTP/1.1\r\nHost: web.localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_response(&mut stream))
        .await
        .expect("the GET was answered while bodies trickled in")
        .unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "GET /quick"));
    assert!(started.elapsed() < Duration::from_secs(5));
    // No slow request reached the app before its body was whole.
    assert_eq!(f.web.seen().len(), 1);
    assert!(!f.web.received().contains("/slow"));
    // The bodies end: each POST goes through, whole.
    release.send(true).unwrap();
    let mut done = 0;
    for client in clients {
        if let Some(answer) = client.await.unwrap() {
            assert_eq!((answer.status, answer.body.as_str()), (200, "POST /slow"));
            done += 1;
        }
    }
    assert_eq!(done, router::MAX_UPLOADS_PER_CLIENT);
    let posts: Vec<Seen> = f
        .web
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert_eq!(posts.len(), router::MAX_UPLOADS_PER_CLIENT);
    assert!(posts.iter().all(|p| p.body == b"0123456789"));
}

#[tokio::test]
async fn a_body_that_does_not_arrive_is_answered_408_and_never_reaches_the_app() {
    let limits = Limits {
        buffered_body_timeout: Duration::from_millis(500),
        head_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let f = Fixture::with(limits, 8).await;
    let mut stream = TcpStream::connect(f.router).await.unwrap();
    stream
        .write_all(b"POST /late HTTP/1.1\r\nHost: web.localhost\r\nContent-Length: 10\r\n\r\n01")
        .await
        .unwrap();
    let answer = read_response(&mut stream).await.unwrap();
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(answer.head.contains("Connection: close"), "{answer:?}");
    assert!(read_response(&mut stream).await.is_none());
    // A head that does not end: the connection is closed.
    let mut stream = TcpStream::connect(f.router).await.unwrap();
    stream
        .write_all(b"GET /never HTTP/1.1\r\nHost: web.localhost\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the router closed the connection")
        .ok();
    assert_eq!(f.web.received(), "");
    f.innocent().await;
}

#[tokio::test]
async fn a_large_body_streams_whole_and_a_stalled_one_is_cut_off() {
    let limits = Limits {
        buffered_body: 16 * 1024,
        streamed_body_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let f = Fixture::with(limits, 8).await;
    // 100 KiB, larger than what is read before connecting: all of it arrives.
    let big = "x".repeat(100 * 1024);
    let mut stream = TcpStream::connect(f.router).await.unwrap();
    stream
        .write_all(&post(&format!("Content-Length: {}\r\n", big.len()), &big))
        .await
        .unwrap();
    let answer = read_response(&mut stream).await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "POST /a"));
    assert_eq!(f.web.seen()[0].body.len(), big.len());
    // The same with only 20 KiB sent: cut off at the deadline.
    let mut stream = TcpStream::connect(f.router).await.unwrap();
    stream
        .write_all(&post(
            &format!("Content-Length: {}\r\n", big.len()),
            &big[..20 * 1024],
        ))
        .await
        .unwrap();
    if let Some(answer) = read_response(&mut stream).await {
        assert_eq!(answer.status, 408, "{answer:?}");
    }
    assert_eq!(f.web.seen().len(), 1, "the app saw no cut-off request");
    f.innocent().await;
}

/// A large body trickled after its first part is cut off once it falls
/// below the minimum rate, long before the overall deadline; the app never
/// gets the partial request as a whole one.
#[tokio::test]
async fn a_trickled_large_body_is_cut_off_at_the_minimum_rate() {
    let limits = Limits {
        buffered_body: 16 * 1024,
        streamed_body_timeout: Duration::from_secs(120),
        streamed_body_grace: Duration::from_millis(300),
        min_streamed_rate: 50_000,
        ..Limits::default()
    };
    let f = Fixture::with(limits, 8).await;
    let big = "x".repeat(100 * 1024);
    let mut stream = TcpStream::connect(f.router).await.unwrap();
    stream
        .write_all(&post(
            &format!("Content-Length: {}\r\n", big.len()),
            &big[..20 * 1024],
        ))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // One byte every 100 ms, until the router gives up on it.
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        ticker.tick().await;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the trickle was never cut off"
        );
        if stream.write_all(b"x").await.is_err() {
            break;
        }
        let mut probe = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {
                let answer = read_response(&mut stream).await;
                if let Some(answer) = answer {
                    assert_eq!(answer.status, 408, "{answer:?}");
                }
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        f.web.seen().iter().all(|s| s.body.len() != big.len()),
        "the app saw the trickled request as complete"
    );
    f.innocent().await;
}

/// Only WebSocket upgrades are tunnelled: another protocol (h2c) reaches
/// the app as a plain request without `Upgrade`, and is answered as one.
#[tokio::test]
async fn only_websocket_upgrades_are_tunnelled() {
    let f = Fixture::new().await;
    let mut stream = TcpStream::connect(f.router).await.unwrap();
    stream
        .write_all(b"GET /a HTTP/1.1\r\nHost: web.localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        .await
        .unwrap();
    let answer = read_response(&mut stream).await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = f.web.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].one("upgrade"), None, "{:?}", seen[0].headers);
    assert_eq!(seen[0].one("http2-settings"), None, "{:?}", seen[0].headers);
    f.innocent().await;
}
