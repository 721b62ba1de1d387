//! `/pipelines/{p}/stages/{s}`: a stage's configuration (read-only until
//! the engine issue makes it editable), with the next fire times of a
//! schedule in the stage's own time zone.

use actix_web::{HttpResponse, web};
use askama::Template;
use chrono::Utc;

use super::pipelines::trigger_text;
use super::render;
use crate::domain::{
    ApprovalMode, ApprovalPolicy, Approver, CheckKind, GatePolicy, QueueMode, Stage, TaskKind,
    TaskSpec, Trigger,
};
use crate::engine::pipelines;
use crate::web::session::Nav;
use crate::web::{State, WebError, urls};

/// How many fire times the page lists.
pub const FIRE_TIMES: usize = 5;

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

pub struct TaskView {
    pub name: String,
    pub summary: String,
    pub timeout: Option<String>,
    pub env: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "pages/stage.html")]
pub struct StagePage {
    pub nav: crate::web::session::Nav,
    pub pipeline: String,
    pub pipeline_url: String,
    pub stage: String,
    pub position: usize,
    pub previous: String,
    pub trigger: String,
    pub timezone: Option<String>,
    pub fire_times: Vec<FireTime>,
    pub catch_up: bool,
    pub environment: String,
    pub approvals: Vec<ApprovalView>,
    pub gates: Vec<GateView>,
    pub tasks: Vec<TaskView>,
    pub queue: String,
    pub variables: Vec<(String, String)>,
    pub deployers: String,
    pub revision: i32,
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

fn page(
    nav: Nav,
    pipeline: &str,
    revision: i32,
    position: usize,
    previous: Option<&Stage>,
    stage: &Stage,
) -> StagePage {
    let (timezone, fire_times) = match &stage.trigger {
        Trigger::Schedule(s) => (
            Some(s.timezone.name().to_string()),
            s.next_fires(Utc::now(), FIRE_TIMES)
                .into_iter()
                .map(|t| FireTime {
                    local: t
                        .with_timezone(&s.timezone)
                        .format("%a %Y-%m-%d %H:%M:%S %Z")
                        .to_string(),
                    utc: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    iso: t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                })
                .collect(),
        ),
        _ => (None, Vec::new()),
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
    StagePage {
        nav,
        pipeline: pipeline.to_string(),
        pipeline_url: urls::pipeline(pipeline),
        stage: stage.name.as_str().to_string(),
        position: position + 1,
        previous: previous
            .map(|p| format!("stage {}", p.name))
            .unwrap_or_else(|| "the build".into()),
        trigger: trigger_text(&stage.trigger),
        timezone,
        fire_times,
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
        tasks: stage
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| TaskView {
                name: t.name.clone().unwrap_or_else(|| format!("task {}", i + 1)),
                summary: task_summary(t),
                timeout: t.timeout.map(|d| d.to_string()),
                env: t.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            })
            .collect(),
        queue: format!(
            "{} at once; {}",
            stage.queue.parallel,
            match stage.queue.policy {
                QueueMode::LatestOnly =>
                    "only the latest waiting release deploys (older ones are superseded)",
                QueueMode::Sequence => "waiting releases deploy in sequence",
            }
        ),
        variables: stage
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
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
        revision,
    }
}

pub async fn config(
    state: State,
    nav: Nav,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, WebError> {
    let (name, stage_name) = path.into_inner();
    let loaded = state
        .with_conn::<_, WebError, _>(move |conn| Ok(pipelines::load(conn, &name)?))
        .await?;
    let def = &loaded.definition;
    let Some(position) = def
        .stages
        .iter()
        .position(|s| s.name.as_str() == stage_name)
    else {
        return Err(WebError::NotFound(format!(
            "{} has no stage named `{stage_name}`.",
            loaded.name
        )));
    };
    let previous = position.checked_sub(1).map(|i| &def.stages[i]);
    render(&page(
        nav,
        &loaded.name,
        loaded.revision,
        position,
        previous,
        &def.stages[position],
    ))
}
