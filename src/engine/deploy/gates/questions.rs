//! `on_inconclusive: ask`: a run of inconclusive samples turns into a
//! question to the stage's approvers (stored with the gate run). An
//! approver answers it once:
//!
//! - `continue` — keep sampling (the check asks again after another
//!   [`crate::domain::gate_eval::ASK_AFTER`] inconclusive samples in a row);
//! - `pass` — treat the gate as passed (a comment is required);
//! - `fail` — fail the deployment (a comment is required).
//!
//! Who answers: the approvers of the stage's approvals for the run's phase
//! (`approvals.after` for gates after the stage when it has them, else
//! `approvals.before`), directly or through a group; when the stage has no
//! approvals, any release manager (or admin). The answer is one transaction
//! with its audit record (`gate.answer`), conditional on the question still
//! being open, so two approvers answering at once give one outcome: the
//! second is told it was answered already.
use serde::{Deserialize, Serialize};

use super::{Gates, failed, passed, stage_for};
use crate::domain::gate_eval::GateProgress;
use crate::domain::{GateRunState, Phase, Role, Stage, authz};
use crate::engine::EngineError;
use crate::engine::blocking;
use crate::engine::deploy::transitions::{self, subject};
use crate::storage::gates as store;
use crate::storage::{self, DbConn, GateRunRow};

/// An approver's answer to a gate's question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateAnswer {
    /// Keep sampling.
    Continue,
    /// Treat the gate as passed.
    Pass,
    /// Fail the deployment.
    Fail,
}

impl GateAnswer {
    /// Every answer, in the order a form offers them.
    pub const ALL: [GateAnswer; 3] = [GateAnswer::Continue, GateAnswer::Pass, GateAnswer::Fail];

    /// `continue`, `pass` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            GateAnswer::Continue => "continue",
            GateAnswer::Pass => "pass",
            GateAnswer::Fail => "fail",
        }
    }

    /// Parses `continue`, `pass` or `fail` (nothing else).
    pub fn parse(text: &str) -> Result<GateAnswer, EngineError> {
        match text.trim() {
            "continue" => Ok(GateAnswer::Continue),
            "pass" => Ok(GateAnswer::Pass),
            "fail" => Ok(GateAnswer::Fail),
            other => Err(EngineError::Invalid(format!(
                "`{other}` is not an answer; answer `continue`, `pass` or `fail`"
            ))),
        }
    }
}

/// Who answers: their name, role and groups.
#[derive(Clone, Debug)]
pub struct Answerer {
    pub username: String,
    pub role: Role,
    pub groups: Vec<String>,
}

/// A question waiting for an answer, as the approval inbox lists it.
#[derive(Clone, Debug)]
pub struct OpenQuestion {
    /// The gate run that asks (its page: `/gates/{run_id}`).
    pub run_id: i64,
    pub deployment_id: i64,
    pub pipeline: String,
    pub release: String,
    pub stage: String,
    /// `before` or `after` the stage.
    pub phase: Phase,
    pub question: String,
    /// The run, for its evidence (`super::run_view`).
    pub run: GateRunRow,
}

/// Whether `who` may answer the questions of gates `phase` (`before` or
/// `after`) `stage`.
pub fn may_answer(
    stage: &Stage,
    phase: Phase,
    role: Role,
    username: &str,
    groups: &[String],
) -> bool {
    // After the tasks, the approvers after them, else those before.
    let before = stage.approvals.of(Phase::Before);
    let policy = match phase {
        Phase::After => stage.approvals.of(Phase::After).or(before),
        Phase::Before => before,
    };
    match policy {
        Some(p) => p
            .approvers
            .iter()
            .any(|a| authz::names(a, username, groups)),
        None => role >= Role::ReleaseManager,
    }
}

/// The open questions `username` (a member of `groups`) may answer, oldest
/// first. The user's role is read from the database (it matters for stages
/// without approvals); an unknown or disabled user has none.
pub fn open_questions_for(
    conn: &mut DbConn,
    username: &str,
    groups: &[String],
) -> Result<Vec<OpenQuestion>, EngineError> {
    let Some(user) = storage::find_user_by_name(conn, username)? else {
        return Ok(Vec::new());
    };
    if user.disabled {
        return Ok(Vec::new());
    }
    let mut open = Vec::new();
    for run in store::gate_runs_asking(conn)? {
        let d = transitions::find(conn, run.deployment_id)?;
        let stage = match stage_for(conn, &run.pipeline, &d) {
            Ok(stage) => stage,
            Err(EngineError::NotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        if !may_answer(&stage, run.phase, user.role, username, groups) {
            continue;
        }
        open.push(OpenQuestion {
            run_id: run.id,
            deployment_id: run.deployment_id,
            pipeline: run.pipeline.clone(),
            release: run.release_version.clone(),
            stage: run.stage.clone(),
            phase: run.phase,
            question: run.question.clone().unwrap_or_default(),
            run,
        });
    }
    Ok(open)
}

/// Whether `who` may answer the question of run `id` (false when it has
/// none or it ended).
pub fn can_answer(conn: &mut DbConn, id: i64, who: &Answerer) -> Result<bool, EngineError> {
    let Some(run) = store::find_gate_run(conn, id)? else {
        return Ok(false);
    };
    if run.state != GateRunState::Evaluating || run.question.is_none() {
        return Ok(false);
    }
    let d = transitions::find(conn, run.deployment_id)?;
    let stage = stage_for(conn, &run.pipeline, &d)?;
    Ok(may_answer(
        &stage,
        run.phase,
        who.role,
        &who.username,
        &who.groups,
    ))
}

/// Answers the question of run `id` in one transaction with its audit
/// record; see the module's documentation.
fn answer_in(
    conn: &mut DbConn,
    id: i64,
    who: &Answerer,
    answer: GateAnswer,
    comment: &str,
) -> Result<(), EngineError> {
    storage::write_transaction(conn, |conn| {
        let run = store::find_gate_run(conn, id)?
            .ok_or_else(|| EngineError::NotFound(format!("no gate run #{id}")))?;
        let d = transitions::find(conn, run.deployment_id)?;
        let stage = stage_for(conn, &run.pipeline, &d)?;
        if !may_answer(&stage, run.phase, who.role, &who.username, &who.groups) {
            return Err(EngineError::Forbidden(format!(
                "{} is not an approver of {}; only they answer the questions of its gates",
                who.username, run.stage
            )));
        }
        if run.state != GateRunState::Evaluating {
            return Err(EngineError::Conflict(format!(
                "gate run #{id} has ended ({}); there is nothing to answer",
                run.state
            )));
        }
        if run.question.is_none() {
            return Err(EngineError::Conflict(format!(
                "gate run #{id} asks no question now (it may have been answered already)"
            )));
        }
        if answer != GateAnswer::Continue && comment.is_empty() {
            return Err(EngineError::Invalid(format!(
                "answering `{}` needs a comment saying why",
                answer.as_str()
            )));
        }
        // `continue`: the inconclusive streaks start again, so the check
        // asks again after another run of inconclusive samples.
        let progress = (answer == GateAnswer::Continue).then(|| {
            let mut p: GateProgress = serde_json::from_str(&run.progress).unwrap_or_default();
            p.inconclusive.iter_mut().for_each(|n| *n = 0);
            super::to_json(&p)
        });
        if !store::answer_gate_question(conn, id, progress.as_deref())? {
            return Err(EngineError::Conflict(format!(
                "the question of gate run #{id} has been answered already"
            )));
        }
        storage::append_audit(
            conn,
            &who.username,
            "gate.answer",
            &subject(&run.pipeline, run.deployment_id),
            &format!(
                "gate_run={id} stage={} phase={} answer={} comment={comment}",
                run.stage,
                run.phase,
                answer.as_str()
            ),
        )?;
        match answer {
            GateAnswer::Continue => Ok(()),
            GateAnswer::Pass => {
                let reason = format!("{} answered pass: {comment}", who.username);
                if !store::finish_gate_run(
                    conn,
                    id,
                    GateRunState::Passed,
                    Some(&reason),
                    &who.username,
                )? {
                    return Err(EngineError::Conflict("the gate run has ended".into()));
                }
                passed(conn, &run, &d, &stage, &who.username)
            }
            GateAnswer::Fail => {
                let reason = format!("{} answered fail: {comment}", who.username);
                failed(conn, &run, &d, &reason, &who.username)
            }
        }
    })
}

impl Gates {
    /// An approver answers the question of run `id` (`gate.answer`).
    pub async fn answer(
        &self,
        id: i64,
        who: Answerer,
        answer: GateAnswer,
        comment: &str,
    ) -> Result<(), EngineError> {
        let comment = comment.trim().to_owned();
        blocking(&self.inner.db, move |conn| {
            answer_in(conn, id, &who, answer, &comment)
        })
        .await?;
        self.wake(id);
        if answer != GateAnswer::Continue
            && let Some(f) = super::lock(&self.inner.on_finish).clone()
        {
            f();
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::domain::parse_definition;

    fn stage(yaml_approvals: &str) -> Stage {
        let yaml = format!(
            r#"pipeline: p
source: {{ repo: /r, branch: main }}
version: "1.0.{{build}}"
stages:
  - name: prod
    trigger: manual
{yaml_approvals}    tasks: [ {{ shell: "true" }} ]
"#
        );
        let def = parse_definition(&yaml, "p.yaml").unwrap();
        def.stages[0].clone()
    }

    #[test]
    fn approvers_answer_else_release_managers() {
        let listed = stage("    approvals:\n      before: { approvers: [alice, \"group:ops\"] }\n");
        let ops = vec!["ops".to_string()];
        assert!(may_answer(
            &listed,
            Phase::Before,
            Role::Viewer,
            "alice",
            &[]
        ));
        assert!(may_answer(
            &listed,
            Phase::Before,
            Role::Viewer,
            "bob",
            &ops
        ));
        assert!(!may_answer(
            &listed,
            Phase::Before,
            Role::Admin,
            "root",
            &[]
        ));
        assert!(may_answer(
            &listed,
            Phase::After,
            Role::Viewer,
            "alice",
            &[]
        ));
        let none = stage("");
        assert!(may_answer(
            &none,
            Phase::Before,
            Role::ReleaseManager,
            "rm",
            &[]
        ));
        assert!(!may_answer(
            &none,
            Phase::Before,
            Role::Deployer,
            "dev",
            &[]
        ));
    }

    #[test]
    fn answers_parse_strictly() {
        for a in GateAnswer::ALL {
            assert_eq!(GateAnswer::parse(a.as_str()).unwrap(), a);
        }
        assert!(GateAnswer::parse("bypass").is_err());
    }
}
