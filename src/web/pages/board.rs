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

use std::collections::{HashMap, HashSet};

use actix_web::HttpResponse;
use askama::Template;
use chrono::Utc;

use super::render;
use crate::domain::rules::{self, Offer, OfferFacts, Permission, ReleaseRef};
use crate::domain::{BuildState, DeploymentState, PipelineDefinition, TriggerOutcome};
use crate::engine::triggers::schedules::{NOTHING_NEW, schedule_of_stage};
use crate::storage::schedules as store;
use crate::storage::{self, DbConn, DeploymentRow, ReleaseRow, StageRow};
use crate::web::auth::{AuthUser, CurrentUser, permission};
use crate::web::session::Nav;
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
    pub nav: crate::web::session::Nav,
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

/// The newest deployment of each (release, stage): what the cell shows.
pub fn latest_by_release_and_stage(
    deployments: &[DeploymentRow],
) -> HashMap<(i64, &str), &DeploymentRow> {
    let mut latest: HashMap<(i64, &str), &DeploymentRow> = HashMap::new();
    for d in deployments {
        let key = (d.release_id, d.stage.as_str());
        match latest.get(&key) {
            Some(existing) if existing.id > d.id => {}
            _ => {
                latest.insert(key, d);
            }
        }
    }
    latest
}

/// What a stage column knows for explaining its cells.
#[derive(Debug, Clone, Default)]
pub struct StageFacts {
    pub name: String,
    /// `manual`, `after` or `schedule`.
    pub kind: String,
    /// The stage before it (`None`: the first stage, fed by the build).
    pub previous: Option<String>,
    /// "Fri 03:00 PST" for a schedule.
    pub next_fire: Option<String>,
    /// The newest release that may go in: it succeeded in `previous` (for
    /// the first stage: the newest release). (id, version)
    pub newest_ready: Option<(i64, String)>,
    /// The newest release with any deployment in the stage. (id, version)
    pub newest_deployed: Option<(i64, String)>,
}

/// Everything the cells of one table need to explain themselves.
#[derive(Debug, Clone, Default)]
pub struct Explainer {
    pub stages: Vec<StageFacts>,
    /// (release id, stage) pairs with a succeeded deployment.
    pub succeeded: HashSet<(i64, String)>,
    /// A queued deployment's place in its stage's queue (1 = next).
    pub queue_position: HashMap<i64, usize>,
    /// Versions of releases named by `superseded_by`.
    pub versions: HashMap<i64, String>,
    /// Who a deployment waiting for approval still needs, by deployment id.
    pub approval_needed: HashMap<i64, String>,
    /// Each stage's live release: (release id, what a rollback replaced).
    pub live: HashMap<String, (i64, Option<String>)>,
}

impl Explainer {
    fn stage(&self, name: &str) -> Option<&StageFacts> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// Why `release` is not in `stage`, or why its deployment `d` waits.
    pub fn why(
        &self,
        release: &ReleaseRow,
        stage: &str,
        d: Option<&DeploymentRow>,
    ) -> Option<String> {
        if let Some(d) = d {
            return match d.state {
                DeploymentState::Queued => Some(match self.queue_position.get(&d.id) {
                    Some(n) => format!("queued (position {n})"),
                    None => "queued".into(),
                }),
                DeploymentState::WaitingForApproval => {
                    Some(match self.approval_needed.get(&d.id) {
                        Some(needed) => format!("waits for {needed}"),
                        None => "waits for approval".into(),
                    })
                }
                DeploymentState::EvaluatingGates => Some("evaluating gates".into()),
                DeploymentState::Superseded => Some(
                    match d.superseded_by.and_then(|id| self.versions.get(&id)) {
                        Some(v) => format!("superseded by {v}"),
                        None => "superseded by a newer release".into(),
                    },
                ),
                _ => None,
            };
        }
        let facts = self.stage(stage)?;
        if let Some(previous) = &facts.previous
            && !self.succeeded.contains(&(release.id, previous.clone()))
        {
            // Only a continuous stage takes it by itself once it succeeds in
            // the stage before; a manual or scheduled one says what it is.
            return Some(match facts.kind.as_str() {
                "manual" => format!("manual: once it succeeds in {previous}"),
                "schedule" => format!("scheduled: once it succeeds in {previous}"),
                _ => format!("after {previous} succeeds"),
            });
        }
        if let Some((id, version)) = &facts.newest_deployed
            && *id > release.id
        {
            return Some(format!("superseded by {version}"));
        }
        let newer_ready = facts
            .newest_ready
            .as_ref()
            .filter(|(id, _)| *id > release.id);
        Some(match facts.kind.as_str() {
            "manual" => "manual: deploy from the stage page".into(),
            "schedule" => match (newer_ready, &facts.next_fire) {
                (Some((_, version)), _) => format!("superseded by {version}"),
                (None, Some(next)) => format!("scheduled: next fire {next}"),
                (None, None) => "scheduled: the schedule never fires again".into(),
            },
            _ => "not deployed automatically: deploy from the stage page".into(),
        })
    }

    /// Facts of the shown rows alone. Right for the board, whose rows are a
    /// pipeline's newest releases: every release newer than a shown one is
    /// shown too, so "the newest ready" and "a newer one went in" need no
    /// other rows.
    pub fn from_rows(
        stages: &[&StageRow],
        releases: &[ReleaseRow],
        deployments: &[&DeploymentRow],
        queue_position: &HashMap<i64, usize>,
        next_fires: &HashMap<i64, String>,
    ) -> Explainer {
        let succeeded: HashSet<(i64, String)> = deployments
            .iter()
            .filter(|d| d.state == DeploymentState::Succeeded)
            .map(|d| (d.release_id, d.stage.clone()))
            .collect();
        let version = |id: i64| {
            releases
                .iter()
                .find(|r| r.id == id)
                .map(|r| (id, r.version.clone()))
        };
        let facts = stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let previous = i.checked_sub(1).map(|p| stages[p].name.clone());
                let newest_ready = match &previous {
                    None => releases.iter().map(|r| r.id).max(),
                    Some(p) => succeeded
                        .iter()
                        .filter(|(_, st)| st == p)
                        .map(|(id, _)| *id)
                        .max(),
                };
                let newest_deployed = deployments
                    .iter()
                    .filter(|d| d.stage == s.name)
                    .map(|d| d.release_id)
                    .max();
                StageFacts {
                    name: s.name.clone(),
                    kind: s.trigger_kind.clone(),
                    previous,
                    next_fire: next_fires.get(&s.id).cloned(),
                    newest_ready: newest_ready.and_then(version),
                    newest_deployed: newest_deployed.and_then(version),
                }
            })
            .collect();
        let versions = releases.iter().map(|r| (r.id, r.version.clone())).collect();
        Explainer {
            stages: facts,
            succeeded,
            queue_position: queue_position.clone(),
            versions,
            approval_needed: HashMap::new(),
            live: HashMap::new(),
        }
    }
}

/// "Fri 03:00 PST": a schedule stage's next fire on its own wall clock —
/// the stored `next_fire_at` (only the zone is read from the stored spec),
/// or computed when the scheduler has not yet.
pub fn next_fire_words(stage: &StageRow, now: chrono::DateTime<Utc>) -> Option<String> {
    if stage.trigger_kind != store::SCHEDULE_KIND {
        return None;
    }
    let stored_zone = stage
        .trigger_spec
        .rsplit_once(' ')
        .and_then(|(_, zone)| zone.parse::<chrono_tz::Tz>().ok());
    let (next, zone) = match (stage.next_fire_at, stored_zone) {
        (Some(t), Some(zone)) => (t.and_utc(), zone),
        _ => {
            let schedule = schedule_of_stage(stage)?;
            (schedule.next_fire(now)?, schedule.timezone)
        }
    };
    Some(next.with_timezone(&zone).format("%a %H:%M %Z").to_string())
}

/// [`next_fire_words`] of every schedule stage, by stage id. A schedule the
/// scheduler has not stored yet is computed once per distinct spec.
pub fn next_fires_of(stages: &[StageRow], now: chrono::DateTime<Utc>) -> HashMap<i64, String> {
    let mut computed: HashMap<&str, Option<String>> = HashMap::new();
    stages
        .iter()
        .filter_map(|s| {
            let words = if s.next_fire_at.is_some() {
                next_fire_words(s, now)
            } else {
                computed
                    .entry(s.trigger_spec.as_str())
                    .or_insert_with(|| next_fire_words(s, now))
                    .clone()
            };
            words.map(|w| (s.id, w))
        })
        .collect()
}

/// Each queued deployment's place in the queue of its pipeline's stage.
pub fn queue_positions(queued: &[(i64, i64, String)]) -> HashMap<i64, usize> {
    let mut seen: HashMap<(i64, &str), usize> = HashMap::new();
    let mut positions = HashMap::new();
    for (id, pipeline_id, stage) in queued {
        let n = seen.entry((*pipeline_id, stage.as_str())).or_insert(0);
        *n += 1;
        positions.insert(*id, *n);
    }
    positions
}

/// A table row for one release against the stage columns.
pub fn release_row(
    pipeline: &str,
    release: &ReleaseRow,
    stages: &[&StageRow],
    latest: &HashMap<(i64, &str), &DeploymentRow>,
    explain: &Explainer,
) -> Row {
    let cells = stages
        .iter()
        .map(|s| {
            let d = latest.get(&(release.id, s.name.as_str())).copied();
            let live = explain.live.get(&s.name);
            Cell {
                live: live.is_some_and(|(id, _)| *id == release.id),
                rolled_back: live
                    .and_then(|(_, replaced)| replaced.as_deref())
                    .is_some_and(|v| v == release.version),
                stage: s.name.clone(),
                badge: d.map(|d| StateBadge::of(d.state)),
                url: d.map(|d| urls::deployment(pipeline, &release.version, d.id)),
                why: explain.why(release, &s.name, d),
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

/// Each stage's live release (`engine::deploy::live`) as the cells need it; a
/// pipeline whose definition cannot be read shows none.
pub fn live_of(
    conn: &mut DbConn,
    pipeline: &storage::PipelineRow,
) -> HashMap<String, (i64, Option<String>)> {
    let live = crate::engine::pipelines::load(conn, &pipeline.name).and_then(|loaded| {
        crate::engine::deploy::live::live_of(conn, loaded.id, &loaded.name, &loaded.definition)
    });
    match live {
        Ok(live) => live
            .into_iter()
            .map(|(stage, l)| (stage, (l.release_id, l.replaced)))
            .collect(),
        Err(e) => {
            tracing::warn!(pipeline = %pipeline.name, error = %e, "cannot tell what is live");
            HashMap::new()
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
            cell.action = match offer {
                Offer::Nothing => None,
                Offer::Deploy { promote } => Some(CellAction {
                    url: Some(urls::stage_deploy(pipeline, &stage.name)),
                    label: format!(
                        "{} to {}",
                        if promote { "Promote" } else { "Deploy" },
                        stage.name
                    ),
                    release: Some(release.version.clone()),
                    reason: None,
                }),
                Offer::Retry => d.map(|d| CellAction {
                    url: Some(urls::deployment_redeploy(pipeline, &release.version, d.id)),
                    label: format!("Retry {}", stage.name),
                    release: None,
                    reason: None,
                }),
                Offer::Refused(reason) => Some(CellAction {
                    url: None,
                    label: String::new(),
                    release: None,
                    reason: Some(reason),
                }),
            };
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
            let mut explain = Explainer::from_rows(&stages, &rels, &mine, &positions, &next_fires);
            explain.approval_needed = needed.clone();
            explain.live = live_of(conn, p);
            let live: HashMap<&str, i64> = explain
                .live
                .iter()
                .map(|(stage, (id, _))| (stage.as_str(), *id))
                .collect();
            let mut rows: Vec<Row> = rels
                .iter()
                .map(|r| release_row(&p.name, r, &stages, &latest, &explain))
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

/// Facts for a page of a pipeline's release history, whose rows may be old
/// ones: the newest ready and deployed release of each stage come from the
/// database (two index seeks per stage, whatever the page), the rest from
/// the shown rows.
pub fn history_explainer(
    conn: &mut DbConn,
    pipeline_id: i64,
    stages: &[&StageRow],
    deployments: &[DeploymentRow],
) -> Result<Explainer, WebError> {
    let now = Utc::now();
    let mut wanted = Vec::new();
    let mut facts = Vec::with_capacity(stages.len());
    for (i, s) in stages.iter().enumerate() {
        let previous = i.checked_sub(1).map(|p| stages[p].name.clone());
        let ready = match &previous {
            None => store::newest_release_id(conn, pipeline_id)?,
            Some(p) => store::newest_succeeded_release_id(conn, pipeline_id, p)?,
        };
        let deployed = store::newest_deployed_release_id(conn, pipeline_id, &s.name)?;
        wanted.extend(ready);
        wanted.extend(deployed);
        facts.push((s, previous, ready, deployed));
    }
    wanted.extend(deployments.iter().filter_map(|d| d.superseded_by));
    wanted.sort_unstable();
    wanted.dedup();
    let versions: HashMap<i64, String> = store::release_versions(conn, &wanted)?
        .into_iter()
        .collect();
    let named = |id: Option<i64>| id.and_then(|id| versions.get(&id).map(|v| (id, v.clone())));
    Ok(Explainer {
        stages: facts
            .into_iter()
            .map(|(s, previous, ready, deployed)| StageFacts {
                name: s.name.clone(),
                kind: s.trigger_kind.clone(),
                previous,
                next_fire: next_fire_words(s, now),
                newest_ready: named(ready),
                newest_deployed: named(deployed),
            })
            .collect(),
        succeeded: deployments
            .iter()
            .filter(|d| d.state == DeploymentState::Succeeded)
            .map(|d| (d.release_id, d.stage.clone()))
            .collect(),
        queue_position: queue_positions(&store::queued_deployments(conn)?),
        versions,
        approval_needed: crate::engine::deploy::approvals::needed_by_deployment(conn)?,
        live: HashMap::new(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    fn at() -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .naive_utc()
    }

    fn stage(id: i64, name: &str, position: i32, kind: &str, spec: &str) -> StageRow {
        StageRow {
            id,
            pipeline_id: 1,
            name: name.into(),
            position,
            trigger_kind: kind.into(),
            trigger_spec: spec.into(),
            next_fire_at: None,
            last_fired_at: None,
            created_at: at(),
            updated_at: at(),
        }
    }

    fn release(id: i64) -> ReleaseRow {
        ReleaseRow {
            id,
            pipeline_id: 1,
            version: format!("1.0.{id}"),
            build_id: None,
            revision_id: 1,
            commit_sha: "0".repeat(40),
            branch: "main".into(),
            message: String::new(),
            author: String::new(),
            fixes_release_id: None,
            created_at: at(),
        }
    }

    fn deployment(id: i64, release_id: i64, stage: &str, state: DeploymentState) -> DeploymentRow {
        DeploymentRow {
            id,
            pipeline_id: 1,
            release_id,
            stage: stage.into(),
            attempt: 1,
            state,
            trigger: "manual".into(),
            requested_by: "mara".into(),
            reason: None,
            superseded_by: None,
            runner: None,
            heartbeat_at: None,
            created_at: at(),
            started_at: None,
            finished_at: None,
            error: None,
            operation: None,
            override_by: None,
            override_reason: None,
        }
    }

    #[test]
    fn cells_explain_themselves() {
        use DeploymentState::*;
        let stages = [
            stage(1, "dev", 0, "after", "after build include=[] exclude=[]"),
            stage(
                2,
                "test",
                1,
                "schedule",
                "schedule 0 0 3 * * * America/Los_Angeles",
            ),
            stage(3, "preprod", 2, "manual", "manual"),
        ];
        let stage_refs: Vec<&StageRow> = stages.iter().collect();
        let releases: Vec<ReleaseRow> = (1..=5).rev().map(release).collect();
        let mut superseded = deployment(9, 2, "preprod", Superseded);
        superseded.superseded_by = Some(3);
        let deployments = [
            deployment(1, 1, "dev", Succeeded),
            deployment(2, 2, "dev", Succeeded),
            deployment(3, 3, "dev", Succeeded),
            deployment(4, 3, "test", Succeeded),
            deployment(5, 4, "dev", Running),
            deployment(6, 5, "dev", Queued),
            deployment(7, 2, "test", Succeeded),
            deployment(8, 3, "preprod", Queued),
            superseded,
        ];
        let refs: Vec<&DeploymentRow> = deployments.iter().collect();
        let queued = vec![
            (100, 1, "preprod".to_string()),
            (6, 1, "dev".to_string()),
            (8, 1, "preprod".to_string()),
        ];
        let positions = queue_positions(&queued);
        assert_eq!(positions[&8], 2);
        assert_eq!(positions[&6], 1);
        let next = next_fires_of(&stages, Utc::now());
        let explain = Explainer::from_rows(&stage_refs, &releases, &refs, &positions, &next);
        let latest = latest_by_release_and_stage(&deployments);
        let why = |r: i64, s: &str| explain.why(&release(r), s, latest.get(&(r, s)).copied());
        assert_eq!(why(5, "dev").unwrap(), "queued (position 1)");
        assert_eq!(why(3, "preprod").unwrap(), "queued (position 2)");
        assert_eq!(why(2, "preprod").unwrap(), "superseded by 1.0.3");
        assert_eq!(
            why(4, "test").unwrap(),
            "scheduled: once it succeeds in dev"
        );
        assert_eq!(
            why(4, "preprod").unwrap(),
            "manual: once it succeeds in test"
        );
        assert_eq!(why(1, "test").unwrap(), "superseded by 1.0.3");
        assert_eq!(why(4, "dev"), None, "running says it all");
        assert_eq!(why(2, "test"), None);
        // 1.0.3 is the newest in dev and went to test: preprod is manual.
        let three = explain.why(&release(3), "preprod", None).unwrap();
        assert_eq!(three, "manual: deploy from the stage page");

        // 1.0.3 succeeded in dev but is not in test yet: the schedule takes it.
        let fewer: Vec<&DeploymentRow> = refs
            .iter()
            .copied()
            .filter(|d| d.id != 4 && d.id != 8 && d.id != 7)
            .collect();
        let explain = Explainer::from_rows(&stage_refs, &releases, &fewer, &positions, &next);
        let text = explain.why(&release(3), "test", None).unwrap();
        assert!(text.starts_with("scheduled: next fire "), "{text}");
        assert!(
            text.ends_with("03:00 PST") || text.ends_with("03:00 PDT"),
            "{text}"
        );
        assert_eq!(
            explain.why(&release(2), "test", None).unwrap(),
            "superseded by 1.0.3"
        );
    }
}
