//! Pipelines, their definition revisions, stages, apps and slots.
use diesel::prelude::*;

use super::StorageError;
use super::audit::append_audit;
use super::conn::{DbConn, now, write_transaction};
use super::models::{AppRow, DefinitionRevisionRow, PipelineRow, SlotRow, StageRow};
use super::schema::{apps, definition_revisions, pipelines, slots, stages};
use crate::domain::SlotProcessState;

/// A stage of the definition being saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStage {
    pub name: String,
    pub position: i32,
    /// `manual`, `schedule` or `after`.
    pub trigger_kind: String,
    /// The trigger in a canonical text form (e.g. `0 0 3 * * * America/Los_Angeles`
    /// or `after build`). A stage whose kind and spec are unchanged keeps its
    /// `next_fire_at`; otherwise it is reset to NULL for the scheduler to compute.
    pub trigger_spec: String,
}

/// What [`save_definition`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedRevision {
    pub pipeline_id: i64,
    /// The revision now in force (the new one, or the current one when unchanged).
    pub revision: i32,
    /// The pipeline did not exist before.
    pub created: bool,
    /// The YAML equals the current revision's: nothing was written.
    pub unchanged: bool,
}

/// Process state of a slot created from a definition.
const NEW_SLOT_STATE: &str = SlotProcessState::Stopped.as_str();

/// All pipelines, by name.
pub fn list_pipelines(conn: &mut DbConn) -> Result<Vec<PipelineRow>, StorageError> {
    Ok(pipelines::table
        .order(pipelines::name.asc())
        .select(PipelineRow::as_select())
        .load(conn)?)
}

pub fn find_pipeline(conn: &mut DbConn, name: &str) -> Result<Option<PipelineRow>, StorageError> {
    Ok(pipelines::table
        .filter(pipelines::name.eq(name))
        .select(PipelineRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn pipeline_by_id(conn: &mut DbConn, id: i64) -> Result<PipelineRow, StorageError> {
    Ok(pipelines::table
        .find(id)
        .select(PipelineRow::as_select())
        .first(conn)?)
}

/// Saves a definition in one transaction: creates the pipeline if new, adds
/// a revision unless the YAML equals the current one (then nothing is
/// written and `unchanged` is set), refreshes the stage rows and the apps
/// and slots, and appends an audit event.
///
/// Stages not in `stage_rows` are deleted; the others are updated in place,
/// keeping `next_fire_at`/`last_fired_at` when their trigger is unchanged.
/// A slot that has a release is never deleted, even when the definition no
/// longer names it. An app name already used by another pipeline is a
/// [`StorageError::Conflict`].
pub fn save_definition(
    conn: &mut DbConn,
    name: &str,
    yaml_canonical: &str,
    stage_rows: &[NewStage],
    app_rows: &[(String, Vec<String>)],
    actor: &str,
    comment: Option<&str>,
) -> Result<SavedRevision, StorageError> {
    write_transaction(conn, |conn| {
        let at = now();
        let (pipeline_id, created) = lock_or_create_pipeline(conn, name, at)?;
        let current: i32 = pipelines::table
            .find(pipeline_id)
            .select(pipelines::current_revision)
            .first(conn)?;
        if !created {
            let current_yaml: Option<String> = definition_revisions::table
                .filter(definition_revisions::pipeline_id.eq(pipeline_id))
                .filter(definition_revisions::revision.eq(current))
                .select(definition_revisions::yaml)
                .first(conn)
                .optional()?;
            if current_yaml.as_deref() == Some(yaml_canonical) {
                return Ok(SavedRevision {
                    pipeline_id,
                    revision: current,
                    created,
                    unchanged: true,
                });
            }
        }
        let revision = current + 1;
        diesel::insert_into(definition_revisions::table)
            .values((
                definition_revisions::pipeline_id.eq(pipeline_id),
                definition_revisions::revision.eq(revision),
                definition_revisions::yaml.eq(yaml_canonical),
                definition_revisions::created_by.eq(actor),
                definition_revisions::comment.eq(comment),
                definition_revisions::created_at.eq(at),
            ))
            .execute(conn)?;
        diesel::update(pipelines::table.find(pipeline_id))
            .set((
                pipelines::current_revision.eq(revision),
                pipelines::updated_at.eq(at),
            ))
            .execute(conn)?;
        refresh_stages(conn, pipeline_id, stage_rows, at)?;
        refresh_apps(conn, pipeline_id, app_rows, at)?;
        let detail = serde_json::json!({ "revision": revision, "comment": comment }).to_string();
        let action = if created {
            "pipeline.created"
        } else {
            "pipeline.updated"
        };
        append_audit(conn, actor, action, &format!("pipeline:{name}"), &detail)?;
        Ok(SavedRevision {
            pipeline_id,
            revision,
            created,
            unchanged: false,
        })
    })
}

/// Returns the pipeline's id, creating the row if needed. An existing row is
/// locked with a no-op update, so concurrent saves of one pipeline take
/// turns (and number their revisions without clashing).
fn lock_or_create_pipeline(
    conn: &mut DbConn,
    name: &str,
    at: chrono::NaiveDateTime,
) -> Result<(i64, bool), StorageError> {
    let existing: Option<i64> = pipelines::table
        .filter(pipelines::name.eq(name))
        .select(pipelines::id)
        .first(conn)
        .optional()?;
    match existing {
        Some(id) => {
            diesel::update(pipelines::table.find(id))
                .set(pipelines::current_revision.eq(pipelines::current_revision))
                .execute(conn)?;
            Ok((id, false))
        }
        None => {
            let id = diesel::insert_into(pipelines::table)
                .values((
                    pipelines::name.eq(name),
                    pipelines::current_revision.eq(0),
                    pipelines::created_at.eq(at),
                    pipelines::updated_at.eq(at),
                ))
                .returning(pipelines::id)
                .get_result(conn)
                .map_err(|e| {
                    StorageError::from(e)
                        .conflict_as(|| format!("pipeline {name} was created concurrently"))
                })?;
            Ok((id, true))
        }
    }
}

fn refresh_stages(
    conn: &mut DbConn,
    pipeline_id: i64,
    wanted: &[NewStage],
    at: chrono::NaiveDateTime,
) -> Result<(), StorageError> {
    let existing = list_stages(conn, pipeline_id)?;
    for old in &existing {
        if !wanted.iter().any(|s| s.name == old.name) {
            diesel::delete(stages::table.find(old.id)).execute(conn)?;
        }
    }
    for stage in wanted {
        match existing.iter().find(|s| s.name == stage.name) {
            Some(old) => {
                let same_trigger = old.trigger_kind == stage.trigger_kind
                    && old.trigger_spec == stage.trigger_spec;
                let next_fire_at = if same_trigger { old.next_fire_at } else { None };
                diesel::update(stages::table.find(old.id))
                    .set((
                        stages::position.eq(stage.position),
                        stages::trigger_kind.eq(&stage.trigger_kind),
                        stages::trigger_spec.eq(&stage.trigger_spec),
                        stages::next_fire_at.eq(next_fire_at),
                        stages::updated_at.eq(at),
                    ))
                    .execute(conn)?;
            }
            None => {
                diesel::insert_into(stages::table)
                    .values((
                        stages::pipeline_id.eq(pipeline_id),
                        stages::name.eq(&stage.name),
                        stages::position.eq(stage.position),
                        stages::trigger_kind.eq(&stage.trigger_kind),
                        stages::trigger_spec.eq(&stage.trigger_spec),
                        stages::created_at.eq(at),
                        stages::updated_at.eq(at),
                    ))
                    .execute(conn)?;
            }
        }
    }
    Ok(())
}

fn refresh_apps(
    conn: &mut DbConn,
    pipeline_id: i64,
    wanted: &[(String, Vec<String>)],
    at: chrono::NaiveDateTime,
) -> Result<(), StorageError> {
    for (app_name, slot_names) in wanted {
        let app: Option<AppRow> = apps::table
            .filter(apps::name.eq(app_name))
            .select(AppRow::as_select())
            .first(conn)
            .optional()?;
        let app_id = match app {
            Some(app) if app.pipeline_id != pipeline_id => {
                let owner: String = pipelines::table
                    .find(app.pipeline_id)
                    .select(pipelines::name)
                    .first(conn)?;
                return Err(StorageError::Conflict(format!(
                    "app {app_name} is already defined by pipeline {owner}"
                )));
            }
            Some(app) => app.id,
            None => diesel::insert_into(apps::table)
                .values((
                    apps::pipeline_id.eq(pipeline_id),
                    apps::name.eq(app_name),
                    apps::created_at.eq(at),
                ))
                .returning(apps::id)
                .get_result(conn)
                .map_err(|e| {
                    StorageError::from(e)
                        .conflict_as(|| format!("app {app_name} is already defined"))
                })?,
        };
        refresh_slots(conn, app_id, slot_names, at)?;
    }
    // Apps the definition no longer names: drop their idle slots, and the
    // app once no slot is left.
    let dropped: Vec<i64> = apps::table
        .filter(apps::pipeline_id.eq(pipeline_id))
        .filter(apps::name.ne_all(wanted.iter().map(|(name, _)| name.as_str())))
        .select(apps::id)
        .load(conn)?;
    for app_id in dropped {
        refresh_slots(conn, app_id, &[], at)?;
        let left: i64 = slots::table
            .filter(slots::app_id.eq(app_id))
            .count()
            .get_result(conn)?;
        if left == 0 {
            diesel::delete(apps::table.find(app_id)).execute(conn)?;
        }
    }
    Ok(())
}

fn refresh_slots(
    conn: &mut DbConn,
    app_id: i64,
    wanted: &[String],
    at: chrono::NaiveDateTime,
) -> Result<(), StorageError> {
    let existing = list_slots(conn, app_id)?;
    for old in &existing {
        if old.release_id.is_none() && !wanted.contains(&old.name) {
            diesel::delete(slots::table.find(old.id)).execute(conn)?;
        }
    }
    for name in wanted {
        if !existing.iter().any(|s| &s.name == name) {
            diesel::insert_into(slots::table)
                .values((
                    slots::app_id.eq(app_id),
                    slots::name.eq(name),
                    slots::process_state.eq(NEW_SLOT_STATE),
                    slots::created_at.eq(at),
                    slots::updated_at.eq(at),
                ))
                .execute(conn)?;
        }
    }
    Ok(())
}

/// The revision in force of a pipeline.
pub fn current_revision(
    conn: &mut DbConn,
    pipeline_id: i64,
) -> Result<DefinitionRevisionRow, StorageError> {
    Ok(definition_revisions::table
        .inner_join(pipelines::table)
        .filter(pipelines::id.eq(pipeline_id))
        .filter(definition_revisions::revision.eq(pipelines::current_revision))
        .select(DefinitionRevisionRow::as_select())
        .first(conn)?)
}

/// The revisions in force of these pipelines (one query).
pub fn current_revisions(
    conn: &mut DbConn,
    pipeline_ids: &[i64],
) -> Result<Vec<DefinitionRevisionRow>, StorageError> {
    if pipeline_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(definition_revisions::table
        .inner_join(pipelines::table)
        .filter(pipelines::id.eq_any(pipeline_ids))
        .filter(definition_revisions::revision.eq(pipelines::current_revision))
        .select(DefinitionRevisionRow::as_select())
        .load(conn)?)
}

/// Every revision of a pipeline, newest first.
pub fn list_revisions(
    conn: &mut DbConn,
    pipeline_id: i64,
) -> Result<Vec<DefinitionRevisionRow>, StorageError> {
    Ok(definition_revisions::table
        .filter(definition_revisions::pipeline_id.eq(pipeline_id))
        .order(definition_revisions::revision.desc())
        .select(DefinitionRevisionRow::as_select())
        .load(conn)?)
}

pub fn revision_by_id(conn: &mut DbConn, id: i64) -> Result<DefinitionRevisionRow, StorageError> {
    Ok(definition_revisions::table
        .find(id)
        .select(DefinitionRevisionRow::as_select())
        .first(conn)?)
}

/// The stages of a pipeline's current revision, in order.
pub fn list_stages(conn: &mut DbConn, pipeline_id: i64) -> Result<Vec<StageRow>, StorageError> {
    Ok(stages::table
        .filter(stages::pipeline_id.eq(pipeline_id))
        .order((stages::position.asc(), stages::id.asc()))
        .select(StageRow::as_select())
        .load(conn)?)
}

/// The stages of these pipelines (one query), by pipeline and position.
pub fn stages_of_pipelines(
    conn: &mut DbConn,
    pipeline_ids: &[i64],
) -> Result<Vec<StageRow>, StorageError> {
    if pipeline_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(stages::table
        .filter(stages::pipeline_id.eq_any(pipeline_ids))
        .order((
            stages::pipeline_id.asc(),
            stages::position.asc(),
            stages::id.asc(),
        ))
        .select(StageRow::as_select())
        .load(conn)?)
}

/// The apps of a pipeline, by name.
pub fn list_apps(conn: &mut DbConn, pipeline_id: i64) -> Result<Vec<AppRow>, StorageError> {
    Ok(apps::table
        .filter(apps::pipeline_id.eq(pipeline_id))
        .order(apps::name.asc())
        .select(AppRow::as_select())
        .load(conn)?)
}

/// The slots of an app, by name.
pub fn list_slots(conn: &mut DbConn, app_id: i64) -> Result<Vec<SlotRow>, StorageError> {
    Ok(slots::table
        .filter(slots::app_id.eq(app_id))
        .order(slots::name.asc())
        .select(SlotRow::as_select())
        .load(conn)?)
}
