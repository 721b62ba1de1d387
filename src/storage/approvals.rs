//! Approvals and their decisions (issue 5). An approval is `pending` until
//! it closes (`approved`, `rejected`, `timed_out`, `superseded`,
//! `canceled`); every close is conditional on `pending`, and a decision
//! first touches its approval's row ([`lock_pending`]), so two approvers
//! acting at once are serialized by the database and see each other's
//! decisions.
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now};
use super::models::{ApprovalDecisionRow, ApprovalRow, DeploymentRow};
use super::schema::{approval_decisions, approvals, deployments};
use crate::domain::{ApprovalState, DeploymentState, Phase};

/// The state of an approval still taking decisions.
const PENDING: &str = ApprovalState::Pending.as_str();

/// An approval to insert.
#[derive(Clone, Debug)]
pub struct NewApproval {
    pub deployment_id: i64,
    pub pipeline_id: i64,
    pub phase: Phase,
    pub approvers: String,
    pub policy: String,
    pub requester_can_approve: bool,
    pub exclude_authors: bool,
    pub fresh_sign_in_secs: Option<i64>,
    pub requested_by: String,
    pub base_release: Option<String>,
    pub commits: String,
    pub deadline: NaiveDateTime,
}

/// A decision to insert.
#[derive(Clone, Debug)]
pub struct NewDecision<'a> {
    pub approval_id: i64,
    pub user_name: &'a str,
    pub groups: String,
    pub decision: &'a str,
    pub comment: Option<&'a str>,
    pub defer_until: Option<NaiveDateTime>,
}

/// Inserts a `pending` approval; returns its id.
pub fn insert_approval(conn: &mut DbConn, a: &NewApproval) -> Result<i64, StorageError> {
    Ok(diesel::insert_into(approvals::table)
        .values((
            approvals::deployment_id.eq(a.deployment_id),
            approvals::pipeline_id.eq(a.pipeline_id),
            approvals::phase.eq(a.phase.as_str()),
            approvals::state.eq(PENDING),
            approvals::approvers.eq(&a.approvers),
            approvals::policy.eq(&a.policy),
            approvals::requester_can_approve.eq(a.requester_can_approve),
            approvals::exclude_authors.eq(a.exclude_authors),
            approvals::fresh_sign_in_secs.eq(a.fresh_sign_in_secs),
            approvals::requested_by.eq(&a.requested_by),
            approvals::base_release.eq(a.base_release.as_deref()),
            approvals::commits.eq(&a.commits),
            approvals::deadline.eq(a.deadline),
            approvals::created_at.eq(now()),
        ))
        .returning(approvals::id)
        .get_result(conn)?)
}

/// One approval by id.
pub fn find_approval(conn: &mut DbConn, id: i64) -> Result<Option<ApprovalRow>, StorageError> {
    Ok(approvals::table
        .find(id)
        .select(ApprovalRow::as_select())
        .first(conn)
        .optional()?)
}

/// The approval of a deployment's phase, if one was requested.
pub fn approval_of(
    conn: &mut DbConn,
    deployment_id: i64,
    phase: Phase,
) -> Result<Option<ApprovalRow>, StorageError> {
    Ok(approvals::table
        .filter(approvals::deployment_id.eq(deployment_id))
        .filter(approvals::phase.eq(phase.as_str()))
        .select(ApprovalRow::as_select())
        .first(conn)
        .optional()?)
}

/// Every approval of a deployment, oldest first.
pub fn approvals_of_deployment(
    conn: &mut DbConn,
    deployment_id: i64,
) -> Result<Vec<ApprovalRow>, StorageError> {
    Ok(approvals::table
        .filter(approvals::deployment_id.eq(deployment_id))
        .order(approvals::id.asc())
        .select(ApprovalRow::as_select())
        .load(conn)?)
}

/// Every pending approval, oldest first.
pub fn pending_approvals(conn: &mut DbConn) -> Result<Vec<ApprovalRow>, StorageError> {
    Ok(approvals::table
        .filter(approvals::state.eq(PENDING))
        .order(approvals::id.asc())
        .select(ApprovalRow::as_select())
        .load(conn)?)
}

/// Takes the row lock of a pending approval (a no-op update), so decisions
/// on it are serialized; `false` when it is not pending any more.
pub fn lock_pending(conn: &mut DbConn, id: i64) -> Result<bool, StorageError> {
    let n = diesel::update(
        approvals::table
            .filter(approvals::id.eq(id))
            .filter(approvals::state.eq(PENDING)),
    )
    .set(approvals::state.eq(PENDING))
    .execute(conn)?;
    Ok(n == 1)
}

/// Closes a pending approval; `false` when it was closed already.
pub fn close_approval(
    conn: &mut DbConn,
    id: i64,
    state: ApprovalState,
    reason: Option<&str>,
    by: &str,
) -> Result<bool, StorageError> {
    let n = diesel::update(
        approvals::table
            .filter(approvals::id.eq(id))
            .filter(approvals::state.eq(PENDING)),
    )
    .set((
        approvals::state.eq(state.as_str()),
        approvals::reason.eq(reason),
        approvals::closed_by.eq(by),
        approvals::closed_at.eq(Some(now())),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Closes every pending approval of a deployment (it was superseded or
/// canceled); returns the ids closed.
pub fn close_approvals_of_deployment(
    conn: &mut DbConn,
    deployment_id: i64,
    state: ApprovalState,
    reason: Option<&str>,
    by: &str,
) -> Result<Vec<i64>, StorageError> {
    let ids: Vec<i64> = approvals::table
        .filter(approvals::deployment_id.eq(deployment_id))
        .filter(approvals::state.eq(PENDING))
        .select(approvals::id)
        .load(conn)?;
    let mut closed = Vec::new();
    for id in ids {
        if close_approval(conn, id, state, reason, by)? {
            closed.push(id);
        }
    }
    Ok(closed)
}

/// Marks that the "about to time out" notice went out; `false` if it had.
pub fn mark_warned(conn: &mut DbConn, id: i64) -> Result<bool, StorageError> {
    let n = diesel::update(
        approvals::table
            .filter(approvals::id.eq(id))
            .filter(approvals::state.eq(PENDING))
            .filter(approvals::warned_at.is_null()),
    )
    .set(approvals::warned_at.eq(Some(now())))
    .execute(conn)?;
    Ok(n == 1)
}

/// Records one decision.
pub fn insert_decision(conn: &mut DbConn, d: &NewDecision<'_>) -> Result<i64, StorageError> {
    Ok(diesel::insert_into(approval_decisions::table)
        .values((
            approval_decisions::approval_id.eq(d.approval_id),
            approval_decisions::user_name.eq(d.user_name),
            approval_decisions::groups.eq(&d.groups),
            approval_decisions::decision.eq(d.decision),
            approval_decisions::comment.eq(d.comment),
            approval_decisions::defer_until.eq(d.defer_until),
            approval_decisions::created_at.eq(now()),
        ))
        .returning(approval_decisions::id)
        .get_result(conn)?)
}

/// The decisions on an approval, oldest first.
pub fn decisions_of(
    conn: &mut DbConn,
    approval_id: i64,
) -> Result<Vec<ApprovalDecisionRow>, StorageError> {
    Ok(approval_decisions::table
        .filter(approval_decisions::approval_id.eq(approval_id))
        .order(approval_decisions::id.asc())
        .select(ApprovalDecisionRow::as_select())
        .load(conn)?)
}

/// The decisions on several approvals, oldest first.
pub fn decisions_of_many(
    conn: &mut DbConn,
    approval_ids: &[i64],
) -> Result<Vec<ApprovalDecisionRow>, StorageError> {
    Ok(approval_decisions::table
        .filter(approval_decisions::approval_id.eq_any(approval_ids))
        .order(approval_decisions::id.asc())
        .select(ApprovalDecisionRow::as_select())
        .load(conn)?)
}

/// A person's decisions, newest first, with their approvals (keyset: ids
/// below `before`).
pub fn decisions_by_user(
    conn: &mut DbConn,
    user: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<(ApprovalDecisionRow, ApprovalRow)>, StorageError> {
    let mut q = approval_decisions::table
        .inner_join(approvals::table)
        .filter(approval_decisions::user_name.eq(user))
        .into_boxed();
    if let Some(before) = before {
        q = q.filter(approval_decisions::id.lt(before));
    }
    Ok(q.order(approval_decisions::id.desc())
        .limit(limit.max(0))
        .select((ApprovalDecisionRow::as_select(), ApprovalRow::as_select()))
        .load(conn)?)
}

/// Deployments waiting for approval whose approval before the stage is
/// approved: the dispatcher claims them (or starts their gates).
pub fn deployments_past_approvals(
    conn: &mut DbConn,
    limit: i64,
) -> Result<Vec<DeploymentRow>, StorageError> {
    let approved = approvals::table
        .filter(approvals::phase.eq(Phase::Before.as_str()))
        .filter(approvals::state.eq(ApprovalState::Approved.as_str()))
        .select(approvals::deployment_id);
    Ok(deployments::table
        .filter(deployments::state.eq(DeploymentState::WaitingForApproval.as_str()))
        .filter(deployments::started_at.is_null())
        .filter(deployments::id.eq_any(approved))
        .order(deployments::id.asc())
        .limit(limit.max(0))
        .select(DeploymentRow::as_select())
        .load(conn)?)
}

/// Deployments waiting for approval with no approval row for the phase
/// they are in yet (`before` when they have not started, else `after`).
pub fn deployments_without_approval(
    conn: &mut DbConn,
    limit: i64,
) -> Result<Vec<DeploymentRow>, StorageError> {
    let waiting: Vec<DeploymentRow> = deployments::table
        .filter(deployments::state.eq(DeploymentState::WaitingForApproval.as_str()))
        .order(deployments::id.asc())
        .limit(limit.max(0))
        .select(DeploymentRow::as_select())
        .load(conn)?;
    if waiting.is_empty() {
        return Ok(waiting);
    }
    let ids: Vec<i64> = waiting.iter().map(|d| d.id).collect();
    let existing: Vec<(i64, Phase)> = approvals::table
        .filter(approvals::deployment_id.eq_any(&ids))
        .select((approvals::deployment_id, approvals::phase))
        .load(conn)?;
    Ok(waiting
        .into_iter()
        .filter(|d| {
            let phase = phase_of(d);
            !existing.iter().any(|(id, p)| *id == d.id && *p == phase)
        })
        .collect())
}

/// The phase a waiting deployment is in: `after` once its tasks started.
pub fn phase_of(d: &DeploymentRow) -> Phase {
    Phase::of_started(d.started_at.is_some())
}

/// Pending approvals whose deployment is no longer waiting for approval
/// (superseded, canceled … by a path that did not close them).
pub fn orphaned_approvals(
    conn: &mut DbConn,
) -> Result<Vec<(ApprovalRow, DeploymentState)>, StorageError> {
    Ok(approvals::table
        .inner_join(deployments::table)
        .filter(approvals::state.eq(PENDING))
        .filter(deployments::state.ne(DeploymentState::WaitingForApproval.as_str()))
        .select((ApprovalRow::as_select(), deployments::state))
        .load(conn)?)
}
