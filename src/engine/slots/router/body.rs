//! Request and response bodies: read whole or first part then streamed,
//! kept counted in flight, read ahead for one write.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Either, Full};
use hyper::StatusCode;
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};

use super::client::ClientConn;
use super::headers::Framing;
use super::limits::Upload;
use super::page::Page;
use super::table::InFlight;
use super::upstream::ProxyError;
use super::{ProxyBody, RouterCtx};

/// The request's body for the app: read whole when it is at most
/// [`Limits::buffered_body`] long, else its first part read and the rest
/// streaming. Holds an [`Upload`] of the client's while the body arrives.
pub(super) async fn request_body(
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
pub(super) async fn read_first(
    body: &mut Incoming,
    limit: usize,
) -> Result<(Bytes, bool), hyper::Error> {
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

pub(super) fn join(mut parts: Vec<Bytes>, len: usize) -> Bytes {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default();
    }
    let mut all = Vec::with_capacity(len);
    for part in parts {
        all.extend_from_slice(&part);
    }
    Bytes::from(all)
}

/// A request body longer than [`Limits::buffered_body`]: its first part,
/// read already, then the rest as it arrives, cut off at the deadline.
pub(super) struct Streamed {
    pub(super) first: Option<Bytes>,
    pub(super) rest: Incoming,
    pub(super) deadline: Pin<Box<tokio::time::Sleep>>,
    pub(super) timeout: Duration,
    /// When streaming began, and the bytes streamed since (the first part
    /// not counted): checked against `min_rate` after `grace`, at `tick`.
    pub(super) started: tokio::time::Instant,
    pub(super) received: u64,
    pub(super) min_rate: u64,
    pub(super) grace: Duration,
    pub(super) tick: Pin<Box<tokio::time::Sleep>>,
    /// Set when the deadline cut the body off.
    pub(super) timed_out: Arc<AtomicBool>,
    /// Counted as an upload of the client's until the body ended.
    pub(super) upload: Option<Upload>,
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
pub(super) struct Tracked<B> {
    pub(super) inner: B,
    pub(super) _guard: InFlight,
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
pub(super) struct ReadAhead {
    pub(super) first: Option<Result<Frame<Bytes>, hyper::Error>>,
    pub(super) rest: Incoming,
}

impl ReadAhead {
    pub(super) async fn new(mut body: Incoming) -> ReadAhead {
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
