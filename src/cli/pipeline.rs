//! `slipway pipeline import FILE` and `slipway pipeline export NAME`.
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::{Common, open_db};
use crate::engine::pipelines;

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Import a pipeline definition (YAML); a changed definition becomes a new revision.
    Import {
        /// The YAML file.
        file: PathBuf,
        /// A note stored with the revision.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Print a pipeline's current definition as canonical YAML.
    Export {
        /// The pipeline's name.
        name: String,
    },
}

pub fn run(cmd: PipelineCommand, common: &Common) -> anyhow::Result<()> {
    match cmd {
        PipelineCommand::Import { file, comment } => {
            let label = file.display().to_string();
            let yaml = std::fs::read_to_string(&file)
                .with_context(|| format!("{label}: cannot read the file"))?;
            // Parse before touching the database: a broken file changes nothing.
            let definition = pipelines::parse(&yaml, &label)?;
            let settings = common.settings(None)?;
            let db = open_db(&settings)?;
            let mut conn = db.get()?;
            let base_dir = file.parent().map(PathBuf::from);
            let outcome = pipelines::import(
                &mut conn,
                definition,
                base_dir.as_deref(),
                "cli",
                comment.as_deref(),
            )?;
            println!("{}", outcome.summary());
            Ok(())
        }
        PipelineCommand::Export { name } => {
            let settings = common.settings(None)?;
            let db = open_db(&settings)?;
            let mut conn = db.get()?;
            let yaml = pipelines::export(&mut conn, &name)?;
            print!("{yaml}");
            Ok(())
        }
    }
}
