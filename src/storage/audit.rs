//! The tamper-evident audit log: every record carries the hash of the one
//! before it.
//!
//! `hash = sha256_hex(field(prev_hash) ‖ field(at) ‖ field(actor) ‖
//! field(action) ‖ field(subject) ‖ field(detail))`, where `field(s)` is the
//! byte length of `s` in decimal, a `:`, then `s` (so no two different
//! records hash the same input), and `at` is written as
//! `YYYY-MM-DDTHH:MM:SS.ffffff`. The first record's `prev_hash` is `""`.
use chrono::NaiveDateTime;
use diesel::prelude::*;
use sha2::{Digest, Sha256};

use super::StorageError;
use super::conn::{DbConn, now};
use super::models::AuditEventRow;
use super::schema::audit_events;

/// The first record whose hash or link does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit chain is broken at record {id}")]
pub struct BrokenLink {
    pub id: i64,
}

/// Why [`verify_audit_chain`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditVerifyError {
    #[error(transparent)]
    Broken(#[from] BrokenLink),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// How many records [`verify_audit_chain`] reads at a time.
const VERIFY_BATCH: i64 = 1_000;

/// Appends a record to the chain and returns it.
///
/// Call it inside the transaction of the change it records (see
/// `storage::write_transaction`): on SQLite that transaction holds the write
/// lock; on PostgreSQL this takes `LOCK TABLE audit_events IN EXCLUSIVE MODE`
/// (held until commit), so two appenders never link to the same record.
/// Outside a transaction it opens one of its own.
pub fn append_audit(
    conn: &mut DbConn,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<AuditEventRow, StorageError> {
    super::conn::write_transaction(conn, |conn| {
        if let DbConn::Pg(pg) = conn {
            diesel::sql_query("LOCK TABLE audit_events IN EXCLUSIVE MODE").execute(pg)?;
        }
        let prev_hash: String = audit_events::table
            .order(audit_events::id.desc())
            .select(audit_events::hash)
            .first(conn)
            .optional()?
            .unwrap_or_default();
        let at = now();
        let hash = audit_hash(&prev_hash, at, actor, action, subject, detail);
        let id: i64 = diesel::insert_into(audit_events::table)
            .values((
                audit_events::at.eq(at),
                audit_events::actor.eq(actor),
                audit_events::action.eq(action),
                audit_events::subject.eq(subject),
                audit_events::detail.eq(detail),
                audit_events::prev_hash.eq(&prev_hash),
                audit_events::hash.eq(&hash),
            ))
            .returning(audit_events::id)
            .get_result(conn)?;
        Ok(AuditEventRow {
            id,
            at,
            actor: actor.to_string(),
            action: action.to_string(),
            subject: subject.to_string(),
            detail: detail.to_string(),
            prev_hash,
            hash,
        })
    })
}

/// The hash of a record, from its fields and the previous record's hash.
pub fn audit_hash(
    prev_hash: &str,
    at: NaiveDateTime,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> String {
    let at = at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let mut hasher = Sha256::new();
    for field in [prev_hash, at.as_str(), actor, action, subject, detail] {
        hasher.update(field.len().to_string().as_bytes());
        hasher.update(b":");
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Audit records, newest first, keyset-paginated: those with `id < before`.
pub fn list_audit(
    conn: &mut DbConn,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEventRow>, StorageError> {
    search_audit(conn, &AuditFilter::default(), before, limit)
}

/// What the audit page narrows its list to; an empty field does not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Exactly this actor (a user name, `system`, `cli`, …).
    pub actor: Option<String>,
    /// Actions starting with this (`auth` finds `auth.sign_in` and `auth.sign_out`).
    pub action_prefix: Option<String>,
    /// Exactly this subject (`user:mara`, `pipeline:space-game-web`, …).
    pub subject: Option<String>,
}

/// `s` with LIKE's wildcards (and the escape character) escaped by `\`.
fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Audit records matching `filter`, newest first, keyset-paginated: those
/// with `id < before`.
pub fn search_audit(
    conn: &mut DbConn,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEventRow>, StorageError> {
    let mut query = audit_events::table
        .select(AuditEventRow::as_select())
        .into_boxed();
    if let Some(before) = before {
        query = query.filter(audit_events::id.lt(before));
    }
    if let Some(actor) = &filter.actor {
        query = query.filter(audit_events::actor.eq(actor.clone()));
    }
    if let Some(subject) = &filter.subject {
        query = query.filter(audit_events::subject.eq(subject.clone()));
    }
    if let Some(prefix) = &filter.action_prefix {
        query = query.filter(
            audit_events::action
                .like(format!("{}%", like_literal(prefix)))
                .escape('\\'),
        );
    }
    Ok(query
        .order(audit_events::id.desc())
        .limit(limit)
        .load(conn)?)
}

/// How many records the chain holds.
pub fn count_audit(conn: &mut DbConn) -> Result<i64, StorageError> {
    Ok(audit_events::table.count().get_result(conn)?)
}

/// Walks the whole chain, oldest first, and reports the first record whose
/// `prev_hash` is not its predecessor's hash or whose hash does not match
/// its fields.
pub fn verify_audit_chain(conn: &mut DbConn) -> Result<(), AuditVerifyError> {
    let mut prev_hash = String::new();
    let mut after = 0_i64;
    loop {
        let batch: Vec<AuditEventRow> = audit_events::table
            .filter(audit_events::id.gt(after))
            .order(audit_events::id.asc())
            .limit(VERIFY_BATCH)
            .select(AuditEventRow::as_select())
            .load(conn)
            .map_err(StorageError::from)?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        after = last.id;
        for row in &batch {
            let expected = audit_hash(
                &prev_hash,
                row.at,
                &row.actor,
                &row.action,
                &row.subject,
                &row.detail,
            );
            if row.prev_hash != prev_hash || row.hash != expected {
                return Err(BrokenLink { id: row.id }.into());
            }
            prev_hash.clone_from(&row.hash);
        }
    }
}
