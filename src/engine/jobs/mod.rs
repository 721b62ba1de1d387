//! The job runtime's shared parts. A **job** is one build or one
//! deployment: claimed once from its queue by one instance (the claim is a
//! conditional update, so with several instances each job starts exactly
//! once), held under a **lease** that the instance's one heartbeat renews
//! (`runner` + `heartbeat_at` on the job's row), and finished or
//! interrupted through its kind's transition. A job whose holder stopped
//! renewing for the engine's `stale_after`
//! is interrupted with a reason ([`lost_reason`]), never retried by itself.
//!
//! - [`leases`] — the jobs this instance holds and their cancel tokens;
//! - [`env`] — a job's variables and env values with their secrets
//!   resolved, and the masker of its log (one resolution for both kinds);
//! - [`runner`] — runs a task as a process group and writes its log;
//! - [`JobContext`] — what running any job needs from the engine.
//!
//! The dispatch loops, the heartbeat and the orphan sweep are in
//! `engine::runtime`, which hands each claimed job to an executor (today
//! this process).

pub mod env;
pub mod leases;
pub mod runner;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::{TaskKind, TaskRunState, TaskSpec};
use crate::engine::secrets::SecretKey;
use crate::engine::{EngineError, blocking};
use crate::storage::{self, Db, LogChunkRow, TaskRunRow};

/// What a job is: its kind and its row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobId {
    Build(i64),
    Deployment(i64),
}

impl JobId {
    /// The row id.
    pub fn id(self) -> i64 {
        match self {
            JobId::Build(id) | JobId::Deployment(id) => id,
        }
    }

    /// "build" or "deployment".
    pub fn noun(self) -> &'static str {
        match self {
            JobId::Build(_) => "build",
            JobId::Deployment(_) => "deployment",
        }
    }

    /// What a person does to try it again.
    fn again(self) -> &'static str {
        match self {
            JobId::Build(_) => "build it again",
            JobId::Deployment(_) => "redeploy it",
        }
    }
}

/// Why a running job whose lease was lost is interrupted: its holder
/// (`holder`, the row's `runner`) is this instance restarted (`me`),
/// another instance that went silent, or nobody.
pub fn lost_reason(job: JobId, holder: Option<&str>, me: Option<&str>) -> String {
    let (noun, again) = (job.noun(), job.again());
    match (holder, me) {
        (Some(holder), Some(me)) if holder == me => {
            format!("Slipway was restarted while this {noun} ran; {again}")
        }
        (Some(holder), _) => {
            format!("the Slipway instance running it ({holder}) stopped answering; {again}")
        }
        (None, _) => format!("no Slipway instance was running it; {again}"),
    }
}

/// Why a job is interrupted when this instance stops while it runs.
pub fn stopped_reason(job: JobId) -> String {
    format!(
        "Slipway stopped while this {} ran; {}",
        job.noun(),
        job.again()
    )
}

/// Leases renewed before this instant are lost.
pub fn stale_before(stale_after: Duration) -> chrono::NaiveDateTime {
    storage::now()
        - chrono::Duration::from_std(stale_after).unwrap_or_else(|_| chrono::Duration::seconds(60))
}

/// How a job's run ended before its final transaction.
#[derive(Debug)]
pub enum Stop {
    /// Fail the job with this message (a deployment masks its secrets
    /// before storing it; a build stores it as it is, as before).
    Fail(String),
    /// The token fired: canceled by a person, or the engine is stopping.
    Canceled,
}

impl From<EngineError> for Stop {
    fn from(e: EngineError) -> Self {
        Stop::Fail(e.to_string())
    }
}

impl Stop {
    /// Whether the job goes on after its task `task` ended with `outcome`:
    /// a canceled task stops it, any other failure fails it ("task `NAME`
    /// exited with 1").
    pub fn after_task(task: &str, outcome: &runner::TaskOutcome) -> Result<(), Stop> {
        match outcome {
            runner::TaskOutcome::Succeeded => Ok(()),
            runner::TaskOutcome::Canceled => Err(Stop::Canceled),
            other => Err(Stop::Fail(format!("task `{task}` {}", other.describe()))),
        }
    }
}

/// Ends a task run of either kind: says in its log how it ended (unless it
/// succeeded), closes the log, and records the task's state and exit code —
/// `interrupted` when the engine stopped it while shutting down.
pub async fn finish_task(
    ctx: &JobContext,
    task_run_id: i64,
    log: runner::TaskLog,
    outcome: &runner::TaskOutcome,
) -> Result<(), EngineError> {
    if !matches!(outcome, runner::TaskOutcome::Succeeded) {
        log.system(format!("task {}", outcome.describe())).await;
    }
    log.finish().await;
    let state = match (outcome, ctx.shutdown.is_cancelled()) {
        (runner::TaskOutcome::Canceled, true) => TaskRunState::Interrupted,
        (o, _) => o.state(),
    };
    let exit_code = outcome.exit_code();
    blocking(&ctx.db, move |conn| {
        storage::finish_task_run(conn, task_run_id, state, exit_code)?;
        Ok(())
    })
    .await
}

/// One chunk of a job's log, with the task it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// The cursor: pass the last one seen as `after` to get what follows.
    pub seq: i64,
    /// The task's name and position.
    pub task: String,
    pub task_position: i32,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    /// Whole lines, secrets masked.
    pub text: String,
    pub created_at: chrono::NaiveDateTime,
}

/// A job's stored log chunks with the names and positions of their tasks.
pub fn log_chunks(tasks: &[TaskRunRow], rows: Vec<LogChunkRow>) -> Vec<LogChunk> {
    rows.into_iter()
        .map(|c| {
            let task = tasks.iter().find(|t| t.id == c.task_run_id);
            LogChunk {
                seq: c.seq,
                task: task.map(|t| t.name.clone()).unwrap_or_default(),
                task_position: task.map(|t| t.position).unwrap_or_default(),
                stream: c.stream,
                text: c.text,
                created_at: c.created_at,
            }
        })
        .collect()
}

/// What running a job (of either kind) needs from the engine.
#[derive(Clone)]
pub struct JobContext {
    pub db: Db,
    pub data_dir: PathBuf,
    pub secret_key: Arc<SecretKey>,
    /// The time limit of a task without `timeout:`.
    pub default_task_timeout: Duration,
    /// Between `SIGTERM` and `SIGKILL` of a stopped task.
    pub kill_grace: Duration,
    /// Keep workspaces after the job (default: removed).
    pub keep_workspaces: bool,
    /// Fired by the engine's shutdown (each job's own token is its child).
    pub shutdown: CancellationToken,
}

/// The label of a task: its `name:`, else its kind and the first line of its script.
pub fn task_label(spec: &TaskSpec) -> String {
    if let Some(name) = spec.name.as_deref().filter(|n| !n.trim().is_empty()) {
        return name.to_string();
    }
    match &spec.kind {
        TaskKind::Shell { script } => {
            let line = script
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("shell");
            let mut label: String = line.chars().take(60).collect();
            if line.chars().count() > 60 {
                label.push('…');
            }
            label
        }
        TaskKind::Http { url, .. } => format!("http {url}"),
        TaskKind::DeploySlot { app, slot } => format!("deploy_slot {app}/{slot}"),
        TaskKind::SwapSlots { app, from, to } => format!("swap_slots {app} {from}→{to}"),
        TaskKind::Extension { name, .. } => format!("task {name}"),
    }
}

/// The stored kind of a task: `shell`, `http`, `deploy_slot`, `swap_slots`, `task`.
pub fn task_kind(spec: &TaskSpec) -> &'static str {
    match spec.kind {
        TaskKind::Shell { .. } => "shell",
        TaskKind::Http { .. } => "http",
        TaskKind::DeploySlot { .. } => "deploy_slot",
        TaskKind::SwapSlots { .. } => "swap_slots",
        TaskKind::Extension { .. } => "task",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_lease_says_whose_it_was_and_what_to_do() {
        let build = JobId::Build(1);
        let deployment = JobId::Deployment(2);
        assert_eq!(
            lost_reason(build, Some("h/a"), Some("h/a")),
            "Slipway was restarted while this build ran; build it again"
        );
        assert_eq!(
            lost_reason(deployment, Some("h/a"), Some("h/b")),
            "the Slipway instance running it (h/a) stopped answering; redeploy it"
        );
        assert_eq!(
            lost_reason(deployment, Some("h/a"), None),
            "the Slipway instance running it (h/a) stopped answering; redeploy it"
        );
        assert_eq!(
            lost_reason(build, None, Some("h/b")),
            "no Slipway instance was running it; build it again"
        );
        assert_eq!(
            stopped_reason(build),
            "Slipway stopped while this build ran; build it again"
        );
        assert_eq!(
            stopped_reason(deployment),
            "Slipway stopped while this deployment ran; redeploy it"
        );
    }
}
