//! `kassa migrate --to postgres://…`: the configured SQLite database copied into an
//! empty PostgreSQL database, offline, and checked table by table before it commits.

use std::io::Write;
use std::path::Path;

use super::CommandError;
use crate::db::copy::{self, CopyError};
use crate::db::lock::ServerLock;
use crate::db::{DbTarget, Offline};

/// Copies the SQLite database `source` into the PostgreSQL database `to` (the `--to`
/// value as given). Refused while a server holds `data_dir`'s or the file's lock (the
/// locks are held until the copy ends, so none can start halfway), when the SQLite file
/// does not exist, or when any kassa table of the target has rows. Both databases are
/// migrated to this binary's version first. Prints one line per table, then the result;
/// the URL's password is never shown.
pub fn to_postgres(
    data_dir: &Path,
    source: &DbTarget,
    to: &str,
    out: &mut impl Write,
) -> Result<(), CommandError> {
    let target = match DbTarget::parse(to) {
        Ok(target @ DbTarget::Postgres(_)) => target,
        Ok(DbTarget::Sqlite(_)) => {
            return Err(CommandError::new(
                "--to takes a postgres:// URL (the database to copy into); the source is the configured SQLite database",
            ))
        }
        Err(why) => return Err(CommandError::new(format!("--to {why}"))),
    };
    let Some(path) = source.sqlite_path() else {
        return Err(CommandError::new(format!(
            "kassa migrate --to copies a SQLite database, and the configured database is already PostgreSQL ({source})"
        )));
    };
    if !path.exists() {
        return Err(CommandError::new(format!(
            "no database at {}; nothing to copy",
            path.display()
        )));
    }
    let refused = |e: &dyn std::fmt::Display| CommandError::new(format!("cannot copy: {e}"));
    let _lock = ServerLock::acquire(data_dir, source).map_err(|e| refused(&e))?;
    let mut say = |line: String| writeln!(out, "{line}").map_err(|e| CommandError::new(e.to_string()));

    let mut from = Offline::open(path).map_err(|e| refused(&e))?;
    let applied = from.migrate().map_err(|e| refused(&e))?;
    if !applied.is_empty() {
        say(format!(
            "applied migrations to {}: {}",
            path.display(),
            applied.join(", ")
        ))?;
    }
    let mut into = Offline::open_target(&target).map_err(|e| refused(&e))?;
    let applied = into.migrate().map_err(|e| refused(&e))?;
    if !applied.is_empty() {
        say(format!("applied migrations to {target}: {}", applied.join(", ")))?;
    }

    let sums = copy::copy(&mut from, &mut into).map_err(|e| match e {
        CopyError::Db(e) => refused(&e),
        other => CommandError::new(other.to_string()),
    })?;
    let mut rows = 0;
    for sum in &sums {
        rows += sum.rows;
        say(format!("{}: {} rows, sha256 {}", sum.table, sum.rows, sum.sha256))?;
    }
    say(format!(
        "copied {} tables ({rows} rows) from {} to {target}; every row count and checksum matches",
        sums.len(),
        path.display()
    ))
}
