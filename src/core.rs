//! What the service, the jobs and the webhooks work with: the database, the payment
//! providers, the clock, the settings and the hook that hears about every applied
//! transition. The web surfaces wrap it (`http::state::AppState`); nothing here knows
//! about HTTP.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::config::Settings;
use crate::db::Database;
use crate::domain::{Clock, Order, OrderId, OrderStatus, TransitionSource};
use crate::metrics::Metrics;
use crate::providers::Providers;

#[derive(Clone)]
pub struct Core {
    pub db: Database,
    pub providers: Providers,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<Settings>,
    pub hooks: PostCommit,
    /// What `/metrics` shows; this app's own, never a process-wide registry.
    pub metrics: Arc<Metrics>,
    /// This process, as named in what it holds in the database (job leases, webhook and
    /// sandbox delivery claims).
    pub instance: InstanceId,
}

impl Core {
    /// Base of checkout links and notify URLs.
    pub fn public_url(&self) -> &str {
        &self.settings.server.public_url
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// Names one running process in the shared database: random per start (`inst_` and 16
/// base62 characters), so a restarted process never takes a dead one's leases or claims
/// for its own, and two processes on one database never share a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    pub fn generate() -> InstanceId {
        InstanceId(format!("inst_{}", crate::domain::ids::random_base62(16)).into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Told after the commit of every applied transition, whoever caused it. It counts the
/// transition for `/metrics` and wakes open checkout pages and the webhook dispatchers
/// (an in-process broadcast; listeners always re-read the order row, so a missed signal
/// only delays them).
#[derive(Clone)]
pub struct PostCommit {
    changed: broadcast::Sender<OrderId>,
    metrics: Arc<Metrics>,
}

impl PostCommit {
    pub fn new(metrics: Arc<Metrics>) -> PostCommit {
        PostCommit {
            changed: broadcast::channel(1024).0,
            metrics,
        }
    }

    /// `order` is as committed; it came from `from`, caused by `source`.
    pub fn applied(&self, order: &Order, from: OrderStatus, source: TransitionSource) {
        tracing::debug!(order_id = %order.id, %from, to = %order.status, source = source.as_str(), "transition committed");
        self.metrics
            .transition(from.as_str(), order.status.as_str(), source.as_str());
        // No listener is fine.
        let _ = self.changed.send(order.id.clone());
    }

    /// The ids of orders as their transitions commit.
    pub fn subscribe(&self) -> broadcast::Receiver<OrderId> {
        self.changed.subscribe()
    }
}
