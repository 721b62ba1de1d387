//! The deployment side of the [`Engine`] (a child module of `runtime`, so it
//! shares the engine's state):
//!
//! - **Dispatcher.** Woken at once when a deployment is queued
//!   ([`Engine::deploy`], [`Engine::notify_deployments`]; after a build, a
//!   deployment that ended, a cancel) and every
//!   [`EngineConfig::safety_poll`](super::EngineConfig) in case the wake-up
//!   came from another instance. For each queued deployment, oldest first:
//!   a stage with approvals (or gates) before it moves it to
//!   `waiting_for_approval` (`evaluating_gates`), where it stays until the
//!   approvals (gates) issue resolves it; otherwise it is claimed
//!   (`queued → running`) when its stage runs fewer than `queue.parallel`
//!   deployments and no older one of the stage is queued. The claim is a
//!   conditional update with the pipeline row locked, so with several
//!   instances on one database each deployment starts exactly once.
//! - **Heartbeat.** Every [`EngineConfig::heartbeat`](super::EngineConfig)
//!   the running deployments of this instance are marked alive, the ones
//!   canceled through another instance are stopped, and deployments of an
//!   instance silent for `stale_after` are interrupted.
//! - **Recovery.** On start, the running deployments this instance left
//!   behind become `interrupted` (they can be redeployed); queued and
//!   waiting ones are simply picked up again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Engine, lock, stale_before};
use crate::domain::rules;
use crate::domain::{DeploymentEvent, DeploymentState};
use crate::engine::EngineError;
use crate::engine::deploy::requests::{self, DeployOutcome, DeployRequest};
use crate::engine::deploy::run::{self, DeployContext};
use crate::engine::deploy::swaps::{self, SwapAsk, SwapRoute};
use crate::engine::deploy::transitions;
use crate::engine::slots::SwapOutcome;
use crate::engine::{ENGINE_ACTOR, blocking};
use crate::storage::{self, DeploymentRow};

/// What a swap a person asked for ([`Engine::swap_slots`]) did.
#[derive(Debug, Clone)]
pub enum SwapDone {
    /// A deployment of the stage that owns the target slot, as it stands
    /// after its first steps: succeeded (swapped), failed, or waiting for
    /// approvals, gates or its turn.
    Deployment {
        deployment: Box<DeploymentRow>,
        pipeline: String,
        version: String,
        /// The release the target slot ran before.
        replaced: Option<String>,
    },
    /// Swapped directly (no stage owns the target slot).
    Swapped(SwapOutcome),
}

/// How long [`Engine::swap_slots`] waits for its deployment to swap (or
/// stop at approvals or gates) before answering that it is under way.
const SWAP_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The engine's deployment state.
pub(super) struct DeployState {
    /// Wakes the deployment dispatcher.
    wake: Notify,
    /// Cancellation tokens of the deployments this instance runs.
    running: Mutex<HashMap<i64, CancellationToken>>,
    /// One pooled HTTP client for `http` tasks.
    http: reqwest::Client,
}

impl DeployState {
    pub(super) fn new() -> DeployState {
        let http = reqwest::Client::builder()
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot configure the HTTP client; using the defaults");
                reqwest::Client::new()
            });
        DeployState {
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            http,
        }
    }
}

impl Engine {
    /// Asks for a deployment ([`requests::request_deployment`]) and
    /// wakes the dispatcher so it starts at once.
    pub async fn deploy(&self, req: DeployRequest) -> Result<DeployOutcome, EngineError> {
        let outcome = blocking(&self.inner.db, move |conn| {
            requests::request_deployment(conn, &req)
        })
        .await?;
        self.notify_deployments();
        Ok(outcome)
    }

    /// A swap (or rollback) of slots a person asked for (`engine::deploy::swaps`):
    /// a deployment of the stage that owns the target slot — answered once
    /// it swapped, failed or stopped at the stage's approvals or gates (or
    /// after [`SWAP_ANSWER_WAIT`]) — or, for a slot no stage owns, the
    /// swap itself.
    pub async fn swap_slots(&self, ask: SwapAsk) -> Result<SwapDone, EngineError> {
        let (app, from, to) = (ask.app.clone(), ask.from.clone(), ask.to.clone());
        let review = blocking(&self.inner.db, move |conn| {
            swaps::review(conn, &app, &from, &to)
        })
        .await?;
        match swaps::request(&review, &ask)? {
            SwapRoute::Direct { reason } => {
                let slots = self.slots();
                let outcome = if ask.confirm {
                    slots.confirm_swap(&ask.app, &ask.actor).await?
                } else {
                    slots
                        .swap(&ask.app, &ask.from, &ask.to, &ask.actor, None)
                        .await?
                };
                if let Some(reason) = reason {
                    let (actor, app) = (ask.actor.clone(), ask.app.clone());
                    let action = if ask.rollback {
                        "slot.rollback"
                    } else {
                        "slot.swap.reason"
                    };
                    let detail = format!(
                        "{} into {} ({} replaced {}): {reason}",
                        outcome.from,
                        outcome.to,
                        outcome.release.as_deref().unwrap_or("nothing"),
                        outcome.replaced.as_deref().unwrap_or("nothing")
                    );
                    blocking(&self.inner.db, move |conn| {
                        Ok(storage::append_audit(
                            conn,
                            &actor,
                            action,
                            &format!("app:{app}"),
                            &detail,
                        )?)
                    })
                    .await?;
                }
                Ok(SwapDone::Swapped(outcome))
            }
            SwapRoute::Deployment(req) => {
                let (stage, version) = (req.stage.clone(), req.release.clone());
                let id = match self.deploy(*req).await? {
                    DeployOutcome::Queued(row) => row.id,
                    // Not this swap: an ordinary deployment of the release.
                    DeployOutcome::AlreadyThere { deployment_id } => {
                        return Err(EngineError::Conflict(format!(
                            "{version} already has a deployment to {stage} under way (#{deployment_id}); let it finish or cancel it first."
                        )));
                    }
                };
                let deployment = self.wait_for_first_steps(id).await?;
                Ok(SwapDone::Deployment {
                    deployment: Box::new(deployment),
                    pipeline: review.pipeline,
                    version: review.incoming,
                    replaced: review.outgoing,
                })
            }
        }
    }

    /// Deployment `id` once it left `queued` and `running` (or as it is
    /// after [`SWAP_ANSWER_WAIT`]).
    async fn wait_for_first_steps(&self, id: i64) -> Result<DeploymentRow, EngineError> {
        let deadline = tokio::time::Instant::now() + SWAP_ANSWER_WAIT;
        loop {
            let row = blocking(&self.inner.db, move |conn| transitions::find(conn, id)).await?;
            let moving = matches!(
                row.state,
                DeploymentState::Queued | DeploymentState::Running
            );
            if !moving || tokio::time::Instant::now() >= deadline {
                return Ok(row);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Redeploys deployment `id`: a new attempt of its release in its stage.
    pub async fn redeploy(&self, id: i64, actor: &str) -> Result<DeployOutcome, EngineError> {
        let actor = actor.to_string();
        let req = blocking(&self.inner.db, move |conn| {
            requests::redeploy_request(conn, id, &actor)
        })
        .await?;
        self.deploy(req).await
    }

    /// Cancels a deployment and stops its task if it runs here.
    pub async fn cancel_deployment(
        &self,
        id: i64,
        actor: &str,
    ) -> Result<DeploymentRow, EngineError> {
        let actor = actor.to_string();
        let d = blocking(&self.inner.db, move |conn| {
            requests::cancel_deployment(conn, id, &actor)
        })
        .await?;
        self.signal_cancel_deployment(id);
        self.notify_deployments();
        Ok(d)
    }

    /// Records a decision on an approval (`engine::deploy::approvals::decide`) and
    /// wakes the dispatcher and the gates when the deployment moved on.
    pub async fn decide_approval(
        &self,
        id: i64,
        person: crate::engine::deploy::approvals::Person,
        input: crate::engine::deploy::approvals::DecisionInput,
    ) -> Result<
        crate::engine::deploy::approvals::Decided,
        crate::engine::deploy::approvals::DecideError,
    > {
        let decided = blocking(&self.inner.db, move |conn| {
            Ok(crate::engine::deploy::approvals::decide(
                conn, id, &person, &input,
            ))
        })
        .await??;
        // Its notices were committed with it: deliver them now.
        self.notify_notifications();
        if decided.moved {
            self.notify_deployments();
            self.inner.gates.notify();
        }
        Ok(decided)
    }

    /// Wakes the deployment dispatcher: call it after queuing a deployment
    /// (or anything that may let one start).
    pub fn notify_deployments(&self) {
        self.inner.deploy.wake.notify_one();
    }

    /// Stops the running task of a deployment this instance runs (after
    /// [`requests::cancel_deployment`] recorded the cancellation).
    /// Returns whether it runs here.
    pub fn signal_cancel_deployment(&self, id: i64) -> bool {
        match lock(&self.inner.deploy.running).get(&id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Ids of the deployments running on this instance.
    pub fn running_deployments(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = lock(&self.inner.deploy.running).keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Interrupts what this instance's previous process left running, then
    /// starts the dispatcher and the heartbeat (called by [`Engine::start`]).
    pub(super) async fn start_deployments(&self, runner: String) -> Result<(), EngineError> {
        let stale = stale_before(self.inner.config.stale_after);
        let recovered = blocking(&self.inner.db, move |conn| {
            transitions::interrupt_orphans(conn, Some(&runner), stale)
        })
        .await?;
        for d in &recovered {
            tracing::warn!(
                deployment = d.id,
                stage = %d.stage,
                "deployment was left running by a previous process; marked interrupted"
            );
        }
        let me = self.clone();
        self.inner
            .tracker
            .spawn(async move { me.deploy_dispatch_loop().await });
        let me = self.clone();
        self.inner
            .tracker
            .spawn(async move { me.deploy_heartbeat_loop().await });
        self.notify_deployments();
        Ok(())
    }

    async fn deploy_dispatch_loop(self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            if let Err(e) = self.deploy_dispatch_once().await {
                tracing::error!(error = %e, "deployment dispatcher");
            }
            tokio::select! {
                _ = self.inner.deploy.wake.notified() => {}
                _ = tokio::time::sleep(self.inner.config.safety_poll) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// Moves queued deployments on: to their approvals or gates, or claims
    /// the ones that may run now and starts them.
    async fn deploy_dispatch_once(&self) -> Result<(), EngineError> {
        if self.inner.shutdown.is_cancelled() {
            return Ok(());
        }
        let me = self.clone();
        let runner = self.runner();
        let data_dir = self.inner.data_dir.clone();
        let claimed = blocking(&self.inner.db, move |conn| {
            let mut queued = storage::deployments::queued_deployments(conn, 200)?;
            // Deployments whose gates or approval before the stage passed
            // are claimed too.
            queued.extend(storage::gates::deployments_past_gates(conn, 200)?);
            queued.extend(storage::approvals::deployments_past_approvals(conn, 200)?);
            queued.sort_by_key(|d| d.id);
            let mut plans = run::Plans::default();
            let mut claimed = Vec::new();
            // Stages where a claim found no room (or an older deployment
            // first): later deployments of the stage wait too.
            let mut blocked: HashSet<(i64, String)> = HashSet::new();
            for d in queued {
                let plan = match plans.plan(conn, &d) {
                    Ok(plan) => plan,
                    Err(EngineError::NotFound(why)) => {
                        // Its stage left the pipeline: it can never run.
                        if let Err(e) = transitions::apply(
                            conn,
                            &d,
                            d.state,
                            DeploymentEvent::Cancel,
                            ENGINE_ACTOR,
                            Some(&why),
                            &format!("stage={} {why}", d.stage),
                        ) {
                            tracing::error!(deployment = d.id, error = %e, "cannot cancel a deployment");
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(deployment = d.id, error = %e, "cannot plan a deployment");
                        continue;
                    }
                };
                let stage_key = (d.pipeline_id, d.stage.clone());
                let claims = d.state == DeploymentState::EvaluatingGates
                    || d.state == DeploymentState::WaitingForApproval
                    || rules::first_step(&plan.stage) == DeploymentEvent::Start;
                if claims && blocked.contains(&stage_key) {
                    continue;
                }
                let token = me.inner.shutdown.child_token();
                lock(&me.inner.deploy.running).insert(d.id, token.clone());
                match run::advance(conn, &d, &plan, &runner) {
                    Ok(Some(started)) => claimed.push((started, plan, token)),
                    Ok(None) => {
                        lock(&me.inner.deploy.running).remove(&d.id);
                        if claims {
                            blocked.insert(stage_key);
                        }
                    }
                    Err(e) => {
                        lock(&me.inner.deploy.running).remove(&d.id);
                        tracing::error!(deployment = d.id, error = %e, "cannot start a deployment");
                    }
                }
            }
            // Deployments waiting for approval get their approvals; due
            // ones time out.
            if crate::engine::deploy::approvals::open_waiting(conn, &data_dir)? > 0 {
                me.notify_notifications();
            }
            if crate::engine::deploy::approvals::sweep(conn)? {
                me.notify_deployments();
                me.notify_notifications();
            }
            Ok(claimed)
        })
        .await?;
        // Deployments that entered `evaluating_gates` get their gate runs now.
        self.inner.gates.notify();
        for (started, plan, token) in claimed {
            let ctx = DeployContext {
                db: self.inner.db.clone(),
                data_dir: self.inner.data_dir.clone(),
                secret_key: self.inner.secret_key.clone(),
                default_task_timeout: self.inner.config.default_task_timeout,
                kill_grace: self.inner.config.kill_grace,
                keep_workspaces: self.inner.config.keep_workspaces,
                shutdown: self.inner.shutdown.clone(),
                http: self.inner.deploy.http.clone(),
                slots: self.inner.slots.clone(),
            };
            let me = self.clone();
            self.inner.tracker.spawn(async move {
                let id = started.deployment.id;
                run::run_deployment(ctx, started, plan, token).await;
                lock(&me.inner.deploy.running).remove(&id);
                // A place in the stage is free, and `after` triggers may have queued more.
                me.notify_deployments();
            });
        }
        Ok(())
    }

    async fn deploy_heartbeat_loop(self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.config.heartbeat) => {}
                _ = shutdown.cancelled() => break,
            }
            if let Err(e) = self.deploy_heartbeat_once().await {
                tracing::error!(error = %e, "deployment heartbeat");
            }
        }
    }

    async fn deploy_heartbeat_once(&self) -> Result<(), EngineError> {
        let runner = self.runner();
        let local = self.running_deployments();
        let stale = stale_before(self.inner.config.stale_after);
        let (states, recovered) = blocking(&self.inner.db, move |conn| {
            storage::deployments::heartbeat_deployments(conn, &runner)?;
            let states = storage::deployments::deployment_states(conn, &local)?;
            let recovered = transitions::interrupt_orphans(conn, None, stale)?;
            Ok((states, recovered))
        })
        .await?;
        for (id, state) in states {
            if state.is_terminal() {
                // Canceled through another instance.
                self.signal_cancel_deployment(id);
            }
        }
        for d in recovered {
            tracing::warn!(
                deployment = d.id,
                runner = d.runner.as_deref().unwrap_or("-"),
                "a running deployment's instance went silent; marked interrupted"
            );
        }
        Ok(())
    }
}
