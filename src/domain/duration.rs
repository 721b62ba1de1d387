//! Durations written as `30s`, `5m`, `2h`, `7d` or combinations (`1h30m`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::DomainError;
use super::text::parse_impls;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
/// The longest duration accepted: 100 years.
const MAX_SECS: u64 = 36_500 * DAY;

/// A non-negative span of time with second precision.
///
/// Parsed from `30s`, `5m`, `2h`, `7d` or a combination of them in
/// decreasing order (`1d12h`, `1h30m`); [`Display`](fmt::Display) writes the
/// canonical form: each unit at most once, largest first, zero parts
/// omitted (`90m` is written `1h30m`, zero is `0s`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Duration {
    secs: u64,
}

impl Duration {
    /// The zero duration.
    pub const ZERO: Duration = Duration { secs: 0 };

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration { secs }
    }

    /// A duration of `mins` minutes.
    pub const fn from_mins(mins: u64) -> Self {
        Duration {
            secs: mins * MINUTE,
        }
    }

    /// A duration of `hours` hours.
    pub const fn from_hours(hours: u64) -> Self {
        Duration { secs: hours * HOUR }
    }

    /// A duration of `days` days.
    pub const fn from_days(days: u64) -> Self {
        Duration { secs: days * DAY }
    }

    /// The length in seconds.
    pub const fn as_secs(&self) -> u64 {
        self.secs
    }

    /// Whether this is the zero duration.
    pub const fn is_zero(&self) -> bool {
        self.secs == 0
    }

    /// The same span as a [`chrono::Duration`] (`TimeDelta`).
    pub fn to_chrono(&self) -> chrono::Duration {
        // `secs` is at most MAX_SECS for parsed values; saturate otherwise.
        chrono::Duration::try_seconds(i64::try_from(self.secs).unwrap_or(i64::MAX))
            .unwrap_or(chrono::Duration::MAX)
    }

    /// The same span as a [`std::time::Duration`].
    pub fn to_std(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.secs)
    }

    /// Parses `30s`, `5m`, `2h`, `7d` or a combination such as `1h30m`.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let err = |reason: &str| DomainError::InvalidDuration {
            value: text.to_owned(),
            reason: reason.to_owned(),
        };
        const EXPECTED: &str = "expected a number followed by a unit s, m, h or d, such as `30s`, `5m`, `2h`, `7d` or `1h30m`";
        let s = text.trim();
        if s.is_empty() {
            return Err(err(EXPECTED));
        }
        let mut total: u64 = 0;
        let mut rest = s;
        // Rank of the previous unit: units must appear in decreasing order, each once.
        let mut last_rank = usize::MAX;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err(EXPECTED));
            }
            let (number, tail) = rest.split_at(digits);
            let number: u64 = number.parse().map_err(|_| err("number is too large"))?;
            let mut chars = tail.chars();
            let (unit, rank) = match chars.next() {
                Some('d') => (DAY, 3),
                Some('h') => (HOUR, 2),
                Some('m') => (MINUTE, 1),
                Some('s') => (1, 0),
                Some(_) => return Err(err(EXPECTED)),
                None => return Err(err("missing unit; add s, m, h or d (e.g. `30s`)")),
            };
            if rank >= last_rank {
                return Err(err(
                    "units must appear once each, largest first (e.g. `1h30m`)",
                ));
            }
            last_rank = rank;
            total = number
                .checked_mul(unit)
                .and_then(|v| v.checked_add(total))
                .filter(|v| *v <= MAX_SECS)
                .ok_or_else(|| err("duration is too long (at most 36500d)"))?;
            rest = chars.as_str();
        }
        Ok(Duration { secs: total })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secs == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.secs;
        for (unit, suffix) in [(DAY, 'd'), (HOUR, 'h'), (MINUTE, 'm'), (1, 's')] {
            let n = rest / unit;
            if n > 0 {
                write!(f, "{n}{suffix}")?;
                rest %= unit;
            }
        }
        Ok(())
    }
}

parse_impls!(Duration);

impl From<Duration> for String {
    fn from(value: Duration) -> String {
        value.to_string()
    }
}

impl From<Duration> for std::time::Duration {
    fn from(value: Duration) -> Self {
        value.to_std()
    }
}

#[cfg(test)]
// Tests may unwrap: a panic is a failed test. (`allow`, not `expect`, so this
// stays quiet if clippy.toml sets `allow-unwrap-in-tests`.)
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        let cases = [
            ("30s", 30),
            ("5m", 300),
            ("2h", 7200),
            ("7d", 604_800),
            ("0s", 0),
            ("1h30m", 5400),
            ("1d2h3m4s", 93_784),
            ("90m", 5400),
            (" 15m ", 900),
        ];
        for (text, secs) in cases {
            assert_eq!(Duration::parse(text).unwrap().as_secs(), secs, "{text}");
        }
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "-5m",
            "1.5h",
            "30m1h",
            "1h1h",
            "5 m",
            "1w",
            "99999999999999999999s",
            "36501d",
        ] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
        let msg = Duration::parse("5").unwrap_err().to_string();
        assert!(msg.contains("missing unit"), "{msg}");
    }

    #[test]
    fn displays_canonical_form() {
        let cases = [
            (0, "0s"),
            (30, "30s"),
            (300, "5m"),
            (5400, "1h30m"),
            (86_400, "1d"),
            (90_061, "1d1h1m1s"),
        ];
        for (secs, text) in cases {
            let d = Duration::from_secs(secs);
            assert_eq!(d.to_string(), text);
            assert_eq!(Duration::parse(text).unwrap(), d);
        }
        assert_eq!(Duration::parse("90m").unwrap().to_string(), "1h30m");
        assert_eq!(
            Duration::from_mins(5).to_chrono(),
            chrono::Duration::minutes(5)
        );
    }
}
