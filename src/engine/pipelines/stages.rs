//! Editing one stage's configuration (the stage page's form: trigger,
//! tasks, variables, queue, approvals and gates): the edited
//! stage replaces the current one in the pipeline's definition, the whole
//! definition is validated like an import, and a change is stored as a new
//! revision (who, when, "stage NAME edited") through [`pipelines::import`].
//! Releases keep the revision they were built with.

use std::collections::BTreeMap;

use crate::domain::{
    self, Approvals, DefinitionError, DefinitionErrors, Gates, PipelineDefinition, QueuePolicy,
    Stage, TaskSpec, Trigger,
};
use crate::engine::EngineError;
use crate::engine::pipelines::{self, ImportOutcome};
use crate::storage::{self, DbConn};

/// What the stage form changes; everything else (name, environment,
/// deployers) stays as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct StageEdit {
    pub trigger: Trigger,
    pub catch_up: bool,
    pub tasks: Vec<TaskSpec>,
    pub variables: BTreeMap<String, String>,
    pub queue: QueuePolicy,
    /// Approvals before and after the deployment, and their order with gates.
    pub approvals: Approvals,
    /// Gates before and after the deployment.
    pub gates: Gates,
}

/// The comment stored with a revision made by the stage form.
pub fn edit_comment(stage: &str) -> String {
    format!("stage {stage} edited")
}

/// The definition with stage `stage` changed by `edit`, validated as a
/// whole (the same rules as an import). Errors name the field path
/// (`stages[1].trigger.schedule.cron`).
pub fn apply_edit(
    definition: &PipelineDefinition,
    stage: &str,
    edit: StageEdit,
) -> Result<PipelineDefinition, EngineError> {
    let Some(index) = definition.stage_index(stage) else {
        return Err(EngineError::NotFound(format!(
            "{} has no stage named `{stage}`.",
            definition.pipeline
        )));
    };
    let mut edited = definition.clone();
    let target = &mut edited.stages[index];
    target.trigger = edit.trigger;
    target.catch_up = edit.catch_up;
    target.tasks = edit.tasks;
    target.variables = edit.variables;
    target.queue = edit.queue;
    target.approvals = edit.approvals;
    target.gates = edit.gates;
    edited.validate()?;
    Ok(edited)
}

/// Saves an edit of stage `stage` as a new revision by `actor`, if the
/// pipeline is still at `base_revision` (the one the form showed): a
/// definition changed meanwhile is a Conflict, so nobody's change is
/// overwritten unseen. An edit that changes nothing stores nothing
/// (`unchanged`). One transaction, with the import's audit record.
pub fn edit_stage(
    conn: &mut DbConn,
    pipeline: &str,
    stage: &str,
    base_revision: i32,
    edit: StageEdit,
    actor: &str,
) -> Result<ImportOutcome, EngineError> {
    storage::write_transaction(conn, |conn| {
        let loaded = pipelines::load(conn, pipeline)?;
        if loaded.revision != base_revision {
            return Err(EngineError::Conflict(format!(
                "{} was changed by {} at {} (now revision {}; this form showed revision {base_revision}). Review the current configuration and save again.",
                loaded.name,
                loaded.revision_by,
                loaded.revision_at.format("%Y-%m-%d %H:%M UTC"),
                loaded.revision
            )));
        }
        let edited = apply_edit(&loaded.definition, stage, edit)?;
        pipelines::import(conn, edited, None, actor, Some(&edit_comment(stage)))
    })
}

/// A stage's tasks as the YAML list the form edits (empty for none).
pub fn tasks_yaml(tasks: &[TaskSpec]) -> String {
    if tasks.is_empty() {
        return String::new();
    }
    yaml_serde::to_string(tasks).unwrap_or_default()
}

/// One problem in the tasks text, located in that text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    /// 1-based line in the text (0 when it concerns the whole text).
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

/// How deep the tasks text is indented inside the document it is read in.
const TASKS_INDENT: usize = 4;

/// Reads a YAML list of tasks (the form's text) with the definition parser,
/// in the context of `definition` (its apps and slots) for the stage at
/// `index`. Errors give the line in the text and the field
/// (`tasks[1].deploy_slot.slot: …`).
pub fn parse_tasks(
    definition: &PipelineDefinition,
    index: usize,
    text: &str,
) -> Result<Vec<TaskSpec>, Vec<TextError>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    if text.contains('\t') {
        return Err(vec![TextError {
            line: text.lines().position(|l| l.contains('\t')).unwrap_or(0) + 1,
            message: "YAML is indented with spaces, not tabs".into(),
        }]);
    }
    // A document with the stages before this one (so names resolve) and
    // this stage bare, its tasks being the text, indented under `tasks:`.
    let Some(stage) = definition.stages.get(index) else {
        return Err(vec![TextError {
            line: 0,
            message: "the stage does not exist".into(),
        }]);
    };
    let mut scratch = definition.clone();
    scratch.stages.truncate(index);
    scratch.stages.push(bare_stage(stage));
    let mut doc = domain::to_canonical_yaml(&scratch);
    if !doc.ends_with('\n') {
        doc.push('\n');
    }
    doc.push_str("  tasks:\n");
    let offset = doc.lines().count();
    let pad = " ".repeat(TASKS_INDENT);
    for line in text.lines() {
        doc.push_str(&pad);
        doc.push_str(line);
        doc.push('\n');
    }
    match domain::parse_definition(&doc, "tasks") {
        Ok(parsed) => Ok(parsed
            .stages
            .get(index)
            .map(|s| s.tasks.clone())
            .unwrap_or_default()),
        Err(errors) => Err(text_errors(&errors, index, offset)),
    }
}

/// A stage with only its name (manual, no tasks).
fn bare_stage(stage: &Stage) -> Stage {
    Stage {
        name: stage.name.clone(),
        trigger: Trigger::Manual,
        environment: None,
        variables: BTreeMap::new(),
        approvals: Default::default(),
        gates: Default::default(),
        tasks: Vec::new(),
        queue: QueuePolicy::default(),
        catch_up: false,
        deployers: Vec::new(),
    }
}

fn text_errors(errors: &DefinitionErrors, index: usize, offset: usize) -> Vec<TextError> {
    let prefix = format!("stages[{index}].");
    errors
        .iter()
        .map(|e: &DefinitionError| {
            let field = e.field.strip_prefix(&prefix).unwrap_or(&e.field);
            let line = e.line.saturating_sub(offset);
            let message = if field.starts_with("tasks") {
                format!("{field}: {}", e.message)
            } else {
                e.message.clone()
            };
            TextError { line, message }
        })
        .collect()
}

/// Reads `NAME=value` lines (blank lines and `#` comments are skipped;
/// spaces around the name and the value are dropped).
pub fn parse_variables(text: &str) -> Result<BTreeMap<String, String>, Vec<TextError>> {
    let mut vars = BTreeMap::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| TextError {
            line: i + 1,
            message,
        };
        let Some((name, value)) = line.split_once('=') else {
            errors.push(err(format!("`{line}` is not NAME=value")));
            continue;
        };
        let name = name.trim();
        if !is_variable_name(name) {
            errors.push(err(format!(
                "`{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"
            )));
        } else if vars
            .insert(name.to_string(), value.trim().to_string())
            .is_some()
        {
            errors.push(err(format!("`{name}` is set twice")));
        }
    }
    if errors.is_empty() {
        Ok(vars)
    } else {
        Err(errors)
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Variables as the form's `NAME=value` lines.
pub fn variables_text(vars: &BTreeMap<String, String>) -> String {
    vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> PipelineDefinition {
        domain::parse_definition(domain::EXAMPLE_YAML, "example").unwrap()
    }

    #[test]
    fn tasks_round_trip_through_the_text() {
        let def = spec();
        let index = def.stage_index("test").unwrap();
        let text = tasks_yaml(&def.stages[index].tasks);
        assert!(text.contains("deploy_slot"), "{text}");
        assert_eq!(
            parse_tasks(&def, index, &text).unwrap(),
            def.stages[index].tasks
        );
        assert_eq!(parse_tasks(&def, index, "  \n").unwrap(), vec![]);
        let two =
            "- shell: ./migrate.sh\n  timeout: 5m\n- http: { url: \"https://example.com/ping\" }\n";
        let tasks = parse_tasks(&def, index, two).unwrap();
        assert_eq!(tasks.len(), 2);
    }

    #[test]
    fn task_errors_point_into_the_text() {
        let def = spec();
        let index = def.stage_index("test").unwrap();
        let errors = parse_tasks(
            &def,
            index,
            "- shell: ./ok.sh\n- deploy_slot: { app: space-game, slot: nowhere }\n",
        )
        .unwrap_err();
        assert_eq!(errors[0].line, 2, "{errors:?}");
        assert!(errors[0].message.starts_with("tasks[1]"), "{errors:?}");
        let errors = parse_tasks(&def, index, "- shel: x\n").unwrap_err();
        assert_eq!(errors[0].line, 1, "{errors:?}");
        assert!(parse_tasks(&def, index, "\t- shell: x").is_err());
    }

    #[test]
    fn variables_are_name_value_lines() {
        let vars = parse_variables("# comment\nA=1\n\nB_2 = two=2\n").unwrap();
        assert_eq!(vars.get("A").unwrap(), "1");
        assert_eq!(vars.get("B_2").unwrap(), "two=2");
        assert_eq!(variables_text(&vars), "A=1\nB_2=two=2\n");
        let errors = parse_variables("A=1\nnope\n1X=2\nA=3\n").unwrap_err();
        assert_eq!(
            errors.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
    }

    #[test]
    fn edits_are_validated_as_a_whole() {
        let def = spec();
        let stage = def.stage("test").unwrap().clone();
        let edit = StageEdit {
            trigger: Trigger::Manual,
            catch_up: false,
            tasks: stage.tasks.clone(),
            variables: BTreeMap::from([("GREETING".into(), "hi".into())]),
            queue: stage.queue,
            approvals: stage.approvals.clone(),
            gates: stage.gates.clone(),
        };
        let edited = apply_edit(&def, "test", edit).unwrap();
        assert_eq!(edited.stage("test").unwrap().trigger, Trigger::Manual);
        assert_eq!(edited.stages.len(), def.stages.len());
        let bad = StageEdit {
            trigger: Trigger::After {
                upstream: domain::Upstream::Stage(domain::StageName::parse("production").unwrap()),
                branches: Default::default(),
            },
            catch_up: false,
            tasks: Vec::new(),
            variables: BTreeMap::new(),
            queue: stage.queue,
            approvals: Default::default(),
            gates: Default::default(),
        };
        match apply_edit(&def, "test", bad) {
            Err(EngineError::Definition(errors)) => {
                assert!(
                    errors
                        .first()
                        .unwrap()
                        .field
                        .starts_with("stages[1].trigger")
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn approvals_and_gates_are_edited_and_validated() {
        use crate::domain::{
            ApprovalMode, ApprovalPolicy, Approver, CheckKind, Duration, GateCheck, GatePolicy,
            InconclusivePolicy,
        };
        let def = spec();
        let stage = def.stage("test").unwrap().clone();
        let check = |success: &str| GateCheck {
            name: Some("health".into()),
            kind: CheckKind::Http {
                method: "GET".into(),
                url: "https://status.example.com/health".into(),
                headers: BTreeMap::new(),
                body: None,
                timeout: Duration::from_secs(10),
                success: success.into(),
            },
            consecutive_successes: 2,
            on_inconclusive: InconclusivePolicy::Ask,
        };
        let edit = |success: &str| StageEdit {
            trigger: stage.trigger.clone(),
            catch_up: stage.catch_up,
            tasks: stage.tasks.clone(),
            variables: stage.variables.clone(),
            queue: stage.queue,
            approvals: Approvals {
                before: Some(ApprovalPolicy {
                    approvers: vec![Approver::Group("management".into())],
                    policy: ApprovalMode::Any,
                    timeout: Duration::from_days(7),
                    fresh_sign_in: Some(Duration::from_mins(15)),
                    requester_can_approve: false,
                    exclude_authors: true,
                }),
                after: None,
                order: domain::ApprovalOrder::AfterGates,
            },
            gates: Gates {
                before: None,
                after: Some(GatePolicy {
                    delay: Duration::ZERO,
                    interval: Duration::from_mins(1),
                    timeout: Duration::from_hours(1),
                    steady: Duration::ZERO,
                    checks: vec![check(success)],
                }),
            },
        };
        let edited = apply_edit(&def, "test", edit("status == 200")).unwrap();
        let yaml = domain::to_canonical_yaml(&edited);
        assert!(yaml.contains("group:management"), "{yaml}");
        assert!(yaml.contains("order: after_gates"), "{yaml}");
        assert!(yaml.contains("on_inconclusive: ask"), "{yaml}");
        // The other stages are untouched, byte for byte.
        let before = domain::to_canonical_yaml(&def);
        let untouched = |y: &str| {
            y.split("\n- name: ")
                .filter(|s| !s.starts_with("test\n"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(untouched(&yaml), untouched(&before));
        match apply_edit(&def, "test", edit("status ==")) {
            Err(EngineError::Definition(errors)) => {
                let e = errors.first().unwrap();
                assert!(
                    e.field.starts_with("stages[1].gates.after.checks[0]"),
                    "{e:?}"
                );
                assert!(e.message.contains("column"), "{e:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}
