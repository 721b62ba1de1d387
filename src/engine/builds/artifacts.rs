//! Artifacts: files a build produced, found by the `build.artifacts` globs
//! and kept content-addressed under `<data-dir>/artifacts/sha256/<ab>/<digest>`.
//!
//! - Globs are relative to the workspace (`dist/**`, `bin/*`): `*` and `?`
//!   stay within one path segment, `**` matches across `/`. Each glob must
//!   match at least one file.
//! - Only regular files inside the workspace are taken. The walk never
//!   follows symbolic links; a matching symbolic link (or device, fifo…)
//!   fails the build, and a glob cannot name anything outside the
//!   workspace (absolute globs and `..` are refused). `.git` is skipped.
//! - A file is stored once per digest: it is hashed first, and only a new
//!   digest is copied (to a temporary file, synced, then renamed into
//!   place, read-only), so the store never holds a partial file.
//! - [`artifact_path`] is the only way from a digest to a path: anything but
//!   64 lower-case hex digits is refused, so no path can escape the store.
//!
//! Everything here blocks; the engine calls it on the blocking pool.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use glob::{MatchOptions, Pattern};
use sha2::{Digest, Sha256};

/// At most this many files per build.
pub const MAX_ARTIFACTS: usize = 10_000;

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// Why artifacts could not be collected or stored.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// A glob or a matched file is not acceptable (the message says why).
    #[error("{0}")]
    Refused(String),
    /// Reading or writing a file failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ArtifactError {
    let context = context.into();
    move |source| ArtifactError::Io { context, source }
}

/// A file of the workspace that a glob matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundArtifact {
    /// Relative to the workspace, `/`-separated (`dist/app.js`).
    pub path: String,
    /// Where it is on disk.
    pub file: PathBuf,
}

/// A file in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// Relative to the workspace (`dist/app.js`).
    pub path: String,
    /// Lower-case hex sha256 of the content.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// `<data-dir>/artifacts/sha256`
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("artifacts").join("sha256")
}

/// Whether `digest` is a sha256 as the store names files: 64 lower-case hex digits.
pub fn is_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where the store keeps the content with this digest
/// (`<data-dir>/artifacts/sha256/<first two digits>/<digest>`), or `None`
/// when `digest` is not 64 lower-case hex digits. The file exists when a
/// release lists the digest.
pub fn artifact_path(data_dir: &Path, sha256: &str) -> Option<PathBuf> {
    is_digest(sha256).then(|| store_dir(data_dir).join(&sha256[..2]).join(sha256))
}

/// Parses and checks the globs of `build.artifacts`.
fn patterns(globs: &[String]) -> Result<Vec<(String, Pattern)>, ArtifactError> {
    globs
        .iter()
        .map(|glob| {
            let refused = |why: &str| {
                ArtifactError::Refused(format!("artifact pattern `{glob}` is refused: {why}"))
            };
            if glob.trim().is_empty() {
                return Err(refused("it is empty"));
            }
            let path = Path::new(glob);
            if path.is_absolute() || glob.starts_with('/') {
                return Err(refused("it must be relative to the workspace"));
            }
            if path.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(refused("`..` would leave the workspace"));
            }
            let pattern =
                Pattern::new(glob.trim_start_matches("./")).map_err(|e| refused(&e.to_string()))?;
            Ok((glob.clone(), pattern))
        })
        .collect()
}

/// Finds the files of `workspace` that the globs match, sorted by path.
pub fn collect(workspace: &Path, globs: &[String]) -> Result<Vec<FoundArtifact>, ArtifactError> {
    let patterns = patterns(globs)?;
    let mut matched = vec![false; patterns.len()];
    let mut found = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(workspace.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries =
            fs::read_dir(&dir).map_err(io_error(format!("cannot list {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_error(format!("cannot list {}", dir.display())))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                // A name that is not UTF-8 cannot match a glob.
                continue;
            };
            if prefix.is_empty() && name == ".git" {
                continue;
            }
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            // `file_type` does not follow symbolic links.
            let file_type = entry
                .file_type()
                .map_err(io_error(format!("cannot inspect {relative}")))?;
            let mut hit = false;
            for (i, (_, pattern)) in patterns.iter().enumerate() {
                if pattern.matches_with(&relative, MATCH) {
                    hit = true;
                    if file_type.is_file() {
                        matched[i] = true;
                    }
                }
            }
            if file_type.is_dir() {
                stack.push((entry.path(), relative));
            } else if hit && file_type.is_symlink() {
                return Err(ArtifactError::Refused(format!(
                    "artifact `{relative}` is a symbolic link; artifacts must be regular files in the workspace"
                )));
            } else if hit && !file_type.is_file() {
                return Err(ArtifactError::Refused(format!(
                    "artifact `{relative}` is not a regular file"
                )));
            } else if hit {
                if found.len() >= MAX_ARTIFACTS {
                    return Err(ArtifactError::Refused(format!(
                        "the artifact patterns match more than {MAX_ARTIFACTS} files"
                    )));
                }
                found.push(FoundArtifact {
                    path: relative,
                    file: entry.path(),
                });
            }
        }
    }
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(ArtifactError::Refused(format!(
            "artifact pattern `{}` matched no file in the workspace",
            patterns[i].0
        )));
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Stores one found file and returns its digest and size. A digest already
/// in the store is not written again.
pub fn store(data_dir: &Path, artifact: &FoundArtifact) -> Result<StoredArtifact, ArtifactError> {
    let (sha256, size) = hash_file(&artifact.file, None)?;
    let target = artifact_path(data_dir, &sha256)
        .ok_or_else(|| ArtifactError::Refused(format!("bad digest {sha256}")))?;
    if !target.is_file() {
        let tmp_dir = data_dir.join("artifacts").join("tmp");
        fs::create_dir_all(&tmp_dir)
            .map_err(io_error(format!("cannot create {}", tmp_dir.display())))?;
        let tmp = tmp_dir.join(uuid::Uuid::new_v4().simple().to_string());
        let copied = copy_verified(&artifact.file, &tmp, &sha256).and_then(|()| {
            let dir = target
                .parent()
                .ok_or_else(|| ArtifactError::Refused("the store has no directory".into()))?;
            fs::create_dir_all(dir)
                .map_err(io_error(format!("cannot create {}", dir.display())))?;
            fs::rename(&tmp, &target).map_err(io_error(format!(
                "cannot move {} into the store",
                artifact.path
            )))
        });
        if copied.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        copied?;
    }
    Ok(StoredArtifact {
        path: artifact.path.clone(),
        sha256,
        size,
    })
}

/// sha256 and size of a file, copying it to `copy` on the way when given.
fn hash_file(path: &Path, mut copy: Option<&mut File>) -> Result<(String, u64), ArtifactError> {
    let mut file = File::open(path).map_err(io_error(format!("cannot read {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_error(format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if let Some(out) = copy.as_mut() {
            out.write_all(&buf[..n])
                .map_err(io_error("cannot write to the artifact store"))?;
        }
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// Copies `from` to a new file `to`, checks it still has digest `sha256`,
/// syncs it and makes it read-only.
fn copy_verified(from: &Path, to: &Path, sha256: &str) -> Result<(), ArtifactError> {
    let mut out =
        File::create_new(to).map_err(io_error(format!("cannot create {}", to.display())))?;
    let (digest, _) = hash_file(from, Some(&mut out))?;
    if digest != sha256 {
        return Err(ArtifactError::Refused(format!(
            "{} changed while it was being stored",
            from.display()
        )));
    }
    out.sync_all()
        .map_err(io_error(format!("cannot sync {}", to.display())))?;
    let mut permissions = out
        .metadata()
        .map_err(io_error(format!("cannot inspect {}", to.display())))?
        .permissions();
    permissions.set_readonly(true);
    fs::set_permissions(to, permissions)
        .map_err(io_error(format!("cannot protect {}", to.display())))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        dir
    }

    fn paths(found: &[FoundArtifact]) -> Vec<&str> {
        found.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn globs_match_relative_paths() {
        let ws = workspace(&[
            ("dist/app.js", "a"),
            ("dist/css/site.css", "b"),
            ("dist/.hidden", "c"),
            ("bin/tool", "d"),
            ("bin/sub/other", "e"),
            ("src/main.rs", "f"),
            (".git/config", "g"),
        ]);
        let found = collect(ws.path(), &["dist/**".into()]).unwrap();
        assert_eq!(
            paths(&found),
            vec!["dist/.hidden", "dist/app.js", "dist/css/site.css"]
        );
        let found = collect(ws.path(), &["bin/*".into(), "dist/*.js".into()]).unwrap();
        assert_eq!(paths(&found), vec!["bin/tool", "dist/app.js"]);
        let found = collect(ws.path(), &["**/*.css".into(), "./src/main.rs".into()]).unwrap();
        assert_eq!(paths(&found), vec!["dist/css/site.css", "src/main.rs"]);
        assert!(
            collect(ws.path(), &["**".into()])
                .unwrap()
                .iter()
                .all(|f| !f.path.starts_with(".git/"))
        );
        assert!(collect(ws.path(), &[]).unwrap().is_empty());
    }

    #[test]
    fn a_glob_that_matches_nothing_fails() {
        let ws = workspace(&[("dist/app.js", "a")]);
        let err = collect(ws.path(), &["dist/**".into(), "out/*".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`out/*` matched no file"), "{err}");
    }

    #[test]
    fn escaping_globs_and_symlinks_are_refused() {
        let ws = workspace(&[("dist/app.js", "a")]);
        for bad in ["/etc/passwd", "../outside/*", "dist/../../x", ""] {
            let err = collect(ws.path(), &[bad.to_string()])
                .unwrap_err()
                .to_string();
            assert!(err.contains("is refused"), "{bad}: {err}");
        }
        std::os::unix::fs::symlink("/etc/passwd", ws.path().join("dist/passwd")).unwrap();
        let err = collect(ws.path(), &["dist/**".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        // A linked directory is not followed.
        let other = workspace(&[("secret.txt", "s")]);
        let ws2 = workspace(&[("dist/app.js", "a")]);
        std::os::unix::fs::symlink(other.path(), ws2.path().join("linked")).unwrap();
        let found = collect(ws2.path(), &["dist/*".into()]).unwrap();
        assert_eq!(paths(&found), vec!["dist/app.js"]);
        let err = collect(ws2.path(), &["linked/*".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("matched no file"), "{err}");
    }

    #[test]
    fn files_are_stored_by_digest_once() {
        let ws = workspace(&[("dist/a.txt", "hello\n"), ("dist/b.txt", "hello\n")]);
        let data = tempfile::tempdir().unwrap();
        let found = collect(ws.path(), &["dist/*".into()]).unwrap();
        let a = store(data.path(), &found[0]).unwrap();
        let b = store(data.path(), &found[1]).unwrap();
        let digest = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        assert_eq!(a.sha256, digest);
        assert_eq!(b.sha256, digest);
        assert_eq!((a.size, a.path.as_str()), (6, "dist/a.txt"));
        let path = artifact_path(data.path(), digest).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "hello\n");
        assert!(path.starts_with(data.path().join("artifacts/sha256/58")));
        assert!(fs::metadata(&path).unwrap().permissions().readonly());
        // Nothing left behind in the temporary directory.
        let tmp = data.path().join("artifacts/tmp");
        assert_eq!(fs::read_dir(tmp).unwrap().count(), 0);
    }

    #[test]
    fn only_digests_become_paths() {
        let data = Path::new("/srv/slipway");
        let digest = "a".repeat(64);
        assert_eq!(
            artifact_path(data, &digest),
            Some(PathBuf::from(format!(
                "/srv/slipway/artifacts/sha256/aa/{digest}"
            )))
        );
        for bad in [
            "A".repeat(64),
            "a".repeat(63),
            "a".repeat(65),
            format!("../{}", "a".repeat(61)),
            format!("{}/..", "a".repeat(61)),
            "g".repeat(64),
            String::new(),
        ] {
            assert_eq!(artifact_path(data, &bad), None, "{bad}");
        }
    }
}
