//! Settles refunds whose outcome was not known when they were asked for: each is
//! queried at its provider a minute after its last try, and retried with the same
//! request number when the provider never saw it.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use crate::core::Core;
use crate::db::DbError;
use crate::service::refunds;

/// A pending refund is retried this long after its last attempt.
pub const RETRY_AFTER: Duration = Duration::seconds(60);
const PASS_EVERY: StdDuration = StdDuration::from_secs(30);
/// The job's lease (`jobs::lease`).
pub const LEASE: &str = "refund-settlement";

/// One pass over the refunds due; returns how many were settled.
pub async fn try_run_once(core: &Core, now: DateTime<Utc>) -> Result<usize, DbError> {
    refunds::settle_pending(core, now, now - RETRY_AFTER).await
}

/// `try_run_once` while this process holds the job's lease; `None` when another does.
pub async fn pass(core: &Core, now: DateTime<Utc>) -> Result<Option<usize>, DbError> {
    super::lease::run_leased(core, LEASE, now, try_run_once(core, now)).await
}

pub async fn run(core: Core) {
    loop {
        if let Err(e) = pass(&core, core.now()).await {
            tracing::error!(error = %e, "refund settlement failed");
        }
        tokio::time::sleep(PASS_EVERY).await;
    }
}
