//! Who may do what: the one authorization decision of Slipway.
//!
//! Every handler asks [`allowed`] (through `CurrentUser::require_action`)
//! with the [`Action`] it is about to take; nothing else compares roles.
//! A stage may further restrict who deploys it by hand ([`may_deploy`]).
//!
//! | role | may |
//! | --- | --- |
//! | viewer | read every page and API, manage their own API tokens, decide the approvals that list them |
//! | deployer | also queue and cancel builds, deploy by hand to a stage that does not restrict its deployers (or lists them), cancel deployments |
//! | release manager | also configure stages, import pipelines, roll back, stop the line, swap slots, manage secrets, read the audit log, re-evaluate or bypass gates |
//! | admin | everything, including users, groups and other people's tokens |

use super::{Approver, Role, Stage};

/// Something a person (or a token) asks Slipway to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read pages and the API.
    Read,
    /// Create and revoke one's own API tokens.
    ManageOwnTokens,
    /// Queue a build of a branch or commit, or cancel one.
    Build,
    /// Start a deployment by hand (see also [`may_deploy`] for the stage's
    /// own list of deployers).
    Deploy,
    /// Cancel a queued or running deployment.
    CancelDeployment,
    /// Edit a stage's configuration (a new definition revision).
    ConfigureStage,
    /// Import a pipeline definition.
    ImportPipeline,
    /// Deploy an older release on purpose, with a reason.
    Rollback,
    /// Pause every automatic trigger, or resume them; add freezes.
    StopTheLine,
    /// Swap two slots of an app.
    SwapSlots,
    /// Set or delete a pipeline secret (values are never readable).
    ManageSecrets,
    /// Read the audit log.
    ReadAudit,
    /// Manage users, their roles and groups, and anyone's tokens.
    ManageUsers,
    /// Approve, reject or defer an approval; the approval's own list of
    /// approvers decides who (see `domain::approval::may_decide`).
    Approve,
    /// Re-evaluate a gate now, or bypass it with a reason.
    OverrideGates,
}

impl Action {
    /// Every action, for exhaustive tests and documentation.
    pub const ALL: [Action; 15] = [
        Action::Read,
        Action::ManageOwnTokens,
        Action::Build,
        Action::Deploy,
        Action::CancelDeployment,
        Action::ConfigureStage,
        Action::ImportPipeline,
        Action::Rollback,
        Action::StopTheLine,
        Action::SwapSlots,
        Action::ManageSecrets,
        Action::ReadAudit,
        Action::ManageUsers,
        Action::Approve,
        Action::OverrideGates,
    ];

    /// The least powerful role that may take this action.
    pub fn minimum_role(self) -> Role {
        match self {
            Action::Read | Action::ManageOwnTokens | Action::Approve => Role::Viewer,
            Action::Build | Action::Deploy | Action::CancelDeployment => Role::Deployer,
            Action::ConfigureStage
            | Action::ImportPipeline
            | Action::Rollback
            | Action::StopTheLine
            | Action::SwapSlots
            | Action::ManageSecrets
            | Action::ReadAudit
            | Action::OverrideGates => Role::ReleaseManager,
            Action::ManageUsers => Role::Admin,
        }
    }

    /// Words for people, as in "this needs … to build".
    pub fn describe(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::ManageOwnTokens => "manage your API tokens",
            Action::Build => "start or cancel builds",
            Action::Deploy => "deploy",
            Action::CancelDeployment => "cancel deployments",
            Action::ConfigureStage => "configure stages",
            Action::ImportPipeline => "import pipelines",
            Action::Rollback => "roll back",
            Action::StopTheLine => "stop the line",
            Action::SwapSlots => "swap slots",
            Action::ManageSecrets => "manage secrets",
            Action::ReadAudit => "read the audit log",
            Action::ManageUsers => "manage users and groups",
            Action::Approve => "decide approvals",
            Action::OverrideGates => "re-evaluate or bypass gates",
        }
    }
}

/// Whether `role` may take `action`.
pub fn allowed(role: Role, action: Action) -> bool {
    role >= action.minimum_role()
}

/// Whether a user (with this role, name and groups) may start a deployment
/// to `stage` by hand: the role must allow [`Action::Deploy`], and when the
/// stage lists its `deployers` (users and `group:NAME`), the user must be
/// one of them or in one of those groups. Admins may always.
pub fn may_deploy(role: Role, username: &str, groups: &[String], stage: &Stage) -> bool {
    may_on_stage(role, Action::Deploy, username, groups, stage)
}

/// Whether a user may do `action` (deploy, redeploy, roll back or cancel)
/// to a deployment of `stage`: the role must allow it, and a stage that
/// lists `deployers` must name the user or one of their groups. Admins may
/// always. The one rule behind deploying and canceling.
pub fn may_on_stage(
    role: Role,
    action: Action,
    username: &str,
    groups: &[String],
    stage: &Stage,
) -> bool {
    allowed(role, action) && (role == Role::Admin || listed(&stage.deployers, username, groups))
}

/// Whether a user is named in a list of users and `group:NAME`s; an empty
/// list names everyone.
pub fn listed(list: &[Approver], username: &str, groups: &[String]) -> bool {
    list.is_empty() || list.iter().any(|entry| names(entry, username, groups))
}

/// Whether one list entry names this user (directly or by a group).
pub fn names(entry: &Approver, username: &str, groups: &[String]) -> bool {
    match entry {
        Approver::User(name) => name == username,
        Approver::Group(group) => groups.iter().any(|g| g == group),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::domain::parse_definition;

    #[test]
    fn every_role_against_every_action() {
        use Action::*;
        // (action, viewer, deployer, release manager, admin)
        let table = [
            (Read, true, true, true, true),
            (ManageOwnTokens, true, true, true, true),
            (Build, false, true, true, true),
            (Deploy, false, true, true, true),
            (CancelDeployment, false, true, true, true),
            (ConfigureStage, false, false, true, true),
            (ImportPipeline, false, false, true, true),
            (Rollback, false, false, true, true),
            (StopTheLine, false, false, true, true),
            (SwapSlots, false, false, true, true),
            (ManageSecrets, false, false, true, true),
            (ReadAudit, false, false, true, true),
            (ManageUsers, false, false, false, true),
            (Approve, true, true, true, true),
            (OverrideGates, false, false, true, true),
        ];
        assert_eq!(
            table.len(),
            Action::ALL.len(),
            "every action is in the table"
        );
        for (action, viewer, deployer, manager, admin) in table {
            assert_eq!(allowed(Role::Viewer, action), viewer, "viewer {action:?}");
            assert_eq!(
                allowed(Role::Deployer, action),
                deployer,
                "deployer {action:?}"
            );
            assert_eq!(
                allowed(Role::ReleaseManager, action),
                manager,
                "release manager {action:?}"
            );
            assert_eq!(allowed(Role::Admin, action), admin, "admin {action:?}");
        }
        for action in Action::ALL {
            assert!(!action.describe().is_empty());
        }
    }

    fn stages() -> Vec<Stage> {
        let yaml = r#"pipeline: p
source: { repo: /srv/git/p }
version: "1.0.{build}"
build:
  tasks: [ { shell: "true" } ]
stages:
  - name: dev
    tasks: [ { shell: "true" } ]
  - name: production
    deployers: [mara, "group:ops"]
    tasks: [ { shell: "true" } ]
"#;
        parse_definition(yaml, "p.yaml").unwrap().stages
    }

    #[test]
    fn a_stage_may_restrict_its_deployers() {
        let stages = stages();
        let (dev, production) = (&stages[0], &stages[1]);
        let none: [String; 0] = [];
        let ops = ["ops".to_string()];
        // An unrestricted stage: every deployer, no viewer.
        assert!(may_deploy(Role::Deployer, "dana", &none, dev));
        assert!(!may_deploy(Role::Viewer, "dana", &ops, dev));
        // A restricted one: the listed user, members of the listed group, admins.
        assert!(may_deploy(Role::Deployer, "mara", &none, production));
        assert!(may_deploy(Role::Deployer, "dana", &ops, production));
        assert!(!may_deploy(
            Role::Deployer,
            "dana",
            &["qa".into()],
            production
        ));
        assert!(!may_deploy(Role::ReleaseManager, "dana", &none, production));
        assert!(may_deploy(Role::Admin, "root", &none, production));
        // Being listed does not lift a viewer.
        assert!(!may_deploy(Role::Viewer, "mara", &ops, production));
    }
}
