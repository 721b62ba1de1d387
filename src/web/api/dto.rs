//! What the API sends: built from storage rows and domain values, never
//! rows serialized as they are. Field names snake_case, times RFC 3339 UTC.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::storage::{ArtifactRow, DeploymentRow, ReleaseRow};

/// A stored (UTC, zone-less) time as the API sends it.
pub(crate) fn utc(t: &NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StageDto {
    pub name: String,
    /// `manual`, `after` or `schedule`.
    pub trigger: String,
    /// The release live in the stage (what its slot serves, or what its
    /// newest succeeded deployment put there); `null` when none.
    pub live: Option<LiveDto>,
}

/// A stage in the list of pipelines (`GET /api/v1/pipelines/{p}` adds `live`).
#[derive(Debug, Serialize, ToSchema)]
pub struct StageSummaryDto {
    pub name: String,
    /// `manual`, `after` or `schedule`.
    pub trigger: String,
}

/// A stage's live release.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveDto {
    pub release: String,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// The deployment that put it there (none when a swap of another stage
    /// moved it into this stage's slot).
    pub deployment_id: Option<i64>,
    /// How it got there: `after:build`, `manual`, `swap`, `rollback`, ….
    pub trigger: String,
    /// The release a rollback replaced.
    pub replaced: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SourceDto {
    pub repo: String,
    pub branch: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineDto {
    pub name: String,
    pub description: Option<String>,
    pub revision: i32,
    pub source: SourceDto,
    pub version_template: String,
    pub stages: Vec<StageDto>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The pipeline's page.
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineSummaryDto {
    pub name: String,
    pub revision: i32,
    pub stages: Vec<StageSummaryDto>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactDto {
    pub path: String,
    pub sha256: String,
    pub size: i64,
}

impl From<&ArtifactRow> for ArtifactDto {
    fn from(a: &ArtifactRow) -> Self {
        ArtifactDto {
            path: a.path.clone(),
            sha256: a.sha256.clone(),
            size: a.size,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentDto {
    pub id: i64,
    pub pipeline: String,
    pub release: String,
    pub stage: String,
    /// queued, waiting_for_approval, evaluating_gates, running, succeeded, failed, canceled, rejected, superseded or interrupted.
    pub state: String,
    pub trigger: String,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl DeploymentDto {
    pub fn new(pipeline: &str, release: &str, d: &DeploymentRow) -> Self {
        DeploymentDto {
            id: d.id,
            pipeline: pipeline.to_string(),
            release: release.to_string(),
            stage: d.stage.clone(),
            state: d.state.as_str().to_string(),
            trigger: d.trigger.clone(),
            requested_by: d.requested_by.clone(),
            created_at: utc(&d.created_at),
            started_at: d.started_at.as_ref().map(utc),
            finished_at: d.finished_at.as_ref().map(utc),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseDto {
    pub pipeline: String,
    pub version: String,
    pub commit: String,
    pub branch: String,
    pub message: String,
    pub author: String,
    pub created_at: DateTime<Utc>,
    /// The release this one was built to fix, if any.
    pub fixes: Option<String>,
    pub artifacts: Vec<ArtifactDto>,
    pub deployments: Vec<DeploymentDto>,
    pub url: String,
}

impl ReleaseDto {
    pub fn new(
        pipeline: &str,
        r: &ReleaseRow,
        artifacts: &[ArtifactRow],
        deployments: &[&DeploymentRow],
        fixes: Option<String>,
    ) -> Self {
        ReleaseDto {
            pipeline: pipeline.to_string(),
            version: r.version.clone(),
            commit: r.commit_sha.clone(),
            branch: r.branch.clone(),
            message: r.message.clone(),
            author: r.author.clone(),
            created_at: utc(&r.created_at),
            fixes,
            artifacts: artifacts.iter().map(ArtifactDto::from).collect(),
            deployments: deployments
                .iter()
                .map(|d| DeploymentDto::new(pipeline, &r.version, d))
                .collect(),
            url: crate::web::urls::release(pipeline, &r.version),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseListDto {
    pub releases: Vec<ReleaseDto>,
    /// The URL of the next (older) page, if there is one.
    pub next: Option<String>,
}
