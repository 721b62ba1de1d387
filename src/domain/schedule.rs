//! Cron schedules in a named IANA time zone.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::DomainError;
use super::deployment::text_enum_impls;
use super::text::{edit_distance, parse_impls};

/// A six-field cron expression, seconds first (`0 0 3 * * *` is 03:00:00 every day).
///
/// Validated with croner; keeps the text it was written with (whitespace
/// collapsed to single spaces) for display and export.
#[derive(Clone)]
pub struct Cron {
    text: String,
    inner: Box<croner::Cron>,
}

/// The fields of a cron expression, in order, with what they take.
const CRON_FIELDS: [(&str, &str); 6] = [
    ("second", "0–59"),
    ("minute", "0–59"),
    ("hour", "0–23"),
    ("day-of-month", "1–31"),
    ("month", "1–12 or JAN–DEC"),
    ("day-of-week", "0–7 or SUN–SAT (0 and 7 are Sunday)"),
];

fn cron_parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .build()
}

/// Says in plain words which field of a six-field expression croner
/// refused: each field is tried alone (the others `*`) with croner itself,
/// and the first it refuses is named with the values it takes. Falls back
/// to croner's own words when no single field is at fault.
fn explain_cron_error(normalized: &str, croner_says: &str) -> String {
    let fields: Vec<&str> = normalized.split(' ').collect();
    if fields.len() == CRON_FIELDS.len() {
        for (i, (field, (name, range))) in fields.iter().zip(CRON_FIELDS).enumerate() {
            let mut alone = vec!["*"; CRON_FIELDS.len()];
            alone[i] = field;
            if cron_parser().parse(&alone.join(" ")).is_err() {
                return format!(
                    "the {name} field (field {} of 6) is `{field}`, which is not valid: it takes {range}, `*`, lists such as `1,15`, ranges such as `1-5` and steps such as `*/10`",
                    i + 1
                );
            }
        }
    }
    format!("not a valid cron expression ({croner_says})")
}

impl Cron {
    /// Parses and validates a six-field cron expression.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let normalized = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let err = |reason: String| DomainError::InvalidCron {
            value: text.to_owned(),
            reason,
        };
        let fields = normalized.split(' ').filter(|f| !f.is_empty()).count();
        if fields != 6 && !normalized.starts_with('@') {
            return Err(err(format!(
                "expected six fields (second minute hour day-of-month month day-of-week), found {fields}"
            )));
        }
        let inner = cron_parser()
            .parse(&normalized)
            .map_err(|e| err(explain_cron_error(&normalized, &e.to_string())))?;
        Ok(Cron {
            text: normalized,
            inner: Box::new(inner),
        })
    }

    /// The expression as written (whitespace normalized).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed croner pattern.
    pub fn pattern(&self) -> &croner::Cron {
        &self.inner
    }
}

impl fmt::Debug for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Cron").field(&self.text).finish()
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Cron {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Cron {}

impl Hash for Cron {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

parse_impls!(Cron);

impl From<Cron> for String {
    fn from(value: Cron) -> String {
        value.text
    }
}

impl Serialize for Cron {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Cron {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Cron::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses an IANA time zone name (`America/Los_Angeles`, `UTC`), exactly as spelled.
pub fn parse_timezone(name: &str) -> Result<Tz, DomainError> {
    Tz::from_str(name.trim()).map_err(|_| DomainError::UnknownTimeZone {
        value: name.to_owned(),
    })
}

/// The IANA name `name` was probably meant to be: the same name in other
/// case, or the closest name within two edits (`America/LosAngeles`).
pub fn suggest_timezone(name: &str) -> Option<&'static str> {
    let lower = name.trim().to_ascii_lowercase();
    let names = || chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
    names()
        .find(|candidate| candidate.to_ascii_lowercase() == lower)
        .or_else(|| {
            names()
                .map(|candidate| {
                    (
                        edit_distance(&candidate.to_ascii_lowercase(), &lower),
                        candidate,
                    )
                })
                .filter(|(d, _)| *d <= 2)
                .min()
                .map(|(_, candidate)| candidate)
        })
}

/// How many matching wall-clock times [`Schedule::next_fire`] examines at most
/// (an every-second pattern skips 3600 of them in a repeated hour).
const MAX_CANDIDATES: usize = 100_000;

/// Places a wall-clock time of `tz` on the UTC time line, following SPEC §2:
/// a time that happens twice is its first occurrence; a time that does not
/// exist (in a spring-forward gap) is the first instant after the gap.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => Some(first.min(second).with_timezone(&Utc)),
        LocalResult::None => {
            // Walk forward to the first wall-clock minute that exists: that is
            // the end of the gap, and its instant is the first one after it.
            // (Every zone's transitions fall on whole minutes.)
            let start = local.with_second(0)?.with_nanosecond(0)?;
            (1..=24 * 60).find_map(|minutes| {
                let probe = start.checked_add_signed(TimeDelta::minutes(minutes))?;
                tz.from_local_datetime(&probe)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
            })
        }
    }
}

/// Serde helpers for a [`Tz`] written as its IANA name.
pub mod tz_serde {
    use super::*;

    /// Writes the IANA name.
    pub fn serialize<S: Serializer>(tz: &Tz, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(tz.name())
    }

    /// Reads an IANA name.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Tz, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_timezone(&text).map_err(serde::de::Error::custom)
    }
}

/// When a scheduled trigger fires: a cron expression read in a time zone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Schedule {
    /// The six-field cron expression, evaluated on the wall clock of `timezone`.
    pub cron: Cron,
    /// The IANA time zone of the wall clock.
    #[serde(with = "tz_serde")]
    pub timezone: Tz,
}

impl Schedule {
    /// Up to `count` fire times strictly after `after`, in order.
    ///
    /// DST rules: a wall-clock time that does not exist (spring forward)
    /// fires at the first instant after the gap; a wall-clock time that
    /// happens twice (fall back) fires once, at its first occurrence.
    pub fn next_fires(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::with_capacity(count.min(1024));
        let mut cursor = after;
        while fires.len() < count {
            match self.next_fire(cursor) {
                Some(next) => {
                    fires.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        fires
    }

    /// The first fire time strictly after `after`, if there is one.
    ///
    /// The pattern is matched on the wall clock of the time zone (croner on
    /// naive local times); each matching wall-clock time is then placed on
    /// the time line by [`resolve_local`], which applies the DST rules.
    pub fn next_fire(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut cursor = after.with_timezone(&self.timezone).naive_local();
        // Candidates whose instant is not after `after` are skipped: the
        // second pass of a repeated hour, or (rarely) the wall clock of a
        // gap that resolves to its end. Bounded so a pathological zone can't loop.
        for _ in 0..MAX_CANDIDATES {
            let candidate = self.cron.inner.find_next_occurrence(&cursor, false).ok()?;
            let instant = resolve_local(self.timezone, candidate)?;
            if instant > after {
                return Some(instant);
            }
            cursor = candidate;
        }
        None
    }

    /// The fire times in `(after, until]`, at most `limit` of them (missed fires).
    pub fn fires_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::new();
        let mut cursor = after;
        while fires.len() < limit {
            match self.next_fire(cursor) {
                Some(next) if next <= until => {
                    fires.push(next);
                    cursor = next;
                }
                _ => break,
            }
        }
        fires
    }
}

/// What became of one fire instant of a scheduled trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerOutcome {
    /// A deployment was requested.
    Deployed,
    /// Nothing new to deploy (or it was there already).
    Skipped,
    /// The instant passed while no Slipway instance was running.
    Missed,
    /// The deployment could not be requested; the detail says why.
    Failed,
}

impl TriggerOutcome {
    /// Every outcome.
    pub const ALL: [TriggerOutcome; 4] = [
        TriggerOutcome::Deployed,
        TriggerOutcome::Skipped,
        TriggerOutcome::Missed,
        TriggerOutcome::Failed,
    ];

    /// The stored and JSON form: `deployed`, `skipped`, `missed`, `failed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TriggerOutcome::Deployed => "deployed",
            TriggerOutcome::Skipped => "skipped",
            TriggerOutcome::Missed => "missed",
            TriggerOutcome::Failed => "failed",
        }
    }
}

text_enum_impls!(TriggerOutcome, "trigger outcome");

impl Schedule {
    /// The instants that are due at `now` when the next fire was stored as
    /// `next`: `next` itself and every later one up to `now`, oldest first,
    /// at most `limit` (the newest are kept when there are more). Empty
    /// when `next` is still in the future.
    pub fn due_fires(
        &self,
        next: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        if next > now || limit == 0 {
            return Vec::new();
        }
        // Look back from `now` over a growing window until it holds `limit`
        // instants or reaches `next`, so a long downtime of a frequent
        // schedule costs about `limit` steps, not one per missed instant.
        let mut window = TimeDelta::minutes(1);
        loop {
            let start = now - window;
            if start < next {
                let mut fires = vec![next];
                fires.extend(self.fires_between(next, now, MAX_CANDIDATES));
                let skip = fires.len().saturating_sub(limit);
                return fires.split_off(skip);
            }
            let mut fires = self.fires_between(start, now, MAX_CANDIDATES);
            if fires.len() >= limit {
                let skip = fires.len() - limit;
                return fires.split_off(skip);
            }
            window = match window.checked_mul(4) {
                Some(w) if w < TimeDelta::days(366 * 100) => w,
                _ => now - next + TimeDelta::seconds(1),
            };
        }
    }
}

#[cfg(test)]
// Tests may unwrap: a panic is a failed test. (`allow`, not `expect`, so this
// stays quiet if clippy.toml sets `allow-unwrap-in-tests`.)
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn schedule(cron: &str, tz: &str) -> Schedule {
        Schedule {
            cron: Cron::parse(cron).unwrap(),
            timezone: parse_timezone(tz).unwrap(),
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    /// Fire times as RFC 3339 UTC strings, for compact expectations.
    fn utc_fires(cron: &str, tz: &str, from: DateTime<Utc>, n: usize) -> Vec<String> {
        schedule(cron, tz)
            .next_fires(from, n)
            .into_iter()
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .collect()
    }

    #[test]
    fn cron_needs_six_fields() {
        assert!(Cron::parse("0 0 3 * * *").is_ok());
        assert_eq!(
            Cron::parse("  0  0 3 * *   * ").unwrap().as_str(),
            "0 0 3 * * *"
        );
        let err = Cron::parse("0 3 * * *").unwrap_err().to_string();
        assert!(err.contains("six fields"), "{err}");
        assert!(Cron::parse("0 0 3 * * * 2027").is_err());
        assert!(Cron::parse("0 0 25 * * *").is_err());
        assert!(Cron::parse("0 61 3 * * *").is_err());
        assert!(Cron::parse("x 0 3 * * *").is_err());
        assert!(Cron::parse("").is_err());
    }

    /// Issue 13 (6): a cron error names the field and what it takes, in
    /// plain words, never croner's "Component error: Number out of bounds".
    #[test]
    fn cron_errors_name_the_field_and_its_range() {
        let err = Cron::parse("0 0 25 * * *").unwrap_err().to_string();
        assert!(
            err.contains("the hour field (field 3 of 6) is `25`"),
            "{err}"
        );
        assert!(err.contains("0–23"), "{err}");
        assert!(!err.contains("Component"), "{err}");
        let err = Cron::parse("0 30 2 * * MON-FRX").unwrap_err().to_string();
        assert!(err.contains("the day-of-week field"), "{err}");
        assert!(err.contains("SUN–SAT"), "{err}");
        let err = Cron::parse("0 61 3 * * *").unwrap_err().to_string();
        assert!(
            err.contains("the minute field (field 2 of 6) is `61`"),
            "{err}"
        );
        let err = Cron::parse("0 0 3 32 * *").unwrap_err().to_string();
        assert!(err.contains("day-of-month"), "{err}");
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(
            parse_timezone("America/Los_Angeles").unwrap(),
            chrono_tz::America::Los_Angeles
        );
        assert_eq!(parse_timezone("UTC").unwrap(), chrono_tz::UTC);
        assert!(parse_timezone("Mars/Olympus").is_err());
        assert!(parse_timezone("PT").is_err());
        assert_eq!(suggest_timezone("europe/berlin"), Some("Europe/Berlin"));
        assert_eq!(
            suggest_timezone("America/LosAngeles"),
            Some("America/Los_Angeles")
        );
        assert_eq!(suggest_timezone("Nowhere/Special"), None);
    }

    #[test]
    fn daily_at_three_los_angeles() {
        // SPEC §3: every day at 03:00 America/Los_Angeles (PST = UTC-8, PDT = UTC-7).
        assert_eq!(
            utc_fires(
                "0 0 3 * * *",
                "America/Los_Angeles",
                utc(2027, 3, 12, 12, 0),
                4
            ),
            [
                "2027-03-13 11:00",
                "2027-03-14 10:00",
                "2027-03-15 10:00",
                "2027-03-16 10:00"
            ]
        );
        assert_eq!(
            utc_fires(
                "0 0 3 * * *",
                "America/Los_Angeles",
                utc(2027, 11, 5, 12, 0),
                4
            ),
            [
                "2027-11-06 10:00",
                "2027-11-07 11:00",
                "2027-11-08 11:00",
                "2027-11-09 11:00"
            ]
        );
    }

    #[test]
    fn berlin_spring_forward_2027() {
        // 28 Mar 2027: 02:00 CET jumps to 03:00 CEST (01:00 UTC); 02:30 does not exist.
        assert_eq!(
            utc_fires("0 30 2 * * *", "Europe/Berlin", utc(2027, 3, 26, 12, 0), 3),
            ["2027-03-27 01:30", "2027-03-28 01:00", "2027-03-29 00:30"]
        );
        assert_eq!(
            utc_fires("0 0 3 * * *", "Europe/Berlin", utc(2027, 3, 26, 12, 0), 3),
            ["2027-03-27 02:00", "2027-03-28 01:00", "2027-03-29 01:00"]
        );
        // An hourly pattern: 02:15 is missing, so it fires at 03:00, then 03:15.
        assert_eq!(
            utc_fires("0 15 * * * *", "Europe/Berlin", utc(2027, 3, 28, 0, 0), 3),
            ["2027-03-28 00:15", "2027-03-28 01:00", "2027-03-28 01:15"]
        );
    }

    #[test]
    fn berlin_fall_back_2027() {
        // 31 Oct 2027: 03:00 CEST goes back to 02:00 CET (01:00 UTC); 02:30 happens twice.
        assert_eq!(
            utc_fires("0 30 2 * * *", "Europe/Berlin", utc(2027, 10, 29, 12, 0), 3),
            ["2027-10-30 00:30", "2027-10-31 00:30", "2027-11-01 01:30"]
        );
        assert_eq!(
            utc_fires("0 0 3 * * *", "Europe/Berlin", utc(2027, 10, 29, 12, 0), 3),
            ["2027-10-30 01:00", "2027-10-31 02:00", "2027-11-01 02:00"]
        );
        // Every 30 minutes: the repeated 02:00 and 02:30 fire once, at their first occurrence.
        assert_eq!(
            utc_fires(
                "0 */30 * * * *",
                "Europe/Berlin",
                utc(2027, 10, 30, 23, 50),
                4
            ),
            [
                "2027-10-31 00:00",
                "2027-10-31 00:30",
                "2027-10-31 02:00",
                "2027-10-31 02:30"
            ]
        );
    }

    #[test]
    fn los_angeles_spring_forward_2027() {
        // 14 Mar 2027: 02:00 PST jumps to 03:00 PDT (10:00 UTC).
        assert_eq!(
            utc_fires(
                "0 30 2 * * *",
                "America/Los_Angeles",
                utc(2027, 3, 12, 12, 0),
                3
            ),
            ["2027-03-13 10:30", "2027-03-14 10:00", "2027-03-15 09:30"]
        );
        assert_eq!(
            utc_fires(
                "0 0 3 * * *",
                "America/Los_Angeles",
                utc(2027, 3, 13, 12, 0),
                2
            ),
            ["2027-03-14 10:00", "2027-03-15 10:00"]
        );
        // 02:00 and 02:30 both fall into the gap: one fire at 03:00 PDT.
        assert_eq!(
            utc_fires(
                "0 */30 * * * *",
                "America/Los_Angeles",
                utc(2027, 3, 14, 9, 0),
                3
            ),
            ["2027-03-14 09:30", "2027-03-14 10:00", "2027-03-14 10:30"]
        );
    }

    #[test]
    fn los_angeles_fall_back_2027() {
        // 7 Nov 2027: 02:00 PDT goes back to 01:00 PST (09:00 UTC); 01:30 happens twice.
        assert_eq!(
            utc_fires(
                "0 30 1 * * *",
                "America/Los_Angeles",
                utc(2027, 11, 5, 12, 0),
                3
            ),
            ["2027-11-06 08:30", "2027-11-07 08:30", "2027-11-08 09:30"]
        );
        assert_eq!(
            utc_fires(
                "0 30 2 * * *",
                "America/Los_Angeles",
                utc(2027, 11, 5, 12, 0),
                3
            ),
            ["2027-11-06 09:30", "2027-11-07 10:30", "2027-11-08 10:30"]
        );
        assert_eq!(
            utc_fires(
                "0 0 3 * * *",
                "America/Los_Angeles",
                utc(2027, 11, 6, 12, 0),
                2
            ),
            ["2027-11-07 11:00", "2027-11-08 11:00"]
        );
        // Starting inside the second pass of 01:xx: nothing fires again until 02:00 PST.
        assert_eq!(
            utc_fires(
                "0 */15 * * * *",
                "America/Los_Angeles",
                utc(2027, 11, 7, 9, 5),
                2
            ),
            ["2027-11-07 10:00", "2027-11-07 10:15"]
        );
    }

    #[test]
    fn fires_between_lists_missed_fires() {
        let s = schedule("0 0 3 * * *", "UTC");
        let missed = s.fires_between(utc(2027, 1, 1, 0, 0), utc(2027, 1, 4, 3, 0), 10);
        assert_eq!(missed.len(), 4);
        assert_eq!(
            s.fires_between(utc(2027, 1, 1, 0, 0), utc(2027, 1, 4, 3, 0), 2)
                .len(),
            2
        );
        assert!(s.next_fires(utc(2027, 1, 1, 0, 0), 0).is_empty());
    }

    #[test]
    fn due_fires_keep_the_newest() {
        let s = schedule("0 0 * * * *", "UTC");
        let next = utc(2027, 1, 1, 0, 0);
        assert!(s.due_fires(next, utc(2026, 12, 31, 23, 0), 10).is_empty());
        assert_eq!(s.due_fires(next, next, 10), vec![next]);
        let due = s.due_fires(next, utc(2027, 1, 1, 5, 30), 10);
        assert_eq!(due.len(), 6);
        assert_eq!(due[5], utc(2027, 1, 1, 5, 0));
        let capped = s.due_fires(next, utc(2027, 1, 1, 5, 30), 2);
        assert_eq!(capped, vec![utc(2027, 1, 1, 4, 0), utc(2027, 1, 1, 5, 0)]);
        assert_eq!(
            "missed".parse::<TriggerOutcome>().unwrap(),
            TriggerOutcome::Missed
        );
        assert!("later".parse::<TriggerOutcome>().is_err());
    }

    #[test]
    fn impossible_dates_do_not_loop() {
        // 30 February never happens.
        assert!(
            schedule("0 0 0 30 2 *", "UTC")
                .next_fires(utc(2027, 1, 1, 0, 0), 1)
                .is_empty()
        );
    }
}
