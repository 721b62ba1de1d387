//! `GET /api/v1/pipelines/{p}/stages/{s}/schedule`: a stage's schedule, its
//! next fire times in UTC and its recent fires.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::engine::triggers::schedules::{self, FireRecord, MAX_FIRE_TIMES, ScheduleInfo};
use crate::web::{ApiError, State, WebError};

/// How many fire times are listed without `count`.
pub const DEFAULT_COUNT: usize = 5;

/// Routes of this module (below `/api/v1`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/pipelines/{pipeline}/stages/{stage}/schedule",
        web::get().to(get),
    );
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ScheduleQuery {
    /// How many fire times, 1 to 100 (default 5).
    count: Option<String>,
    /// Fire times strictly after this instant (RFC 3339; default now).
    from: Option<String>,
}

/// One past fire of the schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct FireDto {
    /// The fire instant.
    pub scheduled_for: DateTime<Utc>,
    /// When it was handled.
    pub fired_at: DateTime<Utc>,
    /// `deployed`, `skipped`, `missed` or `failed`.
    pub outcome: String,
    /// In words, e.g. "skipped: nothing new: …" or "deployed 1.0.7".
    pub detail: String,
    /// The release deployed (or tried).
    pub release: Option<String>,
    pub deployment_id: Option<i64>,
    /// The Slipway instance that handled it.
    pub instance: String,
}

impl From<FireRecord> for FireDto {
    fn from(r: FireRecord) -> Self {
        FireDto {
            scheduled_for: r.scheduled_for,
            fired_at: r.fired_at,
            outcome: r.outcome.as_str().to_string(),
            detail: r.detail,
            release: r.release,
            deployment_id: r.deployment_id,
            instance: r.instance,
        }
    }
}

/// A stage's schedule and its next fire times.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleDto {
    pub pipeline: String,
    pub stage: String,
    /// Six fields, seconds first, read on the wall clock of `timezone`.
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    /// Whether one fire missed while Slipway was down runs at start-up.
    pub catch_up: bool,
    /// The instant the fire times are counted from.
    pub from: DateTime<Utc>,
    /// The next fire times after `from`, in UTC.
    pub fire_times: Vec<DateTime<Utc>>,
    /// The same instants on the stage's wall clock, with their UTC offset.
    pub fire_times_local: Vec<String>,
    /// What the scheduler fires next (null until it has looked at a new schedule).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The last instant it fired (or recorded as missed).
    pub last_fired_at: Option<DateTime<Utc>>,
    /// The newest fires, newest first.
    pub recent_runs: Vec<FireDto>,
}

fn dto(info: ScheduleInfo, from: DateTime<Utc>) -> ScheduleDto {
    let tz = info.schedule.timezone;
    ScheduleDto {
        pipeline: info.pipeline,
        stage: info.stage,
        cron: info.schedule.cron.as_str().to_string(),
        timezone: tz.name().to_string(),
        catch_up: info.catch_up,
        from,
        fire_times_local: info
            .fire_times
            .iter()
            .map(|t| {
                t.with_timezone(&tz)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
            })
            .collect(),
        fire_times: info.fire_times,
        next_fire_at: info.next_fire_at,
        last_fired_at: info.last_fired_at,
        recent_runs: info.recent_runs.into_iter().map(FireDto::from).collect(),
    }
}

/// Reads `count`: an integer from 1 to 100.
pub fn parse_count(text: Option<&str>) -> Result<usize, WebError> {
    let Some(text) = text else {
        return Ok(DEFAULT_COUNT);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_FIRE_TIMES).contains(&n) => Ok(n),
        _ => Err(WebError::BadRequest(format!(
            "`count` must be a whole number from 1 to {MAX_FIRE_TIMES}, not `{text}`."
        ))),
    }
}

/// Reads `from`: an RFC 3339 instant (`2027-03-27T00:00:00Z`).
pub fn parse_from(text: Option<&str>) -> Result<DateTime<Utc>, WebError> {
    let Some(text) = text else {
        return Ok(Utc::now());
    };
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            WebError::BadRequest(format!(
                "`from` must be an RFC 3339 time such as 2027-03-27T00:00:00Z, not `{text}` ({e})."
            ))
        })
}

/// The next fire times of a stage's schedule (in UTC, and on the stage's
/// wall clock) after `from`, with its recent fires. DST: a wall-clock time
/// that does not exist fires at the first instant after the gap; a time that
/// happens twice fires once.
#[utoipa::path(get, path = "/api/v1/pipelines/{pipeline}/stages/{stage}/schedule", tag = "schedules",
    params(
        ("pipeline" = String, Path, description = "pipeline name"),
        ("stage" = String, Path, description = "stage name"),
        ScheduleQuery,
    ),
    responses(
        (status = 200, body = ScheduleDto),
        (status = 400, body = crate::web::error::ErrorBody, description = "bad `count` or `from`"),
        (status = 404, body = crate::web::error::ErrorBody, description = "no such pipeline or stage"),
        (status = 422, body = crate::web::error::ErrorBody, description = "the stage has no schedule")))]
pub async fn get(
    state: State,
    path: web::Path<(String, String)>,
    query: web::Query<ScheduleQuery>,
) -> Result<HttpResponse, ApiError> {
    let (pipeline, stage) = path.into_inner();
    let count = parse_count(query.count.as_deref())?;
    let from = parse_from(query.from.as_deref())?;
    let info = state
        .with_conn::<_, ApiError, _>(move |conn| {
            Ok(schedules::schedule_info(
                conn, &pipeline, &stage, from, count,
            )?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(dto(info, from)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn count_and_from_are_checked() {
        assert_eq!(parse_count(None).unwrap(), 5);
        assert_eq!(parse_count(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "-1", "five", ""] {
            assert!(parse_count(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            parse_from(Some("2027-03-27T00:00:00+01:00"))
                .unwrap()
                .to_rfc3339(),
            "2027-03-26T23:00:00+00:00"
        );
        assert!(parse_from(Some("2027-03-27")).is_err());
    }
}
