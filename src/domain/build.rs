//! Build rules that need no I/O: the states of a build's task runs, which
//! triggers obey the branch filter, and fix lineage (which release a new
//! release fixes).

use serde::{Deserialize, Serialize};

use super::deployment::text_enum_impls;
use super::{DeploymentState, PipelineDefinition, Source};

/// The state of one task run (of a build now, of a deployment later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskRunState {
    /// Not started yet.
    Pending,
    /// Its process runs.
    Running,
    /// It exited with code 0.
    Succeeded,
    /// It exited with another code, timed out or could not start.
    Failed,
    /// A person canceled the build or deployment while it ran.
    Canceled,
    /// An earlier task failed (or the work was canceled) before it started.
    Skipped,
    /// The process was stopped or killed while it ran.
    Interrupted,
}

impl TaskRunState {
    /// Every state.
    pub const ALL: [TaskRunState; 7] = [
        TaskRunState::Pending,
        TaskRunState::Running,
        TaskRunState::Succeeded,
        TaskRunState::Failed,
        TaskRunState::Canceled,
        TaskRunState::Skipped,
        TaskRunState::Interrupted,
    ];

    /// The stored and JSON form: `pending`, `running`, ….
    pub fn as_str(&self) -> &'static str {
        match self {
            TaskRunState::Pending => "pending",
            TaskRunState::Running => "running",
            TaskRunState::Succeeded => "succeeded",
            TaskRunState::Failed => "failed",
            TaskRunState::Canceled => "canceled",
            TaskRunState::Skipped => "skipped",
            TaskRunState::Interrupted => "interrupted",
        }
    }

    /// Text for people.
    pub fn label(&self) -> &'static str {
        match self {
            TaskRunState::Pending => "Pending",
            TaskRunState::Running => "Running",
            TaskRunState::Succeeded => "Succeeded",
            TaskRunState::Failed => "Failed",
            TaskRunState::Canceled => "Canceled",
            TaskRunState::Skipped => "Skipped",
            TaskRunState::Interrupted => "Interrupted",
        }
    }

    /// Whether the state never changes again.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, TaskRunState::Pending | TaskRunState::Running)
    }
}

text_enum_impls!(TaskRunState, "task run state");

/// Whether a build trigger is automatic (a webhook push or polling), so that
/// the pipeline's `source.branches` filter applies. A person asking for a
/// build (`manual`, `api`) gets the branch they asked for.
pub fn trigger_is_automatic(trigger: &str) -> bool {
    trigger == "poll" || trigger == "webhook" || trigger.starts_with("webhook:")
}

/// Whether a build of `branch` started by `trigger` may be queued: a push
/// only of a branch the source builds ([`Source::builds_push_of`]).
pub fn branch_may_build(source: &Source, trigger: &str, branch: &str) -> bool {
    !trigger_is_automatic(trigger) || source.builds_push_of(branch)
}

/// Why a build of `branch` may not run: it reads secrets (in `variables`
/// or a build task's `env`) but the source gives secrets only to other
/// branches ([`Source::secrets_allowed`]). `None` when it may run.
pub fn secrets_withheld(definition: &PipelineDefinition, branch: &str) -> Option<String> {
    if definition.source.secrets_allowed(branch) {
        return None;
    }
    let variables = definition
        .variables
        .iter()
        .map(|(name, value)| (format!("variable {name}"), value));
    let tasks = definition
        .build
        .tasks
        .iter()
        .enumerate()
        .flat_map(|(i, task)| {
            let label = match task.name.as_deref() {
                Some(name) => format!("build task `{name}`"),
                None => format!("build task {}", i + 1),
            };
            task.env
                .iter()
                .map(move |(name, value)| (format!("{label} env {name}"), value))
        });
    let (place, names) = variables
        .chain(tasks)
        .map(|(place, value)| (place, super::secrets::references(value)))
        .find(|(_, names)| !names.is_empty())?;
    let allowed = match &definition.source.secrets_for {
        Some(patterns) if patterns.is_empty() => "no branch".to_owned(),
        Some(patterns) => patterns.join(", "),
        None if definition.source.branches.include.is_empty() => definition.source.branch.clone(),
        None => definition.source.branches.include.join(", "),
    };
    Some(format!(
        "{place} reads the secret {}, but secrets are given only to builds of {allowed} \
         (source.secrets_for), not of `{branch}`",
        names.join(", ")
    ))
}

/// One deployment of the newest earlier release, as fix lineage sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PastDeployment {
    /// The stage it deployed to.
    pub stage: String,
    /// Its order among the deployments of the release (later is larger, e.g. the id).
    pub order: i64,
    /// Where it ended up.
    pub state: DeploymentState,
}

/// Whether a deployment in this state means that the release failed in its stage.
pub fn is_failure(state: DeploymentState) -> bool {
    matches!(
        state,
        DeploymentState::Failed | DeploymentState::Interrupted | DeploymentState::Rejected
    )
}

/// Fix lineage (SPEC §2): the release a new release fixes, if any.
///
/// `newest` is the newest release of the pipeline before the new one (its
/// id and its deployments). The new release fixes it when, in some stage,
/// its latest deployment failed, was interrupted or was rejected; a later
/// successful redeployment to that stage means it no longer fails there.
/// Without an earlier release there is nothing to fix.
pub fn release_to_fix(newest: Option<(i64, &[PastDeployment])>) -> Option<i64> {
    let (release_id, deployments) = newest?;
    let mut latest: Vec<&PastDeployment> = Vec::new();
    for d in deployments {
        match latest.iter_mut().find(|l| l.stage == d.stage) {
            Some(l) if l.order < d.order => *l = d,
            Some(_) => {}
            None => latest.push(d),
        }
    }
    latest
        .iter()
        .any(|d| is_failure(d.state))
        .then_some(release_id)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use DeploymentState as S;

    fn d(stage: &str, order: i64, state: S) -> PastDeployment {
        PastDeployment {
            stage: stage.into(),
            order,
            state,
        }
    }

    #[test]
    fn no_earlier_release_fixes_nothing() {
        assert_eq!(release_to_fix(None), None);
    }

    #[test]
    fn a_release_without_deployments_is_not_a_failure() {
        assert_eq!(release_to_fix(Some((7, &[]))), None);
    }

    #[test]
    fn failed_interrupted_and_rejected_count_as_failures() {
        for state in S::ALL {
            let deployments = [d("dev", 1, S::Succeeded), d("test", 2, state)];
            let expected = matches!(state, S::Failed | S::Interrupted | S::Rejected);
            assert_eq!(
                release_to_fix(Some((7, &deployments))),
                expected.then_some(7),
                "{state}"
            );
            assert_eq!(is_failure(state), expected);
        }
    }

    #[test]
    fn only_the_latest_deployment_per_stage_counts() {
        // Failed in test, then redeployed successfully: nothing to fix.
        let redeployed = [
            d("dev", 1, S::Succeeded),
            d("test", 2, S::Failed),
            d("test", 3, S::Succeeded),
        ];
        assert_eq!(release_to_fix(Some((7, &redeployed))), None);
        // The order of the slice does not matter, only `order`.
        let shuffled = [
            d("test", 3, S::Succeeded),
            d("dev", 1, S::Succeeded),
            d("test", 2, S::Failed),
        ];
        assert_eq!(release_to_fix(Some((7, &shuffled))), None);
        // Succeeded first, failed on the second attempt: needs a fix.
        let failed_later = [d("prod", 4, S::Succeeded), d("prod", 9, S::Interrupted)];
        assert_eq!(release_to_fix(Some((7, &failed_later))), Some(7));
    }

    #[test]
    fn waiting_and_canceled_are_not_failures() {
        let deployments = [
            d("dev", 1, S::Canceled),
            d("test", 2, S::Queued),
            d("preprod", 3, S::WaitingForApproval),
            d("prod", 4, S::Superseded),
        ];
        assert_eq!(release_to_fix(Some((7, &deployments))), None);
    }

    fn source(include: &[&str], exclude: &[&str]) -> Source {
        use crate::domain::BranchFilter;
        Source {
            repo: "./app".into(),
            branch: "main".into(),
            branches: BranchFilter {
                include: include.iter().map(|s| s.to_string()).collect(),
                exclude: exclude.iter().map(|s| s.to_string()).collect(),
            },
            secrets_for: None,
            webhook_secret: None,
            poll: None,
        }
    }

    #[test]
    fn automatic_triggers_obey_the_branch_filter() {
        let filtered = source(&["main", "release/*"], &["release/old-*"]);
        for trigger in ["webhook:github", "webhook:generic", "webhook", "poll"] {
            assert!(trigger_is_automatic(trigger));
            assert!(branch_may_build(&filtered, trigger, "main"));
            assert!(branch_may_build(&filtered, trigger, "release/2"));
            assert!(!branch_may_build(&filtered, trigger, "feature/x"));
            assert!(!branch_may_build(&filtered, trigger, "release/old-1"));
        }
        for trigger in ["manual", "api"] {
            assert!(!trigger_is_automatic(trigger));
            assert!(branch_may_build(&filtered, trigger, "feature/x"));
        }
    }

    #[test]
    fn without_an_include_list_pushes_build_only_the_source_branch() {
        let plain = source(&[], &[]);
        assert!(branch_may_build(&plain, "poll", "main"));
        assert!(!branch_may_build(&plain, "webhook:github", "feature"));
        assert!(!branch_may_build(&plain, "poll", "anything/at/all"));
        assert!(branch_may_build(&plain, "manual", "feature"));
        let excluded = source(&[], &["main"]);
        assert!(!branch_may_build(&excluded, "poll", "main"));
    }

    #[test]
    fn secrets_go_to_the_built_branches_unless_secrets_for_says_otherwise() {
        let plain = source(&[], &[]);
        assert!(plain.secrets_allowed("main"));
        assert!(!plain.secrets_allowed("feature"));
        let filtered = source(&["main", "release/*"], &[]);
        assert!(filtered.secrets_allowed("release/2"));
        assert!(!filtered.secrets_allowed("feature/x"));
        let only_main = Source {
            secrets_for: Some(vec!["main".into()]),
            ..filtered
        };
        assert!(only_main.secrets_allowed("main"));
        assert!(!only_main.secrets_allowed("release/2"));
        let none = Source {
            secrets_for: Some(Vec::new()),
            ..plain
        };
        assert!(!none.secrets_allowed("main"));
    }

    #[test]
    fn task_run_states_round_trip() {
        for s in TaskRunState::ALL {
            assert_eq!(s.as_str().parse::<TaskRunState>(), Ok(s));
            assert!(!s.label().is_empty());
            assert_eq!(
                s.is_terminal(),
                !matches!(s, TaskRunState::Pending | TaskRunState::Running)
            );
        }
        assert!("done".parse::<TaskRunState>().is_err());
    }
}
