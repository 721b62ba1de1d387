//! The job runtime of the [`Engine`]: what builds and deployments share
//! once a dispatcher claimed them (`runtime/builds.rs`,
//! `runtime/deployments.rs`).
//!
//! - **Executor.** [`Engine::launch`] hands a [`ClaimedJob`] to the
//!   executor: today this process runs it (`builds::run_build`,
//!   `deploy::run::run_deployment`); the lease, the heartbeat and the
//!   sweep do not care where it runs, so a remote executor (agents) can
//!   take the same claimed jobs. When the job ends its lease is released
//!   and both dispatchers wake (a place is free; a build's release or a
//!   deployment's success may have queued deployments).
//! - **Heartbeat.** One loop every [`EngineConfig::heartbeat`](super::EngineConfig)
//!   renews the leases of every job this instance holds, stops the ones
//!   canceled through another instance, and sweeps.
//! - **Sweep.** [`sweep`] interrupts the running jobs whose lease was lost
//!   (their holder silent for `stale_after`), with the reason of
//!   [`lost_reason`]; at start it also takes this instance's own leftovers
//!   (a killed or crashed previous process). Queued and waiting jobs are
//!   simply claimed again.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::engine::builds::{self, RunContext};
use crate::engine::deploy::run::{self as deploy_run, DeployContext, Plan, Started};
use crate::engine::deploy::transitions;
use crate::engine::jobs::{JobId, lost_reason, stale_before};
use crate::engine::{EngineError, blocking};
use crate::storage::{self, DbConn};

/// A job this instance claimed, with what running it needs.
pub(crate) enum ClaimedJob {
    Build {
        build: Box<storage::BuildRow>,
        ctx: RunContext,
    },
    Deployment {
        started: Box<Started>,
        plan: Box<Plan>,
        ctx: DeployContext,
    },
}

impl ClaimedJob {
    fn id(&self) -> JobId {
        match self {
            ClaimedJob::Build { build, .. } => JobId::Build(build.id),
            ClaimedJob::Deployment { started, .. } => JobId::Deployment(started.deployment.id),
        }
    }

    /// Runs it in this process to its end (every outcome is stored); what
    /// is left to tidy after the dispatchers woke.
    async fn run_here(self, cancel: CancellationToken) -> Option<builds::Cleanup> {
        match self {
            ClaimedJob::Build { build, ctx } => Some(builds::run_build(ctx, *build, cancel).await),
            ClaimedJob::Deployment { started, plan, ctx } => {
                deploy_run::run_deployment(ctx, *started, *plan, cancel).await;
                None
            }
        }
    }
}

/// A job whose lease was lost, as the sweep interrupted it.
#[derive(Debug, Clone)]
pub(crate) struct LostJob {
    pub job: JobId,
    /// The instance that held it.
    pub holder: Option<String>,
}

/// Interrupts every running job whose lease was lost: renewed before
/// `stale_before`, or held by `me` (this instance, just started: its
/// running jobs are its previous process's). Each through its kind's
/// transition, with [`lost_reason`].
pub(crate) fn sweep(
    conn: &mut DbConn,
    me: Option<&str>,
    stale_before: chrono::NaiveDateTime,
) -> Result<Vec<LostJob>, EngineError> {
    let mut lost = Vec::new();
    for build in storage::orphaned_builds(conn, me, stale_before)? {
        let job = JobId::Build(build.id);
        let reason = lost_reason(job, build.runner.as_deref(), me);
        if builds::interrupt(conn, &build, &reason)? {
            lost.push(LostJob {
                job,
                holder: build.runner,
            });
        }
    }
    for d in storage::deployments::orphaned_deployments(conn, me, stale_before)? {
        let job = JobId::Deployment(d.id);
        let reason = lost_reason(job, d.runner.as_deref(), me);
        if transitions::interrupt(conn, &d, &reason)? {
            lost.push(LostJob {
                job,
                holder: d.runner,
            });
        }
    }
    Ok(lost)
}

/// Says in the log what the sweep interrupted.
fn log_lost(lost: &[LostJob], at_start: bool) {
    for LostJob { job, holder } in lost {
        let (noun, id) = (job.noun(), job.id());
        if at_start {
            tracing::warn!(
                id,
                "{noun} was left running by a previous process; marked interrupted"
            );
        } else {
            tracing::warn!(
                id,
                runner = holder.as_deref().unwrap_or("-"),
                "a running {noun}'s instance went silent; marked interrupted"
            );
        }
    }
}

impl Engine {
    /// Takes this instance's leftovers (and every lost lease) at start.
    pub(super) async fn sweep_at_start(&self, runner: String) -> Result<(), EngineError> {
        let stale = stale_before(self.inner.config.stale_after);
        let lost = blocking(&self.inner.db, move |conn| {
            sweep(conn, Some(&runner), stale)
        })
        .await?;
        log_lost(&lost, true);
        Ok(())
    }

    /// Runs a claimed job (in this process), then releases its lease and
    /// wakes the dispatchers.
    pub(super) fn launch(&self, job: ClaimedJob, cancel: CancellationToken) {
        let me = self.clone();
        let id = job.id();
        self.inner.tracker.spawn(async move {
            let cleanup = job.run_here(cancel).await;
            me.inner.leases.release(id);
            me.notify();
            me.notify_deployments();
            if let Some(cleanup) = cleanup {
                cleanup.run().await;
            }
        });
    }

    /// Runs `once` now, then whenever `wake` fires or every `safety_poll`,
    /// until the engine stops; an error is logged as `what`.
    pub(super) async fn dispatch_loop<F, Fut>(
        self,
        what: &'static str,
        wake: impl Fn(&Engine) -> &tokio::sync::Notify,
        once: F,
    ) where
        F: Fn(Engine) -> Fut,
        Fut: Future<Output = Result<(), EngineError>>,
    {
        let shutdown = self.inner.shutdown.clone();
        loop {
            if let Err(e) = once(self.clone()).await {
                tracing::error!(error = %e, "{what}");
            }
            tokio::select! {
                _ = wake(&self).notified() => {}
                _ = tokio::time::sleep(self.inner.config.safety_poll) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// The one heartbeat of every job this instance holds.
    pub(super) async fn heartbeat_loop(self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.heartbeat) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.heartbeat_once().await {
                tracing::error!(error = %e, "job heartbeat");
            }
        }
    }

    /// Renews this instance's leases, stops the jobs that ended elsewhere
    /// (canceled through another instance) and sweeps lost leases.
    async fn heartbeat_once(&self) -> Result<(), EngineError> {
        let runner = self.runner();
        let (builds_held, deployments_held) =
            (self.inner.leases.ids(true), self.inner.leases.ids(false));
        let stale = stale_before(self.inner.config.stale_after);
        let (ended, lost) = blocking(&self.inner.db, move |conn| {
            storage::heartbeat_builds(conn, &runner)?;
            storage::deployments::heartbeat_deployments(conn, &runner)?;
            let mut ended: Vec<JobId> = ended_builds(conn, &builds_held)?
                .into_iter()
                .map(JobId::Build)
                .collect();
            ended.extend(
                ended_deployments(conn, &deployments_held)?
                    .into_iter()
                    .map(JobId::Deployment),
            );
            let lost = sweep(conn, None, stale)?;
            Ok((ended, lost))
        })
        .await?;
        for job in ended {
            self.inner.leases.cancel(job);
        }
        log_lost(&lost, false);
        Ok(())
    }
}

/// Reads what a heartbeat needs of builds: those of `held` no longer
/// running or queued (canceled or interrupted through another instance).
fn ended_builds(conn: &mut DbConn, held: &[i64]) -> Result<Vec<i64>, EngineError> {
    Ok(storage::build_states(conn, held)?
        .into_iter()
        .filter(|(_, state)| {
            *state != crate::domain::BuildState::Running
                && *state != crate::domain::BuildState::Queued
        })
        .map(|(id, _)| id)
        .collect())
}

/// Of the deployments in `held`, those that ended (canceled through
/// another instance): the heartbeat stops their processes.
fn ended_deployments(conn: &mut DbConn, held: &[i64]) -> Result<Vec<i64>, EngineError> {
    Ok(storage::deployments::deployment_states(conn, held)?
        .into_iter()
        .filter(|(_, state)| state.is_terminal())
        .map(|(id, _)| id)
        .collect())
}
