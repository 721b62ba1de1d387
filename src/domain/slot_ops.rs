//! Swaps and rollbacks of slots as the pipeline sees them (issue 13): a
//! slot that a stage deploys to belongs to that stage, so a swap or a
//! rollback into it is a deployment of that stage — with the stage's
//! approvals and gates — whose one task is the swap. A release manager may
//! override the approvals and gates with a written reason.

use serde::{Deserialize, Serialize};

use super::definition::{PipelineDefinition, Stage, TaskKind, TaskSpec};
use super::error::DomainError;
use super::names::{AppName, SlotName};

/// A swap of `from` into `to` run by a deployment instead of its stage's
/// tasks (stored as JSON with the deployment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotOperation {
    pub app: String,
    pub from: String,
    pub to: String,
    /// Completes the app's pending swap with preview (of `from` into `to`)
    /// rather than starting a new one.
    #[serde(default)]
    pub preview: bool,
}

impl SlotOperation {
    /// The JSON kept with the deployment.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// The operation a deployment stored; `None` for an ordinary one (or
    /// text that is not an operation).
    pub fn from_json(text: Option<&str>) -> Option<SlotOperation> {
        text.and_then(|t| serde_json::from_str(t).ok())
    }

    /// The one task that does it: the `swap_slots` task the deployment runs.
    pub fn task(&self) -> Result<TaskSpec, DomainError> {
        Ok(TaskSpec {
            name: Some(if self.preview {
                format!("confirm the swap of {} into {}", self.from, self.to)
            } else {
                format!("swap {} into {}", self.from, self.to)
            }),
            kind: TaskKind::SwapSlots {
                app: AppName::parse(self.app.clone())?,
                from: SlotName::parse(self.from.clone())?,
                to: SlotName::parse(self.to.clone())?,
            },
            env: Default::default(),
            timeout: None,
        })
    }
}

/// The stage a slot belongs to: the one whose `environment` is the slot,
/// else the first whose tasks deploy into it or swap into it.
pub fn slot_owner<'a>(
    definition: &'a PipelineDefinition,
    app: &str,
    slot: &str,
) -> Option<&'a Stage> {
    use super::definition::Environment;
    definition
        .stages
        .iter()
        .find(|s| {
            matches!(&s.environment, Some(Environment::Slot { app: a, name })
                if a.as_str() == app && name.as_str() == slot)
        })
        .or_else(|| {
            definition.stages.iter().find(|s| {
                s.tasks.iter().any(|t| match &t.kind {
                    TaskKind::DeploySlot { app: a, slot: n } => {
                        a.as_str() == app && n.as_str() == slot
                    }
                    TaskKind::SwapSlots { app: a, to, .. } => {
                        a.as_str() == app && to.as_str() == slot
                    }
                    _ => false,
                })
            })
        })
}

/// The slot a stage deploys to, as (app, slot): its `environment`, else
/// the slot its last `deploy_slot`/`swap_slots` task puts a release into.
pub fn slot_of_stage(stage: &Stage) -> Option<(String, String)> {
    use super::definition::Environment;
    if let Some(Environment::Slot { app, name }) = &stage.environment {
        return Some((app.as_str().to_string(), name.as_str().to_string()));
    }
    stage.tasks.iter().rev().find_map(|t| match &t.kind {
        TaskKind::DeploySlot { app, slot } => {
            Some((app.as_str().to_string(), slot.as_str().to_string()))
        }
        TaskKind::SwapSlots { app, to, .. } => {
            Some((app.as_str().to_string(), to.as_str().to_string()))
        }
        _ => None,
    })
}

/// Whether a stage has approvals or gates (before or after): a swap into
/// its slot then waits for them.
pub fn is_guarded(stage: &Stage) -> bool {
    stage.approvals.before.is_some()
        || stage.approvals.after.is_some()
        || stage.gates.before.is_some()
        || stage.gates.after.is_some()
}

/// What the guards of a stage are, in words ("approval by group:management,
/// the gate before the deployment"); empty when it has none.
pub fn guards_in_words(stage: &Stage) -> Vec<String> {
    let mut out = Vec::new();
    for (phase, policy) in stage.approvals.by_phase() {
        if let Some(p) = policy {
            let who = p
                .approvers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            out.push(format!("approval {phase} the deployment by {who}"));
        }
    }
    for (phase, gate) in stage.gates.by_phase() {
        if let Some(g) = gate {
            let checks = g
                .checks
                .iter()
                .filter_map(|c| c.name.clone())
                .collect::<Vec<_>>();
            let n = g.checks.len();
            out.push(if checks.len() == n {
                format!("health gate {phase} the deployment ({})", checks.join(", "))
            } else if n == 1 {
                format!("health gate {phase} the deployment (1 check)")
            } else {
                format!("health gate {phase} the deployment ({n} checks)")
            });
        }
    }
    out
}

/// The stage as a deployment runs it: with an operation, its one task is
/// the swap; with an override, without approvals and gates.
pub fn stage_as_run(
    stage: &Stage,
    operation: Option<&SlotOperation>,
    overridden: bool,
) -> Result<Stage, DomainError> {
    let mut stage = stage.clone();
    if let Some(op) = operation {
        stage.tasks = vec![op.task()?];
    }
    if overridden {
        stage.approvals.before = None;
        stage.approvals.after = None;
        stage.gates.before = None;
        stage.gates.after = None;
    }
    Ok(stage)
}

/// A written reason: trimmed, required, at most 1,000 characters.
pub fn reason_text(text: Option<&str>, what: &str) -> Result<String, DomainError> {
    let text = text.map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Err(DomainError::Invalid(format!("{what} needs a reason.")));
    }
    if text.chars().count() > 1000 {
        return Err(DomainError::Invalid(format!(
            "The reason for {} is longer than 1,000 characters.",
            what.to_lowercase()
        )));
    }
    Ok(text.to_string())
}

/// Whether swapping back is a rollback: the slot's partner holds the
/// release the slot ran before the last swap, and it is older (a lower
/// release id) than what the slot runs now. Otherwise swapping back would
/// put a *newer* release in — no rollback.
pub fn is_rollback(current: Option<i64>, partner: Option<i64>, previous: Option<i64>) -> bool {
    match (current, partner, previous) {
        (Some(current), Some(partner), Some(previous)) => partner == previous && partner < current,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::parse_definition;

    const YAML: &str = r#"pipeline: web
source: { repo: /srv/git/web, branch: main }
version: "1.0.{build}"
apps:
  - { name: shop, start: ./run.sh, slots: [dev, staging, production, spare] }
build: { tasks: [ { shell: "true" } ] }
stages:
  - name: dev
    trigger: { after: build }
    tasks: [ { deploy_slot: { app: shop, slot: dev } } ]
  - name: preprod
    environment: { slot: { app: shop, name: staging } }
    tasks: [ { deploy_slot: { app: shop, slot: staging } } ]
  - name: production
    trigger: { after: preprod }
    environment: { slot: { app: shop, name: production } }
    approvals: { before: { approvers: ["group:management"] } }
    gates:
      before:
        checks: [ { name: staging is healthy, http: { url: "http://127.0.0.1:8081/health" } } ]
    tasks: [ { swap_slots: { app: shop, from: staging, to: production } } ]
"#;

    fn def() -> PipelineDefinition {
        parse_definition(YAML, "slipway.yaml").expect("valid")
    }

    #[test]
    fn a_slot_belongs_to_the_stage_that_deploys_to_it() {
        let d = def();
        let owner = |slot| slot_owner(&d, "shop", slot).map(|s| s.name.as_str().to_string());
        assert_eq!(owner("production").as_deref(), Some("production"));
        assert_eq!(owner("staging").as_deref(), Some("preprod"));
        // No environment: the stage whose task deploys there.
        assert_eq!(owner("dev").as_deref(), Some("dev"));
        assert_eq!(owner("spare"), None);
        assert_eq!(slot_owner(&d, "other", "dev"), None);
        assert_eq!(
            slot_of_stage(d.stage("dev").unwrap()),
            Some(("shop".into(), "dev".into()))
        );
        assert_eq!(
            slot_of_stage(d.stage("production").unwrap()),
            Some(("shop".into(), "production".into()))
        );
    }

    #[test]
    fn guards_are_approvals_and_gates() {
        let d = def();
        assert!(is_guarded(d.stage("production").unwrap()));
        assert!(!is_guarded(d.stage("preprod").unwrap()));
        let words = guards_in_words(d.stage("production").unwrap());
        assert_eq!(
            words,
            vec![
                "approval before the deployment by group:management".to_string(),
                "health gate before the deployment (staging is healthy)".to_string()
            ]
        );
        assert!(guards_in_words(d.stage("dev").unwrap()).is_empty());
    }

    #[test]
    fn a_swap_runs_as_the_stage_with_one_task_and_an_override_drops_the_guards() {
        let d = def();
        let stage = d.stage("production").unwrap();
        let op = SlotOperation {
            app: "shop".into(),
            from: "dev".into(),
            to: "production".into(),
            preview: false,
        };
        let run = stage_as_run(stage, Some(&op), false).unwrap();
        assert_eq!(run.tasks.len(), 1);
        assert!(
            matches!(&run.tasks[0].kind, TaskKind::SwapSlots { from, to, .. }
            if from.as_str() == "dev" && to.as_str() == "production")
        );
        assert!(
            is_guarded(&run),
            "the swap keeps the stage's approvals and gates"
        );
        let overridden = stage_as_run(stage, Some(&op), true).unwrap();
        assert!(!is_guarded(&overridden));
        assert_eq!(overridden.tasks, run.tasks);
        // Without an operation the stage's own tasks run.
        assert_eq!(stage_as_run(stage, None, false).unwrap(), stage.clone());
        // The stored form round-trips; other text is no operation.
        assert_eq!(
            SlotOperation::from_json(Some(&op.to_json())),
            Some(op.clone())
        );
        assert_eq!(SlotOperation::from_json(Some("nonsense")), None);
        assert_eq!(SlotOperation::from_json(None), None);
        let bad = SlotOperation {
            from: "Not A Slot".into(),
            ..op
        };
        assert!(bad.task().is_err());
    }

    #[test]
    fn reasons_are_required_and_bounded() {
        assert!(reason_text(None, "A rollback").is_err());
        assert_eq!(
            reason_text(Some("   "), "A rollback")
                .unwrap_err()
                .to_string(),
            "A rollback needs a reason."
        );
        assert_eq!(
            reason_text(Some(" broke checkout "), "x").unwrap(),
            "broke checkout"
        );
        assert!(reason_text(Some(&"x".repeat(1001)), "An override").is_err());
    }

    #[test]
    fn swapping_back_is_a_rollback_only_to_an_older_release() {
        // production runs 2 (was 1), staging holds 1: rolling back.
        assert!(is_rollback(Some(2), Some(1), Some(1)));
        // After that rollback production runs 1, staging holds 2: swapping
        // back would put the newer release in — no rollback.
        assert!(!is_rollback(Some(1), Some(2), Some(2)));
        // The partner holds something else than what ran before.
        assert!(!is_rollback(Some(3), Some(1), Some(2)));
        assert!(!is_rollback(Some(2), None, Some(1)));
        assert!(!is_rollback(None, Some(1), Some(1)));
    }
}
