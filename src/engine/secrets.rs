//! Secret values: encrypted at rest with AES-256-GCM, set by the CLI, the
//! API and the UI, resolved only when a build, task or webhook needs them.
//!
//! - The key ([`SecretKey`]) comes from `SLIPWAY_SECRET_KEY` (64 hex digits
//!   or the base64 of 32 bytes) or from `<data-dir>/secret.key`, generated
//!   with mode 0600 on first use. Several instances sharing one PostgreSQL
//!   database must share the key (set `SLIPWAY_SECRET_KEY` on each).
//! - Each value has its own random 96-bit nonce; the associated data binds
//!   the ciphertext to its pipeline id and name, so a row copied onto
//!   another secret does not decrypt.
//! - Values never reach a log, an audit record, a page or an export: they
//!   live in [`SecretString`]s (zeroized on drop, `Debug` prints nothing),
//!   and text that leaves a run goes through `domain::secrets::mask`.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use super::EngineError;
use crate::domain::SecretRef;
use crate::storage::secrets::SecretName;
use crate::storage::{self, DbConn};

/// The environment variable that holds the key.
pub const SECRET_KEY_ENV: &str = "SLIPWAY_SECRET_KEY";
/// The key file in the data directory, used when the variable is not set.
pub const SECRET_KEY_FILE: &str = "secret.key";
/// The longest secret value accepted (64 KiB).
pub const MAX_SECRET_LEN: usize = 64 * 1024;
/// The longest secret name accepted.
pub const MAX_NAME_LEN: usize = 128;

const NONCE_LEN: usize = 12;

/// The 256-bit key that encrypts every secret value. Zeroized on drop;
/// `Debug` prints nothing of it.
pub struct SecretKey(SecretBox<[u8; 32]>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// The key from `SLIPWAY_SECRET_KEY`, else from `<data_dir>/secret.key`
    /// (created, mode 0600, when missing). A malformed variable or file is
    /// an error that names it, never a new key.
    pub fn load_or_create(data_dir: &Path) -> Result<SecretKey, EngineError> {
        let env = std::env::var(SECRET_KEY_ENV).ok().map(Zeroizing::new);
        SecretKey::load_or_create_with(env.as_deref().map(String::as_str), data_dir)
    }

    /// [`SecretKey::load_or_create`] with the variable's value given (`None`
    /// when unset), so that tests need not change the process environment.
    pub fn load_or_create_with(
        env_value: Option<&str>,
        data_dir: &Path,
    ) -> Result<SecretKey, EngineError> {
        if let Some(value) = env_value {
            return SecretKey::parse(value).ok_or_else(|| {
                EngineError::Invalid(format!(
                    "{SECRET_KEY_ENV} is not a valid key: it must be 64 hex digits or the base64 of 32 bytes (make one with `openssl rand -hex 32`)"
                ))
            });
        }
        let path = data_dir.join(SECRET_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => SecretKey::from_file_text(&path, &Zeroizing::new(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SecretKey::create_file(&path),
            Err(e) => Err(EngineError::Io {
                context: format!("cannot read the secret key file {}", path.display()),
                source: e,
            }),
        }
    }

    /// A key from its text form: 64 hex digits, or base64 (standard or
    /// URL-safe, padded or not) of exactly 32 bytes.
    pub fn parse(text: &str) -> Option<SecretKey> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Zeroizing::new(hex::decode(text).ok()?)
        } else {
            use base64::engine::general_purpose::{
                STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
            };
            Zeroizing::new(
                [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                    .iter()
                    .find_map(|engine| engine.decode(text).ok())?,
            )
        };
        let array: [u8; 32] = bytes.as_slice().try_into().ok()?;
        Some(SecretKey::from_bytes(array))
    }

    /// A key of these bytes.
    pub fn from_bytes(mut bytes: [u8; 32]) -> SecretKey {
        let key = SecretKey(SecretBox::new(Box::new(bytes)));
        secrecy::zeroize::Zeroize::zeroize(&mut bytes);
        key
    }

    /// A new random key.
    pub fn generate() -> Result<SecretKey, EngineError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| EngineError::Io {
            context: "cannot generate a secret key".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(SecretKey::from_bytes(*bytes))
    }

    fn from_file_text(path: &Path, text: &str) -> Result<SecretKey, EngineError> {
        let text = text.trim();
        if !(text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())) {
            return Err(EngineError::Invalid(format!(
                "the secret key file {} is malformed (it must hold 64 hex digits); Slipway will not start with it. Restore it from a backup, or set {SECRET_KEY_ENV}; delete it only if no secret was ever stored, since the stored secrets cannot be read without it",
                path.display()
            )));
        }
        warn_if_readable_by_others(path);
        SecretKey::parse(text).ok_or_else(|| {
            EngineError::Invalid(format!(
                "the secret key file {} is malformed",
                path.display()
            ))
        })
    }

    /// Writes a new key to `path` (mode 0600). When another process created
    /// the file in the meantime, its key is used.
    fn create_file(path: &Path) -> Result<SecretKey, EngineError> {
        let io = |what: &str, path: &Path| {
            let context = format!("{what} {}", path.display());
            move |source| EngineError::Io { context, source }
        };
        if let Some(dir) = path.parent() {
            crate::storage::create_private_dir(dir)
                .map_err(io("cannot create the data directory", dir))?;
        }
        let key = SecretKey::generate()?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.bytes())));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = match options.open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(path)
                    .map_err(io("cannot read the secret key file", path))?;
                return SecretKey::from_file_text(path, &Zeroizing::new(text));
            }
            Err(e) => return Err(io("cannot create the secret key file", path)(e)),
        };
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io("cannot write the secret key file", path))?;
        tracing::info!(
            file = %path.display(),
            "generated a new secret key in {}; back it up with the database",
            path.display()
        );
        Ok(key)
    }

    fn bytes(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.bytes()))
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "the secret key file {} is readable by other users; run `chmod 600` on it",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Where the key of these settings lives, for messages.
pub fn key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(SECRET_KEY_FILE)
}

/// The associated data: binds a ciphertext to its pipeline and name.
fn aad(pipeline_id: i64, name: &str) -> Vec<u8> {
    format!("slipway-secret-v1\0{pipeline_id}\0{name}").into_bytes()
}

/// Checks a secret's name: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 characters.
pub fn validate_name(name: &str) -> Result<(), EngineError> {
    if name.len() <= MAX_NAME_LEN && SecretRef::new(name).is_ok() {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "`{name}` is not a valid secret name: use letters, digits and '_', not starting with a digit, at most {MAX_NAME_LEN} characters"
        )))
    }
}

fn find_pipeline_id(conn: &mut DbConn, pipeline: &str) -> Result<i64, EngineError> {
    Ok(storage::find_pipeline(conn, pipeline)?
        .ok_or_else(|| EngineError::NotFound(format!("There is no pipeline named `{pipeline}`.")))?
        .id)
}

/// Encrypts `value` and stores it as the secret `name` of `pipeline`
/// (creating or replacing it), with an audit record `secret.set` that names
/// the secret, never its value.
#[tracing::instrument(skip(conn, key, value))]
pub fn set_secret(
    conn: &mut DbConn,
    key: &SecretKey,
    pipeline: &str,
    name: &str,
    value: &SecretString,
    actor: &str,
) -> Result<(), EngineError> {
    validate_name(name)?;
    let plaintext = value.expose_secret().as_bytes();
    if plaintext.is_empty() {
        return Err(EngineError::Invalid(format!(
            "the value of the secret `{name}` is empty"
        )));
    }
    if plaintext.len() > MAX_SECRET_LEN {
        return Err(EngineError::Invalid(format!(
            "the value of the secret `{name}` is longer than {MAX_SECRET_LEN} bytes"
        )));
    }
    storage::write_transaction(conn, |conn| {
        let pipeline_id = find_pipeline_id(conn, pipeline)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| EngineError::Io {
            context: "cannot generate a nonce".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let aad = aad(pipeline_id, name);
        let ciphertext = key
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| EngineError::Io {
                context: format!("cannot encrypt the secret `{name}`"),
                source: std::io::Error::other("AES-GCM encryption failed"),
            })?;
        let created =
            storage::secrets::upsert_secret(conn, pipeline_id, name, &ciphertext, &nonce)?;
        let detail = if created {
            format!("created secret {name}")
        } else {
            format!("replaced the value of secret {name}")
        };
        storage::append_audit(
            conn,
            actor,
            "secret.set",
            &format!("pipeline:{pipeline}"),
            &detail,
        )?;
        Ok(())
    })
}

/// Deletes the secret `name` of `pipeline` (404 when there is none), with
/// an audit record `secret.delete`.
#[tracing::instrument(skip(conn))]
pub fn delete_secret(
    conn: &mut DbConn,
    pipeline: &str,
    name: &str,
    actor: &str,
) -> Result<(), EngineError> {
    storage::write_transaction(conn, |conn| {
        let pipeline_id = find_pipeline_id(conn, pipeline)?;
        if !storage::secrets::delete_secret(conn, pipeline_id, name)? {
            return Err(EngineError::NotFound(format!(
                "The pipeline `{pipeline}` has no secret named `{name}`."
            )));
        }
        storage::append_audit(
            conn,
            actor,
            "secret.delete",
            &format!("pipeline:{pipeline}"),
            &format!("deleted secret {name}"),
        )?;
        Ok(())
    })
}

/// The names of a pipeline's secrets and when each last changed — never values.
pub fn list_secret_names(
    conn: &mut DbConn,
    pipeline_id: i64,
) -> Result<Vec<SecretName>, EngineError> {
    Ok(storage::secrets::list_secret_names(conn, pipeline_id)?)
}

/// [`list_secret_names`] of the pipeline called `pipeline` (404 when there is none).
pub fn list_secret_names_of(
    conn: &mut DbConn,
    pipeline: &str,
) -> Result<Vec<SecretName>, EngineError> {
    let pipeline_id = find_pipeline_id(conn, pipeline)?;
    list_secret_names(conn, pipeline_id)
}

fn decrypt(
    key: &SecretKey,
    pipeline_id: i64,
    row: &storage::SecretRow,
) -> Result<SecretString, EngineError> {
    let failed = |why: &str| EngineError::Io {
        context: format!(
            "cannot decrypt the secret `{}` of pipeline #{pipeline_id}",
            row.name
        ),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string()),
    };
    if row.nonce.len() != NONCE_LEN {
        return Err(failed("the stored nonce is not 96 bits"));
    }
    let plaintext = key
        .cipher()
        .decrypt(
            Nonce::from_slice(&row.nonce),
            Payload {
                msg: &row.ciphertext,
                aad: &aad(pipeline_id, &row.name),
            },
        )
        .map_err(|_| {
            failed(&format!(
                "the secret key ({SECRET_KEY_ENV} or <data-dir>/{SECRET_KEY_FILE}) is not the one it was encrypted with, or the stored value was altered"
            ))
        })?;
    match String::from_utf8(plaintext) {
        Ok(text) => Ok(SecretString::from(text)),
        Err(e) => {
            let mut bytes = e.into_bytes();
            secrecy::zeroize::Zeroize::zeroize(&mut bytes);
            Err(failed("the value is not UTF-8"))
        }
    }
}

/// The value of the secret `name` of a pipeline, `None` when it is not set.
/// A value that does not decrypt (another key) is an error, not `None`.
pub fn resolve_secret(
    conn: &mut DbConn,
    key: &SecretKey,
    pipeline_id: i64,
    name: &str,
) -> Result<Option<SecretString>, EngineError> {
    storage::secrets::find_secret(conn, pipeline_id, name)?
        .map(|row| decrypt(key, pipeline_id, &row))
        .transpose()
}

/// Every secret of a pipeline with its value, by name (to mask them in logs).
pub fn resolve_all(
    conn: &mut DbConn,
    key: &SecretKey,
    pipeline_id: i64,
) -> Result<Vec<(String, SecretString)>, EngineError> {
    storage::secrets::list_secrets(conn, pipeline_id)?
        .into_iter()
        .map(|row| Ok((row.name.clone(), decrypt(key, pipeline_id, &row)?)))
        .collect()
}

/// `text` with each `${{ secrets.NAME }}` replaced by the pipeline's value;
/// a secret that is not set is an error naming it.
pub fn substitute_secrets(
    conn: &mut DbConn,
    key: &SecretKey,
    pipeline_id: i64,
    text: &str,
) -> Result<SecretString, EngineError> {
    let mut values: Vec<(String, SecretString)> = Vec::new();
    for name in crate::domain::secrets::references(text) {
        if let Some(value) = resolve_secret(conn, key, pipeline_id, &name)? {
            values.push((name, value));
        }
    }
    let lookup = |name: &str| {
        values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.expose_secret().to_string())
    };
    crate::domain::secrets::substitute(text, lookup)
        .map(SecretString::from)
        .map_err(EngineError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn parses_hex_and_base64_keys() {
        let hex_key = SecretKey::parse(HEX).unwrap();
        let bytes: Vec<u8> = (0u8..32).collect();
        assert_eq!(hex_key.bytes().as_slice(), bytes.as_slice());
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        for text in [STANDARD.encode(&bytes), URL_SAFE_NO_PAD.encode(&bytes)] {
            assert_eq!(
                SecretKey::parse(&text).unwrap().bytes().as_slice(),
                bytes.as_slice()
            );
        }
        assert_eq!(
            SecretKey::parse(&format!("  {}\n", HEX.to_uppercase()))
                .unwrap()
                .bytes(),
            hex_key.bytes()
        );
        for bad in [
            "",
            "abc",
            &HEX[..62],
            &format!("{HEX}00"),
            &STANDARD.encode([0u8; 31]),
            "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        ] {
            assert!(SecretKey::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn debug_prints_nothing() {
        let key = SecretKey::parse(HEX).unwrap();
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
    }

    #[test]
    fn env_wins_and_a_malformed_env_names_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::load_or_create_with(Some(HEX), dir.path()).unwrap();
        assert_eq!(key.bytes()[31], 31);
        assert!(!dir.path().join(SECRET_KEY_FILE).exists());
        let err = SecretKey::load_or_create_with(Some("not-a-key"), dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("SLIPWAY_SECRET_KEY"), "{message}");
        assert!(!message.contains("not-a-key"), "{message}");
    }

    #[test]
    fn key_file_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let first = SecretKey::load_or_create_with(None, &data).unwrap();
        let path = data.join(SECRET_KEY_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = SecretKey::load_or_create_with(None, &data).unwrap();
        assert_eq!(first.bytes(), again.bytes());
    }

    #[test]
    fn a_malformed_key_file_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRET_KEY_FILE);
        std::fs::write(&path, "garbage\n").unwrap();
        let err = SecretKey::load_or_create_with(None, dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("malformed"), "{message}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "garbage\n");
    }

    #[test]
    fn names_are_validated() {
        for good in ["HOOK", "_x", "a1_B2", &"A".repeat(128)] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1A",
            "A-B",
            "A B",
            "ä",
            "${{ secrets.A }}",
            &"A".repeat(129),
        ] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
