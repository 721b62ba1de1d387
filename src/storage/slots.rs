//! Slots of apps: what each runs (release, directory, port, settings), and
//! swaps between two slots of an app. Rows are created by
//! [`save_definition`](super::save_definition); the slot engine
//! (`engine::slots`) records what it does here, each change with its audit
//! record (`slot.deploy`, `slot.deploy.fail`, `slot.swap`, `slot.swap.preview`,
//! `slot.swap.cancel`, `slot.swap.fail`).
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::StorageError;
use super::audit::append_audit;
use super::conn::{DbConn, now, write_transaction};
use super::models::{AppRow, SlotRow, SlotSwapRow};
use super::schema::{apps, pipelines, releases, slot_swaps, slots};
use crate::domain::{SlotProcessState, SwapState};

/// A swap with preview waiting for a person, as stored.
const SWAP_PENDING: &str = SwapState::Pending.as_str();

/// A slot with its app and pipeline, and the versions it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotListing {
    pub pipeline: String,
    pub app: AppRow,
    pub slot: SlotRow,
    /// The version of `slot.release_id`.
    pub version: Option<String>,
    /// The version of `slot.previous_release_id`.
    pub previous_version: Option<String>,
}

/// What a slot holds: the columns a deployment sets and a swap exchanges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotContent {
    pub release_id: Option<i64>,
    pub workdir: Option<String>,
    pub port: Option<i32>,
    /// JSON `{"NAME": {"value", "sticky"}}`.
    pub settings: String,
    pub since: Option<NaiveDateTime>,
    pub process_state: SlotProcessState,
}

impl SlotContent {
    /// What `row` holds now.
    pub fn of(row: &SlotRow) -> SlotContent {
        SlotContent {
            release_id: row.release_id,
            workdir: row.workdir.clone(),
            port: row.port,
            settings: row.settings.clone(),
            since: row.since,
            process_state: row.process_state,
        }
    }
}

/// An app by its (server-wide unique) name, with its pipeline's name.
pub fn find_app(conn: &mut DbConn, name: &str) -> Result<Option<(AppRow, String)>, StorageError> {
    Ok(apps::table
        .inner_join(pipelines::table)
        .filter(apps::name.eq(name))
        .select((AppRow::as_select(), pipelines::name))
        .first(conn)
        .optional()?)
}

/// A slot of an app by name.
pub fn find_slot(
    conn: &mut DbConn,
    app_id: i64,
    name: &str,
) -> Result<Option<SlotRow>, StorageError> {
    Ok(slots::table
        .filter(slots::app_id.eq(app_id))
        .filter(slots::name.eq(name))
        .select(SlotRow::as_select())
        .first(conn)
        .optional()?)
}

/// Every slot of every app, by app and slot name, with the versions it ran.
pub fn list_all_slots(conn: &mut DbConn) -> Result<Vec<SlotListing>, StorageError> {
    let rows: Vec<(AppRow, String, SlotRow)> = apps::table
        .inner_join(pipelines::table)
        .inner_join(slots::table)
        .order((apps::name.asc(), slots::name.asc()))
        .select((AppRow::as_select(), pipelines::name, SlotRow::as_select()))
        .load(conn)?;
    let ids: Vec<i64> = rows
        .iter()
        .flat_map(|(_, _, s)| [s.release_id, s.previous_release_id])
        .flatten()
        .collect();
    let versions: Vec<(i64, String)> = if ids.is_empty() {
        Vec::new()
    } else {
        releases::table
            .filter(releases::id.eq_any(&ids))
            .select((releases::id, releases::version))
            .load(conn)?
    };
    let version_of = |id: Option<i64>| {
        id.and_then(|id| {
            versions
                .iter()
                .find(|(v, _)| *v == id)
                .map(|(_, v)| v.clone())
        })
    };
    Ok(rows
        .into_iter()
        .map(|(app, pipeline, slot)| SlotListing {
            version: version_of(slot.release_id),
            previous_version: version_of(slot.previous_release_id),
            pipeline,
            app,
            slot,
        })
        .collect())
}

/// The columns that say what a slot serves: `$content` (a [`SlotContent`])
/// and `$previous` (its previous release), for a deploy and a swap.
macro_rules! content_changes {
    ($content:expr, $previous:expr) => {
        (
            slots::release_id.eq($content.release_id),
            slots::workdir.eq(&$content.workdir),
            slots::port.eq($content.port),
            slots::settings.eq(&$content.settings),
            slots::since.eq($content.since),
            slots::process_state.eq($content.process_state.as_str()),
            slots::previous_release_id.eq($previous),
        )
    };
}

/// Records that `slot_id` now serves `content` (a deployment finished):
/// the release it served before becomes its previous release. One
/// transaction with the audit record `slot.deploy`.
pub fn record_slot_deploy(
    conn: &mut DbConn,
    slot_id: i64,
    content: &SlotContent,
    actor: &str,
    subject: &str,
    detail: &str,
) -> Result<SlotRow, StorageError> {
    write_transaction(conn, |conn| {
        let old: SlotRow = slots::table
            .find(slot_id)
            .select(SlotRow::as_select())
            .first(conn)?;
        let previous = if old.release_id != content.release_id {
            old.release_id.or(old.previous_release_id)
        } else {
            old.previous_release_id
        };
        let at = now();
        diesel::update(slots::table.find(slot_id))
            .set((
                content_changes!(content, previous),
                slots::error.eq(None::<String>),
                slots::updated_at.eq(at),
            ))
            .execute(conn)?;
        append_audit(conn, actor, "slot.deploy", subject, detail)?;
        Ok(slots::table
            .find(slot_id)
            .select(SlotRow::as_select())
            .first(conn)?)
    })
}

/// Records why a deployment to a slot failed (the slot keeps what it
/// served), with the audit record `slot.deploy.fail`.
pub fn record_slot_failure(
    conn: &mut DbConn,
    slot_id: i64,
    error: &str,
    actor: &str,
    subject: &str,
    detail: &str,
) -> Result<(), StorageError> {
    write_transaction(conn, |conn| {
        diesel::update(slots::table.find(slot_id))
            .set((slots::error.eq(error), slots::updated_at.eq(now())))
            .execute(conn)?;
        append_audit(conn, actor, "slot.deploy.fail", subject, detail)?;
        Ok(())
    })
}

/// The process state (and port) of a slot as the supervisor sees it; not
/// audited (it is an observation, not a decision).
pub fn set_slot_process(
    conn: &mut DbConn,
    slot_id: i64,
    process_state: SlotProcessState,
    port: Option<i32>,
) -> Result<(), StorageError> {
    diesel::update(slots::table.find(slot_id))
        .set((
            slots::process_state.eq(process_state.as_str()),
            slots::port.eq(port),
            slots::updated_at.eq(now()),
        ))
        .execute(conn)?;
    Ok(())
}

/// A swap to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapRecord {
    pub app_id: i64,
    pub from_slot_id: i64,
    pub to_slot_id: i64,
    pub from_slot: String,
    pub to_slot: String,
    /// What the `from` slot holds after the swap.
    pub from_content: SlotContent,
    /// What the `to` slot holds after the swap.
    pub to_content: SlotContent,
    /// The release going live in `to` (the one `from` had).
    pub from_release_id: Option<i64>,
    /// The release `to` had.
    pub to_release_id: Option<i64>,
    /// The pending swap (with preview) this completes.
    pub pending_id: Option<i64>,
    pub actor: String,
    pub subject: String,
    pub detail: String,
}

/// Exchanges what two slots hold and records the swap (`succeeded`), in one
/// transaction with the audit record `slot.swap`. Each slot's previous
/// release becomes the one it served before.
pub fn record_swap(conn: &mut DbConn, swap: &SwapRecord) -> Result<SlotSwapRow, StorageError> {
    write_transaction(conn, |conn| {
        let at = now();
        for (slot_id, content, previous) in [
            (swap.from_slot_id, &swap.from_content, swap.from_release_id),
            (swap.to_slot_id, &swap.to_content, swap.to_release_id),
        ] {
            diesel::update(slots::table.find(slot_id))
                .set((
                    content_changes!(content, previous),
                    slots::last_swap_at.eq(at),
                    slots::error.eq(None::<String>),
                    slots::updated_at.eq(at),
                ))
                .execute(conn)?;
        }
        let id = match swap.pending_id {
            Some(id) => {
                let changed = diesel::update(
                    slot_swaps::table
                        .find(id)
                        .filter(slot_swaps::state.eq(SWAP_PENDING)),
                )
                .set((
                    slot_swaps::state.eq(SwapState::Succeeded.as_str()),
                    slot_swaps::decided_by.eq(&swap.actor),
                    slot_swaps::finished_at.eq(at),
                ))
                .execute(conn)?;
                if changed == 0 {
                    return Err(StorageError::Conflict(
                        "the swap is no longer waiting for confirmation".into(),
                    ));
                }
                id
            }
            None => insert_swap(conn, swap, SwapState::Succeeded, false, None, Some(at), at)?,
        };
        append_audit(conn, &swap.actor, "slot.swap", &swap.subject, &swap.detail)?;
        Ok(slot_swaps::table
            .find(id)
            .select(SlotSwapRow::as_select())
            .first(conn)?)
    })
}

fn insert_swap(
    conn: &mut DbConn,
    swap: &SwapRecord,
    state: SwapState,
    preview: bool,
    error: Option<&str>,
    finished_at: Option<NaiveDateTime>,
    at: NaiveDateTime,
) -> Result<i64, StorageError> {
    Ok(diesel::insert_into(slot_swaps::table)
        .values((
            slot_swaps::app_id.eq(swap.app_id),
            slot_swaps::from_slot.eq(&swap.from_slot),
            slot_swaps::to_slot.eq(&swap.to_slot),
            slot_swaps::state.eq(state.as_str()),
            slot_swaps::preview.eq(preview),
            slot_swaps::from_release_id.eq(swap.from_release_id),
            slot_swaps::to_release_id.eq(swap.to_release_id),
            slot_swaps::requested_by.eq(&swap.actor),
            slot_swaps::error.eq(error),
            slot_swaps::created_at.eq(at),
            slot_swaps::finished_at.eq(finished_at),
        ))
        .returning(slot_swaps::id)
        .get_result(conn)?)
}

/// Records a swap with preview that waits for a person (`pending`), with
/// the audit record `slot.swap.preview`. Another pending swap of the app is
/// a [`StorageError::Conflict`].
pub fn insert_pending_swap(
    conn: &mut DbConn,
    swap: &SwapRecord,
) -> Result<SlotSwapRow, StorageError> {
    write_transaction(conn, |conn| {
        if let Some(other) = find_pending_swap(conn, swap.app_id)? {
            return Err(StorageError::Conflict(format!(
                "a swap of {} into {} waits for confirmation already; confirm or cancel it first",
                other.from_slot, other.to_slot
            )));
        }
        let id = insert_swap(conn, swap, SwapState::Pending, true, None, None, now())?;
        append_audit(
            conn,
            &swap.actor,
            "slot.swap.preview",
            &swap.subject,
            &swap.detail,
        )?;
        Ok(slot_swaps::table
            .find(id)
            .select(SlotSwapRow::as_select())
            .first(conn)?)
    })
}

/// Records a swap that failed (and was reverted), with the audit record
/// `slot.swap.fail`; a pending one (`pending_id`) is closed as failed.
pub fn record_swap_failure(
    conn: &mut DbConn,
    swap: &SwapRecord,
    error: &str,
) -> Result<(), StorageError> {
    write_transaction(conn, |conn| {
        let at = now();
        match swap.pending_id {
            Some(id) => {
                diesel::update(slot_swaps::table.find(id))
                    .set((
                        slot_swaps::state.eq(SwapState::Failed.as_str()),
                        slot_swaps::error.eq(error),
                        slot_swaps::decided_by.eq(&swap.actor),
                        slot_swaps::finished_at.eq(at),
                    ))
                    .execute(conn)?;
            }
            None => {
                insert_swap(
                    conn,
                    swap,
                    SwapState::Failed,
                    false,
                    Some(error),
                    Some(at),
                    at,
                )?;
            }
        }
        append_audit(
            conn,
            &swap.actor,
            "slot.swap.fail",
            &swap.subject,
            &swap.detail,
        )?;
        Ok(())
    })
}

/// Cancels a pending swap (`false` when it no longer waits), with the
/// audit record `slot.swap.cancel`.
pub fn cancel_pending_swap(
    conn: &mut DbConn,
    id: i64,
    actor: &str,
    subject: &str,
    detail: &str,
) -> Result<bool, StorageError> {
    write_transaction(conn, |conn| {
        let changed = diesel::update(
            slot_swaps::table
                .find(id)
                .filter(slot_swaps::state.eq(SWAP_PENDING)),
        )
        .set((
            slot_swaps::state.eq(SwapState::Canceled.as_str()),
            slot_swaps::decided_by.eq(actor),
            slot_swaps::finished_at.eq(now()),
        ))
        .execute(conn)?;
        if changed > 0 {
            append_audit(conn, actor, "slot.swap.cancel", subject, detail)?;
        }
        Ok(changed > 0)
    })
}

/// The swap of an app that waits for confirmation, if any.
pub fn find_pending_swap(
    conn: &mut DbConn,
    app_id: i64,
) -> Result<Option<SlotSwapRow>, StorageError> {
    Ok(slot_swaps::table
        .filter(slot_swaps::app_id.eq(app_id))
        .filter(slot_swaps::state.eq(SWAP_PENDING))
        .order(slot_swaps::id.desc())
        .select(SlotSwapRow::as_select())
        .first(conn)
        .optional()?)
}

/// The newest swaps (any state) of these apps, newest first, at most `limit`.
pub fn recent_swaps(
    conn: &mut DbConn,
    app_ids: &[i64],
    limit: i64,
) -> Result<Vec<SlotSwapRow>, StorageError> {
    if app_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(slot_swaps::table
        .filter(slot_swaps::app_id.eq_any(app_ids))
        .order(slot_swaps::id.desc())
        .limit(limit)
        .select(SlotSwapRow::as_select())
        .load(conn)?)
}
