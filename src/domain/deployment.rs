//! Deployment and build lifecycles as state machines.
//!
//! A deployment: `queued → (waiting_for_approval) → (evaluating_gates) →
//! running → succeeded | failed | canceled | rejected | superseded |
//! interrupted`. Approvals may also follow gates, and a stage may require
//! approvals or gates after its tasks ran (running → waiting/evaluating →
//! succeeded). Every change goes through [`DeploymentState::transition`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::DomainError;

pub(crate) fn unknown(kind: &'static str, value: &str, expected: &[&str]) -> DomainError {
    DomainError::UnknownValue {
        kind,
        value: value.to_owned(),
        expected: expected.join(", "),
    }
}

/// The member of `all` whose `name` is `value`, else an error listing the
/// names (the `FromStr` of the domain's stored enums).
pub(crate) fn by_name<T: Copy>(
    all: &[T],
    name: fn(&T) -> &'static str,
    kind: &'static str,
    value: &str,
) -> Result<T, DomainError> {
    all.iter()
        .copied()
        .find(|t| name(t) == value)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(name).collect();
            unknown(kind, value, &names)
        })
}

/// `Display` (the `as_str` text) for an enum with `as_str`, and, given the
/// `kind` named in errors, `FromStr` by [`by_name`] over its `ALL` (an
/// unknown text is a [`DomainError::UnknownValue`] listing the names).
macro_rules! text_enum_impls {
    ($name:ident $(, $kind:literal)?) => {
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
        $(
            impl std::str::FromStr for $name {
                type Err = $crate::domain::DomainError;
                fn from_str(s: &str) -> Result<Self, Self::Err> {
                    $crate::domain::deployment::by_name(&$name::ALL[..], $name::as_str, $kind, s)
                }
            }
        )?
    };
}
pub(crate) use text_enum_impls;

/// `transition` (applies an event, refusing illegal moves) and
/// `can_transition_to` for a state enum `$state` with `next(event)` and
/// `as_str`, over the events `$event` (with `ALL` and `as_str`).
macro_rules! transition_impls {
    ($state:ident, $event:ident) => {
        impl $state {
            /// Applies `event`, refusing illegal moves.
            pub fn transition(self, event: $event) -> Result<$state, DomainError> {
                self.next(event).ok_or(DomainError::IllegalTransition {
                    from: self.as_str(),
                    event: event.as_str(),
                })
            }

            /// Whether some event moves this state to `next`.
            pub fn can_transition_to(&self, next: $state) -> bool {
                $event::ALL
                    .iter()
                    .any(|event| self.next(*event) == Some(next))
            }
        }
    };
}

/// The state of one deployment of a release to a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Waiting for its turn in the stage's queue.
    Queued,
    /// Waiting for approvers to sign off.
    WaitingForApproval,
    /// Sampling gate checks.
    EvaluatingGates,
    /// Tasks are running.
    Running,
    /// Done; the release is in the stage.
    Succeeded,
    /// A task failed or a gate timed out.
    Failed,
    /// A person canceled it.
    Canceled,
    /// An approver rejected it (or the approval timed out).
    Rejected,
    /// A newer release replaced it while it was waiting.
    Superseded,
    /// The process was killed while its tasks ran; it can be redeployed.
    Interrupted,
}

/// Something that happens to a deployment.
///
/// Events name the step the engine takes; the state that results is fixed
/// by [`DeploymentState::transition`]. When an approval is granted the engine
/// sends the event of the next step (`StartGates`, `Start` or `Succeed`), so
/// the same table covers approvals and gates before and after the tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentEvent {
    /// Ask approvers: from queued, after gates passed (approvals after gates),
    /// or after the tasks (approvals after the stage).
    RequestApproval,
    /// Start sampling gates: from queued, after approval, or after the tasks.
    StartGates,
    /// Run the tasks: from queued, after approval or after gates passed.
    Start,
    /// Finish successfully: tasks done, or the after-stage approval/gate passed.
    Succeed,
    /// A task failed (running) or a gate timed out (evaluating gates).
    Fail,
    /// An approver rejected, or the approval timed out.
    Reject,
    /// A person canceled it (any non-terminal state).
    Cancel,
    /// A newer release took its place while it waited (queued, waiting, gates).
    Supersede,
    /// The process died while the tasks ran.
    Interrupt,
}

impl DeploymentEvent {
    /// Every event, for tables and tests.
    pub const ALL: [DeploymentEvent; 9] = [
        DeploymentEvent::RequestApproval,
        DeploymentEvent::StartGates,
        DeploymentEvent::Start,
        DeploymentEvent::Succeed,
        DeploymentEvent::Fail,
        DeploymentEvent::Reject,
        DeploymentEvent::Cancel,
        DeploymentEvent::Supersede,
        DeploymentEvent::Interrupt,
    ];

    /// The event in snake_case (`request_approval`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            DeploymentEvent::RequestApproval => "request_approval",
            DeploymentEvent::StartGates => "start_gates",
            DeploymentEvent::Start => "start",
            DeploymentEvent::Succeed => "succeed",
            DeploymentEvent::Fail => "fail",
            DeploymentEvent::Reject => "reject",
            DeploymentEvent::Cancel => "cancel",
            DeploymentEvent::Supersede => "supersede",
            DeploymentEvent::Interrupt => "interrupt",
        }
    }
}

text_enum_impls!(DeploymentEvent);

impl DeploymentState {
    /// Every state, in lifecycle order.
    pub const ALL: [DeploymentState; 10] = [
        DeploymentState::Queued,
        DeploymentState::WaitingForApproval,
        DeploymentState::EvaluatingGates,
        DeploymentState::Running,
        DeploymentState::Succeeded,
        DeploymentState::Failed,
        DeploymentState::Canceled,
        DeploymentState::Rejected,
        DeploymentState::Superseded,
        DeploymentState::Interrupted,
    ];

    /// The stored and JSON form: `queued`, `waiting_for_approval`, ….
    pub fn as_str(&self) -> &'static str {
        match self {
            DeploymentState::Queued => "queued",
            DeploymentState::WaitingForApproval => "waiting_for_approval",
            DeploymentState::EvaluatingGates => "evaluating_gates",
            DeploymentState::Running => "running",
            DeploymentState::Succeeded => "succeeded",
            DeploymentState::Failed => "failed",
            DeploymentState::Canceled => "canceled",
            DeploymentState::Rejected => "rejected",
            DeploymentState::Superseded => "superseded",
            DeploymentState::Interrupted => "interrupted",
        }
    }

    /// Text for people: `Queued`, `Waiting for approval`, ….
    pub fn label(&self) -> &'static str {
        match self {
            DeploymentState::Queued => "Queued",
            DeploymentState::WaitingForApproval => "Waiting for approval",
            DeploymentState::EvaluatingGates => "Evaluating gates",
            DeploymentState::Running => "Running",
            DeploymentState::Succeeded => "Succeeded",
            DeploymentState::Failed => "Failed",
            DeploymentState::Canceled => "Canceled",
            DeploymentState::Rejected => "Rejected",
            DeploymentState::Superseded => "Superseded",
            DeploymentState::Interrupted => "Interrupted",
        }
    }

    /// Whether the state never changes again.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            DeploymentState::Succeeded
                | DeploymentState::Failed
                | DeploymentState::Canceled
                | DeploymentState::Rejected
                | DeploymentState::Superseded
                | DeploymentState::Interrupted
        )
    }

    /// Whether the deployment waits (queued, for approval or on gates): it can be superseded.
    pub fn is_waiting(&self) -> bool {
        matches!(
            self,
            DeploymentState::Queued
                | DeploymentState::WaitingForApproval
                | DeploymentState::EvaluatingGates
        )
    }

    /// The state after `event`, or `None` when the event is not allowed here.
    pub fn next(self, event: DeploymentEvent) -> Option<DeploymentState> {
        use DeploymentEvent as E;
        use DeploymentState as S;
        let next = match (self, event) {
            (s, _) if s.is_terminal() => return None,
            (_, E::Cancel) => S::Canceled,
            (S::Queued | S::EvaluatingGates | S::Running, E::RequestApproval) => {
                S::WaitingForApproval
            }
            (S::Queued | S::WaitingForApproval | S::Running, E::StartGates) => S::EvaluatingGates,
            (S::Queued | S::WaitingForApproval | S::EvaluatingGates, E::Start) => S::Running,
            (S::WaitingForApproval | S::EvaluatingGates | S::Running, E::Succeed) => S::Succeeded,
            (S::EvaluatingGates | S::Running, E::Fail) => S::Failed,
            (S::WaitingForApproval, E::Reject) => S::Rejected,
            (S::Queued | S::WaitingForApproval | S::EvaluatingGates, E::Supersede) => S::Superseded,
            (S::Running, E::Interrupt) => S::Interrupted,
            _ => return None,
        };
        Some(next)
    }
}

transition_impls!(DeploymentState, DeploymentEvent);

text_enum_impls!(DeploymentState, "deployment state");

/// The state of one build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildState {
    /// Waiting for a worker.
    Queued,
    /// Tasks are running.
    Running,
    /// Done; a release was created.
    Succeeded,
    /// A task failed or artifacts were missing.
    Failed,
    /// A person canceled it.
    Canceled,
    /// The process was killed while it ran.
    Interrupted,
}

/// Something that happens to a build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildEvent {
    /// A worker picked it up.
    Start,
    /// Tasks passed and artifacts were stored.
    Succeed,
    /// A task failed.
    Fail,
    /// A person canceled it.
    Cancel,
    /// The process died while it ran.
    Interrupt,
}

impl BuildEvent {
    /// Every event.
    pub const ALL: [BuildEvent; 5] = [
        BuildEvent::Start,
        BuildEvent::Succeed,
        BuildEvent::Fail,
        BuildEvent::Cancel,
        BuildEvent::Interrupt,
    ];

    /// The event in snake_case.
    pub fn as_str(&self) -> &'static str {
        match self {
            BuildEvent::Start => "start",
            BuildEvent::Succeed => "succeed",
            BuildEvent::Fail => "fail",
            BuildEvent::Cancel => "cancel",
            BuildEvent::Interrupt => "interrupt",
        }
    }
}

impl BuildState {
    /// Every state.
    pub const ALL: [BuildState; 6] = [
        BuildState::Queued,
        BuildState::Running,
        BuildState::Succeeded,
        BuildState::Failed,
        BuildState::Canceled,
        BuildState::Interrupted,
    ];

    /// The stored and JSON form: `queued`, `running`, ….
    pub fn as_str(&self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
            BuildState::Canceled => "canceled",
            BuildState::Interrupted => "interrupted",
        }
    }

    /// Text for people.
    pub fn label(&self) -> &'static str {
        match self {
            BuildState::Queued => "Queued",
            BuildState::Running => "Running",
            BuildState::Succeeded => "Succeeded",
            BuildState::Failed => "Failed",
            BuildState::Canceled => "Canceled",
            BuildState::Interrupted => "Interrupted",
        }
    }

    /// Whether the state never changes again.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, BuildState::Queued | BuildState::Running)
    }

    /// The state after `event`, or `None` when it is not allowed.
    pub fn next(self, event: BuildEvent) -> Option<BuildState> {
        use BuildEvent as E;
        use BuildState as S;
        Some(match (self, event) {
            (S::Queued, E::Start) => S::Running,
            (S::Queued | S::Running, E::Cancel) => S::Canceled,
            (S::Running, E::Succeed) => S::Succeeded,
            (S::Running, E::Fail) => S::Failed,
            (S::Running, E::Interrupt) => S::Interrupted,
            _ => return None,
        })
    }
}

transition_impls!(BuildState, BuildEvent);

text_enum_impls!(BuildState, "build state");

/// What a user may do, from least to most powerful (`Ord` follows power).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees everything, changes nothing.
    Viewer,
    /// Also starts builds and deployments.
    Deployer,
    /// Also edits pipelines, approves, freezes, rolls back.
    ReleaseManager,
    /// Everything, including users, tokens and settings.
    Admin,
}

impl Role {
    /// Every role, least powerful first.
    pub const ALL: [Role; 4] = [
        Role::Viewer,
        Role::Deployer,
        Role::ReleaseManager,
        Role::Admin,
    ];

    /// The stored form: `viewer`, `deployer`, `release_manager`, `admin`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::ReleaseManager => "release_manager",
            Role::Admin => "admin",
        }
    }

    /// Text for people: `Viewer`, `Deployer`, `Release manager`, `Admin`.
    pub fn label(&self) -> &'static str {
        match self {
            Role::Viewer => "Viewer",
            Role::Deployer => "Deployer",
            Role::ReleaseManager => "Release manager",
            Role::Admin => "Admin",
        }
    }

    /// Whether this role includes the rights of `required`.
    pub fn allows(&self, required: Role) -> bool {
        *self >= required
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalized = s.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == normalized)
            .ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
                unknown("role", s, &names)
            })
    }
}

#[cfg(test)]
// Tests may unwrap: a panic is a failed test. (`allow`, not `expect`, so this
// stays quiet if clippy.toml sets `allow-unwrap-in-tests`.)
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use DeploymentEvent as E;
    use DeploymentState as S;

    /// The whole deployment table: every legal (state, event) → state.
    const LEGAL: &[(S, E, S)] = &[
        (S::Queued, E::RequestApproval, S::WaitingForApproval),
        (S::Queued, E::StartGates, S::EvaluatingGates),
        (S::Queued, E::Start, S::Running),
        (S::Queued, E::Cancel, S::Canceled),
        (S::Queued, E::Supersede, S::Superseded),
        (S::WaitingForApproval, E::StartGates, S::EvaluatingGates),
        (S::WaitingForApproval, E::Start, S::Running),
        (S::WaitingForApproval, E::Succeed, S::Succeeded),
        (S::WaitingForApproval, E::Reject, S::Rejected),
        (S::WaitingForApproval, E::Cancel, S::Canceled),
        (S::WaitingForApproval, E::Supersede, S::Superseded),
        (
            S::EvaluatingGates,
            E::RequestApproval,
            S::WaitingForApproval,
        ),
        (S::EvaluatingGates, E::Start, S::Running),
        (S::EvaluatingGates, E::Succeed, S::Succeeded),
        (S::EvaluatingGates, E::Fail, S::Failed),
        (S::EvaluatingGates, E::Cancel, S::Canceled),
        (S::EvaluatingGates, E::Supersede, S::Superseded),
        (S::Running, E::RequestApproval, S::WaitingForApproval),
        (S::Running, E::StartGates, S::EvaluatingGates),
        (S::Running, E::Succeed, S::Succeeded),
        (S::Running, E::Fail, S::Failed),
        (S::Running, E::Cancel, S::Canceled),
        (S::Running, E::Interrupt, S::Interrupted),
    ];

    #[test]
    fn every_state_event_pair() {
        for from in S::ALL {
            for event in E::ALL {
                let expected = LEGAL
                    .iter()
                    .find(|(s, e, _)| *s == from && *e == event)
                    .map(|(_, _, to)| *to);
                match (expected, from.transition(event)) {
                    (Some(to), Ok(got)) => assert_eq!(got, to, "{from} --{event}-->"),
                    (None, Err(DomainError::IllegalTransition { from: f, event: e })) => {
                        assert_eq!((f, e), (from.as_str(), event.as_str()));
                    }
                    (expected, got) => {
                        panic!("{from} --{event}--> expected {expected:?}, got {got:?}")
                    }
                }
            }
        }
    }

    #[test]
    fn every_state_state_pair() {
        // Rows: from; columns: to, in `ALL` order
        // (Q W G R Succ Fail Canc Rej Sup Int).
        let table: [(S, [u8; 10]); 10] = [
            (S::Queued, [0, 1, 1, 1, 0, 0, 1, 0, 1, 0]),
            (S::WaitingForApproval, [0, 0, 1, 1, 1, 0, 1, 1, 1, 0]),
            (S::EvaluatingGates, [0, 1, 0, 1, 1, 1, 1, 0, 1, 0]),
            (S::Running, [0, 1, 1, 0, 1, 1, 1, 0, 0, 1]),
            (S::Succeeded, [0; 10]),
            (S::Failed, [0; 10]),
            (S::Canceled, [0; 10]),
            (S::Rejected, [0; 10]),
            (S::Superseded, [0; 10]),
            (S::Interrupted, [0; 10]),
        ];
        for (from, row) in table {
            for (to, allowed) in S::ALL.into_iter().zip(row) {
                assert_eq!(from.can_transition_to(to), allowed == 1, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn spec_rules_hold() {
        for s in S::ALL {
            // Terminal states never change.
            if s.is_terminal() {
                assert!(S::ALL.iter().all(|t| !s.can_transition_to(*t)));
            } else {
                assert_eq!(s.transition(E::Cancel), Ok(S::Canceled));
            }
            assert_eq!(s.can_transition_to(S::Rejected), s == S::WaitingForApproval);
            assert_eq!(s.can_transition_to(S::Interrupted), s == S::Running);
            assert_eq!(s.can_transition_to(S::Superseded), s.is_waiting());
            assert_eq!(
                s.can_transition_to(S::Failed),
                matches!(s, S::EvaluatingGates | S::Running)
            );
        }
        assert_eq!(S::ALL.iter().filter(|s| s.is_terminal()).count(), 6);
    }

    #[test]
    fn state_text_round_trips() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<S>(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert!(!s.label().is_empty());
        }
        assert_eq!(S::WaitingForApproval.label(), "Waiting for approval");
        assert!("waiting".parse::<S>().is_err());
        for b in BuildState::ALL {
            assert_eq!(b.as_str().parse::<BuildState>(), Ok(b));
        }
    }

    #[test]
    fn build_table() {
        use BuildEvent as BE;
        use BuildState as B;
        let legal = [
            (B::Queued, BE::Start, B::Running),
            (B::Queued, BE::Cancel, B::Canceled),
            (B::Running, BE::Succeed, B::Succeeded),
            (B::Running, BE::Fail, B::Failed),
            (B::Running, BE::Cancel, B::Canceled),
            (B::Running, BE::Interrupt, B::Interrupted),
        ];
        for from in B::ALL {
            for event in BE::ALL {
                let expected = legal
                    .iter()
                    .find(|(s, e, _)| *s == from && *e == event)
                    .map(|(_, _, to)| *to);
                assert_eq!(from.transition(event).ok(), expected, "{from} {event:?}");
            }
            assert_eq!(
                from.is_terminal(),
                B::ALL.iter().all(|t| !from.can_transition_to(*t))
            );
        }
    }

    #[test]
    fn roles() {
        assert!(Role::Viewer < Role::Deployer && Role::Deployer < Role::ReleaseManager);
        assert!(Role::ReleaseManager < Role::Admin);
        assert_eq!("release-manager".parse::<Role>(), Ok(Role::ReleaseManager));
        assert_eq!("release_manager".parse::<Role>(), Ok(Role::ReleaseManager));
        assert_eq!("Admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
        assert!(Role::Admin.allows(Role::Deployer));
        assert!(!Role::Viewer.allows(Role::Deployer));
        assert_eq!(Role::ReleaseManager.label(), "Release manager");
    }
}
