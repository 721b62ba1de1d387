//! Real git repositories in temporary directories, for build tests.

use std::path::Path;
use std::process::Command;

/// A non-bare repository on branch `main`, removed on drop.
pub struct TempRepo {
    dir: tempfile::TempDir,
}

/// A repository whose first commit (on `main`) holds `files`. Files ending
/// in `.sh` are executable.
pub fn git_repo(files: &[(&str, &str)]) -> TempRepo {
    let repo = TempRepo {
        dir: tempfile::tempdir().expect("tempdir"),
    };
    repo.git(&["init", "--quiet", "--initial-branch=main"]);
    repo.commit(files, "initial commit");
    repo
}

impl TempRepo {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The repository as a `file://` URL.
    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Runs git in the repository and returns its trimmed output.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args([
                "-c",
                "user.name=Mara Test",
                "-c",
                "user.email=mara@example.com",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Writes `files` and commits them on the current branch; returns the commit id.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let target = self.path().join(path);
            std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
            std::fs::write(&target, content).expect("write");
            if path.ends_with(".sh") {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
            }
        }
        self.git(&["add", "--all"]);
        self.git(&["commit", "--quiet", "--allow-empty", "--message", message]);
        self.head()
    }

    /// Commits `files` on `branch` (created from the current commit when
    /// new), then returns to `main`; returns the commit id.
    pub fn commit_on(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        self.git(&["checkout", "--quiet", "-B", branch]);
        let sha = self.commit(files, message);
        self.git(&["checkout", "--quiet", "main"]);
        sha
    }

    /// The commit id of `HEAD`.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    /// Tags `HEAD`.
    pub fn tag(&self, name: &str) {
        self.git(&["tag", name]);
    }
}
