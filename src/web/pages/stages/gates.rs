//! The stage form's gates: one `GateForm` per phase with its checks
//! (`CheckForm`), read into the domain's `GatePolicy`, and the
//! definition's validation errors put next to the check fields.

use std::collections::BTreeMap;

use super::fields::{duration_field, field_id, sentence};
use crate::domain::definition::defaults;
use crate::domain::definition::fields::{self, DurationField};
use crate::domain::{CheckKind, GateCheck, GatePolicy, InconclusivePolicy, Threshold};

/// One gate as typed: fields `gates.before.*` or `gates.after.*`, its
/// checks `gates.before.checks.N.*`.
#[derive(Debug, Clone, Default)]
pub struct GateForm {
    /// `before` or `after`.
    pub phase: &'static str,
    /// A checkbox: whether the stage has this gate.
    pub enabled: bool,
    pub delay: String,
    pub interval: String,
    pub timeout: String,
    pub steady: String,
    /// The checks as typed (blank ones left out); the page adds one blank
    /// check to fill in.
    pub checks: Vec<CheckForm>,
}

impl GateForm {
    pub(super) fn of(phase: &'static str, gate: Option<&GatePolicy>) -> Self {
        match gate {
            None => GateForm {
                phase,
                enabled: false,
                delay: fields::GATE_DELAY.default.to_string(),
                interval: fields::GATE_INTERVAL.default.to_string(),
                timeout: fields::GATE_TIMEOUT.default.to_string(),
                steady: fields::GATE_STEADY.default.to_string(),
                checks: Vec::new(),
            },
            Some(g) => GateForm {
                phase,
                enabled: true,
                delay: g.delay.to_string(),
                interval: g.interval.to_string(),
                timeout: g.timeout.to_string(),
                steady: g.steady.to_string(),
                checks: g
                    .checks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| CheckForm::of(phase, i, c))
                    .collect(),
            },
        }
    }

    /// The `name` of one of its fields (`gates.after.interval`).
    pub fn key(&self, field: &str) -> String {
        format!("gates.{}.{field}", self.phase)
    }

    /// The `id` of one of its fields (`gates-after-interval`).
    pub fn id(&self, field: &str) -> String {
        field_id(&self.key(field))
    }

    pub(super) fn set(&mut self, field: &str, value: String) {
        match field {
            "enabled" => self.enabled = true,
            "delay" => self.delay = value,
            "interval" => self.interval = value,
            "timeout" => self.timeout = value,
            "steady" => self.steady = value,
            _ => {}
        }
    }

    /// Numbers the checks by position and adds the blank one that adds a
    /// check, as the page shows them.
    pub(super) fn for_page(&mut self) {
        let phase = self.phase;
        if self.checks.last().is_none_or(|c| !c.is_blank()) {
            self.checks.push(CheckForm::blank(phase, 0));
        }
        let last = self.checks.len() - 1;
        for (i, c) in self.checks.iter_mut().enumerate() {
            c.prefix = check_prefix(phase, i);
            c.number = i + 1;
            c.new = i == last && c.is_blank();
        }
    }
}

pub(super) fn check_prefix(phase: &str, index: usize) -> String {
    format!("gates.{phase}.checks.{index}")
}

/// A kind of check as the form shows it.
pub struct CheckKindForm {
    /// The value of the form's `kind` select.
    pub word: &'static str,
    /// The select's label.
    pub label: &'static str,
    /// The kind's key in the YAML (`check` for an extension).
    pub yaml: &'static str,
    /// The form fields of this kind; the first one takes the errors about
    /// the kind as a whole.
    pub fields: &'static [&'static str],
}

/// The kinds of check, in the order the form offers them: the one mapping
/// between the form's check fields and the definition's, used to open a
/// kind's fields, to read a check and to put a validation error next to
/// its field.
pub const CHECK_KINDS: [CheckKindForm; 4] = [
    CheckKindForm {
        word: "http",
        label: "HTTP request",
        yaml: "http",
        fields: &["url", "method", "headers", "body", "timeout", "success"],
    },
    CheckKindForm {
        word: "prometheus",
        label: "Prometheus query",
        yaml: "prometheus",
        fields: &["server", "query", "threshold"],
    },
    CheckKindForm {
        word: "command",
        label: "command",
        yaml: "command",
        fields: &["run"],
    },
    CheckKindForm {
        word: "extension",
        label: "extension",
        yaml: "check",
        fields: &["extension", "with"],
    },
];

/// The fields every kind of check has, named alike in the form and the YAML.
const COMMON_FIELDS: [&str; 4] = ["name", "with", "consecutive_successes", "on_inconclusive"];

/// Lists a check's field names in form order, declares its errors (one
/// per field) and gives its form and its errors one accessor per field name.
macro_rules! check_fields {
    ($($field:ident),+ $(,)?) => {
        /// Every field of a check, in form order.
        pub(super) const CHECK_FIELDS: &[&str] = &[$(stringify!($field)),+];

        /// Errors of one check's fields.
        #[derive(Debug, Clone, Default)]
        pub struct CheckErrors {
            $(
                #[doc = concat!("The error of `", stringify!($field), "`.")]
                pub $field: Option<String>,
            )+
        }

        impl CheckForm {
            /// The text typed into field `field`.
            fn text(&self, field: &str) -> Option<&String> {
                match field {
                    $(stringify!($field) => Some(&self.$field),)+
                    _ => None,
                }
            }

            fn text_mut(&mut self, field: &str) -> Option<&mut String> {
                match field {
                    $(stringify!($field) => Some(&mut self.$field),)+
                    _ => None,
                }
            }
        }

        impl CheckErrors {
            /// The error shown next to field `field`.
            fn slot(&self, field: &str) -> Option<&Option<String>> {
                match field {
                    $(stringify!($field) => Some(&self.$field),)+
                    _ => None,
                }
            }

            fn slot_mut(&mut self, field: &str) -> Option<&mut Option<String>> {
                match field {
                    $(stringify!($field) => Some(&mut self.$field),)+
                    _ => None,
                }
            }
        }
    };
}

check_fields!(
    name,
    kind,
    url,
    method,
    headers,
    body,
    timeout,
    success,
    server,
    query,
    threshold,
    run,
    extension,
    with,
    consecutive_successes,
    on_inconclusive,
);

/// One gate check as typed (`gates.before.checks.N.*`): the fields of
/// every kind, of which those of `kind` count.
#[derive(Debug, Clone, Default)]
pub struct CheckForm {
    /// `gates.before.checks.N`, set when the page is made.
    pub prefix: String,
    /// 1-based position, for the legend.
    pub number: usize,
    /// The empty check the page offers to add one.
    pub new: bool,
    /// A checkbox: drop this check when saving.
    pub remove: bool,
    pub name: String,
    /// `http`, `prometheus`, `command` or `extension`.
    pub kind: String,
    pub url: String,
    pub method: String,
    /// `Name: value` lines.
    pub headers: String,
    pub body: String,
    pub timeout: String,
    pub success: String,
    pub server: String,
    pub query: String,
    pub threshold: String,
    pub run: String,
    /// The extension's NAME (`slipway-check-NAME`).
    pub extension: String,
    /// The extension's input, JSON or YAML.
    pub with: String,
    pub consecutive_successes: String,
    /// `fail` or `ask`.
    pub on_inconclusive: String,
}

impl CheckForm {
    pub(super) fn blank(phase: &str, index: usize) -> Self {
        CheckForm {
            prefix: check_prefix(phase, index),
            kind: "http".into(),
            on_inconclusive: "fail".into(),
            ..CheckForm::default()
        }
    }

    pub(super) fn of(phase: &str, index: usize, check: &GateCheck) -> Self {
        let mut form = CheckForm {
            name: check.name.clone().unwrap_or_default(),
            consecutive_successes: check.consecutive_successes.to_string(),
            on_inconclusive: check.on_inconclusive.as_str().into(),
            ..CheckForm::blank(phase, index)
        };
        match &check.kind {
            CheckKind::Http {
                method,
                url,
                headers,
                body,
                timeout,
                success,
            } => {
                form.kind = "http".into();
                form.url = url.clone();
                form.method = method.clone();
                form.headers = headers_text(headers);
                form.body = body.clone().unwrap_or_default();
                form.timeout = timeout.to_string();
                form.success = success.clone();
            }
            CheckKind::Prometheus {
                server,
                query,
                threshold,
            } => {
                form.kind = "prometheus".into();
                form.server = server.clone();
                form.query = query.clone();
                form.threshold = threshold.to_string();
            }
            CheckKind::Command { run } => {
                form.kind = "command".into();
                form.run = run.clone();
            }
            CheckKind::Extension { name, with } => {
                form.kind = "extension".into();
                form.extension = name.clone();
                form.with = with_text(with);
            }
        }
        form
    }

    /// The `name` of one of its fields (`gates.before.checks.0.url`).
    pub fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.prefix)
    }

    /// The `id` of one of its fields (`gates-before-checks-0-url`).
    pub fn id(&self, field: &str) -> String {
        field_id(&self.key(field))
    }

    /// Whether nothing was typed into it (the selects do not count).
    pub fn is_blank(&self) -> bool {
        CHECK_FIELDS
            .iter()
            .filter(|f| !matches!(**f, "kind" | "on_inconclusive"))
            .filter_map(|f| self.text(f))
            .all(|t| t.trim().is_empty())
    }

    pub(super) fn set(&mut self, field: &str, value: String) {
        if field == "remove" {
            self.remove = true;
        } else if let Some(text) = self.text_mut(field) {
            *text = value;
        }
    }
}

/// Headers as the form's `Name: value` lines.
pub fn headers_text(headers: &BTreeMap<String, String>) -> String {
    headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect()
}

/// An extension's input as the form shows it: JSON, empty for `{}`.
pub fn with_text(with: &serde_json::Value) -> String {
    if with.as_object().is_some_and(serde_json::Map::is_empty) {
        String::new()
    } else {
        serde_json::to_string_pretty(with).unwrap_or_default()
    }
}

/// Errors of one gate's fields and checks.
#[derive(Debug, Clone, Default)]
pub struct GateErrors {
    pub delay: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub steady: Option<String>,
    /// About the checks as a whole (none left).
    pub checks: Option<String>,
    /// Per check, by position in the form.
    pub check: Vec<CheckErrors>,
}

impl GateErrors {
    /// The errors of the check at `index` (none when it has none).
    pub fn check(&self, index: impl std::borrow::Borrow<usize>) -> CheckErrors {
        self.check.get(*index.borrow()).cloned().unwrap_or_default()
    }

    pub(super) fn check_mut(&mut self, index: usize) -> &mut CheckErrors {
        if self.check.len() <= index {
            self.check.resize(index + 1, CheckErrors::default());
        }
        &mut self.check[index]
    }

    pub(super) fn summary(&self, phase: &str, out: &mut Vec<(String, String)>) {
        for (field, e) in [
            ("delay", &self.delay),
            ("interval", &self.interval),
            ("timeout", &self.timeout),
            ("steady", &self.steady),
            ("checks", &self.checks),
        ] {
            if let Some(e) = e {
                out.push((field_id(&format!("gates.{phase}.{field}")), e.clone()));
            }
        }
        for (i, c) in self.check.iter().enumerate() {
            for (field, e) in c.entries() {
                let id = field_id(&format!("{}.{field}", check_prefix(phase, i)));
                out.push((id, format!("Check {}: {e}", i + 1)));
            }
        }
    }
}

impl CheckErrors {
    /// `(field, message)` of every error, in form order.
    pub fn entries(&self) -> Vec<(&'static str, &String)> {
        CHECK_FIELDS
            .iter()
            .filter_map(|f| self.slot(f).and_then(Option::as_ref).map(|e| (*f, e)))
            .collect()
    }

    /// Whether a field of a kind other than the check's has an error (the
    /// kind's group is then shown open).
    pub fn any_of(&self, kind: &str) -> bool {
        CHECK_KINDS
            .iter()
            .filter(|k| k.word == kind)
            .flat_map(|k| k.fields)
            .any(|f| self.slot(f).is_some_and(Option::is_some))
    }
}

/// The gate typed in `form` (`None` when not enabled).
pub(super) fn parse_gate(form: &GateForm, errors: &mut GateErrors) -> Option<Option<GatePolicy>> {
    if !form.enabled {
        return Some(None);
    }
    let field = |text: &str, rule: DurationField, what: &str, slot: &mut Option<String>| {
        duration_field(text, rule, what)
            .map_err(|e| *slot = Some(e))
            .ok()
    };
    let delay = field(
        &form.delay,
        fields::GATE_DELAY,
        "The delay",
        &mut errors.delay,
    );
    let interval = field(
        &form.interval,
        fields::GATE_INTERVAL,
        "The interval",
        &mut errors.interval,
    );
    let timeout = field(
        &form.timeout,
        fields::GATE_TIMEOUT,
        "The timeout",
        &mut errors.timeout,
    );
    let steady = field(
        &form.steady,
        fields::GATE_STEADY,
        "Steady",
        &mut errors.steady,
    );
    let mut checks = Vec::new();
    let mut ok = true;
    for (i, c) in form.checks.iter().enumerate() {
        if c.remove || c.is_blank() {
            continue;
        }
        match parse_check(c, errors.check_mut(i)) {
            Some(check) => checks.push(check),
            None => ok = false,
        }
    }
    if ok && checks.is_empty() {
        errors.checks = Some(
            "A gate needs at least one check: fill in the new check, or untick the gate.".into(),
        );
        ok = false;
    }
    let checks = ok.then_some(checks);
    Some(Some(GatePolicy {
        delay: delay?,
        interval: interval?,
        timeout: timeout?,
        steady: steady?,
        checks: checks?,
    }))
}

/// A URL field of a check: `http://` or `https://`, secret references well formed.
pub(super) fn url_field(text: &str, what: &str) -> Result<String, String> {
    let url = text.trim();
    if url.is_empty() {
        return Err(format!(
            "Enter the {what}, starting with http:// or https://."
        ));
    }
    if !fields::is_http_url(url) {
        return Err(format!(
            "`{url}` is not a URL: it must start with http:// or https://."
        ));
    }
    secret_refs(url)?;
    Ok(url.to_string())
}

/// Refuses malformed `${{ secrets.… }}` references (unknown secrets are
/// reported when the check runs).
pub(super) fn secret_refs(text: &str) -> Result<(), String> {
    crate::domain::secrets::substitute(text, |_| Some(String::new()))
        .map(|_| ())
        .map_err(sentence)
}

/// Reads `Name: value` lines (blank lines are skipped); values may
/// reference `${{ secrets.NAME }}`.
pub fn parse_headers(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let n = i + 1;
        let Some((name, value)) = line.split_once(':') else {
            problems.push(format!("Line {n}: `{line}` is not `Name: value`."));
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if !fields::is_header_name(name) {
            problems.push(format!("Line {n}: `{name}` is not an HTTP header name."));
        } else if out.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            problems.push(format!("Line {n}: `{name}` is set twice."));
        } else if let Err(e) = secret_refs(value) {
            problems.push(format!("Line {n}: {e}"));
        } else {
            out.insert(name.to_string(), value.to_string());
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join(" "))
    }
}

/// Reads an extension's input: JSON or YAML (empty is `{}`).
pub fn parse_with(text: &str) -> Result<serde_json::Value, String> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(serde_json::Map::new()));
    }
    yaml_serde::from_str::<serde_json::Value>(text)
        .map_err(|e| format!("The input is neither JSON nor YAML: {e}."))
}

/// One check typed in `form`; its problems go to `errors`.
pub(super) fn parse_check(form: &CheckForm, errors: &mut CheckErrors) -> Option<GateCheck> {
    let name = form.name.trim();
    let consecutive_successes = match form.consecutive_successes.trim() {
        "" => Some(1),
        text => fields::CONSECUTIVE_SUCCESSES
            .parse(text)
            .map_err(|e| errors.consecutive_successes = Some(sentence(e)))
            .ok(),
    };
    let on_inconclusive = match form.on_inconclusive.as_str() {
        "" => Some(InconclusivePolicy::default()),
        word => InconclusivePolicy::from_word(word),
    };
    if on_inconclusive.is_none() {
        errors.on_inconclusive = Some("Choose fail or ask.".into());
    }
    let kind = match form.kind.as_str() {
        "http" => {
            let url = url_field(&form.url, "URL of the request")
                .map_err(|e| errors.url = Some(e))
                .ok();
            let method = match form.method.trim() {
                "" => Some(defaults::HTTP_METHOD.to_string()),
                m => fields::http_method(m).or_else(|| {
                    errors.method =
                        Some(format!("`{m}` is not an HTTP method (GET, POST, HEAD, …)."));
                    None
                }),
            };
            let headers = parse_headers(&form.headers)
                .map_err(|e| errors.headers = Some(e))
                .ok();
            let body = if form.body.is_empty() {
                Some(None)
            } else {
                secret_refs(&form.body)
                    .map(|()| Some(form.body.clone()))
                    .map_err(|e| errors.body = Some(e))
                    .ok()
            };
            let timeout = duration_field(
                &form.timeout,
                fields::HTTP_CHECK_TIMEOUT,
                "The request timeout",
            )
            .map_err(|e| errors.timeout = Some(e))
            .ok();
            let success = if form.success.trim().is_empty() {
                Some(defaults::HTTP_SUCCESS.to_string())
            } else {
                match crate::domain::gates::compile_success(&form.success) {
                    Ok(()) => Some(form.success.clone()),
                    Err(e) => {
                        errors.success = Some(sentence(e));
                        None
                    }
                }
            };
            match (url, method, headers, body, timeout, success) {
                (
                    Some(url),
                    Some(method),
                    Some(headers),
                    Some(body),
                    Some(timeout),
                    Some(success),
                ) => Some(CheckKind::Http {
                    method,
                    url,
                    headers,
                    body,
                    timeout,
                    success,
                }),
                _ => None,
            }
        }
        "prometheus" => {
            let server = url_field(&form.server, "Prometheus server's URL")
                .map_err(|e| errors.server = Some(e))
                .ok();
            let query = match form.query.trim() {
                "" => {
                    errors.query = Some("Enter a PromQL query.".into());
                    None
                }
                q => Some(q.to_string()),
            };
            let threshold = match form.threshold.trim() {
                "" => {
                    errors.threshold = Some(
                        "Enter the comparison the value must pass, such as `< 0.01`.".into(),
                    );
                    None
                }
                t => Threshold::parse(t)
                    .map_err(|e| {
                        errors.threshold = Some(format!(
                            "{} Write an operator (<, <=, >, >=, ==, !=) and a number, such as `< 0.01`.",
                            sentence(e)
                        ))
                    })
                    .ok(),
            };
            match (server, query, threshold) {
                (Some(server), Some(query), Some(threshold)) => Some(CheckKind::Prometheus {
                    server,
                    query,
                    threshold,
                }),
                _ => None,
            }
        }
        "command" => {
            if form.run.trim().is_empty() {
                errors.run = Some("Enter the command; exit code 0 passes.".into());
                None
            } else {
                secret_refs(&form.run)
                    .map(|()| CheckKind::Command {
                        run: form.run.clone(),
                    })
                    .map_err(|e| errors.run = Some(e))
                    .ok()
            }
        }
        "extension" => {
            let ext = form.extension.trim();
            let name = if ext.is_empty() {
                errors.extension =
                    Some("Enter the extension's NAME: the check runs `slipway-check-NAME`.".into());
                None
            } else {
                fields::extension_name(ext, "check")
                    .map_err(|e| errors.extension = Some(sentence(e)))
                    .ok()
            };
            let with = parse_with(&form.with)
                .map_err(|e| errors.with = Some(e))
                .ok();
            match (name, with) {
                (Some(name), Some(with)) => Some(CheckKind::Extension { name, with }),
                _ => None,
            }
        }
        _ => {
            errors.kind =
                Some("Choose what the check does: HTTP, Prometheus, command or extension.".into());
            None
        }
    };
    Some(GateCheck {
        name: (!name.is_empty()).then(|| name.to_string()),
        kind: kind?,
        consecutive_successes: consecutive_successes?,
        on_inconclusive: on_inconclusive?,
    })
}

/// Puts a gate's validation error (`field` after `gates.before.`) next to
/// its field; `kept` maps the stored check positions to the form's.
pub(super) fn place_gate_error(field: &str, message: String, kept: &[usize], out: &mut GateErrors) {
    let check = field
        .strip_prefix("checks[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)));
    let slot = match check {
        Some((i, rest)) => {
            let Some(&position) = kept.get(i) else {
                out.checks.get_or_insert(message);
                return;
            };
            let rest = rest.trim_start_matches('.');
            let (first, key) = rest.split_once('.').unwrap_or((rest, ""));
            let key = key.split(['.', '[']).next().unwrap_or_default();
            let field = match CHECK_KINDS.iter().find(|k| k.yaml == first) {
                Some(kind) => kind
                    .fields
                    .iter()
                    .find(|f| **f == key)
                    .unwrap_or(&kind.fields[0]),
                None if COMMON_FIELDS.contains(&first) => first,
                None => "kind",
            };
            match out.check_mut(position).slot_mut(field) {
                Some(slot) => slot,
                None => return,
            }
        }
        None if field.starts_with("delay") => &mut out.delay,
        None if field.starts_with("interval") => &mut out.interval,
        None if field.starts_with("timeout") => &mut out.timeout,
        None if field.starts_with("steady") => &mut out.steady,
        None => &mut out.checks,
    };
    slot.get_or_insert(message);
}

/// The positions in the form of the checks a gate keeps (not removed).
pub(super) fn kept_checks(gate: &GateForm) -> Vec<usize> {
    gate.checks
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.remove && !c.is_blank())
        .map(|(i, _)| i)
        .collect()
}
