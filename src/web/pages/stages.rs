//! `/pipelines/{p}/stages/{s}/configure`: a stage's configuration form
//! (trigger with a preview of the next fire times, tasks, variables, queue,
//! approvals and gates with their checks), its schedule's state and recent
//! fires, a summary of the stored approvals and gates, and the pipeline's
//! revision history with a diff of each revision. The stage's overview
//! (`/pipelines/{p}/stages/{s}`, what is live, the queue, Deploy) is
//! `stage_overview`; it shows the configuration read-only with the helpers
//! here.
//!
//! `POST` (to `/configure`, or to the overview's URL where the form posted
//! before it had its own page) saves (release manager) or previews
//! (`action=preview`, nothing is stored). Form fields are parsed into domain values here; an error is
//! shown next to its field (422, the input kept). A save stores a new
//! revision through `engine::pipelines::stages::edit_stage`.

use std::collections::BTreeMap;

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, http::header, web};
use askama::Template;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::pipelines::trigger_text;
use crate::domain::authz::Action;
use crate::domain::definition::defaults;
use crate::domain::schedule::suggest_timezone;
use crate::domain::{
    ApprovalMode, ApprovalOrder, ApprovalPolicy, Approvals, Approver, BranchFilter, CheckKind,
    Cron, DefinitionErrors, Duration, GateCheck, GatePolicy, Gates, InconclusivePolicy,
    PipelineDefinition, QueueMode, QueuePolicy, Role, Schedule, Stage, TaskKind, TaskSpec,
    Threshold, Trigger, TriggerOutcome, Upstream, parse_timezone,
};
use crate::engine::pipelines::stages::{self as edit, StageEdit, TextError};
use crate::engine::triggers::schedules::{self as sched, FireRecord};
use crate::engine::{EngineError, pipelines};
use crate::storage::schedules as store;
use crate::storage::{self, DefinitionRevisionRow};
use crate::web::auth::CurrentUser;
use crate::web::session::{Nav, check_csrf};
use crate::web::views::plural;
use crate::web::views::time;
use crate::web::{State, WebError, urls};

/// How many fire times the page lists.
pub const FIRE_TIMES: usize = 5;

/// How many revisions the history shows (with their diffs).
pub const REVISIONS: usize = 20;

/// How many recent fires of a schedule the page lists.
const RECENT_FIRES: i64 = 10;

pub struct FireTime {
    pub local: String,
    pub utc: String,
    pub iso: String,
}

pub struct ApprovalView {
    pub phase: &'static str,
    pub approvers: String,
    pub policy: String,
    pub timeout: String,
    pub fresh_sign_in: Option<String>,
    pub requester_can_approve: bool,
    pub exclude_authors: bool,
}

pub struct GateView {
    pub phase: &'static str,
    pub delay: String,
    pub interval: String,
    pub timeout: String,
    pub steady: String,
    pub checks: Vec<String>,
}

/// One recent fire of the stage's schedule.
pub struct FireView {
    pub when: String,
    pub iso: String,
    pub outcome: &'static str,
    pub symbol: &'static str,
    pub class: &'static str,
    pub detail: String,
    pub release_url: Option<(String, String)>,
    pub deployment_url: Option<String>,
}

/// One line of a revision diff: `+` added, `-` removed, ` ` context, or a
/// `…` gap between hunks.
pub struct DiffLine {
    pub sign: &'static str,
    pub kind: &'static str,
    pub text: String,
}

pub struct RevisionView {
    pub revision: i32,
    pub by: String,
    pub at: String,
    pub iso: String,
    pub comment: Option<String>,
    pub added: usize,
    pub removed: usize,
    /// `None` for the first revision.
    pub diff: Option<Vec<DiffLine>>,
    pub current: bool,
}

/// What the form shows: the user's input as typed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StageForm {
    #[serde(default)]
    pub csrf: String,
    /// `save` (default) or `preview`.
    #[serde(default)]
    pub action: String,
    /// The definition revision the form was made from.
    #[serde(default)]
    pub revision: String,
    /// `manual`, `after_build`, `after_stage` or `schedule`.
    #[serde(default)]
    pub trigger: String,
    #[serde(default)]
    pub after_stage: String,
    #[serde(default)]
    pub branches: String,
    #[serde(default)]
    pub exclude_branches: String,
    #[serde(default)]
    pub cron: String,
    #[serde(default)]
    pub timezone: String,
    /// A checkbox: present when ticked.
    #[serde(default)]
    pub catch_up: Option<String>,
    #[serde(default)]
    pub tasks: String,
    #[serde(default)]
    pub variables: String,
    #[serde(default)]
    pub parallel: String,
    #[serde(default)]
    pub policy: String,
    /// `before_gates` (default) or `after_gates`.
    #[serde(default, rename = "approvals.order")]
    pub approvals_order: String,
    /// `approvals.before.*` (read by [`StageForm::from_body`]).
    #[serde(skip)]
    pub approvals_before: ApprovalForm,
    /// `approvals.after.*`.
    #[serde(skip)]
    pub approvals_after: ApprovalForm,
    /// `gates.before.*` and `gates.before.checks.N.*`.
    #[serde(skip)]
    pub gates_before: GateForm,
    /// `gates.after.*` and `gates.after.checks.N.*`.
    #[serde(skip)]
    pub gates_after: GateForm,
}

/// Errors next to their fields.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors {
    pub trigger: Option<String>,
    pub after_stage: Option<String>,
    pub branches: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub tasks: Vec<String>,
    pub variables: Vec<String>,
    pub parallel: Option<String>,
    pub policy: Option<String>,
    pub approvals_order: Option<String>,
    pub approvals_before: ApprovalErrors,
    pub approvals_after: ApprovalErrors,
    pub gates_before: GateErrors,
    pub gates_after: GateErrors,
    /// Problems that belong to no field of the form.
    pub general: Vec<String>,
}

impl FieldErrors {
    pub fn is_empty(&self) -> bool {
        self.summary().is_empty()
    }

    /// `(field id, message)` of every error, in form order, for the summary.
    pub fn summary(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let one = |out: &mut Vec<(String, String)>, id: &str, e: &Option<String>| {
            if let Some(e) = e {
                out.push((id.to_string(), e.clone()));
            }
        };
        one(&mut out, "trigger-manual", &self.trigger);
        one(&mut out, "after-stage", &self.after_stage);
        one(&mut out, "branches", &self.branches);
        one(&mut out, "cron", &self.cron);
        one(&mut out, "timezone", &self.timezone);
        for e in &self.tasks {
            out.push(("tasks".into(), e.clone()));
        }
        for e in &self.variables {
            out.push(("variables".into(), e.clone()));
        }
        one(&mut out, "parallel", &self.parallel);
        one(&mut out, "policy", &self.policy);
        self.approvals_before.summary("before", &mut out);
        self.approvals_after.summary("after", &mut out);
        one(&mut out, "approvals-order", &self.approvals_order);
        self.gates_before.summary("before", &mut out);
        self.gates_after.summary("after", &mut out);
        for e in &self.general {
            out.push(("stage-form".into(), e.clone()));
        }
        out
    }
}

/// Before or after the deployment: the two phases of approvals and gates.
const PHASES: [&str; 2] = ["before", "after"];

/// A form field's `id`: its `name` with `.` and `_` made `-`.
fn field_id(name: &str) -> String {
    name.replace(['.', '_'], "-")
}

/// An error message as a sentence: capitalised, ending with a full stop.
fn sentence(text: impl std::fmt::Display) -> String {
    let text = text.to_string();
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => return text,
    };
    if !out.ends_with(['.', '?', '!']) {
        out.push('.');
    }
    out
}

/// One approval policy as typed: fields `approvals.before.*` or
/// `approvals.after.*`.
#[derive(Debug, Clone, Default)]
pub struct ApprovalForm {
    /// `before` or `after`.
    pub phase: &'static str,
    /// A checkbox: whether the stage needs this approval.
    pub enabled: bool,
    /// Users and `group:NAME`s, separated by commas or new lines.
    pub approvers: String,
    /// `any`, `all` or `at_least`.
    pub policy: String,
    /// N of `at_least`.
    pub n: String,
    pub timeout: String,
    pub fresh_sign_in: String,
    pub requester_can_approve: bool,
    pub exclude_authors: bool,
}

impl ApprovalForm {
    /// The fields of a stage without this approval (the defaults).
    fn blank(phase: &'static str) -> Self {
        ApprovalForm {
            phase,
            policy: "any".into(),
            timeout: defaults::APPROVAL_TIMEOUT.to_string(),
            ..ApprovalForm::default()
        }
    }

    fn of(phase: &'static str, policy: Option<&ApprovalPolicy>) -> Self {
        let Some(p) = policy else {
            return ApprovalForm::blank(phase);
        };
        let (mode, n) = match p.policy {
            ApprovalMode::Any => ("any", String::new()),
            ApprovalMode::All => ("all", String::new()),
            ApprovalMode::AtLeast(n) => ("at_least", n.to_string()),
        };
        ApprovalForm {
            phase,
            enabled: true,
            approvers: p
                .approvers
                .iter()
                .map(approver_text)
                .collect::<Vec<_>>()
                .join(", "),
            policy: mode.into(),
            n,
            timeout: p.timeout.to_string(),
            fresh_sign_in: p.fresh_sign_in.map(|d| d.to_string()).unwrap_or_default(),
            requester_can_approve: p.requester_can_approve,
            exclude_authors: p.exclude_authors,
        }
    }

    /// The `name` of one of its fields (`approvals.before.timeout`).
    pub fn key(&self, field: &str) -> String {
        format!("approvals.{}.{field}", self.phase)
    }

    /// The `id` of one of its fields (`approvals-before-timeout`).
    pub fn id(&self, field: &str) -> String {
        field_id(&self.key(field))
    }

    fn set(&mut self, field: &str, value: String) {
        match field {
            "enabled" => self.enabled = true,
            "approvers" => self.approvers = value,
            "policy" => self.policy = value,
            "n" => self.n = value,
            "timeout" => self.timeout = value,
            "fresh_sign_in" => self.fresh_sign_in = value,
            "requester_can_approve" => self.requester_can_approve = true,
            "exclude_authors" => self.exclude_authors = true,
            _ => {}
        }
    }
}

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
    fn of(phase: &'static str, gate: Option<&GatePolicy>) -> Self {
        match gate {
            None => GateForm {
                phase,
                enabled: false,
                delay: defaults::GATE_DELAY.to_string(),
                interval: defaults::GATE_INTERVAL.to_string(),
                timeout: defaults::GATE_TIMEOUT.to_string(),
                steady: defaults::GATE_STEADY.to_string(),
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

    fn set(&mut self, field: &str, value: String) {
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
    fn for_page(&mut self) {
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

fn check_prefix(phase: &str, index: usize) -> String {
    format!("gates.{phase}.checks.{index}")
}

/// The kinds of check, as the form's `kind` select names them.
pub const CHECK_KINDS: [(&str, &str); 4] = [
    ("http", "HTTP request"),
    ("prometheus", "Prometheus query"),
    ("command", "command"),
    ("extension", "extension"),
];

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
    fn blank(phase: &str, index: usize) -> Self {
        CheckForm {
            prefix: check_prefix(phase, index),
            kind: "http".into(),
            on_inconclusive: "fail".into(),
            ..CheckForm::default()
        }
    }

    fn of(phase: &str, index: usize, check: &GateCheck) -> Self {
        let mut form = CheckForm {
            name: check.name.clone().unwrap_or_default(),
            consecutive_successes: check.consecutive_successes.to_string(),
            on_inconclusive: match check.on_inconclusive {
                InconclusivePolicy::Fail => "fail".into(),
                InconclusivePolicy::Ask => "ask".into(),
            },
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
        [
            &self.name,
            &self.url,
            &self.method,
            &self.headers,
            &self.body,
            &self.timeout,
            &self.success,
            &self.server,
            &self.query,
            &self.threshold,
            &self.run,
            &self.extension,
            &self.with,
            &self.consecutive_successes,
        ]
        .iter()
        .all(|f| f.trim().is_empty())
    }

    fn set(&mut self, field: &str, value: String) {
        match field {
            "remove" => self.remove = true,
            "name" => self.name = value,
            "kind" => self.kind = value,
            "url" => self.url = value,
            "method" => self.method = value,
            "headers" => self.headers = value,
            "body" => self.body = value,
            "timeout" => self.timeout = value,
            "success" => self.success = value,
            "server" => self.server = value,
            "query" => self.query = value,
            "threshold" => self.threshold = value,
            "run" => self.run = value,
            "extension" => self.extension = value,
            "with" => self.with = value,
            "consecutive_successes" => self.consecutive_successes = value,
            "on_inconclusive" => self.on_inconclusive = value,
            _ => {}
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

/// Errors of one approval's fields.
#[derive(Debug, Clone, Default)]
pub struct ApprovalErrors {
    pub approvers: Option<String>,
    pub policy: Option<String>,
    pub n: Option<String>,
    pub timeout: Option<String>,
    pub fresh_sign_in: Option<String>,
}

impl ApprovalErrors {
    fn summary(&self, phase: &str, out: &mut Vec<(String, String)>) {
        for (field, e) in [
            ("approvers", &self.approvers),
            ("policy", &self.policy),
            ("n", &self.n),
            ("timeout", &self.timeout),
            ("fresh_sign_in", &self.fresh_sign_in),
        ] {
            if let Some(e) = e {
                out.push((field_id(&format!("approvals.{phase}.{field}")), e.clone()));
            }
        }
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

    fn check_mut(&mut self, index: usize) -> &mut CheckErrors {
        if self.check.len() <= index {
            self.check.resize(index + 1, CheckErrors::default());
        }
        &mut self.check[index]
    }

    fn summary(&self, phase: &str, out: &mut Vec<(String, String)>) {
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

/// Errors of one check's fields.
#[derive(Debug, Clone, Default)]
pub struct CheckErrors {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub url: Option<String>,
    pub method: Option<String>,
    pub headers: Option<String>,
    pub body: Option<String>,
    pub timeout: Option<String>,
    pub success: Option<String>,
    pub server: Option<String>,
    pub query: Option<String>,
    pub threshold: Option<String>,
    pub run: Option<String>,
    pub extension: Option<String>,
    pub with: Option<String>,
    pub consecutive_successes: Option<String>,
    pub on_inconclusive: Option<String>,
}

impl CheckErrors {
    /// `(field, message)` of every error, in form order.
    pub fn entries(&self) -> Vec<(&'static str, &String)> {
        [
            ("name", &self.name),
            ("kind", &self.kind),
            ("url", &self.url),
            ("method", &self.method),
            ("headers", &self.headers),
            ("body", &self.body),
            ("timeout", &self.timeout),
            ("success", &self.success),
            ("server", &self.server),
            ("query", &self.query),
            ("threshold", &self.threshold),
            ("run", &self.run),
            ("extension", &self.extension),
            ("with", &self.with),
            ("consecutive_successes", &self.consecutive_successes),
            ("on_inconclusive", &self.on_inconclusive),
        ]
        .into_iter()
        .filter_map(|(f, e)| e.as_ref().map(|e| (f, e)))
        .collect()
    }

    /// Whether a field of a kind other than the check's has an error (the
    /// kind's group is then shown open).
    pub fn any_of(&self, kind: &str) -> bool {
        let fields: &[&Option<String>] = match kind {
            "http" => &[
                &self.url,
                &self.method,
                &self.headers,
                &self.body,
                &self.timeout,
                &self.success,
            ],
            "prometheus" => &[&self.server, &self.query, &self.threshold],
            "command" => &[&self.run],
            "extension" => &[&self.extension, &self.with],
            _ => &[],
        };
        fields.iter().any(|f| f.is_some())
    }
}

/// A duration field: empty is `default`; `positive` refuses `0s`.
fn duration_field(
    text: &str,
    default: Duration,
    positive: bool,
    what: &str,
) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(default);
    }
    match Duration::parse(text) {
        Ok(d) if positive && d.is_zero() => Err(format!("{what} must be longer than 0s.")),
        Ok(d) => Ok(d),
        Err(e) => Err(sentence(e)),
    }
}

/// Reads an approver list: user names and `group:NAME`, separated by
/// commas, spaces or new lines, each once.
pub fn parse_approvers(text: &str) -> Result<Vec<Approver>, String> {
    let mut out: Vec<Approver> = Vec::new();
    let mut problems = Vec::new();
    for item in patterns(text) {
        match Approver::parse(&item) {
            Ok(a) if out.contains(&a) => problems.push(format!("`{item}` is listed twice.")),
            Ok(a) => out.push(a),
            Err(e) => problems.push(sentence(e)),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join(" "));
    }
    if out.is_empty() {
        return Err("Enter at least one approver: a user name or `group:NAME`, such as `alice, group:management`.".into());
    }
    Ok(out)
}

/// The approval typed in `form` (`None` when not enabled).
fn parse_approval(
    form: &ApprovalForm,
    errors: &mut ApprovalErrors,
) -> Option<Option<ApprovalPolicy>> {
    if !form.enabled {
        return Some(None);
    }
    let approvers = parse_approvers(&form.approvers)
        .map_err(|e| errors.approvers = Some(e))
        .ok();
    let policy = match form.policy.as_str() {
        "any" => Some(ApprovalMode::Any),
        "all" => Some(ApprovalMode::All),
        "at_least" => match form.n.trim().parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => {
                // A group may have any number of members; a list of users
                // only has so many.
                let users_only = approvers
                    .as_ref()
                    .filter(|list| list.iter().all(|a| matches!(a, Approver::User(_))));
                match users_only {
                    Some(list) if n as usize > list.len() => {
                        errors.n = Some(format!(
                            "At least {} can never be reached: only {} listed (a group counts each of its members).",
                            plural(n, "approval", "approvals"),
                            plural(list.len(), "user is", "users are")
                        ));
                        None
                    }
                    _ => Some(ApprovalMode::AtLeast(n)),
                }
            }
            _ => {
                errors.n = Some(format!(
                    "Enter how many approvers must approve: a whole number from 1 to 1000, not `{}`.",
                    form.n.trim()
                ));
                None
            }
        },
        _ => {
            errors.policy = Some("Choose any one approver, every approver, or at least N.".into());
            None
        }
    };
    let timeout = duration_field(
        &form.timeout,
        defaults::APPROVAL_TIMEOUT,
        true,
        "The timeout",
    )
    .map_err(|e| errors.timeout = Some(e))
    .ok();
    let fresh_sign_in = if form.fresh_sign_in.trim().is_empty() {
        Some(None)
    } else {
        duration_field(&form.fresh_sign_in, Duration::ZERO, false, "")
            .map(Some)
            .map_err(|e| errors.fresh_sign_in = Some(e))
            .ok()
    };
    Some(Some(ApprovalPolicy {
        approvers: approvers?,
        policy: policy?,
        timeout: timeout?,
        fresh_sign_in: fresh_sign_in?,
        requester_can_approve: form.requester_can_approve,
        exclude_authors: form.exclude_authors,
    }))
}

/// The gate typed in `form` (`None` when not enabled).
fn parse_gate(form: &GateForm, errors: &mut GateErrors) -> Option<Option<GatePolicy>> {
    if !form.enabled {
        return Some(None);
    }
    fn field(
        text: &str,
        default: Duration,
        positive: bool,
        what: &str,
        slot: &mut Option<String>,
    ) -> Option<Duration> {
        duration_field(text, default, positive, what)
            .map_err(|e| *slot = Some(e))
            .ok()
    }
    let delay = field(
        &form.delay,
        defaults::GATE_DELAY,
        false,
        "The delay",
        &mut errors.delay,
    );
    let interval = field(
        &form.interval,
        defaults::GATE_INTERVAL,
        true,
        "The interval",
        &mut errors.interval,
    );
    let timeout = field(
        &form.timeout,
        defaults::GATE_TIMEOUT,
        true,
        "The timeout",
        &mut errors.timeout,
    );
    let steady = field(
        &form.steady,
        defaults::GATE_STEADY,
        false,
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
fn url_field(text: &str, what: &str) -> Result<String, String> {
    let url = text.trim();
    if url.is_empty() {
        return Err(format!(
            "Enter the {what}, starting with http:// or https://."
        ));
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "`{url}` is not a URL: it must start with http:// or https://."
        ));
    }
    secret_refs(url)?;
    Ok(url.to_string())
}

/// Refuses malformed `${{ secrets.… }}` references (unknown secrets are
/// reported when the check runs).
fn secret_refs(text: &str) -> Result<(), String> {
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
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
        if !valid {
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
fn parse_check(form: &CheckForm, errors: &mut CheckErrors) -> Option<GateCheck> {
    let name = form.name.trim();
    let consecutive_successes = match form.consecutive_successes.trim() {
        "" => Some(1),
        text => match text.parse::<u32>() {
            Ok(n) if (1..=1000).contains(&n) => Some(n),
            _ => {
                errors.consecutive_successes = Some(format!(
                    "Enter how many passing samples are needed in a row: a whole number from 1 to 1000, not `{text}`."
                ));
                None
            }
        },
    };
    let on_inconclusive = match form.on_inconclusive.as_str() {
        "fail" | "" => Some(InconclusivePolicy::Fail),
        "ask" => Some(InconclusivePolicy::Ask),
        _ => {
            errors.on_inconclusive = Some("Choose fail or ask.".into());
            None
        }
    };
    let kind = match form.kind.as_str() {
        "http" => {
            let url = url_field(&form.url, "URL of the request")
                .map_err(|e| errors.url = Some(e))
                .ok();
            let method = match form.method.trim() {
                "" => Some(defaults::HTTP_METHOD.to_string()),
                m if m.chars().all(|c| c.is_ascii_alphabetic()) => Some(m.to_ascii_uppercase()),
                m => {
                    errors.method =
                        Some(format!("`{m}` is not an HTTP method (GET, POST, HEAD, …)."));
                    None
                }
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
                defaults::HTTP_CHECK_TIMEOUT,
                false,
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
            let name = match crate::domain::names::name_problem(ext) {
                None => Some(ext.to_string()),
                Some(_) if ext.is_empty() => {
                    errors.extension = Some(
                        "Enter the extension's NAME: the check runs `slipway-check-NAME`.".into(),
                    );
                    None
                }
                Some(problem) => {
                    errors.extension = Some(format!(
                        "`{ext}` is not an extension name: {problem} (it names the executable `slipway-check-NAME`)."
                    ));
                    None
                }
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

/// The approvals and gates typed in the form; problems go to `errors`.
fn parse_approvals_and_gates(
    form: &StageForm,
    errors: &mut FieldErrors,
) -> Option<(Approvals, Gates)> {
    let order = match form.approvals_order.as_str() {
        "before_gates" | "" => Some(ApprovalOrder::BeforeGates),
        "after_gates" => Some(ApprovalOrder::AfterGates),
        _ => {
            errors.approvals_order = Some("Choose approvals before gates or after them.".into());
            None
        }
    };
    let approvals_before = parse_approval(&form.approvals_before, &mut errors.approvals_before);
    let approvals_after = parse_approval(&form.approvals_after, &mut errors.approvals_after);
    let gates_before = parse_gate(&form.gates_before, &mut errors.gates_before);
    let gates_after = parse_gate(&form.gates_after, &mut errors.gates_after);
    Some((
        Approvals {
            before: approvals_before?,
            after: approvals_after?,
            order: order?,
        },
        Gates {
            before: gates_before?,
            after: gates_after?,
        },
    ))
}

impl StageForm {
    /// Reads a posted form: the fixed fields, then approvals and gates
    /// (`approvals.before.timeout`, `gates.after.checks.2.url`, …). Text
    /// areas' CRLF line ends are made LF; checks left blank are dropped.
    pub fn from_body(text: &str) -> Result<StageForm, String> {
        let mut form = web::Query::<StageForm>::from_query(text)
            .map_err(|e| e.to_string())?
            .into_inner();
        let pairs = web::Query::<Vec<(String, String)>>::from_query(text)
            .map_err(|e| e.to_string())?
            .into_inner();
        form.approvals_before = ApprovalForm {
            phase: PHASES[0],
            ..ApprovalForm::default()
        };
        form.approvals_after = ApprovalForm {
            phase: PHASES[1],
            ..ApprovalForm::default()
        };
        form.gates_before = GateForm {
            phase: PHASES[0],
            ..GateForm::default()
        };
        form.gates_after = GateForm {
            phase: PHASES[1],
            ..GateForm::default()
        };
        let mut checks: [BTreeMap<usize, CheckForm>; 2] = Default::default();
        for (key, value) in pairs {
            let value = value.replace("\r\n", "\n");
            let parts: Vec<&str> = key.split('.').collect();
            let phase = |p: &str| PHASES.iter().position(|x| *x == p);
            match parts.as_slice() {
                ["approvals", p, field] => match phase(p) {
                    Some(0) => form.approvals_before.set(field, value),
                    Some(_) => form.approvals_after.set(field, value),
                    None => {}
                },
                ["gates", p, field] => match phase(p) {
                    Some(0) => form.gates_before.set(field, value),
                    Some(_) => form.gates_after.set(field, value),
                    None => {}
                },
                ["gates", p, "checks", index, field] => {
                    if let (Some(ph), Ok(index)) = (phase(p), index.parse::<usize>()) {
                        checks[ph]
                            .entry(index)
                            .or_insert_with(|| CheckForm {
                                // A check without a kind field is not a kind.
                                kind: String::new(),
                                ..CheckForm::blank(PHASES[ph], index)
                            })
                            .set(field, value);
                    }
                }
                _ => {}
            }
        }
        let [before, after] = checks;
        form.gates_before.checks = before.into_values().filter(|c| !c.is_blank()).collect();
        form.gates_after.checks = after.into_values().filter(|c| !c.is_blank()).collect();
        Ok(form)
    }
}

#[derive(Template)]
#[template(path = "pages/stage.html")]
pub struct StagePage {
    pub nav: Nav,
    pub pipeline: String,
    pub pipeline_url: String,
    pub form_url: String,
    pub stage: String,
    pub position: usize,
    pub previous: String,
    pub revision: i32,
    /// Release managers may save; everyone else sees the form read-only.
    pub can_edit: bool,
    /// A message after saving ("Saved as revision 2.") or "nothing changed".
    pub notice: Option<String>,
    pub form: StageForm,
    pub errors: FieldErrors,
    /// Stages before this one (for `after: <stage>`).
    pub earlier_stages: Vec<String>,
    pub timezones: Vec<&'static str>,
    /// Fire times of the cron and zone typed in the form (the preview).
    pub preview: Option<Vec<FireTime>>,
    pub preview_zone: String,
    /// The stored trigger in words.
    pub trigger: String,
    /// The stored schedule, if the stage has one.
    pub timezone: Option<String>,
    pub fire_times: Vec<FireTime>,
    pub next_fire: Option<FireTime>,
    pub last_fired: Option<FireTime>,
    pub fires: Vec<FireView>,
    pub catch_up: bool,
    pub environment: String,
    pub approvals: Vec<ApprovalView>,
    pub gates: Vec<GateView>,
    pub deployers: String,
    pub revisions: Vec<RevisionView>,
    pub more_revisions: usize,
    /// The stage's overview (what is live, Deploy).
    pub overview_url: String,
}

pub(crate) fn approver_text(a: &Approver) -> String {
    match a {
        Approver::User(u) => u.clone(),
        Approver::Group(g) => format!("group:{g}"),
    }
}

pub(crate) fn approval_view(phase: &'static str, p: &ApprovalPolicy) -> ApprovalView {
    ApprovalView {
        phase,
        approvers: p
            .approvers
            .iter()
            .map(approver_text)
            .collect::<Vec<_>>()
            .join(", "),
        policy: match p.policy {
            ApprovalMode::Any => "any one approver".into(),
            ApprovalMode::All => "every approver".into(),
            ApprovalMode::AtLeast(n) => format!("at least {}", plural(n, "approver", "approvers")),
        },
        timeout: p.timeout.to_string(),
        fresh_sign_in: p.fresh_sign_in.map(|d| d.to_string()),
        requester_can_approve: p.requester_can_approve,
        exclude_authors: p.exclude_authors,
    }
}

fn check_text(kind: &CheckKind) -> String {
    match kind {
        CheckKind::Http {
            method,
            url,
            success,
            ..
        } => {
            format!("HTTP {method} {url}, passes when {success}")
        }
        CheckKind::Prometheus {
            server,
            query,
            threshold,
        } => {
            format!("Prometheus {server}: {query} {threshold}")
        }
        CheckKind::Command { run } => format!("command `{run}` exits 0"),
        CheckKind::Extension { name, .. } => format!("extension slipway-gate-{name}"),
    }
}

/// A stage's approvals and gates (before, then after) as the pages show them.
pub(crate) fn guard_views(stage: &Stage) -> (Vec<ApprovalView>, Vec<GateView>) {
    let approvals = [
        ("before", &stage.approvals.before),
        ("after", &stage.approvals.after),
    ]
    .into_iter()
    .filter_map(|(phase, p)| p.as_ref().map(|p| approval_view(phase, p)))
    .collect();
    let gates = [
        ("before", &stage.gates.before),
        ("after", &stage.gates.after),
    ]
    .into_iter()
    .filter_map(|(phase, g)| g.as_ref().map(|g| gate_view(phase, g)))
    .collect();
    (approvals, gates)
}

pub(crate) fn gate_view(phase: &'static str, g: &GatePolicy) -> GateView {
    GateView {
        phase,
        delay: g.delay.to_string(),
        interval: g.interval.to_string(),
        timeout: g.timeout.to_string(),
        steady: g.steady.to_string(),
        checks: g
            .checks
            .iter()
            .map(|c| {
                let mut text = check_text(&c.kind);
                if let Some(name) = &c.name {
                    text = format!("{name}: {text}");
                }
                if c.consecutive_successes > 1 {
                    text.push_str(&format!(" ({} in a row)", c.consecutive_successes));
                }
                text
            })
            .collect(),
    }
}

/// A task in words.
pub fn task_summary(task: &TaskSpec) -> String {
    match &task.kind {
        TaskKind::Shell { script } => format!("shell: {script}"),
        TaskKind::Http {
            method,
            url,
            expect_status,
        } => {
            format!("HTTP {method} {url}, expects {expect_status}")
        }
        TaskKind::DeploySlot { app, slot } => format!("deploy to slot {app}/{slot}"),
        TaskKind::SwapSlots { app, from, to } => format!("swap {app} slots {from} → {to}"),
        TaskKind::Extension { name, .. } => format!("extension slipway-task-{name}"),
    }
}

/// An instant on the stage's wall clock and in UTC.
pub fn fire_time(t: DateTime<Utc>, tz: Tz) -> FireTime {
    FireTime {
        local: t
            .with_timezone(&tz)
            .format("%a %Y-%m-%d %H:%M:%S %Z")
            .to_string(),
        utc: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        iso: sched::rfc3339(&t),
    }
}

pub(crate) fn fire_times(schedule: &Schedule) -> Vec<FireTime> {
    schedule
        .next_fires(Utc::now(), FIRE_TIMES)
        .into_iter()
        .map(|t| fire_time(t, schedule.timezone))
        .collect()
}

/// The form as the stored stage fills it.
fn form_of(stage: &Stage, revision: i32) -> StageForm {
    let mut form = StageForm {
        revision: revision.to_string(),
        tasks: edit::tasks_yaml(&stage.tasks),
        variables: edit::variables_text(&stage.variables),
        parallel: stage.queue.parallel.to_string(),
        policy: match stage.queue.policy {
            QueueMode::LatestOnly => "latest_only".into(),
            QueueMode::Sequence => "sequence".into(),
        },
        catch_up: stage.catch_up.then(|| "on".to_string()),
        timezone: "UTC".into(),
        approvals_order: match stage.approvals.order {
            ApprovalOrder::BeforeGates => "before_gates".into(),
            ApprovalOrder::AfterGates => "after_gates".into(),
        },
        approvals_before: ApprovalForm::of(PHASES[0], stage.approvals.before.as_ref()),
        approvals_after: ApprovalForm::of(PHASES[1], stage.approvals.after.as_ref()),
        gates_before: GateForm::of(PHASES[0], stage.gates.before.as_ref()),
        gates_after: GateForm::of(PHASES[1], stage.gates.after.as_ref()),
        ..StageForm::default()
    };
    match &stage.trigger {
        Trigger::Manual => form.trigger = "manual".into(),
        Trigger::After { upstream, branches } => {
            match upstream {
                Upstream::Build => form.trigger = "after_build".into(),
                Upstream::Stage(s) => {
                    form.trigger = "after_stage".into();
                    form.after_stage = s.as_str().to_string();
                }
            }
            form.branches = branches.include.join(", ");
            form.exclude_branches = branches.exclude.join(", ");
        }
        Trigger::Schedule(s) => {
            form.trigger = "schedule".into();
            form.cron = s.cron.as_str().to_string();
            form.timezone = s.timezone.name().to_string();
        }
    }
    form
}

fn patterns(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn text_errors(errors: Vec<TextError>) -> Vec<String> {
    errors.into_iter().map(|e| e.to_string()).collect()
}

/// The schedule typed in the form, or the errors of its two fields.
fn parse_schedule(form: &StageForm, errors: &mut FieldErrors) -> Option<Schedule> {
    let cron = match Cron::parse(&form.cron) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.cron = Some(if form.cron.trim().is_empty() {
                "Enter a cron expression: six fields, seconds first (`0 0 3 * * *` is 03:00 every day).".into()
            } else {
                format!("{e}.")
            });
            None
        }
    };
    let zone = form.timezone.trim();
    let timezone = match parse_timezone(zone) {
        Ok(tz) => Some(tz),
        Err(_) => {
            errors.timezone = Some(if zone.is_empty() {
                "Enter an IANA time zone such as Europe/Berlin or UTC.".into()
            } else {
                match suggest_timezone(zone) {
                    Some(s) => format!("`{zone}` is not an IANA time zone; did you mean {s}?"),
                    None => format!(
                        "`{zone}` is not an IANA time zone (such as America/Los_Angeles or UTC)."
                    ),
                }
            });
            None
        }
    };
    Some(Schedule {
        cron: cron?,
        timezone: timezone?,
    })
}

/// Parses the form into the stage's new configuration ("parse, don't
/// validate"): every field's problem is reported next to it.
pub fn parse_form(
    def: &PipelineDefinition,
    index: usize,
    form: &StageForm,
) -> Result<StageEdit, Box<FieldErrors>> {
    let mut errors = FieldErrors::default();
    let branches = BranchFilter {
        include: patterns(&form.branches),
        exclude: patterns(&form.exclude_branches),
    };
    let trigger = match form.trigger.as_str() {
        "manual" => Some(Trigger::Manual),
        "after_build" => Some(Trigger::After {
            upstream: Upstream::Build,
            branches,
        }),
        "after_stage" => {
            let earlier = &def.stages[..index.min(def.stages.len())];
            match earlier
                .iter()
                .find(|s| s.name.as_str() == form.after_stage.trim())
            {
                Some(s) => Some(Trigger::After {
                    upstream: Upstream::Stage(s.name.clone()),
                    branches,
                }),
                None => {
                    errors.after_stage = Some(if earlier.is_empty() {
                        "This is the first stage: it can only follow the build.".into()
                    } else {
                        format!(
                            "Choose a stage before this one ({}).",
                            earlier
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
                    None
                }
            }
        }
        "schedule" => parse_schedule(form, &mut errors).map(Trigger::Schedule),
        _ => {
            errors.trigger = Some(
                "Choose what starts a deployment: manual, after the build, after a stage, or a schedule."
                    .into(),
            );
            None
        }
    };
    if form.trigger.starts_with("after") {
        let bad: Vec<String> = branches_problems(&form.branches, &form.exclude_branches);
        if !bad.is_empty() {
            errors.branches = Some(bad.join(" "));
        }
    }
    let tasks = match edit::parse_tasks(def, index, &form.tasks) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.tasks = text_errors(e);
            None
        }
    };
    let variables = match edit::parse_variables(&form.variables) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.variables = text_errors(e);
            None
        }
    };
    let parallel = match form.parallel.trim().parse::<u32>() {
        Ok(n) if (1..=100).contains(&n) => Some(n),
        _ => {
            errors.parallel = Some(format!(
                "Enter how many deployments may run at once: a whole number from 1 to 100, not `{}`.",
                form.parallel
            ));
            None
        }
    };
    let policy = match form.policy.as_str() {
        "latest_only" => Some(QueueMode::LatestOnly),
        "sequence" => Some(QueueMode::Sequence),
        _ => {
            errors.policy = Some("Choose latest only or sequence.".into());
            None
        }
    };
    let approvals_and_gates = parse_approvals_and_gates(form, &mut errors);
    match (
        trigger,
        tasks,
        variables,
        parallel,
        policy,
        approvals_and_gates,
    ) {
        (
            Some(trigger),
            Some(tasks),
            Some(variables),
            Some(parallel),
            Some(policy),
            Some((approvals, gates)),
        ) if errors.is_empty() => Ok(StageEdit {
            trigger,
            catch_up: form.catch_up.is_some(),
            tasks,
            variables,
            queue: QueuePolicy { parallel, policy },
            approvals,
            gates,
        }),
        _ => Err(Box::new(errors)),
    }
}

/// Branch patterns may not contain spaces or control characters (they are
/// split on commas and spaces already); an empty `**` filter is pointless.
fn branches_problems(include: &str, exclude: &str) -> Vec<String> {
    patterns(include)
        .into_iter()
        .chain(patterns(exclude))
        .filter(|p| p.chars().any(|c| c.is_control()) || p.starts_with('-'))
        .map(|p| format!("`{p}` is not a branch pattern."))
        .collect()
}

/// Puts an approval's validation error (`field` after `approvals.before.`)
/// next to its field.
fn place_approval_error(field: &str, message: String, out: &mut ApprovalErrors) {
    let slot = if field.starts_with("policy.n") {
        &mut out.n
    } else if field.starts_with("policy") {
        &mut out.policy
    } else if field.starts_with("timeout") {
        &mut out.timeout
    } else if field.starts_with("fresh_sign_in") {
        &mut out.fresh_sign_in
    } else {
        &mut out.approvers
    };
    slot.get_or_insert(message);
}

/// Puts a gate's validation error (`field` after `gates.before.`) next to
/// its field; `kept` maps the stored check positions to the form's.
fn place_gate_error(field: &str, message: String, kept: &[usize], out: &mut GateErrors) {
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
            let c = out.check_mut(position);
            let (_, key) = rest.split_once('.').unwrap_or(("", rest));
            match rest.split('.').next().unwrap_or_default() {
                "http" | "prometheus" => match key.split(['.', '[']).next().unwrap_or_default() {
                    "url" => &mut c.url,
                    "method" => &mut c.method,
                    "headers" => &mut c.headers,
                    "body" => &mut c.body,
                    "timeout" => &mut c.timeout,
                    "success" => &mut c.success,
                    "server" => &mut c.server,
                    "query" => &mut c.query,
                    "threshold" => &mut c.threshold,
                    _ if rest.starts_with("http") => &mut c.url,
                    _ => &mut c.server,
                },
                "command" => &mut c.run,
                "check" => &mut c.extension,
                "with" => &mut c.with,
                "name" => &mut c.name,
                "consecutive_successes" => &mut c.consecutive_successes,
                "on_inconclusive" => &mut c.on_inconclusive,
                _ => &mut c.kind,
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
fn kept_checks(gate: &GateForm) -> Vec<usize> {
    gate.checks
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.remove && !c.is_blank())
        .map(|(i, _)| i)
        .collect()
}

/// Puts the definition's validation errors next to the form's fields.
fn place_errors(errors: &DefinitionErrors, index: usize, form: &StageForm) -> FieldErrors {
    let prefix = format!("stages[{index}].");
    let mut out = FieldErrors::default();
    for e in errors.iter() {
        let message = e.message.clone();
        let Some(field) = e.field.strip_prefix(&prefix) else {
            out.general.push(format!("{}: {message}", e.field));
            continue;
        };
        if field.starts_with("trigger.schedule.cron") {
            out.cron.get_or_insert(message);
        } else if field.starts_with("trigger.schedule.timezone") {
            out.timezone.get_or_insert(message);
        } else if field.starts_with("trigger.after") {
            out.after_stage.get_or_insert(message);
        } else if field.starts_with("trigger.branches") || field.contains(".branches") {
            out.branches.get_or_insert(message);
        } else if field.starts_with("trigger") {
            out.trigger.get_or_insert(message);
        } else if field.starts_with("tasks") {
            out.tasks.push(format!("{field}: {message}"));
        } else if field.starts_with("variables") {
            out.variables.push(format!("{field}: {message}"));
        } else if field.starts_with("queue.parallel") {
            out.parallel.get_or_insert(message);
        } else if field.starts_with("queue") {
            out.policy.get_or_insert(message);
        } else if field.starts_with("approvals.order") {
            out.approvals_order.get_or_insert(message);
        } else if let Some(rest) = field.strip_prefix("approvals.before") {
            place_approval_error(
                rest.trim_start_matches('.'),
                message,
                &mut out.approvals_before,
            );
        } else if let Some(rest) = field.strip_prefix("approvals.after") {
            place_approval_error(
                rest.trim_start_matches('.'),
                message,
                &mut out.approvals_after,
            );
        } else if let Some(rest) = field.strip_prefix("gates.before") {
            let kept = kept_checks(&form.gates_before);
            place_gate_error(
                rest.trim_start_matches('.'),
                message,
                &kept,
                &mut out.gates_before,
            );
        } else if let Some(rest) = field.strip_prefix("gates.after") {
            let kept = kept_checks(&form.gates_after);
            place_gate_error(
                rest.trim_start_matches('.'),
                message,
                &kept,
                &mut out.gates_after,
            );
        } else {
            out.general.push(format!("{field}: {message}"));
        }
    }
    out
}

/// A simple line diff of two canonical YAML texts, with three lines of
/// context around each change; returns the lines and (added, removed).
pub fn diff_lines(old: &str, new: &str) -> (Vec<DiffLine>, usize, usize) {
    use similar::{ChangeTag, TextDiff};
    let diff = TextDiff::from_lines(old, new);
    let mut lines = Vec::new();
    let (mut added, mut removed) = (0, 0);
    for (i, group) in diff.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            lines.push(DiffLine {
                sign: "…",
                kind: "gap",
                text: String::new(),
            });
        }
        for op in group {
            for change in diff.iter_changes(op) {
                let (sign, kind) = match change.tag() {
                    ChangeTag::Delete => {
                        removed += 1;
                        ("-", "del")
                    }
                    ChangeTag::Insert => {
                        added += 1;
                        ("+", "ins")
                    }
                    ChangeTag::Equal => (" ", "ctx"),
                };
                lines.push(DiffLine {
                    sign,
                    kind,
                    text: change.value().trim_end_matches('\n').to_string(),
                });
            }
        }
    }
    (lines, added, removed)
}

fn revision_views(revisions: &[DefinitionRevisionRow], current: i32) -> Vec<RevisionView> {
    revisions
        .iter()
        .enumerate()
        .take(REVISIONS)
        .map(|(i, r)| {
            // Newest first: the one before is the next in the list.
            let (diff, added, removed) = match revisions.get(i + 1) {
                Some(prev) => {
                    let (lines, a, d) = diff_lines(&prev.yaml, &r.yaml);
                    (Some(lines), a, d)
                }
                None => (None, 0, 0),
            };
            RevisionView {
                revision: r.revision,
                by: r.created_by.clone(),
                at: time(&r.created_at),
                iso: crate::web::views::iso(&r.created_at),
                comment: r.comment.clone(),
                added,
                removed,
                diff,
                current: r.revision == current,
            }
        })
        .collect()
}

pub(crate) fn fire_view(pipeline: &str, f: &FireRecord, tz: Tz) -> FireView {
    let (symbol, class) = match f.outcome {
        TriggerOutcome::Deployed => ("▶", "ok"),
        TriggerOutcome::Skipped => ("↷", "muted"),
        TriggerOutcome::Missed => ("⚠", "waiting"),
        TriggerOutcome::Failed => ("✖", "bad"),
    };
    FireView {
        when: fire_time(f.scheduled_for, tz).local,
        iso: sched::rfc3339(&f.scheduled_for),
        outcome: f.outcome.as_str(),
        symbol,
        class,
        detail: f.detail.clone(),
        release_url: f
            .release
            .as_ref()
            .map(|v| (v.clone(), urls::release(pipeline, v))),
        deployment_url: match (&f.release, f.deployment_id) {
            (Some(v), Some(id)) => Some(urls::deployment(pipeline, v, id)),
            _ => None,
        },
    }
}

/// Everything the page shows besides the form.
struct Loaded {
    name: String,
    revision: i32,
    definition: PipelineDefinition,
    index: usize,
    stage_row: Option<storage::StageRow>,
    fires: Vec<FireRecord>,
    revisions: Vec<DefinitionRevisionRow>,
}

fn load(conn: &mut storage::DbConn, name: &str, stage: &str) -> Result<Loaded, WebError> {
    let loaded = pipelines::load(conn, name)?;
    let Some(index) = loaded.definition.stage_index(stage) else {
        return Err(WebError::NotFound(format!(
            "{} has no stage named `{stage}`.",
            loaded.name
        )));
    };
    let stage_row = store::find_stage(conn, loaded.id, stage)?;
    let runs = store::recent_trigger_runs(conn, loaded.id, stage, RECENT_FIRES)?;
    let fires = sched::fire_records(conn, runs)?;
    let revisions = storage::list_revisions(conn, loaded.id)?;
    Ok(Loaded {
        name: loaded.name,
        revision: loaded.revision,
        definition: loaded.definition,
        index,
        stage_row,
        fires,
        revisions,
    })
}

/// Builds the page; `form` is the user's input (or the stored stage's).
fn page(
    nav: Nav,
    can_edit: bool,
    l: &Loaded,
    form: StageForm,
    errors: FieldErrors,
    preview: bool,
    notice: Option<String>,
) -> StagePage {
    let mut form = form;
    form.gates_before.for_page();
    form.gates_after.for_page();
    let def = &l.definition;
    let stage = &def.stages[l.index];
    let (timezone, fire_times_now, tz) = match &stage.trigger {
        Trigger::Schedule(s) => (
            Some(s.timezone.name().to_string()),
            fire_times(s),
            s.timezone,
        ),
        _ => (None, Vec::new(), chrono_tz::UTC),
    };
    let preview_times = if preview {
        let mut scratch = FieldErrors::default();
        parse_schedule(&form, &mut scratch).map(|s| fire_times(&s))
    } else {
        None
    };
    let (approvals, gates) = guard_views(stage);
    let row = l.stage_row.as_ref();
    StagePage {
        nav,
        pipeline: l.name.clone(),
        pipeline_url: urls::pipeline(&l.name),
        form_url: urls::stage_configure(&l.name, stage.name.as_str()),
        overview_url: urls::stage(&l.name, stage.name.as_str()),
        stage: stage.name.as_str().to_string(),
        position: l.index + 1,
        previous: l
            .index
            .checked_sub(1)
            .and_then(|i| def.stages.get(i))
            .map(|p| format!("stage {}", p.name))
            .unwrap_or_else(|| "the build".into()),
        revision: l.revision,
        can_edit,
        notice,
        preview_zone: form.timezone.trim().to_string(),
        form,
        errors,
        earlier_stages: def.stages[..l.index]
            .iter()
            .map(|s| s.name.as_str().to_string())
            .collect(),
        timezones: chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect(),
        preview: preview_times,
        trigger: trigger_text(&stage.trigger),
        next_fire: timezone.as_ref().and_then(|_| {
            row.and_then(|r| r.next_fire_at)
                .map(|t| fire_time(t.and_utc(), tz))
        }),
        last_fired: timezone.as_ref().and_then(|_| {
            row.and_then(|r| r.last_fired_at)
                .map(|t| fire_time(t.and_utc(), tz))
        }),
        timezone,
        fire_times: fire_times_now,
        fires: l.fires.iter().map(|f| fire_view(&l.name, f, tz)).collect(),
        catch_up: stage.catch_up,
        environment: environment_text(stage),
        approvals,
        gates,
        deployers: deployers_text(stage),
        revisions: revision_views(&l.revisions, l.revision),
        more_revisions: l.revisions.len().saturating_sub(REVISIONS),
    }
}

/// Where a stage deploys, in words.
pub(crate) fn environment_text(stage: &Stage) -> String {
    match &stage.environment {
        None => "not set".into(),
        Some(crate::domain::Environment::Host) => "the Slipway host".into(),
        Some(crate::domain::Environment::Agent { name }) => format!("agent {name}"),
        Some(crate::domain::Environment::Slot { app, name }) => {
            format!("slot {name} of app {app}")
        }
    }
}

/// Who may deploy a stage by hand, in words.
pub(crate) fn deployers_text(stage: &Stage) -> String {
    if stage.deployers.is_empty() {
        "anyone with the deployer role".into()
    } else {
        stage
            .deployers
            .iter()
            .map(approver_text)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Renders the page with `status`.
fn respond(status: StatusCode, page: &StagePage) -> Result<HttpResponse, WebError> {
    let body = page.render().map_err(WebError::internal)?;
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body))
}

fn can_edit(user: &CurrentUser) -> bool {
    user.0
        .as_ref()
        .is_some_and(|u| u.role >= Role::ReleaseManager)
}

#[derive(Debug, Deserialize)]
pub struct StageQuery {
    /// Set after a save: the revision it made.
    saved: Option<i32>,
}

pub async fn config(
    state: State,
    nav: Nav,
    user: CurrentUser,
    path: web::Path<(String, String)>,
    query: web::Query<StageQuery>,
) -> Result<HttpResponse, WebError> {
    let (name, stage) = path.into_inner();
    let l = state
        .with_conn::<_, WebError, _>(move |conn| load(conn, &name, &stage))
        .await?;
    let form = form_of(&l.definition.stages[l.index], l.revision);
    let notice = query
        .saved
        .map(|r| format!("Saved as revision {r} of {}.", l.name));
    let page = page(
        nav,
        can_edit(&user),
        &l,
        form,
        FieldErrors::default(),
        false,
        notice,
    );
    respond(StatusCode::OK, &page)
}

/// `POST /pipelines/{p}/stages/{s}`: preview the fire times of the typed
/// schedule, or save the form as a new revision.
pub async fn save(
    state: State,
    nav: Nav,
    user: CurrentUser,
    session: Session,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse, WebError> {
    let (name, stage) = path.into_inner();
    let text = std::str::from_utf8(&body)
        .map_err(|_| WebError::BadRequest("The form must be sent as UTF-8.".into()))?;
    let form = StageForm::from_body(text)
        .map_err(|e| WebError::BadRequest(format!("The form could not be read: {e}")))?;
    check_csrf(&session, &form.csrf)?;
    let editor = can_edit(&user);
    let (lname, lstage) = (name.clone(), stage.clone());
    let l = state
        .with_conn::<_, WebError, _>(move |conn| load(conn, &lname, &lstage))
        .await?;
    if form.action == "preview" {
        let mut errors = FieldErrors::default();
        let status = match parse_schedule(&form, &mut errors) {
            Some(_) => StatusCode::OK,
            None => StatusCode::UNPROCESSABLE_ENTITY,
        };
        return respond(status, &page(nav, editor, &l, form, errors, true, None));
    }
    let actor = user
        .require_action(Action::ConfigureStage)?
        .username
        .clone();
    let edit = match parse_form(&l.definition, l.index, &form) {
        Ok(edit) => edit,
        Err(errors) => {
            let page = page(nav, editor, &l, form, *errors, false, None);
            return respond(StatusCode::UNPROCESSABLE_ENTITY, &page);
        }
    };
    let base: i32 = form.revision.trim().parse().unwrap_or(l.revision);
    let (sname, sstage) = (name.clone(), stage.clone());
    let saved = state
        .with_conn::<_, WebError, _>(move |conn| {
            Ok(edit::edit_stage(conn, &sname, &sstage, base, edit, &actor))
        })
        .await?;
    match saved {
        Ok(outcome) if outcome.unchanged => {
            let notice = Some(format!(
                "Nothing changed: {} stays at revision {}.",
                l.name, outcome.revision
            ));
            respond(
                StatusCode::OK,
                &page(nav, editor, &l, form, FieldErrors::default(), false, notice),
            )
        }
        Ok(outcome) => {
            let location = format!(
                "{}?saved={}",
                urls::stage_configure(&l.name, &stage),
                outcome.revision
            );
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, location))
                .finish())
        }
        Err(EngineError::Definition(errors)) => {
            let errors = place_errors(&errors, l.index, &form);
            let page = page(nav, editor, &l, form, errors, false, None);
            respond(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(EngineError::Conflict(message)) => {
            // Show the current configuration's revision number but keep the input.
            let l = state
                .with_conn::<_, WebError, _>(move |conn| load(conn, &name, &stage))
                .await?;
            let errors = FieldErrors {
                general: vec![message],
                ..FieldErrors::default()
            };
            let mut form = form;
            form.revision = l.revision.to_string();
            let page = page(nav, editor, &l, form, errors, false, None);
            respond(StatusCode::CONFLICT, &page)
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn def() -> PipelineDefinition {
        crate::domain::parse_definition(crate::domain::EXAMPLE_YAML, "example").unwrap()
    }

    fn form(def: &PipelineDefinition, stage: &str) -> StageForm {
        let i = def.stage_index(stage).unwrap();
        form_of(&def.stages[i], 1)
    }

    #[test]
    fn the_stored_stage_parses_back_unchanged() {
        let def = def();
        for (i, stage) in def.stages.iter().enumerate() {
            let f = form(&def, stage.name.as_str());
            let edit = parse_form(&def, i, &f).unwrap();
            assert_eq!(edit.trigger, stage.trigger, "{}", stage.name);
            assert_eq!(edit.tasks, stage.tasks);
            assert_eq!(edit.queue, stage.queue);
        }
    }

    #[test]
    fn bad_fields_are_reported_next_to_them() {
        let def = def();
        let mut f = form(&def, "test");
        f.cron = "0 0 25 * * *".into();
        f.timezone = "Europe/Berln".into();
        f.parallel = "0".into();
        f.variables = "not a variable".into();
        let errors = parse_form(&def, 1, &f).unwrap_err();
        assert!(errors.cron.is_some());
        assert!(
            errors.timezone.as_ref().unwrap().contains("Europe/Berlin"),
            "{errors:?}"
        );
        assert!(errors.parallel.is_some());
        assert_eq!(errors.variables.len(), 1);
        let mut f = form(&def, "test");
        f.trigger = "after_stage".into();
        f.after_stage = "production".into();
        assert!(parse_form(&def, 1, &f).unwrap_err().after_stage.is_some());
    }

    #[test]
    fn diffs_mark_lines_with_signs() {
        let (lines, added, removed) = diff_lines("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!((added, removed), (2, 1));
        let text: Vec<String> = lines
            .iter()
            .map(|l| format!("{}{}", l.sign, l.text))
            .collect();
        assert_eq!(text, vec![" a", "-b", "+B", " c", "+d"]);
    }

    /// Every stage of a definition exercising every approval and check field.
    fn everything() -> PipelineDefinition {
        crate::domain::parse_definition(
            include_str!("../../domain/fixtures/everything.yaml"),
            "everything.yaml",
        )
        .unwrap()
    }

    #[test]
    fn stored_approvals_and_gates_parse_back_unchanged() {
        for def in [def(), everything()] {
            for (i, stage) in def.stages.iter().enumerate() {
                let f = form_of(stage, 1);
                let edit = parse_form(&def, i, &f)
                    .unwrap_or_else(|e| panic!("{}: {:?}", stage.name, e.summary()));
                assert_eq!(edit.approvals, stage.approvals, "{}", stage.name);
                assert_eq!(edit.gates, stage.gates, "{}", stage.name);
                // Saving the unchanged form gives the same definition, byte for byte.
                let edited = edit::apply_edit(&def, stage.name.as_str(), edit).unwrap();
                assert_eq!(
                    crate::domain::to_canonical_yaml(&edited),
                    crate::domain::to_canonical_yaml(&def)
                );
            }
        }
        let staging = everything().stage("staging").unwrap().clone();
        let f = form_of(&staging, 1);
        assert_eq!(f.approvals_before.approvers, "bob, group:qa");
        assert_eq!(f.approvals_after.policy, "at_least");
        assert_eq!(f.approvals_after.n, "2");
        assert_eq!(f.approvals_after.timeout, "2d");
        assert_eq!(f.approvals_order, "after_gates");
        let checks = &f.gates_before.checks;
        assert_eq!(checks[0].kind, "prometheus");
        assert_eq!(checks[0].threshold, "< 0.01");
        assert_eq!(checks[0].on_inconclusive, "ask");
        assert_eq!(checks[2].kind, "extension");
        let with: serde_json::Value = serde_json::from_str(&checks[2].with).unwrap();
        assert_eq!(with, serde_json::json!({"service": "shop"}));
        let http = &f.gates_after.checks[0];
        assert_eq!(http.method, "POST");
        assert_eq!(http.headers, "Authorization: Bearer ${{ secrets.TOKEN }}\n");
    }

    /// A posted body: the stored form of stage `test` (no approvals, no
    /// gates) as `key=value` pairs, then `extra`.
    fn body(extra: &[(&str, &str)]) -> String {
        let f = form(&def(), "test");
        let mut pairs: Vec<(&str, String)> = vec![
            ("csrf", "x".into()),
            ("revision", f.revision.clone()),
            ("trigger", f.trigger.clone()),
            ("cron", f.cron.clone()),
            ("timezone", f.timezone.clone()),
            ("tasks", f.tasks.replace('\n', "\r\n")),
            ("parallel", f.parallel.clone()),
            ("policy", f.policy.clone()),
            ("approvals.order", "before_gates".into()),
        ];
        pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        pairs.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let enc = |t: &str| {
            percent_encoding::utf8_percent_encode(t, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        pairs
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    fn posted(extra: &[(&str, &str)]) -> Result<StageEdit, Box<FieldErrors>> {
        let def = def();
        let form = StageForm::from_body(&body(extra)).unwrap();
        parse_form(&def, 1, &form)
    }

    #[test]
    fn approvals_and_gates_are_read_from_the_posted_fields() {
        let edit = posted(&[
            ("approvals.before.enabled", "on"),
            (
                "approvals.before.approvers",
                "alice,\r\ngroup:management  bob",
            ),
            ("approvals.before.policy", "at_least"),
            ("approvals.before.n", "2"),
            ("approvals.before.timeout", "7d"),
            ("approvals.before.fresh_sign_in", "15m"),
            ("approvals.before.exclude_authors", "on"),
            // Not enabled: typed values are not saved.
            ("approvals.after.approvers", "carol"),
            ("approvals.order", "after_gates"),
            ("gates.after.enabled", "on"),
            ("gates.after.delay", ""),
            ("gates.after.interval", "1m"),
            ("gates.after.checks.0.kind", "http"),
            ("gates.after.checks.0.name", " health "),
            (
                "gates.after.checks.0.url",
                " https://app.example.com/health ",
            ),
            ("gates.after.checks.0.method", "post"),
            (
                "gates.after.checks.0.headers",
                "Authorization: Bearer ${{ secrets.TOKEN }}\r\n\r\nX-Env:  prod\r\n",
            ),
            ("gates.after.checks.0.body", "{\"deep\": true}"),
            (
                "gates.after.checks.0.success",
                "status == 200 &&\r\nbody.ok",
            ),
            ("gates.after.checks.0.consecutive_successes", "3"),
            ("gates.after.checks.0.on_inconclusive", "ask"),
            // Fields of another kind are ignored.
            ("gates.after.checks.0.run", "./ignored.sh"),
            // A removed check is neither validated nor saved.
            ("gates.after.checks.1.kind", "prometheus"),
            ("gates.after.checks.1.threshold", "about 3"),
            ("gates.after.checks.1.remove", "on"),
            // The blank check that adds one.
            ("gates.after.checks.2.kind", "http"),
            ("gates.after.checks.2.on_inconclusive", "fail"),
            ("gates.after.checks.7.kind", "extension"),
            ("gates.after.checks.7.extension", "pagerduty"),
            ("gates.after.checks.7.with", "service: shop\r\nlevel: 2\r\n"),
            ("gates.after.checks.9.kind", "prometheus"),
            ("gates.after.checks.9.server", "http://prometheus:9090"),
            ("gates.after.checks.9.query", "sum(rate(errors[5m]))"),
            ("gates.after.checks.9.threshold", "<= 0.5"),
            ("gates.after.checks.11.kind", "command"),
            ("gates.after.checks.11.run", "./smoke.sh --fast"),
        ])
        .unwrap();
        let before = edit.approvals.before.unwrap();
        assert_eq!(
            before.approvers,
            vec![
                Approver::User("alice".into()),
                Approver::Group("management".into()),
                Approver::User("bob".into())
            ]
        );
        assert_eq!(before.policy, ApprovalMode::AtLeast(2));
        assert_eq!(before.timeout, Duration::from_days(7));
        assert_eq!(before.fresh_sign_in, Some(Duration::from_mins(15)));
        assert!(before.exclude_authors && !before.requester_can_approve);
        assert_eq!(edit.approvals.after, None);
        assert_eq!(edit.approvals.order, ApprovalOrder::AfterGates);
        assert_eq!(edit.gates.before, None);
        let gate = edit.gates.after.unwrap();
        assert_eq!(gate.delay, Duration::ZERO);
        assert_eq!(gate.interval, Duration::from_mins(1));
        assert_eq!(gate.timeout, defaults::GATE_TIMEOUT);
        assert_eq!(gate.checks.len(), 4, "{:?}", gate.checks);
        let http = &gate.checks[0];
        assert_eq!(http.name.as_deref(), Some("health"));
        assert_eq!(http.consecutive_successes, 3);
        assert_eq!(http.on_inconclusive, InconclusivePolicy::Ask);
        match &http.kind {
            CheckKind::Http {
                method,
                url,
                headers,
                body,
                timeout,
                success,
            } => {
                assert_eq!(method, "POST");
                assert_eq!(url, "https://app.example.com/health");
                assert_eq!(headers.len(), 2);
                assert_eq!(headers["Authorization"], "Bearer ${{ secrets.TOKEN }}");
                assert_eq!(headers["X-Env"], "prod");
                assert_eq!(body.as_deref(), Some("{\"deep\": true}"));
                assert_eq!(*timeout, defaults::HTTP_CHECK_TIMEOUT);
                assert_eq!(success, "status == 200 &&\nbody.ok");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            gate.checks[1].kind,
            CheckKind::Extension {
                name: "pagerduty".into(),
                with: serde_json::json!({"service": "shop", "level": 2})
            }
        );
        assert_eq!(
            gate.checks[2].kind,
            CheckKind::Prometheus {
                server: "http://prometheus:9090".into(),
                query: "sum(rate(errors[5m]))".into(),
                threshold: Threshold::parse("<= 0.5").unwrap()
            }
        );
        assert_eq!(
            gate.checks[3].kind,
            CheckKind::Command {
                run: "./smoke.sh --fast".into()
            }
        );
        // The http check's defaults; JSON works for `with` too.
        let edit = posted(&[
            ("gates.before.enabled", "on"),
            ("gates.before.checks.0.kind", "http"),
            ("gates.before.checks.0.url", "https://a.example.com/"),
            ("gates.before.checks.1.kind", "extension"),
            ("gates.before.checks.1.extension", "x"),
            ("gates.before.checks.1.with", "{\"a\": [1, 2]}"),
        ])
        .unwrap();
        let gate = edit.gates.before.unwrap();
        assert_eq!(gate.interval, defaults::GATE_INTERVAL);
        match &gate.checks[0].kind {
            CheckKind::Http {
                method, success, ..
            } => {
                assert_eq!(method, "GET");
                assert_eq!(success, defaults::HTTP_SUCCESS);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            gate.checks[1].kind,
            CheckKind::Extension {
                name: "x".into(),
                with: serde_json::json!({"a": [1, 2]})
            }
        );
    }

    #[test]
    fn approval_fields_are_checked() {
        let errors = |extra: &[(&str, &str)]| {
            let mut all = vec![("approvals.before.enabled", "on")];
            all.extend_from_slice(extra);
            posted(&all).unwrap_err()
        };
        let e = errors(&[("approvals.before.approvers", "alice, team:ops")]);
        assert!(
            e.approvals_before
                .approvers
                .as_ref()
                .unwrap()
                .contains("team:ops"),
            "{e:?}"
        );
        let e = errors(&[("approvals.before.approvers", " ,\n ")]);
        assert!(
            e.approvals_before
                .approvers
                .as_ref()
                .unwrap()
                .contains("at least one")
        );
        let e = errors(&[("approvals.before.approvers", "alice, alice")]);
        assert!(
            e.approvals_before
                .approvers
                .as_ref()
                .unwrap()
                .contains("twice")
        );
        let e = errors(&[
            ("approvals.before.approvers", "alice"),
            ("approvals.before.policy", "at_least"),
            ("approvals.before.n", "0"),
            ("approvals.before.timeout", "7 days"),
            ("approvals.before.fresh_sign_in", "15"),
        ]);
        assert!(e.approvals_before.n.is_some(), "{e:?}");
        assert!(
            e.approvals_before
                .timeout
                .as_ref()
                .unwrap()
                .contains("7 days")
        );
        assert!(
            e.approvals_before
                .fresh_sign_in
                .as_ref()
                .unwrap()
                .contains("unit")
        );
        let e = errors(&[
            ("approvals.before.approvers", "alice, bob"),
            ("approvals.before.policy", "at_least"),
            ("approvals.before.n", "3"),
            ("approvals.before.timeout", "0s"),
        ]);
        assert!(
            e.approvals_before.n.as_ref().unwrap().contains("only 2"),
            "{e:?}"
        );
        assert!(e.approvals_before.timeout.as_ref().unwrap().contains("0s"));
        let ids: Vec<String> = e.summary().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, ["approvals-before-n", "approvals-before-timeout"]);
        // A group has any number of members: at least 3 of it is fine.
        let edit = posted(&[
            ("approvals.before.enabled", "on"),
            ("approvals.before.approvers", "group:management"),
            ("approvals.before.policy", "at_least"),
            ("approvals.before.n", "3"),
            ("approvals.before.timeout", ""),
        ])
        .unwrap();
        let before = edit.approvals.before.unwrap();
        assert_eq!(before.policy, ApprovalMode::AtLeast(3));
        assert_eq!(before.timeout, defaults::APPROVAL_TIMEOUT);
        let e = errors(&[
            ("approvals.before.approvers", "alice"),
            ("approvals.before.policy", "most"),
            ("approvals.order", "sometimes"),
        ]);
        assert!(e.approvals_before.policy.is_some() && e.approvals_order.is_some());
    }

    #[test]
    fn check_fields_are_checked_next_to_them() {
        let errors = |extra: &[(&str, &str)]| {
            let mut all = vec![("gates.before.enabled", "on")];
            all.extend_from_slice(extra);
            posted(&all).unwrap_err()
        };
        // The expression's error with its position, next to `success`.
        let e = errors(&[
            ("gates.before.checks.0.kind", "http"),
            ("gates.before.checks.0.url", "https://a.example.com/"),
            ("gates.before.checks.0.success", "status =="),
        ]);
        let success = e.gates_before.check(0).success.unwrap();
        assert!(success.contains("line 1, column"), "{success}");
        let summary = e.summary();
        assert_eq!(summary[0].0, "gates-before-checks-0-success");
        assert!(summary[0].1.starts_with("Check 1: "), "{summary:?}");
        let e = errors(&[
            ("gates.before.interval", "0s"),
            ("gates.before.steady", "soon"),
            ("gates.before.checks.0.kind", "http"),
            ("gates.before.checks.0.url", "status.example.com"),
            ("gates.before.checks.0.method", "G E T"),
            (
                "gates.before.checks.0.headers",
                "Accept: text/plain\nno colon\nBad Name: x\naccept: twice\nX-T: ${{ secrets.1X }}",
            ),
            ("gates.before.checks.0.timeout", "10"),
            ("gates.before.checks.0.consecutive_successes", "0"),
            ("gates.before.checks.1.kind", "prometheus"),
            ("gates.before.checks.1.server", "http://p:9090"),
            ("gates.before.checks.1.threshold", "about 3"),
            ("gates.before.checks.2.kind", "command"),
            ("gates.before.checks.2.name", "empty command"),
            ("gates.before.checks.3.kind", "extension"),
            ("gates.before.checks.3.extension", "Pager Duty"),
            ("gates.before.checks.3.with", "{ unclosed"),
            ("gates.before.checks.4.kind", "telepathy"),
            ("gates.before.checks.4.name", "x"),
        ]);
        let g = &e.gates_before;
        assert!(g.interval.is_some() && g.steady.is_some());
        let c = g.check(0);
        assert!(c.url.unwrap().contains("http://"));
        assert!(c.method.is_some());
        let headers = c.headers.unwrap();
        for line in ["Line 2", "Line 3", "Line 4", "Line 5"] {
            assert!(headers.contains(line), "{headers}");
        }
        assert!(!headers.contains("Line 1"), "{headers}");
        assert!(c.timeout.is_some() && c.consecutive_successes.is_some());
        let c = g.check(1);
        assert!(c.query.is_some() && c.threshold.is_some() && c.server.is_none());
        assert!(g.check(2).run.is_some());
        let c = g.check(3);
        assert!(c.extension.unwrap().contains("Pager Duty"));
        assert!(c.with.is_some());
        assert!(g.check(4).kind.is_some());
        // Every check removed: the gate has none left.
        let e = errors(&[
            ("gates.before.checks.0.kind", "command"),
            ("gates.before.checks.0.run", "./x.sh"),
            ("gates.before.checks.0.remove", "on"),
        ]);
        assert!(e.gates_before.checks.is_some(), "{e:?}");
        // A gate that is not enabled is not checked (and not saved).
        let edit = posted(&[
            ("gates.before.checks.0.kind", "command"),
            ("gates.before.interval", "never"),
        ])
        .unwrap();
        assert_eq!(edit.gates, Gates::default());
    }

    #[test]
    fn validation_errors_of_checks_land_on_the_form_field() {
        // The form left check 0 removed, so stored check 0 is form check 1.
        let form = StageForm::from_body(&body(&[
            ("gates.before.enabled", "on"),
            ("gates.before.checks.0.kind", "command"),
            ("gates.before.checks.0.run", "./gone.sh"),
            ("gates.before.checks.0.remove", "on"),
            ("gates.before.checks.1.kind", "http"),
            ("gates.before.checks.1.url", "https://a.example.com/"),
        ]))
        .unwrap();
        let def = def();
        let mut edit = parse_form(&def, 1, &form).unwrap();
        // What the definition's validation says about a bad expression.
        if let Some(CheckKind::Http { success, .. }) =
            edit.gates.before.as_mut().map(|g| &mut g.checks[0].kind)
        {
            *success = "status ==".into();
        }
        let Err(crate::engine::EngineError::Definition(errors)) =
            edit::apply_edit(&def, "test", edit)
        else {
            panic!("the expression is refused");
        };
        let placed = place_errors(&errors, 1, &form);
        let success = placed.gates_before.check(1).success.unwrap();
        assert!(success.contains("column"), "{success}");
        assert!(placed.general.is_empty(), "{:?}", placed.general);
    }

    #[test]
    fn the_page_offers_one_blank_check_per_gate() {
        let def = everything();
        let mut f = form_of(def.stage("staging").unwrap(), 1);
        f.gates_before.for_page();
        f.gates_after.for_page();
        assert_eq!(f.gates_before.checks.len(), 4);
        assert!(f.gates_before.checks[3].new);
        assert!(!f.gates_before.checks[2].new);
        assert_eq!(
            f.gates_before.checks[3].key("url"),
            "gates.before.checks.3.url"
        );
        assert_eq!(
            f.gates_after.checks[0].id("on_inconclusive"),
            "gates-after-checks-0-on-inconclusive"
        );
        // Again (after an error): still one blank one.
        f.gates_before.for_page();
        assert_eq!(f.gates_before.checks.len(), 4);
    }
}
