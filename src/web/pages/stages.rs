//! `/pipelines/{p}/stages/{s}`: a stage's configuration form (trigger with
//! a preview of the next fire times, tasks, variables, queue), its
//! schedule's state and recent fires, the read-only approvals and gates,
//! and the pipeline's revision history with a diff of each revision.
//!
//! `POST` saves (release manager) or previews (`action=preview`, nothing is
//! stored). Form fields are parsed into domain values here; an error is
//! shown next to its field (422, the input kept). A save stores a new
//! revision through `engine::stages::edit_stage`.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, http::header, web};
use askama::Template;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use super::deploy::{DeployFormView, deploy_form};
use super::pipelines::trigger_text;
use crate::domain::schedule::suggest_timezone;
use crate::domain::{
    ApprovalMode, ApprovalPolicy, Approver, BranchFilter, CheckKind, Cron, DefinitionErrors,
    GatePolicy, PipelineDefinition, QueueMode, QueuePolicy, Role, Schedule, Stage, TaskKind,
    TaskSpec, Trigger, TriggerOutcome, Upstream, parse_timezone,
};
use crate::engine::schedules::{self as sched, FireRecord};
use crate::engine::stages::{self as edit, StageEdit, TextError};
use crate::engine::{EngineError, pipelines};
use crate::storage::schedules as store;
use crate::storage::{self, DefinitionRevisionRow};
use crate::web::auth::CurrentUser;
use crate::web::session::{Nav, check_csrf};
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
    /// Problems that belong to no field of the form.
    pub general: Vec<String>,
}

impl FieldErrors {
    pub fn is_empty(&self) -> bool {
        self.summary().is_empty()
    }

    /// `(field id, message)` of every error, in form order, for the summary.
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let one = |out: &mut Vec<_>, id, e: &Option<String>| {
            if let Some(e) = e {
                out.push((id, e.clone()));
            }
        };
        one(&mut out, "trigger-manual", &self.trigger);
        one(&mut out, "after-stage", &self.after_stage);
        one(&mut out, "branches", &self.branches);
        one(&mut out, "cron", &self.cron);
        one(&mut out, "timezone", &self.timezone);
        for e in &self.tasks {
            out.push(("tasks", e.clone()));
        }
        for e in &self.variables {
            out.push(("variables", e.clone()));
        }
        one(&mut out, "parallel", &self.parallel);
        one(&mut out, "policy", &self.policy);
        for e in &self.general {
            out.push(("stage-form", e.clone()));
        }
        out
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
    /// The Deploy form (`partials/deploy_form.html`).
    pub deploy_form: DeployFormView,
}

fn approver_text(a: &Approver) -> String {
    match a {
        Approver::User(u) => u.clone(),
        Approver::Group(g) => format!("group:{g}"),
    }
}

fn approval_view(phase: &'static str, p: &ApprovalPolicy) -> ApprovalView {
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
            ApprovalMode::AtLeast(n) => format!("at least {n} approvers"),
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

fn gate_view(phase: &'static str, g: &GatePolicy) -> GateView {
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

fn fire_times(schedule: &Schedule) -> Vec<FireTime> {
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
    match (trigger, tasks, variables, parallel, policy) {
        (Some(trigger), Some(tasks), Some(variables), Some(parallel), Some(policy))
            if errors.is_empty() =>
        {
            Ok(StageEdit {
                trigger,
                catch_up: form.catch_up.is_some(),
                tasks,
                variables,
                queue: QueuePolicy { parallel, policy },
            })
        }
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

/// Puts the definition's validation errors next to the form's fields.
fn place_errors(errors: &DefinitionErrors, index: usize) -> FieldErrors {
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

fn fire_view(pipeline: &str, f: &FireRecord, tz: Tz) -> FireView {
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
    deploy_form: DeployFormView,
}

fn load(
    conn: &mut storage::DbConn,
    name: &str,
    stage: &str,
    nav: &Nav,
) -> Result<Loaded, WebError> {
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
    let deploy_form = deploy_form(conn, &loaded.name, stage, nav)?;
    Ok(Loaded {
        name: loaded.name,
        revision: loaded.revision,
        definition: loaded.definition,
        index,
        stage_row,
        fires,
        revisions,
        deploy_form,
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
    let mut approvals = Vec::new();
    if let Some(p) = &stage.approvals.before {
        approvals.push(approval_view("before", p));
    }
    if let Some(p) = &stage.approvals.after {
        approvals.push(approval_view("after", p));
    }
    let mut gates = Vec::new();
    if let Some(g) = &stage.gates.before {
        gates.push(gate_view("before", g));
    }
    if let Some(g) = &stage.gates.after {
        gates.push(gate_view("after", g));
    }
    let row = l.stage_row.as_ref();
    StagePage {
        nav,
        pipeline: l.name.clone(),
        pipeline_url: urls::pipeline(&l.name),
        form_url: urls::stage(&l.name, stage.name.as_str()),
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
        environment: match &stage.environment {
            None => "not set".into(),
            Some(crate::domain::Environment::Host) => "the Slipway host".into(),
            Some(crate::domain::Environment::Agent { name }) => format!("agent {name}"),
            Some(crate::domain::Environment::Slot { app, name }) => {
                format!("slot {name} of app {app}")
            }
        },
        approvals,
        gates,
        deployers: if stage.deployers.is_empty() {
            "anyone with the deployer role".into()
        } else {
            stage
                .deployers
                .iter()
                .map(approver_text)
                .collect::<Vec<_>>()
                .join(", ")
        },
        revisions: revision_views(&l.revisions, l.revision),
        more_revisions: l.revisions.len().saturating_sub(REVISIONS),
        deploy_form: l.deploy_form.clone(),
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
    let n = nav.clone();
    let l = state
        .with_conn::<_, WebError, _>(move |conn| load(conn, &name, &stage, &n))
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
    let form = web::Query::<StageForm>::from_query(text)
        .map_err(|e| WebError::BadRequest(format!("The form could not be read: {e}")))?
        .into_inner();
    check_csrf(&session, &form.csrf)?;
    let editor = can_edit(&user);
    let (lname, lstage, n) = (name.clone(), stage.clone(), nav.clone());
    let l = state
        .with_conn::<_, WebError, _>(move |conn| load(conn, &lname, &lstage, &n))
        .await?;
    if form.action == "preview" {
        let mut errors = FieldErrors::default();
        let status = match parse_schedule(&form, &mut errors) {
            Some(_) => StatusCode::OK,
            None => StatusCode::UNPROCESSABLE_ENTITY,
        };
        return respond(status, &page(nav, editor, &l, form, errors, true, None));
    }
    let actor = user.require(Role::ReleaseManager)?.username.clone();
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
                urls::stage(&l.name, &stage),
                outcome.revision
            );
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, location))
                .finish())
        }
        Err(EngineError::Definition(errors)) => {
            let errors = place_errors(&errors, l.index);
            let page = page(nav, editor, &l, form, errors, false, None);
            respond(StatusCode::UNPROCESSABLE_ENTITY, &page)
        }
        Err(EngineError::Conflict(message)) => {
            // Show the current configuration's revision number but keep the input.
            let n = nav.clone();
            let l = state
                .with_conn::<_, WebError, _>(move |conn| load(conn, &name, &stage, &n))
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
}
