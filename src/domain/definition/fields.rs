//! The rules of single fields of a definition, in one place. The YAML
//! reader (`parse`) and the stage form (`web::pages::stages`) both read
//! their fields through these, so a bound, a default or a word cannot differ
//! between the two (the YAML of SPEC §3 is the contract).

use super::{ApprovalOrder, InconclusivePolicy, QueueMode, defaults};
use crate::domain::names::name_problem;
use crate::domain::{DomainError, Duration};

/// A whole-number field and its bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WholeNumber {
    /// The smallest value accepted.
    pub min: u32,
    /// The largest value accepted.
    pub max: u32,
    /// What the number counts, for messages ("how many deployments may run at once").
    pub what: &'static str,
}

impl WholeNumber {
    /// `n`, when it is within the bounds.
    pub fn check(&self, n: u64) -> Option<u32> {
        u32::try_from(n)
            .ok()
            .filter(|n| (self.min..=self.max).contains(n))
    }

    /// Reads typed text (spaces around it are ignored); the error says what
    /// to enter.
    pub fn parse(&self, text: &str) -> Result<u32, DomainError> {
        let text = text.trim();
        text.parse::<u64>()
            .ok()
            .and_then(|n| self.check(n))
            .ok_or_else(|| {
                DomainError::Invalid(format!(
                    "enter {}: a whole number from {} to {}, not `{text}`",
                    self.what, self.min, self.max
                ))
            })
    }
}

/// `queue.parallel`.
pub const QUEUE_PARALLEL: WholeNumber = WholeNumber {
    min: 1,
    max: 1000,
    what: "how many deployments may run at once",
};

/// `approvals.*.policy: { n: N }`.
pub const APPROVALS_NEEDED: WholeNumber = WholeNumber {
    min: 1,
    max: 1000,
    what: "how many approvers must approve",
};

/// `gates.*.checks[].consecutive_successes`.
pub const CONSECUTIVE_SUCCESSES: WholeNumber = WholeNumber {
    min: 1,
    max: 1000,
    what: "how many passing samples are needed in a row",
};

/// `http.expect` of a task.
pub const HTTP_EXPECT: WholeNumber = WholeNumber {
    min: 100,
    max: 599,
    what: "the HTTP status the task expects",
};

/// A duration field: its default when left out, and whether `0s` is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationField {
    /// The value when the field is left out (or left empty in the form).
    pub default: Duration,
    /// Whether the duration must be longer than `0s`.
    pub positive: bool,
}

impl DurationField {
    /// Whether `d` is allowed in this field.
    pub fn accepts(&self, d: Duration) -> bool {
        !(self.positive && d.is_zero())
    }
}

/// `approvals.*.timeout`.
pub const APPROVAL_TIMEOUT: DurationField = DurationField {
    default: defaults::APPROVAL_TIMEOUT,
    positive: true,
};
/// `gates.*.delay`.
pub const GATE_DELAY: DurationField = DurationField {
    default: defaults::GATE_DELAY,
    positive: false,
};
/// `gates.*.interval`.
pub const GATE_INTERVAL: DurationField = DurationField {
    default: defaults::GATE_INTERVAL,
    positive: true,
};
/// `gates.*.timeout`.
pub const GATE_TIMEOUT: DurationField = DurationField {
    default: defaults::GATE_TIMEOUT,
    positive: true,
};
/// `gates.*.steady`.
pub const GATE_STEADY: DurationField = DurationField {
    default: defaults::GATE_STEADY,
    positive: false,
};
/// `timeout` of an `http` check.
pub const HTTP_CHECK_TIMEOUT: DurationField = DurationField {
    default: defaults::HTTP_CHECK_TIMEOUT,
    positive: false,
};

/// The one text mapping of an enum field: each value's word in YAML, in the
/// form and in the export, in the order offered.
macro_rules! words {
    ($ty:ty, $($word:literal => $value:expr),+ $(,)?) => {
        impl $ty {
            /// Every value with its word.
            pub const WORDS: &'static [(&'static str, $ty)] = &[$(($word, $value)),+];

            /// The word of this value.
            pub fn as_str(&self) -> &'static str {
                Self::WORDS
                    .iter()
                    .find(|(_, v)| v == self)
                    .map(|(w, _)| *w)
                    .unwrap_or_default()
            }

            /// The value of `word`, if it is one.
            pub fn from_word(word: &str) -> Option<Self> {
                Self::WORDS.iter().find(|(w, _)| *w == word).map(|(_, v)| *v)
            }
        }
    };
}

words!(QueueMode, "latest_only" => QueueMode::LatestOnly, "sequence" => QueueMode::Sequence);
words!(
    ApprovalOrder,
    "before_gates" => ApprovalOrder::BeforeGates,
    "after_gates" => ApprovalOrder::AfterGates,
);
words!(
    InconclusivePolicy,
    "fail" => InconclusivePolicy::Fail,
    "ask" => InconclusivePolicy::Ask,
);

/// An HTTP method: letters only, written in capitals (`post` is `POST`).
pub fn http_method(text: &str) -> Option<String> {
    (!text.is_empty() && text.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| text.to_ascii_uppercase())
}

/// Whether `url` is an `http://` or `https://` URL.
pub fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Whether `name` is an HTTP header name (an RFC 9110 token).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// Whether `name` is an environment-variable name: letters, digits and `_`,
/// not starting with a digit.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Validates the NAME of an extension (`slipway-task-NAME`, `slipway-check-NAME`).
pub fn extension_name(text: &str, kind: &'static str) -> Result<String, DomainError> {
    match name_problem(text) {
        None => Ok(text.to_owned()),
        Some(problem) => Err(DomainError::InvalidName {
            kind,
            value: text.to_owned(),
            reason: format!(
                "{problem} (it names the executable `slipway-{kind}-NAME`: lower-case letters, digits, `-` and `_`)"
            ),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_keep_to_their_bounds() {
        assert_eq!(QUEUE_PARALLEL.parse(" 1000 "), Ok(1000));
        assert_eq!(QUEUE_PARALLEL.check(0), None);
        assert_eq!(HTTP_EXPECT.check(600), None);
        let e = QUEUE_PARALLEL.parse("1001").unwrap_err().to_string();
        assert_eq!(
            e,
            "enter how many deployments may run at once: a whole number from 1 to 1000, not `1001`"
        );
    }

    #[test]
    fn words_map_both_ways() {
        for (word, value) in QueueMode::WORDS {
            assert_eq!(value.as_str(), *word);
            assert_eq!(QueueMode::from_word(word), Some(*value));
        }
        assert_eq!(InconclusivePolicy::from_word("maybe"), None);
        assert_eq!(ApprovalOrder::AfterGates.as_str(), "after_gates");
    }

    #[test]
    fn field_checks() {
        assert_eq!(http_method("post").as_deref(), Some("POST"));
        assert_eq!(http_method("G E T"), None);
        assert!(is_http_url("https://a") && !is_http_url("a.example.com"));
        assert!(is_header_name("X-Env") && !is_header_name("Bad Name"));
        assert!(is_env_name("_A1") && !is_env_name("1A"));
        assert!(extension_name("Pager Duty", "check").is_err());
    }

    #[test]
    fn positive_durations_refuse_zero() {
        assert!(!GATE_INTERVAL.accepts(Duration::ZERO));
        assert!(GATE_DELAY.accepts(Duration::ZERO));
    }
}
