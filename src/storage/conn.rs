//! The connection enum, the pool, migrations and transactions.
//!
//! The backend is chosen from the URL scheme here, never by
//! `Connection::establish` on the enum (which tries every variant and hides
//! the real error behind "Invalid connection url for multiconnection").
use std::path::Path;
use std::time::Duration;

use chrono::{NaiveDateTime, SubsecRound, Utc};
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{CustomizeConnection, ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel::result::Error as DieselError;
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, ConnectionError};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use super::StorageError;

/// A connection to either database. `Sqlite` stays last: it accepts any
/// string as a path.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

impl DbConn {
    /// The backend of this connection.
    pub fn backend(&self) -> Backend {
        match self {
            DbConn::Pg(_) => Backend::Postgres,
            DbConn::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Migrations of each backend: same names, same order, different SQL.
pub const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
pub const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Any PostgreSQL session that runs migrations holds this advisory lock, so
/// instances starting together apply them once.
const MIGRATION_LOCK_KEY: i64 = 0x5117_7a7e;

/// How long SQLite waits for a lock held by another connection.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

/// Where a database URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `postgres://` or `postgresql://` URL, passed to libpq as is.
    Postgres(String),
    /// A SQLite file path (or `:memory:`, or a `file:` URI).
    Sqlite(String),
}

impl Target {
    /// `postgres://…`/`postgresql://…` → PostgreSQL; `sqlite://PATH`,
    /// `sqlite:PATH` or a bare path → SQLite.
    pub fn parse(url: &str) -> Target {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Target::Postgres(url.to_string())
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            Target::Sqlite(path.to_string())
        } else if let Some(path) = url.strip_prefix("sqlite:") {
            Target::Sqlite(path.to_string())
        } else {
            Target::Sqlite(url.to_string())
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Target::Postgres(_) => Backend::Postgres,
            Target::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Opens one connection to this target, reporting the driver's own error.
    fn establish(&self) -> Result<DbConn, ConnectionError> {
        match self {
            Target::Postgres(url) => PgConnection::establish(url).map(DbConn::Pg),
            Target::Sqlite(path) => SqliteConnection::establish(path).map(DbConn::Sqlite),
        }
    }
}

/// An error while opening or setting up a pooled connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Connection(#[from] ConnectionError),
    #[error("{0}")]
    Query(#[from] DieselError),
}

/// The r2d2 manager: opens connections of the backend chosen from the URL.
#[derive(Debug)]
pub struct DbManager {
    target: Target,
}

impl ManageConnection for DbManager {
    type Connection = DbConn;
    type Error = ConnError;

    fn connect(&self) -> Result<DbConn, ConnError> {
        Ok(self.target.establish()?)
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), ConnError> {
        Ok(conn.ping()?)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        std::thread::panicking() || conn.is_broken()
    }
}

/// Sets the SQLite pragmas on every new connection. `busy_timeout` comes
/// before `journal_mode=WAL`, or parallel opens fail with "database is locked".
#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<DbConn, ConnError> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut DbConn) -> Result<(), ConnError> {
        if let DbConn::Sqlite(conn) = conn {
            conn.batch_execute(&format!(
                "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};\
                 PRAGMA journal_mode = WAL;\
                 PRAGMA synchronous = NORMAL;\
                 PRAGMA foreign_keys = ON;"
            ))?;
        }
        Ok(())
    }
}

/// A connection checked out of the pool; derefs to [`DbConn`].
pub type PooledConn = PooledConnection<DbManager>;

/// The database: a pool of connections to one backend.
#[derive(Debug, Clone)]
pub struct Db {
    pool: Pool<DbManager>,
    backend: Backend,
}

impl Db {
    /// Opens a pool of at most `max_size` connections to `url`.
    ///
    /// One connection is opened first, so a bad URL, an unreachable server or
    /// an unwritable file is reported with the driver's own message. For
    /// SQLite the parent directory of the file is created.
    pub fn connect(url: &str, max_size: u32) -> Result<Db, StorageError> {
        let target = Target::parse(url);
        if let Target::Sqlite(path) = &target {
            create_parent_dir(path)?;
        }
        let manager = DbManager { target };
        let backend = manager.target.backend();
        let mut probe = manager
            .connect()
            .map_err(|e| StorageError::Connection(format!("{}: {e}", redact(url))))?;
        SqlitePragmas
            .on_acquire(&mut probe)
            .map_err(|e| StorageError::Connection(format!("{}: {e}", redact(url))))?;
        drop(probe);
        let max_size = max_size.max(1);
        let pool = Pool::builder()
            .max_size(max_size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(30))
            .connection_customizer(Box::new(SqlitePragmas))
            .build(manager)
            .map_err(|e| StorageError::Connection(format!("{}: {e}", redact(url))))?;
        Ok(Db { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks a connection out of the pool (waits up to 30 s).
    pub fn get(&self) -> Result<PooledConn, StorageError> {
        Ok(self.pool.get()?)
    }

    /// Applies the pending migrations of this backend; returns how many ran.
    pub fn run_migrations(&self) -> Result<usize, StorageError> {
        let mut conn = self.get()?;
        run_migrations(&mut conn)
    }

    /// How many migrations are not applied yet (0 when ready).
    pub fn pending_migrations(&self) -> Result<usize, StorageError> {
        let mut conn = self.get()?;
        pending_migrations(&mut conn)
    }

    /// Runs a trivial query on a pooled connection.
    pub fn ping(&self) -> Result<(), StorageError> {
        let mut conn = self.get()?;
        conn.ping()?;
        Ok(())
    }

    /// `(connections, idle)` of the pool, for /metrics.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }
}

/// Applies the pending migrations on this connection; returns how many ran.
pub fn run_migrations(conn: &mut DbConn) -> Result<usize, StorageError> {
    let migration_error =
        |e: Box<dyn std::error::Error + Send + Sync>| StorageError::Migration(e.to_string());
    match conn {
        DbConn::Sqlite(conn) => conn
            .run_pending_migrations(SQLITE_MIGRATIONS)
            .map(|applied| applied.len())
            .map_err(migration_error),
        DbConn::Pg(conn) => {
            conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))?;
            let result = conn
                .run_pending_migrations(POSTGRES_MIGRATIONS)
                .map(|applied| applied.len())
                .map_err(migration_error);
            let unlocked =
                conn.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"));
            let applied = result?;
            unlocked?;
            Ok(applied)
        }
    }
}

/// How many migrations of this backend are not applied on this connection's database.
pub fn pending_migrations(conn: &mut DbConn) -> Result<usize, StorageError> {
    let pending = match conn {
        DbConn::Sqlite(conn) => conn.pending_migrations(SQLITE_MIGRATIONS).map(|l| l.len()),
        DbConn::Pg(conn) => conn
            .pending_migrations(POSTGRES_MIGRATIONS)
            .map(|l| l.len()),
    };
    pending.map_err(|e| StorageError::Migration(e.to_string()))
}

/// Runs `f` in a transaction meant to write.
///
/// On SQLite the outermost transaction starts with `BEGIN IMMEDIATE`, taking
/// the write lock up front: a deferred transaction that reads and then writes
/// fails with "database is locked" when another writer committed in between,
/// and `busy_timeout` cannot help it. On PostgreSQL, and when already inside
/// a transaction (a savepoint then), this is `conn.transaction(f)`.
pub fn write_transaction<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<DieselError>,
{
    let began = match conn {
        DbConn::Pg(_) => false,
        DbConn::Sqlite(inner) => {
            match AnsiTransactionManager::begin_transaction_sql(inner, "BEGIN IMMEDIATE") {
                Ok(()) => true,
                Err(DieselError::AlreadyInTransaction) => false,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if !began {
        return conn.transaction(f);
    }
    // Same as diesel's `TransactionManager::transaction`, after our own BEGIN.
    type Manager = <DbConn as Connection>::TransactionManager;
    match f(conn) {
        Ok(value) => {
            Manager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(user_error) => match Manager::rollback_transaction(conn) {
            Ok(()) | Err(DieselError::BrokenTransactionManager) => Err(user_error),
            Err(rollback_error) => Err(rollback_error.into()),
        },
    }
}

/// The current time in UTC, truncated to microseconds (what both databases
/// store), so a value written and read back compares equal.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

fn create_parent_dir(path: &str) -> Result<(), StorageError> {
    if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
        return Ok(());
    }
    if let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        create_private_dir(dir).map_err(|e| {
            StorageError::Connection(format!(
                "cannot create the directory {}: {e}",
                dir.display()
            ))
        })?;
    }
    private_db_files(path).map_err(|e| {
        StorageError::Connection(format!("cannot make {path} private (mode 0600): {e}"))
    })
}

/// Creates `dir` (and its missing parents) readable by this user only
/// (0700). A directory that exists keeps its mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Makes the SQLite database `path` readable by this user only: creates
/// it empty with mode 0600 when absent (SQLite then gives its `-wal` and
/// `-shm` files the same mode), and takes group and other access away
/// from an existing database and its `-wal`/`-shm` files.
fn private_db_files(path: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    for file in [
        path.to_owned(),
        format!("{path}-wal"),
        format!("{path}-shm"),
    ] {
        match std::fs::metadata(&file) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                let mode = meta.permissions().mode() & 0o700;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 (11): a new database and its `-wal` are 0600 in a 0700
    /// directory; an existing database and `-wal` left 0644 are made 0600.
    #[test]
    fn sqlite_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/slipway.db");
        let url = format!("sqlite://{}", path.display());
        let wal = dir.path().join("new/slipway.db-wal");
        {
            let db = Db::connect(&url, 2).unwrap();
            let mut conn = db.pool.get().unwrap();
            conn.batch_execute("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
                .unwrap();
            assert_eq!(mode(&dir.path().join("new")).unwrap(), 0o700);
            assert_eq!(mode(&path).unwrap(), 0o600);
            // Open, so SQLite keeps its write-ahead log.
            assert_eq!(mode(&wal).unwrap(), 0o600);
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        let db = Db::connect(&url, 2).unwrap();
        let _conn = db.pool.get().unwrap();
        assert_eq!(mode(&path).unwrap(), 0o600);
        assert_eq!(mode(&wal).unwrap(), 0o600);
    }

    #[test]
    fn backend_comes_from_the_scheme() {
        assert_eq!(
            Target::parse("postgres://u@h/db"),
            Target::Postgres("postgres://u@h/db".into())
        );
        assert_eq!(
            Target::parse("postgresql://u@h/db"),
            Target::Postgres("postgresql://u@h/db".into())
        );
        assert_eq!(
            Target::parse("sqlite:///var/lib/s.db"),
            Target::Sqlite("/var/lib/s.db".into())
        );
        assert_eq!(
            Target::parse("sqlite://./data/s.db"),
            Target::Sqlite("./data/s.db".into())
        );
        assert_eq!(
            Target::parse("sqlite:data/s.db"),
            Target::Sqlite("data/s.db".into())
        );
        assert_eq!(
            Target::parse("data/s.db"),
            Target::Sqlite("data/s.db".into())
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("/tmp/x.db"), "/tmp/x.db");
    }
}
