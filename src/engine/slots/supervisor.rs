//! One slot process, supervised: the app's `start` command run with
//! `sh -c` in the release's directory, in its own process group, with
//! `PORT` and the slot's settings in its environment.
//!
//! - **Restarts.** When it exits on its own it is started again after a
//!   pause that doubles from [`SupervisorConfig::backoff_initial`] up to
//!   [`SupervisorConfig::backoff_max`], and falls back to the first pause
//!   once a run lasted [`SupervisorConfig::stable_after`]. It keeps its port.
//! - **Stop.** `SIGTERM` to the group, `SIGKILL` after the kill grace (the
//!   task runner's process-group logic); whatever a run leaves in its
//!   group is killed when its leader exits.
//! - **Logs.** stdout and stderr, line by line, into a ring buffer (the
//!   last [`SupervisorConfig::log_lines`] lines, shown when a health check
//!   fails) and appended to `<data-dir>/slots/<app>/<slot>/process.log`
//!   (rotated to `process.log.1` past [`SupervisorConfig::max_log_bytes`]).
//! - **Health.** [`SlotProcess::wait_healthy`] polls `GET
//!   http://127.0.0.1:PORT{health}` every 100 ms until a 2xx, the time
//!   limit, or the process exits.
//! - **Leftovers.** Each run writes `run/<pgid>` in the slot's directory
//!   and carries a marker in its environment; [`kill_leftovers`] (called at
//!   start-up) kills the groups a killed Slipway left behind, checking the
//!   marker first so an unrelated process that reused the id is spared.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ports::{self, Owner, PortLease};
use super::router::Backend;
use crate::domain::SlotProcessState;
use crate::engine::jobs::runner::{self, signal_group};

/// The environment variable that marks Slipway's slot processes.
const MARKER_VAR: &str = "SLIPWAY_SLOT_PROCESS";
/// Longer lines are split.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Health probes are this far apart.
pub const HEALTH_POLL: Duration = Duration::from_millis(100);

/// How slot processes are run; the defaults suit a server.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Between `SIGTERM` and `SIGKILL` (default 5 s).
    pub kill_grace: Duration,
    /// The first pause before a crashed process is started again (default 500 ms).
    pub backoff_initial: Duration,
    /// The longest pause (default 30 s).
    pub backoff_max: Duration,
    /// A run this long resets the pause to the first one (default 30 s).
    pub stable_after: Duration,
    /// Lines kept in memory per process (default 500).
    pub log_lines: usize,
    /// `process.log` is rotated past this size (default 10 MiB).
    pub max_log_bytes: u64,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            kill_grace: runner::DEFAULT_KILL_GRACE,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(30),
            log_lines: 500,
            max_log_bytes: 10 * 1024 * 1024,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub app: String,
    pub slot: String,
    /// The release's version (for logs).
    pub release: String,
    /// The unpacked release; the command runs here.
    pub workdir: PathBuf,
    /// The app's `start` command, run as `sh -c COMMAND`.
    pub command: String,
    /// Settings and `SLIPWAY_*` variables (on top of the runner's
    /// pass-through variables); `PORT` is added.
    pub env: BTreeMap<String, String>,
    /// The port it must listen on (127.0.0.1).
    pub port: u16,
    /// `<data-dir>/slots/<app>/<slot>`: logs and pid files.
    pub slot_dir: PathBuf,
}

/// Where a supervised process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Being started.
    Starting,
    /// Its process runs.
    Running,
    /// It exited and waits to be started again.
    Restarting,
    /// Being stopped.
    Stopping,
    /// Stopped for good.
    Stopped,
}

impl ProcessState {
    /// `starting`, `running`, `restarting`, `stopping`, `stopped`: the
    /// text of the [`SlotProcessState`] it is recorded as.
    pub fn as_str(self) -> &'static str {
        SlotProcessState::from(self).as_str()
    }
}

impl From<ProcessState> for SlotProcessState {
    fn from(state: ProcessState) -> SlotProcessState {
        match state {
            ProcessState::Starting => SlotProcessState::Starting,
            ProcessState::Running => SlotProcessState::Running,
            ProcessState::Restarting => SlotProcessState::Restarting,
            ProcessState::Stopping => SlotProcessState::Stopping,
            ProcessState::Stopped => SlotProcessState::Stopped,
        }
    }
}

/// The last health probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Not probed yet.
    Unknown,
    /// It answered 2xx.
    Healthy,
    /// It did not (why).
    Unhealthy(String),
}

/// A snapshot of a process for pages and logs.
#[derive(Debug, Clone)]
pub struct ProcessStatus {
    pub state: ProcessState,
    pub pid: Option<u32>,
    /// How often it was started again after exiting.
    pub restarts: u32,
    /// When the current run started.
    pub started_at: Option<DateTime<Utc>>,
    /// How the last run ended (`exited with code 1`).
    pub last_exit: Option<String>,
    pub health: Health,
    pub health_at: Option<DateTime<Utc>>,
}

/// A supervised slot process (see the module docs).
#[derive(Debug)]
pub struct SlotProcess {
    spec: ProcessSpec,
    /// Its port, held while it lives.
    _lease: PortLease,
    backend: Arc<Backend>,
    status: Mutex<ProcessStatus>,
    logs: LogBuffer,
    stop: CancellationToken,
    /// How many runs have ended.
    exits: watch::Sender<u32>,
    task: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SlotProcess {
    /// Starts supervising `spec` on the current runtime; its port is held
    /// for it until it is dropped.
    pub fn start(spec: ProcessSpec, config: SupervisorConfig) -> Arc<SlotProcess> {
        let lease = PortLease::adopt(spec.port);
        SlotProcess::start_leased(spec, lease, config)
    }

    /// [`SlotProcess::start`] on a port leased already (`spec.port`).
    pub fn start_leased(
        spec: ProcessSpec,
        lease: PortLease,
        config: SupervisorConfig,
    ) -> Arc<SlotProcess> {
        let backend = Arc::new(Backend::new(
            spec.port,
            format!("{}/{} release {}", spec.app, spec.slot, spec.release),
        ));
        // Serving once its own socket listens (see `confirm_listener`).
        backend.set_serving(false);
        let logs = LogBuffer::new(
            config.log_lines,
            spec.slot_dir.join("process.log"),
            config.max_log_bytes,
            spec.release.clone(),
        );
        let process = Arc::new(SlotProcess {
            spec,
            _lease: lease,
            backend,
            status: Mutex::new(ProcessStatus {
                state: ProcessState::Starting,
                pid: None,
                restarts: 0,
                started_at: None,
                last_exit: None,
                health: Health::Unknown,
                health_at: None,
            }),
            logs,
            stop: CancellationToken::new(),
            exits: watch::Sender::new(0),
            task: Mutex::new(None),
        });
        let me = Arc::clone(&process);
        let handle = tokio::spawn(async move { me.supervise(config).await });
        *lock(&process.task) = Some(handle);
        process
    }

    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// Where the router sends its requests.
    pub fn backend(&self) -> Arc<Backend> {
        Arc::clone(&self.backend)
    }

    pub fn port(&self) -> u16 {
        self.spec.port
    }

    pub fn status(&self) -> ProcessStatus {
        lock(&self.status).clone()
    }

    /// The last lines of its output (and Slipway's own lines about it).
    pub fn log_tail(&self, lines: usize) -> Vec<String> {
        self.logs.tail(lines)
    }

    /// Adds one of Slipway's own lines to its log.
    pub fn note(&self, text: &str) {
        self.logs.push("slipway", text);
    }

    fn set_state(&self, state: ProcessState) {
        lock(&self.status).state = state;
    }

    /// Stops it for good (`SIGTERM`, then `SIGKILL` after the grace) and
    /// waits until it is gone.
    pub async fn stop(&self) {
        self.stop.cancel();
        let handle = lock(&self.task).take();
        if let Some(handle) = handle
            && let Err(e) = handle.await
        {
            tracing::warn!(error = %e, "a slot supervisor stopped abnormally");
        }
        self.set_state(ProcessState::Stopped);
    }

    /// Records a health verdict.
    pub fn set_health(&self, health: Health) {
        let mut status = lock(&self.status);
        status.health = health;
        status.health_at = Some(Utc::now());
    }

    /// One probe of `GET http://127.0.0.1:PORT{path}`: `Ok` on 2xx from
    /// this slot's own process, else why not. A 2xx from another program
    /// that took the port is unhealthy ([`ports::owner`]).
    pub async fn probe(&self, client: &reqwest::Client, path: &str, timeout: Duration) -> Health {
        let url = format!("http://127.0.0.1:{}{}", self.spec.port, path);
        let health = match client.get(&url).timeout(timeout).send().await {
            Ok(r) if r.status().is_success() => self.answered_by_us().await,
            Ok(r) => Health::Unhealthy(format!("{url} answered {}", r.status())),
            Err(e) => Health::Unhealthy(format!("{url}: {}", without_url(&e))),
        };
        self.set_health(health.clone());
        health
    }

    /// Whether the listener on the port is this slot's process (or one of
    /// its children): healthy if so, else unhealthy saying who answered.
    async fn answered_by_us(&self) -> Health {
        let port = self.spec.port;
        let Some(group) = self.status().pid.and_then(|p| i32::try_from(p).ok()) else {
            return Health::Unhealthy(format!(
                "port {port} answered, but this slot's process is not running: another program listens on it"
            ));
        };
        let owner = tokio::task::spawn_blocking(move || ports::owner(port, group)).await;
        match owner {
            Ok(Ok(Owner::Group)) => {
                // Confirmed: the router may use the port (if the run that
                // was checked is still the current one).
                if self.status().pid.and_then(|p| i32::try_from(p).ok()) == Some(group) {
                    self.backend.set_serving(true);
                }
                Health::Healthy
            }
            Ok(Ok(Owner::Other)) => Health::Unhealthy(format!(
                "port {port} is answered by another program, not by this slot's process (pid {group})"
            )),
            Ok(Ok(Owner::Nobody)) => {
                Health::Unhealthy(format!("nothing listens on port {port} any more"))
            }
            Ok(Err(e)) => Health::Unhealthy(format!("cannot tell who listens on port {port}: {e}")),
            Err(e) => Health::Unhealthy(format!("cannot tell who listens on port {port}: {e}")),
        }
    }

    /// Polls the health path every 100 ms until it answers 2xx. Fails when
    /// `timeout` passes, or at once when the process exits (or cannot
    /// start) before it answered; the error says why.
    pub async fn wait_healthy(
        &self,
        client: &reqwest::Client,
        path: &str,
        timeout: Duration,
    ) -> Result<(), String> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut exits = self.exits.subscribe();
        let exits_before = *exits.borrow_and_update();
        let url = format!("http://127.0.0.1:{}{}", self.spec.port, path);
        let mut last = String::from("no answer yet");
        let mut learned = false;
        loop {
            if self.stop.is_cancelled() {
                return Err("the process was stopped before it answered its health check".into());
            }
            let exited = *exits.borrow();
            if exited > exits_before || (exited > 0 && self.status().pid.is_none()) {
                let how = self
                    .status()
                    .last_exit
                    .unwrap_or_else(|| "exited".to_string());
                return Err(format!(
                    "the process {how} before it answered its health check ({url})"
                ));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let health = Health::Unhealthy(last.clone());
                self.set_health(health);
                return Err(format!(
                    "{url} did not answer 2xx within {} ({last})",
                    crate::domain::Duration::from_secs(timeout.as_secs().max(1))
                ));
            }
            match self
                .probe(client, path, remaining.min(Duration::from_secs(5)))
                .await
            {
                Health::Healthy => return Ok(()),
                // A probe the deadline cut short says less than an answer
                // the app gave before it ("answered 500"): keep that one.
                Health::Unhealthy(why) if !(learned && Instant::now() >= deadline) => {
                    last = why;
                    learned = true;
                }
                Health::Unhealthy(_) | Health::Unknown => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(HEALTH_POLL.min(deadline.saturating_duration_since(Instant::now()))) => {}
                _ = exits.changed() => {}
            }
        }
    }

    async fn supervise(self: Arc<Self>, config: SupervisorConfig) {
        let mut backoff = config.backoff_initial;
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            self.set_state(ProcessState::Starting);
            let started = Instant::now();
            let stopped = match self.spawn() {
                Err(e) => {
                    let why = format!(
                        "could not start `sh` in {}: {e}",
                        self.spec.workdir.display()
                    );
                    self.note(&why);
                    self.ended(why);
                    false
                }
                Ok(child) => self.run(child, &config).await,
            };
            if stopped || self.stop.is_cancelled() {
                break;
            }
            if started.elapsed() >= config.stable_after {
                backoff = config.backoff_initial;
            }
            self.set_state(ProcessState::Restarting);
            self.note(&format!("starting it again in {} ms", backoff.as_millis()));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.cancelled() => break,
            }
            backoff = (backoff * 2).min(config.backoff_max);
            lock(&self.status).restarts += 1;
        }
        self.set_state(ProcessState::Stopped);
    }

    /// Records how a run ended and wakes health waiters.
    fn ended(&self, how: String) {
        {
            let mut status = lock(&self.status);
            status.pid = None;
            status.last_exit = Some(how);
        }
        self.exits.send_modify(|n| *n += 1);
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let mut env = self.spec.env.clone();
        env.insert("PORT".into(), self.spec.port.to_string());
        env.insert(MARKER_VAR.into(), marker(&self.spec));
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&self.spec.command)
            .current_dir(&self.spec.workdir)
            .env_clear()
            .envs(runner::task_environment(&env))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command.spawn()
    }

    /// Runs one started process until it exits (`false`) or is stopped (`true`).
    async fn run(&self, mut child: Child, config: &SupervisorConfig) -> bool {
        let pid = child.id();
        let group = pid
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw);
        let pid_file = pid.map(|p| self.spec.slot_dir.join("run").join(p.to_string()));
        if let Some(file) = &pid_file {
            let written = std::fs::create_dir_all(self.spec.slot_dir.join("run"))
                .and_then(|()| std::fs::write(file, marker(&self.spec)));
            if let Err(e) = written {
                tracing::warn!(file = %file.display(), error = %e, "cannot write a slot's pid file");
            }
        }
        {
            let mut status = lock(&self.status);
            status.pid = pid;
            status.started_at = Some(Utc::now());
            status.state = ProcessState::Running;
        }
        self.note(&format!(
            "started `{}` (pid {}) on port {} in {}",
            self.spec.command,
            pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            self.spec.port,
            self.spec.workdir.display()
        ));
        let confirmer = group.map(|g| {
            tokio::spawn(confirm_listener(
                self.backend(),
                self.spec.port,
                g.as_raw_nonzero().get(),
            ))
        });
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(pump(out, "stdout", self.logs.clone())));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(pump(err, "stderr", self.logs.clone())));
        }
        let (stopped, how) = tokio::select! {
            status = child.wait() => (false, describe_exit(status)),
            _ = self.stop.cancelled() => {
                self.set_state(ProcessState::Stopping);
                signal_group(group, rustix::process::Signal::TERM);
                let how = match tokio::time::timeout(config.kill_grace, child.wait()).await {
                    Ok(status) => describe_exit(status),
                    Err(_) => {
                        signal_group(group, rustix::process::Signal::KILL);
                        let _ = child.wait().await;
                        format!("did not stop within {} s of SIGTERM and was killed", config.kill_grace.as_secs())
                    }
                };
                (true, how)
            }
        };
        // No request goes to the port until a new run's socket is confirmed.
        self.backend.set_serving(false);
        if let Some(confirmer) = confirmer {
            confirmer.abort();
        }
        // Whatever it left running in its group goes too.
        signal_group(group, rustix::process::Signal::KILL);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            for reader in readers {
                let _ = reader.await;
            }
        })
        .await;
        if let Some(file) = &pid_file {
            let _ = std::fs::remove_file(file);
        }
        if stopped {
            self.note(&format!("stopped: {how}"));
        } else {
            self.note(&format!("the process {how}"));
            tracing::warn!(
                app = %self.spec.app,
                slot = %self.spec.slot,
                release = %self.spec.release,
                "slot process {how}"
            );
        }
        self.ended(how);
        stopped
    }
}

/// Marks `backend` serving once a process of `group` listens on `port`
/// (looked for every 100 ms, every second after the first 10 s), so the
/// router never sends the slot's requests to another program that holds
/// the port. Aborted when the run ends.
async fn confirm_listener(backend: Arc<Backend>, port: u16, group: i32) {
    let started = Instant::now();
    loop {
        let owner = tokio::task::spawn_blocking(move || ports::owner(port, group)).await;
        if matches!(owner, Ok(Ok(Owner::Group))) {
            backend.set_serving(true);
            return;
        }
        let pause = if started.elapsed() < Duration::from_secs(10) {
            HEALTH_POLL
        } else {
            Duration::from_secs(1)
        };
        tokio::time::sleep(pause).await;
    }
}

/// The marker value of a process: `APP/SLOT/PORT`.
fn marker(spec: &ProcessSpec) -> String {
    format!("{}/{}/{}", spec.app, spec.slot, spec.port)
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => format!("ended with {status}"),
        },
        Err(e) => format!("was lost track of: {e}"),
    }
}

/// A reqwest error without the URL (the caller names it once).
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    if e.is_connect() {
        return "connection refused".into();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Kills the process groups that a previous Slipway left running in
/// `slot_dir` (recorded in `run/<pgid>`), if they still carry the marker.
pub fn kill_leftovers(slot_dir: &Path) {
    let run = slot_dir.join("run");
    let Ok(entries) = std::fs::read_dir(&run) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let pid: Option<i32> = entry.file_name().to_str().and_then(|n| n.parse().ok());
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(pid) = pid
            && !expected.is_empty()
        {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let wanted = format!("{MARKER_VAR}={expected}");
            let ours = environ
                .split(|b| *b == 0)
                .any(|var| var == wanted.as_bytes());
            if ours {
                tracing::warn!(pid, slot = %slot_dir.display(), "stopping a slot process left running by a previous Slipway");
                signal_group(
                    rustix::process::Pid::from_raw(pid),
                    rustix::process::Signal::KILL,
                );
            }
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// Reads `reader` line by line into the log.
async fn pump<R: AsyncRead + Unpin>(reader: R, stream: &'static str, log: LogBuffer) {
    let mut reader = BufReader::with_capacity(16 * 1024, reader);
    let mut line: Vec<u8> = Vec::new();
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            break;
        }
        let room = MAX_LINE_BYTES.saturating_sub(line.len()).max(1);
        let (take, newline) = match buf.iter().take(room).position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len().min(room), false),
        };
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if newline || line.len() >= MAX_LINE_BYTES {
            log.push_bytes(stream, &line);
            line.clear();
        }
    }
    if !line.is_empty() {
        log.push_bytes(stream, &line);
    }
}

/// The last lines in memory, and every line in `process.log`.
#[derive(Debug, Clone)]
struct LogBuffer {
    inner: Arc<LogInner>,
}

#[derive(Debug)]
struct LogInner {
    lines: Mutex<VecDeque<String>>,
    capacity: usize,
    file: Mutex<LogFile>,
    release: String,
}

#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max: u64,
    failed: bool,
}

impl LogBuffer {
    fn new(capacity: usize, path: PathBuf, max: u64, release: String) -> LogBuffer {
        LogBuffer {
            inner: Arc::new(LogInner {
                lines: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
                capacity: capacity.max(1),
                file: Mutex::new(LogFile {
                    path,
                    file: None,
                    size: 0,
                    max,
                    failed: false,
                }),
                release,
            }),
        }
    }

    fn push_bytes(&self, stream: &str, line: &[u8]) {
        let mut text = String::from_utf8_lossy(line).into_owned();
        if text.ends_with('\n') {
            text.pop();
        }
        if text.ends_with('\r') {
            text.pop();
        }
        self.push(stream, &text);
    }

    fn push(&self, stream: &str, text: &str) {
        let at = Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        {
            let mut lines = lock(&self.inner.lines);
            if lines.len() >= self.inner.capacity {
                lines.pop_front();
            }
            lines.push_back(format!("{at} {stream}: {text}"));
        }
        let mut file = lock(&self.inner.file);
        file.append(&format!("{at} [{}] {stream}: {text}\n", self.inner.release));
    }

    fn tail(&self, n: usize) -> Vec<String> {
        let lines = lock(&self.inner.lines);
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

impl LogFile {
    fn append(&mut self, line: &str) {
        if self.failed {
            return;
        }
        if self.file.is_some() && self.size + line.len() as u64 > self.max {
            self.file = None;
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
        }
        if self.file.is_none() {
            let opened = self
                .path
                .parent()
                .map(std::fs::create_dir_all)
                .transpose()
                .and_then(|_| {
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&self.path)
                });
            match opened {
                Ok(file) => {
                    self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(file);
                }
                Err(e) => {
                    self.failed = true;
                    tracing::warn!(file = %self.path.display(), error = %e, "cannot write a slot's log file; keeping its log in memory only");
                    return;
                }
            }
        }
        if let Some(file) = &mut self.file {
            match file.write_all(line.as_bytes()) {
                Ok(()) => self.size += line.len() as u64,
                Err(e) => {
                    self.file = None;
                    tracing::warn!(file = %self.path.display(), error = %e, "cannot append to a slot's log file");
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec(dir: &Path, command: &str) -> ProcessSpec {
        ProcessSpec {
            app: "web".into(),
            slot: "dev".into(),
            release: "1.0.1".into(),
            workdir: dir.to_path_buf(),
            command: command.into(),
            env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
            port: super::super::ports::lease(None).unwrap().port(),
            slot_dir: dir.join("slot"),
        }
    }

    fn quick() -> SupervisorConfig {
        SupervisorConfig {
            kill_grace: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            ..SupervisorConfig::default()
        }
    }

    async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_crashing_process_is_restarted_with_its_env_and_logs() {
        let dir = tempfile::tempdir().unwrap();
        let p = SlotProcess::start(
            spec(
                dir.path(),
                "echo \"$GREETING on $PORT\"; echo oops >&2; exit 3",
            ),
            quick(),
        );
        wait_for("two restarts", || p.status().restarts >= 2).await;
        let tail = p.log_tail(100).join("\n");
        assert!(
            tail.contains(&format!("stdout: hi on {}", p.port())),
            "{tail}"
        );
        assert!(tail.contains("stderr: oops"), "{tail}");
        assert!(tail.contains("exited with code 3"), "{tail}");
        p.stop().await;
        assert_eq!(p.status().state, ProcessState::Stopped);
        let file = std::fs::read_to_string(dir.path().join("slot/process.log")).unwrap();
        assert!(file.contains("[1.0.1] stdout: hi on"), "{file}");
    }

    #[tokio::test]
    async fn stop_terminates_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let p = SlotProcess::start(spec(dir.path(), "sleep 30 & sleep 30"), quick());
        wait_for("running", || p.status().pid.is_some()).await;
        let pid = p.status().pid.unwrap();
        assert!(dir.path().join(format!("slot/run/{pid}")).exists());
        let started = Instant::now();
        p.stop().await;
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        assert!(!dir.path().join(format!("slot/run/{pid}")).exists());
    }

    #[tokio::test]
    async fn health_fails_fast_when_the_process_exits() {
        let dir = tempfile::tempdir().unwrap();
        let p = SlotProcess::start(spec(dir.path(), "echo broken; exit 1"), quick());
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let started = Instant::now();
        let err = p
            .wait_healthy(&client, "/health", Duration::from_secs(20))
            .await
            .unwrap_err();
        assert!(err.contains("exited with code 1"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        p.stop().await;
    }

    /// Issue 13 (7): another program answering 2xx on the slot's port is
    /// not the slot: the health check never passes on its answer, and says
    /// who answered; the slot's own listener passes.
    #[tokio::test]
    async fn health_never_passes_on_another_programs_answer() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), "sleep 30");
        let foreign = tokio::net::TcpListener::bind(("127.0.0.1", s.port))
            .await
            .unwrap();
        s.port = foreign.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = foreign.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nforeign",
                    )
                    .await;
            }
        });
        let p = SlotProcess::start(s, quick());
        wait_for("running", || p.status().pid.is_some()).await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let err = p
            .wait_healthy(&client, "/health", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(err.contains("answered by another program"), "{err}");
        p.stop().await;

        assert!(!p.backend().serving(), "the router must not use the port");

        // Its own listener (a child of its shell, in its group) passes.
        let dir = tempfile::tempdir().unwrap();
        let p = SlotProcess::start(
            spec(
                dir.path(),
                "python3 -c 'import http.server,os; http.server.HTTPServer((\"127.0.0.1\", int(os.environ[\"PORT\"])), http.server.SimpleHTTPRequestHandler).serve_forever()'",
            ),
            quick(),
        );
        p.wait_healthy(&client, "/", Duration::from_secs(20))
            .await
            .unwrap();
        wait_for("the router to use it", || p.backend().serving()).await;
        p.stop().await;
        assert!(!p.backend().serving(), "a stopped process gets no request");
    }

    #[tokio::test]
    async fn leftovers_of_a_killed_slipway_are_killed() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let slot_dir = dir.path().join("slot");
        std::fs::create_dir_all(slot_dir.join("run")).unwrap();
        // As if Slipway died: its slot process is still there.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER_VAR, "web/dev/1")
            .process_group(0)
            .spawn()
            .unwrap();
        std::fs::write(slot_dir.join(format!("run/{}", child.id())), "web/dev/1").unwrap();
        // A pid file whose process is not ours is only removed.
        std::fs::write(slot_dir.join("run/1"), "web/dev/2").unwrap();
        let started = Instant::now();
        kill_leftovers(&slot_dir);
        let status = child.wait().unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!status.success());
        assert_eq!(std::fs::read_dir(slot_dir.join("run")).unwrap().count(), 0);
    }
}
