//! Build rules that need no I/O: the states of a build's task runs, which
//! triggers obey the branch filter, and fix lineage (which release a new
//! release fixes).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{BranchFilter, DeploymentState, DomainError};

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

impl fmt::Display for TaskRunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskRunState {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskRunState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| DomainError::UnknownValue {
                kind: "task run state",
                value: s.to_owned(),
                expected: TaskRunState::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// Whether a build trigger is automatic (a webhook push or polling), so that
/// the pipeline's `source.branches` filter applies. A person asking for a
/// build (`manual`, `api`) gets the branch they asked for.
pub fn trigger_is_automatic(trigger: &str) -> bool {
    trigger == "poll" || trigger == "webhook" || trigger.starts_with("webhook:")
}

/// Whether a build of `branch` started by `trigger` may be queued.
pub fn branch_may_build(filter: &BranchFilter, trigger: &str, branch: &str) -> bool {
    !trigger_is_automatic(trigger) || filter.matches(branch)
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

    #[test]
    fn automatic_triggers_obey_the_branch_filter() {
        let filter = BranchFilter {
            include: vec!["main".into(), "release/*".into()],
            exclude: vec!["release/old-*".into()],
        };
        for trigger in ["webhook:github", "webhook:generic", "webhook", "poll"] {
            assert!(trigger_is_automatic(trigger));
            assert!(branch_may_build(&filter, trigger, "main"));
            assert!(branch_may_build(&filter, trigger, "release/2"));
            assert!(!branch_may_build(&filter, trigger, "feature/x"));
            assert!(!branch_may_build(&filter, trigger, "release/old-1"));
        }
        for trigger in ["manual", "api"] {
            assert!(!trigger_is_automatic(trigger));
            assert!(branch_may_build(&filter, trigger, "feature/x"));
        }
        assert!(branch_may_build(
            &BranchFilter::default(),
            "poll",
            "anything/at/all"
        ));
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
