//! Encrypted secret values, per pipeline. Only ciphertexts and nonces are
//! stored; encryption and decryption happen in `engine::secrets`.
use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now, write_transaction};
use super::models::SecretRow;
use super::schema::secrets;

/// One secret's name and when its value last changed (never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretName {
    pub name: String,
    pub updated_at: NaiveDateTime,
}

/// The secret `name` of a pipeline.
pub fn find_secret(
    conn: &mut DbConn,
    pipeline_id: i64,
    name: &str,
) -> Result<Option<SecretRow>, StorageError> {
    Ok(secrets::table
        .filter(secrets::pipeline_id.eq(pipeline_id))
        .filter(secrets::name.eq(name))
        .select(SecretRow::as_select())
        .first(conn)
        .optional()?)
}

/// Every secret of a pipeline, by name.
pub fn list_secrets(conn: &mut DbConn, pipeline_id: i64) -> Result<Vec<SecretRow>, StorageError> {
    Ok(secrets::table
        .filter(secrets::pipeline_id.eq(pipeline_id))
        .order(secrets::name.asc())
        .select(SecretRow::as_select())
        .load(conn)?)
}

/// The names of a pipeline's secrets with their last change, by name.
pub fn list_secret_names(
    conn: &mut DbConn,
    pipeline_id: i64,
) -> Result<Vec<SecretName>, StorageError> {
    let rows: Vec<(String, NaiveDateTime)> = secrets::table
        .filter(secrets::pipeline_id.eq(pipeline_id))
        .order(secrets::name.asc())
        .select((secrets::name, secrets::updated_at))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(name, updated_at)| SecretName { name, updated_at })
        .collect())
}

/// Stores a secret's ciphertext, replacing an earlier value; returns true
/// when the secret did not exist before.
///
/// Two writers creating the same new secret at once are settled by the
/// unique key: the insert runs in its own savepoint, and the loser updates
/// the winner's row instead (so the caller's transaction stays usable on
/// PostgreSQL).
pub fn upsert_secret(
    conn: &mut DbConn,
    pipeline_id: i64,
    name: &str,
    ciphertext: &[u8],
    nonce: &[u8],
) -> Result<bool, StorageError> {
    write_transaction(conn, |conn| {
        let at = now();
        if update_secret(conn, pipeline_id, name, ciphertext, nonce, at)? {
            return Ok(false);
        }
        let inserted = write_transaction(conn, |conn| {
            diesel::insert_into(secrets::table)
                .values((
                    secrets::pipeline_id.eq(pipeline_id),
                    secrets::name.eq(name),
                    secrets::ciphertext.eq(ciphertext),
                    secrets::nonce.eq(nonce),
                    secrets::created_at.eq(at),
                    secrets::updated_at.eq(at),
                ))
                .execute(conn)
                .map_err(StorageError::from)
        });
        match inserted {
            Ok(_) => Ok(true),
            Err(StorageError::Conflict(_)) => {
                update_secret(conn, pipeline_id, name, ciphertext, nonce, at)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    })
}

fn update_secret(
    conn: &mut DbConn,
    pipeline_id: i64,
    name: &str,
    ciphertext: &[u8],
    nonce: &[u8],
    at: NaiveDateTime,
) -> Result<bool, StorageError> {
    let updated = diesel::update(
        secrets::table
            .filter(secrets::pipeline_id.eq(pipeline_id))
            .filter(secrets::name.eq(name)),
    )
    .set((
        secrets::ciphertext.eq(ciphertext),
        secrets::nonce.eq(nonce),
        secrets::updated_at.eq(at),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

/// Deletes a secret; returns false when there was none.
pub fn delete_secret(
    conn: &mut DbConn,
    pipeline_id: i64,
    name: &str,
) -> Result<bool, StorageError> {
    let deleted = diesel::delete(
        secrets::table
            .filter(secrets::pipeline_id.eq(pipeline_id))
            .filter(secrets::name.eq(name)),
    )
    .execute(conn)?;
    Ok(deleted > 0)
}
