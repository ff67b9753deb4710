//! `kassa restore <file>`: a backup in place of the database, while no server runs.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::CommandError;
use crate::db::backup;
use crate::db::lock::ServerLock;
use crate::db::{migrations, DbTarget};

/// Checks `from` (an SQLite file passing `integrity_check`, with kassa's schema at a
/// version this binary knows), then swaps it in for `db_path`, keeping the database it
/// replaces. Refused while a server holds `data_dir`'s lock or the database file's: the
/// locks are taken for the whole swap, so no server can start halfway either.
pub fn run(
    data_dir: &Path,
    database: &DbTarget,
    from: &Path,
    now: DateTime<Utc>,
    out: &mut impl Write,
) -> Result<(), CommandError> {
    let refused = |e: &dyn std::fmt::Display| CommandError::new(format!("cannot restore: {e}"));
    let Some(db_path) = database.sqlite_path() else {
        let file = super::backup::quoted(&from.to_string_lossy());
        return Err(super::backup::postgres_refusal("restore", database, |url| {
            format!("pg_restore --clean --if-exists --dbname={url} {file}")
        }));
    };
    // Checked before taking the lock too, so a bad file is named even while a server runs.
    backup::check_restorable(from).map_err(|e| refused(&e))?;
    let _lock = ServerLock::acquire(data_dir, database).map_err(|e| refused(&e))?;
    let restored = backup::restore(from, db_path, now).map_err(|e| refused(&e))?;
    let mut say = |line: String| writeln!(out, "{line}").map_err(|e| CommandError::new(e.to_string()));
    say(format!(
        "restored {} to {} (schema version {})",
        from.display(),
        db_path.display(),
        restored.schema_version
    ))?;
    if restored.schema_version < migrations::latest_version() {
        say(format!(
            "the next start applies this kassa's migrations up to schema version {}",
            migrations::latest_version()
        ))?;
    }
    match &restored.replaced {
        Some(kept) => say(format!("the replaced database is kept as {}", kept.display())),
        None => say("there was no database to replace".to_owned()),
    }
}
