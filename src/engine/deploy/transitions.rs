//! Every change of a deployment's state: the domain's transition applied
//! to its row in one transaction with its audit record (and the approvals
//! it closes), and the small reads the other deployment modules share.
//! Everything in `deploy/` moves a deployment through here.

use crate::domain::{
    ApprovalState, DeploymentEvent, DeploymentState, PipelineDefinition, Stage, TaskRunState,
};
use crate::engine::{ENGINE_ACTOR, EngineError, pipelines};
use crate::storage::approvals as approval_store;
use crate::storage::{self, DbConn, DeploymentRow, ReleaseRow};

/// The audit subject of a deployment.
pub fn subject(pipeline: &str, id: i64) -> String {
    format!("deployment:{pipeline}#{id}")
}

/// The audit action of an event: `deployment.start`, ….
pub(crate) fn action(event: DeploymentEvent) -> String {
    format!("deployment.{}", event.as_str())
}

/// The domain's transition, as an engine error.
pub(crate) fn transition(
    from: DeploymentState,
    event: DeploymentEvent,
) -> Result<DeploymentState, EngineError> {
    from.transition(event)
        .map_err(|e| EngineError::Conflict(e.to_string()))
}

/// A deployment by id.
pub fn find(conn: &mut DbConn, id: i64) -> Result<DeploymentRow, EngineError> {
    storage::find_deployment(conn, id)?
        .ok_or_else(|| EngineError::NotFound(format!("There is no deployment #{id}.")))
}

/// `running → interrupted` with `reason` (one transaction, `deployment.interrupt`).
pub(crate) fn interrupt(
    conn: &mut DbConn,
    d: &DeploymentRow,
    reason: &str,
) -> Result<bool, EngineError> {
    end_running(
        conn,
        d,
        DeploymentEvent::Interrupt,
        TaskRunState::Interrupted,
        reason,
    )
}

/// Ends a running deployment by `event` (fail, interrupt) with `reason`:
/// its open task runs are closed as `tasks`, with the audit record, in one
/// transaction. `false` when it left `running` meanwhile (canceled or
/// interrupted: that state stands).
pub(crate) fn end_running(
    conn: &mut DbConn,
    d: &DeploymentRow,
    event: DeploymentEvent,
    tasks: TaskRunState,
    reason: &str,
) -> Result<bool, EngineError> {
    let (from, to) = (
        DeploymentState::Running,
        transition(DeploymentState::Running, event)?,
    );
    storage::write_transaction(conn, |conn| {
        if !storage::deployments::transition_deployment(conn, d.id, from, to, Some(reason))? {
            return Ok(false);
        }
        storage::deployments::close_task_runs_of_deployment(conn, d.id, tasks)?;
        let pipeline = storage::pipeline_by_id(conn, d.pipeline_id)?;
        let subject = subject(&pipeline.name, d.id);
        storage::append_audit(conn, ENGINE_ACTOR, &action(event), &subject, reason)?;
        Ok(true)
    })
}

/// Moves a deployment by `event` from the state it is in, recording
/// `error`, with its audit record by `actor` (one transaction). `false`
/// when another actor moved it first.
pub(crate) fn apply(
    conn: &mut DbConn,
    d: &DeploymentRow,
    from: DeploymentState,
    event: DeploymentEvent,
    actor: &str,
    error: Option<&str>,
    detail: &str,
) -> Result<bool, EngineError> {
    let to = transition(from, event)?;
    storage::write_transaction(conn, |conn| {
        if !storage::deployments::transition_deployment(conn, d.id, from, to, error)? {
            return Ok(false);
        }
        let pipeline = storage::pipeline_by_id(conn, d.pipeline_id)?;
        storage::append_audit(
            conn,
            actor,
            &action(event),
            &subject(&pipeline.name, d.id),
            detail,
        )?;
        Ok(true)
    })
}

/// The stage a deployment runs: as the release's own definition revision
/// has it (releases keep the revision they were built with), else as the
/// current definition has it (a stage added after the release was built).
pub fn stage_of(
    release_definition: Option<&PipelineDefinition>,
    current: &PipelineDefinition,
    stage: &str,
) -> Option<Stage> {
    release_definition
        .and_then(|d| d.stage(stage))
        .or_else(|| current.stage(stage))
        .cloned()
}

/// The definition a release was built with, or `None` when its stored
/// revision no longer parses (the database was changed by hand; logged):
/// callers then use the current definition. A database error is an error,
/// never `None`.
pub fn built_with(
    conn: &mut DbConn,
    pipeline: &str,
    release: &ReleaseRow,
) -> Result<Option<PipelineDefinition>, EngineError> {
    let revision = storage::revision_by_id(conn, release.revision_id)?;
    match pipelines::parse_stored(&revision.yaml, pipeline, revision.revision) {
        Ok(definition) => Ok(Some(definition)),
        Err(e) => {
            tracing::warn!(
                pipeline,
                release = %release.version,
                revision = revision.revision,
                error = %e,
                "a release's stored revision does not parse; using the current definition"
            );
            Ok(None)
        }
    }
}

/// The release in a stage now: the one of its newest succeeded deployment.
pub(crate) fn current_release(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &str,
) -> Result<Option<ReleaseRow>, EngineError> {
    match storage::deployments::current_deployment(conn, pipeline_id, stage)? {
        Some(d) => Ok(storage::find_release_by_id(conn, d.release_id)?),
        None => Ok(None),
    }
}

/// The audit subject of an approval.
pub fn approval_subject(pipeline: &str, id: i64) -> String {
    format!("approval:{pipeline}#{id}")
}

/// Closes the pending approvals of a deployment that was superseded or
/// canceled (inside the caller's transaction), audited by `actor`.
pub fn close_for_deployment(
    conn: &mut DbConn,
    pipeline: &str,
    deployment_id: i64,
    state: ApprovalState,
    actor: &str,
) -> Result<(), EngineError> {
    let reason = match state {
        ApprovalState::Superseded => "the deployment was superseded by a newer release",
        _ => "the deployment was canceled",
    };
    for id in approval_store::close_approvals_of_deployment(
        conn,
        deployment_id,
        state,
        Some(reason),
        actor,
    )? {
        storage::append_audit(
            conn,
            actor,
            &format!("approval.{}", state.as_str()),
            &approval_subject(pipeline, id),
            &format!("deployment=#{deployment_id} {reason}"),
        )?;
    }
    Ok(())
}
