//! `slipway token create USER [--name NAME]`: prints a new API token.
use clap::Subcommand;

use super::{Common, open_db};
use crate::engine::users;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a user and print it (it is shown only once).
    Create {
        /// The user the token acts as.
        user: String,
        /// A name to recognise the token by.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

pub fn run(cmd: TokenCommand, common: &Common) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create { user, name } => {
            let settings = common.settings(None)?;
            let db = open_db(&settings)?;
            let mut conn = db.get()?;
            let token = users::create_token(&mut conn, &user, &name, "cli")?;
            println!("{token}");
            Ok(())
        }
    }
}
