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

use crate::engine::secrets::SecretKey;
use crate::storage::{self, Db};

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
