//! The task runner, shared by builds and deployments: runs a `shell` task
//! (`sh -c SCRIPT`, [`run_shell`]) or a program with input on its stdin
//! (extension tasks, [`run_program`]) in a working directory with a chosen
//! environment, a time limit and cancellation, and streams its output into
//! a [`TaskLog`].
//!
//! - The process gets its own process group; on time-out or cancellation
//!   the whole group gets `SIGTERM`, then `SIGKILL` after a grace period.
//!   When the shell exits, whatever it left running in its group is
//!   killed, so no build step outlives its task.
//! - The environment is not inherited: only [`PASSED_THROUGH`] variables
//!   of the server's environment (`PATH`, `HOME`, locale, proxies) reach
//!   the task, so `SLIPWAY_SECRET_KEY`, database URLs and the like never do.
//! - Output is read line by line (lines longer than 16 KiB are split),
//!   masked (secret values become `***`), batched into chunks of one
//!   stream and handed to a [`LogSink`] at least every 200 ms and at the
//!   end. A task's log is capped at 16 MiB.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::TaskRunState;
use crate::domain::secrets::Masker;
use crate::engine::EngineError;
use crate::storage::{self, Db};

/// How long a task may run when it sets no `timeout`.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a task has to exit after `SIGTERM` before it gets `SIGKILL`.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// Output is stored at least this often while a task runs.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// A chunk is stored once it holds this many bytes.
const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// Longer lines are split.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// Output beyond this is dropped (with a note).
const MAX_LOG_BYTES: usize = 16 * 1024 * 1024;
/// How long to wait for the output pipes to close after the process is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The variables of the server's environment that a task inherits.
pub const PASSED_THROUGH: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
];

/// Which stream a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The task's standard output.
    Stdout,
    /// The task's standard error.
    Stderr,
    /// Slipway's own lines (the command, why it stopped).
    System,
}

impl Stream {
    /// The stored form: `stdout`, `stderr`, `system`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }
}

/// A batch of whole lines of one stream, numbered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    /// Increasing over the whole build (or deployment), from 1.
    pub seq: i64,
    pub stream: Stream,
    /// Masked lines, each ending in `\n`.
    pub text: String,
}

/// Where chunks of a task's output are kept. `store` blocks (it writes to
/// the database); the log writer calls it on the blocking pool.
pub trait LogSink: Send + Sync + 'static {
    /// Stores one chunk.
    fn store(&self, chunk: LogChunk) -> Result<(), EngineError>;
}

/// Stores chunks as `log_chunks` rows of one task run.
#[derive(Debug, Clone)]
pub struct DbLogSink {
    db: Db,
    task_run_id: i64,
}

impl DbLogSink {
    pub fn new(db: Db, task_run_id: i64) -> DbLogSink {
        DbLogSink { db, task_run_id }
    }
}

impl LogSink for DbLogSink {
    fn store(&self, chunk: LogChunk) -> Result<(), EngineError> {
        let mut conn = self.db.get()?;
        storage::append_log_chunk(
            &mut conn,
            &storage::NewLogChunk {
                task_run_id: self.task_run_id,
                seq: chunk.seq,
                stream: chunk.stream.as_str().to_string(),
                text: chunk.text,
            },
        )?;
        Ok(())
    }
}

#[derive(Debug)]
struct LogLine {
    stream: Stream,
    text: String,
}

/// A cheap handle that sends lines to a [`TaskLog`].
#[derive(Debug, Clone)]
pub struct LogSender {
    tx: mpsc::Sender<LogLine>,
}

impl LogSender {
    /// Sends one line (without its newline).
    pub async fn line(&self, stream: Stream, text: impl Into<String>) {
        // A closed log (its writer gave up) drops the line.
        let _ = self
            .tx
            .send(LogLine {
                stream,
                text: text.into(),
            })
            .await;
    }

    /// Sends one of Slipway's own lines.
    pub async fn system(&self, text: impl Into<String>) {
        self.line(Stream::System, text).await;
    }
}

/// The log of one task: a writer task that masks, batches and stores lines.
#[derive(Debug)]
pub struct TaskLog {
    sender: LogSender,
    writer: JoinHandle<()>,
}

impl TaskLog {
    /// Starts a log writer. `seq` numbers chunks across the tasks of one
    /// build (share it between their logs); `masker` hides secret values.
    pub fn start(sink: Arc<dyn LogSink>, seq: Arc<AtomicI64>, masker: Masker) -> TaskLog {
        let (tx, rx) = mpsc::channel(1024);
        let writer = tokio::spawn(write_log(rx, sink, seq, masker));
        TaskLog {
            sender: LogSender { tx },
            writer,
        }
    }

    /// A handle to send lines with.
    pub fn sender(&self) -> LogSender {
        self.sender.clone()
    }

    /// Sends one of Slipway's own lines.
    pub async fn system(&self, text: impl Into<String>) {
        self.sender.system(text).await;
    }

    /// Stores what is left and stops the writer (once every sender is gone).
    pub async fn finish(self) {
        drop(self.sender);
        if let Err(e) = self.writer.await {
            tracing::warn!(error = %e, "the log writer stopped abnormally");
        }
    }
}

async fn write_log(
    mut rx: mpsc::Receiver<LogLine>,
    sink: Arc<dyn LogSink>,
    seq: Arc<AtomicI64>,
    masker: Masker,
) {
    let mut ticker = tokio::time::interval(FLUSH_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<(Stream, String)> = None;
    let mut written = 0usize;
    let mut truncated = false;
    loop {
        tokio::select! {
            line = rx.recv() => {
                let Some(line) = line else { break };
                if written >= MAX_LOG_BYTES {
                    if !truncated {
                        truncated = true;
                        flush(&sink, &seq, &mut pending).await;
                        pending = Some((
                            Stream::System,
                            format!("… output truncated: a task's log is kept up to {} MiB\n", MAX_LOG_BYTES / (1024 * 1024)),
                        ));
                        flush(&sink, &seq, &mut pending).await;
                    }
                    continue;
                }
                if pending.as_ref().is_some_and(|(s, _)| *s != line.stream) {
                    flush(&sink, &seq, &mut pending).await;
                }
                let text = masker.mask(&line.text);
                written += text.len() + 1;
                let (_, buf) = pending.get_or_insert_with(|| (line.stream, String::new()));
                buf.push_str(&text);
                buf.push('\n');
                if buf.len() >= MAX_CHUNK_BYTES {
                    flush(&sink, &seq, &mut pending).await;
                }
            }
            _ = ticker.tick() => flush(&sink, &seq, &mut pending).await,
        }
    }
    flush(&sink, &seq, &mut pending).await;
}

async fn flush(
    sink: &Arc<dyn LogSink>,
    seq: &Arc<AtomicI64>,
    pending: &mut Option<(Stream, String)>,
) {
    let Some((stream, text)) = pending.take() else {
        return;
    };
    let chunk = LogChunk {
        seq: seq.fetch_add(1, Ordering::SeqCst) + 1,
        stream,
        text,
    };
    let sink = Arc::clone(sink);
    match tokio::task::spawn_blocking(move || sink.store(chunk)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot store a log chunk"),
        Err(e) => tracing::warn!(error = %e, "cannot store a log chunk"),
    }
}

/// A shell task to run.
#[derive(Clone, Debug)]
pub struct ShellTask {
    /// The script, run as `sh -c SCRIPT`.
    pub script: String,
    /// Its working directory.
    pub workdir: PathBuf,
    /// Variables on top of [`PASSED_THROUGH`] (`SLIPWAY_*`, pipeline
    /// variables, the task's `env:`), later ones winning.
    pub env: BTreeMap<String, String>,
    /// The time limit.
    pub timeout: Duration,
    /// How long the process group has between `SIGTERM` and `SIGKILL`.
    pub kill_grace: Duration,
}

/// How a task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Exit code 0.
    Succeeded,
    /// Another exit code, a signal, or it could not start.
    Failed {
        /// The exit code, when it exited (not killed, not started).
        exit_code: Option<i32>,
        /// For people: `exited with code 1`, `was killed by signal 9`, …
        reason: String,
    },
    /// It ran longer than its time limit and was stopped.
    TimedOut {
        /// The limit.
        after: Duration,
    },
    /// Its cancellation token fired and it was stopped.
    Canceled,
}

impl TaskOutcome {
    /// The task run's state for this outcome.
    pub fn state(&self) -> TaskRunState {
        match self {
            TaskOutcome::Succeeded => TaskRunState::Succeeded,
            TaskOutcome::Failed { .. } | TaskOutcome::TimedOut { .. } => TaskRunState::Failed,
            TaskOutcome::Canceled => TaskRunState::Canceled,
        }
    }

    /// The exit code to record.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            TaskOutcome::Succeeded => Some(0),
            TaskOutcome::Failed { exit_code, .. } => *exit_code,
            TaskOutcome::TimedOut { .. } | TaskOutcome::Canceled => None,
        }
    }

    /// For people: `succeeded`, `exited with code 1`, `timed out after 1s`, `was canceled`.
    pub fn describe(&self) -> String {
        match self {
            TaskOutcome::Succeeded => "succeeded".into(),
            TaskOutcome::Failed { reason, .. } => reason.clone(),
            TaskOutcome::TimedOut { after } => format!(
                "timed out after {}",
                crate::domain::Duration::from_secs(after.as_secs().max(1))
            ),
            TaskOutcome::Canceled => "was canceled".into(),
        }
    }
}

/// The environment a task starts with: the [`PASSED_THROUGH`] variables of
/// this process, then `extra`.
pub fn task_environment(extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = PASSED_THROUGH
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), v)))
        .collect();
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/bin:/usr/bin:/bin".into());
    env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// A program to run as a task (extension tasks): like a [`ShellTask`], but
/// an executable with arguments, given `stdin` on its standard input.
#[derive(Clone, Debug)]
pub struct ProgramTask {
    /// The executable (a path; see [`find_on_path`]).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Written to its standard input, which is then closed.
    pub stdin: Vec<u8>,
    /// Its working directory.
    pub workdir: PathBuf,
    /// Variables on top of [`PASSED_THROUGH`], later ones winning.
    pub env: BTreeMap<String, String>,
    /// The time limit.
    pub timeout: Duration,
    /// How long the process group has between `SIGTERM` and `SIGKILL`.
    pub kill_grace: Duration,
}

/// The first executable file called `name` in the directories of `path`
/// (a `PATH` value).
pub fn find_on_path(name: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Runs a shell task to its end, sending its output to `log`.
pub async fn run_shell(
    task: &ShellTask,
    log: &LogSender,
    cancel: &CancellationToken,
) -> TaskOutcome {
    let mut command = Command::new("sh");
    command.arg("-c").arg(&task.script);
    let limits = Limits {
        label: "`sh`",
        workdir: &task.workdir,
        env: &task.env,
        timeout: task.timeout,
        kill_grace: task.kill_grace,
    };
    run_command(command, None, &limits, log, cancel).await
}

/// Runs a program task to its end, sending its output to `log`.
pub async fn run_program(
    task: &ProgramTask,
    log: &LogSender,
    cancel: &CancellationToken,
) -> TaskOutcome {
    let mut command = Command::new(&task.program);
    command.args(&task.args);
    let label = format!("`{}`", task.program.display());
    let limits = Limits {
        label: &label,
        workdir: &task.workdir,
        env: &task.env,
        timeout: task.timeout,
        kill_grace: task.kill_grace,
    };
    run_command(command, Some(task.stdin.clone()), &limits, log, cancel).await
}

/// Where and how long a task's process runs.
struct Limits<'a> {
    /// For messages: `` `sh` ``.
    label: &'a str,
    workdir: &'a std::path::Path,
    env: &'a BTreeMap<String, String>,
    timeout: Duration,
    kill_grace: Duration,
}

async fn run_command(
    mut command: Command,
    stdin: Option<Vec<u8>>,
    limits: &Limits<'_>,
    log: &LogSender,
    cancel: &CancellationToken,
) -> TaskOutcome {
    command
        .current_dir(limits.workdir)
        .env_clear()
        .envs(task_environment(limits.env))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let reason = format!(
                "could not start {} in {}: {e}",
                limits.label,
                limits.workdir.display()
            );
            log.system(reason.clone()).await;
            return TaskOutcome::Failed {
                exit_code: None,
                reason,
            };
        }
    };
    if let (Some(mut input), Some(bytes)) = (child.stdin.take(), stdin) {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            // A program that does not read its input closes the pipe early: fine.
            let _ = input.write_all(&bytes).await;
            let _ = input.shutdown().await;
        });
    }
    let group = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .and_then(rustix::process::Pid::from_raw);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(out, Stream::Stdout, log.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(err, Stream::Stderr, log.clone())));
    }

    enum End {
        Exited(std::io::Result<std::process::ExitStatus>),
        TimedOut,
        Canceled,
    }
    let end = tokio::select! {
        status = child.wait() => End::Exited(status),
        _ = tokio::time::sleep(limits.timeout) => End::TimedOut,
        _ = cancel.cancelled() => End::Canceled,
    };
    let stopped = match end {
        End::Exited(status) => Err(status),
        End::TimedOut => Ok(TaskOutcome::TimedOut {
            after: limits.timeout,
        }),
        End::Canceled => Ok(TaskOutcome::Canceled),
    };
    if stopped.is_ok() {
        signal_group(group, rustix::process::Signal::TERM);
        if tokio::time::timeout(limits.kill_grace, child.wait())
            .await
            .is_err()
        {
            signal_group(group, rustix::process::Signal::KILL);
            let _ = child.wait().await;
        }
    }
    // Whatever the shell left running in its group goes too.
    signal_group(group, rustix::process::Signal::KILL);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        for reader in readers {
            let _ = reader.await;
        }
    })
    .await;
    if drained.is_err() {
        log.system("(output still open after the task ended; stopped reading it)")
            .await;
    }
    match stopped {
        Ok(outcome) => outcome,
        Err(Ok(status)) => exit_outcome(status),
        Err(Err(e)) => TaskOutcome::Failed {
            exit_code: None,
            reason: format!("lost track of the process: {e}"),
        },
    }
}

fn exit_outcome(status: std::process::ExitStatus) -> TaskOutcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => TaskOutcome::Succeeded,
        (Some(code), _) => TaskOutcome::Failed {
            exit_code: Some(code),
            reason: format!("exited with code {code}"),
        },
        (None, Some(signal)) => TaskOutcome::Failed {
            exit_code: None,
            reason: format!("was killed by signal {signal}"),
        },
        (None, None) => TaskOutcome::Failed {
            exit_code: None,
            reason: format!("ended with {status}"),
        },
    }
}

/// Sends `signal` to a whole process group (nothing when `group` is `None`).
pub(crate) fn signal_group(group: Option<rustix::process::Pid>, signal: rustix::process::Signal) {
    if let Some(pid) = group {
        // ESRCH (nothing left in the group) is the usual, good case.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Reads `reader` line by line into the log.
async fn pump<R: AsyncRead + Unpin>(reader: R, stream: Stream, log: LogSender) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
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
            send_line(&log, stream, &mut line).await;
        }
    }
    if !line.is_empty() {
        send_line(&log, stream, &mut line).await;
    }
}

async fn send_line(log: &LogSender, stream: Stream, line: &mut Vec<u8>) {
    let mut text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    if text.ends_with('\n') {
        text.pop();
    }
    if text.ends_with('\r') {
        text.pop();
    }
    log.line(stream, text).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use super::*;

    #[derive(Default)]
    struct MemorySink {
        chunks: Mutex<Vec<LogChunk>>,
    }

    impl LogSink for MemorySink {
        fn store(&self, chunk: LogChunk) -> Result<(), EngineError> {
            self.chunks.lock().unwrap().push(chunk);
            Ok(())
        }
    }

    impl MemorySink {
        fn text(&self) -> String {
            self.chunks
                .lock()
                .unwrap()
                .iter()
                .map(|c| c.text.clone())
                .collect()
        }
    }

    fn task(script: &str, timeout: Duration) -> ShellTask {
        ShellTask {
            script: script.into(),
            workdir: std::env::temp_dir(),
            env: BTreeMap::from([("GREETING".to_string(), "hello".to_string())]),
            timeout,
            kill_grace: Duration::from_secs(2),
        }
    }

    async fn run(
        script: &str,
        timeout: Duration,
        masker: Masker,
    ) -> (TaskOutcome, Arc<MemorySink>) {
        let sink = Arc::new(MemorySink::default());
        let log = TaskLog::start(sink.clone(), Arc::new(AtomicI64::new(0)), masker);
        let outcome = run_shell(
            &task(script, timeout),
            &log.sender(),
            &CancellationToken::new(),
        )
        .await;
        log.finish().await;
        (outcome, sink)
    }

    #[tokio::test]
    async fn output_env_and_exit_codes() {
        let (outcome, sink) = run(
            "echo \"$GREETING world\"; echo oops >&2; test -z \"$SLIPWAY_SECRET_KEY\"",
            Duration::from_secs(10),
            Masker::default(),
        )
        .await;
        assert_eq!(outcome, TaskOutcome::Succeeded);
        assert_eq!(sink.text(), "hello world\noops\n");
        let chunks = sink.chunks.lock().unwrap().clone();
        assert_eq!(chunks[0].stream, Stream::Stdout);
        assert_eq!(chunks[1].stream, Stream::Stderr);
        assert!(chunks.windows(2).all(|w| w[0].seq < w[1].seq));

        let (outcome, _) = run("exit 3", Duration::from_secs(10), Masker::default()).await;
        assert_eq!(outcome.exit_code(), Some(3));
        assert_eq!(outcome.describe(), "exited with code 3");
        assert_eq!(outcome.state(), TaskRunState::Failed);
    }

    #[tokio::test]
    async fn secrets_are_masked() {
        let (_, sink) = run(
            "echo token=s3cr3t-value; printf 'no newline s3cr3t-value'",
            Duration::from_secs(10),
            Masker::new(["s3cr3t-value"]),
        )
        .await;
        assert_eq!(sink.text(), "token=***\nno newline ***\n");
    }

    #[tokio::test]
    async fn a_time_out_kills_the_whole_group() {
        let marker = std::env::temp_dir().join(format!("slipway-runner-{}", uuid::Uuid::new_v4()));
        let script = format!(
            "(sleep 30; touch {m}) & sleep 30; touch {m}",
            m = marker.display()
        );
        let started = Instant::now();
        let (outcome, _) = run(&script, Duration::from_millis(300), Masker::default()).await;
        assert_eq!(
            outcome,
            TaskOutcome::TimedOut {
                after: Duration::from_millis(300)
            }
        );
        assert!(outcome.describe().starts_with("timed out after"));
        assert!(started.elapsed() < Duration::from_secs(5));
        // No process of the group is left to run `touch`.
        let out = std::process::Command::new("pgrep")
            .args(["-f", &marker.display().to_string()])
            .output();
        if let Ok(out) = out {
            assert!(out.stdout.is_empty(), "left over: {:?}", out);
        }
    }

    #[tokio::test]
    async fn background_processes_do_not_outlive_the_task() {
        let started = Instant::now();
        let (outcome, sink) = run(
            "sleep 30 & echo started",
            Duration::from_secs(20),
            Masker::default(),
        )
        .await;
        assert_eq!(outcome, TaskOutcome::Succeeded);
        assert_eq!(sink.text(), "started\n");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn cancellation_stops_the_task() {
        let sink = Arc::new(MemorySink::default());
        let log = TaskLog::start(sink.clone(), Arc::new(AtomicI64::new(0)), Masker::default());
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            trigger.cancel();
        });
        let started = Instant::now();
        let outcome = run_shell(
            &task("echo begin; sleep 30", Duration::from_secs(60)),
            &log.sender(),
            &cancel,
        )
        .await;
        log.finish().await;
        assert_eq!(outcome, TaskOutcome::Canceled);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(sink.text(), "begin\n");
    }

    #[tokio::test]
    async fn long_lines_are_split_and_chunks_batched() {
        let (outcome, sink) = run(
            "head -c 40000 /dev/zero | tr '\\0' 'x'; echo; seq 1 2000",
            Duration::from_secs(10),
            Masker::default(),
        )
        .await;
        assert_eq!(outcome, TaskOutcome::Succeeded);
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(lines[1].len(), MAX_LINE_BYTES);
        assert_eq!(lines[2].len(), 40000 - 2 * MAX_LINE_BYTES);
        assert_eq!(lines.last(), Some(&"2000"));
        // 2,003 lines, far fewer chunks.
        assert!(sink.chunks.lock().unwrap().len() < 20);
    }

    #[tokio::test]
    async fn a_missing_workdir_fails_to_start() {
        let sink = Arc::new(MemorySink::default());
        let log = TaskLog::start(sink.clone(), Arc::new(AtomicI64::new(0)), Masker::default());
        let mut t = task("true", Duration::from_secs(5));
        t.workdir = PathBuf::from("/nonexistent/slipway");
        let outcome = run_shell(&t, &log.sender(), &CancellationToken::new()).await;
        log.finish().await;
        assert!(matches!(
            outcome,
            TaskOutcome::Failed {
                exit_code: None,
                ..
            }
        ));
        assert!(sink.text().contains("could not start"));
    }
}
