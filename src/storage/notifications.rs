//! The outbox of outgoing notifications (`engine::deploy::notify`). A delivery is
//! `pending` until it ends `delivered` or `failed`. Instances sharing the
//! database settle who sends an attempt with a conditional update: a claim
//! counts the attempt and moves `next_attempt_at` past the attempt's
//! time-out only where `attempts` is still what the claimer read.
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now};
use super::models::NotificationDeliveryRow;
use super::schema::notification_deliveries as nd;
use crate::domain::DeliveryState;

/// Waiting for its next attempt, as stored.
const PENDING: &str = DeliveryState::Pending.as_str();
/// Every attempt failed, as stored.
const FAILED: &str = DeliveryState::Failed.as_str();

/// A delivery to insert (`pending`, due at once).
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub pipeline_id: i64,
    pub pipeline: String,
    pub notification: String,
    pub url: String,
    pub format: String,
    pub secret_name: Option<String>,
    pub event: String,
    pub body: String,
}

/// How an attempt ended.
#[derive(Clone, Debug)]
pub enum AttemptOutcome {
    /// Answered 2xx with this status.
    Delivered { status: i32 },
    /// Failed; tried again at `next_at`.
    Retry {
        status: Option<i32>,
        error: String,
        next_at: NaiveDateTime,
    },
    /// Failed for the last time.
    Failed { status: Option<i32>, error: String },
}

/// Inserts a `pending` delivery due now; returns its id.
pub fn insert_delivery(conn: &mut DbConn, new: &NewDelivery) -> Result<i64, StorageError> {
    let at = now();
    let (id,): (i64,) = diesel::insert_into(nd::table)
        .values((
            nd::pipeline_id.eq(new.pipeline_id),
            nd::pipeline.eq(&new.pipeline),
            nd::notification.eq(&new.notification),
            nd::url.eq(&new.url),
            nd::format.eq(&new.format),
            nd::secret_name.eq(new.secret_name.as_deref()),
            nd::event.eq(&new.event),
            nd::body.eq(&new.body),
            nd::state.eq(PENDING),
            nd::attempts.eq(0),
            nd::next_attempt_at.eq(at),
            nd::created_at.eq(at),
        ))
        .returning((nd::id,))
        .get_result(conn)?;
    Ok(id)
}

/// One delivery by id.
pub fn find_delivery(
    conn: &mut DbConn,
    id: i64,
) -> Result<Option<NotificationDeliveryRow>, StorageError> {
    Ok(nd::table
        .find(id)
        .select(NotificationDeliveryRow::as_select())
        .first(conn)
        .optional()?)
}

/// Pending deliveries due at `at`, the most overdue first.
pub fn due_deliveries(
    conn: &mut DbConn,
    at: NaiveDateTime,
    limit: i64,
) -> Result<Vec<NotificationDeliveryRow>, StorageError> {
    Ok(nd::table
        .filter(nd::state.eq(PENDING))
        .filter(nd::next_attempt_at.le(at))
        .order((nd::next_attempt_at.asc(), nd::id.asc()))
        .limit(limit)
        .select(NotificationDeliveryRow::as_select())
        .load(conn)?)
}

/// When the next pending delivery is due, if any is pending.
pub fn next_delivery_due(conn: &mut DbConn) -> Result<Option<NaiveDateTime>, StorageError> {
    Ok(nd::table
        .filter(nd::state.eq(PENDING))
        .select(diesel::dsl::min(nd::next_attempt_at))
        .first::<Option<NaiveDateTime>>(conn)?)
}

/// Claims attempt number `seen_attempts + 1` of a due pending delivery:
/// counts it and holds the delivery until `lease_until` (a crashed sender's
/// delivery becomes due again then). `None` when another sender claimed it
/// first or it is no longer pending.
pub fn claim_delivery(
    conn: &mut DbConn,
    id: i64,
    seen_attempts: i32,
    lease_until: NaiveDateTime,
) -> Result<Option<NotificationDeliveryRow>, StorageError> {
    let at = now();
    let n = diesel::update(
        nd::table
            .find(id)
            .filter(nd::state.eq(PENDING))
            .filter(nd::attempts.eq(seen_attempts))
            .filter(nd::next_attempt_at.le(at)),
    )
    .set((
        nd::attempts.eq(seen_attempts + 1),
        nd::next_attempt_at.eq(lease_until),
        nd::last_attempt_at.eq(Some(at)),
    ))
    .execute(conn)?;
    if n == 0 {
        return Ok(None);
    }
    find_delivery(conn, id)
}

/// Records how attempt `attempt` ended, if the delivery is still pending at
/// that attempt; false otherwise.
pub fn finish_attempt(
    conn: &mut DbConn,
    id: i64,
    attempt: i32,
    outcome: &AttemptOutcome,
) -> Result<bool, StorageError> {
    let target = nd::table
        .find(id)
        .filter(nd::state.eq(PENDING))
        .filter(nd::attempts.eq(attempt));
    let n = match outcome {
        AttemptOutcome::Delivered { status } => diesel::update(target)
            .set((
                nd::state.eq(DeliveryState::Delivered.as_str()),
                nd::last_status.eq(Some(*status)),
                nd::last_error.eq(None::<String>),
                nd::delivered_at.eq(Some(now())),
            ))
            .execute(conn)?,
        AttemptOutcome::Retry {
            status,
            error,
            next_at,
        } => diesel::update(target)
            .set((
                nd::next_attempt_at.eq(*next_at),
                nd::last_status.eq(*status),
                nd::last_error.eq(Some(error)),
            ))
            .execute(conn)?,
        AttemptOutcome::Failed { status, error } => diesel::update(target)
            .set((
                nd::state.eq(FAILED),
                nd::last_status.eq(*status),
                nd::last_error.eq(Some(error)),
            ))
            .execute(conn)?,
    };
    Ok(n > 0)
}

/// Makes a `failed` delivery pending again, due at `at`; false when it
/// is not failed.
pub fn retry_delivery(conn: &mut DbConn, id: i64, at: NaiveDateTime) -> Result<bool, StorageError> {
    let n = diesel::update(nd::table.find(id).filter(nd::state.eq(FAILED)))
        .set((nd::state.eq(PENDING), nd::next_attempt_at.eq(at)))
        .execute(conn)?;
    Ok(n > 0)
}

/// The newest deliveries, newest first, older than `before` (an id) when
/// given: keyset pagination.
pub fn list_deliveries(
    conn: &mut DbConn,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<NotificationDeliveryRow>, StorageError> {
    let mut query = nd::table
        .select(NotificationDeliveryRow::as_select())
        .order(nd::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(nd::id.lt(before));
    }
    Ok(query.load(conn)?)
}
