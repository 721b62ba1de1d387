//! What the stage pages show of a stored stage: its approvals and gates,
//! tasks, fire times and recent fires, environment, deployers, and the
//! pipeline's revision history with diffs. Shared with `stage_overview`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::FIRE_TIMES;
use super::REVISIONS;
use crate::domain::{
    ApprovalMode, ApprovalPolicy, Approver, CheckKind, GatePolicy, Phase, Schedule, Stage,
    TaskKind, TaskSpec, TriggerOutcome,
};
use crate::engine::pipelines::schedules::{self as sched, FireRecord};
use crate::storage::DefinitionRevisionRow;
use crate::web::urls;
use crate::web::views::plural;
use crate::web::views::time;

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

/// Users and `group:NAME`s as the pages and the form list them.
pub(crate) fn approvers_text(approvers: &[Approver]) -> String {
    approvers
        .iter()
        .map(Approver::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn approval_view(phase: &'static str, p: &ApprovalPolicy) -> ApprovalView {
    ApprovalView {
        phase,
        approvers: approvers_text(&p.approvers),
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

pub(super) fn check_text(kind: &CheckKind) -> String {
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
        (Phase::Before.as_str(), &stage.approvals.before),
        (Phase::After.as_str(), &stage.approvals.after),
    ]
    .into_iter()
    .filter_map(|(phase, p)| p.as_ref().map(|p| approval_view(phase, p)))
    .collect();
    let gates = [
        (Phase::Before.as_str(), &stage.gates.before),
        (Phase::After.as_str(), &stage.gates.after),
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

pub(super) fn revision_views(
    revisions: &[DefinitionRevisionRow],
    current: i32,
) -> Vec<RevisionView> {
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
        approvers_text(&stage.deployers)
    }
}
