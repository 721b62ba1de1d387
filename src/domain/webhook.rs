//! Push webhooks (pure): verifying a delivery's signature and parsing its
//! payload into a [`WebhookEvent`], for GitHub, GitLab, Gitea and a generic
//! HMAC-signed shape. No HTTP types: the route hands over the headers as a
//! [`Headers`] and the raw body.
//!
//! | provider | signature | event | delivery id |
//! | --- | --- | --- | --- |
//! | `github` | `X-Hub-Signature-256: sha256=<hex hmac-sha256(secret, body)>` | `X-GitHub-Event` | `X-GitHub-Delivery` |
//! | `gitlab` | `X-Gitlab-Token: <secret>` (compared in constant time) | `X-Gitlab-Event` | `Idempotency-Key`, else `X-Gitlab-Event-UUID` |
//! | `gitea` | `X-Gitea-Signature: <hex hmac-sha256>` | `X-Gitea-Event` | `X-Gitea-Delivery` |
//! | `generic` | `X-Slipway-Signature: sha256=<hex hmac-sha256>` | `X-Slipway-Event` (default `push`) | `X-Slipway-Delivery` |
//!
//! How the route answers: [`WebhookError::is_unauthorized`] errors are 401
//! (and change nothing), [`WebhookError::UnknownProvider`] is 404, every
//! other error is 400. `docs/webhooks.md` tells users how to set up each
//! provider.

use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::deployment::text_enum_impls;

/// Where a webhook comes from: the `{provider}` segment of `/hooks/{provider}/{pipeline}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Github,
    Gitlab,
    Gitea,
    Generic,
}

impl Provider {
    /// Every provider, in the order the docs list them.
    pub const ALL: [Provider; 4] = [
        Provider::Github,
        Provider::Gitlab,
        Provider::Gitea,
        Provider::Generic,
    ];

    /// The path segment (and the value stored with a delivery).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Github => "github",
            Provider::Gitlab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Generic => "generic",
        }
    }

    /// The header that carries the signature (or, for GitLab, the token).
    pub fn signature_header(self) -> &'static str {
        match self {
            Provider::Github => "X-Hub-Signature-256",
            Provider::Gitlab => "X-Gitlab-Token",
            Provider::Gitea => "X-Gitea-Signature",
            Provider::Generic => "X-Slipway-Signature",
        }
    }

    /// The header that names the event.
    pub fn event_header(self) -> &'static str {
        match self {
            Provider::Github => "X-GitHub-Event",
            Provider::Gitlab => "X-Gitlab-Event",
            Provider::Gitea => "X-Gitea-Event",
            Provider::Generic => "X-Slipway-Event",
        }
    }

    /// The headers that carry the delivery id, in order of preference.
    fn delivery_headers(self) -> &'static [&'static str] {
        match self {
            Provider::Github => &["X-GitHub-Delivery"],
            // `Idempotency-Key` stays the same when GitLab retries a delivery.
            Provider::Gitlab => &["Idempotency-Key", "X-Gitlab-Event-UUID"],
            Provider::Gitea => &["X-Gitea-Delivery"],
            Provider::Generic => &["X-Slipway-Delivery"],
        }
    }
}

text_enum_impls!(Provider);

impl FromStr for Provider {
    type Err = WebhookError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| WebhookError::UnknownProvider(s.to_string()))
    }
}

/// Why a webhook delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The `{provider}` path segment is not one Slipway knows (404).
    #[error("unknown webhook provider `{0}`: expected github, gitlab, gitea or generic")]
    UnknownProvider(String),
    /// The pipeline has no webhook secret, so no delivery can be trusted (401).
    #[error(
        "the pipeline has no webhook secret: set `source.webhook_secret: ${{{{ secrets.NAME }}}}` in its definition and the secret's value with `slipway secret set`"
    )]
    NoSecret,
    /// The signature (or GitLab token) header is absent (401).
    #[error(
        "the delivery is not signed: the signature header (X-Hub-Signature-256, X-Gitlab-Token, X-Gitea-Signature or X-Slipway-Signature) is missing"
    )]
    MissingSignature,
    /// The signature (or token) does not match the pipeline's secret (401).
    #[error("the delivery's signature does not match the pipeline's webhook secret")]
    BadSignature,
    /// A header the provider always sends is absent (400).
    #[error("the delivery has no {0} header")]
    MissingHeader(&'static str),
    /// The body is not the JSON the event should carry (400).
    #[error("the delivery's payload is not valid: {0}")]
    MalformedJson(String),
}

impl WebhookError {
    /// True for the errors that must answer 401 and change nothing.
    pub fn is_unauthorized(&self) -> bool {
        matches!(
            self,
            WebhookError::NoSecret | WebhookError::MissingSignature | WebhookError::BadSignature
        )
    }
}

/// Request headers, looked up case-insensitively. `Debug` prints the names
/// only: a GitLab token is the secret itself.
#[derive(Clone, Default)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Adds a header (a repeated name keeps its first value for [`Headers::get`]).
    pub fn insert(&mut self, name: impl AsRef<str>, value: impl Into<String>) {
        self.0
            .push((name.as_ref().to_ascii_lowercase(), value.into()));
    }

    /// The first value of `name`, whatever its case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value, trimmed, if present and not blank.
    fn non_blank(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

impl<K: AsRef<str>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (k, v) in iter {
            headers.insert(k, v);
        }
        headers
    }
}

/// What a verified delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// Commits were pushed to a branch or a tag (or a ref was deleted: see
    /// [`PushEvent::deleted`]).
    Push(PushEvent),
    /// The provider checks that the hook works (GitHub `ping`, generic `ping`).
    Ping,
    /// Any other event; the route answers 202 and does nothing.
    Ignored { event: String },
}

/// A push, in provider-independent terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    /// The full ref, e.g. `refs/heads/main`.
    pub git_ref: String,
    /// `X` of `refs/heads/X`.
    pub branch: Option<String>,
    /// `X` of `refs/tags/X`.
    pub tag: Option<String>,
    /// The commit the ref now points at (lowercase hex, 40 or 64 digits;
    /// all zeros when the ref was deleted).
    pub commit: String,
    /// The head commit's message.
    pub message: Option<String>,
    /// The head commit's author, `Name <email>`.
    pub author: Option<String>,
    /// Who pushed (a user name of the provider).
    pub pusher: Option<String>,
    /// The ref was deleted: there is nothing to build.
    pub deleted: bool,
}

/// Checks the delivery's signature against the pipeline's webhook secret,
/// in constant time.
pub fn verify(
    provider: Provider,
    secret: &[u8],
    headers: &Headers,
    body: &[u8],
) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::NoSecret);
    }
    let value = headers
        .non_blank(provider.signature_header())
        .ok_or(WebhookError::MissingSignature)?;
    match provider {
        Provider::Gitlab => {
            if bool::from(value.as_bytes().ct_eq(secret)) {
                Ok(())
            } else {
                Err(WebhookError::BadSignature)
            }
        }
        Provider::Github => {
            let hex = value
                .strip_prefix("sha256=")
                .ok_or(WebhookError::BadSignature)?;
            verify_hmac(secret, hex, body)
        }
        Provider::Gitea | Provider::Generic => {
            let hex = value.strip_prefix("sha256=").unwrap_or(value);
            verify_hmac(secret, hex, body)
        }
    }
}

fn verify_hmac(secret: &[u8], signature_hex: &str, body: &[u8]) -> Result<(), WebhookError> {
    let signature = hex::decode(signature_hex.trim()).map_err(|_| WebhookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| WebhookError::BadSignature)
}

/// `sha256=<hex hmac-sha256(secret, body)>`: what GitHub and the generic
/// provider send (Gitea sends the hex alone). For tests and docs.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delivery's id, to accept a repeated delivery once. Ids longer than
/// 128 characters (or with control characters) are replaced by their SHA-256.
pub fn delivery_id(provider: Provider, headers: &Headers) -> Option<String> {
    let id = provider
        .delivery_headers()
        .iter()
        .find_map(|h| headers.non_blank(h))?;
    if id.len() <= 128 && !id.chars().any(char::is_control) {
        Some(id.to_string())
    } else {
        Some(format!(
            "sha256:{}",
            hex::encode(Sha256::digest(id.as_bytes()))
        ))
    }
}

/// The SHA-256 of a delivery's signed body: a delivery is accepted once by
/// its body as well as by its delivery id, since the id header is not
/// signed and the same signature verifies on more than one provider's path.
pub fn body_digest(body: &[u8]) -> String {
    format!("body-sha256:{}", hex::encode(Sha256::digest(body)))
}

/// The provider name under which body digests are recorded: one for every
/// provider, so a body replayed on another provider's path is a repeat.
pub const ANY_PROVIDER: &str = "any";

/// Parses a (verified) delivery into the event it carries.
pub fn parse(
    provider: Provider,
    headers: &Headers,
    body: &[u8],
) -> Result<WebhookEvent, WebhookError> {
    let event = match provider {
        Provider::Generic => headers.non_blank(provider.event_header()).unwrap_or("push"),
        _ => headers
            .non_blank(provider.event_header())
            .ok_or(WebhookError::MissingHeader(provider.event_header()))?,
    };
    match provider {
        Provider::Github | Provider::Gitea => match event {
            "push" => parse_github_like(&json_body(body)?).map(WebhookEvent::Push),
            "ping" => Ok(WebhookEvent::Ping),
            other => Ok(ignored(other)),
        },
        Provider::Gitlab => {
            let is_push = match event {
                "Push Hook" | "Tag Push Hook" => true,
                // System hooks carry every kind of event; look inside.
                "System Hook" => {
                    let kind: ObjectKind = from_json(&json_body(body)?)?;
                    matches!(kind.object_kind.as_deref(), Some("push" | "tag_push"))
                }
                _ => false,
            };
            if is_push {
                parse_gitlab(&json_body(body)?).map(WebhookEvent::Push)
            } else {
                Ok(ignored(event))
            }
        }
        Provider::Generic => match event {
            "push" => parse_generic(&json_body(body)?).map(WebhookEvent::Push),
            "ping" => Ok(WebhookEvent::Ping),
            other => Ok(ignored(other)),
        },
    }
}

fn ignored(event: &str) -> WebhookEvent {
    WebhookEvent::Ignored {
        event: event.to_string(),
    }
}

/// The JSON document of the body; a form-encoded `payload=…` body (GitHub's
/// and Gitea's other content type) is decoded first.
fn json_body(body: &[u8]) -> Result<String, WebhookError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| WebhookError::MalformedJson("the body is not UTF-8".into()))?;
    match text.strip_prefix("payload=") {
        Some(encoded) => {
            let plus_decoded = encoded.replace('+', " ");
            percent_encoding::percent_decode_str(&plus_decoded)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| {
                    WebhookError::MalformedJson("the form-encoded payload is not UTF-8".into())
                })
        }
        None => Ok(text.to_string()),
    }
}

fn from_json<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, WebhookError> {
    serde_json::from_str(text).map_err(|e| WebhookError::MalformedJson(e.to_string()))
}

#[derive(Deserialize)]
struct ObjectKind {
    object_kind: Option<String>,
}

/// A person as the providers write one (GitHub: name/email/username;
/// Gitea's pusher: login/full_name/email/username).
#[derive(Deserialize, Default)]
struct Person {
    name: Option<String>,
    email: Option<String>,
    username: Option<String>,
    login: Option<String>,
}

impl Person {
    /// `Name <email>`, or whichever of the two is there.
    fn signature(&self) -> Option<String> {
        let name = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let email = self
            .email
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        match (name, email) {
            (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
            (Some(n), None) => Some(n.to_string()),
            (None, Some(e)) => Some(format!("<{e}>")),
            (None, None) => None,
        }
    }

    /// A user name: login, username, else name.
    fn handle(&self) -> Option<String> {
        [&self.login, &self.username, &self.name]
            .into_iter()
            .flatten()
            .map(|s| s.trim())
            .find(|s| !s.is_empty())
            .map(str::to_string)
    }
}

#[derive(Deserialize)]
struct Commit {
    id: String,
    message: Option<String>,
    author: Option<Person>,
}

/// GitHub's push payload; Gitea's has the same fields.
#[derive(Deserialize)]
struct GithubPush {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    head_commit: Option<Commit>,
    commits: Option<Vec<Commit>>,
    pusher: Option<Person>,
}

#[derive(Deserialize)]
struct GitlabPush {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    checkout_sha: Option<String>,
    commits: Option<Vec<Commit>>,
    /// A tag push's annotation.
    message: Option<String>,
    user_username: Option<String>,
    user_name: Option<String>,
}

#[derive(Deserialize)]
struct GenericPush {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    message: Option<String>,
    author: Option<String>,
}

fn parse_github_like(text: &str) -> Result<PushEvent, WebhookError> {
    let p: GithubPush = from_json(text)?;
    let commit = commit_id(&p.after, "after")?;
    let commits = p.commits.unwrap_or_default();
    let head = p
        .head_commit
        .as_ref()
        .or_else(|| {
            commits
                .iter()
                .rev()
                .find(|c| c.id.eq_ignore_ascii_case(&commit))
        })
        .or_else(|| commits.last());
    Ok(push_event(
        &p.git_ref,
        false,
        commit,
        head,
        None,
        p.pusher.as_ref().and_then(Person::handle),
        p.deleted,
    ))
}

fn parse_gitlab(text: &str) -> Result<PushEvent, WebhookError> {
    let p: GitlabPush = from_json(text)?;
    // `checkout_sha` is the commit (for an annotated tag, `after` is the tag object).
    let commit = match p.checkout_sha.as_deref().filter(|s| !s.is_empty()) {
        Some(sha) => commit_id(sha, "checkout_sha")?,
        None => commit_id(&p.after, "after")?,
    };
    let commits = p.commits.unwrap_or_default();
    let head = commits
        .iter()
        .find(|c| c.id.eq_ignore_ascii_case(&commit))
        .or_else(|| commits.last());
    let mut event = push_event(
        &p.git_ref,
        false,
        commit,
        head,
        None,
        p.user_username.or(p.user_name),
        false,
    );
    if event.message.is_none() {
        event.message = clean_message(p.message.as_deref());
    }
    Ok(event)
}

fn parse_generic(text: &str) -> Result<PushEvent, WebhookError> {
    let p: GenericPush = from_json(text)?;
    let commit = commit_id(&p.after, "after")?;
    let mut event = push_event(&p.git_ref, true, commit, None, None, None, false);
    event.message = clean_message(p.message.as_deref());
    event.author = p
        .author
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty());
    Ok(event)
}

fn push_event(
    git_ref: &str,
    bare_name_is_branch: bool,
    commit: String,
    head: Option<&Commit>,
    author: Option<String>,
    pusher: Option<String>,
    deleted: bool,
) -> PushEvent {
    let git_ref = git_ref.trim();
    let (branch, tag) = if let Some(b) = git_ref.strip_prefix("refs/heads/") {
        (Some(b.to_string()), None)
    } else if let Some(t) = git_ref.strip_prefix("refs/tags/") {
        (None, Some(t.to_string()))
    } else if bare_name_is_branch && !git_ref.starts_with("refs/") && !git_ref.is_empty() {
        (Some(git_ref.to_string()), None)
    } else {
        (None, None)
    };
    let git_ref = match (
        &branch,
        bare_name_is_branch && !git_ref.starts_with("refs/"),
    ) {
        (Some(b), true) => format!("refs/heads/{b}"),
        _ => git_ref.to_string(),
    };
    let deleted = deleted || commit.bytes().all(|b| b == b'0');
    PushEvent {
        git_ref,
        branch: branch.filter(|b| !b.is_empty()),
        tag: tag.filter(|t| !t.is_empty()),
        message: head.and_then(|c| clean_message(c.message.as_deref())),
        author: author.or_else(|| head.and_then(|c| c.author.as_ref()?.signature())),
        pusher,
        commit,
        deleted,
    }
}

fn clean_message(message: Option<&str>) -> Option<String> {
    message
        .map(str::trim_end)
        .filter(|m| !m.trim().is_empty())
        .map(str::to_string)
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) hex digits, lowercased.
/// Anything else is refused, so that no option-like text reaches git.
fn commit_id(value: &str, field: &str) -> Result<String, WebhookError> {
    let value = value.trim();
    if matches!(value.len(), 40 | 64) && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(WebhookError::MalformedJson(format!(
            "`{field}` must be a full commit id (40 or 64 hex digits)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const SHA: &str = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
    const ZERO: &str = "0000000000000000000000000000000000000000";

    fn headers<V: AsRef<str>>(pairs: &[(&str, V)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (*k, v.as_ref().to_string()))
            .collect()
    }

    fn push(event: WebhookEvent) -> PushEvent {
        match event {
            WebhookEvent::Push(p) => p,
            other => panic!("expected a push, got {other:?}"),
        }
    }

    /// GitHub's own example: secret "It's a Secret to Everybody", body
    /// "Hello, World!" (docs: "Validating webhook deliveries").
    #[test]
    fn github_documented_signature_example() {
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(SECRET, b"Hello, World!"), expected);
        let h = headers(&[("X-Hub-Signature-256", expected)]);
        assert_eq!(
            verify(Provider::Github, SECRET, &h, b"Hello, World!"),
            Ok(())
        );
    }

    const GITHUB_PUSH: &str = r#"{
      "ref": "refs/heads/main",
      "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
      "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
      "repository": {"id": 35129377, "name": "space-game-web", "full_name": "tailspin/space-game-web",
                     "clone_url": "https://github.com/tailspin/space-game-web.git"},
      "pusher": {"name": "mara", "email": "mara@tailspin.example"},
      "sender": {"login": "mara", "id": 21031067},
      "created": false, "deleted": false, "forced": false, "base_ref": null,
      "compare": "https://github.com/tailspin/space-game-web/compare/6113728f27ae...0d1a26e67d8f",
      "commits": [
        {"id": "1111111111111111111111111111111111111111", "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
         "distinct": true, "message": "Older change", "timestamp": "2026-11-20T10:00:00+01:00",
         "url": "https://github.com/tailspin/space-game-web/commit/1111111111111111111111111111111111111111",
         "author": {"name": "Ravi", "email": "ravi@tailspin.example", "username": "ravi"},
         "committer": {"name": "Ravi", "email": "ravi@tailspin.example", "username": "ravi"},
         "added": [], "removed": [], "modified": ["README.md"]},
        {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
         "distinct": true, "message": "Fix the score board\n\nIt counted twice.\n", "timestamp": "2026-11-20T10:05:00+01:00",
         "url": "https://github.com/tailspin/space-game-web/commit/0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
         "author": {"name": "Mara Lind", "email": "mara@tailspin.example", "username": "mara"},
         "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"},
         "added": ["dist/app.js"], "removed": [], "modified": []}
      ],
      "head_commit": {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433",
         "distinct": true, "message": "Fix the score board\n\nIt counted twice.\n", "timestamp": "2026-11-20T10:05:00+01:00",
         "author": {"name": "Mara Lind", "email": "mara@tailspin.example", "username": "mara"},
         "committer": {"name": "GitHub", "email": "noreply@github.com", "username": "web-flow"}}
    }"#;

    #[test]
    fn github_push() {
        let body = GITHUB_PUSH.as_bytes();
        let h = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("X-Hub-Signature-256", &sign(SECRET, body)),
            ("Content-Type", "application/json"),
        ]);
        assert_eq!(verify(Provider::Github, SECRET, &h, body), Ok(()));
        let p = push(parse(Provider::Github, &h, body).unwrap());
        assert_eq!(
            p,
            PushEvent {
                git_ref: "refs/heads/main".into(),
                branch: Some("main".into()),
                tag: None,
                commit: SHA.into(),
                message: Some("Fix the score board\n\nIt counted twice.".into()),
                author: Some("Mara Lind <mara@tailspin.example>".into()),
                pusher: Some("mara".into()),
                deleted: false,
            }
        );
        assert_eq!(
            delivery_id(Provider::Github, &h).as_deref(),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        );
    }

    #[test]
    fn github_push_form_encoded() {
        let body = format!(
            "payload={}",
            percent_encoding::utf8_percent_encode(GITHUB_PUSH, percent_encoding::NON_ALPHANUMERIC)
        );
        let h = headers(&[
            ("x-github-event", "push"),
            ("x-hub-signature-256", &sign(SECRET, body.as_bytes())),
        ]);
        assert_eq!(
            verify(Provider::Github, SECRET, &h, body.as_bytes()),
            Ok(())
        );
        assert_eq!(
            push(parse(Provider::Github, &h, body.as_bytes()).unwrap()).commit,
            SHA
        );
    }

    #[test]
    fn github_ping_and_other_events() {
        let body = br#"{"zen": "Design for failure.", "hook_id": 109948940,
            "hook": {"type": "Repository", "id": 109948940, "active": true, "events": ["push"],
                     "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://slipway.example/hooks/github/space-game-web"}},
            "repository": {"id": 35129377, "full_name": "tailspin/space-game-web"}}"#;
        let h = headers(&[
            ("X-GitHub-Event", "ping"),
            ("X-Hub-Signature-256", &sign(SECRET, body)),
        ]);
        assert_eq!(verify(Provider::Github, SECRET, &h, body), Ok(()));
        assert_eq!(parse(Provider::Github, &h, body), Ok(WebhookEvent::Ping));
        let h = headers(&[("X-GitHub-Event", "pull_request")]);
        assert_eq!(
            parse(Provider::Github, &h, b"{}"),
            Ok(WebhookEvent::Ignored {
                event: "pull_request".into()
            })
        );
        assert_eq!(
            parse(Provider::Github, &Headers::new(), b"{}"),
            Err(WebhookError::MissingHeader("X-GitHub-Event"))
        );
    }

    #[test]
    fn github_tag_push() {
        let body = GITHUB_PUSH.replace("refs/heads/main", "refs/tags/v1.0.9");
        let h = headers(&[("X-GitHub-Event", "push")]);
        let p = push(parse(Provider::Github, &h, body.as_bytes()).unwrap());
        assert_eq!(p.tag.as_deref(), Some("v1.0.9"));
        assert_eq!(p.branch, None);
        assert!(!p.deleted);
    }

    #[test]
    fn github_branch_deletion() {
        let body = format!(
            r#"{{"ref": "refs/heads/feature/old", "before": "{SHA}", "after": "{ZERO}",
                "created": false, "deleted": true, "forced": false, "base_ref": null,
                "commits": [], "head_commit": null, "pusher": {{"name": "mara", "email": null}}}}"#
        );
        let h = headers(&[("X-GitHub-Event", "push")]);
        let p = push(parse(Provider::Github, &h, body.as_bytes()).unwrap());
        assert!(p.deleted);
        assert_eq!(p.branch.as_deref(), Some("feature/old"));
        assert_eq!(p.commit, ZERO);
        assert_eq!(p.message, None);
        assert_eq!(p.author, None);
    }

    #[test]
    fn signatures_good_bad_missing() {
        let body = GITHUB_PUSH.as_bytes();
        let good = sign(SECRET, body);
        let good_hex = good.trim_start_matches("sha256=");
        // Bad: another secret, a changed body, no prefix, not hex, truncated.
        let other = sign(b"another secret", body);
        for (provider, value) in [
            (Provider::Github, other.as_str()),
            (Provider::Github, good_hex),
            (Provider::Github, "sha256=zz"),
            (Provider::Github, &good[..good.len() - 2]),
            (Provider::Gitea, other.trim_start_matches("sha256=")),
            (Provider::Gitea, "not hex"),
            (Provider::Generic, other.as_str()),
            (Provider::Generic, "sha256="),
        ] {
            let h = headers(&[(provider.signature_header(), value)]);
            assert_eq!(
                verify(provider, SECRET, &h, body),
                Err(WebhookError::BadSignature),
                "{provider} {value}"
            );
        }
        let h = headers(&[("X-Hub-Signature-256", good.as_str())]);
        assert_eq!(
            verify(Provider::Github, SECRET, &h, b"{\"ref\": \"changed\"}"),
            Err(WebhookError::BadSignature)
        );
        // Missing (or blank) headers; a GitHub signature sent to the generic provider.
        for provider in Provider::ALL {
            assert_eq!(
                verify(provider, SECRET, &Headers::new(), body),
                Err(WebhookError::MissingSignature)
            );
            let h = headers(&[(provider.signature_header(), "  ")]);
            assert_eq!(
                verify(provider, SECRET, &h, body),
                Err(WebhookError::MissingSignature)
            );
        }
        let h = headers(&[("X-Hub-Signature-256", good.as_str())]);
        assert_eq!(
            verify(Provider::Generic, SECRET, &h, body),
            Err(WebhookError::MissingSignature)
        );
        // Good ones, each provider's way.
        for (provider, value) in [
            (Provider::Github, good.as_str()),
            (Provider::Gitea, good_hex),
            (Provider::Generic, good.as_str()),
            (Provider::Generic, good_hex),
            (Provider::Gitlab, "It's a Secret to Everybody"),
        ] {
            let h = headers(&[(provider.signature_header(), value)]);
            assert_eq!(verify(provider, SECRET, &h, body), Ok(()), "{provider}");
        }
        // Uppercase hex is hex too.
        let h = headers(&[("X-Gitea-Signature", good_hex.to_ascii_uppercase())]);
        assert_eq!(verify(Provider::Gitea, SECRET, &h, body), Ok(()));
    }

    #[test]
    fn an_empty_secret_verifies_nothing() {
        let h = headers(&[
            ("X-Slipway-Signature", sign(b"", b"{}")),
            ("X-Gitlab-Token", String::new()),
        ]);
        for provider in Provider::ALL {
            assert_eq!(
                verify(provider, b"", &h, b"{}"),
                Err(WebhookError::NoSecret)
            );
        }
        assert!(WebhookError::NoSecret.is_unauthorized());
        assert!(WebhookError::BadSignature.is_unauthorized());
        assert!(!WebhookError::MalformedJson(String::new()).is_unauthorized());
    }

    #[test]
    fn gitlab_token() {
        for wrong in [
            "It's a Secret to Everybody ",
            "It's a Secret to Everybod",
            "it's a secret to everybody",
            "x",
        ] {
            // Header values are trimmed, so a trailing space still matches.
            let h = headers(&[("X-Gitlab-Token", wrong)]);
            let expected = if wrong.trim() == "It's a Secret to Everybody" {
                Ok(())
            } else {
                Err(WebhookError::BadSignature)
            };
            assert_eq!(
                verify(Provider::Gitlab, SECRET, &h, b"{}"),
                expected,
                "{wrong}"
            );
        }
    }

    const GITLAB_PUSH: &str = r#"{
      "object_kind": "push",
      "event_name": "push",
      "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
      "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "ref": "refs/heads/master",
      "ref_protected": true,
      "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "message": "Hello World",
      "user_id": 4,
      "user_name": "John Smith",
      "user_username": "jsmith",
      "user_email": "john@example.com",
      "user_avatar": "https://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=8://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=80",
      "project_id": 15,
      "project": {"id": 15, "name": "Diaspora", "path_with_namespace": "mike/diaspora",
                  "default_branch": "master", "git_http_url": "http://example.com/mike/diaspora.git"},
      "commits": [
        {"id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
         "message": "Update Catalan translation to e38cb41.\n\nSee https://gitlab.com/gitlab-org/gitlab for more information",
         "title": "Update Catalan translation to e38cb41.",
         "timestamp": "2011-12-12T14:27:31+02:00",
         "url": "http://example.com/mike/diaspora/commit/b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
         "author": {"name": "Jordi Mallach", "email": "jordi@softcatala.org"},
         "added": ["CHANGELOG"], "modified": ["app/controller/application.rb"], "removed": []},
        {"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
         "message": "fixed readme",
         "title": "fixed readme",
         "timestamp": "2012-01-03T23:36:29+02:00",
         "url": "http://example.com/mike/diaspora/commit/da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
         "author": {"name": "GitLab dev user", "email": "gitlabdev@dv6700.(none)"},
         "added": ["CHANGELOG"], "modified": ["app/controller/application.rb"], "removed": []}
      ],
      "total_commits_count": 4,
      "repository": {"name": "Diaspora", "url": "git@example.com:mike/diaspora.git",
                     "homepage": "http://example.com/mike/diaspora"}
    }"#;

    #[test]
    fn gitlab_push_hook() {
        let h = headers(&[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", "It's a Secret to Everybody"),
            (
                "X-Gitlab-Event-UUID",
                "13792a34-cac6-4fda-95a8-c58e00a3954e",
            ),
            ("X-Gitlab-Instance", "https://gitlab.example.com"),
        ]);
        let body = GITLAB_PUSH.as_bytes();
        assert_eq!(verify(Provider::Gitlab, SECRET, &h, body), Ok(()));
        let p = push(parse(Provider::Gitlab, &h, body).unwrap());
        assert_eq!(
            p,
            PushEvent {
                git_ref: "refs/heads/master".into(),
                branch: Some("master".into()),
                tag: None,
                commit: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7".into(),
                message: Some("fixed readme".into()),
                author: Some("GitLab dev user <gitlabdev@dv6700.(none)>".into()),
                pusher: Some("jsmith".into()),
                deleted: false,
            }
        );
        assert_eq!(
            delivery_id(Provider::Gitlab, &h).as_deref(),
            Some("13792a34-cac6-4fda-95a8-c58e00a3954e")
        );
        let mut h = h;
        h.insert("Idempotency-Key", "f5f9c2b2-0000-4e4b-9c59-6a7b1c1e2d3f");
        assert_eq!(
            delivery_id(Provider::Gitlab, &h).as_deref(),
            Some("f5f9c2b2-0000-4e4b-9c59-6a7b1c1e2d3f"),
            "the retry-stable key wins"
        );
    }

    #[test]
    fn gitlab_tag_push_hook() {
        // An annotated tag: `after` is the tag object, `checkout_sha` the commit.
        let body = r#"{
          "object_kind": "tag_push",
          "event_name": "tag_push",
          "before": "0000000000000000000000000000000000000000",
          "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
          "ref": "refs/tags/v1.0.0",
          "ref_protected": true,
          "checkout_sha": "5937ac0a7beb003549fc5fd26fc247adbce4a52e",
          "message": "Tag message",
          "user_id": 1,
          "user_name": "John Smith",
          "user_username": "jsmith",
          "project_id": 1,
          "project": {"id": 1, "name": "Example", "path_with_namespace": "jsmith/example"},
          "commits": [],
          "total_commits_count": 0,
          "repository": {"name": "Example"}
        }"#;
        let h = headers(&[("X-Gitlab-Event", "Tag Push Hook")]);
        let p = push(parse(Provider::Gitlab, &h, body.as_bytes()).unwrap());
        assert_eq!(p.tag.as_deref(), Some("v1.0.0"));
        assert_eq!(p.branch, None);
        assert_eq!(p.commit, "5937ac0a7beb003549fc5fd26fc247adbce4a52e");
        assert_eq!(p.message.as_deref(), Some("Tag message"));
        assert_eq!(p.author, None);
        assert!(!p.deleted);
    }

    #[test]
    fn gitlab_branch_deletion_and_other_events() {
        let body = format!(
            r#"{{"object_kind": "push", "before": "{SHA}", "after": "{ZERO}",
                "ref": "refs/heads/old", "checkout_sha": null, "user_username": "jsmith",
                "commits": [], "total_commits_count": 0}}"#
        );
        let h = headers(&[("X-Gitlab-Event", "Push Hook")]);
        let p = push(parse(Provider::Gitlab, &h, body.as_bytes()).unwrap());
        assert!(p.deleted);
        assert_eq!(p.branch.as_deref(), Some("old"));

        let h = headers(&[("X-Gitlab-Event", "Merge Request Hook")]);
        assert_eq!(
            parse(Provider::Gitlab, &h, b"not even json"),
            Ok(WebhookEvent::Ignored {
                event: "Merge Request Hook".into()
            })
        );
        // A system hook is a push when its object_kind says so.
        let h = headers(&[("X-Gitlab-Event", "System Hook")]);
        assert_eq!(
            push(parse(Provider::Gitlab, &h, GITLAB_PUSH.as_bytes()).unwrap()).commit,
            "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
        );
        assert_eq!(
            parse(Provider::Gitlab, &h, br#"{"object_kind": "merge_request"}"#),
            Ok(WebhookEvent::Ignored {
                event: "System Hook".into()
            })
        );
    }

    #[test]
    fn gitea_push() {
        let body = r#"{
          "ref": "refs/heads/develop",
          "before": "28e1879d029cb852e4844d9c718537df08844e03",
          "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
          "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879d029cb852e4844d9c718537df08844e03...bffeb74224043ba2feb48d137756c8a9331c449a",
          "commits": [
            {"id": "bffeb74224043ba2feb48d137756c8a9331c449a",
             "message": "Webhooks Yay!",
             "url": "http://localhost:3000/gitea/webhooks/commit/bffeb74224043ba2feb48d137756c8a9331c449a",
             "author": {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
             "committer": {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
             "timestamp": "2017-03-13T13:52:11-04:00"}
          ],
          "repository": {"id": 140, "owner": {"id": 1, "login": "gitea", "full_name": "Gitea",
                         "email": "someone@gitea.io", "username": "gitea"},
                         "name": "webhooks", "full_name": "gitea/webhooks", "private": false,
                         "clone_url": "http://localhost:3000/gitea/webhooks.git", "default_branch": "master"},
          "pusher": {"id": 1, "login": "gitea", "full_name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
          "sender": {"id": 1, "login": "gitea", "full_name": "Gitea", "email": "someone@gitea.io", "username": "gitea"}
        }"#;
        let signature = sign(SECRET, body.as_bytes());
        let h = headers(&[
            ("X-GitHub-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
            ("X-GitHub-Event", "push"),
            ("X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Signature", signature.trim_start_matches("sha256=")),
        ]);
        assert_eq!(verify(Provider::Gitea, SECRET, &h, body.as_bytes()), Ok(()));
        let p = push(parse(Provider::Gitea, &h, body.as_bytes()).unwrap());
        assert_eq!(
            p,
            PushEvent {
                git_ref: "refs/heads/develop".into(),
                branch: Some("develop".into()),
                tag: None,
                commit: "bffeb74224043ba2feb48d137756c8a9331c449a".into(),
                message: Some("Webhooks Yay!".into()),
                author: Some("Gitea <someone@gitea.io>".into()),
                pusher: Some("gitea".into()),
                deleted: false,
            }
        );
        assert_eq!(
            delivery_id(Provider::Gitea, &h).as_deref(),
            Some("f6266f16-1bf3-46a5-9ea4-602e06ead473")
        );
        let h = headers(&[("X-Gitea-Event", "create")]);
        assert_eq!(
            parse(Provider::Gitea, &h, b"{}"),
            Ok(WebhookEvent::Ignored {
                event: "create".into()
            })
        );
    }

    #[test]
    fn generic_push() {
        let body = format!(
            r#"{{"ref": "refs/heads/main", "after": "{}", "message": "Ship it", "author": "Mara <mara@tailspin.example>"}}"#,
            SHA.to_ascii_uppercase()
        );
        let h = headers(&[
            ("X-Slipway-Signature", sign(SECRET, body.as_bytes())),
            ("X-Slipway-Delivery", "build-42".to_string()),
        ]);
        assert_eq!(
            verify(Provider::Generic, SECRET, &h, body.as_bytes()),
            Ok(())
        );
        let p = push(parse(Provider::Generic, &h, body.as_bytes()).unwrap());
        assert_eq!(
            p,
            PushEvent {
                git_ref: "refs/heads/main".into(),
                branch: Some("main".into()),
                tag: None,
                commit: SHA.into(),
                message: Some("Ship it".into()),
                author: Some("Mara <mara@tailspin.example>".into()),
                pusher: None,
                deleted: false,
            }
        );
        assert_eq!(
            delivery_id(Provider::Generic, &h).as_deref(),
            Some("build-42")
        );

        // The optional fields may be left out; a bare name is a branch.
        let body = format!(r#"{{"ref": "release/2", "after": "{SHA}"}}"#);
        let p = push(parse(Provider::Generic, &Headers::new(), body.as_bytes()).unwrap());
        assert_eq!(p.branch.as_deref(), Some("release/2"));
        assert_eq!(p.git_ref, "refs/heads/release/2");
        assert_eq!((p.message, p.author), (None, None));

        let body = format!(r#"{{"ref": "refs/tags/v2", "after": "{SHA}"}}"#);
        let h = headers(&[("X-Slipway-Event", "push")]);
        assert_eq!(
            push(parse(Provider::Generic, &h, body.as_bytes()).unwrap())
                .tag
                .as_deref(),
            Some("v2")
        );
        let h = headers(&[("X-Slipway-Event", "ping")]);
        assert_eq!(parse(Provider::Generic, &h, b""), Ok(WebhookEvent::Ping));
    }

    #[test]
    fn malformed_payloads() {
        let gh = headers(&[("X-GitHub-Event", "push")]);
        for body in [
            &b"{not json"[..],
            b"",
            b"[]",
            br#"{"ref": "refs/heads/main"}"#,
            br#"{"ref": 5, "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}"#,
            br#"{"ref": "refs/heads/main", "after": "--upload-pack=touch /tmp/pwned"}"#,
            br#"{"ref": "refs/heads/main", "after": "0d1a26e"}"#,
            b"\xff\xfe",
        ] {
            let err = parse(Provider::Github, &gh, body).unwrap_err();
            assert!(
                matches!(err, WebhookError::MalformedJson(_)),
                "{:?}: {err:?}",
                String::from_utf8_lossy(body)
            );
        }
        let err = parse(Provider::Generic, &Headers::new(), b"{}").unwrap_err();
        assert_eq!(
            err,
            WebhookError::MalformedJson("missing field `ref` at line 1 column 2".into())
        );
        let gl = headers(&[("X-Gitlab-Event", "Push Hook")]);
        assert!(matches!(
            parse(Provider::Gitlab, &gl, b"{\"ref\": "),
            Err(WebhookError::MalformedJson(_))
        ));
    }

    #[test]
    fn providers_and_delivery_ids() {
        assert_eq!("github".parse::<Provider>(), Ok(Provider::Github));
        assert_eq!("GitLab".parse::<Provider>(), Ok(Provider::Gitlab));
        assert_eq!("gitea".parse::<Provider>(), Ok(Provider::Gitea));
        assert_eq!("generic".parse::<Provider>(), Ok(Provider::Generic));
        assert_eq!(
            "bitbucket".parse::<Provider>(),
            Err(WebhookError::UnknownProvider("bitbucket".into()))
        );
        for p in Provider::ALL {
            assert_eq!(p.to_string().parse::<Provider>(), Ok(p));
            assert_eq!(delivery_id(p, &Headers::new()), None);
        }
        let long = "x".repeat(500);
        let h = headers(&[("X-Slipway-Delivery", long.as_str())]);
        let id = delivery_id(Provider::Generic, &h).unwrap();
        assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");
        let h = headers(&[("X-Slipway-Delivery", " \t ")]);
        assert_eq!(delivery_id(Provider::Generic, &h), None);
    }

    #[test]
    fn bodies_are_known_by_their_digest() {
        let a = body_digest(b"{\"ref\":\"refs/heads/main\"}");
        assert!(a.starts_with("body-sha256:") && a.len() == 76, "{a}");
        assert_eq!(body_digest(b"{\"ref\":\"refs/heads/main\"}"), a);
        assert_ne!(body_digest(b"{}"), a);
    }

    #[test]
    fn headers_debug_shows_names_only() {
        let h = headers(&[("X-Gitlab-Token", "It's a Secret to Everybody")]);
        assert_eq!(format!("{h:?}"), r#"["x-gitlab-token"]"#);
        assert_eq!(h.get("x-GITLAB-token"), Some("It's a Secret to Everybody"));
    }
}
