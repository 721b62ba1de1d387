//! The pipeline definition of SPEC §3: source, version template, apps,
//! build and ordered stages, each with trigger, environment, approvals,
//! gates, tasks and queue policy.
//!
//! Read it with [`parse_definition`] (YAML with file/line/column/field
//! errors) and write it with [`to_canonical_yaml`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

mod errors;
mod export;
pub mod fields;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod notification_tests;
mod parse;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod roundtrip_tests;
mod tree;
pub mod yaml;

use super::secrets::is_secret_name;
use super::text::parse_impls;
use super::{
    AppName, DomainError, Duration, PipelineName, Schedule, SlotName, StageName, VersionTemplate,
};

/// A whole pipeline definition (one YAML file).
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineDefinition {
    /// The pipeline's name, unique on the server.
    pub pipeline: PipelineName,
    /// Free text shown on the pipeline page.
    pub description: Option<String>,
    /// Where the code comes from.
    pub source: Source,
    /// How a release's version is made.
    pub version: VersionTemplate,
    /// Pipeline variables, given to every task (stage variables override them).
    pub variables: BTreeMap<String, String>,
    /// Apps whose slots the stages deploy.
    pub apps: Vec<App>,
    /// The build: tasks and artifact globs.
    pub build: Build,
    /// The stages, in order (at least one).
    pub stages: Vec<Stage>,
    /// Outgoing webhooks about approvals (`docs/notifications.md`).
    pub notifications: Vec<Notification>,
}

/// An outgoing webhook of a pipeline, sent when an approval event happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The target's name, unique in the pipeline (shown on the admin page).
    pub name: String,
    /// Where the body is POSTed (`http://` or `https://`).
    pub url: String,
    /// The body's shape (default generic JSON).
    pub format: NotificationFormat,
    /// The key of the `X-Slipway-Signature` HMAC, by reference.
    pub secret: Option<SecretRef>,
    /// The events sent, in [`NotificationEvent::ALL`] order (default all).
    pub events: Vec<NotificationEvent>,
}

/// The body of a notification.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationFormat {
    /// The event as JSON (default).
    #[default]
    Generic,
    /// A Slack incoming-webhook message (`text` and `blocks`).
    Slack,
}

/// What a notification is sent for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationEvent {
    /// Approvers are asked to decide.
    ApprovalRequested,
    /// An approval was decided (approved, rejected, timed out).
    ApprovalDecided,
    /// An approval times out soon.
    ApprovalExpiring,
}

impl NotificationFormat {
    /// The word used in YAML and storage.
    pub fn as_str(&self) -> &'static str {
        match self {
            NotificationFormat::Generic => "generic",
            NotificationFormat::Slack => "slack",
        }
    }
}

impl NotificationEvent {
    /// Every event, in canonical order.
    pub const ALL: [NotificationEvent; 3] = [
        NotificationEvent::ApprovalRequested,
        NotificationEvent::ApprovalDecided,
        NotificationEvent::ApprovalExpiring,
    ];

    /// The word used in YAML, storage and the `X-Slipway-Event` header.
    pub fn as_str(&self) -> &'static str {
        match self {
            NotificationEvent::ApprovalRequested => "approval_requested",
            NotificationEvent::ApprovalDecided => "approval_decided",
            NotificationEvent::ApprovalExpiring => "approval_expiring",
        }
    }
}

/// The git repository a pipeline builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// A URL or a local path (relative paths are resolved against the imported file's directory).
    pub repo: String,
    /// The default branch, built when no branch is given (default `main`).
    pub branch: String,
    /// Which pushed branches start a build; with no `include` list, only
    /// `branch` does (see [`Source::builds_push_of`]).
    pub branches: BranchFilter,
    /// Branch patterns whose builds receive the pipeline's secrets; `None`
    /// means the built branches (see [`Source::secrets_allowed`]).
    pub secrets_for: Option<Vec<String>>,
    /// The secret that signs webhooks, by reference.
    pub webhook_secret: Option<SecretRef>,
    /// Poll the repository at this interval (no polling when absent).
    pub poll: Option<Duration>,
}

/// Branch patterns: `*` matches within one path segment, `**` across `/`, `?` one character.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BranchFilter {
    /// Branches that match; empty means every branch.
    pub include: Vec<String>,
    /// Branches that never match, even when included.
    pub exclude: Vec<String>,
}

/// A reference to a secret: the NAME in `${{ secrets.NAME }}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretRef(String);

/// An app: a process started from an unpacked release, run in named slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App {
    /// The app's name (host names are `APP-SLOT.localhost`).
    pub name: AppName,
    /// The command that starts it, run in the unpacked release; it gets `PORT`.
    pub start: String,
    /// The HTTP path that must answer 2xx before a slot takes traffic (default `/`).
    pub health: String,
    /// The app's slots, at least one.
    pub slots: Vec<SlotName>,
    /// Slot configuration given to the process as environment variables.
    pub settings: BTreeMap<String, Setting>,
}

/// One slot setting; a sticky setting stays with its slot when slots are swapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The value (may reference `${{ secrets.NAME }}`).
    pub value: String,
    /// Whether it stays with the slot on a swap (default false).
    pub sticky: bool,
}

/// The build: tasks run in a clean checkout, then artifacts collected by glob.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Build {
    /// Build tasks, in order.
    pub tasks: Vec<TaskSpec>,
    /// Artifact globs relative to the workspace (`dist/**`).
    pub artifacts: Vec<String>,
}

/// One stage of the pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// The stage's name, unique in the pipeline.
    pub name: StageName,
    /// What starts a deployment (default manual).
    pub trigger: Trigger,
    /// Where it deploys.
    pub environment: Option<Environment>,
    /// Stage variables (override pipeline variables).
    pub variables: BTreeMap<String, String>,
    /// Sign-offs before and after the deployment.
    pub approvals: Approvals,
    /// Health gates before and after the deployment.
    pub gates: Gates,
    /// The deployment's tasks, in order.
    pub tasks: Vec<TaskSpec>,
    /// How many deployments run at once, and which waiting ones run.
    pub queue: QueuePolicy,
    /// Whether one missed scheduled fire runs at start-up (default false).
    pub catch_up: bool,
    /// Who may start a deployment by hand; empty means every deployer.
    pub deployers: Vec<Approver>,
}

/// What starts a deployment to a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A person (or the API) starts it.
    Manual,
    /// Continuous deployment after the build or an earlier stage succeeds.
    After {
        /// The build or the stage whose success starts it.
        upstream: Upstream,
        /// Only releases built from these branches.
        branches: BranchFilter,
    },
    /// A cron schedule in a time zone.
    Schedule(Schedule),
}

/// The upstream of an `after` trigger.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// The build.
    Build,
    /// An earlier stage.
    Stage(StageName),
}

/// Where a stage deploys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Environment {
    /// The Slipway host itself.
    Host,
    /// A remote agent.
    Agent {
        /// The agent's name.
        name: String,
    },
    /// A slot of an app.
    Slot {
        /// The app.
        app: AppName,
        /// The slot.
        name: SlotName,
    },
}

/// Approvals before and after a stage's deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Approvals {
    /// Sign-off needed before the deployment runs.
    pub before: Option<ApprovalPolicy>,
    /// Sign-off needed after it ran, before the release counts as done.
    pub after: Option<ApprovalPolicy>,
    /// Whether approvals come before gates (default) or after.
    pub order: ApprovalOrder,
}

/// The order of approvals and gates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalOrder {
    /// Approvals first, then gates (default).
    #[default]
    BeforeGates,
    /// Gates first, then approvals.
    AfterGates,
}

/// Who must sign off, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalPolicy {
    /// Users and groups who may approve (at least one).
    pub approvers: Vec<Approver>,
    /// How many must approve.
    pub policy: ApprovalMode,
    /// After this long without a decision the deployment is rejected (default 30d).
    pub timeout: Duration,
    /// Approvers must have signed in through SSO within this long.
    pub fresh_sign_in: Option<Duration>,
    /// Whether the person who requested the deployment may approve it (default false).
    pub requester_can_approve: bool,
    /// Whether authors of the commits the release adds are excluded (default false).
    pub exclude_authors: bool,
}

/// How many approvals are needed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ApprovalMode {
    /// One approval is enough (default).
    #[default]
    Any,
    /// Every listed approver (each group by one member).
    All,
    /// At least this many distinct approvers.
    AtLeast(u32),
}

/// A user or a group who may approve or deploy: `alice` or `group:qa`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Approver {
    /// A user, by user name.
    User(String),
    /// A group, by name.
    Group(String),
}

/// Gates before and after a stage's deployment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gates {
    /// Checks that must pass before the deployment runs.
    pub before: Option<GatePolicy>,
    /// Checks that must pass after it ran.
    pub after: Option<GatePolicy>,
}

/// A gate: checks sampled periodically until all pass in one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct GatePolicy {
    /// Wait before the first sample (default 0s).
    pub delay: Duration,
    /// Time between samples (default 5m).
    pub interval: Duration,
    /// Give up (fail) after this long (default 1h).
    pub timeout: Duration,
    /// How long every check must stay green (default 0s).
    pub steady: Duration,
    /// The checks, at least one.
    pub checks: Vec<GateCheck>,
}

/// One health check of a gate.
#[derive(Clone, Debug, PartialEq)]
pub struct GateCheck {
    /// A label shown on the gate page.
    pub name: Option<String>,
    /// What is checked.
    pub kind: CheckKind,
    /// Passing samples needed in a row (default 1).
    pub consecutive_successes: u32,
    /// What a result that is neither pass nor fail does (default fail).
    pub on_inconclusive: InconclusivePolicy,
}

/// What an inconclusive check result does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InconclusivePolicy {
    /// Count it as a failure (default).
    #[default]
    Fail,
    /// Ask a person to decide.
    Ask,
}

/// The kinds of gate check.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    /// Call a URL and evaluate a success expression over `status` and `body`.
    Http {
        /// HTTP method (default GET).
        method: String,
        /// The URL.
        url: String,
        /// Request headers (values may reference secrets).
        headers: BTreeMap<String, String>,
        /// Request body.
        body: Option<String>,
        /// Request timeout (default 10s).
        timeout: Duration,
        /// CEL expression over `status` and `body` (default `status >= 200 && status < 300`).
        success: String,
    },
    /// A Prometheus instant query compared to a threshold.
    Prometheus {
        /// The Prometheus base URL.
        server: String,
        /// The PromQL instant query.
        query: String,
        /// The comparison the query's value must satisfy.
        threshold: Threshold,
    },
    /// A command whose exit code 0 means pass.
    Command {
        /// The command line.
        run: String,
    },
    /// An extension `slipway-check-NAME`.
    Extension {
        /// The extension's name.
        name: String,
        /// Its input.
        with: serde_json::Value,
    },
}

/// A comparison operator of a [`Threshold`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// A threshold such as `< 0.01`: an operator and a number.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Threshold {
    /// The operator.
    pub op: CompareOp,
    /// The number compared against.
    pub value: f64,
}

/// One task of a build or a stage.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSpec {
    /// A label shown in logs.
    pub name: Option<String>,
    /// What the task does.
    pub kind: TaskKind,
    /// Extra environment variables (values may reference secrets).
    pub env: BTreeMap<String, String>,
    /// Kill the task after this long.
    pub timeout: Option<Duration>,
}

/// The kinds of task.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskKind {
    /// Run a shell script.
    Shell {
        /// The script.
        script: String,
    },
    /// Call a URL and expect a status.
    Http {
        /// HTTP method (default GET).
        method: String,
        /// The URL.
        url: String,
        /// The expected status (default 200).
        expect_status: u16,
    },
    /// Unpack the release into a slot, start it and wait for its health check.
    DeploySlot {
        /// The app.
        app: AppName,
        /// The slot.
        slot: SlotName,
    },
    /// Warm up `from`, then swap routing and settings of `from` and `to`.
    SwapSlots {
        /// The app.
        app: AppName,
        /// The slot that takes over.
        from: SlotName,
        /// The slot it replaces.
        to: SlotName,
    },
    /// Run the executable `slipway-task-NAME`.
    Extension {
        /// The extension's name.
        name: String,
        /// Its input.
        with: serde_json::Value,
    },
}

/// How deployments of a stage queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueuePolicy {
    /// How many deployments may run at once (default 1).
    pub parallel: u32,
    /// Which waiting releases deploy.
    pub policy: QueueMode,
}

/// Which waiting releases deploy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// Only the newest; older waiting ones are superseded (default).
    #[default]
    LatestOnly,
    /// Every release, in order.
    Sequence,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            parallel: 1,
            policy: QueueMode::LatestOnly,
        }
    }
}

/// Default values of optional fields (left out of the canonical export).
pub mod defaults {
    use crate::domain::Duration;

    /// `source.branch`.
    pub const BRANCH: &str = "main";
    /// `apps[].health`.
    pub const HEALTH: &str = "/";
    /// `approvals.*.timeout`: 30 days.
    pub const APPROVAL_TIMEOUT: Duration = Duration::from_days(30);
    /// `gates.*.delay`.
    pub const GATE_DELAY: Duration = Duration::ZERO;
    /// `gates.*.interval`: 5 minutes.
    pub const GATE_INTERVAL: Duration = Duration::from_mins(5);
    /// `gates.*.timeout`: 1 hour.
    pub const GATE_TIMEOUT: Duration = Duration::from_hours(1);
    /// `gates.*.steady`.
    pub const GATE_STEADY: Duration = Duration::ZERO;
    /// HTTP method of `http` tasks and checks.
    pub const HTTP_METHOD: &str = "GET";
    /// Expected status of `http` tasks.
    pub const HTTP_EXPECT: u16 = 200;
    /// Request timeout of `http` checks.
    pub const HTTP_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
    /// Success expression of `http` checks.
    pub const HTTP_SUCCESS: &str = "status >= 200 && status < 300";
    /// `queue.parallel`.
    pub const QUEUE_PARALLEL: u32 = 1;
}

impl<'de> Deserialize<'de> for PipelineDefinition {
    /// Reads the same shape as the YAML form, from any self-describing format.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let node = tree::Node::deserialize(deserializer)?;
        yaml::from_node(&node, "<input>").map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Build => f.write_str("build"),
            Upstream::Stage(name) => f.write_str(name.as_str()),
        }
    }
}

impl Serialize for Upstream {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl PipelineDefinition {
    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_str() == name)
    }

    /// The position of the stage called `name`.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.name.as_str() == name)
    }

    /// The stage before `name`; `None` for the first stage (it deploys from the build)
    /// or an unknown name.
    pub fn previous_stage(&self, name: &str) -> Option<&Stage> {
        let index = self.stage_index(name)?;
        index.checked_sub(1).and_then(|i| self.stages.get(i))
    }

    /// The app called `name`.
    pub fn app(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.name.as_str() == name)
    }

    /// Checks every rule that [`parse_definition`](yaml::parse_definition)
    /// checks, for a definition built or edited in code (the UI edits the same
    /// model). Errors name the field path; their line and column refer to
    /// the canonical YAML form ([`to_canonical_yaml`](yaml::to_canonical_yaml)).
    pub fn validate(&self) -> Result<(), yaml::DefinitionErrors> {
        let text = yaml::to_canonical_yaml(self);
        yaml::parse_definition(&text, self.pipeline.as_str()).map(|_| ())
    }
}

impl Source {
    /// Whether a push (webhook or polling) of `branch` starts a build: the
    /// `branches` filter when it has an `include` list, else only the
    /// pipeline's own `branch`; `exclude` always applies.
    pub fn builds_push_of(&self, branch: &str) -> bool {
        if self.branches.include.is_empty() {
            branch == self.branch && self.branches.matches(branch)
        } else {
            self.branches.matches(branch)
        }
    }

    /// Whether a build of `branch` may read the pipeline's secrets:
    /// `secrets_for` when given, else the branches that pushes build.
    pub fn secrets_allowed(&self, branch: &str) -> bool {
        match &self.secrets_for {
            Some(patterns) => patterns.iter().any(|p| glob_match(p, branch)),
            None => self.builds_push_of(branch),
        }
    }
}

impl BranchFilter {
    /// Whether `branch` passes the filter: included (or no include list) and not excluded.
    pub fn matches(&self, branch: &str) -> bool {
        let included =
            self.include.is_empty() || self.include.iter().any(|p| glob_match(p, branch));
        included && !self.exclude.iter().any(|p| glob_match(p, branch))
    }

    /// Whether the filter lets every branch through.
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

/// Glob matching for branch names: `**` any text, `*` any text without `/`, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = &p[2..];
            (0..=t.len()).any(|i| glob_at(rest, &t[i..]))
        }
        Some('*') => {
            let rest = &p[1..];
            let limit = t.iter().position(|c| *c == '/').unwrap_or(t.len());
            (0..=limit).any(|i| glob_at(rest, &t[i..]))
        }
        Some('?') => t.first().is_some_and(|c| *c != '/') && glob_at(&p[1..], &t[1..]),
        Some(c) => t.first() == Some(c) && glob_at(&p[1..], &t[1..]),
    }
}

impl SecretRef {
    /// A reference to the secret called `name` (`[A-Za-z_][A-Za-z0-9_]*`).
    pub fn new(name: impl Into<String>) -> Result<Self, DomainError> {
        let name = name.into();
        if is_secret_name(&name) {
            Ok(SecretRef(name))
        } else {
            Err(DomainError::InvalidSecretRef { value: name })
        }
    }

    /// Parses `${{ secrets.NAME }}` (spaces inside the braces are optional).
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let err = || DomainError::InvalidSecretRef {
            value: text.to_owned(),
        };
        let inner = text
            .trim()
            .strip_prefix("${{")
            .and_then(|s| s.strip_suffix("}}"))
            .ok_or_else(err)?;
        let name = inner.trim().strip_prefix("secrets.").ok_or_else(err)?;
        if is_secret_name(name) {
            Ok(SecretRef(name.to_owned()))
        } else {
            Err(err())
        }
    }

    /// The secret's name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${{{{ secrets.{} }}}}", self.0)
    }
}

parse_impls!(SecretRef);

impl From<SecretRef> for String {
    fn from(value: SecretRef) -> String {
        value.to_string()
    }
}

fn is_principal_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'))
}

impl Approver {
    /// Parses `alice` (a user) or `group:qa` (a group).
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let err = |reason: &str| DomainError::InvalidApprover {
            value: text.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(group) = text.strip_prefix("group:") {
            if is_principal_name(group) {
                Ok(Approver::Group(group.to_owned()))
            } else {
                Err(err(
                    "a group name after `group:` may contain letters, digits, `.`, `_`, `-`, `@` and `+`",
                ))
            }
        } else if text.contains(':') {
            Err(err("expected a user name or `group:NAME`"))
        } else if is_principal_name(text) {
            Ok(Approver::User(text.to_owned()))
        } else {
            Err(err(
                "expected a user name (letters, digits, `.`, `_`, `-`, `@`, `+`) or `group:NAME`",
            ))
        }
    }

    /// The user or group name, without the `group:` prefix.
    pub fn name(&self) -> &str {
        match self {
            Approver::User(n) | Approver::Group(n) => n,
        }
    }
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approver::User(n) => f.write_str(n),
            Approver::Group(n) => write!(f, "group:{n}"),
        }
    }
}

parse_impls!(Approver);

impl From<Approver> for String {
    fn from(value: Approver) -> String {
        value.to_string()
    }
}

impl CompareOp {
    /// The operator as written (`<`, `<=`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
        }
    }
}

impl Threshold {
    /// Parses `< 0.01`, `<= 5`, `> 0`, `>= 1`, `== 1` or `!= 0`.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let err = || DomainError::InvalidThreshold {
            value: text.to_owned(),
        };
        let s = text.trim();
        let (op, rest) = [
            ("<=", CompareOp::Le),
            (">=", CompareOp::Ge),
            ("==", CompareOp::Eq),
            ("!=", CompareOp::Ne),
            ("<", CompareOp::Lt),
            (">", CompareOp::Gt),
        ]
        .into_iter()
        .find_map(|(prefix, op)| s.strip_prefix(prefix).map(|rest| (op, rest)))
        .ok_or_else(err)?;
        let value: f64 = rest.trim().parse().map_err(|_| err())?;
        if !value.is_finite() {
            return Err(err());
        }
        Ok(Threshold { op, value })
    }

    /// Whether `value` satisfies the threshold.
    pub fn check(&self, value: f64) -> bool {
        match self.op {
            CompareOp::Lt => value < self.value,
            CompareOp::Le => value <= self.value,
            CompareOp::Gt => value > self.value,
            CompareOp::Ge => value >= self.value,
            CompareOp::Eq => value == self.value,
            CompareOp::Ne => value != self.value,
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.as_str(), self.value)
    }
}

parse_impls!(Threshold);

impl From<Threshold> for String {
    fn from(value: Threshold) -> String {
        value.to_string()
    }
}
