//! The merchant API's rate limits: failed key checks per client address, always on, and
//! requests per API key when `[server] api_rate_limit` is set. Counted for every instance
//! on one database together (`LimitStore`).

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::config::ServerSettings;
use crate::db::Database;
use crate::metrics::Metrics;
use crate::service::rate_limit::{address_key, LimitStore, Limited, Rate};

/// Wrong keys an address may send in a minute: room for a shop that mistyped its key
/// and retries, while a guesser (against 40 random base62 characters) gets nowhere and
/// a flood of wrong keys stops costing a database read each.
pub const FAILED_AUTH: Rate = Rate {
    count: 20,
    per: Duration::minutes(1),
};

/// Addresses (or API keys) remembered at most per limit: a stranger with many addresses
/// cannot grow the map past this, whatever it sends.
pub const CAPACITY: usize = 10_000;

pub struct ApiLimits {
    failed_auth: LimitStore<IpAddr>,
    per_key: Option<LimitStore<i64>>,
}

impl ApiLimits {
    pub fn new(settings: &ServerSettings, metrics: Arc<Metrics>, db: &Database) -> ApiLimits {
        ApiLimits {
            failed_auth: LimitStore::new("api_auth", FAILED_AUTH, CAPACITY, metrics.clone(), db),
            per_key: settings
                .api_rate_limit
                .map(|rate| LimitStore::new("api", rate, CAPACITY, metrics, db)),
        }
    }

    /// Refused while `address` is past its failed checks. Every request is checked
    /// before its key is, a correct key included: were a correct key let through, a
    /// guesser would keep guessing at full speed, each 429 telling it "wrong" as well
    /// as a 401 would.
    pub async fn check_address(&self, address: Option<IpAddr>, now: DateTime<Utc>) -> Result<(), Limited> {
        match address {
            Some(ip) => self.failed_auth.check(&address_key(ip), now).await,
            None => Ok(()),
        }
    }

    /// `address` sent a key that does not check out.
    pub async fn failed(&self, address: Option<IpAddr>, now: DateTime<Utc>) {
        if let Some(ip) = address {
            self.failed_auth.record(address_key(ip), now).await;
        }
    }

    /// Counts one request of the key `key_id` against `api_rate_limit`, if set.
    pub async fn check_key(&self, key_id: i64, now: DateTime<Utc>) -> Result<(), Limited> {
        match &self.per_key {
            Some(limiter) => limiter.hit(key_id, now).await,
            None => Ok(()),
        }
    }
}
