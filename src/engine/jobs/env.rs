//! A job's variables with their secrets resolved — one way for builds and
//! deployments — and the masker that keeps every secret value of the
//! pipeline out of the job's log.

use std::collections::BTreeMap;

use secrecy::ExposeSecret;

use super::JobContext;
use crate::domain::secrets::Masker;
use crate::engine::{EngineError, blocking, secrets};
use crate::storage::DbConn;

/// Whether a value names a secret (`${{ secrets.NAME }}`).
fn has_secret(value: &str) -> bool {
    value.contains("${{")
}

/// The pipeline's variables with their secrets substituted (a bad
/// reference fails as "variable NAME: …"), and the masker of every secret
/// value of the pipeline. Runs inside the caller's connection.
pub fn resolve_variables(
    conn: &mut DbConn,
    key: &secrets::SecretKey,
    pipeline_id: i64,
    variables: &BTreeMap<String, String>,
) -> Result<(BTreeMap<String, String>, Masker), EngineError> {
    let all = secrets::resolve_all(conn, key, pipeline_id)?;
    let masker = Masker::new(all.iter().map(|(_, v)| v.expose_secret()));
    let mut resolved = BTreeMap::new();
    for (name, value) in variables {
        let value = if has_secret(value) {
            secrets::substitute_secrets(conn, key, pipeline_id, value)
                .map_err(|e| EngineError::Invalid(format!("variable {name}: {e}")))?
                .expose_secret()
                .to_string()
        } else {
            value.clone()
        };
        resolved.insert(name.clone(), value);
    }
    Ok((resolved, masker))
}

/// One value (a task's env, an http task's URL) with its secrets
/// substituted; a value without a reference is returned as it is.
pub async fn resolve_value(
    ctx: &JobContext,
    pipeline_id: i64,
    value: &str,
) -> Result<String, EngineError> {
    if !has_secret(value) {
        return Ok(value.to_string());
    }
    let key = ctx.secret_key.clone();
    let text = value.to_string();
    blocking(&ctx.db, move |conn| {
        Ok(secrets::substitute_secrets(conn, &key, pipeline_id, &text)?
            .expose_secret()
            .to_string())
    })
    .await
}
