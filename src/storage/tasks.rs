//! Task runs: one row per task of a build (or, later, of a deployment),
//! with its state, exit code and times. Their output is in `log_chunks`.
use diesel::prelude::*;

use super::StorageError;
use super::conn::{DbConn, now};
use super::models::TaskRunRow;
use super::schema::task_runs;
use crate::domain::TaskRunState;

/// A task run to insert (state `pending`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTaskRun {
    /// Exactly one of `build_id` and `deployment_id` is set.
    pub build_id: Option<i64>,
    pub deployment_id: Option<i64>,
    /// Its place in the task list, from 0.
    pub position: i32,
    /// A label for people (`build.sh`, the task's `name:`…).
    pub name: String,
    /// `shell`, `http`, …
    pub kind: String,
}

/// Inserts a pending task run.
pub fn insert_task_run(conn: &mut DbConn, task: &NewTaskRun) -> Result<TaskRunRow, StorageError> {
    let created_at = now();
    let (id,): (i64,) = diesel::insert_into(task_runs::table)
        .values((
            task_runs::build_id.eq(task.build_id),
            task_runs::deployment_id.eq(task.deployment_id),
            task_runs::position.eq(task.position),
            task_runs::name.eq(&task.name),
            task_runs::kind.eq(&task.kind),
            task_runs::state.eq(TaskRunState::Pending.as_str()),
            task_runs::created_at.eq(created_at),
        ))
        .returning((task_runs::id,))
        .get_result(conn)?;
    Ok(TaskRunRow {
        id,
        deployment_id: task.deployment_id,
        build_id: task.build_id,
        position: task.position,
        name: task.name.clone(),
        kind: task.kind.clone(),
        state: TaskRunState::Pending,
        exit_code: None,
        created_at,
        started_at: None,
        finished_at: None,
    })
}

/// `pending → running` (sets `started_at`); `false` when it was not pending.
pub fn start_task_run(conn: &mut DbConn, id: i64) -> Result<bool, StorageError> {
    let updated = diesel::update(
        task_runs::table
            .find(id)
            .filter(task_runs::state.eq(TaskRunState::Pending.as_str())),
    )
    .set((
        task_runs::state.eq(TaskRunState::Running.as_str()),
        task_runs::started_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

/// `running → state` with its exit code (sets `finished_at`); `false` when
/// it was not running.
pub fn finish_task_run(
    conn: &mut DbConn,
    id: i64,
    state: TaskRunState,
    exit_code: Option<i32>,
) -> Result<bool, StorageError> {
    let updated = diesel::update(
        task_runs::table
            .find(id)
            .filter(task_runs::state.eq(TaskRunState::Running.as_str())),
    )
    .set((
        task_runs::state.eq(state.as_str()),
        task_runs::exit_code.eq(exit_code),
        task_runs::finished_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(updated > 0)
}

/// Closes the unfinished task runs of a build: running ones become
/// `running_to` (interrupted, canceled…), pending ones `skipped`. Returns
/// how many changed.
pub fn close_task_runs_of_build(
    conn: &mut DbConn,
    build_id: i64,
    running_to: TaskRunState,
) -> Result<usize, StorageError> {
    let at = now();
    let running = diesel::update(
        task_runs::table
            .filter(task_runs::build_id.eq(build_id))
            .filter(task_runs::state.eq(TaskRunState::Running.as_str())),
    )
    .set((
        task_runs::state.eq(running_to.as_str()),
        task_runs::finished_at.eq(at),
    ))
    .execute(conn)?;
    let pending = diesel::update(
        task_runs::table
            .filter(task_runs::build_id.eq(build_id))
            .filter(task_runs::state.eq(TaskRunState::Pending.as_str())),
    )
    .set(task_runs::state.eq(TaskRunState::Skipped.as_str()))
    .execute(conn)?;
    Ok(running + pending)
}

/// The task runs of a build, in order.
pub fn task_runs_of_build(
    conn: &mut DbConn,
    build_id: i64,
) -> Result<Vec<TaskRunRow>, StorageError> {
    Ok(task_runs::table
        .filter(task_runs::build_id.eq(build_id))
        .order((task_runs::position.asc(), task_runs::id.asc()))
        .select(TaskRunRow::as_select())
        .load(conn)?)
}

/// The task runs of several builds (one query), by build and position.
pub fn task_runs_of_builds(
    conn: &mut DbConn,
    build_ids: &[i64],
) -> Result<Vec<TaskRunRow>, StorageError> {
    if build_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(task_runs::table
        .filter(task_runs::build_id.eq_any(build_ids))
        .order((
            task_runs::build_id.asc(),
            task_runs::position.asc(),
            task_runs::id.asc(),
        ))
        .select(TaskRunRow::as_select())
        .load(conn)?)
}

/// A task run by id.
pub fn find_task_run(conn: &mut DbConn, id: i64) -> Result<Option<TaskRunRow>, StorageError> {
    Ok(task_runs::table
        .find(id)
        .select(TaskRunRow::as_select())
        .first(conn)
        .optional()?)
}
