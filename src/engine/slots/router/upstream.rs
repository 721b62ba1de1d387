//! Connections to a slot's process: opening one, and the copy of a request
//! sent again when its connection broke.

use std::net::SocketAddr;

use http_body_util::{Either, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::{CONNECT_TIMEOUT, ProxyBody};

/// One HTTP/1.1 connection to a slot's process.
#[derive(Debug)]
pub(super) struct Upstream {
    pub(super) sender: SendRequest<ProxyBody>,
    /// The same socket (a second descriptor of it), to see whether the
    /// process closed the connection while it was idle without reading
    /// from it.
    pub(super) probe: std::net::TcpStream,
}

impl Upstream {
    /// Whether the process still keeps this idle connection open (it has
    /// not closed it, nor sent anything unasked): one system call.
    pub(super) fn alive(&self) -> bool {
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

pub(super) type ProxyError = Box<dyn std::error::Error + Send + Sync>;

/// A new HTTP/1.1 connection to a slot's process.
pub(super) async fn connect(addr: SocketAddr) -> Result<Upstream, ProxyError> {
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

/// A copy of a request without a body (sent again when its connection broke).
pub(super) fn bodiless_copy(request: &Request<ProxyBody>) -> Request<ProxyBody> {
    let mut copy = Request::new(Either::Left(Full::new(Bytes::new())));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}
