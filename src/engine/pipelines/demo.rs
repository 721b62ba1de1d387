//! `serve --demo`: the sample app `space-game-web` as a real local git
//! repository under the data dir, and its pipeline, created once. The
//! story it tells (build → dev → test → preprod → production by a swap
//! after management's approval) is in the README and `docs/slots.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::engine::{EngineError, pipelines, users};
use crate::storage::{self, DbConn};

/// The demo pipeline's name.
pub const DEMO_PIPELINE: &str = "space-game-web";

/// The group whose members approve the demo's production deployments; the
/// first admin (`admin`) is made a member, so one person can walk the story.
pub const DEMO_APPROVERS: &str = "management";

/// The slot router's address as written in `demo_app/slipway.yaml` (the
/// production gate checks staging's health through it); replaced by the
/// address the router really listens on.
const DEFAULT_ROUTER: &str = "127.0.0.1:8081";

/// The files of the sample app: path in the repository, contents, executable.
const FILES: &[(&str, &str, bool)] = &[
    ("slipway.yaml", include_str!("demo_app/slipway.yaml"), false),
    ("build.sh", include_str!("demo_app/build.sh"), true),
    ("run.sh", include_str!("demo_app/run.sh"), true),
    (
        "src/index.html",
        include_str!("demo_app/src/index.html"),
        false,
    ),
    ("src/app.js", include_str!("demo_app/src/app.js"), false),
    (
        "src/style.css",
        include_str!("demo_app/src/style.css"),
        false,
    ),
];

/// What `ensure_demo` did.
#[derive(Debug, PartialEq, Eq)]
pub enum DemoOutcome {
    /// The pipeline was there already; nothing was touched.
    AlreadyThere,
    /// Created the repository (when missing) and imported the pipeline.
    Created { repo: PathBuf },
}

/// Creates the sample repository (if missing) and imports its pipeline,
/// unless the pipeline exists already; makes the user `admin` (when there
/// is one) a member of [`DEMO_APPROVERS`]. `router` is where the slot
/// router listens (`--router-listen`).
pub fn ensure_demo(
    conn: &mut DbConn,
    data_dir: &Path,
    router: SocketAddr,
) -> Result<DemoOutcome, EngineError> {
    if storage::find_pipeline(conn, DEMO_PIPELINE)?.is_some() {
        return Ok(DemoOutcome::AlreadyThere);
    }
    let repo = std::path::absolute(data_dir.join("demo").join(DEMO_PIPELINE)).map_err(|e| {
        EngineError::Io {
            context: "cannot resolve the data directory".into(),
            source: e,
        }
    })?;
    if !repo.join(".git").exists() {
        create_repository(&repo, router)?;
    }
    let file = repo.join("slipway.yaml");
    let yaml = std::fs::read_to_string(&file).map_err(|source| EngineError::Io {
        context: format!("cannot read {}", file.display()),
        source,
    })?;
    let definition = pipelines::parse(&yaml, &file.display().to_string())?;
    pipelines::import(
        conn,
        definition,
        Some(&repo),
        "demo",
        Some("sample pipeline created by serve --demo"),
    )?;
    make_admin_an_approver(conn)?;
    Ok(DemoOutcome::Created { repo })
}

/// `admin` joins the group that approves production (audit `user.group_add`).
fn make_admin_an_approver(conn: &mut DbConn) -> Result<(), EngineError> {
    storage::write_transaction(conn, |conn| {
        let Some(admin) = storage::find_user_by_name(conn, users::INITIAL_ADMIN)? else {
            return Ok(());
        };
        if storage::add_membership(conn, admin.id, DEMO_APPROVERS, storage::GROUP_SOURCE_LOCAL)? {
            storage::append_audit(
                conn,
                "demo",
                "user.group_add",
                &format!("user:{}", admin.username),
                &format!("group={DEMO_APPROVERS}"),
            )?;
        }
        Ok(())
    })
}

fn create_repository(repo: &Path, router: SocketAddr) -> Result<(), EngineError> {
    for (path, contents, executable) in FILES {
        let target = repo.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|source| EngineError::Io {
                context: format!("cannot create {}", parent.display()),
                source,
            })?;
        }
        let contents = if *path == "slipway.yaml" {
            contents.replace(DEFAULT_ROUTER, &router.to_string())
        } else {
            contents.to_string()
        };
        std::fs::write(&target, contents).map_err(|source| EngineError::Io {
            context: format!("cannot write {}", target.display()),
            source,
        })?;
        #[cfg(unix)]
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).map_err(
                |source| EngineError::Io {
                    context: format!("cannot make {} executable", target.display()),
                    source,
                },
            )?;
        }
    }
    git(repo, &["init", "--quiet", "--initial-branch=main"])?;
    git(repo, &["add", "--all"])?;
    git(
        repo,
        &[
            "-c",
            "user.name=Slipway demo",
            "-c",
            "user.email=demo@slipway.localhost",
            "commit",
            "--quiet",
            "--message",
            "Space Game website: first version",
        ],
    )?;
    Ok(())
}

fn git(repo: &Path, args: &[&str]) -> Result<(), EngineError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|source| EngineError::Io {
            context: "cannot run `git` (is git installed?)".into(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(EngineError::Invalid(format!(
            "git {} failed in {}: {}",
            args.join(" "),
            repo.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
