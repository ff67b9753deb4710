//! A running server holds exclusive advisory locks for its whole life: on
//! `<data_dir>/kassa.lock`, so that a second server on the same data directory is
//! refused and `kassa restore` (which takes the same locks) can tell that a server runs;
//! and, for a SQLite database, on `<database file>.lock` beside the file, because with
//! `[database] url` two servers with different data directories could otherwise open
//! the same file. Leases and claims live in the database and would hold between two
//! servers, but much else is per process and would not: the single writer (SQLite's
//! one writer is what serialises read-then-decide operations), the `PostCommit`
//! broadcast that wakes checkout pages and dispatchers, the API rate limits, and the
//! expiry worker's back-off (`ExpiryWorker.retry_at`).
//!
//! Locks, not pid files: the operating system drops them when the process ends, however
//! it ends (`kill -9` included), so a stale file never blocks anything.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::DbTarget;

/// The lock file's name inside the data directory.
pub const FILE_NAME: &str = "kassa.lock";
/// Appended to the database file's name for its lock (`kassa.db` → `kassa.db.lock`).
pub const DATABASE_TAIL: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("a kassa server is running on {dir} (it holds an exclusive lock on {file}); stop it first", dir = .dir.display(), file = .file.display())]
    Held { dir: PathBuf, file: PathBuf },
    #[error("a kassa server is using the database {database} (it holds an exclusive lock on {file}); two servers must never share one SQLite file: stop it first, or give this one its own [database] url", database = .database.display(), file = .file.display())]
    DatabaseHeld { database: PathBuf, file: PathBuf },
    #[error("database.url names a directory ({database}); give the database file, e.g. {example}", database = .database.display(), example = .database.join("kassa.db").display())]
    Directory { database: PathBuf },
    #[error("cannot lock {file}: {reason}", file = .file.display())]
    Io { file: PathBuf, reason: String },
}

/// Held while this value lives; released when it is dropped (or the process ends).
#[derive(Debug)]
pub struct ServerLock {
    _files: Vec<File>,
}

impl ServerLock {
    /// Takes the lock of `data_dir` (created if needed) and, for a SQLite database,
    /// the lock beside its file (its directory created if needed), without waiting.
    /// Only the directories and the lock files are created, so a refused start leaves
    /// the database as it was.
    pub fn acquire(data_dir: &Path, database: &DbTarget) -> Result<ServerLock, LockError> {
        // Before anything is created: a directory would otherwise get a lock beside it
        // and an error about something else further on.
        if let Some(db) = database.sqlite_path().filter(|db| db.is_dir()) {
            return Err(LockError::Directory {
                database: db.to_owned(),
            });
        }
        let dir_lock = data_dir.join(FILE_NAME);
        super::create_private_dir(data_dir).map_err(io(&dir_lock))?;
        let dir_file = try_lock(&dir_lock, || LockError::Held {
            dir: data_dir.to_owned(),
            file: dir_lock.clone(),
        })?;
        let mut files = Vec::with_capacity(2);
        if let Some(db) = database.sqlite_path() {
            let file = database_lock_file(db)?;
            // `url = "<data_dir>/kassa"` puts both locks on one file; a second lock on
            // it from this process would conflict with the first and refuse this server.
            if !same_file(&file, &dir_file) {
                files.push(try_lock(&file, || LockError::DatabaseHeld {
                    database: db.to_owned(),
                    file: file.clone(),
                })?);
            }
        }
        files.push(dir_file);
        Ok(ServerLock { _files: files })
    }
}

fn same_file(path: &Path, open: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), open.metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// `<db>.lock` in the directory the file really is in: the same lock whichever
/// relative path, symlinked directory or link to the file names it.
pub fn database_lock_file(db: &Path) -> Result<PathBuf, LockError> {
    let parent = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = db.file_name().ok_or_else(|| LockError::Io {
        file: db.to_owned(),
        reason: "names no file".to_owned(),
    })?;
    super::create_private_dir(parent).map_err(io(parent))?;
    let real = match std::fs::canonicalize(db) {
        Ok(real) => real,
        Err(_) => std::fs::canonicalize(parent).map_err(io(parent))?.join(name),
    };
    Ok(super::backup::with_tail(&real, DATABASE_TAIL))
}

fn io(file: &Path) -> impl Fn(std::io::Error) -> LockError + '_ {
    move |e| LockError::Io {
        file: file.to_owned(),
        reason: e.to_string(),
    }
}

/// Opens (creating it owner-only) and locks `file`; `held()` when another process
/// holds it.
fn try_lock(file: &Path, held: impl FnOnce() -> LockError) -> Result<File, LockError> {
    let handle = match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(created) => {
            give_to_database_owner(file, &created);
            created
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .map_err(io(file))?,
        Err(e) => return Err(io(file)(e)),
    };
    match handle.try_lock() {
        Ok(()) => Ok(handle),
        Err(std::fs::TryLockError::WouldBlock) => Err(held()),
        Err(std::fs::TryLockError::Error(e)) => Err(io(file)(e)),
    }
}

/// A lock file root creates (`kassa restore` run as root) goes to the owner of the
/// database, or of the directory it is in: the service's user, which could not open a
/// root-owned 0600 file and would be kept from starting.
fn give_to_database_owner(file: &Path, created: &File) {
    use std::os::unix::fs::MetadataExt;
    // A new file's owner is this process's effective user.
    if !created.metadata().is_ok_and(|m| m.uid() == 0) {
        return;
    }
    let database = file
        .to_str()
        .and_then(|f| f.strip_suffix(DATABASE_TAIL))
        .map(PathBuf::from)
        .filter(|db| db.exists());
    let owner_of = database.unwrap_or_else(|| {
        file.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned()
    });
    super::backup::keep_owner(&owner_of, file);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_database_whose_lock_is_the_data_directory_lock_is_locked_once_and_still_held() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // `<data_dir>/kassa` + `.lock` is `<data_dir>/kassa.lock`.
        let target = DbTarget::Sqlite(data.join("kassa"));

        let lock = ServerLock::acquire(&data, &target).unwrap();

        let again = ServerLock::acquire(&data, &DbTarget::Sqlite(dir.path().join("other.db")));
        assert!(matches!(again, Err(LockError::Held { .. })), "{again:?}");
        drop(lock);
        ServerLock::acquire(&data, &target).unwrap();
    }

    #[test]
    fn a_database_that_is_a_directory_is_refused_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();

        let refused = ServerLock::acquire(&dir.path().join("data"), &DbTarget::Sqlite(db.clone()));

        let err = refused.unwrap_err();
        assert!(matches!(err, LockError::Directory { .. }), "{err:?}");
        assert!(err.to_string().contains("names a directory"), "{err}");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        left.sort();
        assert_eq!(left, ["db"]);
        assert_eq!(std::fs::read_dir(&db).unwrap().count(), 0);
    }

    #[test]
    fn a_lock_file_root_creates_belongs_to_the_databases_owner() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("shop.db");
        std::fs::write(&db, b"").unwrap();
        // As root, the database belongs to another user, as under a systemd DynamicUser;
        // otherwise only the restoring user's own files can be tested.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if root {
            std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
        }
        let owner = std::fs::metadata(&db).unwrap();

        let lock = ServerLock::acquire(&dir.path().join("data"), &DbTarget::Sqlite(db.clone())).unwrap();

        let file = std::fs::metadata(with_lock_tail(&db)).unwrap();
        assert_eq!((file.uid(), file.gid()), (owner.uid(), owner.gid()));
        assert_eq!(file.mode() & 0o777, 0o600);
        if root {
            assert_eq!((file.uid(), file.gid()), (65534, 65534));
        }
        drop(lock);
    }

    fn with_lock_tail(db: &Path) -> PathBuf {
        database_lock_file(db).unwrap()
    }
}
