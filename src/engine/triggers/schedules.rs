//! The read side of scheduled triggers: a stage's schedule as stored with
//! its row, its next fire times, its recent fires, and which release a fire
//! would deploy. The scheduler loop that fires them is `scheduler.rs`.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::domain::{Cron, Schedule, Trigger, TriggerOutcome, parse_timezone};
use crate::engine::EngineError;
use crate::engine::pipelines;
use crate::storage::schedules::{self as store, SCHEDULE_KIND, TriggerRunRow};
use crate::storage::{DbConn, StageRow};

/// How many fire times [`schedule_info`] computes at most.
pub const MAX_FIRE_TIMES: usize = 100;

/// How many past fires [`schedule_info`] returns.
pub const RECENT_RUNS: i64 = 10;

/// The detail of a fire that found nothing to deploy.
pub const NOTHING_NEW: &str = "skipped: nothing new";

/// The schedule of a stage row, read from its stored trigger spec
/// (`schedule <cron> <time zone>`, written by `pipelines::import`), so the
/// scheduler and the board need not parse whole definitions. `None` for a
/// stage without a schedule.
pub fn schedule_of_stage(row: &StageRow) -> Option<Schedule> {
    if row.trigger_kind != SCHEDULE_KIND {
        return None;
    }
    schedule_of_spec(&row.trigger_spec)
}

/// Parses `schedule <six-field cron> <IANA zone>`.
pub fn schedule_of_spec(spec: &str) -> Option<Schedule> {
    let rest = spec.strip_prefix("schedule ")?;
    let (cron, zone) = rest.trim().rsplit_once(' ')?;
    Some(Schedule {
        cron: Cron::parse(cron).ok()?,
        timezone: parse_timezone(zone).ok()?,
    })
}

/// One past fire, for pages and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FireRecord {
    pub scheduled_for: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    pub outcome: TriggerOutcome,
    pub detail: String,
    /// The version deployed (or tried).
    pub release: Option<String>,
    pub deployment_id: Option<i64>,
    pub instance: String,
}

/// A stage's schedule with its next fire times and recent fires.
#[derive(Debug, Clone)]
pub struct ScheduleInfo {
    pub pipeline: String,
    pub stage: String,
    pub schedule: Schedule,
    pub catch_up: bool,
    /// The fire times strictly after the requested start, in order.
    pub fire_times: Vec<DateTime<Utc>>,
    /// What the scheduler will fire next (stored), if known yet.
    pub next_fire_at: Option<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    /// Newest first.
    pub recent_runs: Vec<FireRecord>,
}

/// The schedule of `pipeline`'s stage `stage`: `count` fire times after
/// `from` (1 to [`MAX_FIRE_TIMES`]) and its last fires. NotFound for an
/// unknown pipeline or stage; Invalid for a stage that has no schedule.
pub fn schedule_info(
    conn: &mut DbConn,
    pipeline: &str,
    stage: &str,
    from: DateTime<Utc>,
    count: usize,
) -> Result<ScheduleInfo, EngineError> {
    let loaded = pipelines::load(conn, pipeline)?;
    let Some(definition) = loaded.definition.stage(stage) else {
        return Err(EngineError::NotFound(format!(
            "{} has no stage named `{stage}`.",
            loaded.name
        )));
    };
    let Trigger::Schedule(schedule) = &definition.trigger else {
        return Err(EngineError::Invalid(format!(
            "Stage {stage} of {} has no schedule: its trigger is {}.",
            loaded.name,
            trigger_words(&definition.trigger)
        )));
    };
    let row = store::find_stage(conn, loaded.id, stage)?;
    let runs = store::recent_trigger_runs(conn, loaded.id, stage, RECENT_RUNS)?;
    let recent_runs = fire_records(conn, runs)?;
    Ok(ScheduleInfo {
        pipeline: loaded.name.clone(),
        stage: stage.to_string(),
        fire_times: schedule.next_fires(from, count.clamp(1, MAX_FIRE_TIMES)),
        schedule: schedule.clone(),
        catch_up: definition.catch_up,
        next_fire_at: row
            .as_ref()
            .and_then(|r| r.next_fire_at)
            .map(|t| t.and_utc()),
        last_fired_at: row
            .as_ref()
            .and_then(|r| r.last_fired_at)
            .map(|t| t.and_utc()),
        recent_runs,
    })
}

/// Fire records with the versions of their releases (one extra query).
pub fn fire_records(
    conn: &mut DbConn,
    runs: Vec<TriggerRunRow>,
) -> Result<Vec<FireRecord>, EngineError> {
    let ids: Vec<i64> = runs.iter().filter_map(|r| r.release_id).collect();
    let versions = store::release_versions(conn, &ids)?;
    let version_of = |id: Option<i64>| {
        id.and_then(|id| {
            versions
                .iter()
                .find(|(rid, _)| *rid == id)
                .map(|(_, v)| v.clone())
        })
    };
    Ok(runs
        .into_iter()
        .map(|r| FireRecord {
            scheduled_for: r.scheduled_for.and_utc(),
            fired_at: r.fired_at.and_utc(),
            outcome: r.outcome,
            release: version_of(r.release_id),
            detail: r.detail,
            deployment_id: r.deployment_id,
            instance: r.instance,
        })
        .collect())
}

/// A trigger in a few words: "manual", "after build", "schedule …".
pub fn trigger_words(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Manual => "manual".into(),
        Trigger::After { upstream, .. } => format!("after {upstream}"),
        Trigger::Schedule(s) => format!("schedule `{}` in {}", s.cron, s.timezone.name()),
    }
}

/// What a scheduled fire of a stage would do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// Deploy this release (id, version).
    Deploy { release_id: i64, version: String },
    /// Nothing new: the detail says why.
    Nothing(String),
}

/// Picks the release a scheduled fire deploys: the newest release that
/// succeeded in the previous stage (for the first stage: the newest
/// release), unless it — or a newer one — was deployed to this stage
/// already (whatever became of that deployment). Never an older release
/// than one that went to the stage.
pub fn pick_release(
    conn: &mut DbConn,
    pipeline_id: i64,
    stage: &StageRow,
) -> Result<Pick, EngineError> {
    let previous = crate::storage::list_stages(conn, pipeline_id)?
        .into_iter()
        .filter(|s| s.position < stage.position)
        .max_by_key(|s| s.position);
    let candidate = match &previous {
        None => store::newest_release_id(conn, pipeline_id)?,
        Some(p) => store::newest_succeeded_release_id(conn, pipeline_id, &p.name)?,
    };
    let Some(candidate) = candidate else {
        return Ok(Pick::Nothing(match &previous {
            None => format!("{NOTHING_NEW}: there is no release yet"),
            Some(p) => format!("{NOTHING_NEW}: no release has succeeded in {} yet", p.name),
        }));
    };
    let version = store::release_versions(conn, &[candidate])?
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or_default();
    let there = store::newest_deployed_release_id(conn, pipeline_id, &stage.name)?;
    if there.is_some_and(|there| there >= candidate) {
        let source = match &previous {
            None => "newest release".to_string(),
            Some(p) => format!("newest release that succeeded in {}", p.name),
        };
        return Ok(Pick::Nothing(format!(
            "{NOTHING_NEW}: {version}, the {source}, went to {} already",
            stage.name
        )));
    }
    Ok(Pick::Deploy {
        release_id: candidate,
        version,
    })
}

/// `2027-03-28T01:00:00Z`
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A stored UTC time as an instant.
pub fn utc(t: NaiveDateTime) -> DateTime<Utc> {
    t.and_utc()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stored_specs_give_the_schedule_back() {
        let s = schedule_of_spec("schedule 0 30 2 * * * Europe/Berlin").unwrap();
        assert_eq!(s.cron.as_str(), "0 30 2 * * *");
        assert_eq!(s.timezone.name(), "Europe/Berlin");
        assert!(schedule_of_spec("manual").is_none());
        assert!(schedule_of_spec("schedule 0 30 2 * * * Mars/Base").is_none());
        assert!(schedule_of_spec("schedule */2 * * * * * UTC").is_some());
    }
}
