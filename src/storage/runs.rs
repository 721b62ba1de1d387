//! The job runtime's queries on a table of runs (`builds`, `deployments`):
//! renewing the lease of an instance's running runs, finding the running
//! runs whose runner is gone, and reading states by id. Written once as
//! [`run_lease_queries!`] so both tables keep the same lease rules.

/// Defines, for the run table `$table` (with `state`, `runner` and
/// `heartbeat_at` columns), row type `$row` and state enum `$state` (with a
/// `Running` state), three functions named by the caller:
/// - `heartbeat`: marks the running runs of `runner` alive; how many;
/// - `orphaned`: the running runs whose runner is gone: of any runner not
///   heard from since `stale_before` and, when given, every one of `runner`;
/// - `states`: the states of the runs of `ids`, by id.
///
/// The names in scope where it is used (`DbConn`, `StorageError`, `now`,
/// diesel's prelude) serve its bodies.
macro_rules! run_lease_queries {
    (
        table: $table:ident, row: $row:ident, state: $state:ident,
        $(#[$heartbeat_doc:meta])* heartbeat: $heartbeat:ident,
        $(#[$orphaned_doc:meta])* orphaned: $orphaned:ident,
        $(#[$states_doc:meta])* states: $states:ident $(,)?
    ) => {
        $(#[$heartbeat_doc])*
        pub fn $heartbeat(conn: &mut DbConn, runner: &str) -> Result<usize, StorageError> {
            Ok(diesel::update(
                $table::table
                    .filter($table::runner.eq(runner))
                    .filter($table::state.eq($state::Running.as_str())),
            )
            .set($table::heartbeat_at.eq(now()))
            .execute(conn)?)
        }

        $(#[$orphaned_doc])*
        pub fn $orphaned(
            conn: &mut DbConn,
            runner: Option<&str>,
            stale_before: chrono::NaiveDateTime,
        ) -> Result<Vec<$row>, StorageError> {
            let stale = $table::runner
                .is_null()
                .or($table::heartbeat_at.is_null())
                .or($table::heartbeat_at.lt(stale_before));
            let query = $table::table
                .filter($table::state.eq($state::Running.as_str()))
                .order($table::id.asc())
                .select($row::as_select());
            Ok(match runner {
                Some(runner) => query.filter(stale.or($table::runner.eq(runner))).load(conn)?,
                None => query.filter(stale).load(conn)?,
            })
        }

        $(#[$states_doc])*
        pub fn $states(conn: &mut DbConn, ids: &[i64]) -> Result<Vec<(i64, $state)>, StorageError> {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            Ok($table::table
                .filter($table::id.eq_any(ids))
                .select(($table::id, $table::state))
                .load::<(i64, $state)>(conn)?)
        }
    };
}
pub(crate) use run_lease_queries;
