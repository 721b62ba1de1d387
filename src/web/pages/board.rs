//! `/`: the release board — every pipeline, its stages as columns and its
//! newest releases as rows, each cell the state of that release there and,
//! when it is not there yet or waits, why ("queued (position 2)", "after
//! dev succeeds", "scheduled: next fire Fri 03:00 PST", "superseded by
//! 1.0.9"). A pipeline with something queued, waiting or running is a
//! `data-live` region (static/slipway.js refreshes it).
//!
//! A cell also offers what may be done there: "Promote to test" (or
//! "Deploy to dev" for the first stage, "Retry" after a failed attempt) as
//! a small POST form, only where the stage rules and the person's rights
//! allow it (`domain::rules::offer`), else the reason in words ("you are
//! not a deployer of production"). A pipeline whose newest build failed
//! after its newest release shows that build with its error and Retry.
//!
//! Queries: seven for the whole board (pipelines, stages, deployments of
//! the shown releases, queued deployments, what is live per stage, the
//! newest build per pipeline, the current definitions for the stages'
//! deployers) plus, per pipeline, its newest releases and what is live in
//! each stage (`engine::deploy::live`); the explanations and offers are derived
//! from those rows, never a query per cell.

use std::collections::HashMap;

use actix_web::HttpResponse;
use askama::Template;
use chrono::Utc;

use super::render;
use crate::domain::rules::{self, Offer, OfferFacts, Permission, ReleaseRef};
use crate::domain::{BuildState, PipelineDefinition, TriggerOutcome};
use crate::engine::deploy::waiting::{
    self, Explainer, latest_by_release_and_stage, next_fires_of, queue_positions,
};
use crate::engine::pipelines::schedules::NOTHING_NEW;
use crate::storage::schedules as store;
use crate::storage::{self, DbConn, DeploymentRow, ReleaseRow, StageRow};
use crate::web::auth::{AuthUser, CurrentUser, permission};
use crate::web::nav::Nav;
use crate::web::views::{StateBadge, sha7, time};
use crate::web::{State, WebError, urls};

/// How many releases each pipeline shows on the board.
pub const BOARD_RELEASES: i64 = 5;

/// Seconds between refreshes of a live pipeline.
pub const LIVE_SECONDS: u32 = 3;

pub struct StageHead {
    pub name: String,
    pub url: String,
    pub trigger: &'static str,
    /// For a schedule: "next Fri 03:00 PST".
    pub next_fire: Option<String>,
    /// For a schedule: what its last fire did ("skipped: nothing new").
    pub last_fire: Option<String>,
}

pub struct Cell {
    pub stage: String,
    pub badge: Option<StateBadge>,
    pub url: Option<String>,
    /// Why the release is not (yet) in the stage, or why it waits.
    pub why: Option<String>,
    /// The release is the stage's live one.
    pub live: bool,
    /// A rollback in the stage replaced this release.
    pub rolled_back: bool,
    /// What may be done here: a button, or why not.
    pub action: Option<CellAction>,
}

/// A cell's offer: a POST form with one button, or the reason there is none.
pub struct CellAction {
    /// Where the form posts (`None`: no form, see `reason`).
    pub url: Option<String>,
    /// "Promote to test", "Deploy to dev", "Retry test".
    pub label: String,
    /// The release field of a Deploy / Promote form.
    pub release: Option<String>,
    /// Why nothing may be done, in words.
    pub reason: Option<String>,
}

impl CellAction {
    /// The form (or the reason) for `offer` in `stage` of `version`:
    /// "Deploy to dev" / "Promote to test" post to the stage, "Retry test"
    /// redeploys `latest` (the release's newest deployment there). `None`
    /// when there is nothing to offer.
    pub fn of(
        offer: Offer,
        pipeline: &str,
        stage: &str,
        version: &str,
        latest: Option<i64>,
    ) -> Option<CellAction> {
        match offer {
            Offer::Nothing => None,
            Offer::Deploy { promote } => Some(CellAction {
                url: Some(urls::stage_deploy(pipeline, stage)),
                label: format!("{} to {stage}", if promote { "Promote" } else { "Deploy" }),
                release: Some(version.to_string()),
                reason: None,
            }),
            Offer::Retry => latest.map(|id| CellAction {
                url: Some(urls::deployment_redeploy(pipeline, version, id)),
                label: format!("Retry {stage}"),
                release: None,
                reason: None,
            }),
            Offer::Refused(reason) => Some(CellAction {
                url: None,
                label: String::new(),
                release: None,
                reason: Some(reason),
            }),
        }
    }
}

/// A failed build newer than the pipeline's newest release.
pub struct FailedBuild {
    pub summary: super::builds::BuildSummary,
    /// Where its Retry form posts, when the person may build.
    pub retry_url: Option<String>,
}

pub struct Row {
    pub version: String,
    pub url: String,
    pub branch: String,
    pub sha7: String,
    pub created: String,
    pub cells: Vec<Cell>,
}

pub struct BoardPipeline {
    pub name: String,
    pub url: String,
    pub releases_url: String,
    pub stages: Vec<StageHead>,
    pub rows: Vec<Row>,
    /// Something is queued, waiting or running: refresh it.
    pub live: bool,
    /// Builds of this pipeline that are queued or running now.
    pub builds: Vec<super::builds::BuildSummary>,
    /// Its newest build, when it failed after the newest release.
    pub failed_build: Option<FailedBuild>,
}

#[derive(Template)]
#[template(path = "pages/board.html")]
pub struct BoardPage {
    pub nav: crate::web::nav::Nav,
    pub pipelines: Vec<BoardPipeline>,
    pub live_seconds: u32,
}

/// Words for a stage's trigger kind, as stored with its stage row.
pub fn trigger_word(kind: &str) -> &'static str {
    match kind {
        "after" => "continuous",
        "schedule" => "scheduled",
        "manual" => "manual",
        _ => "unknown trigger",
    }
}

/// Each stage's live release as a table marks it (`engine::deploy::waiting::live_marks`).
pub type LiveMarks = HashMap<String, (i64, Option<String>)>;

/// A table row for one release against the stage columns.
pub fn release_row(
    pipeline: &str,
    release: &ReleaseRow,
    stages: &[&StageRow],
    latest: &HashMap<(i64, &str), &DeploymentRow>,
    explain: &Explainer,
    marks: &LiveMarks,
) -> Row {
    let cells = stages
        .iter()
        .map(|s| {
            let d = latest.get(&(release.id, s.name.as_str())).copied();
            let live = marks.get(&s.name);
            Cell {
                live: live.is_some_and(|(id, _)| *id == release.id),
                rolled_back: live
                    .and_then(|(_, replaced)| replaced.as_deref())
                    .is_some_and(|v| v == release.version),
                stage: s.name.clone(),
                badge: d.map(|d| StateBadge::of(d.state)),
                url: d.map(|d| urls::deployment(pipeline, &release.version, d.id)),
                why: waiting::why(explain, release, &s.name, d),
                action: None,
            }
        })
        .collect();
    Row {
        version: release.version.clone(),
        url: urls::release(pipeline, &release.version),
        branch: release.branch.clone(),
        sha7: sha7(&release.commit_sha),
        created: time(&release.created_at),
        cells,
    }
}

/// What a stage's last fire did, in a few words.
fn last_fire_words(outcome: TriggerOutcome, detail: &str) -> String {
    match outcome {
        TriggerOutcome::Skipped if detail.starts_with(NOTHING_NEW) => NOTHING_NEW.to_string(),
        TriggerOutcome::Deployed => detail.to_string(),
        other => other.as_str().to_string(),
    }
}

/// The column heads of a pipeline's stages.
pub fn stage_heads(
    pipeline: &str,
    stages: &[&StageRow],
    last_fires: &[(i64, String, TriggerOutcome, String)],
    next_fires: &HashMap<i64, String>,
) -> Vec<StageHead> {
    stages
        .iter()
        .map(|s| StageHead {
            name: s.name.clone(),
            url: urls::stage(pipeline, &s.name),
            trigger: trigger_word(&s.trigger_kind),
            next_fire: next_fires.get(&s.id).map(|n| format!("next {n}")),
            last_fire: (s.trigger_kind == store::SCHEDULE_KIND)
                .then(|| {
                    last_fires
                        .iter()
                        .find(|(p, name, _, _)| *p == s.pipeline_id && *name == s.name)
                        .map(|(_, _, o, d)| last_fire_words(*o, d))
                })
                .flatten(),
        })
        .collect()
}

/// What is known about the person looking, for the cells' offers.
pub struct Viewer<'a> {
    pub user: Option<&'a AuthUser>,
    /// May queue builds (Retry of a failed build).
    pub may_build: bool,
}

impl Viewer<'_> {
    /// Whether the stages' `deployers` lists matter (they do not when the
    /// role cannot deploy anyway, or for an admin).
    fn needs_deployers(&self) -> bool {
        self.user.is_some_and(|u| {
            u.allowed(crate::domain::authz::Action::Deploy) && u.role != crate::domain::Role::Admin
        })
    }

    fn permission(
        &self,
        definition: Option<&PipelineDefinition>,
        stage: &str,
    ) -> Permission<'static> {
        match (self.user, definition.and_then(|d| d.stage(stage))) {
            (_, Some(s)) => permission(self.user, s),
            (None, None) => Permission::SignedOut,
            (Some(u), None) if !u.allowed(crate::domain::authz::Action::Deploy) => {
                Permission::Role(u.role.label())
            }
            // Without the stage's definition its deployers are unknown:
            // the admin may; anyone else is decided by the handler.
            (Some(_), None) => Permission::Allowed,
        }
    }
}

/// Fills the offers of a table's cells from rows already loaded: the
/// deployments of the shown releases (`latest`, `explain.succeeded`),
/// what is live per stage (`live`: release id by stage name) and the
/// pipeline's definition (the stages' deployers).
#[expect(clippy::too_many_arguments)]
pub fn fill_actions(
    pipeline: &str,
    rows: &mut [Row],
    releases: &[ReleaseRow],
    stages: &[&StageRow],
    latest: &HashMap<(i64, &str), &DeploymentRow>,
    explain: &Explainer,
    live: &HashMap<&str, i64>,
    definition: Option<&PipelineDefinition>,
    viewer: &Viewer<'_>,
) {
    for (row, release) in rows.iter_mut().zip(releases) {
        for (i, (cell, stage)) in row.cells.iter_mut().zip(stages).enumerate() {
            let previous = i.checked_sub(1).map(|p| stages[p].name.as_str());
            let d = latest.get(&(release.id, stage.name.as_str())).copied();
            let facts = OfferFacts {
                stage: &stage.name,
                previous_stage: previous,
                release: ReleaseRef {
                    id: release.id,
                    version: &release.version,
                },
                succeeded_in_previous: previous
                    .is_none_or(|p| explain.succeeded.contains(&(release.id, p.to_string()))),
                current: live.get(stage.name.as_str()).map(|id| ReleaseRef {
                    id: *id,
                    version: "",
                }),
                latest_here: d.map(|d| d.state),
                permission: Permission::Allowed,
            };
            // The stage rules first: their reasons are the cell's "why"
            // already ("after dev succeeds", "superseded by 1.0.9"). Then
            // the person's rights, which are news.
            let offer = match rules::offer(&facts) {
                Offer::Refused(_) if cell.why.is_some() => Offer::Nothing,
                Offer::Refused(reason) => Offer::Refused(reason),
                _ => rules::offer(&OfferFacts {
                    permission: viewer.permission(definition, &stage.name),
                    ..facts
                }),
            };
            cell.action = CellAction::of(
                offer,
                pipeline,
                &stage.name,
                &release.version,
                d.map(|d| d.id),
            );
        }
    }
}

/// The newest build of a pipeline when it failed after its newest release.
fn failed_build(
    pipeline: &str,
    newest: Option<&crate::storage::BuildRow>,
    newest_release: Option<&ReleaseRow>,
    viewer: &Viewer<'_>,
) -> Option<FailedBuild> {
    let b = newest?;
    if !matches!(b.state, BuildState::Failed | BuildState::Interrupted) {
        return None;
    }
    if newest_release.is_some_and(|r| r.created_at > b.created_at) {
        return None;
    }
    Some(FailedBuild {
        summary: super::builds::summary(&crate::engine::builds::BuildDetail {
            pipeline: pipeline.to_string(),
            build: b.clone(),
            tasks: Vec::new(),
            release: None,
        }),
        retry_url: viewer
            .may_build
            .then(|| urls::build_retry(pipeline, b.number)),
    })
}

fn load(conn: &mut DbConn, viewer: &Viewer<'_>) -> Result<Vec<BoardPipeline>, WebError> {
    let now = Utc::now();
    let pipelines = storage::list_pipelines(conn)?;
    let ids: Vec<i64> = pipelines.iter().map(|p| p.id).collect();
    let all_stages = storage::stages_of_pipelines(conn, &ids)?;
    let mut releases = Vec::with_capacity(pipelines.len());
    for p in &pipelines {
        releases.push(storage::board_releases(conn, p.id, BOARD_RELEASES)?);
    }
    let release_ids: Vec<i64> = releases.iter().flatten().map(|r| r.id).collect();
    let deployments = storage::deployments_for_releases(conn, &release_ids)?;
    let latest = latest_by_release_and_stage(&deployments);
    let positions = queue_positions(&store::queued_deployments(conn)?);
    let needed = crate::engine::deploy::approvals::needed_by_deployment(conn)?;
    let last_fires = store::last_fires(conn, &ids)?;
    let next_fires = next_fires_of(&all_stages, now);
    let unfinished = storage::builds::unfinished_builds(conn)?;
    let newest_builds = storage::builds::newest_builds(conn, &ids)?;
    let definitions: HashMap<i64, PipelineDefinition> = if viewer.needs_deployers() {
        storage::current_revisions(conn, &ids)?
            .into_iter()
            .filter_map(|r| {
                crate::engine::pipelines::parse_stored(&r.yaml, "", r.revision)
                    .ok()
                    .map(|d| (r.pipeline_id, d))
            })
            .collect()
    } else {
        HashMap::new()
    };
    Ok(pipelines
        .iter()
        .zip(releases)
        .map(|(p, rels)| {
            let stages: Vec<&StageRow> = all_stages
                .iter()
                .filter(|s| s.pipeline_id == p.id)
                .collect();
            let mine: Vec<&DeploymentRow> = deployments
                .iter()
                .filter(|d| d.pipeline_id == p.id)
                .collect();
            let mut explain =
                waiting::explainer_from_rows(&stages, &rels, &mine, &positions, &next_fires);
            explain.approval_needed = needed.clone();
            let marks = waiting::live_marks(conn, p);
            let live: HashMap<&str, i64> = marks
                .iter()
                .map(|(stage, (id, _))| (stage.as_str(), *id))
                .collect();
            let mut rows: Vec<Row> = rels
                .iter()
                .map(|r| release_row(&p.name, r, &stages, &latest, &explain, &marks))
                .collect();
            fill_actions(
                &p.name,
                &mut rows,
                &rels,
                &stages,
                &latest,
                &explain,
                &live,
                definitions.get(&p.id),
                viewer,
            );
            BoardPipeline {
                failed_build: failed_build(
                    &p.name,
                    newest_builds.iter().find(|b| b.pipeline_id == p.id),
                    rels.first(),
                    viewer,
                ),
                name: p.name.clone(),
                url: urls::pipeline(&p.name),
                releases_url: urls::releases(&p.name),
                stages: stage_heads(&p.name, &stages, &last_fires, &next_fires),
                rows,
                live: mine.iter().any(|d| !d.state.is_terminal())
                    || unfinished.iter().any(|b| b.pipeline_id == p.id),
                builds: unfinished
                    .iter()
                    .filter(|b| b.pipeline_id == p.id)
                    .map(|b| {
                        super::builds::summary(&crate::engine::builds::BuildDetail {
                            pipeline: p.name.clone(),
                            build: b.clone(),
                            tasks: Vec::new(),
                            release: None,
                        })
                    })
                    .collect(),
            }
        })
        .collect())
}

pub async fn index(state: State, nav: Nav, user: CurrentUser) -> Result<HttpResponse, WebError> {
    let pipelines = state
        .with_conn(move |conn| {
            let viewer = Viewer {
                user: user.0.as_ref(),
                may_build: user
                    .0
                    .as_ref()
                    .is_some_and(|u| u.allowed(crate::domain::authz::Action::Build)),
            };
            load(conn, &viewer)
        })
        .await?;
    render(&BoardPage {
        nav,
        pipelines,
        live_seconds: LIVE_SECONDS,
    })
}
