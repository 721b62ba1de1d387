//! The decisions of a gate run, pure: when the next sample round is due, and
//! what a round's verdicts mean (keep sampling, pass, fail, ask a person).
//!
//! A gate run starts at `started_at`; its first round is due after `delay`,
//! then one every `interval` (rounds are scheduled from the start, so a late
//! round does not push the later ones back). The gate **passes** when every
//! check passed in the same round, each has passed its
//! `consecutive_successes` rounds in a row, and that has held for `steady`
//! (measured from the first such round). It **fails** when `timeout` (from
//! the start) is reached first; the last round is the one due at the
//! deadline. A check with `on_inconclusive: ask` whose last
//! [`ASK_AFTER`] samples were all inconclusive raises a question for the
//! stage's approvers, once per run of inconclusive samples.
use chrono::{NaiveDateTime, TimeDelta};
use serde::{Deserialize, Serialize};

use super::{GatePolicy, InconclusivePolicy};

/// Inconclusive samples in a row that make an `on_inconclusive: ask` check ask.
pub const ASK_AFTER: u32 = 3;

/// The verdict of one sample of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The check passed.
    Pass,
    /// The check failed.
    Fail,
    /// Neither (unreachable, unparsable, expression error): not passing.
    Inconclusive,
}

impl Verdict {
    /// `pass`, `fail` or `inconclusive` (as stored).
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// Parses the stored form.
    pub fn parse(text: &str) -> Option<Verdict> {
        match text {
            "pass" => Some(Verdict::Pass),
            "fail" => Some(Verdict::Fail),
            "inconclusive" => Some(Verdict::Inconclusive),
            _ => None,
        }
    }

    /// A symbol that differs by shape: ● pass, ✕ fail, ? inconclusive.
    pub fn symbol(&self) -> &'static str {
        match self {
            Verdict::Pass => "●",
            Verdict::Fail => "✕",
            Verdict::Inconclusive => "?",
        }
    }
}

/// What a gate run remembers between rounds (stored with the run).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateProgress {
    /// Rounds sampled so far.
    pub round: u32,
    /// Since when every check has been green (with its streak), if it is.
    pub green_since: Option<NaiveDateTime>,
    /// Per check: passing samples in a row.
    pub streaks: Vec<u32>,
    /// Per check: inconclusive samples in a row.
    pub inconclusive: Vec<u32>,
}

/// What to do after a round.
#[derive(Clone, Debug, PartialEq)]
pub enum GateDecision {
    /// Sample again at this time.
    Continue {
        /// When the next round is due.
        next_at: NaiveDateTime,
        /// Checks (by index) that now ask a person about their inconclusive samples.
        ask: Vec<usize>,
    },
    /// Every check green for `steady`: the gate passed.
    Pass,
    /// The timeout came first; the reason says which checks were not green.
    Fail {
        /// Why, with the last values.
        reason: String,
    },
}

/// The timing of a gate, in chrono terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateTiming {
    /// Before the first round.
    pub delay: TimeDelta,
    /// Between rounds (at least one second).
    pub interval: TimeDelta,
    /// From the start to giving up.
    pub timeout: TimeDelta,
    /// How long all checks must stay green.
    pub steady: TimeDelta,
}

impl GateTiming {
    /// The timing of a gate policy.
    pub fn of(policy: &GatePolicy) -> GateTiming {
        GateTiming {
            delay: policy.delay.to_chrono(),
            interval: policy.interval.to_chrono().max(TimeDelta::seconds(1)),
            timeout: policy.timeout.to_chrono(),
            steady: policy.steady.to_chrono(),
        }
    }

    /// When the run gives up.
    pub fn deadline(&self, started_at: NaiveDateTime) -> NaiveDateTime {
        started_at + self.timeout
    }

    /// When round `round` (0-based) is due: `delay + round × interval` after
    /// the start, but never after the deadline.
    pub fn due(&self, started_at: NaiveDateTime, round: u32) -> NaiveDateTime {
        let at = started_at + self.delay + self.interval * i32::try_from(round).unwrap_or(i32::MAX);
        at.min(self.deadline(started_at))
    }
}

/// The last result of one check, as the decision needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    /// The check's label.
    pub name: String,
    /// Its verdict in this round.
    pub verdict: Verdict,
    /// The value it saw (status, number, exit code, or why none).
    pub value: String,
}

/// Applies one round's results (one per check, in the policy's order) taken
/// at `now` to the progress, and decides what comes next.
pub fn after_round(
    policy: &GatePolicy,
    started_at: NaiveDateTime,
    progress: &mut GateProgress,
    results: &[CheckResult],
    now: NaiveDateTime,
) -> GateDecision {
    let timing = GateTiming::of(policy);
    let n = policy.checks.len();
    progress.streaks.resize(n, 0);
    progress.inconclusive.resize(n, 0);
    progress.round += 1;
    let mut ask = Vec::new();
    let mut all_green = results.len() == n;
    for (i, check) in policy.checks.iter().enumerate() {
        let verdict = results.get(i).map_or(Verdict::Inconclusive, |r| r.verdict);
        if verdict == Verdict::Pass {
            progress.streaks[i] = progress.streaks[i].saturating_add(1);
        } else {
            progress.streaks[i] = 0;
        }
        if verdict == Verdict::Inconclusive {
            progress.inconclusive[i] = progress.inconclusive[i].saturating_add(1);
            if check.on_inconclusive == InconclusivePolicy::Ask
                && progress.inconclusive[i] == ASK_AFTER
            {
                ask.push(i);
            }
        } else {
            progress.inconclusive[i] = 0;
        }
        if progress.streaks[i] < check.consecutive_successes.max(1) {
            all_green = false;
        }
    }
    if all_green {
        let since = *progress.green_since.get_or_insert(now);
        if now - since >= timing.steady {
            return GateDecision::Pass;
        }
    } else {
        progress.green_since = None;
    }
    let deadline = timing.deadline(started_at);
    if now >= deadline {
        return GateDecision::Fail {
            reason: fail_reason(policy, results, progress, all_green),
        };
    }
    let mut next_at = timing.due(started_at, progress.round);
    // A round that ran late: the next one is the first due after now.
    while next_at <= now && next_at < deadline {
        progress.round += 1;
        next_at = timing.due(started_at, progress.round);
    }
    GateDecision::Continue { next_at, ask }
}

fn fail_reason(
    policy: &GatePolicy,
    results: &[CheckResult],
    progress: &GateProgress,
    all_green: bool,
) -> String {
    let timeout = policy.timeout;
    if all_green {
        return format!(
            "gate timed out after {timeout}: the checks were green but not yet for {} (steady)",
            policy.steady
        );
    }
    let not_green: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            let need = policy
                .checks
                .get(*i)
                .map_or(1, |c| c.consecutive_successes.max(1));
            r.verdict != Verdict::Pass || progress.streaks.get(*i).copied().unwrap_or(0) < need
        })
        .map(|(_, r)| format!("{} {} ({})", r.name, r.verdict.as_str(), r.value))
        .collect();
    format!(
        "gate timed out after {timeout} without every check green at once; last: {}",
        not_green.join("; ")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::domain::{CheckKind, Duration, GateCheck};

    fn policy(steady: u64, consecutive: u32, ask: bool) -> GatePolicy {
        GatePolicy {
            delay: Duration::parse("0s").unwrap(),
            interval: Duration::parse("1s").unwrap(),
            timeout: Duration::parse("10s").unwrap(),
            steady: Duration::parse(&format!("{steady}s")).unwrap(),
            checks: vec![
                GateCheck {
                    name: Some("a".into()),
                    kind: CheckKind::Command { run: "true".into() },
                    consecutive_successes: consecutive,
                    on_inconclusive: if ask {
                        InconclusivePolicy::Ask
                    } else {
                        InconclusivePolicy::Fail
                    },
                },
                GateCheck {
                    name: Some("b".into()),
                    kind: CheckKind::Command { run: "true".into() },
                    consecutive_successes: 1,
                    on_inconclusive: InconclusivePolicy::Fail,
                },
            ],
        }
    }

    fn t(s: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0)
            .unwrap()
            .naive_utc()
    }

    fn results(a: Verdict, b: Verdict) -> Vec<CheckResult> {
        vec![
            CheckResult {
                name: "a".into(),
                verdict: a,
                value: "x".into(),
            },
            CheckResult {
                name: "b".into(),
                verdict: b,
                value: "y".into(),
            },
        ]
    }

    use Verdict::{Fail as F, Inconclusive as I, Pass as P};

    #[test]
    fn passes_when_all_green_for_steady() {
        let p = policy(2, 1, false);
        let mut g = GateProgress::default();
        let d = after_round(&p, t(0), &mut g, &results(P, F), t(0));
        assert_eq!(
            d,
            GateDecision::Continue {
                next_at: t(1),
                ask: vec![]
            }
        );
        assert!(matches!(
            after_round(&p, t(0), &mut g, &results(P, P), t(1)),
            GateDecision::Continue { .. }
        ));
        assert_eq!(g.green_since, Some(t(1)));
        assert!(matches!(
            after_round(&p, t(0), &mut g, &results(P, P), t(2)),
            GateDecision::Continue { .. }
        ));
        assert_eq!(
            after_round(&p, t(0), &mut g, &results(P, P), t(3)),
            GateDecision::Pass
        );
    }

    #[test]
    fn steady_zero_passes_at_once() {
        let p = policy(0, 1, false);
        let mut g = GateProgress::default();
        assert_eq!(
            after_round(&p, t(0), &mut g, &results(P, P), t(0)),
            GateDecision::Pass
        );
    }

    #[test]
    fn not_in_the_same_round_is_not_green() {
        let p = policy(0, 1, false);
        let mut g = GateProgress::default();
        after_round(&p, t(0), &mut g, &results(P, F), t(0));
        assert!(matches!(
            after_round(&p, t(0), &mut g, &results(F, P), t(1)),
            GateDecision::Continue { .. }
        ));
    }

    #[test]
    fn consecutive_successes_are_needed() {
        let p = policy(0, 3, false);
        let mut g = GateProgress::default();
        assert!(matches!(
            after_round(&p, t(0), &mut g, &results(P, P), t(0)),
            GateDecision::Continue { .. }
        ));
        assert!(matches!(
            after_round(&p, t(0), &mut g, &results(P, P), t(1)),
            GateDecision::Continue { .. }
        ));
        assert_eq!(
            after_round(&p, t(0), &mut g, &results(P, P), t(2)),
            GateDecision::Pass
        );
    }

    #[test]
    fn flapping_never_holds_and_times_out() {
        let p = policy(2, 1, false);
        let mut g = GateProgress::default();
        for s in 0..10 {
            let v = if s % 2 == 0 { P } else { F };
            let d = after_round(&p, t(0), &mut g, &results(v, P), t(s));
            assert!(matches!(d, GateDecision::Continue { .. }), "{s}: {d:?}");
        }
        match after_round(&p, t(0), &mut g, &results(P, P), t(10)) {
            GateDecision::Fail { reason } => assert!(reason.contains("timed out"), "{reason}"),
            d => panic!("{d:?}"),
        }
        let mut g = GateProgress::default();
        match after_round(&p, t(0), &mut g, &results(F, P), t(10)) {
            GateDecision::Fail { reason } => assert!(reason.contains("a fail (x)"), "{reason}"),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn the_last_round_is_at_the_deadline() {
        let timing = GateTiming::of(&policy(0, 1, false));
        assert_eq!(timing.due(t(0), 3), t(3));
        assert_eq!(timing.due(t(0), 30), t(10));
    }

    #[test]
    fn a_late_round_skips_to_the_next_due() {
        let p = policy(5, 1, false);
        let mut g = GateProgress::default();
        match after_round(&p, t(0), &mut g, &results(F, P), t(4)) {
            GateDecision::Continue { next_at, .. } => assert_eq!(next_at, t(5)),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn inconclusive_runs_ask_once() {
        let p = policy(0, 1, true);
        let mut g = GateProgress::default();
        let mut asked = Vec::new();
        for s in 0..5 {
            if let GateDecision::Continue { ask, .. } =
                after_round(&p, t(0), &mut g, &results(I, P), t(s))
            {
                asked.push(ask);
            }
        }
        assert_eq!(asked, vec![vec![], vec![], vec![0], vec![], vec![]]);
    }

    #[test]
    fn verdicts_round_trip() {
        for v in [P, F, I] {
            assert_eq!(Verdict::parse(v.as_str()), Some(v));
        }
    }
}
