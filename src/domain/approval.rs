//! Approvals: who may decide, and what the decisions so far add up to.
//!
//! An approval is one sign-off a deployment waits for (before or after its
//! stage). Its terms are a snapshot of the stage's [`ApprovalPolicy`] taken
//! when it was requested, so a later edit of the stage does not change the
//! rules of a question already asked. Decisions are immutable ballots:
//! `approve`, `reject` (with a comment) or `defer` (ask me again later);
//! each person approves or rejects at most once.
//!
//! - [`may_decide`] says whether a person may decide (listed directly or
//!   through a group; not the requester unless allowed; not an author of
//!   the commits the release adds when authors are excluded; with a recent
//!   SSO sign-in when the stage asks for one).
//! - [`outcome`] says what the ballots add up to: any rejection rejects;
//!   `any` needs one approval, `n: K` K distinct people, `all` one distinct
//!   person for every listed approver (a group by one of its members).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::authz::names;
use super::definition::{ApprovalMode, ApprovalPolicy, Approver};
use super::deployment::{text_enum_impls, unknown};
use super::duration::Duration;
use super::error::DomainError;

/// Where an approval stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for decisions.
    Pending,
    /// Enough approvers approved.
    Approved,
    /// An approver rejected it.
    Rejected,
    /// Nobody decided before its timeout; the deployment was rejected.
    TimedOut,
    /// A newer release took the deployment's place.
    Superseded,
    /// The deployment was canceled (or ended otherwise) while it waited.
    Canceled,
}

impl ApprovalState {
    /// Every state.
    pub const ALL: [ApprovalState; 6] = [
        ApprovalState::Pending,
        ApprovalState::Approved,
        ApprovalState::Rejected,
        ApprovalState::TimedOut,
        ApprovalState::Superseded,
        ApprovalState::Canceled,
    ];

    /// The stored and JSON form.
    pub const fn as_str(&self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::TimedOut => "timed_out",
            ApprovalState::Superseded => "superseded",
            ApprovalState::Canceled => "canceled",
        }
    }

    /// Text for people.
    pub fn label(&self) -> &'static str {
        match self {
            ApprovalState::Pending => "Waiting",
            ApprovalState::Approved => "Approved",
            ApprovalState::Rejected => "Rejected",
            ApprovalState::TimedOut => "Timed out",
            ApprovalState::Superseded => "Superseded",
            ApprovalState::Canceled => "Canceled",
        }
    }

    /// Whether decisions are still taken.
    pub fn is_open(&self) -> bool {
        *self == ApprovalState::Pending
    }
}

text_enum_impls!(ApprovalState, "approval state");

/// What one person decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
    /// Not now: ask again at a later time.
    Defer,
}

impl Decision {
    /// Every decision.
    pub const ALL: [Decision; 3] = [Decision::Approve, Decision::Reject, Decision::Defer];

    /// The stored and JSON form.
    pub fn as_str(&self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
            Decision::Defer => "defer",
        }
    }

    /// Past tense for people: `approved`, `rejected`, `deferred`.
    pub fn past(&self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Reject => "rejected",
            Decision::Defer => "deferred",
        }
    }

    /// Whether the decision counts towards the outcome (approve, reject).
    pub fn is_final(&self) -> bool {
        !matches!(self, Decision::Defer)
    }
}

text_enum_impls!(Decision, "decision");

/// The policy as stored with an approval: `any`, `all` or `n:K`.
pub fn mode_text(mode: ApprovalMode) -> String {
    match mode {
        ApprovalMode::Any => "any".into(),
        ApprovalMode::All => "all".into(),
        ApprovalMode::AtLeast(n) => format!("n:{n}"),
    }
}

/// Reads [`mode_text`] back.
pub fn parse_mode(text: &str) -> Result<ApprovalMode, DomainError> {
    match text {
        "any" => Ok(ApprovalMode::Any),
        "all" => Ok(ApprovalMode::All),
        other => other
            .strip_prefix("n:")
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n > 0)
            .map(ApprovalMode::AtLeast)
            .ok_or_else(|| unknown("approval policy", other, &["any", "all", "n:K"])),
    }
}

/// The policy in words: `any one of`, `all of`, `2 of`.
pub fn mode_words(mode: ApprovalMode) -> String {
    match mode {
        ApprovalMode::Any => "any one of".into(),
        ApprovalMode::All => "all of".into(),
        ApprovalMode::AtLeast(n) => format!("{n} of"),
    }
}

/// One recorded decision, as the outcome needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ballot {
    pub user: String,
    /// The user's groups when they decided.
    pub groups: Vec<String>,
    pub decision: Decision,
}

/// What the ballots add up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still waiting; `needed` says for whom, in words.
    Pending {
        needed: String,
    },
    Approved,
    /// Rejected by this person.
    Rejected {
        by: String,
    },
}

/// Whether the person is listed among `approvers` at all.
pub fn is_listed(approvers: &[Approver], user: &str, groups: &[String]) -> bool {
    approvers.iter().any(|a| names(a, user, groups))
}

/// What the ballots add up to under `mode`, for `approvers`.
pub fn outcome(mode: ApprovalMode, approvers: &[Approver], ballots: &[Ballot]) -> Outcome {
    if let Some(b) = ballots.iter().find(|b| b.decision == Decision::Reject) {
        return Outcome::Rejected { by: b.user.clone() };
    }
    // Distinct approving people who are listed.
    let mut approving: Vec<&Ballot> = Vec::new();
    for b in ballots.iter().filter(|b| b.decision == Decision::Approve) {
        if is_listed(approvers, &b.user, &b.groups) && !approving.iter().any(|a| a.user == b.user) {
            approving.push(b);
        }
    }
    let list = approvers
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    match mode {
        ApprovalMode::Any => {
            if approving.is_empty() {
                Outcome::Pending {
                    needed: format!("one approval from {list}"),
                }
            } else {
                Outcome::Approved
            }
        }
        ApprovalMode::AtLeast(n) => {
            let have = approving.len();
            let need = n as usize;
            if have >= need {
                Outcome::Approved
            } else {
                Outcome::Pending {
                    needed: format!(
                        "{} from {list}",
                        super::plural(need - have, "more approval", "more approvals")
                    ),
                }
            }
        }
        ApprovalMode::All => {
            let matched = matching(approvers, &approving);
            let missing: Vec<String> = approvers
                .iter()
                .enumerate()
                .filter(|(i, _)| matched[*i].is_none())
                .map(|(_, a)| a.to_string())
                .collect();
            if missing.is_empty() {
                Outcome::Approved
            } else {
                Outcome::Pending {
                    needed: format!("approval from {}", missing.join(", ")),
                }
            }
        }
    }
}

/// A maximum matching of listed approvers to distinct approving people
/// (augmenting paths; the lists are short). `result[i]` is the index in
/// `people` of the person standing for approver `i`.
fn matching(approvers: &[Approver], people: &[&Ballot]) -> Vec<Option<usize>> {
    let mut for_approver: Vec<Option<usize>> = vec![None; approvers.len()];
    let mut of_person: Vec<Option<usize>> = vec![None; people.len()];
    fn augment(
        a: usize,
        approvers: &[Approver],
        people: &[&Ballot],
        seen: &mut [bool],
        for_approver: &mut [Option<usize>],
        of_person: &mut [Option<usize>],
    ) -> bool {
        for (p, person) in people.iter().enumerate() {
            if seen[p] || !names(&approvers[a], &person.user, &person.groups) {
                continue;
            }
            seen[p] = true;
            let free = match of_person[p] {
                None => true,
                Some(other) => augment(other, approvers, people, seen, for_approver, of_person),
            };
            if free {
                for_approver[a] = Some(p);
                of_person[p] = Some(a);
                return true;
            }
        }
        false
    }
    for a in 0..approvers.len() {
        let mut seen = vec![false; people.len()];
        augment(
            a,
            approvers,
            people,
            &mut seen,
            &mut for_approver,
            &mut of_person,
        );
    }
    for_approver
}

/// The person who wants to decide.
#[derive(Clone, Debug)]
pub struct Decider<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    /// The user's e-mail address, matched against commit authors.
    pub email: Option<&'a str>,
    /// When this person last signed in through SSO, if in this session.
    pub sso_at: Option<DateTime<Utc>>,
}

/// Why a person may not decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotAllowed {
    /// Not among the approvers.
    NotListed(String),
    /// Separation of duties (requester, commit author).
    Excluded(String),
    /// Already approved or rejected.
    AlreadyDecided(String),
    /// The stage asks for a recent SSO sign-in; the duration is the limit.
    NeedsFreshSignIn(Duration),
}

impl fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotAllowed::NotListed(m) | NotAllowed::Excluded(m) | NotAllowed::AlreadyDecided(m) => {
                f.write_str(m)
            }
            NotAllowed::NeedsFreshSignIn(d) => write!(
                f,
                "this approval needs an SSO sign-in within the last {d}; sign in again through SSO"
            ),
        }
    }
}

/// Whether the e-mail or name in a commit author `Name <email>` is this person.
pub fn is_author(author: &str, user: &str, email: Option<&str>) -> bool {
    let (name, mail) = match (author.rfind('<'), author.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            (author[..open].trim(), Some(author[open + 1..close].trim()))
        }
        _ => (author.trim(), None),
    };
    if name.eq_ignore_ascii_case(user) {
        return true;
    }
    match (mail, email) {
        (Some(m), Some(e)) if m.eq_ignore_ascii_case(e) => true,
        (Some(m), _) => m
            .split('@')
            .next()
            .is_some_and(|local| local.eq_ignore_ascii_case(user)),
        _ => false,
    }
}

/// Whether `decider` may approve or reject under `policy`, for a deployment
/// requested by `requester` that adds commits by `authors`, given the
/// ballots already cast. `defer` is allowed to listed people even when they
/// could not approve (it only hides the approval from them for a while).
pub fn may_decide(
    policy: &ApprovalPolicy,
    decider: &Decider<'_>,
    decision: Decision,
    requester: &str,
    authors: &[String],
    ballots: &[Ballot],
    now: DateTime<Utc>,
) -> Result<(), NotAllowed> {
    if !is_listed(&policy.approvers, decider.user, decider.groups) {
        let list = policy
            .approvers
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(NotAllowed::NotListed(format!(
            "{} is not an approver here (approvers: {list})",
            decider.user
        )));
    }
    if decision == Decision::Defer {
        return Ok(());
    }
    if let Some(b) = ballots
        .iter()
        .find(|b| b.user == decider.user && b.decision.is_final())
    {
        return Err(NotAllowed::AlreadyDecided(format!(
            "{} already {} this approval",
            decider.user,
            b.decision.past()
        )));
    }
    if !policy.requester_can_approve && decider.user == requester && decision == Decision::Approve {
        return Err(NotAllowed::Excluded(format!(
            "{} requested this deployment; the stage does not let the requester approve it",
            decider.user
        )));
    }
    if policy.exclude_authors
        && decision == Decision::Approve
        && let Some(author) = authors
            .iter()
            .find(|a| is_author(a, decider.user, decider.email))
    {
        return Err(NotAllowed::Excluded(format!(
            "{} wrote a commit this release adds ({author}); the stage excludes commit authors from approving",
            decider.user
        )));
    }
    if let Some(limit) = policy.fresh_sign_in {
        let fresh = decider.sso_at.is_some_and(|at| {
            let age = now - at;
            age.num_seconds() <= i64::try_from(limit.as_secs()).unwrap_or(i64::MAX)
        });
        if !fresh {
            return Err(NotAllowed::NeedsFreshSignIn(limit));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(text: &str) -> Approver {
        text.parse().unwrap()
    }

    fn ballot(user: &str, groups: &[&str], decision: Decision) -> Ballot {
        Ballot {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            decision,
        }
    }

    fn policy(approvers: &[&str], mode: ApprovalMode) -> ApprovalPolicy {
        ApprovalPolicy {
            approvers: approvers.iter().map(|x| a(x)).collect(),
            policy: mode,
            timeout: Duration::from_secs(30 * 86_400),
            fresh_sign_in: None,
            requester_can_approve: false,
            exclude_authors: false,
        }
    }

    fn decider<'a>(user: &'a str, groups: &'a [String]) -> Decider<'a> {
        Decider {
            user,
            groups,
            email: None,
            sso_at: None,
        }
    }

    #[test]
    fn states_and_decisions_round_trip() {
        for s in ApprovalState::ALL {
            assert_eq!(s.as_str().parse::<ApprovalState>().unwrap(), s);
        }
        for d in Decision::ALL {
            assert_eq!(d.as_str().parse::<Decision>().unwrap(), d);
        }
        assert!("maybe".parse::<Decision>().is_err());
        for m in [
            ApprovalMode::Any,
            ApprovalMode::All,
            ApprovalMode::AtLeast(3),
        ] {
            assert_eq!(parse_mode(&mode_text(m)).unwrap(), m);
        }
        assert!(parse_mode("n:0").is_err());
        assert!(parse_mode("most").is_err());
    }

    #[test]
    fn any_needs_one_listed_approval() {
        let approvers = [a("group:management")];
        assert!(matches!(
            outcome(ApprovalMode::Any, &approvers, &[]),
            Outcome::Pending { .. }
        ));
        // A person outside the list does not count.
        let outsider = [ballot("eve", &["qa"], Decision::Approve)];
        assert!(matches!(
            outcome(ApprovalMode::Any, &approvers, &outsider),
            Outcome::Pending { .. }
        ));
        let ok = [ballot("maria", &["management"], Decision::Approve)];
        assert_eq!(
            outcome(ApprovalMode::Any, &approvers, &ok),
            Outcome::Approved
        );
        // Deferring is not approving.
        let later = [ballot("maria", &["management"], Decision::Defer)];
        assert!(matches!(
            outcome(ApprovalMode::Any, &approvers, &later),
            Outcome::Pending { .. }
        ));
    }

    #[test]
    fn any_rejection_rejects() {
        let approvers = [a("group:management"), a("bob")];
        let ballots = [
            ballot("maria", &["management"], Decision::Approve),
            ballot("bob", &[], Decision::Reject),
        ];
        for mode in [
            ApprovalMode::Any,
            ApprovalMode::All,
            ApprovalMode::AtLeast(1),
        ] {
            assert_eq!(
                outcome(mode, &approvers, &ballots),
                Outcome::Rejected { by: "bob".into() }
            );
        }
    }

    #[test]
    fn at_least_counts_distinct_people() {
        let approvers = [a("group:management")];
        let once = [
            ballot("maria", &["management"], Decision::Approve),
            ballot("maria", &["management"], Decision::Approve),
        ];
        match outcome(ApprovalMode::AtLeast(2), &approvers, &once) {
            Outcome::Pending { needed } => assert!(needed.starts_with("1 more"), "{needed}"),
            other => panic!("{other:?}"),
        }
        let twice = [
            ballot("maria", &["management"], Decision::Approve),
            ballot("li", &["management"], Decision::Approve),
        ];
        assert_eq!(
            outcome(ApprovalMode::AtLeast(2), &approvers, &twice),
            Outcome::Approved
        );
    }

    #[test]
    fn all_needs_a_distinct_person_for_every_listed_approver() {
        let approvers = [a("group:qa"), a("group:management")];
        // One person in both groups stands for one of them only.
        let one = [ballot("maria", &["management", "qa"], Decision::Approve)];
        assert!(matches!(
            outcome(ApprovalMode::All, &approvers, &one),
            Outcome::Pending { .. }
        ));
        // Greedy would give maria to qa and leave management open; the
        // matching moves her to management.
        let two = [
            ballot("maria", &["management", "qa"], Decision::Approve),
            ballot("quinn", &["qa"], Decision::Approve),
        ];
        assert_eq!(
            outcome(ApprovalMode::All, &approvers, &two),
            Outcome::Approved
        );
        match outcome(
            ApprovalMode::All,
            &approvers,
            &[ballot("quinn", &["qa"], Decision::Approve)],
        ) {
            Outcome::Pending { needed } => assert_eq!(needed, "approval from group:management"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn who_may_decide() {
        let now = Utc::now();
        let mgmt = vec!["management".to_string()];
        let none: Vec<String> = Vec::new();
        let p = policy(&["group:management"], ApprovalMode::Any);
        // Listed through a group.
        assert!(
            may_decide(
                &p,
                &decider("maria", &mgmt),
                Decision::Approve,
                "dev",
                &[],
                &[],
                now
            )
            .is_ok()
        );
        // Not listed.
        assert!(matches!(
            may_decide(
                &p,
                &decider("eve", &none),
                Decision::Approve,
                "dev",
                &[],
                &[],
                now
            ),
            Err(NotAllowed::NotListed(_))
        ));
        // The requester may not approve, but may reject or defer.
        assert!(matches!(
            may_decide(
                &p,
                &decider("maria", &mgmt),
                Decision::Approve,
                "maria",
                &[],
                &[],
                now
            ),
            Err(NotAllowed::Excluded(_))
        ));
        assert!(
            may_decide(
                &p,
                &decider("maria", &mgmt),
                Decision::Reject,
                "maria",
                &[],
                &[],
                now
            )
            .is_ok()
        );
        let mut allowed = p.clone();
        allowed.requester_can_approve = true;
        assert!(
            may_decide(
                &allowed,
                &decider("maria", &mgmt),
                Decision::Approve,
                "maria",
                &[],
                &[],
                now
            )
            .is_ok()
        );
        // Once decided, never again.
        let cast = [ballot("maria", &["management"], Decision::Approve)];
        assert!(matches!(
            may_decide(
                &p,
                &decider("maria", &mgmt),
                Decision::Reject,
                "dev",
                &[],
                &cast,
                now
            ),
            Err(NotAllowed::AlreadyDecided(_))
        ));
        // Deferring does not use up the vote.
        let deferred = [ballot("maria", &["management"], Decision::Defer)];
        assert!(
            may_decide(
                &p,
                &decider("maria", &mgmt),
                Decision::Approve,
                "dev",
                &[],
                &deferred,
                now
            )
            .is_ok()
        );
    }

    #[test]
    fn commit_authors_are_excluded_when_asked() {
        let now = Utc::now();
        let mgmt = vec!["management".to_string()];
        let mut p = policy(&["group:management"], ApprovalMode::Any);
        let authors = vec!["Maria Lopez <maria@example.com>".to_string()];
        let mut maria = decider("maria", &mgmt);
        assert!(may_decide(&p, &maria, Decision::Approve, "dev", &authors, &[], now).is_ok());
        p.exclude_authors = true;
        assert!(matches!(
            may_decide(&p, &maria, Decision::Approve, "dev", &authors, &[], now),
            Err(NotAllowed::Excluded(_))
        ));
        maria.user = "mlopez";
        maria.email = Some("MARIA@example.com");
        assert!(matches!(
            may_decide(&p, &maria, Decision::Approve, "dev", &authors, &[], now),
            Err(NotAllowed::Excluded(_))
        ));
        maria.email = Some("other@example.com");
        assert!(may_decide(&p, &maria, Decision::Approve, "dev", &authors, &[], now).is_ok());
        assert!(is_author("li", "li", None));
        assert!(!is_author("Li Wang <li.wang@x.org>", "li", None));
    }

    #[test]
    fn fresh_sign_in_is_enforced() {
        let now = Utc::now();
        let mgmt = vec!["management".to_string()];
        let mut p = policy(&["group:management"], ApprovalMode::Any);
        p.fresh_sign_in = Some(Duration::from_secs(900));
        let mut maria = decider("maria", &mgmt);
        assert_eq!(
            may_decide(&p, &maria, Decision::Approve, "dev", &[], &[], now),
            Err(NotAllowed::NeedsFreshSignIn(Duration::from_secs(900)))
        );
        maria.sso_at = Some(now - chrono::Duration::minutes(20));
        assert!(may_decide(&p, &maria, Decision::Approve, "dev", &[], &[], now).is_err());
        maria.sso_at = Some(now - chrono::Duration::minutes(5));
        assert!(may_decide(&p, &maria, Decision::Approve, "dev", &[], &[], now).is_ok());
        // Deferring needs no fresh sign-in.
        maria.sso_at = None;
        assert!(may_decide(&p, &maria, Decision::Defer, "dev", &[], &[], now).is_ok());
    }
}
