//! Pipeline definitions: import (a new revision when changed), export, load.

pub mod demo;
pub mod stages;

use std::path::Path;

use super::EngineError;
use crate::domain::{self, PipelineDefinition, Trigger};
use crate::storage::{self, DbConn};

/// A pipeline with its current definition.
#[derive(Debug, Clone)]
pub struct LoadedPipeline {
    pub id: i64,
    pub name: String,
    pub revision: i32,
    pub revision_at: chrono::NaiveDateTime,
    pub revision_by: String,
    pub definition: PipelineDefinition,
}

/// What an import did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ImportOutcome {
    pub pipeline: String,
    pub revision: i32,
    /// The pipeline did not exist before.
    pub created: bool,
    /// The definition equals the current revision; nothing was stored.
    pub unchanged: bool,
}

impl ImportOutcome {
    /// One line for the CLI.
    pub fn summary(&self) -> String {
        if self.created {
            format!(
                "created pipeline {} (revision {})",
                self.pipeline, self.revision
            )
        } else if self.unchanged {
            format!(
                "pipeline {} is unchanged (revision {})",
                self.pipeline, self.revision
            )
        } else {
            format!(
                "updated pipeline {} to revision {}",
                self.pipeline, self.revision
            )
        }
    }
}

/// Parses and validates a definition; errors name file, line, column and field.
pub fn parse(yaml: &str, file: &str) -> Result<PipelineDefinition, EngineError> {
    Ok(domain::parse_definition(yaml, file)?)
}

/// How long reading one definition may take, waiting for a turn included.
pub const PARSE_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// At most this many definitions are read at once.
static PARSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// [`parse`] for a request: off the async workers (on the blocking pool, at
/// most two at a time), within [`PARSE_BUDGET`]. A definition larger than
/// [`domain::MAX_DEFINITION_BYTES`] is `TooLarge` before anything is read.
pub async fn parse_bounded(yaml: String, file: &str) -> Result<PipelineDefinition, EngineError> {
    if yaml.len() > domain::MAX_DEFINITION_BYTES {
        return Err(EngineError::TooLarge(domain::definition_too_large(
            yaml.len(),
        )));
    }
    let file = file.to_owned();
    let work = async move {
        let _turn = PARSING
            .acquire()
            .await
            .map_err(|_| EngineError::Invalid("the server is shutting down".into()))?;
        tokio::task::spawn_blocking(move || parse(&yaml, &file))
            .await
            .map_err(|e| EngineError::Invalid(format!("reading the definition failed: {e}")))?
    };
    tokio::time::timeout(PARSE_BUDGET, work)
        .await
        .unwrap_or_else(|_| {
            Err(EngineError::Invalid(format!(
                "reading the definition took longer than {} s; make it smaller",
                PARSE_BUDGET.as_secs()
            )))
        })
}

/// True for a `source.repo` that is a relative local path.
fn is_relative_path(repo: &str) -> bool {
    !(repo.contains("://") || repo.starts_with('/') || looks_like_scp(repo))
}

/// `git@host:org/repo.git`
fn looks_like_scp(repo: &str) -> bool {
    match (repo.find(':'), repo.find('/')) {
        (Some(colon), Some(slash)) => colon < slash && repo[..colon].contains('@'),
        (Some(_), None) => repo.contains('@'),
        _ => false,
    }
}

/// Resolves a relative `source.repo` against the directory of the imported file.
pub fn resolve_repo(definition: &mut PipelineDefinition, base_dir: Option<&Path>) {
    let Some(base) = base_dir else { return };
    if !is_relative_path(&definition.source.repo) {
        return;
    }
    let joined = base.join(&definition.source.repo);
    let resolved = std::path::absolute(&joined).unwrap_or(joined);
    let mut text = resolved.display().to_string();
    // `/srv/x/./repo` → `/srv/x/repo`
    while text.contains("/./") {
        text = text.replace("/./", "/");
    }
    if let Some(stripped) = text.strip_suffix("/.") {
        text = stripped.to_string();
    }
    definition.source.repo = text;
}

/// The trigger in canonical words, so that storage can tell when a
/// stage's trigger changed (and its next fire time must be recomputed).
fn trigger_spec(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Manual => "manual".into(),
        Trigger::After { upstream, branches } => {
            let from = match upstream {
                domain::Upstream::Build => "build".to_string(),
                domain::Upstream::Stage(s) => s.as_str().to_string(),
            };
            format!(
                "after {from} include={:?} exclude={:?}",
                branches.include, branches.exclude
            )
        }
        Trigger::Schedule(s) => format!("schedule {} {}", s.cron.as_str(), s.timezone.name()),
    }
}

fn trigger_kind(trigger: &Trigger) -> &'static str {
    match trigger {
        Trigger::Manual => "manual",
        Trigger::After { .. } => "after",
        Trigger::Schedule(_) => "schedule",
    }
}

/// Stores a parsed definition as the pipeline's new revision (or creates
/// the pipeline), in one transaction with its audit record.
pub fn import(
    conn: &mut DbConn,
    mut definition: PipelineDefinition,
    base_dir: Option<&Path>,
    actor: &str,
    comment: Option<&str>,
) -> Result<ImportOutcome, EngineError> {
    resolve_repo(&mut definition, base_dir);
    let yaml = domain::to_canonical_yaml(&definition);
    let name = definition.pipeline.as_str().to_string();
    let stages: Vec<storage::NewStage> = definition
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| storage::NewStage {
            name: s.name.as_str().to_string(),
            position: i as i32,
            trigger_kind: trigger_kind(&s.trigger).to_string(),
            trigger_spec: trigger_spec(&s.trigger),
        })
        .collect();
    let apps: Vec<(String, Vec<String>)> = definition
        .apps
        .iter()
        .map(|a| {
            (
                a.name.as_str().to_string(),
                a.slots.iter().map(|s| s.as_str().to_string()).collect(),
            )
        })
        .collect();
    let saved = storage::write_transaction(conn, |conn| {
        storage::save_definition(conn, &name, &yaml, &stages, &apps, actor, comment)
    })?;
    Ok(ImportOutcome {
        pipeline: name,
        revision: saved.revision,
        created: saved.created,
        unchanged: saved.unchanged,
    })
}

/// A pipeline by name; `NotFound` with a message people can read.
pub fn find(conn: &mut DbConn, name: &str) -> Result<storage::PipelineRow, EngineError> {
    storage::find_pipeline(conn, name)?
        .ok_or_else(|| EngineError::NotFound(format!("There is no pipeline named `{name}`.")))
}

/// A release of a pipeline by version; `NotFound` with a message.
pub fn find_release(
    conn: &mut DbConn,
    pipeline: &storage::PipelineRow,
    version: &str,
) -> Result<storage::ReleaseRow, EngineError> {
    storage::find_release(conn, pipeline.id, version)?.ok_or_else(|| {
        EngineError::NotFound(format!("{} has no release `{version}`.", pipeline.name))
    })
}

/// The current definition of a pipeline as canonical YAML.
pub fn export(conn: &mut DbConn, name: &str) -> Result<String, EngineError> {
    let pipeline = storage::find_pipeline(conn, name)?
        .ok_or_else(|| EngineError::NotFound(format!("there is no pipeline `{name}`")))?;
    let revision = storage::current_revision(conn, pipeline.id)?;
    Ok(revision.yaml)
}

/// A pipeline with its parsed current definition.
pub fn load(conn: &mut DbConn, name: &str) -> Result<LoadedPipeline, EngineError> {
    let pipeline = storage::find_pipeline(conn, name)?
        .ok_or_else(|| EngineError::NotFound(format!("There is no pipeline named `{name}`.")))?;
    let revision = storage::current_revision(conn, pipeline.id)?;
    let definition = parse_stored(&revision.yaml, &pipeline.name, revision.revision)?;
    Ok(LoadedPipeline {
        id: pipeline.id,
        name: pipeline.name,
        revision: revision.revision,
        revision_at: revision.created_at,
        revision_by: revision.created_by,
        definition,
    })
}

/// Parses a stored revision; they were valid when stored, so an error here
/// means the database was changed by hand.
pub fn parse_stored(
    yaml: &str,
    pipeline: &str,
    revision: i32,
) -> Result<PipelineDefinition, EngineError> {
    domain::parse_definition(yaml, &format!("{pipeline} revision {revision}"))
        .map_err(EngineError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_told_apart() {
        assert!(is_relative_path("./space-game-web"));
        assert!(is_relative_path("repo"));
        assert!(!is_relative_path("/srv/git/repo"));
        assert!(!is_relative_path("https://git.example.com/a/b.git"));
        assert!(!is_relative_path("file:///srv/git/repo"));
        assert!(!is_relative_path("git@github.com:tailspin/space-game.git"));
    }
}
