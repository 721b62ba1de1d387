//! HTTP/1.1 message framing for the slot router: where a request or a
//! response head ends, what it says about its body and its connection, and
//! the head the router sends on in its place. Pure (no I/O): the router
//! (`router.rs`) reads bytes, asks this module, and writes bytes.
//!
//! Heads are parsed with `httparse` (hyper's parser). Bodies are not
//! parsed, only *framed*: a `Content-Length` body is that many bytes, a
//! chunked body is forwarded as it came while [`Chunked`] follows its chunk
//! sizes to find where it ends (RFC 9112 §6–§7). What the router changes in
//! a head:
//!
//! - the request target becomes origin-form (`/path?query`) and the version
//!   HTTP/1.1, whatever the client spoke;
//! - hop-by-hop headers (`Connection` and the headers it lists,
//!   `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Upgrade`) are dropped, except
//!   that a WebSocket-style upgrade is passed on as `Connection: upgrade` +
//!   `Upgrade`;
//! - `X-Forwarded-For` is appended to, `X-Forwarded-Host` and
//!   `X-Forwarded-Proto` are set, `Host` is added from an absolute target;
//! - a response gets the `Connection` header that fits the client's
//!   connection (close, or keep-alive for an HTTP/1.0 client that asked).
//!
//! A request with both `Transfer-Encoding` and `Content-Length`, with
//! differing `Content-Length`s, or with a transfer coding other than
//! chunked last is refused (400): a proxy that guessed would let a request
//! be smuggled past it.

use std::fmt;
use std::mem::MaybeUninit;

/// The longest head the router reads (request line or status line and
/// headers), in bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields in one head.
pub const MAX_HEADERS: usize = 128;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Why a head cannot be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Longer than [`MAX_HEAD`] or with more than [`MAX_HEADERS`] fields.
    TooLarge,
    /// Not HTTP/1.x, or framing that cannot be trusted.
    Invalid(String),
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::TooLarge => write!(
                f,
                "the head is larger than {} KiB or has more than {MAX_HEADERS} fields",
                MAX_HEAD / 1024
            ),
            HeadError::Invalid(why) => f.write_str(why),
        }
    }
}

fn invalid(why: impl Into<String>) -> HeadError {
    HeadError::Invalid(why.into())
}

/// A request head, read and rewritten for the slot's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Bytes of the head in the input, including its blank line.
    pub head_len: usize,
    /// `HEAD` (its response has no body whatever it says).
    pub is_head: bool,
    /// The host it names (`Host`, else the absolute target's authority).
    pub host: Option<String>,
    pub body: Framing,
    /// The client keeps its connection after this exchange.
    pub keep_alive: bool,
    /// The client spoke HTTP/1.0 (no chunked responses, keep-alive only
    /// when asked).
    pub http10: bool,
    /// The client asks to switch protocols (`Connection: upgrade`).
    pub upgrade: bool,
    /// Without a body and idempotent: may be sent again on a fresh
    /// connection when a kept-alive one broke before an answer came.
    pub retryable: bool,
    /// `Expect: 100-continue`: the client waits for a `100` before its body.
    pub expect_continue: bool,
}

/// A response head, read and rewritten for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub head_len: usize,
    pub status: u16,
    pub body: Framing,
    /// The connection to the process can take another request afterwards.
    pub reusable: bool,
}

/// Names of headers the router never forwards as they came.
fn hop_by_hop(name: &str) -> bool {
    const NAMES: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|t| t.trim_ascii())
}

/// What the headers say about framing and the connection.
#[derive(Default)]
struct Facts<'a> {
    content_length: Option<u64>,
    /// `Transfer-Encoding` present; `Some(true)` when chunked is last.
    chunked_last: Option<bool>,
    close: bool,
    keep_alive: bool,
    connection_upgrade: bool,
    upgrade: Option<&'a [u8]>,
    /// Header names listed in `Connection` (also hop-by-hop).
    listed: Vec<&'a [u8]>,
}

fn facts<'a>(headers: &[httparse::Header<'a>]) -> Result<Facts<'a>, HeadError> {
    let mut f = Facts::default();
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            for value in tokens(h.value) {
                let text = std::str::from_utf8(value).unwrap_or("");
                let n: u64 = match text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
                    true => text
                        .parse()
                        .map_err(|_| invalid("Content-Length is too large"))?,
                    false => {
                        return Err(invalid(format!("Content-Length {text:?} is not a number")));
                    }
                };
                match f.content_length {
                    Some(before) if before != n => {
                        return Err(invalid("the message has two different Content-Lengths"));
                    }
                    _ => f.content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Several fields are one list; the last coding decides.
            let last = tokens(h.value).filter(|t| !t.is_empty()).last();
            f.chunked_last = Some(last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")));
        } else if name.eq_ignore_ascii_case("connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    f.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    f.keep_alive = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    f.connection_upgrade = true;
                } else if !t.is_empty() {
                    f.listed.push(t);
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            f.upgrade = Some(h.value);
        }
    }
    Ok(f)
}

impl Facts<'_> {
    /// Whether a header is dropped on the way (hop-by-hop or listed).
    fn dropped(&self, name: &str) -> bool {
        hop_by_hop(name)
            || self
                .listed
                .iter()
                .any(|l| l.eq_ignore_ascii_case(name.as_bytes()))
    }
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Parses the request head at the start of `input` and writes the head to
/// send to the slot's process into `out`. `Ok(None)`: the head is not
/// complete yet. `peer` is the client's address (`X-Forwarded-For`).
pub fn request(input: &[u8], peer: &str, out: &mut Vec<u8>) -> Result<Option<Request>, HeadError> {
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(input, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() >= MAX_HEAD => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(invalid(format!("the request is not HTTP/1.1: {e}"))),
    };
    if head_len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(invalid("the request line is incomplete"));
    };
    let http10 = version == 0;
    let f = facts(req.headers)?;
    let body = match (f.chunked_last, f.content_length) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "the request has both Transfer-Encoding and Content-Length",
            ));
        }
        (Some(true), None) => Framing::Chunked,
        (Some(false), None) => {
            return Err(invalid(
                "the request's Transfer-Encoding does not end with chunked",
            ));
        }
        (None, Some(0)) | (None, None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    // Absolute form (`http://host/path`): the process gets the path, and
    // the authority is the host when there is no `Host`.
    let (authority, path) = match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (Some(&rest[..i]), &rest[i..]),
            Some(i) => (Some(&rest[..i]), &rest[i..]),
            None => (Some(rest), "/"),
        },
        None => (None, target),
    };
    let mut hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let host_header = hosts
        .next()
        .map(|h| String::from_utf8_lossy(h.value).trim().to_string());
    if hosts.next().is_some() {
        // Which one would the app read? (RFC 9112 §3.2: 400.)
        return Err(invalid("the request has two Host headers"));
    }
    let host = match host_header.as_deref() {
        Some(h) if !h.is_empty() => Some(h.to_string()),
        _ => authority.filter(|a| !a.is_empty()).map(str::to_string),
    };
    let upgrade = f.connection_upgrade && f.upgrade.is_some() && !http10;
    let expect_continue = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("expect")
            && h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
    });

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    if path.starts_with('?') {
        out.push(b'/');
    }
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for: Vec<u8> = Vec::new();
    let mut has_host = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            let value = h.value.trim_ascii();
            if !value.is_empty() {
                if !forwarded_for.is_empty() {
                    forwarded_for.extend_from_slice(b", ");
                }
                forwarded_for.extend_from_slice(value);
            }
            continue;
        }
        if name.eq_ignore_ascii_case("x-forwarded-host")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || f.dropped(name)
        {
            continue;
        }
        if name.eq_ignore_ascii_case("host") {
            has_host = true;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    if let (false, Some(host)) = (has_host, &host) {
        push_header(out, b"Host", host.as_bytes());
    }
    if body == Framing::Chunked {
        push_header(out, b"Transfer-Encoding", b"chunked");
    }
    if upgrade {
        push_header(out, b"Connection", b"upgrade");
        push_header(out, b"Upgrade", f.upgrade.unwrap_or_default());
    }
    if !forwarded_for.is_empty() {
        forwarded_for.extend_from_slice(b", ");
    }
    forwarded_for.extend_from_slice(peer.as_bytes());
    push_header(out, b"X-Forwarded-For", &forwarded_for);
    if let Some(host) = &host {
        push_header(out, b"X-Forwarded-Host", host.as_bytes());
    }
    push_header(out, b"X-Forwarded-Proto", b"http");
    out.extend_from_slice(b"\r\n");

    let idempotent = matches!(method, "GET" | "HEAD" | "OPTIONS" | "DELETE" | "PUT");
    Ok(Some(Request {
        head_len,
        is_head: method == "HEAD",
        host,
        body,
        keep_alive: if http10 {
            f.keep_alive && !f.close
        } else {
            !f.close
        },
        http10,
        upgrade,
        retryable: idempotent && body == Framing::Empty && !upgrade,
        expect_continue,
    }))
}

/// How the router passes a response body on to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// As it came (empty, `Content-Length`, or chunked to an HTTP/1.1 client).
    AsIs,
    /// A chunked body to an HTTP/1.0 client: only the data, then close.
    Dechunk,
    /// A body that ends when the process closes: chunked for an HTTP/1.1
    /// client that keeps its connection.
    Chunk,
    /// A body that ends when the process closes: the same to the client,
    /// whose connection then closes.
    UntilClose,
}

/// What the client's side of an exchange looks like, for [`response`].
#[derive(Debug, Clone, Copy)]
pub struct ClientSide {
    pub is_head: bool,
    pub http10: bool,
    pub keep_alive: bool,
}

/// A response head rewritten for the client, with how to relay its body
/// and whether the client's connection stays open after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relayed {
    pub response: Response,
    pub relay: Relay,
    pub client_keep_alive: bool,
}

/// Parses the response head at the start of `input` and writes the head to
/// send to the client into `out`. `Ok(None)`: not complete yet. A `1xx`
/// other than `101` is an interim response: relay it (to an HTTP/1.1
/// client) and read the next head.
pub fn response(
    input: &[u8],
    client: ClientSide,
    out: &mut Vec<u8>,
) -> Result<Option<Relayed>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() >= MAX_HEAD => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(invalid(format!("the response is not HTTP/1.1: {e}"))),
    };
    let (Some(version), Some(status)) = (res.version, res.code) else {
        return Err(invalid("the status line is incomplete"));
    };
    let f = facts(res.headers)?;
    let interim = (100..200).contains(&status);
    let body = if client.is_head || interim || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (f.chunked_last, f.content_length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let server_keeps = if version == 0 {
        f.keep_alive && !f.close
    } else {
        !f.close
    };
    let reusable = server_keeps && body != Framing::UntilClose && !interim;
    let relay = match body {
        Framing::Chunked if client.http10 => Relay::Dechunk,
        Framing::UntilClose if client.keep_alive && !client.http10 => Relay::Chunk,
        Framing::UntilClose => Relay::UntilClose,
        _ => Relay::AsIs,
    };
    let client_keep_alive =
        client.keep_alive && !matches!(relay, Relay::Dechunk | Relay::UntilClose);

    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse takes three digits only.
    out.extend_from_slice(&[
        b'0' + (status / 100 % 10) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in res.headers.iter() {
        // The router decides the framing headers it sends.
        if f.dropped(h.name)
            || (h.name.eq_ignore_ascii_case("content-length")
                && matches!(relay, Relay::Dechunk | Relay::Chunk))
        {
            continue;
        }
        push_header(out, h.name.as_bytes(), h.value);
    }
    if status == 101 {
        push_header(out, b"Connection", b"upgrade");
        if let Some(upgrade) = f.upgrade {
            push_header(out, b"Upgrade", upgrade);
        }
    } else if !interim {
        match (relay, body) {
            (Relay::AsIs, Framing::Chunked) | (Relay::Chunk, _) => {
                push_header(out, b"Transfer-Encoding", b"chunked");
            }
            _ => {}
        }
        if !client_keep_alive {
            push_header(out, b"Connection", b"close");
        } else if client.http10 {
            push_header(out, b"Connection", b"keep-alive");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(Relayed {
        response: Response {
            head_len,
            status,
            body,
            reusable,
        },
        relay,
        client_keep_alive,
    }))
}

/// Follows a chunked body as its bytes go by, to find where it ends
/// (and, for an HTTP/1.0 client, which bytes are data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Hex digits of a chunk size (`digits` so far).
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: an extension (`;name=value`) or whitespace, to LF.
    SizeRest {
        size: u64,
    },
    /// `left` bytes of chunk data.
    Data {
        left: u64,
    },
    /// The CR LF after the data.
    DataCr,
    DataLf,
    /// A trailer line (after the last chunk); `empty` while nothing but
    /// CR has been seen on it.
    Trailer {
        empty: bool,
    },
    Done,
}

/// The longest chunk size in hex digits (16: 2^64 - 1).
const MAX_SIZE_DIGITS: u8 = 16;

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked {
            state: ChunkState::Size { size: 0, digits: 0 },
        }
    }

    /// The whole body (last chunk and trailers) went by.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Follows `input`; returns how many bytes of it belong to the body
    /// (all of it unless the body ends within it) and calls `data` with the
    /// ranges of `input` that are chunk data.
    pub fn scan(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(std::ops::Range<usize>),
    ) -> Result<usize, HeadError> {
        let bad = |why: &str| Err(invalid(format!("malformed chunked body: {why}")));
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Done => return Ok(i),
                ChunkState::Size { size, digits } => match (b as char).to_digit(16) {
                    Some(d) => {
                        if digits >= MAX_SIZE_DIGITS {
                            return bad("chunk size too large");
                        }
                        self.state = ChunkState::Size {
                            size: size << 4 | u64::from(d),
                            digits: digits + 1,
                        };
                        i += 1;
                    }
                    None if digits == 0 => return bad("no chunk size"),
                    None => self.state = ChunkState::SizeRest { size },
                },
                ChunkState::SizeRest { size } => {
                    if b == b'\n' {
                        self.state = if size == 0 {
                            ChunkState::Trailer { empty: true }
                        } else {
                            ChunkState::Data { left: size }
                        };
                    } else if b != b'\r'
                        && b != b';'
                        && b != b' '
                        && b != b'\t'
                        && !b.is_ascii_graphic()
                    {
                        return bad("control character in a chunk extension");
                    }
                    i += 1;
                }
                ChunkState::Data { left } => {
                    let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    data(i..i + n);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { left }
                    };
                }
                ChunkState::DataCr => {
                    match b {
                        b'\r' => self.state = ChunkState::DataLf,
                        b'\n' => self.state = ChunkState::Size { size: 0, digits: 0 },
                        _ => return bad("no CR LF after chunk data"),
                    }
                    i += 1;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return bad("no LF after chunk data");
                    }
                    self.state = ChunkState::Size { size: 0, digits: 0 };
                    i += 1;
                }
                ChunkState::Trailer { empty } => {
                    self.state = match b {
                        b'\n' if empty => ChunkState::Done,
                        b'\n' => ChunkState::Trailer { empty: true },
                        b'\r' => ChunkState::Trailer { empty },
                        _ => ChunkState::Trailer { empty: false },
                    };
                    i += 1;
                }
            }
        }
        Ok(i)
    }
}

/// A body on its way from one connection to the other: what of the bytes
/// read belongs to it, what is written for them, and when it has ended.
#[derive(Debug, Clone)]
pub struct BodyRelay {
    framing: Framing,
    relay: Relay,
    /// Bytes left of a `Content-Length` body.
    left: u64,
    chunked: Chunked,
    ended: bool,
}

impl BodyRelay {
    pub fn new(framing: Framing, relay: Relay) -> BodyRelay {
        BodyRelay {
            framing,
            relay,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: Chunked::new(),
            ended: framing == Framing::Empty || framing == Framing::Length(0),
        }
    }

    /// The whole body went by.
    pub fn done(&self) -> bool {
        self.ended
    }

    /// Takes what of `input` belongs to the body, appending what to write
    /// for it to `out`; returns how many bytes of `input` it took.
    pub fn take(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HeadError> {
        if self.ended || input.is_empty() {
            return Ok(0);
        }
        match self.framing {
            Framing::Empty => Ok(0),
            Framing::Length(_) => {
                let n = input
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[..n]);
                self.left -= n as u64;
                self.ended = self.left == 0;
                Ok(n)
            }
            Framing::Chunked => {
                let used = if self.relay == Relay::Dechunk {
                    self.chunked
                        .scan(input, |range| out.extend_from_slice(&input[range]))?
                } else {
                    let used = self.chunked.scan(input, |_| {})?;
                    out.extend_from_slice(&input[..used]);
                    used
                };
                self.ended = self.chunked.done();
                Ok(used)
            }
            Framing::UntilClose => {
                if self.relay == Relay::Chunk {
                    chunk(out, input);
                } else {
                    out.extend_from_slice(input);
                }
                Ok(input.len())
            }
        }
    }

    /// The sender closed its connection: the end of a body that lasts
    /// until then, an error for any other.
    pub fn at_end(&mut self, out: &mut Vec<u8>) -> Result<(), HeadError> {
        if self.ended {
            return Ok(());
        }
        if self.framing != Framing::UntilClose {
            return Err(invalid("the connection closed before the body ended"));
        }
        if self.relay == Relay::Chunk {
            out.extend_from_slice(LAST_CHUNK);
        }
        self.ended = true;
        Ok(())
    }
}

/// Appends `data` to `out` as one chunk (for [`Relay::Chunk`]).
pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a body the router chunks.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn req(input: &str) -> (Request, String) {
        let mut out = Vec::new();
        let r = request(input.as_bytes(), "10.0.0.9", &mut out)
            .unwrap()
            .expect("complete");
        (r, String::from_utf8(out).unwrap())
    }

    fn req_err(input: &str) -> HeadError {
        request(input.as_bytes(), "10.0.0.9", &mut Vec::new()).unwrap_err()
    }

    #[test]
    fn a_request_is_rewritten_for_the_process() {
        let head = "GET /a?b=1 HTTP/1.1\r\nHost: web.localhost:8081\r\nConnection: keep-alive, x-private\r\n\
             X-Private: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nAccept: text/html\r\n\
             X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\r\n";
        let (r, out) = req(&format!("{head}NEXT"));
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: web.localhost:8081\r\nAccept: text/html\r\n\
             X-Forwarded-For: 10.1.2.3, 10.0.0.9\r\nX-Forwarded-Host: web.localhost:8081\r\n\
             X-Forwarded-Proto: http\r\n\r\n"
        );
        assert_eq!(r.head_len, head.len());
        assert_eq!(r.host.as_deref(), Some("web.localhost:8081"));
        assert_eq!(r.body, Framing::Empty);
        assert!(r.keep_alive && r.retryable && !r.http10 && !r.upgrade && !r.is_head);
    }

    #[test]
    fn absolute_targets_and_http10() {
        let (r, out) = req("GET http://web.localhost/x HTTP/1.0\r\n\r\n");
        assert!(
            out.starts_with("GET /x HTTP/1.1\r\nHost: web.localhost\r\n"),
            "{out}"
        );
        assert_eq!(r.host.as_deref(), Some("web.localhost"));
        assert!(r.http10 && !r.keep_alive);
        let (r, out) = req("GET http://web.localhost?q HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(out.starts_with("GET /?q HTTP/1.1\r\n"), "{out}");
        assert!(r.keep_alive);
        let (r, _) = req("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!r.keep_alive);
        assert_eq!(r.host, None);
    }

    #[test]
    fn request_bodies_are_framed_or_refused() {
        let (r, out) = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(r.body, Framing::Length(5));
        assert!(!r.retryable);
        assert!(out.contains("Content-Length: 5\r\n"));
        let (r, out) = req(
            "PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(r.body, Framing::Chunked);
        assert!(!r.retryable);
        assert_eq!(out.matches("Transfer-Encoding").count(), 1);
        assert!(out.contains("Transfer-Encoding: chunked\r\n"));
        let (r, _) = req("PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.body, Framing::Empty);
        assert!(r.retryable);
        for bad in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(matches!(req_err(bad), HeadError::Invalid(_)), "{bad}");
        }
        // Equal repeated lengths are one length.
        let (r, _) = req("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(r.body, Framing::Length(3));
    }

    #[test]
    fn partial_and_oversized_heads() {
        let mut out = Vec::new();
        assert_eq!(
            request(b"GET / HTTP/1.1\r\nHost: a\r\n", "p", &mut out),
            Ok(None)
        );
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        assert_eq!(request(&big, "p", &mut out), Err(HeadError::TooLarge));
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(req_err(&many), HeadError::TooLarge);
    }

    #[test]
    fn upgrades_are_passed_on() {
        let (r, out) = req(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        );
        assert!(r.upgrade && !r.retryable);
        assert!(
            out.contains("Connection: upgrade\r\nUpgrade: websocket\r\n"),
            "{out}"
        );
        assert!(out.contains("Sec-WebSocket-Key: k\r\n"));
        // Upgrade without Connection: upgrade means nothing.
        let (r, out) = req("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        assert!(!r.upgrade);
        assert!(!out.contains("Upgrade"));
    }

    fn res(input: &str, client: ClientSide) -> (Relayed, String) {
        let mut out = Vec::new();
        let r = response(input.as_bytes(), client, &mut out)
            .unwrap()
            .expect("complete");
        (r, String::from_utf8(out).unwrap())
    }

    const KEEP: ClientSide = ClientSide {
        is_head: false,
        http10: false,
        keep_alive: true,
    };

    #[test]
    fn responses_are_framed_for_the_client() {
        let (r, out) = res(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\nhello",
            KEEP,
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(r.response.body, Framing::Length(5));
        assert!(r.response.reusable && r.client_keep_alive);
        assert_eq!(r.relay, Relay::AsIs);

        // python's http.server: HTTP/1.0, closes unless it says otherwise.
        let (r, out) = res("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", KEEP);
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert!(!r.response.reusable && r.client_keep_alive);

        // No length: chunked for a keep-alive HTTP/1.1 client.
        let (r, out) = res("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n", KEEP);
        assert_eq!(r.response.body, Framing::UntilClose);
        assert_eq!(r.relay, Relay::Chunk);
        assert!(out.ends_with("Transfer-Encoding: chunked\r\n\r\n"), "{out}");
        assert!(r.client_keep_alive && !r.response.reusable);

        // ... and until close for an HTTP/1.0 one.
        let ten = ClientSide {
            is_head: false,
            http10: true,
            keep_alive: true,
        };
        let (r, out) = res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", ten);
        assert_eq!(r.relay, Relay::Dechunk);
        assert!(!r.client_keep_alive);
        assert!(
            out.ends_with("Connection: close\r\n\r\n") && !out.contains("chunked"),
            "{out}"
        );
        let (r, out) = res("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n", ten);
        assert!(r.client_keep_alive && r.response.reusable);
        assert!(out.ends_with("Connection: keep-alive\r\n\r\n"), "{out}");

        // HEAD, 204 and 304 have no body whatever they say.
        let head = ClientSide {
            is_head: true,
            ..KEEP
        };
        let (r, out) = res("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", head);
        assert_eq!(r.response.body, Framing::Empty);
        assert!(out.contains("Content-Length: 99"));
        let (r, _) = res("HTTP/1.1 304 Not Modified\r\n\r\n", KEEP);
        assert_eq!(r.response.body, Framing::Empty);
        assert!(r.response.reusable);

        // The client asked to close.
        let close = ClientSide {
            keep_alive: false,
            ..KEEP
        };
        let (r, out) = res("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", close);
        assert!(!r.client_keep_alive && r.response.reusable);
        assert!(out.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn interim_and_switching_responses() {
        let (r, out) = res("HTTP/1.1 100 Continue\r\n\r\n", KEEP);
        assert_eq!(r.response.status, 100);
        assert_eq!(out, "HTTP/1.1 100 Continue\r\n\r\n");
        let (r, out) = res(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n",
            KEEP,
        );
        assert_eq!(r.response.status, 101);
        assert_eq!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
        );
    }

    /// Scans `input` fed in pieces of `step` bytes; returns the bytes that
    /// belong to the body and its data.
    fn scan_in_steps(input: &[u8], step: usize) -> Result<(usize, Vec<u8>), HeadError> {
        let mut c = Chunked::new();
        let mut data = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step) {
            let n = c.scan(piece, |r| data.extend_from_slice(&piece[r]))?;
            used += n;
            if c.done() {
                break;
            }
        }
        assert!(c.done(), "not done after {used} bytes");
        Ok((used, data))
    }

    #[test]
    fn chunked_bodies_are_followed_to_their_end() {
        let body = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        for step in [1, 2, 3, 7, 64, 1000] {
            let (used, data) = scan_in_steps(&input, step).unwrap();
            assert_eq!(used, body.len(), "step {step}");
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz");
        }
        let (used, data) = scan_in_steps(b"0\r\n\r\nrest", 1).unwrap();
        assert_eq!((used, data.len()), (5, 0));
        // Bare LF line ends are taken too.
        let (used, data) = scan_in_steps(b"2\nhi\n0\n\n", 3).unwrap();
        assert_eq!((used, &data[..]), (8, &b"hi"[..]));
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"11111111111111111\r\n",
            b"2\r\nhiX\r\n",
            b"2\r\nhi\rX",
            b"2;\x01\r\n",
        ] {
            let mut c = Chunked::new();
            assert!(c.scan(bad, |_| {}).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bodies_are_relayed_to_their_end() {
        let mut out = Vec::new();
        let mut b = BodyRelay::new(Framing::Length(5), Relay::AsIs);
        assert_eq!(b.take(b"hel", &mut out), Ok(3));
        assert!(!b.done());
        assert_eq!(b.take(b"loGET /", &mut out), Ok(2));
        assert!(b.done());
        assert_eq!(out, b"hello");
        assert_eq!(b.take(b"more", &mut out), Ok(0));

        let mut out = Vec::new();
        let mut b = BodyRelay::new(Framing::Length(5), Relay::AsIs);
        b.take(b"he", &mut out).unwrap();
        assert!(b.at_end(&mut out).is_err(), "cut off");

        let mut out = Vec::new();
        let mut b = BodyRelay::new(Framing::Chunked, Relay::Dechunk);
        assert_eq!(b.take(b"2\r\nhi\r\n0\r\n\r\nX", &mut out), Ok(12));
        assert!(b.done());
        assert_eq!(out, b"hi");

        let mut out = Vec::new();
        let mut b = BodyRelay::new(Framing::Chunked, Relay::AsIs);
        assert_eq!(b.take(b"2\r\nhi\r\n", &mut out), Ok(7));
        assert!(!b.done());
        assert_eq!(out, b"2\r\nhi\r\n");

        let mut out = Vec::new();
        let mut b = BodyRelay::new(Framing::UntilClose, Relay::Chunk);
        assert_eq!(b.take(b"abc", &mut out), Ok(3));
        b.at_end(&mut out).unwrap();
        assert!(b.done());
        assert_eq!(out, b"3\r\nabc\r\n0\r\n\r\n");

        let mut out = Vec::new();
        let mut b = BodyRelay::new(Framing::UntilClose, Relay::UntilClose);
        b.take(b"abc", &mut out).unwrap();
        b.at_end(&mut out).unwrap();
        assert_eq!(out, b"abc");

        assert!(BodyRelay::new(Framing::Empty, Relay::AsIs).done());
        assert!(BodyRelay::new(Framing::Length(0), Relay::AsIs).done());
    }

    #[test]
    fn bodies_are_chunked() {
        let mut out = Vec::new();
        chunk(&mut out, b"hello world, this is a longer piece");
        chunk(&mut out, b"");
        out.extend_from_slice(LAST_CHUNK);
        assert_eq!(
            out,
            b"23\r\nhello world, this is a longer piece\r\n0\r\n\r\n".to_vec()
        );
        let (used, data) = scan_in_steps(&out, 4).unwrap();
        assert_eq!(used, out.len());
        assert_eq!(data, b"hello world, this is a longer piece");
    }
}
