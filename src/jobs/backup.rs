//! Periodic backups (`[backup] interval`): a checked online copy into
//! `<data_dir>/backups/` every interval, keeping the newest `[backup] keep`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::core::Core;
use crate::db::backup::{self, BackupError};

/// What one round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub written: PathBuf,
    /// Older backups deleted to keep `[backup] keep`.
    pub deleted: Vec<PathBuf>,
}

/// Where the periodic backups go.
pub fn directory(core: &Core) -> PathBuf {
    core.settings.server.data_dir.join(backup::PERIODIC_DIR)
}

/// One round: a backup named for `now`, checked, then the rotation. A failure is logged
/// and counted, and leaves no file under a backup's name.
pub async fn try_run_once(core: &Core, now: DateTime<Utc>) -> Result<BackupReport, BackupError> {
    // The copy holds a database handle: a shutdown waits for it to end (and close its
    // connection) before the last checkpoint.
    let db = core.db.clone();
    let dir = directory(core);
    let keep = usize::try_from(core.settings.backup.keep).unwrap_or(usize::MAX);
    let done = tokio::task::spawn_blocking(move || {
        let written = backup::write_periodic(db.target().sqlite_file()?, &dir, now)?;
        let deleted = backup::rotate(&dir, keep, &written)?;
        drop(db);
        Ok(BackupReport { written, deleted })
    })
    .await
    .unwrap_or_else(|e| Err(BackupError::Db(crate::db::DbError::Task(e.to_string()))));
    core.metrics.backup_finished(done.is_ok(), now);
    match &done {
        Ok(report) => tracing::info!(
            file = %report.written.display(),
            deleted = report.deleted.len(),
            "periodic backup written and checked"
        ),
        Err(e) => tracing::error!(error = %e, "periodic backup failed"),
    }
    done
}

/// The job's lease (`jobs::lease`).
pub const LEASE: &str = "backup";

/// `try_run_once` while this process holds the backup lease; `None` when another
/// process does, and nothing was written.
pub async fn pass(
    core: &Core,
    now: DateTime<Utc>,
) -> Result<Option<Result<BackupReport, BackupError>>, crate::db::DbError> {
    super::lease::run_leased(core, LEASE, now, async { Ok(try_run_once(core, now).await) }).await
}

/// Runs a round every `interval`, counted from the newest periodic backup already in
/// the directory: a service restarted more often than `interval` still backs up, and
/// with no backup yet the first round runs at once. The newest backup is looked at
/// again before each round, so a round another process wrote meanwhile counts.
pub async fn run(core: Core, interval: std::time::Duration) {
    // Config load drops `[backup] interval` on PostgreSQL; settings made another way
    // must not have this job fail (and be restarted) every round. Said once, then idle:
    // a job that ended would be restarted and say it again.
    if core.db.sqlite_path().is_none() {
        tracing::warn!(
            "periodic backups copy a SQLite file; on PostgreSQL back up with pg_dump (see README, Backing up and restoring)"
        );
        return std::future::pending().await;
    }
    let mut wait = first_wait(&core, interval).await;
    loop {
        tokio::time::sleep(wait).await;
        let left = first_wait(&core, interval).await;
        if !left.is_zero() {
            wait = left;
            continue;
        }
        wait = after_round(&core, &pass(&core, core.now()).await, interval);
    }
}

/// How long `run` waits after a round that ended as `round` (a `pass`).
pub fn after_round<T>(
    core: &Core,
    round: &Result<Option<T>, crate::db::DbError>,
    interval: std::time::Duration,
) -> std::time::Duration {
    let retry = super::lease::TTL.to_std().unwrap_or(interval);
    match round {
        // Written or failed (logged and counted): the next round after `interval`.
        Ok(Some(_)) => interval,
        // Another process holds the lease: try again once it would have run out.
        Ok(None) => retry,
        // Counted as a failed round, and tried again as soon as the lease could be
        // taken, not a whole interval later.
        Err(e) => {
            tracing::error!(error = %e, "cannot take the backup job's lease");
            core.metrics.backup_finished(false, core.now());
            retry
        }
    }
}

/// How long until the first round: what is left of `interval` since the newest periodic
/// backup, whose time also goes into the metrics so that the backup-age alert does not
/// see a restart as a backup missing since 1970.
async fn first_wait(core: &Core, interval: std::time::Duration) -> std::time::Duration {
    let dir = directory(core);
    let newest = tokio::task::spawn_blocking(move || newest_periodic(&dir))
        .await
        .unwrap_or_else(|e| Err(crate::db::DbError::Task(e.to_string())));
    match newest {
        Ok(Some(at)) => {
            core.metrics.backup_seen(at);
            // A backup dated after now (the clock stepped back) counts as just taken.
            let age = (core.now() - at).to_std().unwrap_or_default();
            interval.saturating_sub(age)
        }
        Ok(None) => std::time::Duration::ZERO,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the periodic backups; backing up now");
            std::time::Duration::ZERO
        }
    }
}

/// When the newest periodic backup in `dir` was taken, by its name.
fn newest_periodic(dir: &std::path::Path) -> Result<Option<DateTime<Utc>>, crate::db::DbError> {
    let files = backup::list_periodic(dir)?;
    Ok(files.last().and_then(|newest| {
        let name = newest.file_name()?.to_str()?;
        backup::parse_periodic_name(name).map(|(at, _)| at.and_utc())
    }))
}
