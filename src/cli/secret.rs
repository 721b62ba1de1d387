//! `slipway secret set PIPELINE NAME` (the value on stdin), `slipway secret
//! list PIPELINE` and `slipway secret delete PIPELINE NAME`. Values are
//! never printed.
use std::io::{IsTerminal, Read};

use anyhow::Context;
use clap::Subcommand;
use secrecy::SecretString;
use secrecy::zeroize::Zeroizing;

use super::{Common, open_db};
use crate::engine::secrets::{self, SecretKey};

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret of a pipeline; the value is read from standard input
    /// (one trailing newline is dropped). Refer to it as `${{ secrets.NAME }}`.
    Set {
        /// The pipeline's name.
        pipeline: String,
        /// The secret's name: letters, digits and '_', not starting with a digit.
        name: String,
    },
    /// List the names of a pipeline's secrets (never their values).
    List {
        /// The pipeline's name.
        pipeline: String,
    },
    /// Delete a secret of a pipeline.
    Delete {
        /// The pipeline's name.
        pipeline: String,
        /// The secret's name.
        name: String,
    },
}

pub fn run(cmd: SecretCommand, common: &Common) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Set { pipeline, name } => {
            // Check the name before waiting for input.
            secrets::validate_name(&name)?;
            let value = read_value(&name)?;
            let settings = common.settings(None)?;
            let db = open_db(&settings)?;
            let key = SecretKey::load_or_create(&settings.data_dir)?;
            let mut conn = db.get()?;
            secrets::set_secret(&mut conn, &key, &pipeline, &name, &value, "cli")?;
            println!("set secret {name} of {pipeline}");
            Ok(())
        }
        SecretCommand::List { pipeline } => {
            let settings = common.settings(None)?;
            let db = open_db(&settings)?;
            let mut conn = db.get()?;
            for secret in secrets::list_secret_names_of(&mut conn, &pipeline)? {
                println!("{}", secret.name);
            }
            Ok(())
        }
        SecretCommand::Delete { pipeline, name } => {
            let settings = common.settings(None)?;
            let db = open_db(&settings)?;
            let mut conn = db.get()?;
            secrets::delete_secret(&mut conn, &pipeline, &name, "cli")?;
            println!("deleted secret {name} of {pipeline}");
            Ok(())
        }
    }
}

/// The value from standard input, without one trailing newline.
fn read_value(name: &str) -> anyhow::Result<SecretString> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Enter the value of {name}, then press Ctrl-D:");
    }
    let mut bytes = Zeroizing::new(Vec::new());
    stdin
        .read_to_end(&mut bytes)
        .context("cannot read the secret's value from standard input")?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow::anyhow!("the secret's value must be UTF-8 text"))?;
    let value = strip_one_newline(text);
    if value.is_empty() {
        anyhow::bail!("the secret's value is empty: pass it on standard input");
    }
    Ok(SecretString::from(value))
}

fn strip_one_newline(text: &str) -> &str {
    text.strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::strip_one_newline;

    #[test]
    fn strips_exactly_one_trailing_newline() {
        assert_eq!(strip_one_newline("v\n"), "v");
        assert_eq!(strip_one_newline("v\r\n"), "v");
        assert_eq!(strip_one_newline("v\n\n"), "v\n");
        assert_eq!(strip_one_newline(" v "), " v ");
        assert_eq!(strip_one_newline("\n"), "");
    }
}
