//! `/`: the release board — every pipeline, its stages as columns and its
//! newest releases as rows, each cell the state of that release there.

use std::collections::HashMap;

use actix_web::HttpResponse;
use askama::Template;

use super::render;
use crate::storage::{self, DbConn, DeploymentRow, ReleaseRow, StageRow};
use crate::web::session::Nav;
use crate::web::views::{StateBadge, sha7, time};
use crate::web::{State, WebError, urls};

/// How many releases each pipeline shows on the board.
pub const BOARD_RELEASES: i64 = 5;

pub struct StageHead {
    pub name: String,
    pub url: String,
    pub trigger: &'static str,
}

pub struct Cell {
    pub stage: String,
    pub badge: Option<StateBadge>,
    pub url: Option<String>,
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
}

#[derive(Template)]
#[template(path = "pages/board.html")]
pub struct BoardPage {
    pub nav: crate::web::session::Nav,
    pub pipelines: Vec<BoardPipeline>,
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

/// A table row for one release against the stage columns.
pub fn release_row(
    pipeline: &str,
    release: &ReleaseRow,
    stages: &[&StageRow],
    latest: &HashMap<(i64, &str), &DeploymentRow>,
) -> Row {
    let cells = stages
        .iter()
        .map(|s| {
            let d = latest.get(&(release.id, s.name.as_str()));
            Cell {
                stage: s.name.clone(),
                badge: d.map(|d| StateBadge::of(d.state)),
                url: d.map(|d| urls::deployment(pipeline, &release.version, d.id)),
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

fn load(conn: &mut DbConn) -> Result<Vec<BoardPipeline>, WebError> {
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
    Ok(pipelines
        .iter()
        .zip(releases)
        .map(|(p, rels)| {
            let stages: Vec<&StageRow> = all_stages
                .iter()
                .filter(|s| s.pipeline_id == p.id)
                .collect();
            BoardPipeline {
                name: p.name.clone(),
                url: urls::pipeline(&p.name),
                releases_url: urls::releases(&p.name),
                stages: stages
                    .iter()
                    .map(|s| StageHead {
                        name: s.name.clone(),
                        url: urls::stage(&p.name, &s.name),
                        trigger: trigger_word(&s.trigger_kind),
                    })
                    .collect(),
                rows: rels
                    .iter()
                    .map(|r| release_row(&p.name, r, &stages, &latest))
                    .collect(),
            }
        })
        .collect())
}

pub async fn index(state: State, nav: Nav) -> Result<HttpResponse, WebError> {
    let pipelines = state.with_conn(load).await?;
    render(&BoardPage { nav, pipelines })
}
