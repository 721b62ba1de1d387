//! Git through the `git` command line: a bare mirror per pipeline under
//! `<data-dir>/mirrors/<pipeline>.git`, refreshed before each build, and a
//! fresh workspace per build at the exact commit (a detached worktree of
//! the mirror under `<data-dir>/workspaces/<pipeline>/<number>`).
//!
//! Repositories are URLs (`https://…`, `ssh://…`, `file://…`) or local
//! paths. Every command runs without a terminal prompt, with a time limit,
//! and stops when the build is canceled; failures carry git's own message.
//! Arguments that come from users are never taken for options: refs are
//! spelled `refs/heads/NAME`, commits are validated hex, and repository
//! locations follow `--`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// How long a clone or fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// How long a local git command (log, worktree) may take.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `git ls-remote` (polling) may take.
const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of git's error output a message keeps.
const MAX_STDERR: usize = 2_000;

/// A git command that failed, with a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    /// The command failed; the message says what and why.
    #[error("{0}")]
    Failed(String),
    /// The build was canceled while git ran.
    #[error("canceled")]
    Canceled,
}

/// A commit as a build records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The full commit id (lower-case hex).
    pub sha: String,
    /// `Name <email>` of the author.
    pub author: String,
    /// The whole commit message.
    pub message: String,
    /// Tags pointing at the commit.
    pub tags: Vec<String>,
}

/// What to build: a branch's head, or a given commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision<'a> {
    /// The head of this branch.
    Branch(&'a str),
    /// This commit (validated hex, 4 to 64 characters).
    Commit(&'a str),
}

/// `<data-dir>/mirrors/<pipeline>.git`
pub fn mirror_path(data_dir: &Path, pipeline: &str) -> PathBuf {
    data_dir.join("mirrors").join(format!("{pipeline}.git"))
}

/// `<data-dir>/workspaces/<pipeline>/<number>`
pub fn workspace_path(data_dir: &Path, pipeline: &str, number: i64) -> PathBuf {
    data_dir
        .join("workspaces")
        .join(pipeline)
        .join(number.to_string())
}

/// Whether `text` looks like a commit id git can resolve: 4 to 64 hex digits.
pub fn is_commit_id(text: &str) -> bool {
    (4..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `name` is a branch name git accepts (`git check-ref-format
/// --branch`, without running it): no leading `-` or `/`, no `..`, `@{`,
/// `//`, control characters, spaces or any of `~^:?*[\`, no component
/// starting with `.` or ending in `.lock`, not ending in `/` or `.`.
pub fn is_branch_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('-')
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.ends_with('.')
        && name != "@"
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains("//")
        && !name
            .chars()
            .any(|c| c.is_control() || c == ' ' || "~^:?*[\\".contains(c))
        && name
            .split('/')
            .all(|part| !part.starts_with('.') && !part.ends_with(".lock"))
}

/// Brings the pipeline's mirror up to date with `repo`: clones it the first
/// time (into a temporary directory, then renamed, so a half-made mirror
/// never stays), fetches branches and tags with pruning afterwards. The
/// caller serializes calls for one pipeline.
pub async fn sync_mirror(
    data_dir: &Path,
    pipeline: &str,
    repo: &str,
    cancel: &CancellationToken,
) -> Result<PathBuf, GitError> {
    let mirror = mirror_path(data_dir, pipeline);
    if mirror.join("HEAD").is_file() {
        let git_dir = mirror.display().to_string();
        git(
            &[
                // Housekeeping runs after the build (`maintain`), not here.
                "-c",
                "gc.auto=0",
                "-c",
                "maintenance.auto=false",
                "-c",
                "advice.fetchShowForcedUpdates=false",
                "--git-dir",
                &git_dir,
                "fetch",
                "--no-auto-gc",
                "--no-auto-maintenance",
                "--no-show-forced-updates",
                "--prune",
                "--quiet",
                "--force",
                "--no-write-fetch-head",
                "--",
                repo,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ],
            FETCH_TIMEOUT,
            cancel,
        )
        .await
        .map_err(|e| reachability(e, repo))?;
        return Ok(mirror);
    }
    let parent = mirror
        .parent()
        .ok_or_else(|| GitError::Failed(format!("no parent for {}", mirror.display())))?;
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| GitError::Failed(format!("cannot create {}: {e}", parent.display())))?;
    let temp = parent.join(format!(".{pipeline}.git.{}", uuid::Uuid::new_v4().simple()));
    let temp_text = temp.display().to_string();
    let cloned = git(
        &["clone", "--mirror", "--quiet", "--", repo, &temp_text],
        FETCH_TIMEOUT,
        cancel,
    )
    .await;
    if let Err(e) = cloned {
        let _ = tokio::fs::remove_dir_all(&temp).await;
        return Err(reachability(e, repo));
    }
    // Keep to branches and tags, as fetches do.
    let _ = tokio::fs::remove_dir_all(&mirror).await;
    tokio::fs::rename(&temp, &mirror)
        .await
        .map_err(|e| GitError::Failed(format!("cannot move the new mirror in place: {e}")))?;
    Ok(mirror)
}

fn reachability(e: GitError, repo: &str) -> GitError {
    match e {
        GitError::Failed(m) => GitError::Failed(format!("cannot fetch {repo}: {m}")),
        other => other,
    }
}

/// The commit a revision names in the mirror, with its author, message and tags.
pub async fn resolve(
    mirror: &Path,
    revision: Revision<'_>,
    cancel: &CancellationToken,
) -> Result<CommitInfo, GitError> {
    let rev = match revision {
        Revision::Branch(branch) if is_branch_name(branch) => format!("refs/heads/{branch}"),
        Revision::Branch(branch) => {
            return Err(GitError::Failed(format!(
                "`{branch}` is not a valid branch name"
            )));
        }
        Revision::Commit(sha) if is_commit_id(sha) => format!("{}^{{commit}}", sha),
        Revision::Commit(sha) => {
            return Err(GitError::Failed(format!(
                "`{sha}` is not a commit id (4 to 64 hexadecimal digits)"
            )));
        }
    };
    let git_dir = mirror.display().to_string();
    let out = git(
        &[
            "--git-dir",
            &git_dir,
            "log",
            "-1",
            "--no-color",
            "--decorate-refs=refs/tags/",
            "--format=%H%x00%an <%ae>%x00%D%x00%B",
            &rev,
            "--",
        ],
        LOCAL_TIMEOUT,
        cancel,
    )
    .await
    .map_err(|e| match (e, revision) {
        (GitError::Failed(_), Revision::Branch(b)) => {
            GitError::Failed(format!("branch `{b}` does not exist in the repository"))
        }
        (GitError::Failed(_), Revision::Commit(c)) => {
            GitError::Failed(format!("commit `{c}` does not exist in the repository"))
        }
        (other, _) => other,
    })?;
    parse_log(&out).ok_or_else(|| GitError::Failed(format!("unexpected output of git log: {out}")))
}

/// Whether commit `sha` is on `branch` in the mirror (the branch's head or
/// one of its ancestors). Anything git cannot answer is `false`.
pub async fn is_on_branch(
    mirror: &Path,
    sha: &str,
    branch: &str,
    cancel: &CancellationToken,
) -> bool {
    if !is_commit_id(sha) || !is_branch_name(branch) {
        return false;
    }
    let git_dir = mirror.display().to_string();
    let head = format!("refs/heads/{branch}");
    git(
        &[
            "--git-dir",
            &git_dir,
            "merge-base",
            "--is-ancestor",
            sha,
            &head,
        ],
        LOCAL_TIMEOUT,
        cancel,
    )
    .await
    .is_ok()
}

fn parse_log(out: &str) -> Option<CommitInfo> {
    let mut parts = out.splitn(4, '\0');
    let sha = parts.next()?.trim().to_ascii_lowercase();
    let author = parts.next()?.to_string();
    let decorations = parts.next()?;
    let message = parts.next().unwrap_or("").trim_end().to_string();
    if !is_commit_id(&sha) {
        return None;
    }
    let tags = decorations
        .split(", ")
        .filter_map(|d| d.trim().strip_prefix("tag: "))
        .map(str::to_string)
        .collect();
    Some(CommitInfo {
        sha,
        author,
        message,
        tags,
    })
}

/// Checks out `sha` into a fresh `workspace` (a detached worktree of the
/// mirror); whatever was at that path before is removed first.
pub async fn checkout(
    mirror: &Path,
    workspace: &Path,
    sha: &str,
    cancel: &CancellationToken,
) -> Result<(), GitError> {
    if !is_commit_id(sha) {
        return Err(GitError::Failed(format!("`{sha}` is not a commit id")));
    }
    if tokio::fs::symlink_metadata(workspace).await.is_ok() {
        tokio::fs::remove_dir_all(workspace)
            .await
            .map_err(|e| GitError::Failed(format!("cannot clear {}: {e}", workspace.display())))?;
    }
    if let Some(parent) = workspace.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| GitError::Failed(format!("cannot create {}: {e}", parent.display())))?;
    }
    let git_dir = mirror.display().to_string();
    let ws = workspace.display().to_string();
    git(
        &[
            "--git-dir",
            &git_dir,
            "worktree",
            "add",
            "--force",
            "--detach",
            "--quiet",
            "--",
            &ws,
            sha,
        ],
        LOCAL_TIMEOUT,
        cancel,
    )
    .await
    .map(|_| ())
    .map_err(|e| match e {
        GitError::Failed(m) => GitError::Failed(format!("cannot check out {sha}: {m}")),
        other => other,
    })
}

/// Removes a workspace and its worktree entry in the mirror. Best effort:
/// a workspace that cannot be removed is logged, not an error.
pub async fn remove_workspace(mirror: &Path, workspace: &Path) {
    let git_dir = mirror.display().to_string();
    let ws = workspace.display().to_string();
    let never = CancellationToken::new();
    if let Err(e) = git(
        &[
            "--git-dir",
            &git_dir,
            "worktree",
            "remove",
            "--force",
            "--force",
            "--",
            &ws,
        ],
        LOCAL_TIMEOUT,
        &never,
    )
    .await
    {
        tracing::debug!(workspace = %workspace.display(), error = %e, "git worktree remove failed");
    }
    if tokio::fs::symlink_metadata(workspace).await.is_ok()
        && let Err(e) = tokio::fs::remove_dir_all(workspace).await
    {
        tracing::warn!(workspace = %workspace.display(), error = %e, "cannot remove a build workspace");
    }
}

/// Packs the mirror's loose objects when git thinks it is time (`git gc
/// --auto`), off the path of a build's start. Best effort.
pub async fn maintain(mirror: &Path) {
    let git_dir = mirror.display().to_string();
    let never = CancellationToken::new();
    if let Err(e) = git(
        &["--git-dir", &git_dir, "gc", "--auto", "--quiet"],
        FETCH_TIMEOUT,
        &never,
    )
    .await
    {
        tracing::warn!(mirror = %mirror.display(), error = %e, "git gc of a mirror failed");
    }
}

/// The head commit of `branch` in `repo` (`git ls-remote`), or `None` when
/// the branch does not exist there.
pub async fn remote_head(
    repo: &str,
    branch: &str,
    cancel: &CancellationToken,
) -> Result<Option<String>, GitError> {
    if !is_branch_name(branch) {
        return Err(GitError::Failed(format!(
            "`{branch}` is not a valid branch name"
        )));
    }
    let reference = format!("refs/heads/{branch}");
    let out = git(
        &["ls-remote", "--quiet", "--", repo, &reference],
        LS_REMOTE_TIMEOUT,
        cancel,
    )
    .await
    .map_err(|e| reachability(e, repo))?;
    Ok(out.lines().find_map(|line| {
        let (sha, name) = line.split_once('\t')?;
        (name.trim() == reference && is_commit_id(sha.trim())).then(|| sha.trim().to_string())
    }))
}

/// Runs `git ARGS`, returning its standard output. Fails with git's
/// standard error when it exits non-zero, and stops it (killing it) on
/// time-out or cancellation.
async fn git(
    args: &[&str],
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<String, GitError> {
    let mut command = Command::new("git");
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("SSH_ASKPASS", "true")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| GitError::Failed(format!("cannot run `git` (is git installed?): {e}")))?;
    let output = tokio::select! {
        out = child.wait_with_output() => out.map_err(|e| GitError::Failed(format!("git failed: {e}")))?,
        _ = tokio::time::sleep(timeout) => {
            return Err(GitError::Failed(format!(
                "git {} did not finish within {}s",
                args.iter().find(|a| !a.starts_with('-') && !a.contains('/')).unwrap_or(&""),
                timeout.as_secs()
            )));
        }
        _ = cancel.cancelled() => return Err(GitError::Canceled),
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut message: String = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if message.is_empty() {
            message = format!("git exited with {}", output.status);
        }
        if message.len() > MAX_STDERR {
            let mut cut = MAX_STDERR;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        Err(GitError::Failed(message))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn branch_names() {
        for ok in ["main", "feature/x", "release/1.2", "a-b_c", "v1", "user@x"] {
            assert!(is_branch_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            "--upload-pack=evil",
            "/a",
            "a/",
            "a..b",
            "a b",
            "a~1",
            "a^",
            "a:b",
            "a?",
            "a*",
            "a[",
            "a\\b",
            ".hidden",
            "x/.y",
            "a.lock",
            "a.",
            "@",
            "a@{1}",
            "a//b",
            "a\nb",
        ] {
            assert!(!is_branch_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn commit_ids() {
        assert!(is_commit_id("abcd"));
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(is_commit_id(&"0".repeat(64)));
        assert!(!is_commit_id("abc"));
        assert!(!is_commit_id(&"a".repeat(65)));
        assert!(!is_commit_id("--all"));
        assert!(!is_commit_id("HEAD"));
    }

    #[test]
    fn log_output_is_parsed() {
        let out = "0A35FAE6AF725C6AC759151D53683C5B0D5507CB\0T <t@x>\0tag: v1.1, tag: v1.0\0first line\n\nbody\n\n";
        let info = parse_log(out).unwrap();
        assert_eq!(info.sha, "0a35fae6af725c6ac759151d53683c5b0d5507cb");
        assert_eq!(info.author, "T <t@x>");
        assert_eq!(info.tags, vec!["v1.1", "v1.0"]);
        assert_eq!(info.message, "first line\n\nbody");
        let untagged = parse_log(&format!("{}\0A <a@b>\0\0msg\n", "b".repeat(40))).unwrap();
        assert!(untagged.tags.is_empty());
        assert!(parse_log("garbage").is_none());
    }

    #[test]
    fn paths() {
        let data = Path::new("/srv/slipway");
        assert_eq!(
            mirror_path(data, "shop"),
            PathBuf::from("/srv/slipway/mirrors/shop.git")
        );
        assert_eq!(
            workspace_path(data, "shop", 7),
            PathBuf::from("/srv/slipway/workspaces/shop/7")
        );
    }
}
