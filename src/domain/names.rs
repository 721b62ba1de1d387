//! Validated identifiers: pipeline, stage, app and slot names.
//!
//! All follow the same rule: lower case, `[a-z0-9][a-z0-9_-]{0,62}` (1 to 63
//! characters), so they are safe in URLs, host names (`app-slot.localhost`),
//! file names and log lines.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::DomainError;

/// The longest name accepted, in characters.
pub const MAX_NAME_LEN: usize = 63;

/// Why `value` is not a valid name, or `None` when it is.
pub(crate) fn name_problem(value: &str) -> Option<&'static str> {
    let bytes = value.as_bytes();
    let Some(first) = bytes.first() else {
        return Some("a name must not be empty");
    };
    if bytes.len() > MAX_NAME_LEN {
        return Some("a name is at most 63 characters long");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Some("a name must start with a lower-case letter or a digit");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
    {
        return Some("a name may only contain lower-case letters, digits, `-` and `_`");
    }
    None
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $ty(String);

        impl $ty {
            /// Validates `value` as a name.
            pub fn parse(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                match name_problem(&value) {
                    None => Ok(Self(value)),
                    Some(problem) => Err(DomainError::InvalidName {
                        kind: $kind,
                        value,
                        reason: format!(
                            "{problem} (allowed: lower-case letters, digits, `-` and `_`, \
                             starting with a letter or digit, 1 to 63 characters)"
                        ),
                    }),
                }
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = DomainError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = DomainError;
            fn try_from(value: &str) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.0
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $ty {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $ty {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_type!(
    /// The name of a pipeline, unique on the server (`space-game-web`).
    PipelineName,
    "pipeline"
);
name_type!(
    /// The name of a stage, unique within its pipeline (`dev`, `production`).
    StageName,
    "stage"
);
name_type!(
    /// The name of an app whose slots a pipeline deploys (`space-game`).
    AppName,
    "app"
);
name_type!(
    /// The name of a slot of an app, unique within the app (`staging`).
    SlotName,
    "slot"
);

#[cfg(test)]
// Tests may unwrap: a panic is a failed test. (`allow`, not `expect`, so this
// stays quiet if clippy.toml sets `allow-unwrap-in-tests`.)
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in ["a", "0", "space-game-web", "dev_1", &"a".repeat(63)] {
            assert_eq!(StageName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn rejects_invalid_names() {
        for bad in ["", "-a", "_a", "Dev", "a b", "a.b", "é", &"a".repeat(64)] {
            let err = AppName::parse(bad).unwrap_err();
            assert!(
                matches!(err, DomainError::InvalidName { kind: "app", .. }),
                "{bad}"
            );
            assert!(err.to_string().contains("allowed"), "{err}");
        }
    }

    #[test]
    fn serde_as_plain_string() {
        let n: SlotName = serde_json::from_str("\"staging\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"staging\"");
        assert!(serde_json::from_str::<SlotName>("\"Staging\"").is_err());
    }
}
