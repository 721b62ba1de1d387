//! The build side of the [`Engine`]: queue, retry and cancel a build, and
//! the dispatcher that claims queued builds and hands them to the job
//! runtime (`runtime/jobs.rs`).
//!
//! The dispatcher wakes at once when a build is queued ([`Engine::notify`])
//! and every [`EngineConfig::safety_poll`](super::EngineConfig) in case a
//! wake-up was missed (another instance queued it). It claims queued builds
//! oldest first with a conditional update, at most
//! `builds_per_pipeline` of a pipeline at once across every instance
//! sharing the database and at most `max_builds` on this instance; the
//! rest wait.

use std::collections::HashSet;

use super::Engine;
use super::jobs::ClaimedJob;
use crate::engine::builds::{self, BuildRequest, QueueOutcome, RunContext};
use crate::engine::deploy::requests;
use crate::engine::jobs::JobId;
use crate::engine::{ENGINE_ACTOR, EngineError, blocking};
use crate::storage::{self, BuildRow};

impl Engine {
    /// Wakes the dispatcher: call it after queuing a build.
    pub fn notify(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops the running task of a build this instance runs (after
    /// `builds::cancel_build` recorded the cancellation). Returns whether
    /// it runs here.
    pub fn signal_cancel(&self, build_id: i64) -> bool {
        self.inner.leases.cancel(JobId::Build(build_id))
    }

    /// Ids of the builds running on this instance.
    pub fn running_builds(&self) -> Vec<i64> {
        self.inner.leases.ids(true)
    }

    /// Queues a build and wakes the dispatcher.
    pub async fn queue(&self, request: BuildRequest) -> Result<QueueOutcome, EngineError> {
        let outcome = blocking(&self.inner.db, move |conn| {
            builds::queue_build(conn, &request)
        })
        .await?;
        if matches!(outcome, QueueOutcome::Queued(_)) {
            self.notify();
        }
        Ok(outcome)
    }

    /// Queues a build of the same branch and commit as a failed or
    /// canceled one ([`builds::retry_build`]) and wakes the dispatcher.
    pub async fn retry(
        &self,
        pipeline: &str,
        number: i64,
        actor: &str,
    ) -> Result<QueueOutcome, EngineError> {
        let (pipeline, actor) = (pipeline.to_string(), actor.to_string());
        let outcome = blocking(&self.inner.db, move |conn| {
            builds::retry_build(conn, &pipeline, number, &actor)
        })
        .await?;
        if matches!(outcome, QueueOutcome::Queued(_)) {
            self.notify();
        }
        Ok(outcome)
    }

    /// Cancels a build by pipeline and number, stopping its task if it runs here.
    pub async fn cancel(
        &self,
        pipeline: &str,
        number: i64,
        actor: &str,
    ) -> Result<BuildRow, EngineError> {
        let (pipeline, actor) = (pipeline.to_string(), actor.to_string());
        let build = blocking(&self.inner.db, move |conn| {
            let build = builds::find_build(conn, &pipeline, number)?;
            builds::cancel_build(conn, build.id, &actor)
        })
        .await?;
        self.signal_cancel(build.id);
        self.notify();
        Ok(build)
    }

    pub(super) async fn dispatch_builds(&self) -> Result<(), EngineError> {
        let capacity = self
            .inner
            .config
            .max_builds
            .saturating_sub(self.inner.leases.ids(true).len());
        if capacity == 0 || self.inner.shutdown.is_cancelled() {
            return Ok(());
        }
        let me = self.clone();
        let runner = self.runner();
        let per_pipeline = self.inner.config.builds_per_pipeline.max(1);
        let claimed = blocking(&self.inner.db, move |conn| {
            let queued = storage::queued_builds(conn, 100)?;
            let mut claimed = Vec::new();
            let mut full: HashSet<i64> = HashSet::new();
            for build in queued {
                if claimed.len() >= capacity {
                    break;
                }
                if full.contains(&build.pipeline_id) {
                    continue;
                }
                let job = JobId::Build(build.id);
                let claim =
                    || storage::claim_build(conn, build.id, &runner, per_pipeline, ENGINE_ACTOR);
                match me.inner.leases.claim(job, &me.inner.shutdown, claim)? {
                    Some(claim) => claimed.push(claim),
                    None => {
                        full.insert(build.pipeline_id);
                    }
                }
            }
            Ok(claimed)
        })
        .await?;
        for (build, token) in claimed {
            let ctx = RunContext {
                job: self.job_context(),
                mirror_lock: self.mirror_lock(build.pipeline_id),
                on_release: |conn, pipeline, release| {
                    requests::request_after_build(conn, pipeline, release).map(drop)
                },
            };
            let build = Box::new(build);
            self.launch(ClaimedJob::Build { build, ctx }, token);
        }
        Ok(())
    }
}
