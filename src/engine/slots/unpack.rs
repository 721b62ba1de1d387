//! Unpacking a release into a slot's fresh directory.
//!
//! Files keep their workspace-relative paths (`dist/app.js`). The store
//! keeps files read-only and does not record modes, so unpacked files are
//! `0644`, except `*.sh` files and the file the app's `start` command names
//! first (`./run.sh`, `bin/web`), which are `0755`; a file copied from a
//! directory that was already executable stays so.
//!
//! Everything here blocks; callers run it on the blocking pool.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::engine::EngineError;
use crate::engine::builds::artifacts::artifact_path;
use crate::storage::ArtifactRow;

/// Where the files come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The release's artifacts in the content-addressed store.
    Store {
        data_dir: PathBuf,
        artifacts: Vec<ArtifactRow>,
    },
    /// A directory holding the release unpacked (a deployment's working dir).
    Dir(PathBuf),
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> EngineError {
    move |source| EngineError::Io { context, source }
}

/// The relative path the `start` command runs first, if it names a file
/// (`./run.sh --fast` → `run.sh`; `python3 app.py` → `None`).
pub fn start_file(start: &str) -> Option<String> {
    let first = start.split_whitespace().next()?;
    let first = first.trim_matches(|c| c == '"' || c == '\'');
    if first.contains('$') || first.contains('=') || first.starts_with('/') {
        return None;
    }
    let relative = first.strip_prefix("./").unwrap_or(first);
    (first.contains('/') && !relative.is_empty()).then(|| relative.to_string())
}

/// A path from the store's records that stays inside the directory.
fn safe_relative(path: &str) -> Result<&Path, EngineError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(p)
    } else {
        Err(EngineError::Invalid(format!(
            "artifact path `{path}` would leave the slot's directory"
        )))
    }
}

/// Copies the release into `dest` (created; must not exist). Returns how
/// many files it holds.
pub fn unpack(source: &Source, dest: &Path, start: &str) -> Result<usize, EngineError> {
    fs::create_dir_all(
        dest.parent()
            .ok_or_else(|| EngineError::Invalid(format!("{} has no parent", dest.display())))?,
    )
    .map_err(io(format!("cannot create {}", dest.display())))?;
    fs::create_dir(dest).map_err(io(format!("cannot create {}", dest.display())))?;
    let executable: HashSet<String> = start_file(start).into_iter().collect();
    let files: Vec<(String, PathBuf, bool)> = match source {
        Source::Store {
            data_dir,
            artifacts,
        } => artifacts
            .iter()
            .map(|a| {
                let file = artifact_path(data_dir, &a.sha256).ok_or_else(|| {
                    EngineError::Invalid(format!(
                        "artifact {} has a malformed digest `{}`",
                        a.path, a.sha256
                    ))
                })?;
                Ok((a.path.clone(), file, false))
            })
            .collect::<Result<_, EngineError>>()?,
        Source::Dir(dir) => walk(dir)?,
    };
    for (relative, file, was_executable) in &files {
        let target = dest.join(safe_relative(relative)?);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(io(format!("cannot create {}", parent.display())))?;
        }
        fs::copy(file, &target).map_err(io(format!(
            "cannot copy {} into {}",
            relative,
            dest.display()
        )))?;
        let exec = *was_executable || relative.ends_with(".sh") || executable.contains(relative);
        let mode = if exec { 0o755 } else { 0o644 };
        fs::set_permissions(&target, fs::Permissions::from_mode(mode))
            .map_err(io(format!("cannot set the mode of {}", target.display())))?;
    }
    Ok(files.len())
}

/// Regular files under `dir` (relative path, file, executable), not
/// following symbolic links.
fn walk(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, EngineError> {
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((current, prefix)) = stack.pop() {
        let entries =
            fs::read_dir(&current).map_err(io(format!("cannot list {}", current.display())))?;
        for entry in entries {
            let entry = entry.map_err(io(format!("cannot list {}", current.display())))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = entry
                .metadata()
                .map_err(io(format!("cannot inspect {relative}")))?;
            if meta.is_dir() {
                stack.push((entry.path(), relative));
            } else if meta.is_file() {
                let exec = meta.permissions().mode() & 0o111 != 0;
                found.push((relative, entry.path(), exec));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `1.0.7+build/2` → `1.0.7+build_2`: a version as a directory name.
pub fn dir_name(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `<slot_dir>/<version>-<n>` with the first `n` not taken.
pub fn fresh_dir(slot_dir: &Path, version: &str) -> PathBuf {
    let base = dir_name(version);
    let mut n = 1u32;
    loop {
        let candidate = slot_dir.join(format!("{base}-{n}"));
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn the_start_file_is_found() {
        assert_eq!(start_file("./run.sh"), Some("run.sh".into()));
        assert_eq!(
            start_file("bin/web --port \"$PORT\""),
            Some("bin/web".into())
        );
        assert_eq!(start_file("python3 server.py"), None);
        assert_eq!(start_file("/usr/bin/env x"), None);
        assert_eq!(start_file("PORT=1 ./x"), None);
        assert_eq!(dir_name("1.0.7+b/2"), "1.0.7+b_2");
    }

    #[test]
    fn a_directory_is_copied_with_modes() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("dist/css")).unwrap();
        std::fs::write(src.path().join("dist/css/site.css"), "body{}").unwrap();
        std::fs::write(src.path().join("run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(src.path().join("serve"), "#!/bin/sh\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let dest = fresh_dir(out.path(), "1.0.1");
        assert!(dest.ends_with("1.0.1-1"));
        let n = unpack(&Source::Dir(src.path().into()), &dest, "./serve").unwrap();
        assert_eq!(n, 3);
        let mode = |p: &str| {
            std::fs::metadata(dest.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("dist/css/site.css"), 0o644);
        assert_eq!(mode("run.sh"), 0o755);
        assert_eq!(mode("serve"), 0o755);
        assert!(fresh_dir(out.path(), "1.0.1").ends_with("1.0.1-2"));
        assert!(unpack(&Source::Dir(src.path().into()), &dest, "").is_err());
    }
}
