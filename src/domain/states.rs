//! Small enums that are stored as text: the phase of a stage (before or
//! after its tasks), a gate run's state, a slot swap's state, a slot
//! process's recorded state and a notification delivery's state.
//!
//! Each has exactly one text mapping, written once in [`stored_enum!`]:
//! `as_str` for writes and JSON, `FromStr` for reads (an unknown value is a
//! [`DomainError::UnknownValue`](super::DomainError::UnknownValue), never a
//! default), so storage, engine and web compare enums rather than strings.

use serde::{Deserialize, Serialize};

use super::definition::{ApprovalPolicy, Approvals, GatePolicy, Gates};
use super::deployment::text_enum_impls;

/// Declares an enum stored as text, with `ALL`, `as_str`, `Display` and
/// `FromStr` from one table of `Variant => "text"`.
macro_rules! stored_enum {
    (
        $(#[$meta:meta])*
        $name:ident ($kind:literal) {
            $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored and JSON form.
            pub const fn as_str(&self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        text_enum_impls!($name, $kind);
    };
}

stored_enum! {
    /// Whether approvals or gates come before a stage's tasks run or after.
    Phase ("phase") {
        /// Before the tasks run.
        Before => "before",
        /// After the tasks succeeded.
        After => "after",
    }
}

impl Phase {
    /// The phase a deployment is in: after its tasks once they started.
    pub fn of_started(started: bool) -> Phase {
        if started { Phase::After } else { Phase::Before }
    }
}

impl Approvals {
    /// The sign-off a stage needs in `phase`, if any.
    pub fn of(&self, phase: Phase) -> Option<&ApprovalPolicy> {
        match phase {
            Phase::Before => self.before.as_ref(),
            Phase::After => self.after.as_ref(),
        }
    }

    /// Each phase with its sign-off, before first.
    pub fn by_phase(&self) -> [(Phase, Option<&ApprovalPolicy>); 2] {
        [Phase::Before, Phase::After].map(|p| (p, self.of(p)))
    }
}

impl Gates {
    /// The gate a stage has in `phase`, if any.
    pub fn of(&self, phase: Phase) -> Option<&GatePolicy> {
        match phase {
            Phase::Before => self.before.as_ref(),
            Phase::After => self.after.as_ref(),
        }
    }

    /// Each phase with its gate, before first.
    pub fn by_phase(&self) -> [(Phase, Option<&GatePolicy>); 2] {
        [Phase::Before, Phase::After].map(|p| (p, self.of(p)))
    }
}

stored_enum! {
    /// Where one run of a stage's gates stands.
    GateRunState ("gate run state") {
        /// Being sampled.
        Evaluating => "evaluating",
        /// Its checks held (or a person passed it).
        Passed => "passed",
        /// Its checks failed or it timed out.
        Failed => "failed",
        /// A person let the deployment go on without it.
        Bypassed => "bypassed",
        /// Its deployment ended or moved on meanwhile.
        Canceled => "canceled",
    }
}

impl GateRunState {
    /// Whether the run lets its deployment go on.
    pub fn lets_through(&self) -> bool {
        matches!(self, GateRunState::Passed | GateRunState::Bypassed)
    }
}

stored_enum! {
    /// Where a swap of two slots stands.
    SwapState ("swap state") {
        /// A swap with preview waiting for a person to confirm or cancel it.
        Pending => "pending",
        /// The slots were swapped.
        Succeeded => "succeeded",
        /// The swap failed; nothing changed.
        Failed => "failed",
        /// A person canceled the pending swap.
        Canceled => "canceled",
    }
}

stored_enum! {
    /// What a slot's process was doing when last recorded (the supervisor's
    /// live state, or `failed` when it could not be started again).
    SlotProcessState ("slot process state") {
        /// Being started.
        Starting => "starting",
        /// Its process runs.
        Running => "running",
        /// It exited and waits to be started again.
        Restarting => "restarting",
        /// Being stopped.
        Stopping => "stopping",
        /// Stopped (or never started).
        Stopped => "stopped",
        /// It could not be started again.
        Failed => "failed",
    }
}

stored_enum! {
    /// Where one notification delivery stands.
    DeliveryState ("delivery state") {
        /// Waiting for its (next) attempt.
        Pending => "pending",
        /// The receiver accepted it.
        Delivered => "delivered",
        /// Every attempt failed; a person may retry it.
        Failed => "failed",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fmt;
    use std::str::FromStr;

    use super::super::error::DomainError;
    use super::*;

    /// Every value's text parses back to it and is its JSON form; texts are
    /// distinct; an unknown text is an error naming the kind.
    fn round_trips<T>(all: &[T], as_str: fn(&T) -> &'static str, kind: &str)
    where
        T: Copy + PartialEq + fmt::Debug + FromStr<Err = DomainError> + Serialize,
    {
        for v in all {
            assert_eq!(as_str(v).parse::<T>(), Ok(*v));
            assert_eq!(
                serde_json::to_string(v).unwrap(),
                format!("\"{}\"", as_str(v))
            );
        }
        let mut texts: Vec<&str> = all.iter().map(as_str).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), all.len());
        let err = "nonsense".parse::<T>().unwrap_err().to_string();
        assert!(err.contains(kind), "{err}");
    }

    #[test]
    fn every_stored_state_round_trips() {
        round_trips(Phase::ALL, Phase::as_str, "phase");
        round_trips(GateRunState::ALL, GateRunState::as_str, "gate run state");
        round_trips(SwapState::ALL, SwapState::as_str, "swap state");
        round_trips(DeliveryState::ALL, DeliveryState::as_str, "delivery state");
        round_trips(
            SlotProcessState::ALL,
            SlotProcessState::as_str,
            "slot process state",
        );
    }

    #[test]
    fn the_stored_texts_stay_as_they_are() {
        let texts = |all: &[&'static str]| all.join(",");
        let phases: Vec<_> = Phase::ALL.iter().map(Phase::as_str).collect();
        assert_eq!(texts(&phases), "before,after");
        let runs: Vec<_> = GateRunState::ALL.iter().map(GateRunState::as_str).collect();
        assert_eq!(texts(&runs), "evaluating,passed,failed,bypassed,canceled");
        let swaps: Vec<_> = SwapState::ALL.iter().map(SwapState::as_str).collect();
        assert_eq!(texts(&swaps), "pending,succeeded,failed,canceled");
        let deliveries: Vec<_> = DeliveryState::ALL
            .iter()
            .map(DeliveryState::as_str)
            .collect();
        assert_eq!(texts(&deliveries), "pending,delivered,failed");
        let processes: Vec<_> = SlotProcessState::ALL
            .iter()
            .map(SlotProcessState::as_str)
            .collect();
        assert_eq!(
            texts(&processes),
            "starting,running,restarting,stopping,stopped,failed"
        );
    }

    #[test]
    fn phases_and_gate_outcomes() {
        assert_eq!(Phase::of_started(false), Phase::Before);
        assert_eq!(Phase::of_started(true), Phase::After);
        let through: Vec<_> = GateRunState::ALL
            .iter()
            .filter(|s| s.lets_through())
            .collect();
        assert_eq!(through, [&GateRunState::Passed, &GateRunState::Bypassed]);
    }
}
