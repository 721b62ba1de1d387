//! The slot router's cost: the same load straight to an app and through
//! Slipway's slot router, one run each, printing requests/s and latency
//! percentiles (`docs/performance.md`, "Slot router").
//!
//! Two apps: a Python `ThreadingHTTPServer` (HTTP/1.1 keep-alive), the
//! kind of app the tests and the demo run in slots, and a tiny Rust
//! server in this process (the worst case for the router: the app costs
//! next to nothing, so the router's own work shows in full). The load is
//! `--connections` keep-alive connections sending GETs back to back for
//! `--seconds`. Everything runs on 127.0.0.1, on the same cores.
//!
//! ```text
//! cargo run --release --bin slipway-bench-router -- --connections 16 --seconds 5
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use slipway::engine::slots::router::{self, Backend, Route, RouteTable};
use tokio_util::sync::CancellationToken;

struct Options {
    connections: usize,
    seconds: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        connections: 16,
        seconds: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--connections" => options.connections = value.parse()?,
            "--seconds" => options.seconds = value.parse()?,
            other => anyhow::bail!("unknown option {other} (use --connections N --seconds S)"),
        }
    }
    anyhow::ensure!(
        options.connections > 0 && options.seconds > 0,
        "need at least 1"
    );
    Ok(options)
}

const PYTHON_APP: &str = r#"import os, http.server
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        body = b"release 1.0.0\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
"#;

/// Starts the Python app on a free port and waits until it accepts.
async fn python_app(dir: &std::path::Path) -> anyhow::Result<(tokio::process::Child, SocketAddr)> {
    let script = dir.join("app.py");
    std::fs::write(&script, PYTHON_APP)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = tokio::process::Command::new("python3")
        .arg(&script)
        .env("PORT", port.to_string())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start python3")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the Python app did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, addr))
}

/// The app: answers every request with a short body, keep-alive.
async fn app(listener: tokio::net::TcpListener, stop: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            _ = stop.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"release 1.0.0\n",
                    ))))
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Result of one run.
struct Run {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

/// `connections` keep-alive connections to `addr`, each sending GETs with
/// `Host: host` back to back for `seconds`.
async fn load(
    addr: SocketAddr,
    host: &str,
    connections: usize,
    seconds: u64,
) -> anyhow::Result<Run> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0usize;
            while Instant::now() < deadline && latencies.len() < 2_000_000 {
                let request = Request::get("/")
                    .header(hyper::header::HOST, &host)
                    .body(Empty::<Bytes>::new())?;
                let sent = Instant::now();
                match sender.send_request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let body = response.into_body().collect().await;
                        if ok && body.is_ok() {
                            latencies.push(sent.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut run = Run {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (latencies, errors) = task.await??;
        run.requests += latencies.len();
        run.errors += errors;
        run.latencies.extend(latencies);
    }
    run.elapsed = started.elapsed();
    run.latencies.sort_unstable();
    Ok(run)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// One run straight to `app_addr` and one through a router in front of it.
/// Returns whether the targets are met.
async fn compare(
    name: &str,
    app_addr: SocketAddr,
    options: &Options,
    stop: &CancellationToken,
) -> anyhow::Result<bool> {
    let table = Arc::new(RouteTable::new());
    let backend = Arc::new(Backend::new(
        app_addr.port(),
        "bench/production release 1.0.0",
    ));
    table.update(|map| RouteTable::set(map, "bench", "production", Route::Backend(backend)));
    let router_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let router_addr = router_listener.local_addr()?;
    let router_stop = stop.child_token();
    let serving = router_stop.clone();
    let router_table = Arc::clone(&table);
    tokio::spawn(async move {
        router::serve(router_listener, router_table, "localhost", serving).await;
    });
    // Warm both paths (connections, pools).
    load(app_addr, "bench.localhost", 2, 1).await?;
    load(router_addr, "bench.localhost", 2, 1).await?;
    let direct = load(
        app_addr,
        "bench.localhost",
        options.connections,
        options.seconds,
    )
    .await?;
    let routed = load(
        router_addr,
        "bench.localhost",
        options.connections,
        options.seconds,
    )
    .await?;
    router_stop.cancel();
    println!();
    println!("{name}:");
    println!(
        "  {:<16} {:>10} {:>8} {:>9} {:>9} {:>9} {:>7}",
        "path", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for (path, run) in [("direct to app", &direct), ("through router", &routed)] {
        println!(
            "  {:<16} {:>10} {:>8.0} {:>9} {:>9} {:>9} {:>7}",
            path,
            run.requests,
            run.rps(),
            ms(run.percentile(0.50)),
            ms(run.percentile(0.99)),
            ms(run.percentile(1.0)),
            run.errors
        );
    }
    let added_p99 = routed
        .percentile(0.99)
        .saturating_sub(direct.percentile(0.99));
    let kept = routed.rps() / direct.rps().max(1.0);
    let met = added_p99 < Duration::from_millis(1) && kept >= 0.5;
    println!(
        "  router adds {} ms at p99 (target < 1 ms) and keeps {:.0}% of the direct throughput (target >= 50%): {}",
        ms(added_p99),
        kept * 100.0,
        if met { "met" } else { "not met" }
    );
    Ok(met)
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let stop = CancellationToken::new();
        let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let app_addr = app_listener.local_addr()?;
        tokio::spawn(app(app_listener, stop.clone()));

        let dir = std::env::temp_dir().join(format!("slipway-bench-router-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (python, python_addr) = python_app(&dir).await?;
        println!(
            "slot router benchmark: {} keep-alive connections, {} s per run, 127.0.0.1, {} CPUs",
            options.connections,
            options.seconds,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        let mut met = true;
        for (name, addr) in [("Python app", python_addr), ("Rust app", app_addr)] {
            met &= compare(name, addr, &options, &stop).await?;
        }
        drop(python);
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "targets {}",
            if met { "met" } else { "NOT met (see above)" }
        );
        stop.cancel();
        anyhow::Ok(())
    })
}
