//! Stage rules (SPEC §1, §2 "Beyond"): which release may go into a stage,
//! what queuing a deployment does to the ones that wait, which step a
//! deployment takes next, and which stages a continuous trigger starts.
//!
//! - A release is deployed to a stage only after it succeeded in the stage
//!   before it (the first stage deploys from the build: the release exists).
//! - No release older than the one in the stage (the release of its newest
//!   succeeded deployment) goes in, except an explicit rollback with a reason.
//! - A redeploy is a new attempt of a release that was deployed to the stage
//!   before (the one there, or one whose attempt failed or was interrupted).
//! - Queuing with `latest_only` supersedes the older releases that wait for
//!   the stage; a rollback supersedes every waiting one. With either policy
//!   an older release cannot queue behind a newer one (it would undo it),
//!   except as a rollback.
//!
//! Releases are ordered by id (creation order). Everything here is pure.

use std::fmt;

use super::{ApprovalOrder, DeploymentEvent, DeploymentState, QueueMode, Stage, Trigger, Upstream};

/// A release as the rules see it: its id (creation order) and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseRef<'a> {
    /// Creation order: a larger id is a newer release.
    pub id: i64,
    pub version: &'a str,
}

/// What kind of deployment is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeployKind<'a> {
    /// A release moving forward (manual, schedule, `after:` triggers).
    Forward,
    /// A new attempt of a release deployed to the stage before.
    Redeploy,
    /// An older release on purpose; the reason is required.
    Rollback {
        /// Why (may be empty: then it is refused).
        reason: &'a str,
    },
}

impl DeployKind<'_> {
    /// Whether this is a rollback.
    pub fn is_rollback(&self) -> bool {
        matches!(self, DeployKind::Rollback { .. })
    }
}

/// What is known about a release and a stage when a deployment is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeployCheck<'a> {
    /// The stage to deploy to.
    pub stage: &'a str,
    /// The stage before it; `None` for the first stage (it deploys from the build).
    pub previous_stage: Option<&'a str>,
    /// The release to deploy.
    pub release: ReleaseRef<'a>,
    /// Whether the release has a succeeded deployment in the previous stage
    /// (ignored for the first stage).
    pub succeeded_in_previous: bool,
    /// The release in the stage now: the one of its newest succeeded deployment.
    pub current: Option<ReleaseRef<'a>>,
    /// Whether the release was deployed to this stage before (any attempt).
    pub deployed_here_before: bool,
    /// Forward, redeploy or rollback.
    pub kind: DeployKind<'a>,
}

/// Why a deployment is refused; the text is meant for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

fn refuse<T>(message: String) -> Result<T, Refusal> {
    Err(Refusal(message))
}

/// Checks the stage rules for a deployment of `c.release` to `c.stage`.
pub fn check_deploy(c: &DeployCheck<'_>) -> Result<(), Refusal> {
    let version = c.release.version;
    if let DeployKind::Rollback { reason } = c.kind
        && reason.trim().is_empty()
    {
        return refuse(format!(
            "A rollback of {} to {version} needs a reason.",
            c.stage
        ));
    }
    if let Some(previous) = c.previous_stage
        && !c.succeeded_in_previous
    {
        return refuse(format!(
            "{version} has not succeeded in {previous} yet; a release cannot skip a stage."
        ));
    }
    if c.kind == DeployKind::Redeploy && !c.deployed_here_before {
        return refuse(format!(
            "{version} was never deployed to {}; a redeploy repeats a deployment, so deploy it instead.",
            c.stage
        ));
    }
    match (c.current, c.kind) {
        (Some(current), DeployKind::Forward | DeployKind::Redeploy)
            if c.release.id < current.id =>
        {
            refuse(format!(
                "{} runs {}; {version} is older — use a rollback with a reason.",
                c.stage, current.version
            ))
        }
        (Some(current), DeployKind::Rollback { .. }) if c.release.id >= current.id => {
            refuse(format!(
                "{} runs {}; {version} is not older, so this is no rollback — deploy it without one.",
                c.stage, current.version
            ))
        }
        (None, DeployKind::Rollback { .. }) => refuse(format!(
            "Nothing succeeded in {} yet, so there is nothing to roll back; deploy {version} without a rollback.",
            c.stage
        )),
        _ => Ok(()),
    }
}

/// Whether the person looking may deploy to a stage by hand, as
/// `authz::may_on_stage` and the role decided it (the caller asks them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission<'a> {
    /// The role allows it and the stage's deployers name the person.
    Allowed,
    /// Nobody is signed in.
    SignedOut,
    /// The role (its label) does not allow deploying.
    Role(&'a str),
    /// The stage lists its deployers and the person is not one of them.
    NotDeployer,
}

/// What the pages offer for a release in a stage: a button, or why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Nothing to offer: the release is live there, or its deployment
    /// there waits or runs (the page shows that instead).
    Nothing,
    /// "Deploy to STAGE" (the first stage, from the build) or, with
    /// `promote`, "Promote to STAGE" (from the stage before).
    Deploy {
        /// The release comes from the previous stage.
        promote: bool,
    },
    /// Its newest deployment there failed or was interrupted: ask for the
    /// same release again (trigger `redeploy`).
    Retry,
    /// The rules or the person's rights say no; the reason in a few words
    /// ("needs dev to succeed first", "a newer release is live", "you are
    /// not a deployer of production").
    Refused(String),
}

/// The facts behind an [`Offer`] for one release × stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfferFacts<'a> {
    pub stage: &'a str,
    pub previous_stage: Option<&'a str>,
    pub release: ReleaseRef<'a>,
    pub succeeded_in_previous: bool,
    /// The release live in the stage now.
    pub current: Option<ReleaseRef<'a>>,
    /// The state of the release's newest deployment to the stage.
    pub latest_here: Option<DeploymentState>,
    pub permission: Permission<'a>,
}

/// What to offer for a release in a stage: the stage rules
/// ([`check_deploy`]) first, then the person's rights. Pure; the pages
/// derive the facts from rows they have loaded.
pub fn offer(f: &OfferFacts<'_>) -> Offer {
    if f.latest_here.is_some_and(|s| !s.is_terminal()) {
        return Offer::Nothing;
    }
    let retry = matches!(
        f.latest_here,
        Some(DeploymentState::Failed | DeploymentState::Interrupted)
    );
    if !retry && f.current.is_some_and(|c| c.id == f.release.id) {
        return Offer::Nothing;
    }
    let check = DeployCheck {
        stage: f.stage,
        previous_stage: f.previous_stage,
        release: f.release,
        succeeded_in_previous: f.succeeded_in_previous,
        current: f.current,
        deployed_here_before: f.latest_here.is_some(),
        kind: if retry {
            DeployKind::Redeploy
        } else {
            DeployKind::Forward
        },
    };
    if let Err(refusal) = check_deploy(&check) {
        return Offer::Refused(match (f.previous_stage, f.current) {
            (Some(previous), _) if !f.succeeded_in_previous => {
                format!("needs {previous} to succeed first")
            }
            (_, Some(current)) if current.id > f.release.id => {
                "a newer release is live".to_string()
            }
            _ => refusal.0,
        });
    }
    match f.permission {
        Permission::Allowed if retry => Offer::Retry,
        Permission::Allowed => Offer::Deploy {
            promote: f.previous_stage.is_some(),
        },
        Permission::SignedOut => Offer::Refused("sign in to deploy".into()),
        Permission::Role(role) => {
            Offer::Refused(format!("a {} may not deploy", role.to_lowercase()))
        }
        Permission::NotDeployer => Offer::Refused(format!("you are not a deployer of {}", f.stage)),
    }
}

/// A deployment that waits for a stage (queued, for approval or on gates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitingDeployment<'a> {
    pub deployment_id: i64,
    pub release: ReleaseRef<'a>,
    pub state: DeploymentState,
}

/// What queuing a deployment of `release` does to the deployments waiting
/// for the same stage: the ids to supersede (by `release`), or a refusal
/// when an older release would queue behind a newer one.
///
/// Waiting deployments of `release` itself are not expected here (the
/// request is answered with the one there).
pub fn on_queue(
    stage: &str,
    policy: QueueMode,
    release: ReleaseRef<'_>,
    kind: DeployKind<'_>,
    waiting: &[WaitingDeployment<'_>],
) -> Result<Vec<i64>, Refusal> {
    let waiting: Vec<&WaitingDeployment<'_>> = waiting
        .iter()
        .filter(|w| w.state.is_waiting() && w.release.id != release.id)
        .collect();
    if !kind.is_rollback()
        && let Some(newer) = waiting
            .iter()
            .filter(|w| w.release.id > release.id)
            .max_by_key(|w| w.release.id)
    {
        return refuse(format!(
            "{} waits for {stage} already; {} is older and would undo it — use a rollback with a reason.",
            newer.release.version, release.version
        ));
    }
    Ok(match policy {
        QueueMode::Sequence => Vec::new(),
        QueueMode::LatestOnly => waiting.iter().map(|w| w.deployment_id).collect(),
    })
}

/// Whether a queued deployment may still start: `Err(release id)` of the
/// newer release that succeeded in the stage meanwhile (the deployment is
/// then superseded by it), unless it is a rollback.
pub fn may_start(
    release: ReleaseRef<'_>,
    rollback: bool,
    current: Option<ReleaseRef<'_>>,
) -> Result<(), i64> {
    match current {
        Some(current) if !rollback && current.id > release.id => Err(current.id),
        _ => Ok(()),
    }
}

/// The step a queued deployment takes first: approvals before the stage
/// (unless the stage orders gates first), gates before it, or its tasks.
pub fn first_step(stage: &Stage) -> DeploymentEvent {
    step(
        stage.approvals.before.is_some(),
        stage.gates.before.is_some(),
        stage.approvals.order,
        DeploymentEvent::Start,
    )
}

/// The step a deployment takes when its tasks succeeded: approvals after
/// the stage, gates after it, or done.
pub fn after_tasks(stage: &Stage) -> DeploymentEvent {
    step(
        stage.approvals.after.is_some(),
        stage.gates.after.is_some(),
        stage.approvals.order,
        DeploymentEvent::Succeed,
    )
}

/// The step a deployment takes when its approval (before the stage, or
/// after it when `after`) is approved: gates of that phase when they come
/// after approvals, else its tasks (before) or done (after).
pub fn after_approval(stage: &Stage, after: bool) -> DeploymentEvent {
    let gates = if after {
        stage.gates.after.is_some()
    } else {
        stage.gates.before.is_some()
    };
    match (
        gates && stage.approvals.order == ApprovalOrder::BeforeGates,
        after,
    ) {
        (true, _) => DeploymentEvent::StartGates,
        (false, false) => DeploymentEvent::Start,
        (false, true) => DeploymentEvent::Succeed,
    }
}

fn step(
    approvals: bool,
    gates: bool,
    order: ApprovalOrder,
    otherwise: DeploymentEvent,
) -> DeploymentEvent {
    match (approvals, gates, order) {
        (true, false, _) | (true, true, ApprovalOrder::BeforeGates) => {
            DeploymentEvent::RequestApproval
        }
        (_, true, _) => DeploymentEvent::StartGates,
        (false, false, _) => otherwise,
    }
}

/// The stages an `after` trigger starts when `upstream` succeeds with a
/// release built from `branch`, in pipeline order.
pub fn stages_after<'s>(stages: &'s [Stage], upstream: &Upstream, branch: &str) -> Vec<&'s Stage> {
    stages
        .iter()
        .filter(|s| match &s.trigger {
            Trigger::After {
                upstream: u,
                branches,
            } => u == upstream && branches.matches(branch),
            _ => false,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::domain::{DeploymentState as S, parse_definition};

    const R5: ReleaseRef<'static> = ReleaseRef {
        id: 5,
        version: "1.0.5",
    };
    const R7: ReleaseRef<'static> = ReleaseRef {
        id: 7,
        version: "1.0.7",
    };
    const R9: ReleaseRef<'static> = ReleaseRef {
        id: 9,
        version: "1.0.9",
    };

    fn check<'a>(release: ReleaseRef<'a>, kind: DeployKind<'a>) -> DeployCheck<'a> {
        DeployCheck {
            stage: "test",
            previous_stage: Some("dev"),
            release,
            succeeded_in_previous: true,
            current: None,
            deployed_here_before: false,
            kind,
        }
    }

    fn message(r: Result<(), Refusal>) -> String {
        r.unwrap_err().0
    }

    #[test]
    fn a_release_cannot_skip_a_stage() {
        let c = DeployCheck {
            succeeded_in_previous: false,
            ..check(R7, DeployKind::Forward)
        };
        assert_eq!(
            message(check_deploy(&c)),
            "1.0.7 has not succeeded in dev yet; a release cannot skip a stage."
        );
        // Not even as a rollback or a redeploy.
        for kind in [
            DeployKind::Rollback { reason: "broken" },
            DeployKind::Redeploy,
        ] {
            let c = DeployCheck {
                succeeded_in_previous: false,
                deployed_here_before: true,
                current: Some(R9),
                ..check(R7, kind)
            };
            assert!(message(check_deploy(&c)).contains("has not succeeded in dev"));
        }
        // The first stage deploys from the build: the release exists.
        let first = DeployCheck {
            previous_stage: None,
            succeeded_in_previous: false,
            ..check(R7, DeployKind::Forward)
        };
        assert_eq!(check_deploy(&first), Ok(()));
    }

    #[test]
    fn no_older_release_goes_in_except_a_rollback_with_a_reason() {
        let older = DeployCheck {
            current: Some(R9),
            ..check(R7, DeployKind::Forward)
        };
        assert_eq!(
            message(check_deploy(&older)),
            "test runs 1.0.9; 1.0.7 is older — use a rollback with a reason."
        );
        let rollback = DeployCheck {
            kind: DeployKind::Rollback {
                reason: "checkout is broken",
            },
            ..older
        };
        assert_eq!(check_deploy(&rollback), Ok(()));
        for blank in ["", "   "] {
            let no_reason = DeployCheck {
                kind: DeployKind::Rollback { reason: blank },
                ..older
            };
            assert_eq!(
                message(check_deploy(&no_reason)),
                "A rollback of test to 1.0.7 needs a reason."
            );
        }
        // The same or a newer release is no downgrade.
        for current in [R5, R7] {
            let c = DeployCheck {
                current: Some(current),
                ..check(R7, DeployKind::Forward)
            };
            assert_eq!(check_deploy(&c), Ok(()), "{current:?}");
        }
    }

    #[test]
    fn a_rollback_must_go_back() {
        let reason = DeployKind::Rollback { reason: "why not" };
        let newer = DeployCheck {
            current: Some(R7),
            ..check(R9, reason)
        };
        assert!(message(check_deploy(&newer)).contains("1.0.9 is not older"));
        let same = DeployCheck {
            current: Some(R7),
            ..check(R7, reason)
        };
        assert!(message(check_deploy(&same)).contains("is not older"));
        let empty = check(R7, reason);
        assert!(message(check_deploy(&empty)).contains("nothing to roll back"));
    }

    #[test]
    fn a_redeploy_repeats_a_deployment() {
        let never = DeployCheck {
            current: Some(R7),
            ..check(R7, DeployKind::Redeploy)
        };
        assert!(message(check_deploy(&never)).contains("was never deployed to test"));
        let again = DeployCheck {
            deployed_here_before: true,
            ..never
        };
        assert_eq!(check_deploy(&again), Ok(()));
        // An interrupted attempt of a newer release than the one there.
        let interrupted = DeployCheck {
            deployed_here_before: true,
            current: Some(R5),
            ..check(R7, DeployKind::Redeploy)
        };
        assert_eq!(check_deploy(&interrupted), Ok(()));
        // A redeploy of an older release is a downgrade.
        let older = DeployCheck {
            deployed_here_before: true,
            current: Some(R9),
            ..check(R7, DeployKind::Redeploy)
        };
        assert!(message(check_deploy(&older)).contains("use a rollback"));
    }

    fn waiting(id: i64, release: ReleaseRef<'static>, state: S) -> WaitingDeployment<'static> {
        WaitingDeployment {
            deployment_id: id,
            release,
            state,
        }
    }

    #[test]
    fn latest_only_supersedes_the_older_waiting_releases() {
        let w = [
            waiting(1, R5, S::Queued),
            waiting(2, R7, S::WaitingForApproval),
            waiting(3, R5, S::EvaluatingGates),
            // Running and ended ones are never touched.
            waiting(4, R5, S::Running),
            waiting(5, R5, S::Failed),
        ];
        assert_eq!(
            on_queue("test", QueueMode::LatestOnly, R9, DeployKind::Forward, &w),
            Ok(vec![1, 2, 3])
        );
        assert_eq!(
            on_queue("test", QueueMode::Sequence, R9, DeployKind::Forward, &w),
            Ok(vec![])
        );
        assert_eq!(
            on_queue("test", QueueMode::LatestOnly, R9, DeployKind::Forward, &[]),
            Ok(vec![])
        );
    }

    #[test]
    fn an_older_release_cannot_queue_behind_a_newer_one() {
        let w = [waiting(1, R5, S::Queued), waiting(2, R9, S::Queued)];
        for policy in [QueueMode::LatestOnly, QueueMode::Sequence] {
            let refused = on_queue("test", policy, R7, DeployKind::Forward, &w).unwrap_err();
            assert_eq!(
                refused.0,
                "1.0.9 waits for test already; 1.0.7 is older and would undo it — use a rollback with a reason."
            );
        }
        // A rollback is the latest intent: everything waiting goes.
        let rollback = DeployKind::Rollback { reason: "bad" };
        assert_eq!(
            on_queue("test", QueueMode::LatestOnly, R7, rollback, &w),
            Ok(vec![1, 2])
        );
        assert_eq!(
            on_queue("test", QueueMode::Sequence, R7, rollback, &w),
            Ok(vec![])
        );
        // Running newer releases do not refuse (the no-downgrade rule looks at what succeeded).
        let running = [waiting(3, R9, S::Running)];
        assert_eq!(
            on_queue(
                "test",
                QueueMode::LatestOnly,
                R7,
                DeployKind::Forward,
                &running
            ),
            Ok(vec![])
        );
    }

    #[test]
    fn pages_offer_a_deploy_only_where_the_rules_and_rights_allow() {
        let facts = OfferFacts {
            stage: "test",
            previous_stage: Some("dev"),
            release: R7,
            succeeded_in_previous: true,
            current: Some(R5),
            latest_here: None,
            permission: Permission::Allowed,
        };
        assert_eq!(offer(&facts), Offer::Deploy { promote: true });
        let first = OfferFacts {
            previous_stage: None,
            succeeded_in_previous: false,
            ..facts
        };
        assert_eq!(offer(&first), Offer::Deploy { promote: false });
        let refused = |f: OfferFacts<'_>| match offer(&f) {
            Offer::Refused(why) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(OfferFacts {
                succeeded_in_previous: false,
                ..facts
            }),
            "needs dev to succeed first"
        );
        assert_eq!(
            refused(OfferFacts {
                current: Some(R9),
                ..facts
            }),
            "a newer release is live"
        );
        assert_eq!(
            refused(OfferFacts {
                permission: Permission::Role("viewer"),
                ..facts
            }),
            "a viewer may not deploy"
        );
        assert_eq!(
            refused(OfferFacts {
                permission: Permission::NotDeployer,
                ..facts
            }),
            "you are not a deployer of test"
        );
        // The rules speak before the rights.
        assert_eq!(
            refused(OfferFacts {
                succeeded_in_previous: false,
                permission: Permission::NotDeployer,
                ..facts
            }),
            "needs dev to succeed first"
        );
        // Live there, or on its way: nothing to offer.
        for (current, latest) in [
            (Some(R7), Some(S::Succeeded)),
            (Some(R5), Some(S::Queued)),
            (Some(R5), Some(S::Running)),
            (Some(R5), Some(S::WaitingForApproval)),
        ] {
            let f = OfferFacts {
                current,
                latest_here: latest,
                ..facts
            };
            assert_eq!(offer(&f), Offer::Nothing, "{latest:?}");
        }
        // A failed attempt is retried, not promoted again.
        for failed in [S::Failed, S::Interrupted] {
            let f = OfferFacts {
                latest_here: Some(failed),
                ..facts
            };
            assert_eq!(offer(&f), Offer::Retry);
        }
        // A canceled or superseded one may go forward again.
        let canceled = OfferFacts {
            latest_here: Some(S::Canceled),
            ..facts
        };
        assert_eq!(offer(&canceled), Offer::Deploy { promote: true });
    }

    #[test]
    fn a_queued_deployment_overtaken_by_a_newer_success_does_not_start() {
        assert_eq!(may_start(R7, false, None), Ok(()));
        assert_eq!(may_start(R7, false, Some(R5)), Ok(()));
        assert_eq!(may_start(R7, false, Some(R7)), Ok(()));
        assert_eq!(may_start(R7, false, Some(R9)), Err(9));
        assert_eq!(may_start(R7, true, Some(R9)), Ok(()));
    }

    const STEPS: &str = r#"pipeline: steps
source: { repo: /srv/git/steps }
version: "1.0.{build}"
stages:
  - name: plain
  - name: approved
    trigger: { after: plain }
    approvals:
      before: { approvers: [alice] }
      after: { approvers: [bob] }
  - name: gated
    trigger: { after: build }
    gates:
      before: { checks: [ { command: { run: "true" } } ] }
      after: { checks: [ { command: { run: "true" } } ] }
  - name: both
    trigger: { after: plain, branches: { include: ["release/*"] } }
    approvals:
      before: { approvers: [alice] }
    gates:
      before: { checks: [ { command: { run: "true" } } ] }
  - name: gates-first
    trigger: { after: build, branches: { exclude: ["wip/**"] } }
    approvals:
      order: after_gates
      before: { approvers: [alice] }
      after: { approvers: [alice] }
    gates:
      before: { checks: [ { command: { run: "true" } } ] }
      after: { checks: [ { command: { run: "true" } } ] }
"#;

    #[test]
    fn approvals_and_gates_come_first_or_after() {
        let def = parse_definition(STEPS, "steps.yaml").unwrap();
        let step = |name: &str| {
            let s = def.stage(name).unwrap();
            (first_step(s), after_tasks(s))
        };
        use DeploymentEvent as E;
        assert_eq!(step("plain"), (E::Start, E::Succeed));
        assert_eq!(step("approved"), (E::RequestApproval, E::RequestApproval));
        assert_eq!(step("gated"), (E::StartGates, E::StartGates));
        assert_eq!(step("both"), (E::RequestApproval, E::Succeed));
        assert_eq!(step("gates-first"), (E::StartGates, E::StartGates));
        // Each first step is a legal move from queued.
        for s in &def.stages {
            assert!(S::Queued.transition(first_step(s)).is_ok());
            assert!(S::Running.transition(after_tasks(s)).is_ok());
        }
    }

    #[test]
    fn an_approved_deployment_goes_on_to_its_gates_tasks_or_end() {
        let def = parse_definition(STEPS, "steps.yaml").unwrap();
        let next = |name: &str| {
            let s = def.stage(name).unwrap();
            (after_approval(s, false), after_approval(s, true))
        };
        use DeploymentEvent as E;
        assert_eq!(next("approved"), (E::Start, E::Succeed));
        assert_eq!(next("both"), (E::StartGates, E::Succeed));
        // Gates came first: approval is the last step of each phase.
        assert_eq!(next("gates-first"), (E::Start, E::Succeed));
        // Each is a legal move from waiting for approval.
        for s in &def.stages {
            for after in [false, true] {
                assert!(
                    S::WaitingForApproval
                        .transition(after_approval(s, after))
                        .is_ok()
                );
            }
        }
    }

    #[test]
    fn after_triggers_follow_their_upstream_and_branch_filter() {
        let def = parse_definition(STEPS, "steps.yaml").unwrap();
        let names = |upstream: Upstream, branch: &str| -> Vec<String> {
            stages_after(&def.stages, &upstream, branch)
                .iter()
                .map(|s| s.name.to_string())
                .collect()
        };
        assert_eq!(names(Upstream::Build, "main"), ["gated", "gates-first"]);
        assert_eq!(names(Upstream::Build, "wip/x/y"), ["gated"]);
        let plain = Upstream::Stage("plain".parse().unwrap());
        assert_eq!(names(plain.clone(), "main"), ["approved"]);
        assert_eq!(names(plain, "release/2"), ["approved", "both"]);
        let approved = Upstream::Stage("approved".parse().unwrap());
        assert!(names(approved, "main").is_empty());
    }
}
