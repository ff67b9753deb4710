//! `<data_dir>/kassa.lock`: a running server holds an exclusive advisory lock on it for
//! its whole life, so that `kassa restore` (which takes the same lock) can tell that a
//! server uses the database, and a second server on the same data directory is refused.
//!
//! A lock, not a pid file: the operating system drops it when the process ends, however
//! it ends (`kill -9` included), so a stale file never blocks anything.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock file's name inside the data directory.
pub const FILE_NAME: &str = "kassa.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("a kassa server is running on {dir} (it holds an exclusive lock on {file}); stop it first", dir = .dir.display(), file = .file.display())]
    Held { dir: PathBuf, file: PathBuf },
    #[error("cannot lock {file}: {reason}", file = .file.display())]
    Io { file: PathBuf, reason: String },
}

/// Held while this value lives; released when it is dropped (or the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (created if needed), without waiting.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let file = data_dir.join(FILE_NAME);
        let io = |e: std::io::Error| LockError::Io {
            file: file.clone(),
            reason: e.to_string(),
        };
        super::create_private_dir(data_dir).map_err(io)?;
        let handle = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&file)
            .map_err(io)?;
        match handle.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: handle }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held {
                dir: data_dir.to_owned(),
                file,
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }
}
