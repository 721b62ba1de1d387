//! `slipway migrate`: apply pending migrations.
use super::{Common, open_db};

pub fn run(common: &Common) -> anyhow::Result<()> {
    let settings = common.settings(None)?;
    let db = crate::storage::Db::connect(&settings.database_url, 1)?;
    let pending = db.pending_migrations()?;
    drop(db);
    open_db(&settings)?;
    println!(
        "applied {}; the database is up to date",
        crate::domain::plural(pending, "migration", "migrations")
    );
    Ok(())
}
