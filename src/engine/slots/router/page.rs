//! The router's own answers (404, 502, 503, …): small HTML pages.

use http_body_util::{Either, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use super::ResponseBody;

/// Answers of the router's own.
pub(super) struct Page {
    pub(super) status: StatusCode,
    pub(super) title: &'static str,
    pub(super) message: String,
}

impl Page {
    pub(super) fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Page {
        Page {
            status,
            title,
            message: message.into(),
        }
    }

    /// The page as a response; `close`: the connection closes after it
    /// (a request body may be unread).
    pub(super) fn response(self, close: bool) -> Response<ResponseBody> {
        let body = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {title} · Slipway slot router</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}</style></head>\
<body><h1>{code} · {title}</h1><p>{message}</p><p><small>Slipway slot router</small></p></body></html>\n",
            code = self.status.as_u16(),
            title = escape(self.title),
            message = escape(&self.message),
        );
        let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

pub(super) fn escape(text: &str) -> String {
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
