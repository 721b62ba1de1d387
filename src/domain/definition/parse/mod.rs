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

mod apps;
mod guards;
mod notifications;
mod stages;
mod tasks;

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

    /// Reads every item with `read`, reporting the problems of each; `None`
    /// when any item did not parse.
    fn each<'a, T>(
        &mut self,
        items: Vec<V<'a>>,
        mut read: impl FnMut(&mut Self, &V<'a>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match read(self, &item) {
                Some(x) => out.push(x),
                None => ok = false,
            }
        }
        ok.then_some(out)
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
        self.named_map(
            v,
            what,
            is_env_name,
            |name| {
                format!(
                    "invalid name `{name}`: use letters, digits and `_`, not starting with a digit"
                )
            },
            |r, value| {
                if value.node.is_null() {
                    Some(String::new())
                } else {
                    r.text(value, "a text value")
                }
            },
        )
    }

    /// A mapping whose keys are names that `valid` accepts (another is
    /// reported at its key with `invalid(name)`), each value read by `read`.
    fn named_map<T>(
        &mut self,
        v: &V<'_>,
        what: &str,
        valid: fn(&str) -> bool,
        invalid: fn(&str) -> String,
        mut read: impl FnMut(&mut Self, &V<'_>) -> Option<T>,
    ) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        let Value::Map(entries) = &v.node.value else {
            let found = v.node.describe();
            self.at(v, format!("expected a mapping of {what}, found {found}"));
            return out;
        };
        for (key, node) in entries {
            let name = key_text(key).to_owned();
            let value = V {
                node,
                path: join_path(&v.path, &name),
            };
            if !valid(&name) {
                self.error(key.mark, &value.path, invalid(&name));
            } else if let Some(read) = read(self, &value) {
                out.insert(name, read);
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
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::domain::parse_definition;

    /// Variables, settings and headers report a bad name at its key, each
    /// with its own message.
    #[test]
    fn named_mappings_report_bad_names_at_the_key() {
        let yaml = r#"pipeline: p
source: { repo: ./r }
version: "1.0.{build}"
variables: { 1X: a, OK: b }
apps:
  - name: web
    start: x
    slots: [a]
    settings: { 2Y: c, FINE: { value: d, sticky: true } }
stages:
  - name: dev
    gates:
      before:
        checks:
          - http: { url: "http://x", headers: { "Bad@": v, Accept: "*/*" } }
"#;
        let errors = parse_definition(yaml, "t.yaml").unwrap_err();
        let found: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(
            found[0],
            (
                "variables.1X",
                "invalid name `1X`: use letters, digits and `_`, not starting with a digit"
            )
        );
        assert_eq!(
            found[1],
            (
                "apps[0].settings.2Y",
                "invalid setting name `2Y`: use letters, digits and `_`, not starting with a digit"
            )
        );
        assert!(
            found[2]
                .0
                .starts_with("stages[0].gates.before.checks[0].http.headers"),
            "{found:?}"
        );
        assert_eq!(found[2].1, "invalid HTTP header name `Bad@`");
    }
}
