//! Deployments: ask for one (a person, the API, a trigger), cancel it,
//! redeploy it, recover the ones a dead process left running, and read
//! them back for pages and the API. Running one is `deploy_run`; the
//! dispatcher that starts them is on the `Engine`.
//!
//! Every change of state is one transaction with its audit record, on the
//! subject `deployment:<pipeline>#<id>`: `deployment.queue` (by the
//! requester), `deployment.supersede`, `deployment.request_approval`,
//! `deployment.start_gates`, `deployment.start`, `deployment.succeed`,
//! `deployment.fail`, `deployment.cancel` (by the person) and
//! `deployment.interrupt`. The stage rules are `domain::rules`.

use crate::domain::authz::{self, Action};
use crate::domain::rules::{self, DeployCheck, DeployKind, ReleaseRef, WaitingDeployment};
use crate::domain::{
    ApprovalState, DeploymentEvent, DeploymentState, PipelineDefinition, Role, SlotOperation,
    Stage, StageName, TaskRunState, Upstream,
};
use crate::storage::{self, DbConn, DeploymentRow, LogChunkRow, ReleaseRow, TaskRunRow};

use super::transitions::{close_for_deployment, find, subject, transition};
use crate::engine::ENGINE_ACTOR;
use crate::engine::jobs::{LogChunk, log_chunks};
use crate::engine::{EngineError, pipelines};

/// A request to deploy a release to a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    /// The pipeline's name.
    pub pipeline: String,
    /// The release's version.
    pub release: String,
    /// The stage's name.
    pub stage: String,
    /// `manual`, `schedule`, `after:build`, `after:<stage>`, `redeploy` or `rollback`.
    pub trigger: String,
    /// The user, or `slipway` for automatic triggers.
    pub requested_by: String,
    /// Why; required for a rollback.
    pub reason: Option<String>,
    /// A swap or rollback of slots to run instead of the stage's tasks.
    pub operation: Option<SlotOperation>,
    /// A release manager's reason for skipping the stage's approvals and
    /// gates (an override, audited as `deployment.override`).
    pub override_reason: Option<String>,
}

/// What [`request_deployment`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeployOutcome {
    /// A new deployment waits for the dispatcher.
    Queued(Box<DeploymentRow>),
    /// The same release is queued, waiting or running in that stage already:
    /// nothing new was made (asking twice is harmless).
    AlreadyThere {
        /// The deployment that is there.
        deployment_id: i64,
    },
}

impl DeployOutcome {
    /// The id of the deployment queued or found.
    pub fn deployment_id(&self) -> i64 {
        match self {
            DeployOutcome::Queued(d) => d.id,
            DeployOutcome::AlreadyThere { deployment_id } => *deployment_id,
        }
    }
}

/// Whether `trigger` is one of the known trigger texts.
fn valid_trigger(trigger: &str, definition: &PipelineDefinition) -> bool {
    match trigger {
        "manual" | "schedule" | "redeploy" | "rollback" | "swap" | "after:build" => true,
        other => other
            .strip_prefix("after:")
            .is_some_and(|stage| definition.stage(stage).is_some()),
    }
}

/// Whether a person (rather than a trigger) asks.
fn by_hand(trigger: &str) -> bool {
    matches!(trigger, "manual" | "redeploy" | "rollback" | "swap")
}

/// Refuses (`Forbidden`) a person whose role does not allow `action`.
fn require_role(conn: &mut DbConn, actor: &str, action: Action) -> Result<(), EngineError> {
    let role = storage::find_user_by_name(conn, actor)?.map(|u| u.role);
    if role.is_some_and(|role| authz::allowed(role, action)) {
        return Ok(());
    }
    Err(EngineError::Forbidden(format!(
        "{actor} may not {}: that needs the {} role.",
        action.describe(),
        action.minimum_role().label()
    )))
}

/// Refuses (`Forbidden`) a person whom the stage's `deployers` list does not
/// name (the one rule, [`authz::may_on_stage`]), for deploying and canceling
/// alike. A stage without a list lets every role that allows `action`.
fn require_stage_deployer(
    conn: &mut DbConn,
    stage: &Stage,
    actor: &str,
    action: Action,
    what: &str,
) -> Result<(), EngineError> {
    if stage.deployers.is_empty() {
        return Ok(());
    }
    let (role, groups) = match storage::find_user_by_name(conn, actor)? {
        Some(user) => (Some(user.role), storage::user_groups(conn, user.id)?),
        None => (None, Vec::new()),
    };
    if role.is_some_and(|role| authz::may_on_stage(role, action, actor, &groups, stage)) {
        return Ok(());
    }
    Err(EngineError::Forbidden(format!(
        "{actor} may not {what} {} by hand; its deployers are {}.",
        stage.name,
        stage
            .deployers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Asks for a deployment of a release to a stage: checks the stage rules,
/// queues it and applies the stage's queue policy (older waiting
/// deployments superseded with `latest_only`), in one transaction with its
/// audit records. Call `Engine::notify_deployments` afterwards (or
/// use `Engine::deploy`) so it starts at once.
///
/// Unknown pipeline, stage or release → `NotFound`; an unknown trigger text
/// → `Invalid`; a rule says no → `Refused` (HTTP 409) with the reason; the
/// stage's `deployers` do not include the person → `Forbidden`. The same
/// release already waiting or running in the stage → [`DeployOutcome::AlreadyThere`].
pub fn request_deployment(
    conn: &mut DbConn,
    req: &DeployRequest,
) -> Result<DeployOutcome, EngineError> {
    let loaded = pipelines::load(conn, &req.pipeline)?;
    let definition = &loaded.definition;
    let Some(index) = definition.stage_index(&req.stage) else {
        return Err(EngineError::NotFound(format!(
            "{} has no stage named `{}`.",
            loaded.name, req.stage
        )));
    };
    let stage = &definition.stages[index];
    if !valid_trigger(&req.trigger, definition) {
        return Err(EngineError::Invalid(format!(
            "`{}` is not a deployment trigger; use manual, schedule, after:build, after:<stage>, redeploy, rollback or swap",
            req.trigger
        )));
    }
    let release = storage::find_release(conn, loaded.id, &req.release)?.ok_or_else(|| {
        EngineError::NotFound(format!("{} has no release {}.", loaded.name, req.release))
    })?;
    if by_hand(&req.trigger) {
        require_stage_deployer(conn, stage, &req.requested_by, Action::Deploy, "deploy to")?;
    }
    let override_reason = match &req.override_reason {
        Some(text) => {
            require_role(conn, &req.requested_by, Action::OverrideGates)?;
            Some(
                crate::domain::slot_ops::reason_text(Some(text), "An override")
                    .map_err(|e| EngineError::Invalid(e.to_string()))?,
            )
        }
        None => None,
    };
    if let Some(op) = &req.operation {
        op.task().map_err(|e| EngineError::Invalid(e.to_string()))?;
    }
    let reason = req
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    let kind = match req.trigger.as_str() {
        "rollback" => DeployKind::Rollback {
            reason: reason.as_deref().unwrap_or(""),
        },
        "redeploy" => DeployKind::Redeploy,
        _ => DeployKind::Forward,
    };
    let previous = index
        .checked_sub(1)
        .and_then(|i| definition.stages.get(i))
        .map(|s| s.name.as_str().to_string());
    let pipeline_name = loaded.name.clone();
    storage::write_transaction(conn, |conn| {
        storage::deployments::lock_pipeline(conn, loaded.id)?;
        if let Some(active) = storage::deployments::active_deployment(conn, release.id, &req.stage)?
        {
            return Ok(DeployOutcome::AlreadyThere {
                deployment_id: active.id,
            });
        }
        let succeeded_in_previous = match &previous {
            Some(previous) => storage::deployments::release_has_deployment(
                conn,
                release.id,
                previous,
                Some(DeploymentState::Succeeded),
            )?,
            None => true,
        };
        // "The one there" is the stage's live release (`engine::deploy::live`).
        let current =
            crate::engine::deploy::live::live_of_stage(conn, loaded.id, &loaded.name, stage)?;
        let deployed_here_before =
            storage::deployments::release_has_deployment(conn, release.id, &req.stage, None)?;
        let this = ReleaseRef {
            id: release.id,
            version: &release.version,
        };
        rules::check_deploy(&DeployCheck {
            stage: &req.stage,
            previous_stage: previous.as_deref(),
            release: this,
            succeeded_in_previous,
            current: current.as_ref().map(|r| ReleaseRef {
                id: r.release_id,
                version: &r.version,
            }),
            deployed_here_before,
            kind,
        })
        .map_err(|r| EngineError::Refused(r.0))?;
        let waiting = storage::deployments::waiting_deployments(conn, loaded.id, &req.stage)?;
        let mut versions: Vec<(i64, String)> = Vec::new();
        for w in &waiting {
            if !versions.iter().any(|(id, _)| *id == w.release_id) {
                let version = storage::find_release_by_id(conn, w.release_id)?
                    .map(|r| r.version)
                    .unwrap_or_default();
                versions.push((w.release_id, version));
            }
        }
        let version_of = |id: i64| {
            versions
                .iter()
                .find(|(r, _)| *r == id)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let waiting_refs: Vec<WaitingDeployment<'_>> = waiting
            .iter()
            .map(|w| WaitingDeployment {
                deployment_id: w.id,
                release: ReleaseRef {
                    id: w.release_id,
                    version: version_of(w.release_id),
                },
                state: w.state,
            })
            .collect();
        let supersede = rules::on_queue(&req.stage, stage.queue.policy, this, kind, &waiting_refs)
            .map_err(|r| EngineError::Refused(r.0))?;
        let row = storage::insert_deployment(
            conn,
            &storage::NewDeployment {
                pipeline_id: loaded.id,
                release_id: release.id,
                stage: req.stage.clone(),
                state: DeploymentState::Queued,
                trigger: req.trigger.clone(),
                requested_by: req.requested_by.clone(),
                reason: reason.clone(),
            },
        )?;
        let mut row = row;
        if req.operation.is_some() || override_reason.is_some() {
            let operation = req.operation.as_ref().map(SlotOperation::to_json);
            let by = override_reason.as_ref().map(|_| req.requested_by.as_str());
            storage::deployments::set_operation(
                conn,
                row.id,
                operation.as_deref(),
                by,
                override_reason.as_deref(),
            )?;
            row.operation = operation;
            row.override_by = by.map(str::to_string);
            row.override_reason = override_reason.clone();
        }
        let mut detail = format!(
            "stage={} release={} attempt={} trigger={}",
            req.stage, release.version, row.attempt, req.trigger
        );
        if let Some(op) = &req.operation {
            detail.push_str(&format!(" swap={}/{}->{}", op.app, op.from, op.to));
        }
        if let Some(reason) = &reason {
            detail.push_str(&format!(" reason={reason}"));
        }
        storage::append_audit(
            conn,
            &req.requested_by,
            "deployment.queue",
            &subject(&pipeline_name, row.id),
            &detail,
        )?;
        if let Some(why) = &override_reason {
            storage::append_audit(
                conn,
                &req.requested_by,
                "deployment.override",
                &subject(&pipeline_name, row.id),
                &format!(
                    "stage={} release={} skips the stage's approvals and gates: {why}",
                    req.stage, release.version
                ),
            )?;
        }
        for w in waiting.iter().filter(|w| supersede.contains(&w.id)) {
            transition(w.state, DeploymentEvent::Supersede)?;
            if storage::deployments::supersede_deployment(conn, w.id, w.state, release.id)? {
                close_for_deployment(
                    conn,
                    &pipeline_name,
                    w.id,
                    ApprovalState::Superseded,
                    &req.requested_by,
                )?;
                storage::deployments::close_task_runs_of_deployment(
                    conn,
                    w.id,
                    TaskRunState::Skipped,
                )?;
                storage::append_audit(
                    conn,
                    &req.requested_by,
                    "deployment.supersede",
                    &subject(&pipeline_name, w.id),
                    &format!(
                        "stage={} release={} superseded_by={} (deployment #{})",
                        w.stage,
                        version_of(w.release_id),
                        release.version,
                        row.id
                    ),
                )?;
            }
        }
        Ok(DeployOutcome::Queued(Box::new(row)))
    })
}

/// Requests the deployments that an `after` trigger starts when `upstream`
/// succeeded with `release` (trigger `after:build` / `after:<stage>`, by
/// `slipway`). Runs inside the caller's transaction (the release's or the
/// deployment's success), each request in a savepoint of its own: a stage
/// that refuses (a rule) is skipped and logged, and never undoes the
/// success (other errors are logged too). Returns the deployments queued.
pub fn request_after(
    conn: &mut DbConn,
    pipeline: &str,
    definition: &PipelineDefinition,
    upstream: &Upstream,
    release: &ReleaseRow,
) -> Result<Vec<DeploymentRow>, EngineError> {
    let trigger = format!("after:{upstream}");
    let mut queued = Vec::new();
    for stage in rules::stages_after(&definition.stages, upstream, &release.branch) {
        let req = DeployRequest {
            pipeline: pipeline.to_string(),
            release: release.version.clone(),
            stage: stage.name.as_str().to_string(),
            trigger: trigger.clone(),
            requested_by: ENGINE_ACTOR.to_string(),
            reason: None,
            operation: None,
            override_reason: None,
        };
        match storage::write_transaction(conn, |conn| request_deployment(conn, &req)) {
            Ok(DeployOutcome::Queued(row)) => queued.push(*row),
            Ok(DeployOutcome::AlreadyThere { .. }) => {}
            Err(EngineError::Refused(why)) => tracing::info!(
                pipeline,
                stage = %stage.name,
                release = %release.version,
                "{trigger} did not deploy: {why}"
            ),
            // Never undo the success that triggered it; say why in the log.
            Err(e) => tracing::error!(
                pipeline,
                stage = %stage.name,
                release = %release.version,
                error = %e,
                "{trigger} could not ask for a deployment"
            ),
        }
    }
    Ok(queued)
}

/// Requests the `after: <stage>` deployments of `release`, whose
/// deployment to `stage` just succeeded (inside that transaction; the
/// current definition says which stages follow).
pub fn request_after_success(
    conn: &mut DbConn,
    pipeline: &str,
    stage: &StageName,
    release: &ReleaseRow,
) -> Result<Vec<DeploymentRow>, EngineError> {
    let current = pipelines::load(conn, pipeline)?.definition;
    let upstream = Upstream::Stage(stage.clone());
    request_after(conn, pipeline, &current, &upstream, release)
}

/// Requests the `after: build` deployments of a release just created. Call
/// it inside the release's transaction, so a release never exists without
/// them (the build's success path does); then wake the dispatcher.
pub fn request_after_build(
    conn: &mut DbConn,
    pipeline: &str,
    release: &ReleaseRow,
) -> Result<Vec<DeploymentRow>, EngineError> {
    let definition = pipelines::load(conn, pipeline)?.definition;
    request_after(conn, pipeline, &definition, &Upstream::Build, release)
}

/// Cancels a waiting or running deployment (`deployment.cancel`, by
/// `actor`); its pending tasks are skipped and a running one is marked
/// canceled. Call `Engine::signal_cancel_deployment` afterwards
/// to stop its process. An ended deployment is a `Conflict`.
pub fn cancel_deployment(
    conn: &mut DbConn,
    id: i64,
    actor: &str,
) -> Result<DeploymentRow, EngineError> {
    storage::write_transaction(conn, |conn| {
        let d = find(conn, id)?;
        let pipeline = storage::pipeline_by_id(conn, d.pipeline_id)?;
        let definition = pipelines::load(conn, &pipeline.name)?.definition;
        if let Some(stage) = definition
            .stages
            .iter()
            .find(|s| s.name.as_str() == d.stage)
        {
            require_stage_deployer(
                conn,
                stage,
                actor,
                Action::CancelDeployment,
                "cancel deployments to",
            )?;
        } else if storage::find_user_by_name(conn, actor)?.map(|u| u.role) != Some(Role::Admin) {
            // The stage was removed from the pipeline: whom its list named
            // is no longer known, so only an admin may cancel.
            return Err(EngineError::Forbidden(format!(
                "The stage {} is no longer in {}; only an admin may cancel deployment #{id}.",
                d.stage, pipeline.name
            )));
        }
        let to = d.state.transition(DeploymentEvent::Cancel).map_err(|_| {
            EngineError::Conflict(format!(
                "Deployment #{id} is {} already; only a waiting or running deployment can be canceled.",
                d.state.label().to_lowercase()
            ))
        })?;
        let why = format!("canceled by {actor}");
        if !storage::deployments::transition_deployment(conn, id, d.state, to, Some(&why))? {
            return Err(EngineError::Conflict(format!(
                "Deployment #{id} changed state meanwhile; try again."
            )));
        }
        storage::deployments::close_task_runs_of_deployment(conn, id, TaskRunState::Canceled)?;
        close_for_deployment(conn, &pipeline.name, id, ApprovalState::Canceled, actor)?;
        storage::append_audit(
            conn,
            actor,
            "deployment.cancel",
            &subject(&pipeline.name, id),
            &format!("from={}", d.state.as_str()),
        )?;
        find(conn, id)
    })
}

/// The request that redeploys deployment `id`: the same release to the
/// same stage, trigger `redeploy`.
pub fn redeploy_request(
    conn: &mut DbConn,
    id: i64,
    actor: &str,
) -> Result<DeployRequest, EngineError> {
    let d = find(conn, id)?;
    let pipeline = storage::pipeline_by_id(conn, d.pipeline_id)?;
    let release = storage::find_release_by_id(conn, d.release_id)?
        .ok_or_else(|| EngineError::NotFound(format!("Deployment #{id} has no release.")))?;
    Ok(DeployRequest {
        pipeline: pipeline.name,
        release: release.version,
        stage: d.stage,
        trigger: "redeploy".into(),
        requested_by: actor.to_string(),
        reason: None,
        operation: SlotOperation::from_json(d.operation.as_deref()),
        override_reason: None,
    })
}

// ---------------------------------------------------------------------------
// Reading deployments back
// ---------------------------------------------------------------------------

/// A deployment with its release and tasks, for pages and the API.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentDetail {
    pub pipeline: String,
    /// The release's version.
    pub release: String,
    pub deployment: DeploymentRow,
    /// The version of the release that superseded it.
    pub superseded_by: Option<String>,
    /// In order.
    pub tasks: Vec<TaskRunRow>,
}

/// One deployment with its release, tasks and superseding release.
pub fn deployment_detail(conn: &mut DbConn, id: i64) -> Result<DeploymentDetail, EngineError> {
    let deployment = find(conn, id)?;
    let pipeline = storage::pipeline_by_id(conn, deployment.pipeline_id)?;
    let release = storage::find_release_by_id(conn, deployment.release_id)?
        .map(|r| r.version)
        .unwrap_or_default();
    let superseded_by = match deployment.superseded_by {
        Some(rid) => storage::find_release_by_id(conn, rid)?.map(|r| r.version),
        None => None,
    };
    let tasks = storage::deployments::task_runs_of_deployment(conn, id)?;
    Ok(DeploymentDetail {
        pipeline: pipeline.name,
        release,
        deployment,
        superseded_by,
        tasks,
    })
}

/// One chunk of a deployment's log (`jobs::LogChunk`).
pub type DeploymentLogChunk = LogChunk;

/// A deployment's log after a cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentLog {
    pub deployment: DeploymentRow,
    pub chunks: Vec<DeploymentLogChunk>,
    /// Whether the deployment ended: nothing more will be written once the
    /// chunks are read.
    pub finished: bool,
}

/// The chunks of a deployment's log with `seq > after`, at most `limit`.
pub fn deployment_log(
    conn: &mut DbConn,
    id: i64,
    after: i64,
    limit: i64,
) -> Result<DeploymentLog, EngineError> {
    let deployment = find(conn, id)?;
    let tasks = storage::deployments::task_runs_of_deployment(conn, id)?;
    let rows: Vec<LogChunkRow> =
        storage::deployments::log_chunks_of_deployment_after(conn, id, after, limit)?;
    let chunks = log_chunks(&tasks, rows);
    Ok(DeploymentLog {
        finished: deployment.state.is_terminal(),
        deployment,
        chunks,
    })
}
