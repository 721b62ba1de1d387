//! Approvals (issue 5): the sign-offs a deployment waits for before or
//! after its stage.
//!
//! - **Request.** A deployment that enters `waiting_for_approval` gets an
//!   approval for its phase (`before` until its tasks started, else
//!   `after`) from the deployment dispatcher ([`open_waiting`]): a snapshot
//!   of the stage's terms (approvers, policy, timeout → deadline, fresh
//!   sign-in, separation of duties), the release in the stage now and the
//!   commits this release adds over it (from the pipeline's git mirror).
//!   `approval.request` is audited and notified in the same transaction.
//! - **Decide.** [`decide`] records one person's immutable decision
//!   (approve, reject with a comment, defer to a time) after the domain
//!   says they may ([`crate::domain::approval::may_decide`]); the
//!   approval's row is locked first, so concurrent approvers are
//!   serialized and the outcome is computed from every decision so far.
//!   Approved → the deployment goes on ([`crate::domain::rules::after_approval`]):
//!   its gates, its tasks (the dispatcher claims it) or done; rejected →
//!   the deployment ends `rejected` with the comment.
//! - **Time.** [`sweep`] rejects approvals past their deadline ("timed
//!   out"), sends the "about to time out" notice once, and closes pending
//!   approvals whose deployment ended by another path (superseded,
//!   canceled) as such — never as rejected.

use std::path::Path;
use std::process::{Command, Stdio};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::approval::{self, Ballot, Decider, Decision, NotAllowed, Outcome};
use crate::domain::{
    ApprovalPolicy, ApprovalState, Approver, DeploymentEvent, DeploymentState, Duration, Phase,
    PipelineDefinition, Stage, Upstream, rules,
};
use crate::engine::ENGINE_ACTOR;
use crate::engine::builds::git;
use crate::engine::deploy::notify::{self, Notice, NoticeKind};
use crate::engine::deploy::requests;
use crate::engine::deploy::transitions::{
    self, approval_subject, close_for_deployment, subject, transition,
};
use crate::engine::{EngineError, pipelines};
use crate::storage::approvals::{self as store, NewApproval, NewDecision};
use crate::storage::{self, ApprovalDecisionRow, ApprovalRow, DbConn, DeploymentRow, ReleaseRow};

/// How many commits an approval keeps.
const MAX_COMMITS: usize = 100;
/// The longest comment kept.
const MAX_COMMENT: usize = 4_000;

/// A commit the release adds over the one in the stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitView {
    pub sha: String,
    /// `Name <email>`.
    pub author: String,
    /// The first line of the message.
    pub subject: String,
}

impl CommitView {
    /// The first 10 characters of the id.
    pub fn short(&self) -> &str {
        &self.sha[..self.sha.len().min(10)]
    }
}

/// The stage's terms as the approval stored them.
pub fn terms(row: &ApprovalRow) -> Result<ApprovalPolicy, EngineError> {
    let approvers = approver_list(&row.approvers)?;
    let policy = approval::parse_mode(&row.policy)
        .map_err(|e| EngineError::Invalid(format!("approval #{}: {e}", row.id)))?;
    let timeout_secs = (row.deadline - row.created_at).num_seconds().max(0);
    Ok(ApprovalPolicy {
        approvers,
        policy,
        timeout: Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0)),
        fresh_sign_in: row
            .fresh_sign_in_secs
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs),
        requester_can_approve: row.requester_can_approve,
        exclude_authors: row.exclude_authors,
    })
}

fn approver_list(text: &str) -> Result<Vec<Approver>, EngineError> {
    serde_json::from_str(text)
        .map_err(|e| EngineError::Invalid(format!("stored approvers are not readable: {e}")))
}

/// The commits stored with an approval.
pub fn commits(row: &ApprovalRow) -> Vec<CommitView> {
    serde_json::from_str(&row.commits).unwrap_or_default()
}

fn groups_of(row: &ApprovalDecisionRow) -> Vec<String> {
    serde_json::from_str(&row.groups).unwrap_or_default()
}

fn ballots(decisions: &[ApprovalDecisionRow]) -> Vec<Ballot> {
    decisions
        .iter()
        .filter_map(|d| {
            Some(Ballot {
                user: d.user_name.clone(),
                groups: groups_of(d),
                decision: d.decision.parse().ok()?,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Requesting
// ---------------------------------------------------------------------------

/// Gives every deployment waiting for approval without one its approval.
/// Returns how many were requested.
pub(crate) fn open_waiting(conn: &mut DbConn, data_dir: &Path) -> Result<usize, EngineError> {
    let mut opened = 0;
    for d in store::deployments_without_approval(conn, 200)? {
        match open_one(conn, &d, data_dir) {
            Ok(true) => opened += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(deployment = d.id, error = %e, "cannot request an approval");
            }
        }
    }
    Ok(opened)
}

/// What a waiting deployment's approval is about.
struct Context {
    pipeline: String,
    definition: PipelineDefinition,
    release: ReleaseRow,
    stage: Stage,
}

fn context(conn: &mut DbConn, d: &DeploymentRow) -> Result<Context, EngineError> {
    let pipeline = storage::pipeline_by_id(conn, d.pipeline_id)?;
    let release = storage::find_release_by_id(conn, d.release_id)?
        .ok_or_else(|| EngineError::NotFound(format!("Deployment #{} has no release.", d.id)))?;
    let definition = pipelines::load(conn, &pipeline.name)?.definition;
    let built_with = transitions::built_with(conn, &pipeline.name, &release)?;
    let stage =
        transitions::stage_of(built_with.as_ref(), &definition, &d.stage).ok_or_else(|| {
            EngineError::NotFound(format!(
                "{} has no stage named `{}` any more.",
                pipeline.name, d.stage
            ))
        })?;
    Ok(Context {
        pipeline: pipeline.name,
        definition,
        release,
        stage,
    })
}

fn open_one(conn: &mut DbConn, d: &DeploymentRow, data_dir: &Path) -> Result<bool, EngineError> {
    let ctx = context(conn, d)?;
    let phase = store::phase_of(d);
    let policy = ctx.stage.approvals.of(phase).cloned();
    let base = transitions::current_release(conn, d.pipeline_id, &d.stage)?;
    let commits = match &policy {
        Some(_) => commits_between(data_dir, &ctx.pipeline, base.as_ref(), &ctx.release),
        None => Vec::new(),
    };
    let now = storage::conn::now();
    storage::write_transaction(conn, |conn| {
        let Some(current) = storage::find_deployment(conn, d.id)? else {
            return Ok(false);
        };
        if current.state != DeploymentState::WaitingForApproval
            || store::approval_of(conn, d.id, phase)?.is_some()
        {
            return Ok(false);
        }
        let (terms, snapshot) = match &policy {
            Some(p) => (p.clone(), true),
            // The stage no longer asks for approval: the question closes
            // approved at once, and says so.
            None => (
                ApprovalPolicy {
                    approvers: Vec::new(),
                    policy: Default::default(),
                    timeout: Duration::ZERO,
                    fresh_sign_in: None,
                    requester_can_approve: false,
                    exclude_authors: false,
                },
                false,
            ),
        };
        let timeout = chrono::Duration::seconds(
            i64::try_from(terms.timeout.as_secs()).unwrap_or(i64::MAX / 1_000_000),
        );
        let new = NewApproval {
            deployment_id: d.id,
            pipeline_id: d.pipeline_id,
            phase,
            approvers: serde_json::to_string(&terms.approvers).unwrap_or_else(|_| "[]".into()),
            policy: approval::mode_text(terms.policy),
            requester_can_approve: terms.requester_can_approve,
            exclude_authors: terms.exclude_authors,
            fresh_sign_in_secs: terms
                .fresh_sign_in
                .map(|f| i64::try_from(f.as_secs()).unwrap_or(i64::MAX)),
            requested_by: d.requested_by.clone(),
            base_release: base.as_ref().map(|b| b.version.clone()),
            commits: serde_json::to_string(&commits).unwrap_or_else(|_| "[]".into()),
            deadline: now + timeout,
        };
        let id = store::insert_approval(conn, &new)?;
        let row = store::find_approval(conn, id)?
            .ok_or_else(|| EngineError::NotFound(format!("approval #{id} vanished")))?;
        let list = terms
            .approvers
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        storage::append_audit(
            conn,
            ENGINE_ACTOR,
            "approval.request",
            &approval_subject(&ctx.pipeline, id),
            &format!(
                "deployment=#{} stage={} release={} phase={phase} approvers=[{list}] policy={} deadline={}",
                d.id,
                d.stage,
                ctx.release.version,
                approval::mode_text(terms.policy),
                new.deadline.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        )?;
        if snapshot {
            notify::enqueue(
                conn,
                &ctx.definition,
                &notice(NoticeKind::ApprovalRequested, &ctx, &row, &current),
            )?;
        } else {
            let reason = "the stage no longer asks for approval";
            close(
                conn,
                &ctx,
                &row,
                &current,
                ApprovalState::Approved,
                reason,
                ENGINE_ACTOR,
            )?;
        }
        Ok(true)
    })
}

/// The commits `release` adds over `base` (newest first), from the
/// pipeline's mirror; the release's own commit when the mirror cannot say.
fn commits_between(
    data_dir: &Path,
    pipeline: &str,
    base: Option<&ReleaseRow>,
    release: &ReleaseRow,
) -> Vec<CommitView> {
    let own = || {
        vec![CommitView {
            sha: release.commit_sha.clone(),
            author: release.author.clone(),
            subject: release.message.lines().next().unwrap_or("").to_string(),
        }]
    };
    if base.is_some_and(|b| b.commit_sha == release.commit_sha) {
        return Vec::new();
    }
    let mirror = git::mirror_path(data_dir, pipeline);
    if !mirror.is_dir() || !git::is_commit_id(&release.commit_sha) {
        return own();
    }
    let range = match base {
        Some(b) if git::is_commit_id(&b.commit_sha) => {
            format!("{}..{}", b.commit_sha, release.commit_sha)
        }
        _ => release.commit_sha.clone(),
    };
    let limit = format!("--max-count={MAX_COMMITS}");
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(&mirror)
        .args([
            "log",
            "--no-color",
            &limit,
            "--format=%H%x00%an <%ae>%x00%s%x1e",
            &range,
            "--",
        ])
        .stdin(Stdio::null())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let list: Vec<CommitView> = text
                .split('\x1e')
                .filter_map(|entry| {
                    let mut parts = entry.trim_start_matches('\n').splitn(3, '\0');
                    let sha = parts.next()?.trim().to_string();
                    if !git::is_commit_id(&sha) {
                        return None;
                    }
                    Some(CommitView {
                        sha,
                        author: parts.next().unwrap_or("").to_string(),
                        subject: parts.next().unwrap_or("").trim().to_string(),
                    })
                })
                .collect();
            if list.is_empty() && base.is_none() {
                own()
            } else {
                list
            }
        }
        _ => own(),
    }
}

fn notice(kind: NoticeKind, ctx: &Context, row: &ApprovalRow, d: &DeploymentRow) -> Notice {
    Notice {
        kind,
        pipeline: ctx.pipeline.clone(),
        release: ctx.release.version.clone(),
        stage: d.stage.clone(),
        phase: row.phase,
        approval_id: row.id,
        deployment_id: d.id,
        requested_by: row.requested_by.clone(),
        approvers: approver_list(&row.approvers)
            .unwrap_or_default()
            .iter()
            .map(|a| a.to_string())
            .collect(),
        outcome: None,
        decided_by: None,
        comment: None,
        deadline: row.deadline,
        path: format!("/approvals/{}", row.id),
    }
}

// ---------------------------------------------------------------------------
// Deciding
// ---------------------------------------------------------------------------

/// The person deciding.
#[derive(Clone, Debug)]
pub struct Person {
    pub user: String,
    pub groups: Vec<String>,
    pub email: Option<String>,
    /// When this person last signed in through SSO in this session.
    pub sso_at: Option<DateTime<Utc>>,
}

/// One decision as asked for.
#[derive(Clone, Debug)]
pub struct DecisionInput {
    pub decision: Decision,
    pub comment: Option<String>,
    /// For `defer`: until when.
    pub until: Option<DateTime<Utc>>,
}

/// What a decision led to.
#[derive(Clone, Debug)]
pub struct Decided {
    pub approval: ApprovalRow,
    pub state: ApprovalState,
    /// Who else is needed while it stays pending.
    pub needed: Option<String>,
    /// Whether the deployment moved on (so the dispatcher should look).
    pub moved: bool,
}

/// Why a decision was refused, for the web layer (which sends a person
/// needing a fresh SSO sign-in there rather than showing an error).
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The stage asks for an SSO sign-in within this long.
    #[error("{message}")]
    FreshSignIn { max_age: Duration, message: String },
}

impl From<storage::StorageError> for DecideError {
    fn from(e: storage::StorageError) -> Self {
        DecideError::Engine(e.into())
    }
}

impl From<diesel::result::Error> for DecideError {
    fn from(e: diesel::result::Error) -> Self {
        DecideError::Engine(e.into())
    }
}

impl From<DecideError> for EngineError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::Engine(e) => e,
            DecideError::FreshSignIn { message, .. } => EngineError::Forbidden(message),
        }
    }
}

/// Records `person`'s decision on approval `id`, in one transaction with
/// its audit record, the approval's outcome and the deployment's move.
pub fn decide(
    conn: &mut DbConn,
    id: i64,
    person: &Person,
    input: &DecisionInput,
) -> Result<Decided, DecideError> {
    let comment = input
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| c.chars().take(MAX_COMMENT).collect::<String>());
    if input.decision == Decision::Reject && comment.is_none() {
        return Err(EngineError::Invalid(
            "A rejection needs a comment saying why (field `comment`).".into(),
        )
        .into());
    }
    let now = Utc::now();
    let defer_until = match (input.decision, input.until) {
        (Decision::Defer, None) => {
            return Err(EngineError::Invalid(
                "Deferring needs a time to come back to it (field `until`, RFC 3339).".into(),
            )
            .into());
        }
        (Decision::Defer, Some(until)) if until <= now => {
            return Err(EngineError::Invalid(format!(
                "`until` ({}) is not in the future.",
                until.format("%Y-%m-%dT%H:%M:%SZ")
            ))
            .into());
        }
        (Decision::Defer, Some(until)) => Some(until.naive_utc()),
        (_, Some(_)) => {
            return Err(EngineError::Invalid("`until` is only for `defer`.".into()).into());
        }
        (_, None) => None,
    };
    storage::write_transaction(conn, |conn| {
        let Some(row) = store::find_approval(conn, id)? else {
            return Err(EngineError::NotFound(format!("There is no approval #{id}.")).into());
        };
        if !store::lock_pending(conn, id)? {
            let state = row.state;
            return Err(EngineError::Conflict(format!(
                "Approval #{id} is {} already; decisions are no longer taken.",
                state.label().to_lowercase()
            ))
            .into());
        }
        // Read again under the lock: another decision may have landed.
        let row = store::find_approval(conn, id)?
            .ok_or_else(|| EngineError::NotFound(format!("There is no approval #{id}.")))?;
        let d = transitions::find(conn, row.deployment_id)?;
        if d.state != DeploymentState::WaitingForApproval {
            return Err(EngineError::Conflict(format!(
                "Deployment #{} is {}; it no longer waits for approval.",
                d.id,
                d.state.label().to_lowercase()
            ))
            .into());
        }
        if let Some(until) = defer_until
            && until >= row.deadline
        {
            return Err(EngineError::Invalid(format!(
                "`until` must be before the approval times out ({}).",
                row.deadline.format("%Y-%m-%d %H:%M UTC")
            ))
            .into());
        }
        let terms = terms(&row)?;
        let decisions = store::decisions_of(conn, id)?;
        let cast = ballots(&decisions);
        let authors: Vec<String> = commits(&row).into_iter().map(|c| c.author).collect();
        let email = match &person.email {
            Some(e) => Some(e.clone()),
            None => storage::find_user_by_name(conn, &person.user)?.and_then(|u| u.email),
        };
        let decider = Decider {
            user: &person.user,
            groups: &person.groups,
            email: email.as_deref(),
            sso_at: person.sso_at,
        };
        if let Err(why) = approval::may_decide(
            &terms,
            &decider,
            input.decision,
            &row.requested_by,
            &authors,
            &cast,
            now,
        ) {
            return Err(match why {
                NotAllowed::NeedsFreshSignIn(max_age) => DecideError::FreshSignIn {
                    max_age,
                    message: why.to_string(),
                },
                NotAllowed::AlreadyDecided(m) => EngineError::Conflict(m).into(),
                NotAllowed::NotListed(m) | NotAllowed::Excluded(m) => {
                    EngineError::Forbidden(m).into()
                }
            });
        }
        store::insert_decision(
            conn,
            &NewDecision {
                approval_id: id,
                user_name: &person.user,
                groups: serde_json::to_string(&person.groups).unwrap_or_else(|_| "[]".into()),
                decision: input.decision.as_str(),
                comment: comment.as_deref(),
                defer_until,
            },
        )
        .map_err(|e| {
            EngineError::from(
                e.conflict_as(|| format!("{} already decided approval #{id}.", person.user)),
            )
        })?;
        let ctx = context(conn, &d)?;
        let mut detail = format!(
            "deployment=#{} stage={} release={} phase={}",
            d.id, d.stage, ctx.release.version, row.phase
        );
        if let Some(c) = &comment {
            detail.push_str(&format!(" comment={c:?}"));
        }
        if let Some(u) = defer_until {
            detail.push_str(&format!(" until={}", u.format("%Y-%m-%dT%H:%M:%SZ")));
        }
        storage::append_audit(
            conn,
            &person.user,
            &format!("approval.{}", input.decision.as_str()),
            &approval_subject(&ctx.pipeline, id),
            &detail,
        )?;
        let mut all = cast;
        all.push(Ballot {
            user: person.user.clone(),
            groups: person.groups.clone(),
            decision: input.decision,
        });
        let (state, needed, moved) = match approval::outcome(terms.policy, &terms.approvers, &all) {
            Outcome::Pending { needed } => (ApprovalState::Pending, Some(needed), false),
            Outcome::Approved => {
                close(
                    conn,
                    &ctx,
                    &row,
                    &d,
                    ApprovalState::Approved,
                    &format!("approved by {}", person.user),
                    &person.user,
                )?;
                (ApprovalState::Approved, None, true)
            }
            Outcome::Rejected { by } => {
                let why = format!(
                    "rejected by {by}: {}",
                    comment.as_deref().unwrap_or_default()
                );
                close(
                    conn,
                    &ctx,
                    &row,
                    &d,
                    ApprovalState::Rejected,
                    &why,
                    &person.user,
                )?;
                (ApprovalState::Rejected, None, true)
            }
        };
        let approval = store::find_approval(conn, id)?.unwrap_or(row);
        Ok(Decided {
            approval,
            state,
            needed,
            moved,
        })
    })
}

/// Closes `row` as `state` and moves its deployment: approved → on
/// ([`rules::after_approval`]); rejected or timed out → `rejected`. Inside
/// the caller's transaction; notifies the decision.
fn close(
    conn: &mut DbConn,
    ctx: &Context,
    row: &ApprovalRow,
    d: &DeploymentRow,
    state: ApprovalState,
    reason: &str,
    actor: &str,
) -> Result<(), EngineError> {
    if !store::close_approval(conn, row.id, state, Some(reason), actor)? {
        return Ok(());
    }
    let after = row.phase == Phase::After;
    let subject = subject(&ctx.pipeline, d.id);
    match state {
        ApprovalState::Approved => {
            let event = rules::after_approval(&ctx.stage, after);
            // `start` is the dispatcher's claim (it checks the stage's room).
            if event != DeploymentEvent::Start {
                let to = transition(DeploymentState::WaitingForApproval, event)?;
                if storage::deployments::transition_deployment(
                    conn,
                    d.id,
                    DeploymentState::WaitingForApproval,
                    to,
                    None,
                )? {
                    storage::append_audit(
                        conn,
                        actor,
                        &format!("deployment.{}", event.as_str()),
                        &subject,
                        &format!(
                            "stage={} release={} approved ({} the stage)",
                            d.stage, ctx.release.version, row.phase
                        ),
                    )?;
                    if to == DeploymentState::Succeeded {
                        requests::request_after(
                            conn,
                            &ctx.pipeline,
                            &ctx.definition,
                            &Upstream::Stage(ctx.stage.name.clone()),
                            &ctx.release,
                        )?;
                    }
                }
            }
        }
        ApprovalState::Rejected | ApprovalState::TimedOut => {
            let to = transition(DeploymentState::WaitingForApproval, DeploymentEvent::Reject)?;
            let message = if state == ApprovalState::TimedOut {
                "timed out: nobody approved in time".to_string()
            } else {
                reason.to_string()
            };
            if storage::deployments::transition_deployment(
                conn,
                d.id,
                DeploymentState::WaitingForApproval,
                to,
                Some(&message),
            )? {
                storage::deployments::close_task_runs_of_deployment(
                    conn,
                    d.id,
                    crate::domain::TaskRunState::Skipped,
                )?;
                storage::append_audit(
                    conn,
                    actor,
                    "deployment.reject",
                    &subject,
                    &format!(
                        "stage={} release={} {message}",
                        d.stage, ctx.release.version
                    ),
                )?;
            }
        }
        _ => {}
    }
    if row.approvers != "[]" {
        let mut n = notice(NoticeKind::ApprovalDecided, ctx, row, d);
        n.outcome = Some(state.as_str().to_string());
        n.decided_by = Some(actor.to_string());
        n.comment = Some(reason.to_string());
        notify::enqueue(conn, &ctx.definition, &n)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// How long before its deadline an approval's "about to time out" notice
/// goes out: a tenth of its timeout, at most a day — but at least 5 s (or
/// half of a shorter timeout), longer than the dispatcher's 2 s look, so
/// the notice is never skipped.
pub fn warn_window(row: &ApprovalRow) -> chrono::Duration {
    let total = row.deadline - row.created_at;
    let floor = (total / 2).min(chrono::Duration::seconds(5));
    (total / 10).min(chrono::Duration::days(1)).max(floor)
}

/// Times out approvals past their deadline, sends "about to time out"
/// notices, and closes approvals whose deployment ended by another path.
/// Returns whether a deployment moved.
pub(crate) fn sweep(conn: &mut DbConn) -> Result<bool, EngineError> {
    let now = storage::conn::now();
    let mut moved = false;
    for row in store::pending_approvals(conn)? {
        if row.deadline <= now {
            let d = transitions::find(conn, row.deployment_id)?;
            if d.state != DeploymentState::WaitingForApproval {
                continue;
            }
            let ctx = match context(conn, &d) {
                Ok(ctx) => ctx,
                Err(e) => {
                    tracing::error!(approval = row.id, error = %e, "cannot time out an approval");
                    continue;
                }
            };
            storage::write_transaction(conn, |conn| {
                if !store::lock_pending(conn, row.id)? {
                    return Ok::<_, EngineError>(());
                }
                storage::append_audit(
                    conn,
                    ENGINE_ACTOR,
                    "approval.timeout",
                    &approval_subject(&ctx.pipeline, row.id),
                    &format!(
                        "deployment=#{} stage={} release={} nobody decided by {}",
                        d.id,
                        d.stage,
                        ctx.release.version,
                        row.deadline.format("%Y-%m-%dT%H:%M:%SZ")
                    ),
                )?;
                close(
                    conn,
                    &ctx,
                    &row,
                    &d,
                    ApprovalState::TimedOut,
                    "timed out",
                    ENGINE_ACTOR,
                )?;
                moved = true;
                Ok(())
            })?;
        } else if row.warned_at.is_none() && row.deadline - warn_window(&row) <= now {
            let d = transitions::find(conn, row.deployment_id)?;
            let Ok(ctx) = context(conn, &d) else {
                continue;
            };
            storage::write_transaction(conn, |conn| {
                if store::mark_warned(conn, row.id)? {
                    notify::enqueue(
                        conn,
                        &ctx.definition,
                        &notice(NoticeKind::ApprovalExpiring, &ctx, &row, &d),
                    )?;
                }
                Ok::<_, EngineError>(())
            })?;
        }
    }
    for (row, deployment_state) in store::orphaned_approvals(conn)? {
        let state = if deployment_state == DeploymentState::Superseded {
            ApprovalState::Superseded
        } else {
            ApprovalState::Canceled
        };
        let pipeline = storage::pipeline_by_id(conn, row.pipeline_id)?.name;
        storage::write_transaction(conn, |conn| {
            close_for_deployment(conn, &pipeline, row.deployment_id, state, ENGINE_ACTOR)
        })?;
    }
    Ok(moved)
}

// ---------------------------------------------------------------------------
// Reading approvals back
// ---------------------------------------------------------------------------

/// One approval with what a person needs to decide on it.
#[derive(Clone, Debug)]
pub struct ApprovalItem {
    pub approval: ApprovalRow,
    pub state: ApprovalState,
    pub pipeline: String,
    pub release: String,
    pub deployment: DeploymentRow,
    /// `alice`, `group:management`, …
    pub approvers: Vec<String>,
    /// `any one of`, `all of`, `2 of`.
    pub policy_words: String,
    pub decisions: Vec<ApprovalDecisionRow>,
    pub commits: Vec<CommitView>,
    /// Who is still needed, while pending.
    pub needed: Option<String>,
    /// The fresh SSO sign-in the stage asks for.
    pub fresh_sign_in: Option<Duration>,
}

impl ApprovalItem {
    /// The viewer's latest defer that has not passed yet.
    pub fn deferred_until(&self, user: &str, now: NaiveDateTime) -> Option<NaiveDateTime> {
        self.decisions
            .iter()
            .rev()
            .find(|d| d.user_name == user && d.decision == Decision::Defer.as_str())
            .and_then(|d| d.defer_until)
            .filter(|until| *until > now)
    }

    /// Whether this person may approve it now (else why not).
    pub fn may_approve(&self, person: &Person) -> Result<(), String> {
        let terms = terms(&self.approval).map_err(|e| e.to_string())?;
        let authors: Vec<String> = self.commits.iter().map(|c| c.author.clone()).collect();
        approval::may_decide(
            &terms,
            &Decider {
                user: &person.user,
                groups: &person.groups,
                email: person.email.as_deref(),
                sso_at: person.sso_at,
            },
            Decision::Approve,
            &self.approval.requested_by,
            &authors,
            &ballots(&self.decisions),
            Utc::now(),
        )
        .map_err(|e| e.to_string())
    }
}

fn items(conn: &mut DbConn, rows: Vec<ApprovalRow>) -> Result<Vec<ApprovalItem>, EngineError> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut decisions = store::decisions_of_many(conn, &ids)?;
    // Deployments and releases in one query each, not one per approval.
    let deployment_ids: Vec<i64> = rows.iter().map(|r| r.deployment_id).collect();
    let mut by_id: std::collections::HashMap<i64, DeploymentRow> =
        storage::find_deployments(conn, &deployment_ids)?
            .into_iter()
            .map(|d| (d.id, d))
            .collect();
    let release_ids: Vec<i64> = by_id.values().map(|d| d.release_id).collect();
    let versions: std::collections::HashMap<i64, String> =
        storage::find_releases_by_ids(conn, &release_ids)?
            .into_iter()
            .map(|r| (r.id, r.version))
            .collect();
    let mut out = Vec::with_capacity(rows.len());
    let mut pipelines: std::collections::HashMap<i64, String> = Default::default();
    for row in rows {
        let d = match by_id.get(&row.deployment_id) {
            Some(d) => d.clone(),
            None => transitions::find(conn, row.deployment_id)?,
        };
        by_id.entry(d.id).or_insert_with(|| d.clone());
        let pipeline = match pipelines.get(&row.pipeline_id) {
            Some(p) => p.clone(),
            None => {
                let name = storage::pipeline_by_id(conn, row.pipeline_id)?.name;
                pipelines.insert(row.pipeline_id, name.clone());
                name
            }
        };
        let release = versions.get(&d.release_id).cloned().unwrap_or_default();
        let mine: Vec<ApprovalDecisionRow>;
        (mine, decisions) = decisions.into_iter().partition(|x| x.approval_id == row.id);
        let terms = terms(&row)?;
        let state = row.state;
        let needed = if state.is_open() {
            match approval::outcome(terms.policy, &terms.approvers, &ballots(&mine)) {
                Outcome::Pending { needed } => Some(needed),
                _ => None,
            }
        } else {
            None
        };
        out.push(ApprovalItem {
            commits: commits(&row),
            approvers: terms.approvers.iter().map(|a| a.to_string()).collect(),
            policy_words: approval::mode_words(terms.policy),
            fresh_sign_in: terms.fresh_sign_in,
            approval: row,
            state,
            pipeline,
            release,
            deployment: d,
            decisions: mine,
            needed,
        });
    }
    Ok(out)
}

/// One approval by id.
pub fn find_item(conn: &mut DbConn, id: i64) -> Result<ApprovalItem, EngineError> {
    let row = store::find_approval(conn, id)?
        .ok_or_else(|| EngineError::NotFound(format!("There is no approval #{id}.")))?;
    Ok(items(conn, vec![row])?.remove(0))
}

/// The approvals of one deployment, oldest first.
pub fn of_deployment(
    conn: &mut DbConn,
    deployment_id: i64,
) -> Result<Vec<ApprovalItem>, EngineError> {
    let rows = store::approvals_of_deployment(conn, deployment_id)?;
    items(conn, rows)
}

/// Pending approvals that list this person (directly or through a group)
/// and that they have not approved or rejected yet, oldest first —
/// including the ones they deferred (see [`ApprovalItem::deferred_until`]).
pub fn waiting_for(
    conn: &mut DbConn,
    user: &str,
    groups: &[String],
) -> Result<Vec<ApprovalItem>, EngineError> {
    let pending = store::pending_approvals(conn)?;
    let listed: Vec<ApprovalRow> = pending
        .into_iter()
        .filter(|row| {
            approver_list(&row.approvers).is_ok_and(|list| approval::is_listed(&list, user, groups))
        })
        .collect();
    let all = items(conn, listed)?;
    Ok(all
        .into_iter()
        .filter(|item| {
            item.deployment.state == DeploymentState::WaitingForApproval
                && !item
                    .decisions
                    .iter()
                    .any(|d| d.user_name == user && d.decision != Decision::Defer.as_str())
        })
        .collect())
}

/// How many approvals wait for this person now (deferred ones not counted).
pub fn count_waiting_for(
    conn: &mut DbConn,
    user: &str,
    groups: &[String],
) -> Result<usize, EngineError> {
    let now = storage::conn::now();
    Ok(waiting_for(conn, user, groups)?
        .iter()
        .filter(|i| i.deferred_until(user, now).is_none())
        .count())
}

/// A person's past decisions, newest first, with their approvals.
pub fn history_of(
    conn: &mut DbConn,
    user: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<(ApprovalDecisionRow, ApprovalItem)>, EngineError> {
    let rows = store::decisions_by_user(conn, user, before, limit)?;
    let (decisions, approvals): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
    let items = items(conn, approvals)?;
    Ok(decisions.into_iter().zip(items).collect())
}

/// Who each deployment waiting for approval still needs ("one approval
/// from group:management"), by deployment id: the board's "why waiting".
pub fn needed_by_deployment(
    conn: &mut DbConn,
) -> Result<std::collections::HashMap<i64, String>, EngineError> {
    let pending = store::pending_approvals(conn)?;
    let ids: Vec<i64> = pending.iter().map(|r| r.id).collect();
    let decisions = store::decisions_of_many(conn, &ids)?;
    let mut out = std::collections::HashMap::new();
    for row in pending {
        let terms = terms(&row)?;
        let mine: Vec<ApprovalDecisionRow> = decisions
            .iter()
            .filter(|d| d.approval_id == row.id)
            .cloned()
            .collect();
        if let Outcome::Pending { needed } =
            approval::outcome(terms.policy, &terms.approvers, &ballots(&mine))
        {
            out.insert(row.deployment_id, needed);
        }
    }
    Ok(out)
}
