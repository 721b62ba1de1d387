//! One truth of what is live (issue 13, item 2): each stage has at most one
//! live release. For a stage that deploys to a slot it is what the slot
//! serves — whatever put it there: the stage's deployment, a swap, a
//! rollback, or a swap of another stage that moved a release out of it; for
//! any other stage it is the release of its newest succeeded deployment.
//! The board, the stage page, the release page, `/environments` and the API
//! (`live` per stage) all read it from here.

use std::collections::BTreeMap;

use chrono::NaiveDateTime;

use crate::domain::slot_ops;
use crate::domain::{PipelineDefinition, Stage};
use crate::engine::{EngineError, pipelines};
use crate::storage::slots as slot_store;
use crate::storage::{self, DbConn, DeploymentRow};

/// The release live in a stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub release_id: i64,
    pub version: String,
    /// Since when (the slot's `since`, or the deployment's end).
    pub since: Option<NaiveDateTime>,
    /// The succeeded deployment of the stage that put it there, if one did
    /// (a release swapped out of another stage's slot has none here).
    pub deployment: Option<DeploymentRow>,
    /// The slot it runs in, as (app, slot).
    pub slot: Option<(String, String)>,
    /// What a rollback replaced: the release live before it.
    pub replaced: Option<String>,
}

impl Live {
    /// How it got there: the deployment's trigger, or `swap` when a swap of
    /// another stage moved it into this stage's slot.
    pub fn trigger(&self) -> &str {
        self.deployment
            .as_ref()
            .map(|d| d.trigger.as_str())
            .unwrap_or("swap")
    }
}

/// The live release of each stage of a pipeline, by stage name (a stage
/// with nothing live is absent). A few queries per stage.
pub fn live_of(
    conn: &mut DbConn,
    pipeline_id: i64,
    pipeline: &str,
    definition: &PipelineDefinition,
) -> Result<BTreeMap<String, Live>, EngineError> {
    let mut out = BTreeMap::new();
    for stage in &definition.stages {
        if let Some(live) = live_of_stage(conn, pipeline_id, pipeline, stage)? {
            out.insert(stage.name.as_str().to_string(), live);
        }
    }
    Ok(out)
}

/// The live release of one stage ([`live_of`]).
pub fn live_of_stage(
    conn: &mut DbConn,
    pipeline_id: i64,
    pipeline: &str,
    stage: &Stage,
) -> Result<Option<Live>, EngineError> {
    {
        let name = stage.name.as_str();
        let slot = slot_ops::slot_of_stage(stage);
        let from_slot = match &slot {
            Some((app, slot_name)) => slot_content(conn, pipeline, app, slot_name)?,
            None => None,
        };
        let live = match from_slot {
            Some(Some((release_id, since))) => {
                let Some(release) = storage::find_release_by_id(conn, release_id)? else {
                    return Ok(None);
                };
                let deployment = storage::deployments::succeeded_deployment(
                    conn,
                    pipeline_id,
                    name,
                    release_id,
                    None,
                )?;
                Live {
                    release_id,
                    version: release.version,
                    since,
                    deployment,
                    slot: slot.clone(),
                    replaced: None,
                }
            }
            // The slot runs nothing.
            Some(None) => return Ok(None),
            // No slot (or not made yet): the newest succeeded deployment.
            None => {
                let Some(d) = storage::deployments::current_deployment(conn, pipeline_id, name)?
                else {
                    return Ok(None);
                };
                let Some(release) = storage::find_release_by_id(conn, d.release_id)? else {
                    return Ok(None);
                };
                Live {
                    release_id: d.release_id,
                    version: release.version,
                    since: d.finished_at,
                    deployment: Some(d),
                    slot: None,
                    replaced: None,
                }
            }
        };
        let replaced = match &live.deployment {
            Some(d) if d.trigger == "rollback" => match storage::deployments::succeeded_deployment(
                conn,
                pipeline_id,
                name,
                d.release_id,
                Some(d.id),
            )? {
                Some(before) => {
                    storage::find_release_by_id(conn, before.release_id)?.map(|r| r.version)
                }
                None => None,
            },
            _ => None,
        };
        Ok(Some(Live { replaced, ..live }))
    }
}

/// [`live_of`] by the pipeline's name (loads its current definition).
pub fn live_of_pipeline(
    conn: &mut DbConn,
    pipeline: &str,
) -> Result<BTreeMap<String, Live>, EngineError> {
    let loaded = pipelines::load(conn, pipeline)?;
    live_of(conn, loaded.id, &loaded.name, &loaded.definition)
}

/// What the slot holds: `None` when the app or slot does not exist (yet)
/// for this pipeline, `Some(None)` when it runs nothing.
#[allow(clippy::type_complexity)]
fn slot_content(
    conn: &mut DbConn,
    pipeline: &str,
    app: &str,
    slot: &str,
) -> Result<Option<Option<(i64, Option<NaiveDateTime>)>>, EngineError> {
    let Some((app_row, owner)) = slot_store::find_app(conn, app)? else {
        return Ok(None);
    };
    if owner != pipeline {
        return Ok(None);
    }
    Ok(slot_store::find_slot(conn, app_row.id, slot)?
        .map(|row| row.release_id.map(|id| (id, row.since))))
}

/// The stages where a release is live, in the pipeline's order.
pub fn stages_where(
    live: &BTreeMap<String, Live>,
    definition: &PipelineDefinition,
    release_id: i64,
) -> Vec<String> {
    definition
        .stages
        .iter()
        .map(|s| s.name.as_str())
        .filter(|name| live.get(*name).is_some_and(|l| l.release_id == release_id))
        .map(str::to_string)
        .collect()
}
