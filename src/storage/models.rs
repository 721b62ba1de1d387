//! Row types: what a query returns, one struct per table (or per query
//! shape). They belong to storage; pages and API responses are built from
//! them, never serialized from them.
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::*;
use crate::domain::{
    ApprovalState, BuildState, DeliveryState, DeploymentState, GateRunState, Phase, Role,
    SlotProcessState, SwapState, TaskRunState,
};

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = pipelines, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct PipelineRow {
    pub id: i64,
    pub name: String,
    /// The revision number in force (see [`DefinitionRevisionRow::revision`]).
    pub current_revision: i32,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = definition_revisions, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct DefinitionRevisionRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub revision: i32,
    /// The canonical YAML of the definition.
    pub yaml: String,
    pub created_by: String,
    pub comment: Option<String>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = stages, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct StageRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub position: i32,
    pub trigger_kind: String,
    pub trigger_spec: String,
    pub next_fire_at: Option<NaiveDateTime>,
    pub last_fired_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = builds, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct BuildRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub number: i64,
    pub state: BuildState,
    pub branch: Option<String>,
    pub commit_sha: Option<String>,
    pub message: Option<String>,
    pub author: Option<String>,
    pub requested_by: String,
    pub trigger: String,
    pub error: Option<String>,
    pub runner: Option<String>,
    pub heartbeat_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = releases, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct ReleaseRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub version: String,
    pub build_id: Option<i64>,
    pub revision_id: i64,
    pub commit_sha: String,
    pub branch: String,
    pub message: String,
    pub author: String,
    pub fixes_release_id: Option<i64>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = artifacts, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct ArtifactRow {
    pub id: i64,
    pub release_id: i64,
    pub path: String,
    pub sha256: String,
    pub size: i64,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = deployments, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct DeploymentRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub release_id: i64,
    pub stage: String,
    pub attempt: i32,
    pub state: DeploymentState,
    pub trigger: String,
    pub requested_by: String,
    pub reason: Option<String>,
    /// The release that superseded this deployment.
    pub superseded_by: Option<i64>,
    pub runner: Option<String>,
    pub heartbeat_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    /// Why it failed, was canceled or interrupted.
    pub error: Option<String>,
    /// What it does instead of the stage's tasks: a swap or rollback of
    /// slots (JSON of `domain::SlotOperation`).
    pub operation: Option<String>,
    /// The release manager who overrode the stage's approvals and gates.
    pub override_by: Option<String>,
    /// Why they did.
    pub override_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = task_runs, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct TaskRunRow {
    pub id: i64,
    pub deployment_id: Option<i64>,
    pub build_id: Option<i64>,
    pub position: i32,
    pub name: String,
    pub kind: String,
    pub state: TaskRunState,
    pub exit_code: Option<i32>,
    pub created_at: NaiveDateTime,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = log_chunks, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct LogChunkRow {
    pub id: i64,
    pub task_run_id: i64,
    pub seq: i64,
    pub stream: String,
    pub text: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = approvals, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct ApprovalRow {
    pub id: i64,
    pub deployment_id: i64,
    pub pipeline_id: i64,
    /// `before` or `after` the stage's tasks.
    pub phase: Phase,
    /// `pending`, `approved`, `rejected`, `timed_out`, `superseded`, `canceled`.
    pub state: ApprovalState,
    /// JSON list: `["group:management", "alice"]`.
    pub approvers: String,
    /// `any`, `all` or `n:K`.
    pub policy: String,
    pub requester_can_approve: bool,
    pub exclude_authors: bool,
    pub fresh_sign_in_secs: Option<i64>,
    pub requested_by: String,
    /// The version in the stage when the approval was requested.
    pub base_release: Option<String>,
    /// JSON list of the commits the release adds over `base_release`.
    pub commits: String,
    pub deadline: NaiveDateTime,
    /// When the "about to time out" notice went out.
    pub warned_at: Option<NaiveDateTime>,
    /// Why it closed (the rejection comment, "timed out", …).
    pub reason: Option<String>,
    pub closed_by: Option<String>,
    pub created_at: NaiveDateTime,
    pub closed_at: Option<NaiveDateTime>,
}

/// One person's decision on an approval (immutable).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = approval_decisions, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct ApprovalDecisionRow {
    pub id: i64,
    pub approval_id: i64,
    pub user_name: String,
    /// JSON list of the person's groups when they decided.
    pub groups: String,
    /// `approve`, `reject` or `defer`.
    pub decision: String,
    pub comment: Option<String>,
    pub defer_until: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = gate_samples, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct GateSampleRow {
    pub id: i64,
    pub deployment_id: i64,
    pub phase: Phase,
    pub round: i32,
    pub check_name: String,
    pub sampled_at: NaiveDateTime,
    pub duration_ms: i64,
    pub request: String,
    pub value: String,
    pub verdict: String,
    pub created_at: NaiveDateTime,
    pub gate_run_id: Option<i64>,
    /// The answer's body, truncated to 2 KiB.
    pub body: Option<String>,
    /// When the sample round was due (its lateness is `sampled_at - scheduled_at`).
    pub scheduled_at: Option<NaiveDateTime>,
}

/// A gate run: a deployment's gates before or after its stage.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = gate_runs, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct GateRunRow {
    pub id: i64,
    pub deployment_id: i64,
    pub pipeline: String,
    pub release_version: String,
    pub stage: String,
    /// `before` or `after`.
    pub phase: Phase,
    /// `evaluating`, `passed`, `failed`, `bypassed` or `canceled`.
    pub state: GateRunState,
    pub started_at: NaiveDateTime,
    pub deadline_at: NaiveDateTime,
    pub next_at: Option<NaiveDateTime>,
    pub round: i32,
    pub green_since: Option<NaiveDateTime>,
    /// JSON of `domain::gate_eval::GateProgress`.
    pub progress: String,
    /// JSON: the last result of each check.
    pub last_results: String,
    pub reason: Option<String>,
    /// A question to the stage's approvers about inconclusive samples.
    pub question: Option<String>,
    pub finished_by: Option<String>,
    pub finished_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = apps, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct AppRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = slots, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct SlotRow {
    pub id: i64,
    pub app_id: i64,
    pub name: String,
    pub release_id: Option<i64>,
    pub process_state: SlotProcessState,
    pub port: Option<i32>,
    pub workdir: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// JSON `{"NAME": {"value": "…", "sticky": bool}}`, values as written (secret references).
    pub settings: String,
    /// When the running release started serving here.
    pub since: Option<NaiveDateTime>,
    pub last_swap_at: Option<NaiveDateTime>,
    /// The release served here before the current one.
    pub previous_release_id: Option<i64>,
    /// Why the last start or deployment failed.
    pub error: Option<String>,
}

/// A swap of two slots of an app (`pending` while a preview waits for a person).
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = slot_swaps, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct SlotSwapRow {
    pub id: i64,
    pub app_id: i64,
    pub from_slot: String,
    pub to_slot: String,
    /// `pending`, `succeeded`, `failed` or `canceled`.
    pub state: SwapState,
    pub preview: bool,
    pub from_release_id: Option<i64>,
    pub to_release_id: Option<i64>,
    pub requested_by: String,
    pub decided_by: Option<String>,
    pub error: Option<String>,
    pub created_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

#[derive(Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub role: Role,
    /// Argon2 PHC string; `None` for SSO-only users.
    pub password_hash: Option<String>,
    pub sso_subject: Option<String>,
    pub disabled: bool,
    pub created_at: NaiveDateTime,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "***"))
            .field("sso_subject", &self.sso_subject)
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = groups, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct GroupRow {
    pub id: i64,
    pub name: String,
    /// `local` or `sso`.
    pub source: String,
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = api_tokens, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    /// sha256 hex of the token; the token itself is never stored.
    pub token_hash: String,
    pub created_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
}

#[derive(Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = secrets, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct SecretRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub name: String,
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("id", &self.id)
            .field("pipeline_id", &self.pipeline_id)
            .field("name", &self.name)
            .field(
                "ciphertext",
                &format_args!("<{} bytes>", self.ciphertext.len()),
            )
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = audit_events, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct AuditEventRow {
    pub id: i64,
    pub at: NaiveDateTime,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// What polling last saw of a branch of a pipeline's repository.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = source_heads, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct SourceHeadRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub branch: String,
    /// The head commit last seen (`None` until a look succeeded).
    pub commit_sha: Option<String>,
    /// Why the last look failed, if it did.
    pub error: Option<String>,
    pub checked_at: NaiveDateTime,
    /// When `commit_sha` last changed.
    pub changed_at: NaiveDateTime,
}

/// One outgoing notification (`storage::notifications`): its target, the
/// event's body, and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = notification_deliveries, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct NotificationDeliveryRow {
    pub id: i64,
    pub pipeline_id: i64,
    pub pipeline: String,
    /// The notification's name in the definition.
    pub notification: String,
    pub url: String,
    /// `generic` or `slack`.
    pub format: String,
    /// The secret whose value signs the body (resolved at each attempt).
    pub secret_name: Option<String>,
    /// `approval_requested`, `approval_decided` or `approval_expiring`.
    pub event: String,
    /// The event as JSON (`engine::deploy::notify` renders the sent body from it).
    pub body: String,
    /// `pending`, `delivered` or `failed`.
    pub state: DeliveryState,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub last_attempt_at: Option<NaiveDateTime>,
    /// The HTTP status of the last attempt, when it got an answer.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: NaiveDateTime,
    pub delivered_at: Option<NaiveDateTime>,
}
