//! Deployments: one attempt to deploy one release to one stage.
use diesel::dsl::max;
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now, write_transaction};
use super::models::DeploymentRow;
use super::schema::deployments;
use crate::domain::DeploymentState;

/// A deployment to insert; `attempt` and `created_at` are set by
/// [`insert_deployment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    pub pipeline_id: i64,
    pub release_id: i64,
    pub stage: String,
    pub state: DeploymentState,
    /// What started it: `manual`, `schedule`, `after:build`, `rollback`…
    pub trigger: String,
    pub requested_by: String,
    /// Why (required for a rollback).
    pub reason: Option<String>,
}

/// Inserts a deployment as the next attempt of its release in its stage.
pub fn insert_deployment(
    conn: &mut DbConn,
    deployment: &NewDeployment,
) -> Result<DeploymentRow, StorageError> {
    write_transaction(conn, |conn| {
        let last: Option<i32> = deployments::table
            .filter(deployments::release_id.eq(deployment.release_id))
            .filter(deployments::stage.eq(&deployment.stage))
            .select(max(deployments::attempt))
            .first(conn)?;
        let attempt = last.unwrap_or(0) + 1;
        let created_at = now();
        let (id,): (i64,) = diesel::insert_into(deployments::table)
            .values((
                deployments::pipeline_id.eq(deployment.pipeline_id),
                deployments::release_id.eq(deployment.release_id),
                deployments::stage.eq(&deployment.stage),
                deployments::attempt.eq(attempt),
                deployments::state.eq(deployment.state.as_str()),
                deployments::trigger.eq(&deployment.trigger),
                deployments::requested_by.eq(&deployment.requested_by),
                deployments::reason.eq(&deployment.reason),
                deployments::created_at.eq(created_at),
            ))
            .returning((deployments::id,))
            .get_result(conn)
            .map_err(|e| {
                StorageError::from(e).conflict_as(|| {
                    format!(
                        "another deployment to {} was created at the same time",
                        deployment.stage
                    )
                })
            })?;
        Ok(DeploymentRow {
            id,
            pipeline_id: deployment.pipeline_id,
            release_id: deployment.release_id,
            stage: deployment.stage.clone(),
            attempt,
            state: deployment.state,
            trigger: deployment.trigger.clone(),
            requested_by: deployment.requested_by.clone(),
            reason: deployment.reason.clone(),
            superseded_by: None,
            runner: None,
            heartbeat_at: None,
            created_at,
            started_at: None,
            finished_at: None,
        })
    })
}

/// Every deployment of a release, oldest first.
pub fn deployments_of_release(
    conn: &mut DbConn,
    release_id: i64,
) -> Result<Vec<DeploymentRow>, StorageError> {
    Ok(deployments::table
        .filter(deployments::release_id.eq(release_id))
        .order(deployments::id.asc())
        .select(DeploymentRow::as_select())
        .load(conn)?)
}

pub fn find_deployment(conn: &mut DbConn, id: i64) -> Result<Option<DeploymentRow>, StorageError> {
    Ok(deployments::table
        .find(id)
        .select(DeploymentRow::as_select())
        .first(conn)
        .optional()?)
}

/// What runs in each stage of a pipeline now: per stage, the newest
/// succeeded deployment (ordered by stage name).
pub fn latest_deployment_per_stage(
    conn: &mut DbConn,
    pipeline_id: i64,
) -> Result<Vec<DeploymentRow>, StorageError> {
    let newest = diesel::alias!(deployments as newest);
    let newest_ids = newest
        .filter(newest.field(deployments::pipeline_id).eq(pipeline_id))
        .filter(
            newest
                .field(deployments::state)
                .eq(DeploymentState::Succeeded.as_str()),
        )
        .group_by(newest.field(deployments::stage))
        .select(max(newest.field(deployments::id)));
    Ok(deployments::table
        .filter(deployments::id.nullable().eq_any(newest_ids))
        .order(deployments::stage.asc())
        .select(DeploymentRow::as_select())
        .load(conn)?)
}
