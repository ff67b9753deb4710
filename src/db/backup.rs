//! Online backup through SQLite's backup API: a consistent copy while the server runs.

use std::path::Path;

use rusqlite::backup::Backup;
use rusqlite::Connection;

use super::{connect, DbResult};

/// Copies the database at `source` into a new file at `target` in one backup step (a
/// single consistent snapshot; WAL lets writers go on meanwhile), then checks the copy
/// with `PRAGMA integrity_check`. Returns the number of pages copied.
pub fn copy(source: &Path, target: &Path) -> DbResult<i32> {
    let src = connect(source)?;
    let mut dst = Connection::open(target)?;
    let pages = {
        let backup = Backup::new(&src, &mut dst)?;
        backup.step(-1)?;
        backup.progress().pagecount
    };
    // A backup file is read on its own, without a -wal beside it.
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(pages)
}

/// `ok` or the problems SQLite reports.
pub fn integrity_check(path: &Path) -> DbResult<String> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(rows.join("; "))
}
