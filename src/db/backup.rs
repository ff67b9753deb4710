//! Online backup through SQLite's backup API (a consistent copy while the server runs),
//! the periodic backups' names and rotation, and restoring a backup in place of the
//! database.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::backup::Backup;
use rusqlite::{Connection, OpenFlags};

use super::{connect, migrations, DbError, DbResult};

/// The periodic backups' directory, inside the data directory.
pub const PERIODIC_DIR: &str = "backups";
const PREFIX: &str = "kassa-";
const SUFFIX: &str = ".db";
const STAMP: &str = "%Y%m%dT%H%M%SZ";
/// Beside a file being written, until it is complete and checked.
const PARTIAL: &str = ".partial";

/// Copies the database at `source` into a new file at `target` in one backup step (a
/// single consistent snapshot; WAL lets writers go on meanwhile). Returns the number of
/// pages copied. The copy is readable by its owner only.
pub fn copy(source: &Path, target: &Path) -> DbResult<i32> {
    snapshot(&connect(source)?, target)
}

fn snapshot(src: &Connection, target: &Path) -> DbResult<i32> {
    // Created here rather than by SQLite, which would make it 0644: a backup holds
    // everything the database does.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(target)
        .map_err(|e| file_error(target, e))?;
    // Not as a URI: a target whose path starts with `file:` is the file just created.
    let mut dst = Connection::open(super::target::not_a_uri(target))?;
    let pages = {
        let backup = Backup::new(src, &mut dst)?;
        backup.step(-1)?;
        backup.progress().pagecount
    };
    // A backup file is read on its own, without a -wal beside it.
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(pages)
}

fn file_error(path: &Path, e: std::io::Error) -> DbError {
    DbError::File {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// `ok` or the problems SQLite reports.
pub fn integrity_check(path: &Path) -> DbResult<String> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    integrity_of(&conn)
}

fn integrity_of(conn: &Connection) -> DbResult<String> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(rows.join("; "))
}

/// `path` with `tail` appended to its file name (`kassa.db` → `kassa.db-wal`).
pub fn with_tail(path: &Path, tail: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(tail);
    PathBuf::from(name)
}

/// Why a backup was not made (nothing is left behind under the backup's name).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the copy failed its integrity check and was deleted: {0}")]
    Integrity(String),
}

/// The periodic backup taken at `at` (the `n`th in that second, from 1): names sort by
/// time; a second one in the same second gets `_2` (and `_` sorts after `.`).
pub fn periodic_name(at: DateTime<Utc>, n: u32) -> String {
    let stamp = at.format(STAMP);
    if n <= 1 {
        format!("{PREFIX}{stamp}{SUFFIX}")
    } else {
        format!("{PREFIX}{stamp}_{n}{SUFFIX}")
    }
}

/// The time and number of a periodic backup's file name; `None` for every other name,
/// so that rotation never touches a file kassa did not write there.
pub fn parse_periodic_name(name: &str) -> Option<(NaiveDateTime, u32)> {
    let middle = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let (stamp, n) = match middle.split_once('_') {
        Some((stamp, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !n.starts_with('0') => {
            (stamp, n.parse::<u32>().ok().filter(|n| *n >= 2)?)
        }
        Some(_) => return None,
        None => (middle, 1),
    };
    // The exact shape only: chrono alone would also take fewer digits.
    if stamp.len() != 16 {
        return None;
    }
    Some((NaiveDateTime::parse_from_str(stamp, STAMP).ok()?, n))
}

/// Creates the backups directory, readable by its owner only.
fn private_dir(dir: &Path) -> DbResult<()> {
    super::create_private_dir(dir).map_err(|e| file_error(dir, e))
}

/// Writes a checked backup of `db_path` into `dir`, named for `at`. The copy is written
/// beside its name and moved there only once `PRAGMA integrity_check` has passed on it.
pub fn write_periodic(db_path: &Path, dir: &Path, at: DateTime<Utc>) -> Result<PathBuf, BackupError> {
    private_dir(dir)?;
    // A copy cut short by a crash or a stop is of no use to anyone.
    for stale in periodic_files(dir, true)? {
        let _ = std::fs::remove_file(stale);
    }
    let target = (1..)
        .map(|n| dir.join(periodic_name(at, n)))
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(periodic_name(at, u32::MAX)));
    let partial = with_tail(&target, PARTIAL);
    let written = copy(db_path, &partial).map_err(BackupError::from).and_then(|_| {
        let check = integrity_check(&partial)?;
        if check == "ok" {
            Ok(())
        } else {
            Err(BackupError::Integrity(check))
        }
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &target).map_err(|e| file_error(&target, e))?;
    Ok(target)
}

/// The periodic backups in `dir` (or, with `partial`, the copies left unfinished), by
/// the time and number in their names, oldest first.
fn periodic_files(dir: &Path, partial: bool) -> DbResult<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(file_error(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| file_error(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let complete = match name.strip_suffix(PARTIAL) {
            Some(complete) if partial => complete,
            Some(_) => continue,
            None if partial => continue,
            None => name,
        };
        if let Some(key) = parse_periodic_name(complete) {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                found.push((key, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// The periodic backups in `dir`, oldest first.
pub fn list_periodic(dir: &Path) -> DbResult<Vec<PathBuf>> {
    periodic_files(dir, false)
}

/// Deletes the oldest periodic backups beyond the newest `keep`; returns those deleted.
/// `written`, the backup just made, is always among those kept: after the clock stepped
/// back its name sorts oldest, and it would otherwise be the first to go.
pub fn rotate(dir: &Path, keep: usize, written: &Path) -> DbResult<Vec<PathBuf>> {
    let all = list_periodic(dir)?;
    let total = all.len();
    let others: Vec<PathBuf> = all.into_iter().filter(|p| p != written).collect();
    let room = if others.len() < total {
        keep.saturating_sub(1)
    } else {
        keep
    };
    let excess = others.len().saturating_sub(room);
    let mut deleted = Vec::new();
    for old in others.into_iter().take(excess) {
        std::fs::remove_file(&old).map_err(|e| file_error(&old, e))?;
        deleted.push(old);
    }
    Ok(deleted)
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The backup's schema version; the next start migrates it to the binary's.
    pub schema_version: i64,
    /// Where the database that was replaced now is, if there was one.
    pub replaced: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{file} is not a kassa database: {reason}", file = .file.display())]
    NotKassa { file: PathBuf, reason: String },
    #[error("{file} fails SQLite's integrity check: {problems}", file = .file.display())]
    Damaged { file: PathBuf, problems: String },
    #[error("{file} was written by a newer kassa (schema version {found}; this binary knows up to {supported}); restore it with that version", file = .file.display())]
    TooNew {
        file: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("{file} is the database itself", file = .file.display())]
    Same { file: PathBuf },
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Checks the backup at `from` without changing it: an SQLite file that passes
/// `integrity_check` and holds kassa's schema at a version this binary knows. Returns
/// the schema version.
pub fn check_restorable(from: &Path) -> Result<i64, RestoreError> {
    leaving_no_trace(from, || check(from))
}

/// Runs `f`, which reads the backup at `from` read-only, then deletes the `-wal` and
/// `-shm` files SQLite created beside it to read a file in WAL mode, when they were not
/// there before and the log holds nothing: the operator's backup is left as it was.
fn leaving_no_trace<T>(from: &Path, f: impl FnOnce() -> T) -> T {
    let (wal, shm) = (with_tail(from, "-wal"), with_tail(from, "-shm"));
    let (had_wal, had_shm) = (wal.exists(), shm.exists());
    let out = f();
    if !had_wal && std::fs::metadata(&wal).is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(&wal);
        if !had_shm {
            let _ = std::fs::remove_file(&shm);
        }
    }
    out
}

fn check(from: &Path) -> Result<i64, RestoreError> {
    let not_kassa = |reason: String| RestoreError::NotKassa {
        file: from.to_owned(),
        reason,
    };
    if !from.is_file() {
        return Err(not_kassa("no such file".to_owned()));
    }
    let conn = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| not_kassa(e.to_string()))?;
    let problems = integrity_of(&conn).map_err(|e| not_kassa(e.to_string()))?;
    if problems != "ok" {
        return Err(RestoreError::Damaged {
            file: from.to_owned(),
            problems,
        });
    }
    let version = migrations::current_version(&conn).map_err(|e| not_kassa(e.to_string()))?;
    if version > migrations::latest_version() {
        return Err(RestoreError::TooNew {
            file: from.to_owned(),
            found: version,
            supported: migrations::latest_version(),
        });
    }
    let orders: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'orders')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| not_kassa(e.to_string()))?;
    if version < 1 || !orders {
        return Err(not_kassa(format!("schema version {version}, no orders table")));
    }
    Ok(version)
}

/// Puts the backup at `from` in place of the database at `db_path`. The caller holds the
/// data directory's lock and the database file's (no server runs). The database replaced is moved, with its
/// `-wal`, to `<name>.replaced-<UTC time>`; its `-shm` (an index SQLite rebuilds) is
/// deleted, so that what opens next is exactly the restored file.
pub fn restore(from: &Path, db_path: &Path, now: DateTime<Utc>) -> Result<Restored, RestoreError> {
    let schema_version = check_restorable(from)?;
    if let (Ok(a), Ok(b)) = (from.canonicalize(), db_path.canonicalize()) {
        if a == b {
            return Err(RestoreError::Same {
                file: from.to_owned(),
            });
        }
    }
    let dir = db_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DbError::File {
        path: dir.to_owned(),
        reason: e.to_string(),
    })?;
    // Copied through SQLite (read-only on the backup, which stays as it was) into the
    // data directory first, so the swap below is two renames on one file system.
    let incoming = with_tail(db_path, ".restoring");
    let copied = leaving_no_trace(from, || {
        Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(DbError::from)
            .and_then(|src| snapshot(&src, &incoming))
    });
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&incoming);
        return Err(e.into());
    }
    let replaced = if db_path.exists() {
        keep_owner(db_path, &incoming);
        let stamp = now.format(STAMP);
        let target = (1..)
            .map(|n| {
                if n == 1 {
                    with_tail(db_path, &format!(".replaced-{stamp}"))
                } else {
                    with_tail(db_path, &format!(".replaced-{stamp}_{n}"))
                }
            })
            .find(|p| !p.exists() && !with_tail(p, "-wal").exists())
            .unwrap_or_else(|| with_tail(db_path, ".replaced"));
        let wal = with_tail(db_path, "-wal");
        if wal.exists() {
            std::fs::rename(&wal, with_tail(&target, "-wal")).map_err(|e| file_error(&wal, e))?;
        }
        let shm = with_tail(db_path, "-shm");
        if shm.exists() {
            std::fs::remove_file(&shm).map_err(|e| file_error(&shm, e))?;
        }
        std::fs::rename(db_path, &target).map_err(|e| file_error(db_path, e))?;
        Some(target)
    } else {
        None
    };
    std::fs::rename(&incoming, db_path).map_err(|e| file_error(db_path, e))?;
    // The renames are durable once the directory is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Restored {
        schema_version,
        replaced,
    })
}

/// Gives `incoming` the owner and group of the database it replaces. A restore run as
/// root would otherwise leave a root-owned 0600 file that the service's own user (a
/// systemd DynamicUser, say) cannot open. Best effort: only root may give a file away,
/// and another user restoring its own database needs no change.
pub(super) fn keep_owner(db_path: &Path, incoming: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Ok(old), Ok(new)) = (std::fs::metadata(db_path), std::fs::metadata(incoming)) else {
        return;
    };
    if (old.uid(), old.gid()) == (new.uid(), new.gid()) {
        return;
    }
    if let Err(e) = std::os::unix::fs::chown(incoming, Some(old.uid()), Some(old.gid())) {
        tracing::warn!(
            error = %e,
            uid = old.uid(),
            gid = old.gid(),
            "the restored database keeps the restoring user as its owner, not the replaced database's"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn periodic_names_sort_by_time_then_number_and_only_their_own_shape_is_recognised() {
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 21, 55, 1).unwrap();
        let first = periodic_name(at, 1);
        let second = periodic_name(at, 2);
        let later = periodic_name(at + chrono::Duration::seconds(1), 1);
        assert_eq!(first, "kassa-20261130T215501Z.db");
        assert_eq!(second, "kassa-20261130T215501Z_2.db");
        let mut sorted = vec![later.clone(), second.clone(), first.clone()];
        sorted.sort();
        assert_eq!(sorted, [first.clone(), second.clone(), later]);
        assert_eq!(parse_periodic_name(&first), Some((at.naive_utc(), 1)));
        assert_eq!(parse_periodic_name(&second), Some((at.naive_utc(), 2)));
        for other in [
            "kassa.db",
            "kassa-20261130T215501Z.db.partial",
            "kassa-20261130T215501Z_1.db",
            "kassa-20261130T215501Z_02.db",
            "kassa-20261130T215501Z_.db",
            "kassa-2026113T215501Z.db",
            "kassa-20261130T215501.db",
            "kassa-20261330T215501Z.db",
            "other-20261130T215501Z.db",
        ] {
            assert_eq!(parse_periodic_name(other), None, "{other}");
        }
    }

    #[test]
    fn rotation_never_deletes_the_backup_just_written_even_when_its_name_sorts_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 21, 0, 0).unwrap();
        let earlier: Vec<PathBuf> = (0..3)
            .map(|s| {
                dir.path()
                    .join(periodic_name(at + chrono::Duration::seconds(s), 1))
            })
            .collect();
        for file in &earlier {
            std::fs::write(file, "backup").unwrap();
        }
        // The clock stepped back an hour before this round.
        let written = dir.path().join(periodic_name(at - chrono::Duration::hours(1), 1));
        std::fs::write(&written, "backup").unwrap();

        let deleted = rotate(dir.path(), 2, &written).unwrap();

        assert_eq!(deleted, earlier[..2]);
        assert_eq!(list_periodic(dir.path()).unwrap(), [written, earlier[2].clone()]);
    }

    #[test]
    fn a_restore_gives_the_restored_database_the_owner_and_mode_of_the_one_it_replaces() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let (backup, db) = (dir.path().join("backup.db"), dir.path().join("kassa.db"));
        for path in [&backup, &db] {
            crate::db::migrate(path).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // As root, the database belongs to another user, as under a systemd DynamicUser;
        // otherwise only the restoring user's own files can be tested.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if root {
            std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
        }
        let old = std::fs::metadata(&db).unwrap();

        restore(
            &backup,
            &db,
            Utc.with_ymd_and_hms(2026, 11, 30, 21, 0, 0).unwrap(),
        )
        .unwrap();

        let new = std::fs::metadata(&db).unwrap();
        assert_ne!(new.ino(), old.ino(), "the file was replaced");
        assert_eq!((new.uid(), new.gid()), (old.uid(), old.gid()));
        assert_eq!(new.mode() & 0o777, old.mode() & 0o777);
        if root {
            assert_eq!((new.uid(), new.gid()), (65534, 65534));
        }
    }
}
