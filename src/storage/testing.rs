//! Fresh databases for tests (this crate's and the web layer's integration
//! tests): a SQLite file in a temporary directory, and, when a PostgreSQL
//! server is reachable, a new database on it, dropped again on `Drop`.
//!
//! The server is `postgres://postgres@127.0.0.1:5432` unless
//! `SLIPWAY_TEST_POSTGRES_URL` names another (without a database name).
//! When it cannot be reached the tests run on SQLite only and say so, except
//! under `CI=true`, where that is a failure.
use std::path::PathBuf;

use diesel::pg::PgConnection;
use diesel::{Connection, RunQueryDsl};

use super::{Db, StorageError};

const DEFAULT_POSTGRES_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// A database that exists for one test; dropping it deletes it.
#[derive(Debug)]
pub struct TestDb {
    /// Pass this to `Db::connect` or `--database-url`.
    pub url: String,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Directory(PathBuf),
    PostgresDatabase { admin_url: String, name: String },
}

impl TestDb {
    /// A new SQLite database file in a new temporary directory.
    pub fn sqlite() -> Result<TestDb, StorageError> {
        let dir =
            std::env::temp_dir().join(format!("slipway-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| {
            StorageError::Connection(format!("cannot create {}: {e}", dir.display()))
        })?;
        Ok(TestDb {
            url: format!("sqlite://{}", dir.join("slipway.db").display()),
            cleanup: Cleanup::Directory(dir),
        })
    }

    /// A new, empty database on the test PostgreSQL server.
    pub fn postgres() -> Result<TestDb, StorageError> {
        let server = postgres_server();
        let admin_url = format!("{server}/postgres");
        let name = format!("slipway_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(&admin_url)
            .map_err(|e| StorageError::Connection(format!("{admin_url}: {e}")))?;
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut admin)?;
        Ok(TestDb {
            url: format!("{server}/{name}"),
            cleanup: Cleanup::PostgresDatabase { admin_url, name },
        })
    }

    /// Connects to this database (a pool of 4) and applies the migrations.
    pub fn connect(&self) -> Result<Db, StorageError> {
        let db = Db::connect(&self.url, 4)?;
        db.run_migrations()?;
        Ok(db)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Directory(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::PostgresDatabase { admin_url, name } => {
                let dropped = PgConnection::establish(admin_url)
                    .map_err(|e| e.to_string())
                    .and_then(|mut admin| {
                        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                            .execute(&mut admin)
                            .map_err(|e| e.to_string())
                    });
                if let Err(e) = dropped {
                    eprintln!("cannot drop the test database {name}: {e}");
                }
            }
        }
    }
}

/// One fresh database per backend, labelled `sqlite` and `postgres`.
///
/// # Panics
/// When PostgreSQL cannot be reached and `CI=true`.
pub fn test_databases() -> Vec<(String, TestDb)> {
    let mut databases = Vec::new();
    match TestDb::sqlite() {
        Ok(db) => databases.push(("sqlite".to_string(), db)),
        Err(e) => panic!("cannot create a SQLite test database: {e}"),
    }
    match TestDb::postgres() {
        Ok(db) => databases.push(("postgres".to_string(), db)),
        Err(e) if is_ci() => panic!("PostgreSQL is required under CI=true: {e}"),
        Err(e) => eprintln!("skipping PostgreSQL: {e}"),
    }
    databases
}

fn postgres_server() -> String {
    std::env::var("SLIPWAY_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_SERVER.to_string())
        .trim()
        .trim_end_matches('/')
        .to_string()
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}
