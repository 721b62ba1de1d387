//! The stage form's model: the fields as typed (`StageForm`, one
//! `ApprovalForm` per phase), the errors next to them (`FieldErrors`), how a
//! posted body is read, and how a stored stage fills the form.

use std::collections::BTreeMap;

use actix_web::web;
use serde::Deserialize;

use super::fields::field_id;
use super::gates::{CheckForm, GateErrors, GateForm};
use super::views::approvers_text;
use crate::domain::definition::defaults;
use crate::domain::{ApprovalMode, ApprovalPolicy, Phase, Stage, Trigger, Upstream};
use crate::engine::pipelines::stages as edit;

/// What the form shows: the user's input as typed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StageForm {
    #[serde(default)]
    pub csrf: String,
    /// `save` (default) or `preview`.
    #[serde(default)]
    pub action: String,
    /// The definition revision the form was made from.
    #[serde(default)]
    pub revision: String,
    /// `manual`, `after_build`, `after_stage` or `schedule`.
    #[serde(default)]
    pub trigger: String,
    #[serde(default)]
    pub after_stage: String,
    #[serde(default)]
    pub branches: String,
    #[serde(default)]
    pub exclude_branches: String,
    #[serde(default)]
    pub cron: String,
    #[serde(default)]
    pub timezone: String,
    /// A checkbox: present when ticked.
    #[serde(default)]
    pub catch_up: Option<String>,
    #[serde(default)]
    pub tasks: String,
    #[serde(default)]
    pub variables: String,
    #[serde(default)]
    pub parallel: String,
    #[serde(default)]
    pub policy: String,
    /// `before_gates` (default) or `after_gates`.
    #[serde(default, rename = "approvals.order")]
    pub approvals_order: String,
    /// `approvals.before.*` (read by [`StageForm::from_body`]).
    #[serde(skip)]
    pub approvals_before: ApprovalForm,
    /// `approvals.after.*`.
    #[serde(skip)]
    pub approvals_after: ApprovalForm,
    /// `gates.before.*` and `gates.before.checks.N.*`.
    #[serde(skip)]
    pub gates_before: GateForm,
    /// `gates.after.*` and `gates.after.checks.N.*`.
    #[serde(skip)]
    pub gates_after: GateForm,
}

/// Errors next to their fields.
#[derive(Debug, Clone, Default)]
pub struct FieldErrors {
    pub trigger: Option<String>,
    pub after_stage: Option<String>,
    pub branches: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub tasks: Vec<String>,
    pub variables: Vec<String>,
    pub parallel: Option<String>,
    pub policy: Option<String>,
    pub approvals_order: Option<String>,
    pub approvals_before: ApprovalErrors,
    pub approvals_after: ApprovalErrors,
    pub gates_before: GateErrors,
    pub gates_after: GateErrors,
    /// Problems that belong to no field of the form.
    pub general: Vec<String>,
}

impl FieldErrors {
    pub fn is_empty(&self) -> bool {
        self.summary().is_empty()
    }

    /// `(field id, message)` of every error, in form order, for the summary.
    pub fn summary(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let one = |out: &mut Vec<(String, String)>, id: &str, e: &Option<String>| {
            if let Some(e) = e {
                out.push((id.to_string(), e.clone()));
            }
        };
        one(&mut out, "trigger-manual", &self.trigger);
        one(&mut out, "after-stage", &self.after_stage);
        one(&mut out, "branches", &self.branches);
        one(&mut out, "cron", &self.cron);
        one(&mut out, "timezone", &self.timezone);
        for e in &self.tasks {
            out.push(("tasks".into(), e.clone()));
        }
        for e in &self.variables {
            out.push(("variables".into(), e.clone()));
        }
        one(&mut out, "parallel", &self.parallel);
        one(&mut out, "policy", &self.policy);
        self.approvals_before.summary(PHASES[0], &mut out);
        self.approvals_after.summary(PHASES[1], &mut out);
        one(&mut out, "approvals-order", &self.approvals_order);
        self.gates_before.summary(PHASES[0], &mut out);
        self.gates_after.summary(PHASES[1], &mut out);
        for e in &self.general {
            out.push(("stage-form".into(), e.clone()));
        }
        out
    }
}

/// Before or after the deployment: the two phases of approvals and gates.
pub(super) const PHASES: [&str; 2] = [Phase::Before.as_str(), Phase::After.as_str()];

/// One approval policy as typed: fields `approvals.before.*` or
/// `approvals.after.*`.
#[derive(Debug, Clone, Default)]
pub struct ApprovalForm {
    /// `before` or `after`.
    pub phase: &'static str,
    /// A checkbox: whether the stage needs this approval.
    pub enabled: bool,
    /// Users and `group:NAME`s, separated by commas or new lines.
    pub approvers: String,
    /// `any`, `all` or `at_least`.
    pub policy: String,
    /// N of `at_least`.
    pub n: String,
    pub timeout: String,
    pub fresh_sign_in: String,
    pub requester_can_approve: bool,
    pub exclude_authors: bool,
}

impl ApprovalForm {
    /// The fields of a stage without this approval (the defaults).
    pub(super) fn blank(phase: &'static str) -> Self {
        ApprovalForm {
            phase,
            policy: "any".into(),
            timeout: defaults::APPROVAL_TIMEOUT.to_string(),
            ..ApprovalForm::default()
        }
    }

    pub(super) fn of(phase: &'static str, policy: Option<&ApprovalPolicy>) -> Self {
        let Some(p) = policy else {
            return ApprovalForm::blank(phase);
        };
        let (mode, n) = match p.policy {
            ApprovalMode::Any => ("any", String::new()),
            ApprovalMode::All => ("all", String::new()),
            ApprovalMode::AtLeast(n) => ("at_least", n.to_string()),
        };
        ApprovalForm {
            phase,
            enabled: true,
            approvers: approvers_text(&p.approvers),
            policy: mode.into(),
            n,
            timeout: p.timeout.to_string(),
            fresh_sign_in: p.fresh_sign_in.map(|d| d.to_string()).unwrap_or_default(),
            requester_can_approve: p.requester_can_approve,
            exclude_authors: p.exclude_authors,
        }
    }

    /// The `name` of one of its fields (`approvals.before.timeout`).
    pub fn key(&self, field: &str) -> String {
        format!("approvals.{}.{field}", self.phase)
    }

    /// The `id` of one of its fields (`approvals-before-timeout`).
    pub fn id(&self, field: &str) -> String {
        field_id(&self.key(field))
    }

    pub(super) fn set(&mut self, field: &str, value: String) {
        match field {
            "enabled" => self.enabled = true,
            "approvers" => self.approvers = value,
            "policy" => self.policy = value,
            "n" => self.n = value,
            "timeout" => self.timeout = value,
            "fresh_sign_in" => self.fresh_sign_in = value,
            "requester_can_approve" => self.requester_can_approve = true,
            "exclude_authors" => self.exclude_authors = true,
            _ => {}
        }
    }
}

/// Errors of one approval's fields.
#[derive(Debug, Clone, Default)]
pub struct ApprovalErrors {
    pub approvers: Option<String>,
    pub policy: Option<String>,
    pub n: Option<String>,
    pub timeout: Option<String>,
    pub fresh_sign_in: Option<String>,
}

impl ApprovalErrors {
    pub(super) fn summary(&self, phase: &str, out: &mut Vec<(String, String)>) {
        for (field, e) in [
            ("approvers", &self.approvers),
            ("policy", &self.policy),
            ("n", &self.n),
            ("timeout", &self.timeout),
            ("fresh_sign_in", &self.fresh_sign_in),
        ] {
            if let Some(e) = e {
                out.push((field_id(&format!("approvals.{phase}.{field}")), e.clone()));
            }
        }
    }
}

impl StageForm {
    /// Reads a posted form: the fixed fields, then approvals and gates
    /// (`approvals.before.timeout`, `gates.after.checks.2.url`, …). Text
    /// areas' CRLF line ends are made LF; checks left blank are dropped.
    pub fn from_body(text: &str) -> Result<StageForm, String> {
        let mut form = web::Query::<StageForm>::from_query(text)
            .map_err(|e| e.to_string())?
            .into_inner();
        let pairs = web::Query::<Vec<(String, String)>>::from_query(text)
            .map_err(|e| e.to_string())?
            .into_inner();
        form.approvals_before = ApprovalForm {
            phase: PHASES[0],
            ..ApprovalForm::default()
        };
        form.approvals_after = ApprovalForm {
            phase: PHASES[1],
            ..ApprovalForm::default()
        };
        form.gates_before = GateForm {
            phase: PHASES[0],
            ..GateForm::default()
        };
        form.gates_after = GateForm {
            phase: PHASES[1],
            ..GateForm::default()
        };
        let mut checks: [BTreeMap<usize, CheckForm>; 2] = Default::default();
        for (key, value) in pairs {
            let value = value.replace("\r\n", "\n");
            let parts: Vec<&str> = key.split('.').collect();
            let phase = |p: &str| PHASES.iter().position(|x| *x == p);
            match parts.as_slice() {
                ["approvals", p, field] => match phase(p) {
                    Some(0) => form.approvals_before.set(field, value),
                    Some(_) => form.approvals_after.set(field, value),
                    None => {}
                },
                ["gates", p, field] => match phase(p) {
                    Some(0) => form.gates_before.set(field, value),
                    Some(_) => form.gates_after.set(field, value),
                    None => {}
                },
                ["gates", p, "checks", index, field] => {
                    if let (Some(ph), Ok(index)) = (phase(p), index.parse::<usize>()) {
                        checks[ph]
                            .entry(index)
                            .or_insert_with(|| CheckForm {
                                // A check without a kind field is not a kind.
                                kind: String::new(),
                                ..CheckForm::blank(PHASES[ph], index)
                            })
                            .set(field, value);
                    }
                }
                _ => {}
            }
        }
        let [before, after] = checks;
        form.gates_before.checks = before.into_values().filter(|c| !c.is_blank()).collect();
        form.gates_after.checks = after.into_values().filter(|c| !c.is_blank()).collect();
        Ok(form)
    }
}

/// The form as the stored stage fills it.
pub(super) fn form_of(stage: &Stage, revision: i32) -> StageForm {
    let mut form = StageForm {
        revision: revision.to_string(),
        tasks: edit::tasks_yaml(&stage.tasks),
        variables: edit::variables_text(&stage.variables),
        parallel: stage.queue.parallel.to_string(),
        policy: stage.queue.policy.as_str().into(),
        catch_up: stage.catch_up.then(|| "on".to_string()),
        timezone: "UTC".into(),
        approvals_order: stage.approvals.order.as_str().into(),
        approvals_before: ApprovalForm::of(PHASES[0], stage.approvals.before.as_ref()),
        approvals_after: ApprovalForm::of(PHASES[1], stage.approvals.after.as_ref()),
        gates_before: GateForm::of(PHASES[0], stage.gates.before.as_ref()),
        gates_after: GateForm::of(PHASES[1], stage.gates.after.as_ref()),
        ..StageForm::default()
    };
    match &stage.trigger {
        Trigger::Manual => form.trigger = "manual".into(),
        Trigger::After { upstream, branches } => {
            match upstream {
                Upstream::Build => form.trigger = "after_build".into(),
                Upstream::Stage(s) => {
                    form.trigger = "after_stage".into();
                    form.after_stage = s.as_str().to_string();
                }
            }
            form.branches = branches.include.join(", ");
            form.exclude_branches = branches.exclude.join(", ");
        }
        Trigger::Schedule(s) => {
            form.trigger = "schedule".into();
            form.cron = s.cron.as_str().to_string();
            form.timezone = s.timezone.name().to_string();
        }
    }
    form
}
