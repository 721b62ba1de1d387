//! Turns a YAML [`Node`] tree into a [`PipelineDefinition`], checking every
//! rule of SPEC §3 and reporting each problem at its key or value.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::errors::DefinitionError;
use super::fields::{self, DurationField, WholeNumber, extension_name, is_env_name};
use super::tree::{Mark, Node, ScalarKind, Value, join_path};
use super::{
    App, ApprovalMode, ApprovalOrder, ApprovalPolicy, Approvals, Approver, BranchFilter, Build,
    CheckKind, Environment, GateCheck, GatePolicy, Gates, InconclusivePolicy, Notification,
    NotificationEvent, NotificationFormat, PipelineDefinition, QueueMode, QueuePolicy, SecretRef,
    Setting, Source, Stage, TaskKind, TaskSpec, Threshold, Trigger, Upstream, defaults,
};
use crate::domain::names::name_problem;
use crate::domain::schedule::{parse_timezone, suggest_timezone};
use crate::domain::text::edit_distance;
use crate::domain::{
    AppName, Cron, DomainError, Duration, PipelineName, Schedule, SlotName, StageName,
    VersionTemplate,
};

const TOP_KEYS: &[&str] = &[
    "pipeline",
    "description",
    "source",
    "version",
    "variables",
    "apps",
    "build",
    "stages",
    "notifications",
];
const SOURCE_KEYS: &[&str] = &[
    "repo",
    "branch",
    "branches",
    "secrets_for",
    "webhook_secret",
    "poll",
];
const FILTER_KEYS: &[&str] = &["include", "exclude"];
const APP_KEYS: &[&str] = &["name", "start", "health", "slots", "settings"];
const SETTING_KEYS: &[&str] = &["value", "sticky"];
const BUILD_KEYS: &[&str] = &["tasks", "artifacts"];
const STAGE_KEYS: &[&str] = &[
    "name",
    "trigger",
    "environment",
    "variables",
    "approvals",
    "gates",
    "tasks",
    "queue",
    "catch_up",
    "deployers",
];
const SCHEDULE_KEYS: &[&str] = &["cron", "timezone"];
const SLOT_REF_KEYS: &[&str] = &["app", "name"];
const APPROVALS_KEYS: &[&str] = &["before", "after", "order"];
const APPROVAL_KEYS: &[&str] = &[
    "approvers",
    "policy",
    "timeout",
    "fresh_sign_in",
    "requester_can_approve",
    "exclude_authors",
];
const GATES_KEYS: &[&str] = &["before", "after"];
const GATE_KEYS: &[&str] = &["delay", "interval", "timeout", "steady", "checks"];
const QUEUE_KEYS: &[&str] = &["parallel", "policy"];
const TASK_KINDS: &[&str] = &["shell", "http", "deploy_slot", "swap_slots", "task"];
const TASK_COMMON: &[&str] = &["name", "env", "timeout"];
const HTTP_TASK_KEYS: &[&str] = &["url", "method", "expect"];
const DEPLOY_SLOT_KEYS: &[&str] = &["app", "slot"];
const SWAP_SLOTS_KEYS: &[&str] = &["app", "from", "to"];
const CHECK_KINDS: &[&str] = &["http", "prometheus", "command", "check"];
const CHECK_COMMON: &[&str] = &["name", "consecutive_successes", "on_inconclusive"];
const HTTP_CHECK_KEYS: &[&str] = &["url", "method", "headers", "body", "timeout", "success"];
const PROMETHEUS_KEYS: &[&str] = &["server", "query", "threshold"];
const COMMAND_KEYS: &[&str] = &["run"];
const NOTIFICATION_KEYS: &[&str] = &["name", "url", "format", "secret", "events"];

/// A node together with its field path (`stages[1].trigger`).
#[derive(Clone)]
struct V<'a> {
    node: &'a Node,
    path: String,
}

/// A mapping whose keys were checked.
struct M<'a> {
    entries: &'a [(Node, Node)],
    path: String,
    mark: Mark,
}

fn key_text(node: &Node) -> &str {
    match &node.value {
        Value::Scalar { text, .. } => text,
        _ => "",
    }
}

impl<'a> M<'a> {
    /// The value of `key`, unless absent or null.
    fn get(&self, key: &str) -> Option<V<'a>> {
        self.entries
            .iter()
            .find(|(k, v)| key_text(k) == key && !v.is_null())
            .map(|(_, v)| V {
                node: v,
                path: join_path(&self.path, key),
            })
    }

    /// The key node of `key`, even with a null value.
    fn key(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _)| key_text(k) == key)
            .map(|(k, _)| k)
    }

    fn has(&self, key: &str) -> bool {
        self.key(key).is_some()
    }
}

/// The declared apps and their slots, for checking references (`None` when
/// the app's slots did not parse: references to it are not checked).
type AppTable = Vec<(AppName, Option<Vec<SlotName>>)>;

/// The stages read so far: the name as written, the parsed name, the line.
type Earlier = Vec<(String, Option<StageName>, usize)>;

/// Reads a definition tree, collecting every problem.
pub(crate) struct Reader<'f> {
    file: &'f str,
    /// Set when `apps` itself did not parse: app references are not checked.
    unchecked_apps: bool,
    pub(crate) errors: Vec<DefinitionError>,
}

fn display_field(path: &str) -> String {
    if path.is_empty() {
        "(document)".to_owned()
    } else {
        path.to_owned()
    }
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn suggestion(word: &str, options: &[&str]) -> String {
    options
        .iter()
        .map(|o| (edit_distance(word, o), *o))
        .filter(|(d, o)| *d <= 2 && *d < o.len())
        .min()
        .map(|(_, o)| format!(" (did you mean `{o}`?)"))
        .unwrap_or_default()
}

fn item<'a>(list: &V<'a>, index: usize, node: &'a Node) -> V<'a> {
    V {
        node,
        path: format!("{}[{index}]", list.path),
    }
}

impl<'f> Reader<'f> {
    pub(crate) fn new(file: &'f str) -> Self {
        Reader {
            file,
            unchecked_apps: false,
            errors: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, mark: Mark, path: &str, message: impl Into<String>) {
        self.errors.push(DefinitionError {
            file: self.file.to_owned(),
            line: mark.line.max(1),
            column: mark.column.max(1),
            field: display_field(path),
            message: message.into(),
        });
    }

    fn at(&mut self, v: &V<'_>, message: impl Into<String>) {
        let mark = v.node.mark;
        self.error(mark, &v.path, message);
    }

    /// A mapping with only `allowed` keys (unknown keys are reported at the key).
    fn map<'a>(&mut self, v: &V<'a>, what: &str, allowed: &[&str]) -> Option<M<'a>> {
        let Value::Map(entries) = &v.node.value else {
            let found = v.node.describe();
            self.at(v, format!("expected {what}, found {found}"));
            return None;
        };
        for (key, _) in entries {
            let name = key_text(key);
            if !allowed.contains(&name) {
                let hint = suggestion(name, allowed);
                self.error(
                    key.mark,
                    &join_path(&v.path, name),
                    format!(
                        "unknown field `{name}`{hint}; expected one of {}",
                        quoted_list(allowed)
                    ),
                );
            }
        }
        Some(M {
            entries,
            path: v.path.clone(),
            mark: v.node.mark,
        })
    }

    /// The value of a required key; reports a missing key at the mapping and
    /// an empty value at the key.
    fn required<'a>(&mut self, m: &M<'a>, key: &str) -> Option<V<'a>> {
        if let Some(v) = m.get(key) {
            return Some(v);
        }
        let path = join_path(&m.path, key);
        match m.key(key) {
            Some(k) => {
                let mark = k.mark;
                self.error(mark, &path, format!("`{key}` needs a value"));
            }
            None => self.error(m.mark, &path, format!("missing required field `{key}`")),
        }
        None
    }

    /// A scalar as text (numbers and booleans are taken as written).
    fn text(&mut self, v: &V<'_>, what: &str) -> Option<String> {
        match &v.node.value {
            Value::Scalar { text, kind } if *kind != ScalarKind::Null => Some(text.clone()),
            _ => {
                let found = v.node.describe();
                self.at(v, format!("expected {what}, found {found}"));
                None
            }
        }
    }

    /// A non-empty scalar as text.
    fn non_empty(&mut self, v: &V<'_>, what: &str) -> Option<String> {
        let text = self.text(v, what)?;
        if text.trim().is_empty() {
            self.at(v, format!("expected {what}, found an empty string"));
            None
        } else {
            Some(text)
        }
    }

    /// A scalar parsed by a domain constructor; its error message is reported.
    fn parsed<T>(
        &mut self,
        v: &V<'_>,
        what: &str,
        parse: impl FnOnce(&str) -> Result<T, DomainError>,
    ) -> Option<T> {
        let text = self.text(v, what)?;
        match parse(&text) {
            Ok(value) => Some(value),
            Err(e) => {
                self.at(v, e.to_string());
                None
            }
        }
    }

    fn duration(&mut self, v: &V<'_>) -> Option<Duration> {
        self.parsed(
            v,
            "a duration such as `30s`, `5m`, `2h` or `7d`",
            Duration::parse,
        )
    }

    fn opt_duration(&mut self, m: &M<'_>, key: &str, field: DurationField) -> Duration {
        m.get(key)
            .and_then(|v| self.duration(&v))
            .unwrap_or(field.default)
    }

    fn boolean(&mut self, v: &V<'_>) -> Option<bool> {
        match &v.node.value {
            Value::Scalar {
                text,
                kind: ScalarKind::Bool,
            } => Some(text.eq_ignore_ascii_case("true")),
            _ => {
                let found = v.node.describe();
                self.at(v, format!("expected `true` or `false`, found {found}"));
                None
            }
        }
    }

    fn opt_bool(&mut self, m: &M<'_>, key: &str) -> bool {
        m.get(key).and_then(|v| self.boolean(&v)).unwrap_or(false)
    }

    /// A whole number within the field's bounds.
    fn whole(&mut self, v: &V<'_>, field: WholeNumber) -> Option<u32> {
        let value = match &v.node.value {
            Value::Scalar {
                text,
                kind: ScalarKind::Int,
            } => text.parse::<u64>().ok(),
            _ => {
                let found = v.node.describe();
                self.at(v, format!("expected a whole number, found {found}"));
                return None;
            }
        };
        match value.and_then(|n| field.check(n)) {
            Some(n) => Some(n),
            None => {
                let (min, max) = (field.min, field.max);
                self.at(v, format!("expected a whole number from {min} to {max}"));
                None
            }
        }
    }

    /// One of a fixed set of words.
    fn choice<T: Copy>(&mut self, v: &V<'_>, what: &str, options: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        let expected = format!("expected one of {}", quoted_list(&names));
        let text = self.text(v, what)?;
        match options.iter().find(|(n, _)| *n == text) {
            Some((_, value)) => Some(*value),
            None => {
                let hint = suggestion(&text, &names);
                self.at(v, format!("unknown {what} `{text}`{hint}; {expected}"));
                None
            }
        }
    }

    fn list<'a>(&mut self, v: &V<'a>, what: &str) -> Option<Vec<V<'a>>> {
        match &v.node.value {
            Value::Seq(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, node)| item(v, i, node))
                    .collect(),
            ),
            _ => {
                let found = v.node.describe();
                self.at(v, format!("expected a list of {what}, found {found}"));
                None
            }
        }
    }

    fn text_list(&mut self, v: &V<'_>, what: &str) -> Vec<String> {
        self.list(v, what)
            .unwrap_or_default()
            .iter()
            .filter_map(|item| self.non_empty(item, what))
            .collect()
    }

    /// A mapping of environment-variable names to text values.
    fn env_map(&mut self, v: &V<'_>, what: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Value::Map(entries) = &v.node.value else {
            let found = v.node.describe();
            self.at(v, format!("expected a mapping of {what}, found {found}"));
            return out;
        };
        for (key, value) in entries {
            let name = key_text(key).to_owned();
            let path = join_path(&v.path, &name);
            if !is_env_name(&name) {
                self.error(
                    key.mark,
                    &path,
                    format!("invalid name `{name}`: use letters, digits and `_`, not starting with a digit"),
                );
                continue;
            }
            let value = V { node: value, path };
            if value.node.is_null() {
                out.insert(name, String::new());
            } else if let Some(text) = self.text(&value, "a text value") {
                out.insert(name, text);
            }
        }
        out
    }

    /// Any YAML value as JSON (extension input).
    fn json(&mut self, v: &V<'_>) -> serde_json::Value {
        use serde_json::Value as J;
        match &v.node.value {
            Value::Scalar { text, kind } => match kind {
                ScalarKind::Null => J::Null,
                ScalarKind::Bool => J::Bool(text.eq_ignore_ascii_case("true")),
                ScalarKind::Int => {
                    if let Ok(n) = text.parse::<i64>() {
                        J::from(n)
                    } else if let Ok(n) = text.parse::<u64>() {
                        J::from(n)
                    } else {
                        J::String(text.clone())
                    }
                }
                ScalarKind::Float => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(J::Number)
                    .unwrap_or_else(|| J::String(text.clone())),
                ScalarKind::Str => J::String(text.clone()),
            },
            Value::Seq(items) => J::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, node)| self.json(&item(v, i, node)))
                    .collect(),
            ),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, node)| {
                        let key = key_text(k).to_owned();
                        let value = self.json(&V {
                            node,
                            path: join_path(&v.path, &key),
                        });
                        (key, value)
                    })
                    .collect(),
            ),
        }
    }

    // ----- the definition ------------------------------------------------

    pub(crate) fn definition(&mut self, root: &Node) -> Option<PipelineDefinition> {
        let root = V {
            node: root,
            path: String::new(),
        };
        let m = self.map(
            &root,
            "a pipeline definition (a mapping with `pipeline`, `source`, `version` and `stages`)",
            TOP_KEYS,
        )?;
        let pipeline = self
            .required(&m, "pipeline")
            .and_then(|v| self.parsed(&v, "a pipeline name", PipelineName::from_str));
        let description = m
            .get("description")
            .and_then(|v| self.text(&v, "a description"));
        let source = self.required(&m, "source").and_then(|v| self.source(&v));
        let version = self.required(&m, "version").and_then(|v| {
            self.parsed(
                &v,
                "a version template such as `1.0.{build}`",
                VersionTemplate::from_str,
            )
        });
        let variables = m
            .get("variables")
            .map(|v| self.env_map(&v, "variables"))
            .unwrap_or_default();
        let (apps, table) = m.get("apps").map(|v| self.apps(&v)).unwrap_or_default();
        let build = match m.get("build") {
            Some(v) => self.build(&v, &table),
            None => Some(Build::default()),
        };
        let stages = self
            .required(&m, "stages")
            .and_then(|v| self.stages(&v, &table));
        let notifications = match m.get("notifications") {
            Some(v) => self.notifications(&v),
            None => Some(Vec::new()),
        };
        Some(PipelineDefinition {
            pipeline: pipeline?,
            description,
            source: source?,
            version: version?,
            variables,
            apps,
            build: build?,
            stages: stages?,
            notifications: notifications?,
        })
    }

    fn source(&mut self, v: &V<'_>) -> Option<Source> {
        let m = self.map(
            v,
            "a source mapping such as `{ repo: ./app, branch: main }`",
            SOURCE_KEYS,
        )?;
        let repo = self
            .required(&m, "repo")
            .and_then(|v| self.non_empty(&v, "a repository URL or path"));
        let branch = match m.get("branch") {
            Some(v) => self.branch_name(&v),
            None => Some(defaults::BRANCH.to_owned()),
        };
        let branches = m
            .get("branches")
            .map(|v| self.branch_filter(&v))
            .unwrap_or_default();
        let secrets_for = m.get("secrets_for").map(|v| {
            if matches!(v.node.value, Value::Seq(_)) {
                self.text_list(&v, "branch patterns")
            } else {
                self.at(
                    &v,
                    "`secrets_for` is a list of branch patterns such as `[main]`",
                );
                Vec::new()
            }
        });
        let webhook_secret = m.get("webhook_secret").and_then(|v| {
            self.parsed(
                &v,
                "a secret reference `${{ secrets.NAME }}`",
                SecretRef::parse,
            )
        });
        let poll = match m.get("poll") {
            Some(v) => match self.duration(&v) {
                Some(d) if d.is_zero() => {
                    self.at(&v, "the poll interval must be at least 1s");
                    None
                }
                d => d,
            },
            None => None,
        };
        Some(Source {
            repo: repo?,
            branch: branch?,
            branches,
            secrets_for,
            webhook_secret,
            poll,
        })
    }

    fn branch_name(&mut self, v: &V<'_>) -> Option<String> {
        let name = self.non_empty(v, "a branch name")?;
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.at(
                v,
                format!("invalid branch name `{name}`: it must not contain spaces"),
            );
            return None;
        }
        Some(name)
    }

    fn branch_filter(&mut self, v: &V<'_>) -> BranchFilter {
        if matches!(v.node.value, Value::Seq(_)) {
            return BranchFilter {
                include: self.text_list(v, "branch patterns"),
                exclude: Vec::new(),
            };
        }
        let Some(m) = self.map(
            v,
            "a branch filter `{ include: [...], exclude: [...] }`",
            FILTER_KEYS,
        ) else {
            return BranchFilter::default();
        };
        let include = m
            .get("include")
            .map(|v| self.text_list(&v, "branch patterns"))
            .unwrap_or_default();
        let exclude = m
            .get("exclude")
            .map(|v| self.text_list(&v, "branch patterns"))
            .unwrap_or_default();
        BranchFilter { include, exclude }
    }

    fn apps(&mut self, v: &V<'_>) -> (Vec<App>, AppTable) {
        if !matches!(v.node.value, Value::Seq(_)) {
            self.unchecked_apps = true;
        }
        let mut apps: Vec<App> = Vec::new();
        let mut table: AppTable = Vec::new();
        let mut seen: Vec<(AppName, usize)> = Vec::new();
        for item in self.list(v, "apps").unwrap_or_default() {
            let Some(m) = self.map(
                &item,
                "an app mapping with `name`, `start` and `slots`",
                APP_KEYS,
            ) else {
                continue;
            };
            let name_v = self.required(&m, "name");
            let name = name_v
                .as_ref()
                .and_then(|v| self.parsed(v, "an app name", AppName::from_str));
            if let (Some(name), Some(name_v)) = (&name, &name_v) {
                if let Some((_, line)) = seen.iter().find(|(n, _)| n == name) {
                    let line = *line;
                    self.at(
                        name_v,
                        format!("duplicate app name `{name}` (first declared on line {line})"),
                    );
                } else {
                    seen.push((name.clone(), name_v.node.mark.line));
                }
            }
            let start = self
                .required(&m, "start")
                .and_then(|v| self.non_empty(&v, "a start command"));
            let health = match m.get("health") {
                Some(v) => self
                    .non_empty(&v, "a health-check path such as `/health`")
                    .and_then(|h| {
                        if h.starts_with('/') {
                            Some(h)
                        } else {
                            self.at(
                                &v,
                                format!("the health check `{h}` must be a path starting with `/`"),
                            );
                            None
                        }
                    }),
                None => Some(defaults::HEALTH.to_owned()),
            };
            let slots = self.required(&m, "slots").and_then(|v| self.slots(&v));
            if let Some(name) = &name
                && !table.iter().any(|(n, _)| n == name)
            {
                table.push((name.clone(), slots.clone()));
            }
            let settings = m
                .get("settings")
                .map(|v| self.settings(&v))
                .unwrap_or_default();
            if let (Some(name), Some(start), Some(health), Some(slots)) =
                (name, start, health, slots)
            {
                apps.push(App {
                    name,
                    start,
                    health,
                    slots,
                    settings,
                });
            }
        }
        (apps, table)
    }

    fn slots(&mut self, v: &V<'_>) -> Option<Vec<SlotName>> {
        let items = self.list(v, "slot names")?;
        if items.is_empty() {
            self.at(v, "an app needs at least one slot");
            return None;
        }
        let mut slots: Vec<SlotName> = Vec::new();
        let mut ok = true;
        for item in items {
            match self.parsed(&item, "a slot name", SlotName::from_str) {
                Some(slot) if slots.contains(&slot) => {
                    self.at(&item, format!("duplicate slot name `{slot}`"));
                    ok = false;
                }
                Some(slot) => slots.push(slot),
                None => ok = false,
            }
        }
        ok.then_some(slots)
    }

    fn settings(&mut self, v: &V<'_>) -> BTreeMap<String, Setting> {
        let mut out = BTreeMap::new();
        let Value::Map(entries) = &v.node.value else {
            let found = v.node.describe();
            self.at(v, format!("expected a mapping of settings, found {found}"));
            return out;
        };
        for (key, node) in entries {
            let name = key_text(key).to_owned();
            let value = V {
                node,
                path: join_path(&v.path, &name),
            };
            if !is_env_name(&name) {
                self.error(
                    key.mark,
                    &value.path,
                    format!("invalid setting name `{name}`: use letters, digits and `_`, not starting with a digit"),
                );
                continue;
            }
            let setting = match &node.value {
                Value::Map(_) => self
                    .map(
                        &value,
                        "a setting `{ value: ..., sticky: true }`",
                        SETTING_KEYS,
                    )
                    .and_then(|m| {
                        let text = match m.get("value") {
                            Some(v) => self.text(&v, "a text value"),
                            None if m.has("value") => Some(String::new()),
                            None => self.required(&m, "value").and(None),
                        };
                        let sticky = self.opt_bool(&m, "sticky");
                        text.map(|value| Setting { value, sticky })
                    }),
                Value::Scalar {
                    kind: ScalarKind::Null,
                    ..
                } => Some(Setting {
                    value: String::new(),
                    sticky: false,
                }),
                _ => self
                    .text(&value, "a text value or `{ value, sticky }`")
                    .map(|value| Setting {
                        value,
                        sticky: false,
                    }),
            };
            if let Some(setting) = setting {
                out.insert(name, setting);
            }
        }
        out
    }

    fn build(&mut self, v: &V<'_>, apps: &AppTable) -> Option<Build> {
        let m = self.map(
            v,
            "a build mapping with `tasks` and `artifacts`",
            BUILD_KEYS,
        )?;
        let tasks = m
            .get("tasks")
            .map(|v| self.tasks(&v, apps))
            .unwrap_or(Some(Vec::new()));
        let artifacts = m
            .get("artifacts")
            .map(|v| self.text_list(&v, "artifact globs"))
            .unwrap_or_default();
        Some(Build {
            tasks: tasks?,
            artifacts,
        })
    }

    fn stages(&mut self, v: &V<'_>, apps: &AppTable) -> Option<Vec<Stage>> {
        let items = self.list(v, "stages")?;
        if items.is_empty() {
            self.at(v, "a pipeline needs at least one stage");
            return None;
        }
        let mut stages = Vec::new();
        let mut earlier: Earlier = Vec::new();
        let mut ok = true;
        for item in items {
            match self.stage(&item, apps, &mut earlier) {
                Some(stage) => stages.push(stage),
                None => ok = false,
            }
        }
        ok.then_some(stages)
    }

    fn stage(&mut self, v: &V<'_>, apps: &AppTable, earlier: &mut Earlier) -> Option<Stage> {
        let m = self.map(v, "a stage mapping with at least `name`", STAGE_KEYS)?;
        let name_v = self.required(&m, "name");
        let mut name = name_v
            .as_ref()
            .and_then(|v| self.parsed(v, "a stage name", StageName::from_str));
        if let (Some(n), Some(name_v)) = (&name, &name_v) {
            if n.as_str() == "build" {
                self.at(
                    name_v,
                    "`build` is reserved for the build; choose another stage name",
                );
                name = None;
            } else if let Some((_, _, line)) =
                earlier.iter().find(|(_, e, _)| e.as_ref() == Some(n))
            {
                let line = *line;
                self.at(
                    name_v,
                    format!("duplicate stage name `{n}` (first declared on line {line})"),
                );
                name = None;
            }
        }
        let trigger = match m.get("trigger") {
            Some(t) => self.trigger(&t, name.as_ref(), earlier),
            None => Some(Trigger::Manual),
        };
        if let Some(name_v) = &name_v
            && let Value::Scalar { text, .. } = &name_v.node.value
        {
            earlier.push((text.clone(), name.clone(), name_v.node.mark.line));
        }
        let environment = match m.get("environment") {
            Some(e) => self.environment(&e, apps).map(Some),
            None => Some(None),
        };
        let variables = m
            .get("variables")
            .map(|v| self.env_map(&v, "variables"))
            .unwrap_or_default();
        let approvals = match m.get("approvals") {
            Some(a) => self.approvals(&a),
            None => Some(Approvals::default()),
        };
        let gates = match m.get("gates") {
            Some(g) => self.gates(&g),
            None => Some(Gates::default()),
        };
        let tasks = match m.get("tasks") {
            Some(t) => self.tasks(&t, apps),
            None => Some(Vec::new()),
        };
        let queue = match m.get("queue") {
            Some(q) => self.queue(&q),
            None => Some(QueuePolicy::default()),
        };
        let catch_up = self.opt_bool(&m, "catch_up");
        let deployers = match m.get("deployers") {
            Some(d) => self.approvers(&d, "deployers", false),
            None => Some(Vec::new()),
        };
        Some(Stage {
            name: name?,
            trigger: trigger?,
            environment: environment?,
            variables,
            approvals: approvals?,
            gates: gates?,
            tasks: tasks?,
            queue: queue?,
            catch_up,
            deployers: deployers?,
        })
    }

    fn trigger(
        &mut self,
        v: &V<'_>,
        stage: Option<&StageName>,
        earlier: &Earlier,
    ) -> Option<Trigger> {
        const EXPECTED: &str = "expected `manual`, `{ after: build }`, `{ after: STAGE }` or `{ schedule: { cron: \"0 0 3 * * *\", timezone: \"UTC\" } }`";
        match &v.node.value {
            Value::Scalar { text, .. } if text == "manual" => Some(Trigger::Manual),
            Value::Scalar { text, .. } => {
                self.at(v, format!("unknown trigger `{text}`; {EXPECTED}"));
                None
            }
            Value::Seq(_) => {
                self.at(v, format!("expected a trigger, found a list; {EXPECTED}"));
                None
            }
            Value::Map(entries) => {
                if entries.is_empty() {
                    self.at(v, format!("empty trigger; {EXPECTED}"));
                    return None;
                }
                let has_after = entries.iter().any(|(k, _)| key_text(k) == "after");
                let has_schedule = entries.iter().any(|(k, _)| key_text(k) == "schedule");
                if has_after && has_schedule {
                    if let Some((k, _)) = entries.iter().find(|(k, _)| key_text(k) == "schedule") {
                        self.error(
                            k.mark,
                            &join_path(&v.path, "schedule"),
                            "a trigger is either `after` or `schedule`, not both",
                        );
                    }
                    return None;
                }
                if has_schedule {
                    let m = self.map(v, "a trigger", &["schedule"])?;
                    let s = self.required(&m, "schedule")?;
                    return self.schedule(&s).map(Trigger::Schedule);
                }
                if has_after {
                    let m = self.map(v, "a trigger", &["after", "branches"])?;
                    let branches = m
                        .get("branches")
                        .map(|b| self.branch_filter(&b))
                        .unwrap_or_default();
                    let after = self.required(&m, "after")?;
                    let upstream = self.upstream(&after, stage, earlier)?;
                    return Some(Trigger::After { upstream, branches });
                }
                let Some((first_key, _)) = entries.iter().find(|(k, _)| key_text(k) != "branches")
                else {
                    self.at(v, "`branches` filters an `after` trigger; add `after: build` or `after: STAGE`");
                    return None;
                };
                let name = key_text(first_key);
                let hint = suggestion(name, &["after", "schedule", "manual"]);
                self.error(
                    first_key.mark,
                    &join_path(&v.path, name),
                    format!("unknown trigger `{name}`{hint}; {EXPECTED}"),
                );
                None
            }
        }
    }

    fn upstream(
        &mut self,
        v: &V<'_>,
        stage: Option<&StageName>,
        earlier: &Earlier,
    ) -> Option<Upstream> {
        let text = self.non_empty(v, "`build` or the name of an earlier stage")?;
        if text == "build" {
            return Some(Upstream::Build);
        }
        if let Some((_, parsed, _)) = earlier.iter().find(|(raw, _, _)| *raw == text) {
            // An earlier stage whose own name is invalid was reported already.
            return parsed.clone().map(Upstream::Stage);
        }
        let names: Vec<&str> = earlier
            .iter()
            .filter_map(|(_, parsed, _)| parsed.as_ref().map(StageName::as_str))
            .collect();
        let candidates = if earlier.is_empty() {
            "`build` (this is the first stage)".to_owned()
        } else {
            format!("`build` or an earlier stage: {}", quoted_list(&names))
        };
        let message = if stage.is_some_and(|s| s.as_str() == text) {
            format!("a stage cannot be triggered after itself; expected {candidates}")
        } else {
            format!("`{text}` is not a stage that comes before this one; expected {candidates}")
        };
        self.at(v, message);
        None
    }

    fn schedule(&mut self, v: &V<'_>) -> Option<Schedule> {
        let m = self.map(
            v,
            "a schedule `{ cron: \"0 0 3 * * *\", timezone: \"UTC\" }`",
            SCHEDULE_KEYS,
        )?;
        let cron = self
            .required(&m, "cron")
            .and_then(|c| self.parsed(&c, "a six-field cron expression", Cron::parse));
        let timezone = match m.get("timezone") {
            Some(t) => {
                let text = self.non_empty(&t, "an IANA time zone such as `Europe/Berlin`");
                text.and_then(|name| match parse_timezone(&name) {
                    Ok(tz) => Some(tz),
                    Err(e) => {
                        let hint = suggest_timezone(&name)
                            .map(|s| format!(" (did you mean `{s}`?)"))
                            .unwrap_or_default();
                        self.at(&t, format!("{e}{hint}"));
                        None
                    }
                })
            }
            None => Some(chrono_tz::UTC),
        };
        Some(Schedule {
            cron: cron?,
            timezone: timezone?,
        })
    }

    fn environment(&mut self, v: &V<'_>, apps: &AppTable) -> Option<Environment> {
        const EXPECTED: &str =
            "expected `host`, `{ agent: NAME }` or `{ slot: { app: APP, name: SLOT } }`";
        match &v.node.value {
            Value::Scalar { text, .. } if text == "host" => Some(Environment::Host),
            Value::Scalar { text, .. } => {
                self.at(v, format!("unknown environment `{text}`; {EXPECTED}"));
                None
            }
            Value::Seq(_) => {
                self.at(
                    v,
                    format!("expected an environment, found a list; {EXPECTED}"),
                );
                None
            }
            Value::Map(entries) => {
                let kinds = ["host", "agent", "slot"];
                let Some((first_key, _)) = entries.first() else {
                    self.at(v, format!("empty environment; {EXPECTED}"));
                    return None;
                };
                let kind = key_text(first_key);
                if !kinds.contains(&kind) {
                    let hint = suggestion(kind, &kinds);
                    self.error(
                        first_key.mark,
                        &join_path(&v.path, kind),
                        format!("unknown environment `{kind}`{hint}; {EXPECTED}"),
                    );
                    return None;
                }
                let m = self.map(v, "an environment", &[kind])?;
                match kind {
                    "host" => {
                        let h = self.required(&m, "host")?;
                        self.boolean(&h)?.then_some(Environment::Host).or_else(|| {
                            self.at(&h, EXPECTED);
                            None
                        })
                    }
                    "agent" => {
                        let a = self.required(&m, "agent")?;
                        let name = self.non_empty(&a, "an agent name")?;
                        if name.chars().any(char::is_whitespace) {
                            self.at(
                                &a,
                                format!("invalid agent name `{name}`: it must not contain spaces"),
                            );
                            return None;
                        }
                        Some(Environment::Agent { name })
                    }
                    _ => {
                        let s = self.required(&m, "slot")?;
                        let sm =
                            self.map(&s, "a slot `{ app: APP, name: SLOT }`", SLOT_REF_KEYS)?;
                        let app_v = self.required(&sm, "app");
                        let slot_v = self.required(&sm, "name");
                        let (app, name) = self.app_slot(apps, app_v.as_ref(), slot_v.as_ref())?;
                        Some(Environment::Slot { app, name })
                    }
                }
            }
        }
    }

    /// Checks that `app` is declared and `slot` is one of its slots.
    fn app_slot(
        &mut self,
        apps: &AppTable,
        app_v: Option<&V<'_>>,
        slot_v: Option<&V<'_>>,
    ) -> Option<(AppName, SlotName)> {
        let app = app_v.and_then(|v| self.parsed(v, "an app name", AppName::from_str));
        let slot = slot_v.and_then(|v| self.parsed(v, "a slot name", SlotName::from_str));
        let (app, slot, app_v, slot_v) = (app?, slot?, app_v?, slot_v?);
        let Some((_, slots)) = apps.iter().find(|(name, _)| *name == app) else {
            if self.unchecked_apps {
                return None;
            }
            let message = if apps.is_empty() {
                format!("unknown app `{app}`: no apps are declared under `apps`")
            } else {
                let names: Vec<&str> = apps.iter().map(|(n, _)| n.as_str()).collect();
                format!(
                    "unknown app `{app}`; declared apps: {}",
                    quoted_list(&names)
                )
            };
            self.at(app_v, message);
            return None;
        };
        let Some(slots) = slots else {
            // The app's slots are already reported as invalid.
            return None;
        };
        if !slots.contains(&slot) {
            let names: Vec<&str> = slots.iter().map(SlotName::as_str).collect();
            self.at(
                slot_v,
                format!(
                    "app `{app}` has no slot `{slot}`; its slots: {}",
                    quoted_list(&names)
                ),
            );
            return None;
        }
        Some((app, slot))
    }

    fn approvals(&mut self, v: &V<'_>) -> Option<Approvals> {
        let m = self.map(
            v,
            "approvals `{ before: {...}, after: {...} }`",
            APPROVALS_KEYS,
        )?;
        let before = match m.get("before") {
            Some(b) => self.approval_policy(&b).map(Some),
            None => Some(None),
        };
        let after = match m.get("after") {
            Some(a) => self.approval_policy(&a).map(Some),
            None => Some(None),
        };
        let order = match m.get("order") {
            Some(o) => self.choice(&o, "approval order", ApprovalOrder::WORDS),
            None => Some(ApprovalOrder::default()),
        };
        Some(Approvals {
            before: before?,
            after: after?,
            order: order?,
        })
    }

    fn approvers(&mut self, v: &V<'_>, what: &str, required: bool) -> Option<Vec<Approver>> {
        let items = self.list(v, what)?;
        if required && items.is_empty() {
            self.at(
                v,
                "at least one approver is needed (a user name or `group:NAME`)",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.parsed(&item, "a user name or `group:NAME`", Approver::parse) {
                Some(a) => out.push(a),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn approval_policy(&mut self, v: &V<'_>) -> Option<ApprovalPolicy> {
        let m = self.map(v, "an approval policy with `approvers`", APPROVAL_KEYS)?;
        let approvers = self
            .required(&m, "approvers")
            .and_then(|a| self.approvers(&a, "approvers", true));
        let policy = match m.get("policy") {
            Some(p) => self.approval_mode(&p),
            None => Some(ApprovalMode::Any),
        };
        let timeout = match m.get("timeout") {
            Some(t) => self.duration(&t).and_then(|d| {
                if fields::APPROVAL_TIMEOUT.accepts(d) {
                    Some(d)
                } else {
                    self.at(&t, "the approval timeout must be longer than 0s");
                    None
                }
            }),
            None => Some(fields::APPROVAL_TIMEOUT.default),
        };
        let fresh_sign_in = match m.get("fresh_sign_in") {
            Some(f) => self.duration(&f).map(Some),
            None => Some(None),
        };
        let requester_can_approve = self.opt_bool(&m, "requester_can_approve");
        let exclude_authors = self.opt_bool(&m, "exclude_authors");
        Some(ApprovalPolicy {
            approvers: approvers?,
            policy: policy?,
            timeout: timeout?,
            fresh_sign_in: fresh_sign_in?,
            requester_can_approve,
            exclude_authors,
        })
    }

    fn approval_mode(&mut self, v: &V<'_>) -> Option<ApprovalMode> {
        match &v.node.value {
            Value::Map(_) => {
                let m = self.map(v, "`{ n: NUMBER }`", &["n"])?;
                let n = self.required(&m, "n")?;
                self.whole(&n, fields::APPROVALS_NEEDED)
                    .map(ApprovalMode::AtLeast)
            }
            _ => {
                let text = self.text(v, "an approval policy `any`, `all` or `{ n: NUMBER }`")?;
                match text.as_str() {
                    "any" => Some(ApprovalMode::Any),
                    "all" => Some(ApprovalMode::All),
                    other => {
                        self.at(
                            v,
                            format!("unknown approval policy `{other}`; expected `any`, `all` or `{{ n: NUMBER }}`"),
                        );
                        None
                    }
                }
            }
        }
    }

    fn gates(&mut self, v: &V<'_>) -> Option<Gates> {
        let m = self.map(v, "gates `{ before: {...}, after: {...} }`", GATES_KEYS)?;
        let before = match m.get("before") {
            Some(b) => self.gate_policy(&b).map(Some),
            None => Some(None),
        };
        let after = match m.get("after") {
            Some(a) => self.gate_policy(&a).map(Some),
            None => Some(None),
        };
        Some(Gates {
            before: before?,
            after: after?,
        })
    }

    fn gate_policy(&mut self, v: &V<'_>) -> Option<GatePolicy> {
        let m = self.map(v, "a gate with `checks`", GATE_KEYS)?;
        let delay = self.opt_duration(&m, "delay", fields::GATE_DELAY);
        let positive = |r: &mut Self, key: &str, field: DurationField| match m.get(key) {
            Some(x) => r.duration(&x).and_then(|d| {
                if field.accepts(d) {
                    Some(d)
                } else {
                    r.at(&x, format!("`{key}` must be longer than 0s"));
                    None
                }
            }),
            None => Some(field.default),
        };
        let interval = positive(self, "interval", fields::GATE_INTERVAL);
        let timeout = positive(self, "timeout", fields::GATE_TIMEOUT);
        let steady = self.opt_duration(&m, "steady", fields::GATE_STEADY);
        let checks = self.required(&m, "checks").and_then(|c| {
            let items = self.list(&c, "checks")?;
            if items.is_empty() {
                self.at(&c, "a gate needs at least one check");
                return None;
            }
            let mut out = Vec::new();
            let mut ok = true;
            for item in items {
                match self.check(&item) {
                    Some(check) => out.push(check),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        });
        Some(GatePolicy {
            delay,
            interval: interval?,
            timeout: timeout?,
            steady,
            checks: checks?,
        })
    }

    /// Finds the one kind key of a task or check; reports none or several.
    fn kind_key<'a>(
        &mut self,
        v: &V<'a>,
        what: &str,
        kinds: &[&str],
        common: &[&str],
    ) -> Option<&'a str> {
        let Value::Map(entries) = &v.node.value else {
            let found = v.node.describe();
            self.at(
                v,
                format!(
                    "expected a {what} mapping such as `{{ {}: ... }}`, found {found}",
                    kinds[0]
                ),
            );
            return None;
        };
        let expected = format!("expected one of {}", kinds.join(", "));
        let mut found: Vec<&Node> = entries
            .iter()
            .map(|(k, _)| k)
            .filter(|k| kinds.contains(&key_text(k)))
            .collect();
        match found.len() {
            0 => {
                match entries
                    .iter()
                    .find(|(k, _)| !common.contains(&key_text(k)) && key_text(k) != "with")
                {
                    Some((k, _)) => {
                        let name = key_text(k);
                        let hint = suggestion(name, kinds);
                        self.error(
                            k.mark,
                            &join_path(&v.path, name),
                            format!("unknown {what} kind `{name}`{hint}; {expected}"),
                        );
                    }
                    None => self.at(v, format!("missing {what} kind; {expected}")),
                }
                None
            }
            1 => found.pop().map(key_text),
            _ => {
                let (first, second) = (key_text(found[0]), key_text(found[1]));
                self.error(
                    found[1].mark,
                    &join_path(&v.path, second),
                    format!(
                        "a {what} has exactly one kind, but both `{first}` and `{second}` are given"
                    ),
                );
                None
            }
        }
    }

    fn tasks(&mut self, v: &V<'_>, apps: &AppTable) -> Option<Vec<TaskSpec>> {
        let items = self.list(v, "tasks")?;
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.task(&item, apps) {
                Some(task) => out.push(task),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn task(&mut self, v: &V<'_>, apps: &AppTable) -> Option<TaskSpec> {
        let kind = self.kind_key(v, "task", TASK_KINDS, TASK_COMMON)?;
        let mut allowed: Vec<&str> = TASK_COMMON.to_vec();
        allowed.push(kind);
        if kind == "task" {
            allowed.push("with");
        }
        let m = self.map(v, "a task", &allowed)?;
        let name = m.get("name").and_then(|n| self.text(&n, "a task name"));
        let env = m
            .get("env")
            .map(|e| self.env_map(&e, "environment variables"))
            .unwrap_or_default();
        let timeout = match m.get("timeout") {
            Some(t) => self.duration(&t).map(Some),
            None => Some(None),
        };
        let body = self.required(&m, kind)?;
        let kind = match kind {
            "shell" => self
                .non_empty(&body, "a shell script")
                .map(|script| TaskKind::Shell { script }),
            "http" => self.http_task(&body),
            "deploy_slot" => {
                let dm = self.map(&body, "`{ app: APP, slot: SLOT }`", DEPLOY_SLOT_KEYS)?;
                let app_v = self.required(&dm, "app");
                let slot_v = self.required(&dm, "slot");
                self.app_slot(apps, app_v.as_ref(), slot_v.as_ref())
                    .map(|(app, slot)| TaskKind::DeploySlot { app, slot })
            }
            "swap_slots" => {
                let sm = self.map(
                    &body,
                    "`{ app: APP, from: SLOT, to: SLOT }`",
                    SWAP_SLOTS_KEYS,
                )?;
                let app_v = self.required(&sm, "app");
                let from_v = self.required(&sm, "from");
                let to_v = self.required(&sm, "to");
                let from = self.app_slot(apps, app_v.as_ref(), from_v.as_ref());
                let to = self.app_slot(apps, app_v.as_ref(), to_v.as_ref());
                match (from, to, to_v) {
                    (Some((app, from)), Some((_, to)), Some(to_v)) => {
                        if from == to {
                            self.at(&to_v, format!("cannot swap slot `{from}` with itself"));
                            None
                        } else {
                            Some(TaskKind::SwapSlots { app, from, to })
                        }
                    }
                    _ => None,
                }
            }
            _ => {
                let name = self.parsed(&body, "an extension name", |text| {
                    extension_name(text, "task")
                });
                let with = m
                    .get("with")
                    .map(|w| self.json(&w))
                    .unwrap_or_else(empty_object);
                name.map(|name| TaskKind::Extension { name, with })
            }
        };
        Some(TaskSpec {
            name,
            kind: kind?,
            env,
            timeout: timeout?,
        })
    }

    fn http_method(&mut self, m: &M<'_>) -> Option<String> {
        match m.get("method") {
            Some(v) => {
                let text = self.non_empty(&v, "an HTTP method such as GET")?;
                let method = fields::http_method(&text);
                if method.is_none() {
                    self.at(&v, format!("invalid HTTP method `{text}`"));
                }
                method
            }
            None => Some(defaults::HTTP_METHOD.to_owned()),
        }
    }

    fn url(&mut self, m: &M<'_>, key: &str) -> Option<String> {
        let v = self.required(m, key)?;
        let url = self.non_empty(&v, "a URL")?;
        if fields::is_http_url(&url) {
            Some(url)
        } else {
            self.at(
                &v,
                format!("invalid URL `{url}`: it must start with http:// or https://"),
            );
            None
        }
    }

    fn http_task(&mut self, v: &V<'_>) -> Option<TaskKind> {
        let m = self.map(
            v,
            "`{ url: URL, method: GET, expect: 200 }`",
            HTTP_TASK_KEYS,
        )?;
        let url = self.url(&m, "url");
        let method = self.http_method(&m);
        let expect_status = match m.get("expect") {
            Some(e) => self
                .whole(&e, fields::HTTP_EXPECT)
                .and_then(|n| u16::try_from(n).ok()),
            None => Some(defaults::HTTP_EXPECT),
        };
        Some(TaskKind::Http {
            method: method?,
            url: url?,
            expect_status: expect_status?,
        })
    }

    fn check(&mut self, v: &V<'_>) -> Option<GateCheck> {
        let kind = self.kind_key(v, "check", CHECK_KINDS, CHECK_COMMON)?;
        let mut allowed: Vec<&str> = CHECK_COMMON.to_vec();
        allowed.push(kind);
        if kind == "check" {
            allowed.push("with");
        }
        let m = self.map(v, "a check", &allowed)?;
        let name = m.get("name").and_then(|n| self.text(&n, "a check name"));
        let consecutive_successes = match m.get("consecutive_successes") {
            Some(c) => self.whole(&c, fields::CONSECUTIVE_SUCCESSES),
            None => Some(1),
        };
        let on_inconclusive = match m.get("on_inconclusive") {
            Some(o) => self.choice(&o, "inconclusive policy", InconclusivePolicy::WORDS),
            None => Some(InconclusivePolicy::Fail),
        };
        let body = self.required(&m, kind)?;
        let kind = match kind {
            "http" => {
                let hm = self.map(
                    &body,
                    "`{ url: URL, success: EXPRESSION }`",
                    HTTP_CHECK_KEYS,
                )?;
                let url = self.url(&hm, "url");
                let method = self.http_method(&hm);
                let headers = hm
                    .get("headers")
                    .map(|h| self.header_map(&h))
                    .unwrap_or_default();
                let body = hm.get("body").and_then(|b| self.text(&b, "a request body"));
                let timeout = match hm.get("timeout") {
                    Some(t) => self.duration(&t),
                    None => Some(fields::HTTP_CHECK_TIMEOUT.default),
                };
                let success = match hm.get("success") {
                    Some(s) => self
                        .non_empty(&s, "a success expression")
                        .filter(|expr| self.success_expression(&s, expr)),
                    None => Some(defaults::HTTP_SUCCESS.to_owned()),
                };
                match (url, method, timeout, success) {
                    (Some(url), Some(method), Some(timeout), Some(success)) => {
                        Some(CheckKind::Http {
                            method,
                            url,
                            headers,
                            body,
                            timeout,
                            success,
                        })
                    }
                    _ => None,
                }
            }
            "prometheus" => {
                let pm = self.map(
                    &body,
                    "`{ server: URL, query: PROMQL, threshold: \"< 0.01\" }`",
                    PROMETHEUS_KEYS,
                )?;
                let server = self.url(&pm, "server");
                let query = self
                    .required(&pm, "query")
                    .and_then(|q| self.non_empty(&q, "a PromQL query"));
                let threshold = self.required(&pm, "threshold").and_then(|t| {
                    self.parsed(&t, "a threshold such as `< 0.01`", Threshold::parse)
                });
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
                let run = if matches!(body.node.value, Value::Map(_)) {
                    let cm = self.map(&body, "`{ run: COMMAND }`", COMMAND_KEYS)?;
                    let r = self.required(&cm, "run")?;
                    self.non_empty(&r, "a command")
                } else {
                    self.non_empty(&body, "a command")
                };
                run.map(|run| CheckKind::Command { run })
            }
            _ => {
                let name = self.parsed(&body, "an extension name", |text| {
                    extension_name(text, "check")
                });
                let with = m
                    .get("with")
                    .map(|w| self.json(&w))
                    .unwrap_or_else(empty_object);
                name.map(|name| CheckKind::Extension { name, with })
            }
        };
        Some(GateCheck {
            name,
            kind: kind?,
            consecutive_successes: consecutive_successes?,
            on_inconclusive: on_inconclusive?,
        })
    }

    /// Compiles a CEL success expression; an error is reported at the
    /// `success` field with its position inside the expression.
    fn success_expression(&mut self, v: &V<'_>, expr: &str) -> bool {
        match crate::domain::gates::compile_success(expr) {
            Ok(()) => true,
            Err(e) => {
                self.at(v, e.to_string());
                false
            }
        }
    }

    fn header_map(&mut self, v: &V<'_>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Value::Map(entries) = &v.node.value else {
            let found = v.node.describe();
            self.at(v, format!("expected a mapping of headers, found {found}"));
            return out;
        };
        for (key, node) in entries {
            let name = key_text(key).to_owned();
            let value = V {
                node,
                path: join_path(&v.path, &name),
            };
            if !fields::is_header_name(&name) {
                self.error(
                    key.mark,
                    &value.path,
                    format!("invalid HTTP header name `{name}`"),
                );
            } else if let Some(text) = self.text(&value, "a header value") {
                out.insert(name, text);
            }
        }
        out
    }

    fn queue(&mut self, v: &V<'_>) -> Option<QueuePolicy> {
        let m = self.map(
            v,
            "a queue `{ parallel: 1, policy: latest_only }`",
            QUEUE_KEYS,
        )?;
        let parallel = match m.get("parallel") {
            Some(p) => self.whole(&p, fields::QUEUE_PARALLEL),
            None => Some(defaults::QUEUE_PARALLEL),
        };
        let policy = match m.get("policy") {
            Some(p) => self.choice(&p, "queue policy", QueueMode::WORDS),
            None => Some(QueueMode::LatestOnly),
        };
        Some(QueuePolicy {
            parallel: parallel?,
            policy: policy?,
        })
    }

    /// `notifications:`, outgoing webhooks about approvals.
    fn notifications(&mut self, v: &V<'_>) -> Option<Vec<Notification>> {
        let mut out = Vec::new();
        let mut seen: Vec<(String, usize)> = Vec::new();
        let mut ok = true;
        for item in self.list(v, "notifications")? {
            match self.notification(&item, &mut seen) {
                Some(n) => out.push(n),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn notification(&mut self, v: &V<'_>, seen: &mut Vec<(String, usize)>) -> Option<Notification> {
        let m = self.map(
            v,
            "a notification mapping with `name` and `url`",
            NOTIFICATION_KEYS,
        )?;
        let name_v = self.required(&m, "name");
        let name = name_v.as_ref().and_then(|v| {
            self.parsed(v, "a notification name", |text| match name_problem(text) {
                None => Ok(text.to_owned()),
                Some(problem) => Err(DomainError::InvalidName {
                    kind: "notification",
                    value: text.to_owned(),
                    reason: format!(
                        "{problem} (allowed: lower-case letters, digits, `-` and `_`, 1 to 63 characters)"
                    ),
                }),
            })
        });
        if let (Some(name), Some(name_v)) = (&name, &name_v) {
            if let Some((_, line)) = seen.iter().find(|(n, _)| n == name) {
                let line = *line;
                self.at(
                    name_v,
                    format!("duplicate notification name `{name}` (first declared on line {line})"),
                );
                return None;
            }
            seen.push((name.clone(), name_v.node.mark.line));
        }
        let url = self.url(&m, "url").and_then(|url| {
            if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                if let Some(v) = m.get("url") {
                    self.at(
                        &v,
                        format!("invalid URL `{url}`: it must not contain spaces"),
                    );
                }
                None
            } else {
                Some(url)
            }
        });
        let format = match m.get("format") {
            Some(f) => self.choice(
                &f,
                "notification format",
                &[
                    ("generic", NotificationFormat::Generic),
                    ("slack", NotificationFormat::Slack),
                ],
            ),
            None => Some(NotificationFormat::Generic),
        };
        let secret = match m.get("secret") {
            Some(s) => self
                .parsed(
                    &s,
                    "a secret reference `${{ secrets.NAME }}`",
                    SecretRef::parse,
                )
                .map(Some),
            None => Some(None),
        };
        let events = match m.get("events") {
            Some(e) => self.notification_events(&e),
            None => Some(NotificationEvent::ALL.to_vec()),
        };
        Some(Notification {
            name: name?,
            url: url?,
            format: format?,
            secret: secret?,
            events: events?,
        })
    }

    fn notification_events(&mut self, v: &V<'_>) -> Option<Vec<NotificationEvent>> {
        let items = self.list(v, "events")?;
        if items.is_empty() {
            self.at(
                v,
                "a notification needs at least one event (leave `events` out for all)",
            );
            return None;
        }
        let options: Vec<(&str, NotificationEvent)> = NotificationEvent::ALL
            .iter()
            .map(|e| (e.as_str(), *e))
            .collect();
        let mut events = Vec::new();
        let mut ok = true;
        for item in items {
            match self.choice(&item, "event", &options) {
                Some(e) if events.contains(&e) => {
                    self.at(&item, format!("duplicate event `{}`", e.as_str()));
                    ok = false;
                }
                Some(e) => events.push(e),
                None => ok = false,
            }
        }
        events.sort();
        ok.then_some(events)
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}
