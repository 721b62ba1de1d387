//! Small view helpers shared by the pages: times, sizes, states.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::domain::{BuildState, DeploymentState, TaskRunState};

/// "1 round", "2 rounds" (see [`crate::domain::plural`]).
pub use crate::domain::plural;

/// "2026-11-26 05:45 UTC"
pub fn time(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// RFC 3339 for `<time datetime=…>`.
pub fn iso(t: &NaiveDateTime) -> String {
    t.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// "3 minutes ago", relative to `now`.
pub fn ago(t: &NaiveDateTime, now: DateTime<Utc>) -> String {
    let secs = (now.naive_utc() - *t).num_seconds();
    if secs < 0 {
        return "just now".into();
    }
    let (n, unit) = match secs {
        0..60 => return "just now".into(),
        60..3600 => (secs / 60, "minute"),
        3600..86400 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    format!("{} ago", plural(n, unit, &format!("{unit}s")))
}

/// "1.2 MiB"
pub fn size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes.max(0) as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The first seven characters of a commit id.
pub fn sha7(sha: &str) -> String {
    sha.chars().take(7).collect()
}

/// How a deployment state is shown: a symbol and a word (never colour
/// alone), and a CSS class for the colour.
#[derive(Debug, Clone)]
pub struct StateBadge {
    pub class: &'static str,
    pub symbol: &'static str,
    pub label: &'static str,
}

impl StateBadge {
    pub fn of(state: DeploymentState) -> StateBadge {
        use DeploymentState::*;
        let (class, symbol) = match state {
            Queued => ("queued", "◷"),
            WaitingForApproval => ("waiting", "⚑"),
            EvaluatingGates => ("waiting", "◐"),
            Running => ("running", "▶"),
            Succeeded => ("ok", "✔"),
            Failed => ("bad", "✖"),
            Canceled => ("muted", "⊘"),
            Rejected => ("bad", "✗"),
            Superseded => ("muted", "⤼"),
            Interrupted => ("bad", "⚡"),
        };
        StateBadge {
            class,
            symbol,
            label: state.label(),
        }
    }
}

impl StateBadge {
    pub fn build(state: BuildState) -> StateBadge {
        let (class, symbol) = match state {
            BuildState::Queued => ("queued", "◷"),
            BuildState::Running => ("running", "▶"),
            BuildState::Succeeded => ("ok", "✔"),
            BuildState::Failed => ("bad", "✖"),
            BuildState::Canceled => ("muted", "⊘"),
            BuildState::Interrupted => ("bad", "⚡"),
        };
        StateBadge {
            class,
            symbol,
            label: state.label(),
        }
    }

    pub fn task(state: TaskRunState) -> StateBadge {
        let (class, symbol) = match state {
            TaskRunState::Pending => ("queued", "◷"),
            TaskRunState::Running => ("running", "▶"),
            TaskRunState::Succeeded => ("ok", "✔"),
            TaskRunState::Failed => ("bad", "✖"),
            TaskRunState::Canceled => ("muted", "⊘"),
            TaskRunState::Skipped => ("muted", "↷"),
            TaskRunState::Interrupted => ("bad", "⚡"),
        };
        StateBadge {
            class,
            symbol,
            label: state.label(),
        }
    }
}

/// A stored trigger (of a build or a deployment) in words for pages:
/// `after:build` → "after build", `after:test` → "after test succeeds",
/// `webhook:github` → "push (github)", `poll` → "polling", `api` → "API";
/// the plain words (`manual`, `schedule`, `redeploy`, `rollback`) stay.
pub fn trigger_words(trigger: &str) -> String {
    match trigger {
        "after:build" => "after build".to_string(),
        "poll" => "polling".to_string(),
        "api" => "API".to_string(),
        "schedule" => "scheduled".to_string(),
        "webhook" => "push".to_string(),
        "swap" => "swap of slots".to_string(),
        other => match other.split_once(':') {
            Some(("after", stage)) => format!("after {stage} succeeds"),
            Some(("webhook", provider)) => format!("push ({provider})"),
            _ => other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1536), "1.5 KiB");
        let now = Utc::now();
        let t = (now - chrono::Duration::minutes(3)).naive_utc();
        assert_eq!(ago(&t, now), "3 minutes ago");
        let t = (now - chrono::Duration::hours(1)).naive_utc();
        assert_eq!(ago(&t, now), "1 hour ago");
        assert_eq!(sha7("0123456789abcdef"), "0123456");
    }

    #[test]
    fn triggers_in_words() {
        assert_eq!(trigger_words("after:build"), "after build");
        assert_eq!(trigger_words("after:test"), "after test succeeds");
        assert_eq!(trigger_words("webhook:github"), "push (github)");
        assert_eq!(trigger_words("poll"), "polling");
        assert_eq!(trigger_words("api"), "API");
        assert_eq!(trigger_words("schedule"), "scheduled");
        assert_eq!(trigger_words("manual"), "manual");
        assert_eq!(trigger_words("rollback"), "rollback");
    }

    #[test]
    fn every_state_has_a_word_and_a_symbol() {
        for s in DeploymentState::ALL {
            let b = StateBadge::of(s);
            assert!(!b.label.is_empty() && !b.symbol.is_empty());
        }
    }
}
