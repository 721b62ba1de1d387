//! Webhook deliveries already accepted, so that a repeated delivery id
//! (a provider's retry, a replay) is accepted once.
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now, write_transaction};
use super::schema::webhook_deliveries;

/// Records a delivery; returns true the first time this `(pipeline,
/// provider, delivery id)` is seen, false for a repeat.
///
/// Call it in the same `write_transaction` that queues the build, so that a
/// failure to queue forgets the delivery too and the provider's retry is
/// accepted. The insert runs in its own savepoint: when a concurrent
/// request recorded the same id first, the unique key's violation is rolled
/// back to that savepoint and the caller's transaction stays usable (on
/// PostgreSQL a failed statement would otherwise abort it).
pub fn record_delivery(
    conn: &mut DbConn,
    pipeline_id: i64,
    provider: &str,
    delivery_id: &str,
) -> Result<bool, StorageError> {
    let seen: i64 = webhook_deliveries::table
        .filter(webhook_deliveries::pipeline_id.eq(pipeline_id))
        .filter(webhook_deliveries::provider.eq(provider))
        .filter(webhook_deliveries::delivery_id.eq(delivery_id))
        .count()
        .get_result(conn)?;
    if seen > 0 {
        return Ok(false);
    }
    let inserted = write_transaction(conn, |conn| {
        diesel::insert_into(webhook_deliveries::table)
            .values((
                webhook_deliveries::pipeline_id.eq(pipeline_id),
                webhook_deliveries::provider.eq(provider),
                webhook_deliveries::delivery_id.eq(delivery_id),
                webhook_deliveries::created_at.eq(now()),
            ))
            .execute(conn)
            .map_err(StorageError::from)
    });
    match inserted {
        Ok(_) => Ok(true),
        Err(StorageError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Forgets deliveries recorded before `before` (housekeeping: providers
/// retry within hours, not weeks); returns how many were deleted.
pub fn prune_deliveries(conn: &mut DbConn, before: NaiveDateTime) -> Result<usize, StorageError> {
    Ok(
        diesel::delete(webhook_deliveries::table.filter(webhook_deliveries::created_at.lt(before)))
            .execute(conn)?,
    )
}
