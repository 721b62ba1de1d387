//! Static assets compiled into the binary, served with a content hash in
//! their URL so that they can be cached for ever.

use std::sync::LazyLock;

use actix_web::{HttpResponse, http::header};
use sha2::{Digest, Sha256};

/// The crate version, shown in the footer.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

const CSS: &str = include_str!("../../static/slipway.css");

static CSS_HASH: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::digest(CSS.as_bytes());
    hex::encode(&digest[..6])
});

/// `/static/slipway.<hash>.css`
pub fn css_url() -> String {
    format!("/static/slipway.{}.css", *CSS_HASH)
}

/// Serves the stylesheet; any hash is accepted, an old one simply gets today's file.
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .body(CSS)
}
