//! Closes pending orders whose time is up, through the same close path as the API:
//! the provider is asked first, so a payment whose notification was lost is recorded
//! as paid instead of being closed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use crate::core::Core;
use crate::db::history::Cause;
use crate::db::{orders, DbError};
use crate::domain::{OrderId, TransitionSource};
use crate::service::orders::{close, CloseError};

const BATCH: u32 = 200;
/// How long an order whose provider could not be reached waits before the next try.
const RETRY_AFTER: Duration = Duration::seconds(60);
const IDLE_SLEEP: StdDuration = StdDuration::from_secs(5);
/// The job's lease (`jobs::lease`).
pub const LEASE: &str = "expiry";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryReport {
    pub closed: usize,
    /// Found paid at the provider while expiring.
    pub paid: usize,
    /// Left pending for now (provider unreachable or outcome unknown).
    pub deferred: usize,
}

impl ExpiryReport {
    pub fn is_empty(&self) -> bool {
        self.closed == 0 && self.paid == 0
    }
}

pub struct ExpiryWorker {
    core: Core,
    retry_at: Mutex<HashMap<OrderId, DateTime<Utc>>>,
}

impl ExpiryWorker {
    pub fn new(core: Core) -> Self {
        ExpiryWorker {
            core,
            retry_at: Mutex::new(HashMap::new()),
        }
    }

    fn waiting(&self, id: &OrderId, now: DateTime<Utc>) -> bool {
        let map = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).is_some_and(|t| *t > now)
    }

    fn defer(&self, id: &OrderId, now: DateTime<Utc>) {
        let mut map = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(id.clone(), now + RETRY_AFTER);
    }

    pub async fn try_run_once(&self, now: DateTime<Utc>) -> Result<ExpiryReport, DbError> {
        let due = self
            .core
            .db
            .read(move |c| orders::list_due_for_expiry(c, now, BATCH))
            .await?;
        let mut report = ExpiryReport::default();
        for order in due {
            if self.waiting(&order.id, now) {
                report.deferred += 1;
                continue;
            }
            let cause = Cause::system(TransitionSource::Expiry);
            match close(&self.core, &order.id, cause, now).await {
                Ok(_) => report.closed += 1,
                Err(CloseError::TurnedOutPaid(_)) => report.paid += 1,
                // Paid (or gone) since the sweep read it: a notification won the race.
                Err(CloseError::Illegal(_) | CloseError::NotFound) => {}
                Err(CloseError::Db(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(order_id = %order.id, error = %e, "expiry deferred");
                    self.defer(&order.id, now);
                    report.deferred += 1;
                }
            }
        }
        let mut map = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, t| *t > now);
        Ok(report)
    }

    /// `try_run_once` while this process holds the expiry lease; `None` when another
    /// does, and nothing ran.
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<Option<ExpiryReport>, DbError> {
        super::lease::run_leased(&self.core, LEASE, now, self.try_run_once(now)).await
    }

    pub async fn run(self) {
        loop {
            let now = self.core.now();
            match self.pass(now).await {
                Ok(Some(report)) if !report.is_empty() => continue,
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
            }
            tokio::time::sleep(IDLE_SLEEP).await;
        }
    }
}
