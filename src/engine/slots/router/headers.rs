//! What the router reads and rewrites in a request's and a response's
//! head: the host, the body's framing, hop-by-hop and forwarded headers.

use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, StatusCode, Version};

use super::page::Page;

/// Headers that concern one connection, never forwarded as they came.
/// `Transfer-Encoding` and `Content-Length` are set again from what hyper
/// read, `Upgrade` for an upgrade.
pub(super) const HOP_BY_HOP: [HeaderName; 10] = [
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
pub(super) const NEVER_CONNECTION_LISTED: [HeaderName; 3] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::HOST,
];

pub(super) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// The label a host (`name[:port]`) names under the router's domain, if any.
pub(super) fn label_of<'a>(host: &'a str, suffix: &str) -> Option<&'a str> {
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
pub(super) fn request_host<B>(req: &Request<B>) -> Result<HeaderValue, Page> {
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
pub(super) enum Framing {
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
pub(super) fn framing(req: &Request<Incoming>) -> Result<Framing, Page> {
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
pub(super) fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The tokens of the `Connection` headers.
pub(super) fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the headers that concern one connection: the standard ones
/// ([`HOP_BY_HOP`]) and those `Connection` names — except the framing
/// headers and `Host`, which `Connection` never removes.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
pub(super) fn response_headers(headers: &mut HeaderMap) {
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
pub(super) fn content_length(headers: &HeaderMap) -> Option<u64> {
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
pub(super) fn forwarded_headers(headers: &mut HeaderMap, peer: &HeaderValue, host: HeaderValue) {
    headers.remove(FORWARDED);
    headers.insert(X_FORWARDED_FOR, peer.clone());
    headers.insert(X_FORWARDED_HOST, host);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}
