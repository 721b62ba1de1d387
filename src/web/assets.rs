//! Static assets compiled into the binary, served with a content hash in
//! their URL so that they can be cached for ever.

use std::sync::LazyLock;

use actix_web::{HttpResponse, http::header};
use sha2::{Digest, Sha256};

/// The crate version, shown in the footer.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const CSS: &str = include_str!("../../static/slipway.css");
const JS: &str = include_str!("../../static/slipway.js");

fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
}

static CSS_HASH: LazyLock<String> = LazyLock::new(|| short_hash(CSS));
static JS_HASH: LazyLock<String> = LazyLock::new(|| short_hash(JS));

/// `/static/slipway.<hash>.css`
pub fn css_url() -> String {
    format!("/static/slipway.{}.css", *CSS_HASH)
}

/// `/static/slipway.<hash>.js`
pub fn js_url() -> String {
    format!("/static/slipway.{}.js", *JS_HASH)
}

/// Serves the stylesheet and the script by extension; any hash is
/// accepted (an old one simply gets today's file).
pub async fn file(path: actix_web::web::Path<String>) -> HttpResponse {
    let name = path.into_inner();
    let (content_type, body) = if name.starts_with("slipway.") && name.ends_with(".css") {
        ("text/css; charset=utf-8", CSS)
    } else if name.starts_with("slipway.") && name.ends_with(".js") {
        ("text/javascript; charset=utf-8", JS)
    } else {
        return HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("no such file\n");
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(body)
}
