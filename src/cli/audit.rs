//! `slipway audit verify`: walks the hash chain of the audit log and names
//! the first broken link (exit code 1), or says it is intact.
use clap::Subcommand;

use super::{Common, open_db};
use crate::storage::{self, AuditVerifyError};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that no audit record was changed, removed or inserted: prints
    /// "audit chain intact (N records)", or "broken link at record ID" and
    /// exits 1.
    Verify,
}

pub fn run(cmd: AuditCommand, common: &Common) -> anyhow::Result<()> {
    match cmd {
        AuditCommand::Verify => {
            let settings = common.settings(None)?;
            let db = open_db(&settings)?;
            let mut conn = db.get()?;
            match storage::verify_audit_chain(&mut conn) {
                Ok(()) => {
                    let count = storage::count_audit(&mut conn)?;
                    println!("audit chain intact ({count} records)");
                    Ok(())
                }
                Err(AuditVerifyError::Broken(link)) => {
                    println!("broken link at record {}", link.id);
                    anyhow::bail!(
                        "the audit chain is broken at record {}: it, or the one before it, was changed or removed after it was written",
                        link.id
                    )
                }
                Err(AuditVerifyError::Storage(e)) => Err(e.into()),
            }
        }
    }
}
