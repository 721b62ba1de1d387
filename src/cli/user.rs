//! `slipway user add NAME [--group G]… [--role ROLE] [--password-stdin]`.
use std::io::Read;

use anyhow::Context;
use clap::Subcommand;

use super::{Common, open_db};
use crate::domain::Role;
use crate::engine::users;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a local user.
    Add {
        /// The user name (sign-in name).
        name: String,
        /// A group the user belongs to (repeatable), e.g. `--group management`.
        #[arg(long = "group", value_name = "G")]
        groups: Vec<String>,
        /// viewer, deployer, release_manager or admin.
        #[arg(long, default_value = "viewer")]
        role: Role,
        /// Read the password from standard input (otherwise one is generated and printed).
        #[arg(long)]
        password_stdin: bool,
    },
}

pub fn run(cmd: UserCommand, common: &Common) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            name,
            groups,
            role,
            password_stdin,
        } => {
            let (password, generated) = if password_stdin {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read the password from standard input")?;
                let password = text.trim_end_matches(['\r', '\n']).to_string();
                if password.is_empty() {
                    anyhow::bail!("the password read from standard input is empty");
                }
                (password, false)
            } else {
                (users::generate_password(), true)
            };
            let settings = common.settings(None)?;
            let db = open_db(&settings)?;
            let mut conn = db.get()?;
            let user = users::create_user(
                &mut conn,
                users::NewLocalUser {
                    username: &name,
                    role,
                    groups: &groups,
                    password: &password,
                },
                "cli",
            )?;
            println!("added user {} ({})", user.username, role.as_str());
            if generated {
                println!("password: {password}");
            }
            Ok(())
        }
    }
}
