//! Errors raised by the pure domain layer.

use thiserror::Error;

/// A rule of the domain was broken: a value did not parse or a state change is illegal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// An identifier (pipeline, stage, app or slot name) is not well formed.
    #[error("invalid {kind} name `{value}`: {reason}")]
    InvalidName {
        /// What kind of name it is ("pipeline", "stage", "app", "slot").
        kind: &'static str,
        /// The rejected text.
        value: String,
        /// What is allowed instead.
        reason: String,
    },
    /// A duration such as `5m` did not parse.
    #[error("invalid duration `{value}`: {reason}")]
    InvalidDuration {
        /// The rejected text.
        value: String,
        /// What is allowed instead.
        reason: String,
    },
    /// A cron expression did not parse.
    #[error("invalid cron expression `{value}`: {reason}")]
    InvalidCron {
        /// The rejected text.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A time zone name is not in the IANA database.
    #[error("unknown time zone `{value}`; expected an IANA name such as `Europe/Berlin` or `UTC`")]
    UnknownTimeZone {
        /// The rejected text.
        value: String,
    },
    /// A version template is not well formed.
    #[error("invalid version template `{value}`: {reason}")]
    InvalidVersionTemplate {
        /// The rejected template.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A version string is not well formed.
    #[error("invalid version `{value}`: {reason}")]
    InvalidVersion {
        /// The rejected text.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A secret reference is not of the form `${{ secrets.NAME }}`.
    #[error(
        "invalid secret reference `{value}`: expected `${{{{ secrets.NAME }}}}` where NAME is [A-Za-z_][A-Za-z0-9_]*"
    )]
    InvalidSecretRef {
        /// The rejected text.
        value: String,
    },
    /// An approver is neither a user name nor `group:NAME`.
    #[error("invalid approver `{value}`: {reason}")]
    InvalidApprover {
        /// The rejected text.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A gate threshold such as `< 0.01` did not parse.
    #[error(
        "invalid threshold `{value}`: expected an operator (<, <=, >, >=, ==, !=) followed by a number, e.g. `< 0.01`"
    )]
    InvalidThreshold {
        /// The rejected text.
        value: String,
    },
    /// A textual enum value (state, role, …) is not one of the known values.
    #[error("unknown {kind} `{value}`; expected one of {expected}")]
    UnknownValue {
        /// What was being parsed ("deployment state", "role", …).
        kind: &'static str,
        /// The rejected text.
        value: String,
        /// The accepted values, comma separated.
        expected: String,
    },
    /// A request breaks a rule of its own; the text says which, in words.
    #[error("{0}")]
    Invalid(String),
    /// A deployment or build cannot take this event in its current state.
    #[error("illegal transition: event `{event}` is not allowed in state `{from}`")]
    IllegalTransition {
        /// The current state (`as_str` form).
        from: &'static str,
        /// The event that was refused (`as_str` form).
        event: &'static str,
    },
}
