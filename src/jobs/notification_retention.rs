//! `[notifications] keep_rejected`: notifications that failed verification are deleted
//! once older than that. Anyone can send those, so keeping them forever would let the
//! disk fill at a stranger's pace; verified ones (whatever their verdict) are kept
//! forever, and so is any row history names.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use crate::core::Core;
use crate::db::{notifications, DbError};

/// Rows one statement deletes: a batch is one short write, and other writes (payments)
/// take their turn between batches.
pub const BATCH: u32 = 500;
pub const PASS_EVERY: StdDuration = StdDuration::from_secs(60 * 60);
/// The job's lease (`jobs::lease`).
pub const LEASE: &str = "notification-retention";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    pub deleted: usize,
    /// Delete statements run, the last one finding less than `BATCH` rows.
    pub batches: usize,
}

/// One pass: deletes every notification that failed verification and was received more
/// than `keep` before `now`, `BATCH` rows a write.
pub async fn try_run_once(
    core: &Core,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<RetentionReport, DbError> {
    let before = now - keep;
    let mut report = RetentionReport::default();
    loop {
        let deleted = core
            .db
            .write(move |tx| notifications::delete_unverified_before(tx, before, BATCH))
            .await?;
        report.deleted += deleted;
        report.batches += 1;
        if deleted < BATCH as usize {
            break;
        }
        tokio::task::yield_now().await;
    }
    tracing::info!(
        deleted = report.deleted,
        batches = report.batches,
        older_than = %before.to_rfc3339(),
        "deleted notifications that failed verification ([notifications] keep_rejected)"
    );
    Ok(report)
}

/// `try_run_once` while this process holds the job's lease; `None` when another does.
pub async fn pass(
    core: &Core,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<Option<RetentionReport>, DbError> {
    super::lease::run_leased(core, LEASE, now, try_run_once(core, keep, now)).await
}

pub async fn run(core: Core, keep: Duration) {
    loop {
        if let Err(e) = pass(&core, keep, core.now()).await {
            tracing::error!(error = %e, "deleting old rejected notifications failed");
        }
        tokio::time::sleep(PASS_EVERY).await;
    }
}
