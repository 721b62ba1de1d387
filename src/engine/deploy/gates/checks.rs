//! One sample of one gate check: `http`, `prometheus`, `command`, or an
//! extension `slipway-gate-NAME`. Every sample gives a [`Verdict`] — a
//! check that cannot answer (unreachable, unparsable, expression error,
//! time-out) is *inconclusive*, never a panic or an error — with the
//! request as sent (secrets masked), the value seen, a truncated body and
//! its duration.
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::domain::gate_eval::Verdict;
use crate::domain::gates::SuccessExpr;
use crate::domain::secrets::Masker;
use crate::domain::{CheckKind, GateCheck, Threshold};

/// Bodies and outputs are kept up to this many bytes.
pub const BODY_LIMIT: usize = 2048;

/// What checks of one gate run share: the pipeline's secrets, the JSON
/// given to extensions, the time limit of commands.
#[derive(Clone, Debug, Default)]
pub struct CheckContext {
    /// Secret values by name (for `${{ secrets.NAME }}`).
    pub secrets: Arc<BTreeMap<String, String>>,
    /// Masks every secret value in what is stored.
    pub masker: Masker,
    /// The document an extension reads on stdin (its `with` is added).
    pub extension_input: serde_json::Value,
    /// How long a command or an extension may run.
    pub command_timeout: Duration,
    /// The environment commands and extensions get on top of the server's:
    /// the pipeline's and the stage's `variables` (secrets substituted), so
    /// a stage's `PATH` also finds its `slipway-gate-NAME` executables.
    pub env: Arc<BTreeMap<String, String>>,
    /// Success expressions compiled once per run, by their text.
    pub compiled: Arc<BTreeMap<String, SuccessExpr>>,
}

/// The success expressions of `checks`, compiled (the ones that do not
/// compile are left out: their samples say why, as inconclusive).
pub fn compile_all(checks: &[GateCheck]) -> BTreeMap<String, SuccessExpr> {
    checks
        .iter()
        .filter_map(|c| match &c.kind {
            CheckKind::Http { success, .. } => SuccessExpr::compile(success)
                .ok()
                .map(|e| (success.clone(), e)),
            _ => None,
        })
        .collect()
}

impl CheckContext {
    fn substitute(&self, text: &str) -> Result<String, String> {
        crate::domain::secrets::substitute(text, |name| self.secrets.get(name).cloned())
    }
}

/// The outcome of one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Pass, fail or inconclusive.
    pub verdict: Verdict,
    /// What was asked (secrets masked).
    pub request: String,
    /// What was seen: the status, the number, the exit code, or why none.
    pub value: String,
    /// The answer or output, truncated to [`BODY_LIMIT`] bytes (masked).
    pub body: Option<String>,
    /// When it started.
    pub sampled_at: NaiveDateTime,
    /// How long it took.
    pub duration: Duration,
}

/// The label of a check: its `name`, else a short description.
pub fn check_label(check: &GateCheck) -> String {
    if let Some(name) = &check.name {
        return name.clone();
    }
    match &check.kind {
        CheckKind::Http { method, url, .. } => format!("{method} {url}"),
        CheckKind::Prometheus { query, .. } => format!("prometheus {query}"),
        CheckKind::Command { run } => run.clone(),
        CheckKind::Extension { name, .. } => format!("slipway-gate-{name}"),
    }
}

/// A pooled HTTP client for every gate (no redirects followed beyond 5;
/// up to 256 idle connections per host, so a burst of rounds against one
/// endpoint reuses its connections rather than opening new ones).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("slipway-gates/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::limited(5))
        .pool_max_idle_per_host(256)
        .build()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot configure the gates' HTTP client; using the defaults");
            reqwest::Client::new()
        })
}

struct Outcome {
    verdict: Verdict,
    request: String,
    value: String,
    body: Option<String>,
}

fn inconclusive(request: String, value: impl Into<String>) -> Outcome {
    Outcome {
        verdict: Verdict::Inconclusive,
        request,
        value: value.into(),
        body: None,
    }
}

/// Takes one sample of `check`.
pub async fn sample(client: &reqwest::Client, check: &GateCheck, ctx: &CheckContext) -> Sample {
    let sampled_at = crate::storage::now();
    let started = Instant::now();
    let outcome = match &check.kind {
        CheckKind::Http {
            method,
            url,
            headers,
            body,
            timeout,
            success,
        } => {
            http(
                client,
                ctx,
                HttpCheck {
                    method,
                    url,
                    headers,
                    body: body.as_deref(),
                    timeout: timeout.to_std(),
                    success,
                },
            )
            .await
        }
        CheckKind::Prometheus {
            server,
            query,
            threshold,
        } => prometheus(client, ctx, server, query, *threshold).await,
        CheckKind::Command { run } => command(ctx, run).await,
        CheckKind::Extension { name, with } => extension(ctx, name, with).await,
    };
    // No secrets (the common case): nothing to mask, nothing to copy.
    let (request, value) = if ctx.masker.is_empty() {
        (outcome.request, outcome.value)
    } else {
        (
            ctx.masker.mask(&outcome.request),
            ctx.masker.mask(&outcome.value),
        )
    };
    Sample {
        verdict: outcome.verdict,
        request,
        value,
        body: outcome.body.map(|b| {
            if ctx.masker.is_empty() {
                truncate_owned(b)
            } else {
                truncate_owned(ctx.masker.mask(&b))
            }
        }),
        sampled_at,
        duration: started.elapsed(),
    }
}

/// [`truncate`], without a copy when `text` is short enough.
fn truncate_owned(text: String) -> String {
    if text.len() <= BODY_LIMIT {
        text
    } else {
        truncate(&text)
    }
}

/// `text` cut to at most [`BODY_LIMIT`] bytes at a character boundary.
pub fn truncate(text: &str) -> String {
    if text.len() <= BODY_LIMIT {
        return text.to_owned();
    }
    let mut end = BODY_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

struct HttpCheck<'a> {
    method: &'a str,
    url: &'a str,
    headers: &'a BTreeMap<String, String>,
    body: Option<&'a str>,
    timeout: Duration,
    success: &'a str,
}

async fn http(client: &reqwest::Client, ctx: &CheckContext, c: HttpCheck<'_>) -> Outcome {
    let method_name = c.method.trim().to_ascii_uppercase();
    // The summary says what was sent: substituted values, which the caller
    // masks (a secret shows as `***`, wherever it was placed).
    let mut request = format!("{method_name} {}", c.url);
    let Ok(method) = reqwest::Method::from_bytes(method_name.as_bytes()) else {
        return inconclusive(request, format!("`{method_name}` is not an HTTP method"));
    };
    let url = match ctx.substitute(c.url) {
        Ok(url) => url,
        Err(e) => return inconclusive(request, e),
    };
    request = format!("{method_name} {url}");
    let mut builder = client.request(method, &url).timeout(c.timeout);
    for (name, value) in c.headers {
        match ctx.substitute(value) {
            Ok(value) => {
                request.push('\n');
                request.push_str(name);
                request.push_str(": ");
                request.push_str(&value);
                builder = builder.header(name.as_str(), value);
            }
            Err(e) => return inconclusive(request, e),
        }
    }
    if let Some(body) = c.body {
        match ctx.substitute(body) {
            Ok(body) => builder = builder.body(body),
            Err(e) => return inconclusive(request, e),
        }
    }
    let response = match builder.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return inconclusive(request, format!("no answer within {:?}", c.timeout));
        }
        Err(e) => return inconclusive(request, format!("unreachable: {}", error_chain(&e))),
    };
    let status = response.status().as_u16();
    // The headers are collected, and the body parsed, only when the
    // expression reads them (`status == 200` needs neither).
    let compiled = ctx.compiled.get(c.success);
    let headers: BTreeMap<String, String> = if compiled.is_none_or(|e| e.reads_headers()) {
        response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    let bytes = match response.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return Outcome {
                body: None,
                ..inconclusive(
                    request,
                    format!("status {status}; the body did not arrive: {e}"),
                )
            };
        }
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = if compiled.is_none_or(|e| e.reads_body()) {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(text.clone()))
    } else {
        serde_json::Value::Null
    };
    let evaluated = match compiled {
        Some(expr) => expr.evaluate(status, &headers, &body),
        None => crate::domain::gates::evaluate_success(c.success, status, &headers, &body),
    };
    let (verdict, value) = match evaluated {
        Ok(true) => (Verdict::Pass, status.to_string()),
        Ok(false) => (Verdict::Fail, status.to_string()),
        Err(e) => (Verdict::Inconclusive, format!("{status}; {e}")),
    };
    Outcome {
        verdict,
        request,
        value,
        body: Some(text),
    }
}

async fn prometheus(
    client: &reqwest::Client,
    ctx: &CheckContext,
    server: &str,
    query: &str,
    threshold: Threshold,
) -> Outcome {
    let base = format!("{}/api/v1/query", server.trim_end_matches('/'));
    let request = format!("GET {base}?query={query} ({threshold})");
    let base = match ctx.substitute(&base) {
        Ok(b) => b,
        Err(e) => return inconclusive(request, e),
    };
    let answer = client
        .get(&base)
        .query(&[("query", query)])
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let response = match answer {
        Ok(r) => r,
        Err(e) => return inconclusive(request, format!("unreachable: {}", error_chain(&e))),
    };
    let status = response.status();
    let text = match response.text().await {
        Ok(t) => t,
        Err(e) => return inconclusive(request, format!("the answer did not arrive: {e}")),
    };
    let body = Some(text.clone());
    let value = match prometheus_value(&text) {
        Ok(v) => v,
        Err(e) => {
            return Outcome {
                body,
                ..inconclusive(request, format!("status {status}: {e}"))
            };
        }
    };
    Outcome {
        verdict: if threshold.check(value) {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        request,
        value: value.to_string(),
        body,
    }
}

/// The one number of a Prometheus `/api/v1/query` answer: a scalar, or an
/// instant vector with exactly one series.
pub fn prometheus_value(text: &str) -> Result<f64, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if doc["status"] != "success" {
        let error = doc["error"].as_str().unwrap_or("no error given");
        return Err(format!("the query failed: {error}"));
    }
    let data = &doc["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let series = data["result"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            match series {
                [] => return Err("the query returned no series".into()),
                [one] => &one["value"],
                many => {
                    return Err(format!(
                        "the query returned {} series; expected one",
                        many.len()
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "expected a scalar or an instant vector, got {}",
                other.unwrap_or("nothing")
            ));
        }
    };
    let number = sample[1]
        .as_str()
        .ok_or_else(|| "the sample has no value".to_owned())?;
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{number}` is not a number"))?;
    if value.is_nan() {
        return Err("the value is NaN".into());
    }
    Ok(value)
}

async fn command(ctx: &CheckContext, run: &str) -> Outcome {
    let request = format!("sh -c {run}");
    let script = match ctx.substitute(run) {
        Ok(s) => s,
        Err(e) => return inconclusive(request, e),
    };
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(script);
    program(ctx, cmd, request, None, |code| {
        if code == 0 {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    })
    .await
}

async fn extension(ctx: &CheckContext, name: &str, with: &serde_json::Value) -> Outcome {
    let exe = format!("slipway-gate-{name}");
    let request = exe.clone();
    let mut input = ctx.extension_input.clone();
    if let serde_json::Value::Object(map) = &mut input {
        map.insert("with".into(), with.clone());
    }
    let cmd = tokio::process::Command::new(&exe);
    program(
        ctx,
        cmd,
        request,
        Some(input.to_string()),
        |code| match code {
            0 => Verdict::Pass,
            1 => Verdict::Fail,
            _ => Verdict::Inconclusive,
        },
    )
    .await
}

/// Runs a program (stdin `input`, stdout and stderr kept together) within
/// the context's time limit; its exit code decides the verdict.
async fn program(
    ctx: &CheckContext,
    mut cmd: tokio::process::Command,
    request: String,
    input: Option<String>,
    verdict: impl Fn(i32) -> Verdict,
) -> Outcome {
    cmd.envs(ctx.env.iter());
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return inconclusive(request, format!("cannot start: {e}")),
    };
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // An extension that does not read its input is not an error.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
    }
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let collect = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out).await;
        }
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut err).await;
        }
        out.extend_from_slice(&err);
        let status = child.wait().await;
        (String::from_utf8_lossy(&out).into_owned(), status)
    };
    match tokio::time::timeout(ctx.command_timeout, collect).await {
        Ok((output, Ok(status))) => match status.code() {
            Some(code) => Outcome {
                verdict: verdict(code),
                request,
                value: code.to_string(),
                body: Some(output),
            },
            None => Outcome {
                body: Some(output),
                ..inconclusive(request, "killed by a signal")
            },
        },
        Ok((_, Err(e))) => inconclusive(request, format!("cannot wait for it: {e}")),
        Err(_) => inconclusive(
            request,
            format!("no result within {:?}", ctx.command_timeout),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_answers() {
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"x"},"value":[1435781451.781,"0.004"]}]}}"#;
        assert_eq!(prometheus_value(vector).unwrap(), 0.004);
        let scalar =
            r#"{"status":"success","data":{"resultType":"scalar","result":[1435781451.781,"1"]}}"#;
        assert_eq!(prometheus_value(scalar).unwrap(), 1.0);
        let empty = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(prometheus_value(empty).is_err());
        let error = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(prometheus_value(error).unwrap_err().contains("parse error"));
    }

    #[test]
    fn truncates_at_a_char_boundary() {
        let long = "é".repeat(2000);
        let t = truncate(&long);
        assert!(t.len() <= BODY_LIMIT + '…'.len_utf8());
    }

    #[tokio::test]
    async fn commands_pass_on_exit_zero() {
        let ctx = CheckContext {
            command_timeout: Duration::from_secs(5),
            ..CheckContext::default()
        };
        let check = |run: &str| GateCheck {
            name: None,
            kind: CheckKind::Command { run: run.into() },
            consecutive_successes: 1,
            on_inconclusive: Default::default(),
        };
        let client = http_client();
        assert_eq!(
            sample(&client, &check("true"), &ctx).await.verdict,
            Verdict::Pass
        );
        let s = sample(&client, &check("echo no; exit 3"), &ctx).await;
        assert_eq!((s.verdict, s.value.as_str()), (Verdict::Fail, "3"));
        assert_eq!(s.body.as_deref(), Some("no\n"));
        let s = sample(&client, &check("slipway-gate-none-such"), &ctx).await;
        assert_eq!(s.verdict, Verdict::Fail);
    }
}
