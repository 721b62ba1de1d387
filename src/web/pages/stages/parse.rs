//! Reads the stage form into the stage's new configuration
//! (`engine::pipelines::stages::StageEdit`) with the domain's constructors, and puts
//! the definition's validation errors next to the form's fields.

use super::fields::{duration_field, patterns, sentence};
use super::form::{ApprovalErrors, ApprovalForm, FieldErrors, StageForm};
use super::gates::{kept_checks, parse_gate, place_gate_error};
use crate::domain::definition::fields;
use crate::domain::schedule::suggest_timezone;
use crate::domain::{
    ApprovalMode, ApprovalOrder, ApprovalPolicy, Approvals, Approver, BranchFilter, Cron,
    DefinitionErrors, Duration, Gates, PipelineDefinition, QueueMode, QueuePolicy, Schedule,
    Trigger, Upstream, parse_timezone,
};
use crate::engine::pipelines::stages::{self as edit, StageEdit, TextError};
use crate::web::views::plural;

/// Reads an approver list: user names and `group:NAME`, separated by
/// commas, spaces or new lines, each once.
pub fn parse_approvers(text: &str) -> Result<Vec<Approver>, String> {
    let mut out: Vec<Approver> = Vec::new();
    let mut problems = Vec::new();
    for item in patterns(text) {
        match Approver::parse(&item) {
            Ok(a) if out.contains(&a) => problems.push(format!("`{item}` is listed twice.")),
            Ok(a) => out.push(a),
            Err(e) => problems.push(sentence(e)),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join(" "));
    }
    if out.is_empty() {
        return Err("Enter at least one approver: a user name or `group:NAME`, such as `alice, group:management`.".into());
    }
    Ok(out)
}

/// The approval typed in `form` (`None` when not enabled).
pub(super) fn parse_approval(
    form: &ApprovalForm,
    errors: &mut ApprovalErrors,
) -> Option<Option<ApprovalPolicy>> {
    if !form.enabled {
        return Some(None);
    }
    let approvers = parse_approvers(&form.approvers)
        .map_err(|e| errors.approvers = Some(e))
        .ok();
    let policy = match form.policy.as_str() {
        "any" => Some(ApprovalMode::Any),
        "all" => Some(ApprovalMode::All),
        "at_least" => match fields::APPROVALS_NEEDED.parse(&form.n) {
            Ok(n) => {
                // A group may have any number of members; a list of users
                // only has so many.
                let users_only = approvers
                    .as_ref()
                    .filter(|list| list.iter().all(|a| matches!(a, Approver::User(_))));
                match users_only {
                    Some(list) if n as usize > list.len() => {
                        errors.n = Some(format!(
                            "At least {} can never be reached: only {} listed (a group counts each of its members).",
                            plural(n, "approval", "approvals"),
                            plural(list.len(), "user is", "users are")
                        ));
                        None
                    }
                    _ => Some(ApprovalMode::AtLeast(n)),
                }
            }
            Err(e) => {
                errors.n = Some(sentence(e));
                None
            }
        },
        _ => {
            errors.policy = Some("Choose any one approver, every approver, or at least N.".into());
            None
        }
    };
    let timeout = duration_field(&form.timeout, fields::APPROVAL_TIMEOUT, "The timeout")
        .map_err(|e| errors.timeout = Some(e))
        .ok();
    let fresh_sign_in = if form.fresh_sign_in.trim().is_empty() {
        Some(None)
    } else {
        Duration::parse(form.fresh_sign_in.trim())
            .map(Some)
            .map_err(|e| errors.fresh_sign_in = Some(sentence(e)))
            .ok()
    };
    Some(Some(ApprovalPolicy {
        approvers: approvers?,
        policy: policy?,
        timeout: timeout?,
        fresh_sign_in: fresh_sign_in?,
        requester_can_approve: form.requester_can_approve,
        exclude_authors: form.exclude_authors,
    }))
}

/// The approvals and gates typed in the form; problems go to `errors`.
pub(super) fn parse_approvals_and_gates(
    form: &StageForm,
    errors: &mut FieldErrors,
) -> Option<(Approvals, Gates)> {
    let order = match form.approvals_order.as_str() {
        "" => Some(ApprovalOrder::default()),
        word => ApprovalOrder::from_word(word),
    };
    if order.is_none() {
        errors.approvals_order = Some("Choose approvals before gates or after them.".into());
    }
    let approvals_before = parse_approval(&form.approvals_before, &mut errors.approvals_before);
    let approvals_after = parse_approval(&form.approvals_after, &mut errors.approvals_after);
    let gates_before = parse_gate(&form.gates_before, &mut errors.gates_before);
    let gates_after = parse_gate(&form.gates_after, &mut errors.gates_after);
    Some((
        Approvals {
            before: approvals_before?,
            after: approvals_after?,
            order: order?,
        },
        Gates {
            before: gates_before?,
            after: gates_after?,
        },
    ))
}

pub(super) fn text_errors(errors: Vec<TextError>) -> Vec<String> {
    errors.into_iter().map(|e| e.to_string()).collect()
}

/// The schedule typed in the form, or the errors of its two fields.
pub(super) fn parse_schedule(form: &StageForm, errors: &mut FieldErrors) -> Option<Schedule> {
    let cron = match Cron::parse(&form.cron) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.cron = Some(if form.cron.trim().is_empty() {
                "Enter a cron expression: six fields, seconds first (`0 0 3 * * *` is 03:00 every day).".into()
            } else {
                format!("{e}.")
            });
            None
        }
    };
    let zone = form.timezone.trim();
    let timezone = match parse_timezone(zone) {
        Ok(tz) => Some(tz),
        Err(_) => {
            errors.timezone = Some(if zone.is_empty() {
                "Enter an IANA time zone such as Europe/Berlin or UTC.".into()
            } else {
                match suggest_timezone(zone) {
                    Some(s) => format!("`{zone}` is not an IANA time zone; did you mean {s}?"),
                    None => format!(
                        "`{zone}` is not an IANA time zone (such as America/Los_Angeles or UTC)."
                    ),
                }
            });
            None
        }
    };
    Some(Schedule {
        cron: cron?,
        timezone: timezone?,
    })
}

/// Parses the form into the stage's new configuration ("parse, don't
/// validate"): every field's problem is reported next to it.
pub fn parse_form(
    def: &PipelineDefinition,
    index: usize,
    form: &StageForm,
) -> Result<StageEdit, Box<FieldErrors>> {
    let mut errors = FieldErrors::default();
    let branches = BranchFilter {
        include: patterns(&form.branches),
        exclude: patterns(&form.exclude_branches),
    };
    let trigger = match form.trigger.as_str() {
        "manual" => Some(Trigger::Manual),
        "after_build" => Some(Trigger::After {
            upstream: Upstream::Build,
            branches,
        }),
        "after_stage" => {
            let earlier = &def.stages[..index.min(def.stages.len())];
            match earlier
                .iter()
                .find(|s| s.name.as_str() == form.after_stage.trim())
            {
                Some(s) => Some(Trigger::After {
                    upstream: Upstream::Stage(s.name.clone()),
                    branches,
                }),
                None => {
                    errors.after_stage = Some(if earlier.is_empty() {
                        "This is the first stage: it can only follow the build.".into()
                    } else {
                        format!(
                            "Choose a stage before this one ({}).",
                            earlier
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    });
                    None
                }
            }
        }
        "schedule" => parse_schedule(form, &mut errors).map(Trigger::Schedule),
        _ => {
            errors.trigger = Some(
                "Choose what starts a deployment: manual, after the build, after a stage, or a schedule."
                    .into(),
            );
            None
        }
    };
    if form.trigger.starts_with("after") {
        let bad: Vec<String> = branches_problems(&form.branches, &form.exclude_branches);
        if !bad.is_empty() {
            errors.branches = Some(bad.join(" "));
        }
    }
    let tasks = match edit::parse_tasks(def, index, &form.tasks) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.tasks = text_errors(e);
            None
        }
    };
    let variables = match edit::parse_variables(&form.variables) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.variables = text_errors(e);
            None
        }
    };
    let parallel = fields::QUEUE_PARALLEL
        .parse(&form.parallel)
        .map_err(|e| errors.parallel = Some(sentence(e)))
        .ok();
    let policy = QueueMode::from_word(&form.policy);
    if policy.is_none() {
        errors.policy = Some("Choose latest only or sequence.".into());
    }
    let approvals_and_gates = parse_approvals_and_gates(form, &mut errors);
    match (
        trigger,
        tasks,
        variables,
        parallel,
        policy,
        approvals_and_gates,
    ) {
        (
            Some(trigger),
            Some(tasks),
            Some(variables),
            Some(parallel),
            Some(policy),
            Some((approvals, gates)),
        ) if errors.is_empty() => Ok(StageEdit {
            trigger,
            catch_up: form.catch_up.is_some(),
            tasks,
            variables,
            queue: QueuePolicy { parallel, policy },
            approvals,
            gates,
        }),
        _ => Err(Box::new(errors)),
    }
}

/// Branch patterns may not contain spaces or control characters (they are
/// split on commas and spaces already); an empty `**` filter is pointless.
pub(super) fn branches_problems(include: &str, exclude: &str) -> Vec<String> {
    patterns(include)
        .into_iter()
        .chain(patterns(exclude))
        .filter(|p| p.chars().any(|c| c.is_control()) || p.starts_with('-'))
        .map(|p| format!("`{p}` is not a branch pattern."))
        .collect()
}

/// Puts an approval's validation error (`field` after `approvals.before.`)
/// next to its field.
pub(super) fn place_approval_error(field: &str, message: String, out: &mut ApprovalErrors) {
    let slot = if field.starts_with("policy.n") {
        &mut out.n
    } else if field.starts_with("policy") {
        &mut out.policy
    } else if field.starts_with("timeout") {
        &mut out.timeout
    } else if field.starts_with("fresh_sign_in") {
        &mut out.fresh_sign_in
    } else {
        &mut out.approvers
    };
    slot.get_or_insert(message);
}

/// Puts the definition's validation errors next to the form's fields.
pub(super) fn place_errors(
    errors: &DefinitionErrors,
    index: usize,
    form: &StageForm,
) -> FieldErrors {
    let prefix = format!("stages[{index}].");
    let mut out = FieldErrors::default();
    for e in errors.iter() {
        let message = e.message.clone();
        let Some(field) = e.field.strip_prefix(&prefix) else {
            out.general.push(format!("{}: {message}", e.field));
            continue;
        };
        if field.starts_with("trigger.schedule.cron") {
            out.cron.get_or_insert(message);
        } else if field.starts_with("trigger.schedule.timezone") {
            out.timezone.get_or_insert(message);
        } else if field.starts_with("trigger.after") {
            out.after_stage.get_or_insert(message);
        } else if field.starts_with("trigger.branches") || field.contains(".branches") {
            out.branches.get_or_insert(message);
        } else if field.starts_with("trigger") {
            out.trigger.get_or_insert(message);
        } else if field.starts_with("tasks") {
            out.tasks.push(format!("{field}: {message}"));
        } else if field.starts_with("variables") {
            out.variables.push(format!("{field}: {message}"));
        } else if field.starts_with("queue.parallel") {
            out.parallel.get_or_insert(message);
        } else if field.starts_with("queue") {
            out.policy.get_or_insert(message);
        } else if field.starts_with("approvals.order") {
            out.approvals_order.get_or_insert(message);
        } else if let Some(rest) = field.strip_prefix("approvals.before") {
            place_approval_error(
                rest.trim_start_matches('.'),
                message,
                &mut out.approvals_before,
            );
        } else if let Some(rest) = field.strip_prefix("approvals.after") {
            place_approval_error(
                rest.trim_start_matches('.'),
                message,
                &mut out.approvals_after,
            );
        } else if let Some(rest) = field.strip_prefix("gates.before") {
            let kept = kept_checks(&form.gates_before);
            place_gate_error(
                rest.trim_start_matches('.'),
                message,
                &kept,
                &mut out.gates_before,
            );
        } else if let Some(rest) = field.strip_prefix("gates.after") {
            let kept = kept_checks(&form.gates_after);
            place_gate_error(
                rest.trim_start_matches('.'),
                message,
                &kept,
                &mut out.gates_after,
            );
        } else {
            out.general.push(format!("{field}: {message}"));
        }
    }
    out
}
