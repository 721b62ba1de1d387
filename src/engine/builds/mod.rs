//! Builds: queue one (webhook, poll, a person, the API), run it, cancel it,
//! recover the ones a dead process left running, and read them back for
//! pages and the API.
//!
//! A build runs in these steps; each state change is one transaction with
//! its audit record (`build.queue`, `build.start`, `build.checkout`,
//! `build.succeed` + `release.create`, `build.fail`, `build.cancel`,
//! `build.interrupt`):
//!
//! 1. the dispatcher claims it (`queued → running`, see `Engine`);
//! 2. the pipeline's mirror is fetched and the branch (or the asked-for
//!    commit) resolved; the version is rendered from the template, so a
//!    `{tag}` without a tag or a version already released fails here;
//! 3. the commit is checked out into a fresh workspace and the build tasks
//!    (`shell` only) run in order with the `SLIPWAY_*` variables;
//! 4. artifacts are collected by glob and stored by digest;
//! 5. one transaction inserts the release (artifacts, the pipeline's current
//!    definition revision, fix lineage) and moves the build to `succeeded`.
//!    The database's unique key on `(pipeline, version)` settles two builds
//!    that finish at once: the loser fails with a message, never a second
//!    release.
//!
//! A failure stores why in `builds.error`; nothing else is created.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use tokio_util::sync::CancellationToken;

pub mod artifacts;
pub mod git;

use self::artifacts::StoredArtifact;
use self::git::{CommitInfo, GitError, Revision};
use crate::domain::secrets::Masker;
use crate::domain::{
    self, BuildEvent, BuildState, PastDeployment, PipelineDefinition, TaskKind, TaskRunState,
    VersionContext,
};
use crate::engine::jobs::env::{resolve_value, resolve_variables};
use crate::engine::jobs::runner::{self, DbLogSink, ShellTask, TaskLog, TaskOutcome};
use crate::engine::jobs::{
    JobContext, JobId, LogChunk, Stop, finish_task, log_chunks, stopped_reason, task_kind,
    task_label,
};
use crate::engine::{ENGINE_ACTOR, EngineError, blocking, pipelines};
use crate::storage::{self, BuildRow, Db, DbConn, LogChunkRow, ReleaseRow, TaskRunRow};

/// A request to build a branch or a commit of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    /// The pipeline's name.
    pub pipeline: String,
    /// The branch; the pipeline's `source.branch` when `None`.
    pub branch: Option<String>,
    /// A commit to build (4 to 64 hex digits); the branch's head when `None`.
    pub commit: Option<String>,
    /// `webhook:github`, `webhook:gitlab`, `webhook:gitea`,
    /// `webhook:generic`, `poll`, `manual` or `api`. Automatic triggers
    /// (webhooks, polling) obey the pipeline's branch filter.
    pub trigger: String,
    /// The user, or the provider for a webhook.
    pub requested_by: String,
}

/// What [`queue_build`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum QueueOutcome {
    /// The build waits for the dispatcher.
    Queued(Box<BuildRow>),
    /// The pipeline's branch filter excludes the branch: nothing was queued.
    Filtered {
        /// The branch that was pushed.
        branch: String,
    },
}

impl QueueOutcome {
    /// The queued build, if one was.
    pub fn build(&self) -> Option<&BuildRow> {
        match self {
            QueueOutcome::Queued(b) => Some(b.as_ref()),
            QueueOutcome::Filtered { .. } => None,
        }
    }
}

/// The domain's transition, as an engine error.
fn transition(from: BuildState, event: BuildEvent) -> Result<BuildState, EngineError> {
    from.transition(event)
        .map_err(|e| EngineError::Conflict(e.to_string()))
}

fn subject(pipeline: &str, number: i64) -> String {
    format!("build:{pipeline}#{number}")
}

/// Queues a build (one transaction with its `build.queue` audit record).
/// Call `Engine::notify` afterwards so it starts at once.
///
/// Unknown pipeline → `NotFound`; a malformed branch or commit → `Invalid`;
/// a push to a branch the filter excludes → [`QueueOutcome::Filtered`].
pub fn queue_build(conn: &mut DbConn, req: &BuildRequest) -> Result<QueueOutcome, EngineError> {
    let loaded = pipelines::load(conn, &req.pipeline)?;
    let branch = req
        .branch
        .clone()
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| loaded.definition.source.branch.clone());
    if !git::is_branch_name(&branch) {
        return Err(EngineError::Invalid(format!(
            "`{branch}` is not a valid branch name"
        )));
    }
    let commit = match req.commit.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) if git::is_commit_id(c) => Some(c.to_ascii_lowercase()),
        Some(c) => {
            return Err(EngineError::Invalid(format!(
                "`{c}` is not a commit id (4 to 64 hexadecimal digits)"
            )));
        }
    };
    if !domain::branch_may_build(&loaded.definition.source, &req.trigger, &branch) {
        return Ok(QueueOutcome::Filtered { branch });
    }
    let build = storage::write_transaction(conn, |conn| {
        let build = storage::insert_build(
            conn,
            &storage::NewBuild {
                pipeline_id: loaded.id,
                state: BuildState::Queued,
                branch: Some(branch.clone()),
                commit_sha: commit.clone(),
                message: None,
                author: None,
                requested_by: req.requested_by.clone(),
                trigger: req.trigger.clone(),
            },
        )?;
        let detail = format!(
            "trigger={} branch={} commit={}",
            req.trigger,
            branch,
            commit.as_deref().unwrap_or("-")
        );
        storage::append_audit(
            conn,
            &req.requested_by,
            "build.queue",
            &subject(&loaded.name, build.number),
            &detail,
        )?;
        Ok::<_, EngineError>(build)
    })?;
    Ok(QueueOutcome::Queued(Box::new(build)))
}

/// Queues a build of the same branch and commit as build `number` of
/// `pipeline` again (a Retry of a failed or canceled build; trigger
/// `retry`), with its `build.queue` and a `build.retry` audit record in one
/// transaction. A build that has not ended is a `Conflict`. Call
/// `Engine::notify` afterwards (or use `Engine::retry`).
pub fn retry_build(
    conn: &mut DbConn,
    pipeline: &str,
    number: i64,
    actor: &str,
) -> Result<QueueOutcome, EngineError> {
    let old = find_build(conn, pipeline, number)?;
    if !matches!(
        old.state,
        BuildState::Failed | BuildState::Canceled | BuildState::Interrupted
    ) {
        return Err(EngineError::Conflict(format!(
            "Build #{number} is {}; only a build that failed, was canceled or was interrupted can be retried.",
            old.state.as_str()
        )));
    }
    let req = BuildRequest {
        pipeline: pipeline.to_string(),
        branch: old.branch.clone(),
        commit: old.commit_sha.clone(),
        trigger: "retry".into(),
        requested_by: actor.to_string(),
    };
    storage::write_transaction(conn, |conn| {
        let outcome = queue_build(conn, &req)?;
        if let QueueOutcome::Queued(new) = &outcome {
            storage::append_audit(
                conn,
                actor,
                "build.retry",
                &subject(pipeline, new.number),
                &format!("retry of build #{number}"),
            )?;
        }
        Ok(outcome)
    })
}

/// A build by pipeline name and number.
pub fn find_build(conn: &mut DbConn, pipeline: &str, number: i64) -> Result<BuildRow, EngineError> {
    let p = storage::find_pipeline(conn, pipeline)?.ok_or_else(|| {
        EngineError::NotFound(format!("There is no pipeline named `{pipeline}`."))
    })?;
    storage::find_build_by_number(conn, p.id, number)?
        .ok_or_else(|| EngineError::NotFound(format!("{pipeline} has no build #{number}.")))
}

/// Cancels a queued or running build (`build.cancel`, by `actor`). Call
/// `Engine::signal_cancel` afterwards to stop its running task.
/// A finished build is a `Conflict`.
pub fn cancel_build(
    conn: &mut DbConn,
    build_id: i64,
    actor: &str,
) -> Result<BuildRow, EngineError> {
    storage::write_transaction(conn, |conn| {
        let build = storage::find_build(conn, build_id)?
            .ok_or_else(|| EngineError::NotFound(format!("There is no build {build_id}.")))?;
        let pipeline = storage::pipeline_by_id(conn, build.pipeline_id)?;
        let to = build.state.transition(BuildEvent::Cancel).map_err(|_| {
            EngineError::Conflict(format!(
                "Build #{} of {} is {} already; only a queued or running build can be canceled.",
                build.number,
                pipeline.name,
                build.state.as_str()
            ))
        })?;
        let reason = format!("canceled by {actor}");
        if !storage::transition_build(conn, build.id, build.state, to, Some(&reason))? {
            return Err(EngineError::Conflict(format!(
                "Build #{} of {} changed state meanwhile; try again.",
                build.number, pipeline.name
            )));
        }
        storage::close_task_runs_of_build(conn, build.id, TaskRunState::Canceled)?;
        storage::append_audit(
            conn,
            actor,
            "build.cancel",
            &subject(&pipeline.name, build.number),
            &format!("from={}", build.state.as_str()),
        )?;
        Ok(storage::find_build(conn, build.id)?.unwrap_or(build))
    })
}

/// `running → interrupted` with `reason` (one transaction, `build.interrupt`).
pub(crate) fn interrupt(
    conn: &mut DbConn,
    build: &BuildRow,
    reason: &str,
) -> Result<bool, EngineError> {
    let (event, tasks) = (BuildEvent::Interrupt, TaskRunState::Interrupted);
    end_running(conn, build, event, tasks, "build.interrupt", reason)
}

/// Ends a running build by `event` with `reason`: its open task runs are
/// closed as `tasks`, and the audit record `action` is written, in one
/// transaction. `false` when the build left `running` meanwhile (canceled
/// or interrupted: that state stands).
fn end_running(
    conn: &mut DbConn,
    build: &BuildRow,
    event: BuildEvent,
    tasks: TaskRunState,
    action: &str,
    reason: &str,
) -> Result<bool, EngineError> {
    let to = transition(BuildState::Running, event)?;
    storage::write_transaction(conn, |conn| {
        if !storage::transition_build(conn, build.id, BuildState::Running, to, Some(reason))? {
            return Ok(false);
        }
        storage::close_task_runs_of_build(conn, build.id, tasks)?;
        let pipeline = storage::pipeline_by_id(conn, build.pipeline_id)?;
        let subject = subject(&pipeline.name, build.number);
        storage::append_audit(conn, ENGINE_ACTOR, action, &subject, reason)?;
        Ok(true)
    })
}

/// A build with its tasks and release, for pages and the API.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildDetail {
    pub pipeline: String,
    pub build: BuildRow,
    /// In order.
    pub tasks: Vec<TaskRunRow>,
    /// The version of the release it made.
    pub release: Option<String>,
}

impl BuildDetail {
    /// A build just queued: no tasks, no release yet.
    pub fn queued(pipeline: &str, build: BuildRow) -> BuildDetail {
        BuildDetail {
            pipeline: pipeline.to_string(),
            build,
            tasks: Vec::new(),
            release: None,
        }
    }
}

/// One build with its tasks and release.
pub fn build_detail(
    conn: &mut DbConn,
    pipeline: &str,
    number: i64,
) -> Result<BuildDetail, EngineError> {
    let build = find_build(conn, pipeline, number)?;
    let tasks = storage::task_runs_of_build(conn, build.id)?;
    let release = storage::release_versions_of_builds(conn, &[build.id])?
        .into_iter()
        .next()
        .map(|(_, v)| v);
    Ok(BuildDetail {
        pipeline: pipeline.to_string(),
        build,
        tasks,
        release,
    })
}

/// A page of a pipeline's builds, newest first: at most `limit` builds
/// numbered below `before` (when given). Three queries, whatever the size.
pub fn list_builds(
    conn: &mut DbConn,
    pipeline: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<BuildDetail>, EngineError> {
    let p = storage::find_pipeline(conn, pipeline)?.ok_or_else(|| {
        EngineError::NotFound(format!("There is no pipeline named `{pipeline}`."))
    })?;
    let builds = storage::list_builds(conn, p.id, before, limit)?;
    let ids: Vec<i64> = builds.iter().map(|b| b.id).collect();
    let mut tasks = storage::task_runs_of_builds(conn, &ids)?;
    let releases = storage::release_versions_of_builds(conn, &ids)?;
    Ok(builds
        .into_iter()
        .map(|build| {
            let own: Vec<TaskRunRow> = tasks
                .iter()
                .filter(|t| t.build_id == Some(build.id))
                .cloned()
                .collect();
            tasks.retain(|t| t.build_id != Some(build.id));
            let release = releases
                .iter()
                .find(|(id, _)| *id == build.id)
                .map(|(_, v)| v.clone());
            BuildDetail {
                pipeline: p.name.clone(),
                build,
                tasks: own,
                release,
            }
        })
        .collect())
}

/// One chunk of a build's log (`jobs::LogChunk`).
pub type BuildLogChunk = LogChunk;

/// A build's log after `after` (a `seq`; 0 for the start), for live tailing.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildLog {
    pub build: BuildRow,
    pub chunks: Vec<BuildLogChunk>,
    /// Whether the build ended (nothing more will be written once the
    /// chunks are read).
    pub finished: bool,
}

/// The chunks of a build's log with `seq > after`, at most `limit`.
pub fn build_log(
    conn: &mut DbConn,
    pipeline: &str,
    number: i64,
    after: i64,
    limit: i64,
) -> Result<BuildLog, EngineError> {
    let build = find_build(conn, pipeline, number)?;
    let tasks = storage::task_runs_of_build(conn, build.id)?;
    let rows: Vec<LogChunkRow> = storage::log_chunks_of_build_after(conn, build.id, after, limit)?;
    let chunks = log_chunks(&tasks, rows);
    Ok(BuildLog {
        finished: build.state.is_terminal(),
        build,
        chunks,
    })
}

// ---------------------------------------------------------------------------
// Running a build
// ---------------------------------------------------------------------------

/// What a build run needs from the engine: a job's context and the lock of
/// its pipeline's mirror.
#[derive(Clone)]
pub(crate) struct RunContext {
    pub job: JobContext,
    /// Serializes the mirror operations of one pipeline.
    pub mirror_lock: Arc<tokio::sync::Mutex<()>>,
    /// What a new release starts, inside the release's own transaction
    /// (the engine passes the deployments' `after: build` requests).
    pub on_release: OnRelease,
}

/// What a build's new release starts (pipeline name, release), called in
/// the transaction that stores the release.
pub(crate) type OnRelease = fn(&mut DbConn, &str, &ReleaseRow) -> Result<(), EngineError>;

impl std::ops::Deref for RunContext {
    type Target = JobContext;
    fn deref(&self) -> &JobContext {
        &self.job
    }
}

impl From<GitError> for Stop {
    fn from(e: GitError) -> Self {
        match e {
            GitError::Canceled => Stop::Canceled,
            GitError::Failed(m) => Stop::Fail(m),
        }
    }
}

/// What the run learned before its tasks.
struct Prepared {
    pipeline: String,
    definition: PipelineDefinition,
    branch: String,
    commit: CommitInfo,
    version: domain::Version,
    workspace: PathBuf,
    mirror: PathBuf,
}

/// What is left to do after a build ended: remove its workspace, tidy the mirror.
pub(crate) struct Cleanup {
    ctx: RunContext,
    workspace: Option<(PathBuf, PathBuf)>,
}

impl Cleanup {
    /// Removes the workspace (unless kept) and packs the mirror when due.
    pub(crate) async fn run(self) {
        if let Some((mirror, ws)) = self.workspace {
            // Under the mirror's lock, as every change of the mirror's
            // worktrees: a fetch that reads them while one is added or
            // removed fails ("failed to read .../worktrees/N/commondir").
            let _guard = self.ctx.mirror_lock.lock().await;
            if !self.ctx.keep_workspaces {
                git::remove_workspace(&mirror, &ws).await;
            }
            git::maintain(&mirror).await;
        }
    }
}

/// Runs a claimed build to its end. Never panics; every outcome is stored.
/// The returned cleanup can wait until the next build has started.
pub(crate) async fn run_build(
    ctx: RunContext,
    build: BuildRow,
    cancel: CancellationToken,
) -> Cleanup {
    let seq = Arc::new(AtomicI64::new(0));
    let mut workspace: Option<(PathBuf, PathBuf)> = None;
    let result = execute(&ctx, &build, &cancel, &seq, &mut workspace).await;
    let finished = match result {
        Ok(()) => Ok(()),
        Err(Stop::Fail(message)) => fail(&ctx.db, &build, message).await,
        Err(Stop::Canceled) if ctx.shutdown.is_cancelled() => {
            let b = build.clone();
            blocking(&ctx.db, move |conn| {
                interrupt(conn, &b, &stopped_reason(JobId::Build(b.id))).map(|_| ())
            })
            .await
        }
        // Canceled by a person: `cancel_build` recorded it already.
        Err(Stop::Canceled) => Ok(()),
    };
    if let Err(e) = finished {
        tracing::error!(build = build.id, error = %e, "cannot record the end of a build");
    }
    Cleanup { ctx, workspace }
}

async fn fail(db: &Db, build: &BuildRow, message: String) -> Result<(), EngineError> {
    let b = build.clone();
    blocking(db, move |conn| {
        let (event, tasks) = (BuildEvent::Fail, TaskRunState::Failed);
        end_running(conn, &b, event, tasks, "build.fail", &message).map(drop)
    })
    .await
}

async fn execute(
    ctx: &RunContext,
    build: &BuildRow,
    cancel: &CancellationToken,
    seq: &Arc<AtomicI64>,
    workspace_out: &mut Option<(PathBuf, PathBuf)>,
) -> Result<(), Stop> {
    let pipeline_id = build.pipeline_id;
    let (pipeline, definition) = blocking(&ctx.db, move |conn| {
        let p = storage::pipeline_by_id(conn, pipeline_id)?;
        let revision = storage::current_revision(conn, pipeline_id)?;
        let definition = pipelines::parse_stored(&revision.yaml, &p.name, revision.revision)?;
        Ok((p.name, definition))
    })
    .await?;

    // Builds run shell tasks only; say so before doing any work.
    for (i, spec) in definition.build.tasks.iter().enumerate() {
        if !matches!(spec.kind, TaskKind::Shell { .. }) {
            return Err(Stop::Fail(format!(
                "build task {} (`{}`) is a `{}` task; builds run `shell` tasks only",
                i + 1,
                task_label(spec),
                task_kind(spec)
            )));
        }
    }

    let branch = build
        .branch
        .clone()
        .unwrap_or_else(|| definition.source.branch.clone());
    let mirror = {
        let _guard = ctx.mirror_lock.lock().await;
        git::sync_mirror(&ctx.data_dir, &pipeline, &definition.source.repo, cancel).await?
    };
    let workspace = git::workspace_path(&ctx.data_dir, &pipeline, build.number);
    *workspace_out = Some((mirror.clone(), workspace.clone()));
    let (checkout_mirror, checkout_ws) = (mirror.clone(), workspace.clone());

    // Resolve the commit, render the version, record the commit and the
    // task list; meanwhile check the commit out — at once when the request
    // named a full commit id (a push), else as soon as the branch resolved.
    let known = build
        .commit_sha
        .as_deref()
        .filter(|sha| sha.len() == 40 || sha.len() == 64);
    let (prepared, (tasks, env, masker)) = match known {
        Some(sha) => {
            let prepare = async {
                let prepared = prepare(
                    build, pipeline, definition, branch, mirror, workspace, cancel,
                )
                .await?;
                let recorded = record_checkout(ctx, build, &prepared).await?;
                Ok::<_, Stop>((prepared, recorded))
            };
            let checkout = async {
                // Worktrees change under the mirror's lock (see `Cleanup`).
                let _guard = ctx.mirror_lock.lock().await;
                git::checkout(&checkout_mirror, &checkout_ws, sha, cancel).await
            };
            let (prepared, checked_out) = tokio::join!(prepare, checkout);
            let prepared = prepared?;
            checked_out?;
            prepared
        }
        None => {
            let prepared = prepare(
                build, pipeline, definition, branch, mirror, workspace, cancel,
            )
            .await?;
            let checkout = async {
                let _guard = ctx.mirror_lock.lock().await;
                git::checkout(
                    &prepared.mirror,
                    &prepared.workspace,
                    &prepared.commit.sha,
                    cancel,
                )
                .await
            };
            let (checked_out, recorded) =
                tokio::join!(checkout, record_checkout(ctx, build, &prepared));
            let recorded = recorded?;
            checked_out?;
            (prepared, recorded)
        }
    };

    for (spec, task) in prepared.definition.build.tasks.iter().zip(&tasks) {
        if cancel.is_cancelled() {
            return Err(Stop::Canceled);
        }
        let TaskKind::Shell { script } = &spec.kind else {
            continue;
        };
        let mut task_env = env.clone();
        for (name, value) in &spec.env {
            let value = resolve_value(ctx, pipeline_id, value)
                .await
                .map_err(|e| Stop::Fail(format!("task `{}`: env {name}: {e}", task.name)))?;
            task_env.insert(name.clone(), value);
        }
        let timeout = spec
            .timeout
            .map(|t| t.to_std())
            .unwrap_or(ctx.default_task_timeout);
        let outcome = run_task(ctx, task, script, task_env, timeout, seq, &masker, cancel).await?;
        Stop::after_task(&task.name, &outcome)?;
    }
    if cancel.is_cancelled() {
        return Err(Stop::Canceled);
    }

    let globs = prepared.definition.build.artifacts.clone();
    let ws = prepared.workspace.clone();
    let data_dir = ctx.data_dir.clone();
    let stored: Vec<StoredArtifact> = tokio::task::spawn_blocking(move || {
        artifacts::collect(&ws, &globs)?
            .iter()
            .map(|found| artifacts::store(&data_dir, found))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| Stop::Fail(format!("collecting artifacts stopped: {e}")))?
    .map_err(|e| Stop::Fail(format!("artifacts: {e}")))?;

    release(ctx, build, &prepared, stored).await
}

/// Resolves the commit in the mirror and renders the release's version.
async fn prepare(
    build: &BuildRow,
    pipeline: String,
    definition: PipelineDefinition,
    branch: String,
    mirror: PathBuf,
    workspace: PathBuf,
    cancel: &CancellationToken,
) -> Result<Prepared, Stop> {
    let revision = match build.commit_sha.as_deref() {
        Some(sha) => Revision::Commit(sha),
        None => Revision::Branch(&branch),
    };
    let commit = git::resolve(&mirror, revision, cancel).await?;
    // A named commit must be on the branch the build says it builds: the
    // branch decides which secrets the build and its release's deployments
    // get (`source.secrets_for`), so a commit of another branch (or a tag
    // pointing off the branch) must not borrow it.
    if build.commit_sha.is_some() && !git::is_on_branch(&mirror, &commit.sha, &branch, cancel).await
    {
        return Err(Stop::Fail(format!(
            "commit {} is not on branch `{branch}`; a build builds a commit of its own branch",
            &commit.sha[..commit.sha.len().min(12)]
        )));
    }
    let context = VersionContext {
        build: u64::try_from(build.number).unwrap_or_default(),
        date: chrono::Utc::now().date_naive(),
        branch: branch.clone(),
        sha: commit.sha.clone(),
        tag: commit.tags.first().cloned(),
    };
    let version = definition
        .version
        .render(&context)
        .map_err(|e| Stop::Fail(format!("cannot make the release's version: {e}")))?;
    Ok(Prepared {
        pipeline,
        definition,
        branch,
        commit,
        version,
        workspace,
        mirror,
    })
}

type Recorded = (Vec<TaskRunRow>, BTreeMap<String, String>, Masker);

/// Records the commit and the (pending) task runs, and prepares the
/// environment shared by the tasks (pipeline variables with secrets
/// substituted, `SLIPWAY_*`) and the masker of the pipeline's secrets.
async fn record_checkout(
    ctx: &RunContext,
    build: &BuildRow,
    prepared: &Prepared,
) -> Result<Recorded, Stop> {
    let b = build.clone();
    let key = ctx.secret_key.clone();
    let commit = storage::BuildCommit {
        branch: prepared.branch.clone(),
        commit_sha: prepared.commit.sha.clone(),
        message: prepared.commit.message.clone(),
        author: prepared.commit.author.clone(),
    };
    let pipeline = prepared.pipeline.clone();
    let version = prepared.version.to_string();
    let specs: Vec<(String, &'static str)> = prepared
        .definition
        .build
        .tasks
        .iter()
        .map(|t| (task_label(t), task_kind(t)))
        .collect();
    let variables = prepared.definition.variables.clone();
    let workspace = prepared.workspace.display().to_string();
    let withheld = domain::secrets_withheld(&prepared.definition, &prepared.branch);
    let (tasks, env, masker) = blocking(&ctx.db, move |conn| {
        if let Some(reason) = withheld {
            return Err(EngineError::Forbidden(reason));
        }
        if storage::find_release(conn, b.pipeline_id, &version)?.is_some() {
            return Err(EngineError::Conflict(version_taken(
                conn,
                b.pipeline_id,
                &pipeline,
                &version,
            )?));
        }
        let (mut env, masker) = resolve_variables(conn, &key, b.pipeline_id, &variables)?;
        env.insert("SLIPWAY_PIPELINE".into(), pipeline.clone());
        env.insert("SLIPWAY_BUILD_NUMBER".into(), b.number.to_string());
        env.insert("SLIPWAY_COMMIT".into(), commit.commit_sha.clone());
        env.insert("SLIPWAY_BRANCH".into(), commit.branch.clone());
        env.insert("SLIPWAY_VERSION".into(), version.clone());
        env.insert("SLIPWAY_WORKSPACE".into(), workspace);
        let tasks = storage::write_transaction(conn, |conn| {
            if !storage::set_build_commit(conn, b.id, &commit)? {
                return Ok::<_, EngineError>(None);
            }
            let mut tasks = Vec::new();
            for (i, (name, kind)) in specs.iter().enumerate() {
                tasks.push(storage::insert_task_run(
                    conn,
                    &storage::NewTaskRun {
                        build_id: Some(b.id),
                        deployment_id: None,
                        position: i32::try_from(i).unwrap_or(i32::MAX),
                        name: name.clone(),
                        kind: kind.to_string(),
                    },
                )?);
            }
            storage::append_audit(
                conn,
                ENGINE_ACTOR,
                "build.checkout",
                &subject(&pipeline, b.number),
                &format!(
                    "branch={} commit={} version={version}",
                    commit.branch, commit.commit_sha
                ),
            )?;
            Ok(Some(tasks))
        })?;
        Ok((tasks, env, masker))
    })
    .await?;
    match tasks {
        Some(tasks) => Ok((tasks, env, masker)),
        None => Err(Stop::Canceled),
    }
}

/// Why a version cannot be released again, naming the build that made it.
fn version_taken(
    conn: &mut DbConn,
    pipeline_id: i64,
    pipeline: &str,
    version: &str,
) -> Result<String, EngineError> {
    let by = match storage::find_release(conn, pipeline_id, version)?.and_then(|r| r.build_id) {
        Some(id) => {
            storage::find_build(conn, id)?.map(|b| format!(" (made by build #{})", b.number))
        }
        None => None,
    };
    Ok(format!(
        "version {version} exists already in {pipeline}{}; a version is released once, so this build makes no release (put {{build}} in the version template to give every build its own version)",
        by.unwrap_or_default()
    ))
}

#[expect(clippy::too_many_arguments)]
async fn run_task(
    ctx: &RunContext,
    task: &TaskRunRow,
    script: &str,
    env: BTreeMap<String, String>,
    timeout: std::time::Duration,
    seq: &Arc<AtomicI64>,
    masker: &Masker,
    cancel: &CancellationToken,
) -> Result<TaskOutcome, Stop> {
    let id = task.id;
    let started = blocking(&ctx.db, move |conn| Ok(storage::start_task_run(conn, id)?)).await?;
    if !started {
        return Err(Stop::Canceled);
    }
    let log = TaskLog::start(
        Arc::new(DbLogSink::new(ctx.db.clone(), task.id)),
        seq.clone(),
        masker.clone(),
    );
    let workdir = env
        .get("SLIPWAY_WORKSPACE")
        .map(PathBuf::from)
        .unwrap_or_default();
    let shell = ShellTask {
        script: script.to_string(),
        workdir,
        env,
        timeout,
        kill_grace: ctx.kill_grace,
    };
    let outcome = runner::run_shell(&shell, &log.sender(), cancel).await;
    finish_task(ctx, id, log, &outcome).await?;
    Ok(outcome)
}

/// The final transaction: the release with its artifacts, the current
/// definition revision and fix lineage, and `running → succeeded`.
async fn release(
    ctx: &RunContext,
    build: &BuildRow,
    prepared: &Prepared,
    stored: Vec<StoredArtifact>,
) -> Result<(), Stop> {
    let b = build.clone();
    let pipeline = prepared.pipeline.clone();
    let version = prepared.version.to_string();
    let commit = prepared.commit.clone();
    let branch = prepared.branch.clone();
    let on_release = ctx.on_release;
    let outcome = blocking(&ctx.db, move |conn| {
        let to = transition(BuildState::Running, BuildEvent::Succeed)?;
        let attempt = storage::write_transaction(conn, |conn| {
            let Some(current) = storage::find_build(conn, b.id)? else {
                return Ok(None);
            };
            if current.state != BuildState::Running {
                return Ok(None);
            }
            let revision = storage::current_revision(conn, b.pipeline_id)?;
            let newest = storage::list_releases(
                conn,
                b.pipeline_id,
                &storage::ReleaseFilter {
                    limit: 1,
                    ..storage::ReleaseFilter::default()
                },
            )?
            .into_iter()
            .next();
            let fixes = match &newest {
                Some(r) => {
                    let past: Vec<PastDeployment> = storage::deployments_of_release(conn, r.id)?
                        .into_iter()
                        .map(|d| PastDeployment {
                            stage: d.stage,
                            order: d.id,
                            state: d.state,
                        })
                        .collect();
                    domain::release_to_fix(Some((r.id, &past)))
                }
                None => None,
            };
            let artifacts: Vec<storage::NewArtifact> = stored
                .iter()
                .map(|a| storage::NewArtifact {
                    path: a.path.clone(),
                    sha256: a.sha256.clone(),
                    size: i64::try_from(a.size).unwrap_or(i64::MAX),
                })
                .collect();
            let release = storage::insert_release(
                conn,
                &storage::NewRelease {
                    pipeline_id: b.pipeline_id,
                    version: version.clone(),
                    build_id: Some(b.id),
                    revision_id: revision.id,
                    commit_sha: commit.sha.clone(),
                    branch: branch.clone(),
                    message: commit.message.clone(),
                    author: commit.author.clone(),
                    fixes_release_id: fixes,
                },
                &artifacts,
            )?;
            // Continuous deployment: the `after: build` stages are queued in
            // the release's own transaction (the engine wakes their dispatcher).
            on_release(conn, &pipeline, &release)?;
            if !storage::transition_build(conn, b.id, BuildState::Running, to, None)? {
                return Err(EngineError::Conflict(
                    "the build changed state meanwhile".into(),
                ));
            }
            storage::append_audit(
                conn,
                ENGINE_ACTOR,
                "build.succeed",
                &subject(&pipeline, b.number),
                &format!("release={version}"),
            )?;
            let fixes_detail = match (&newest, fixes) {
                (Some(r), Some(_)) => format!(" fixes={}", r.version),
                _ => String::new(),
            };
            storage::append_audit(
                conn,
                ENGINE_ACTOR,
                "release.create",
                &format!("release:{pipeline}@{version}"),
                &format!(
                    "build=#{} commit={} revision={} artifacts={}{fixes_detail}",
                    b.number,
                    commit.sha,
                    revision.revision,
                    artifacts.len()
                ),
            )?;
            Ok::<_, EngineError>(Some(release))
        });
        match attempt {
            Ok(Some(_)) => Ok(None),
            Ok(None) => Ok(Some(Stop::Canceled)),
            Err(EngineError::Storage(storage::StorageError::Conflict(_))) => Ok(Some(Stop::Fail(
                version_taken(conn, b.pipeline_id, &pipeline, &version)?,
            ))),
            Err(e) => Err(e),
        }
    })
    .await?;
    match outcome {
        None => Ok(()),
        Some(stop) => Err(stop),
    }
}
