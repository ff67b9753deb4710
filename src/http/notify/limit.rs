//! `[notifications] rejected_rate_limit`: notifications that fail verification, per
//! client address.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::NotificationSettings;
use crate::db::Database;
use crate::metrics::Metrics;
use crate::service::rate_limit::{address_key, LimitStore, Limited};

/// Addresses remembered at most by the limit: a stranger with many addresses cannot grow
/// it past this.
const LIMIT_CAPACITY: usize = 10_000;

/// `[notifications] rejected_rate_limit`: notifications that fail verification, per
/// client address. Only failures count and only failures are refused: a platform's
/// genuine notification must get through whatever else comes from its address (a
/// proxy, a NAT shared with a stranger), so it is verified before the limit is asked.
pub struct RejectedLimit(Option<LimitStore<IpAddr>>);

impl RejectedLimit {
    pub fn new(settings: &NotificationSettings, metrics: Arc<Metrics>, db: &Database) -> RejectedLimit {
        RejectedLimit(
            settings
                .rejected_rate_limit
                .map(|rate| LimitStore::new("notify", rate, LIMIT_CAPACITY, metrics, db)),
        )
    }

    /// Counts one notification from `client` that failed verification; refused (not to
    /// be stored) once the client has sent its window's worth.
    pub async fn failed(&self, client: Option<IpAddr>, now: DateTime<Utc>) -> Result<(), Limited> {
        match (&self.0, client) {
            (Some(limiter), Some(ip)) => limiter.hit(address_key(ip), now).await,
            _ => Ok(()),
        }
    }
}
