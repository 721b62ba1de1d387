//! Running a deployment: the step a queued deployment takes (approvals,
//! gates, or a claim to run), then — once claimed — its release's artifacts
//! unpacked into a fresh working directory `<data-dir>/deployments/<id>/`
//! (paths kept: `dist/app.js`) and the stage's tasks run in order through
//! the shared runner:
//!
//! - `shell`: `sh -c SCRIPT` in the working directory;
//! - `http`: one request with the engine's pooled client; the answer's
//!   status must be the expected one (default 200);
//! - extension `{ task: NAME, with: {...} }`: the executable
//!   `slipway-task-NAME` found on the task's `PATH`, given a JSON document
//!   on stdin (see `docs/extending.md`); its output lines are log lines and
//!   its exit code the result;
//! - `deploy_slot`: the working directory goes into the slot
//!   (`engine::slots::Slots::deploy_to_slot`, `docs/slots.md`); `swap_slots`:
//!   the source slot, which must run this release, is swapped into the
//!   target (`Slots::swap_release`), so this deployment records it going
//!   live in the target's stage. Both log into the task's log.
//!
//! Task environment (later wins): the runner's passed-through variables,
//! the pipeline's and the stage's `variables`, the `SLIPWAY_*` variables,
//! the task's `env:`; `${{ secrets.NAME }}` is substituted in variables, in
//! `env:` values and in `http` URLs. Every secret value of the pipeline is
//! masked (`***`) in every log line and in the deployment's error.
//!
//! The deployment ends `succeeded` (or waits for approvals or gates after
//! the stage), `failed` with the reason, `canceled` (recorded by the person
//! canceling), or `interrupted` when Slipway stops meanwhile. Its success
//! requests the stages that follow it (`after: <stage>`) in the same
//! transaction.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::rules::{self, ReleaseRef};
use crate::domain::secrets::Masker;
use crate::domain::slot_ops;
use crate::domain::{
    DeploymentEvent, DeploymentState, PipelineDefinition, QueuePolicy, SlotOperation, Stage,
    TaskKind, TaskRunState, TaskSpec,
};
use crate::engine::builds::artifacts;
use crate::engine::deploy::requests;
use crate::engine::deploy::transitions::{self, subject, transition};
use crate::engine::jobs::env::{resolve_value, resolve_variables};
use crate::engine::jobs::runner::{
    self, DbLogSink, LogSender, ProgramTask, ShellTask, TaskLog, TaskOutcome,
};
use crate::engine::jobs::{
    JobContext, JobId, Stop, finish_task, stopped_reason, task_kind, task_label,
};
use crate::engine::{ENGINE_ACTOR, blocking};
use crate::engine::{EngineError, pipelines};
use crate::storage::{self, ArtifactRow, Db, DbConn, DeploymentRow, ReleaseRow, TaskRunRow};

/// What a deployment run needs from the engine: a job's context, the HTTP
/// client of `http` tasks and the slots of `deploy_slot`/`swap_slots`.
#[derive(Clone)]
pub(crate) struct DeployContext {
    pub job: JobContext,
    /// The pooled client of `http` tasks.
    pub http: reqwest::Client,
    /// Runs `deploy_slot` and `swap_slots` tasks.
    pub slots: crate::engine::slots::Slots,
}

impl std::ops::Deref for DeployContext {
    type Target = JobContext;
    fn deref(&self) -> &JobContext {
        &self.job
    }
}

/// What the dispatcher knows of a queued deployment.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub pipeline: String,
    pub release: ReleaseRow,
    /// The stage as the deployment runs it (from the release's revision).
    pub stage: Stage,
    /// The stage's queue, from the current definition.
    pub queue: QueuePolicy,
    /// The pipeline's variables (from the release's revision).
    pub variables: BTreeMap<String, String>,
    /// Why the deployment may not read secrets (the release was built from
    /// a branch outside the current `source.secrets_for`), if so.
    pub secrets_withheld: Option<String>,
    /// Its swap completes the app's pending swap with preview.
    pub confirms_preview: bool,
}

/// Definitions read during one pass of the dispatcher.
#[derive(Default)]
pub(crate) struct Plans {
    /// Pipeline id → (name, current definition).
    pipelines: HashMap<i64, (String, PipelineDefinition)>,
    /// Release id → (release, its revision's definition).
    releases: HashMap<i64, (ReleaseRow, Option<PipelineDefinition>)>,
}

impl Plans {
    /// The plan of a queued deployment. A stage that no longer exists is a
    /// `NotFound`.
    pub(crate) fn plan(
        &mut self,
        conn: &mut DbConn,
        d: &DeploymentRow,
    ) -> Result<Plan, EngineError> {
        if let std::collections::hash_map::Entry::Vacant(e) = self.pipelines.entry(d.pipeline_id) {
            let row = storage::pipeline_by_id(conn, d.pipeline_id)?;
            let loaded = pipelines::load(conn, &row.name)?;
            e.insert((loaded.name, loaded.definition));
        }
        let Some((pipeline, current)) = self.pipelines.get(&d.pipeline_id) else {
            return Err(EngineError::NotFound("the pipeline is gone".into()));
        };
        if let std::collections::hash_map::Entry::Vacant(e) = self.releases.entry(d.release_id) {
            let release = storage::find_release_by_id(conn, d.release_id)?.ok_or_else(|| {
                EngineError::NotFound(format!("deployment #{} has no release", d.id))
            })?;
            // A revision that no longer parses falls back to the current definition.
            let definition = transitions::built_with(conn, pipeline, &release)?;
            e.insert((release, definition));
        }
        let Some((release, release_def)) = self.releases.get(&d.release_id) else {
            return Err(EngineError::NotFound("the release is gone".into()));
        };
        let queue = current.stage(&d.stage).map(|s| s.queue).ok_or_else(|| {
            EngineError::NotFound(format!(
                "the stage `{}` is no longer in the pipeline",
                d.stage
            ))
        })?;
        let stage = transitions::stage_of(release_def.as_ref(), current, &d.stage)
            .ok_or_else(|| EngineError::NotFound(format!("no stage `{}`", d.stage)))?;
        // A swap or rollback of slots runs as the stage with the swap as its
        // one task; an override drops the stage's approvals and gates.
        let operation = SlotOperation::from_json(d.operation.as_deref());
        let stage = slot_ops::stage_as_run(&stage, operation.as_ref(), d.override_by.is_some())
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let variables = release_def.as_ref().unwrap_or(current).variables.clone();
        let secrets_withheld = (!current.source.secrets_allowed(&release.branch)).then(|| {
            format!(
                "release {} was built from `{}`, and secrets go only to releases of the branches in source.secrets_for",
                release.version, release.branch
            )
        });
        Ok(Plan {
            pipeline: pipeline.clone(),
            release: release.clone(),
            stage,
            queue,
            variables,
            secrets_withheld,
            confirms_preview: operation.is_some_and(|op| op.preview),
        })
    }
}

/// A deployment this instance claimed, with its (pending) task runs.
#[derive(Clone, Debug)]
pub(crate) struct Started {
    pub deployment: DeploymentRow,
    pub tasks: Vec<TaskRunRow>,
}

/// Takes the next step of a queued deployment: to its approvals or gates
/// (`None`: it waits there), or claims it to run (`Some`) when its stage has
/// room and no older deployment of the stage is queued (`None` otherwise).
pub(crate) fn advance(
    conn: &mut DbConn,
    d: &DeploymentRow,
    plan: &Plan,
    runner: &str,
) -> Result<Option<Started>, EngineError> {
    if matches!(
        d.state,
        DeploymentState::EvaluatingGates | DeploymentState::WaitingForApproval
    ) {
        // Its gates (`engine::deploy::gates`) or approval (`engine::deploy::approvals`)
        // before the stage passed: claim it.
        return claim(conn, d, plan, runner);
    }
    match rules::first_step(&plan.stage) {
        event @ (DeploymentEvent::RequestApproval | DeploymentEvent::StartGates) => {
            let what = if event == DeploymentEvent::RequestApproval {
                "approvals before the stage"
            } else {
                "gates before the stage"
            };
            transitions::apply(
                conn,
                d,
                DeploymentState::Queued,
                event,
                ENGINE_ACTOR,
                None,
                &format!(
                    "stage={} release={} waits for {what}",
                    d.stage, plan.release.version
                ),
            )?;
            Ok(None)
        }
        _ => claim(conn, d, plan, runner),
    }
}

/// `queued → running` (or `evaluating_gates → running` once its gates
/// passed) for this instance, with the task runs and the
/// `deployment.start` record, in one transaction with the pipeline locked.
fn claim(
    conn: &mut DbConn,
    d: &DeploymentRow,
    plan: &Plan,
    runner: &str,
) -> Result<Option<Started>, EngineError> {
    let from = d.state;
    let to = transition(from, DeploymentEvent::Start)?;
    storage::write_transaction(conn, |conn| {
        if !storage::deployments::lock_pipeline(conn, d.pipeline_id)? {
            return Ok(None);
        }
        let Some(current) = storage::find_deployment(conn, d.id)? else {
            return Ok(None);
        };
        if current.state != from {
            return Ok(None);
        }
        let parallel = i64::from(plan.queue.parallel.max(1));
        if storage::deployments::count_running_deployments(conn, d.pipeline_id, &d.stage)?
            >= parallel
            || storage::deployments::older_queued_exists(conn, d.pipeline_id, &d.stage, d.id)?
        {
            return Ok(None);
        }
        // A newer release succeeded in the stage meanwhile: this one would undo it.
        if let Some(there) =
            storage::deployments::current_deployment(conn, d.pipeline_id, &d.stage)?
            && let Some(there_release) = storage::find_release_by_id(conn, there.release_id)?
            && let Err(by) = rules::may_start(
                ReleaseRef {
                    id: plan.release.id,
                    version: &plan.release.version,
                },
                d.trigger == "rollback",
                Some(ReleaseRef {
                    id: there_release.id,
                    version: &there_release.version,
                }),
            )
        {
            transition(from, DeploymentEvent::Supersede)?;
            if storage::deployments::supersede_deployment(conn, d.id, from, by)? {
                storage::append_audit(
                    conn,
                    ENGINE_ACTOR,
                    "deployment.supersede",
                    &subject(&plan.pipeline, d.id),
                    &format!(
                        "stage={} release={} superseded_by={} (it succeeded in the stage meanwhile)",
                        d.stage, plan.release.version, there_release.version
                    ),
                )?;
            }
            return Ok(None);
        }
        if !storage::deployments::start_deployment(conn, d.id, runner)? {
            return Ok(None);
        }
        let mut tasks = Vec::new();
        for (i, spec) in plan.stage.tasks.iter().enumerate() {
            tasks.push(storage::insert_task_run(
                conn,
                &storage::NewTaskRun {
                    build_id: None,
                    deployment_id: Some(d.id),
                    position: i32::try_from(i).unwrap_or(i32::MAX),
                    name: task_label(spec),
                    kind: task_kind(spec).to_string(),
                },
            )?);
        }
        storage::append_audit(
            conn,
            ENGINE_ACTOR,
            "deployment.start",
            &subject(&plan.pipeline, d.id),
            &format!(
                "stage={} release={} runner={runner}",
                d.stage, plan.release.version
            ),
        )?;
        let Some(deployment) = storage::find_deployment(conn, d.id)? else {
            return Ok(None);
        };
        debug_assert_eq!(deployment.state, to);
        Ok(Some(Started { deployment, tasks }))
    })
}

/// The working directory of deployment `id`.
pub fn working_dir(data_dir: &Path, id: i64) -> PathBuf {
    data_dir.join("deployments").join(id.to_string())
}

/// Runs a claimed deployment to its end. Never panics; every outcome is stored.
pub(crate) async fn run_deployment(
    ctx: DeployContext,
    started: Started,
    plan: Plan,
    cancel: CancellationToken,
) {
    let d = started.deployment.clone();
    let workdir = working_dir(&ctx.data_dir, d.id);
    let mut masker = Masker::default();
    let result = execute(&ctx, &started, &plan, &workdir, &cancel, &mut masker).await;
    let finished = match result {
        Ok(()) => succeed(&ctx.db, &d, &plan).await,
        Err(Stop::Fail(message)) => fail(&ctx.db, &d, masker.mask(&message)).await,
        Err(Stop::Canceled) if ctx.shutdown.is_cancelled() => {
            let d = d.clone();
            blocking(&ctx.db, move |conn| {
                transitions::interrupt(conn, &d, &stopped_reason(JobId::Deployment(d.id)))
                    .map(|_| ())
            })
            .await
        }
        // Canceled by a person: `cancel_deployment` recorded it already.
        Err(Stop::Canceled) => Ok(()),
    };
    if let Err(e) = finished {
        tracing::error!(deployment = d.id, error = %e, "cannot record the end of a deployment");
    }
    if !ctx.keep_workspaces {
        let _ = tokio::fs::remove_dir_all(&workdir).await;
    }
}

/// The tasks succeeded: `succeeded` (with the `after: <stage>` deployments
/// requested in the same transaction), or on to approvals/gates after the stage.
async fn succeed(db: &Db, d: &DeploymentRow, plan: &Plan) -> Result<(), EngineError> {
    let d = d.clone();
    let plan = plan.clone();
    blocking(db, move |conn| {
        let (from, event) = (DeploymentState::Running, rules::after_tasks(&plan.stage));
        let to = transition(from, event)?;
        let detail = format!("stage={} release={}", d.stage, plan.release.version);
        storage::write_transaction(conn, |conn| {
            if !transitions::apply(conn, &d, from, event, ENGINE_ACTOR, None, &detail)? {
                // Canceled or interrupted meanwhile: that state stands.
                return Ok(());
            }
            if to == DeploymentState::Succeeded {
                let (pipeline, stage) = (&plan.pipeline, &plan.stage.name);
                requests::request_after_success(conn, pipeline, stage, &plan.release)?;
            }
            Ok(())
        })
    })
    .await
}

async fn fail(db: &Db, d: &DeploymentRow, message: String) -> Result<(), EngineError> {
    let d = d.clone();
    blocking(db, move |conn| {
        let (event, tasks) = (DeploymentEvent::Fail, TaskRunState::Failed);
        transitions::end_running(conn, &d, event, tasks, &message).map(drop)
    })
    .await
}

/// Everything a deployment's tasks share.
struct Shared {
    /// Pipeline and stage variables with secrets substituted.
    variables: BTreeMap<String, String>,
    /// `variables` plus `SLIPWAY_*`.
    env: BTreeMap<String, String>,
    artifacts: Vec<ArtifactRow>,
}

async fn execute(
    ctx: &DeployContext,
    started: &Started,
    plan: &Plan,
    workdir: &Path,
    cancel: &CancellationToken,
    masker_out: &mut Masker,
) -> Result<(), Stop> {
    let d = &started.deployment;
    let (shared, masker) = prepare(ctx, d, plan, workdir).await?;
    *masker_out = masker.clone();
    let data_dir = ctx.data_dir.clone();
    let dir = workdir.to_path_buf();
    let files = shared.artifacts.clone();
    tokio::task::spawn_blocking(move || unpack(&data_dir, &files, &dir))
        .await
        .map_err(|e| Stop::Fail(format!("unpacking the release stopped: {e}")))?
        .map_err(|e| Stop::Fail(format!("cannot unpack the release: {e}")))?;

    let seq = Arc::new(AtomicI64::new(0));
    for (spec, task) in plan.stage.tasks.iter().zip(&started.tasks) {
        if cancel.is_cancelled() {
            return Err(Stop::Canceled);
        }
        let mut env = shared.env.clone();
        let mut variables = shared.variables.clone();
        for (name, value) in &spec.env {
            let value = resolve_value(ctx, d.pipeline_id, value)
                .await
                .map_err(|e| Stop::Fail(format!("task `{}`: env {name}: {e}", task.name)))?;
            env.insert(name.clone(), value.clone());
            variables.insert(name.clone(), value);
        }
        let timeout = spec
            .timeout
            .map(|t| t.to_std())
            .unwrap_or(ctx.default_task_timeout);
        let run = TaskRun {
            ctx,
            plan,
            deployment: d,
            task,
            spec,
            env,
            variables,
            workdir,
            timeout,
        };
        let outcome = run.run(&seq, &masker, cancel).await?;
        Stop::after_task(&task.name, &outcome)?;
    }
    if cancel.is_cancelled() {
        return Err(Stop::Canceled);
    }
    Ok(())
}

/// The first place of a deployment's plan that references a secret: a
/// pipeline or stage variable, a task's `env`, or an http task's URL.
fn secret_use(plan: &Plan) -> Option<String> {
    let refs = |text: &str| !crate::domain::secrets::references(text).is_empty();
    if let Some(name) = plan
        .variables
        .iter()
        .chain(plan.stage.variables.iter())
        .find(|(_, v)| refs(v))
        .map(|(n, _)| n)
    {
        return Some(format!("variable {name}"));
    }
    plan.stage.tasks.iter().enumerate().find_map(|(i, task)| {
        let label = task
            .name
            .clone()
            .unwrap_or_else(|| format!("task {}", i + 1));
        if let Some((name, _)) = task.env.iter().find(|(_, v)| refs(v)) {
            return Some(format!("task `{label}` env {name}"));
        }
        match &task.kind {
            TaskKind::Http { url, .. } if refs(url) => Some(format!("task `{label}` url")),
            _ => None,
        }
    })
}

/// Resolves the secrets, the variables and the artifacts of a deployment.
async fn prepare(
    ctx: &DeployContext,
    d: &DeploymentRow,
    plan: &Plan,
    workdir: &Path,
) -> Result<(Shared, Masker), Stop> {
    let key = ctx.secret_key.clone();
    let pipeline_id = d.pipeline_id;
    let release = plan.release.clone();
    let mut variables = plan.variables.clone();
    variables.extend(plan.stage.variables.clone());
    let mut slipway = BTreeMap::new();
    slipway.insert("SLIPWAY_PIPELINE".to_string(), plan.pipeline.clone());
    slipway.insert("SLIPWAY_STAGE".to_string(), d.stage.clone());
    slipway.insert("SLIPWAY_RELEASE".to_string(), release.version.clone());
    slipway.insert("SLIPWAY_VERSION".to_string(), release.version.clone());
    slipway.insert("SLIPWAY_DEPLOYMENT_ID".to_string(), d.id.to_string());
    slipway.insert("SLIPWAY_ATTEMPT".to_string(), d.attempt.to_string());
    slipway.insert(
        "SLIPWAY_ARTIFACT_DIR".to_string(),
        workdir.display().to_string(),
    );
    slipway.insert("SLIPWAY_COMMIT".to_string(), release.commit_sha.clone());
    slipway.insert("SLIPWAY_BRANCH".to_string(), release.branch.clone());
    slipway.insert("SLIPWAY_TRIGGER".to_string(), d.trigger.clone());
    if let Some(why) = &plan.secrets_withheld
        && let Some(place) = secret_use(plan)
    {
        return Err(Stop::Fail(format!("{place} reads a secret, but {why}")));
    }
    let prepared = blocking(&ctx.db, move |conn| {
        let (resolved, masker) = resolve_variables(conn, &key, pipeline_id, &variables)?;
        let artifacts = storage::list_artifacts(conn, release.id)?;
        Ok((resolved, artifacts, masker))
    })
    .await?;
    let (variables, artifacts, masker) = prepared;
    let mut env = variables.clone();
    env.extend(slipway);
    Ok((
        Shared {
            variables,
            env,
            artifacts,
        },
        masker,
    ))
}

/// Copies the release's artifacts from the store into a fresh `workdir`,
/// keeping their relative paths. Files are writable by the owner; a file
/// that starts with `#!` is made executable (the store keeps contents, not
/// modes).
pub fn unpack(data_dir: &Path, files: &[ArtifactRow], workdir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if workdir.exists() {
        std::fs::remove_dir_all(workdir)
            .map_err(|e| format!("cannot clear {}: {e}", workdir.display()))?;
    }
    std::fs::create_dir_all(workdir)
        .map_err(|e| format!("cannot create {}: {e}", workdir.display()))?;
    for file in files {
        let relative = Path::new(&file.path);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(format!("artifact path `{}` is refused", file.path));
        }
        let source = artifacts::artifact_path(data_dir, &file.sha256)
            .ok_or_else(|| format!("artifact {} has a bad digest", file.path))?;
        let target = workdir.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::copy(&source, &target).map_err(|e| {
            format!(
                "cannot copy {} ({}) from the artifact store: {e}",
                file.path, file.sha256
            )
        })?;
        let mut head = [0u8; 2];
        let executable = std::fs::File::open(&target)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .is_ok()
            && &head == b"#!";
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", target.display()))?;
    }
    Ok(())
}

/// One task of a running deployment.
struct TaskRun<'a> {
    ctx: &'a DeployContext,
    plan: &'a Plan,
    deployment: &'a DeploymentRow,
    task: &'a TaskRunRow,
    spec: &'a TaskSpec,
    /// The process environment (variables, `SLIPWAY_*`, the task's `env:`).
    env: BTreeMap<String, String>,
    /// The variables an extension is given (pipeline, stage, the task's `env:`).
    variables: BTreeMap<String, String>,
    workdir: &'a Path,
    timeout: Duration,
}

impl TaskRun<'_> {
    async fn run(
        self,
        seq: &Arc<AtomicI64>,
        masker: &Masker,
        cancel: &CancellationToken,
    ) -> Result<TaskOutcome, Stop> {
        let ctx = self.ctx;
        let id = self.task.id;
        let started = blocking(&ctx.db, move |conn| Ok(storage::start_task_run(conn, id)?)).await?;
        if !started {
            return Err(Stop::Canceled);
        }
        let log = TaskLog::start(
            Arc::new(DbLogSink::new(ctx.db.clone(), id)),
            seq.clone(),
            masker.clone(),
        );
        let sender = log.sender();
        let outcome = match &self.spec.kind {
            TaskKind::Shell { script } => {
                let shell = ShellTask {
                    script: script.clone(),
                    workdir: self.workdir.to_path_buf(),
                    env: self.env.clone(),
                    timeout: self.timeout,
                    kill_grace: ctx.kill_grace,
                };
                runner::run_shell(&shell, &sender, cancel).await
            }
            TaskKind::Http {
                method,
                url,
                expect_status,
            } => match resolve_value(ctx, self.deployment.pipeline_id, url).await {
                Ok(url) => {
                    run_http(
                        &ctx.http,
                        method,
                        &url,
                        *expect_status,
                        self.timeout,
                        &sender,
                        cancel,
                    )
                    .await
                }
                Err(e) => failed(&sender, format!("cannot resolve the URL: {e}")).await,
            },
            TaskKind::Extension { name, with } => {
                self.run_extension(name, with, &sender, cancel).await
            }
            // Slot operations are not raced with cancellation: each ends
            // within its health-check time-out and leaves the slot whole.
            TaskKind::DeploySlot { app, slot } => {
                let request = crate::engine::slots::SlotDeploy {
                    app: app.as_str().to_string(),
                    slot: slot.as_str().to_string(),
                    release: self.plan.release.version.clone(),
                    artifacts_dir: Some(self.workdir.to_path_buf()),
                    health_timeout: self.spec.timeout.map(|t| t.to_std()),
                    actor: self.deployment.requested_by.clone(),
                };
                match ctx.slots.deploy_to_slot(request, Some(&sender)).await {
                    Ok(_) => TaskOutcome::Succeeded,
                    Err(e) => failed(&sender, e.to_string()).await,
                }
            }
            TaskKind::SwapSlots { app, from, to } => {
                let swapped = ctx
                    .slots
                    .swap_release(
                        (app.as_str(), from.as_str(), to.as_str()),
                        &self.plan.release.version,
                        self.plan.confirms_preview,
                        &self.deployment.requested_by,
                        Some(&sender),
                    )
                    .await;
                match swapped {
                    Ok(_) => TaskOutcome::Succeeded,
                    Err(e) => failed(&sender, e.to_string()).await,
                }
            }
        };
        drop(sender);
        finish_task(ctx, id, log, &outcome).await?;
        Ok(outcome)
    }

    /// Runs `slipway-task-NAME` from the task's `PATH` with the input document on stdin.
    async fn run_extension(
        &self,
        name: &str,
        with: &serde_json::Value,
        log: &LogSender,
        cancel: &CancellationToken,
    ) -> TaskOutcome {
        let program = format!("slipway-task-{name}");
        let path = runner::task_environment(&self.env)
            .get("PATH")
            .cloned()
            .unwrap_or_default();
        let Some(executable) = runner::find_on_path(&program, &path) else {
            return failed(
                log,
                format!("there is no executable `{program}` on the task's PATH ({path})"),
            )
            .await;
        };
        let input = extension_input(
            self.plan,
            self.deployment,
            &self.variables,
            self.workdir,
            with,
        );
        log.system(format!("running {}", executable.display()))
            .await;
        let task = ProgramTask {
            program: executable,
            args: Vec::new(),
            stdin: input.into_bytes(),
            workdir: self.workdir.to_path_buf(),
            env: self.env.clone(),
            timeout: self.timeout,
            kill_grace: self.ctx.kill_grace,
        };
        runner::run_program(&task, log, cancel).await
    }
}

/// The JSON document an extension task reads on stdin (`docs/extending.md`).
pub(crate) fn extension_input(
    plan: &Plan,
    d: &DeploymentRow,
    variables: &BTreeMap<String, String>,
    workdir: &Path,
    with: &serde_json::Value,
) -> String {
    serde_json::json!({
        "pipeline": plan.pipeline,
        "release": plan.release.version,
        "stage": d.stage,
        "deployment_id": d.id,
        "attempt": d.attempt,
        "commit": plan.release.commit_sha,
        "branch": plan.release.branch,
        "working_dir": workdir.display().to_string(),
        "variables": variables,
        "with": with,
    })
    .to_string()
}

async fn failed(log: &LogSender, reason: String) -> TaskOutcome {
    log.system(reason.clone()).await;
    TaskOutcome::Failed {
        exit_code: None,
        reason,
    }
}

/// One HTTP request; the answer's status must be `expect`.
async fn run_http(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    expect: u16,
    timeout: Duration,
    log: &LogSender,
    cancel: &CancellationToken,
) -> TaskOutcome {
    let method_name = method.trim().to_ascii_uppercase();
    let Ok(method) = reqwest::Method::from_bytes(method_name.as_bytes()) else {
        return failed(log, format!("`{method_name}` is not an HTTP method")).await;
    };
    log.system(format!("{method} {url}")).await;
    let request = client.request(method, url).timeout(timeout).send();
    let answer = tokio::select! {
        answer = request => answer,
        _ = cancel.cancelled() => return TaskOutcome::Canceled,
    };
    match answer {
        Ok(response) => {
            let status = response.status();
            log.system(format!("answered {status}")).await;
            if status.as_u16() == expect {
                TaskOutcome::Succeeded
            } else {
                TaskOutcome::Failed {
                    exit_code: None,
                    reason: format!("answered {status}, expected {expect}"),
                }
            }
        }
        Err(e) if e.is_timeout() => TaskOutcome::TimedOut { after: timeout },
        Err(e) => {
            let mut reason = format!("request failed: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                reason.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            failed(log, reason).await
        }
    }
}
