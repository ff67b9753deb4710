//! What the service, the jobs and the webhooks work with: the database, the payment
//! providers, the clock, the settings and the hook that hears about every applied
//! transition. The web surfaces wrap it (`http::state::AppState`); nothing here knows
//! about HTTP.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::config::Settings;
use crate::db::{Database, RemoteChange};
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

/// What wakes a listener of `PostCommit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// A transition of this order committed.
    Order(OrderId),
    /// Changes may have been missed (another instance's were not heard for a while):
    /// every listener re-reads what it watches.
    All,
}

impl Changed {
    /// Whether a listener watching `order` must re-read it.
    pub fn concerns(&self, order: &OrderId) -> bool {
        match self {
            Changed::Order(id) => id == order,
            Changed::All => true,
        }
    }
}

/// Told after the commit of every applied transition, whoever caused it. It counts the
/// transition for `/metrics` and wakes open checkout pages and the webhook dispatchers
/// (an in-process broadcast; listeners always re-read the order row, so a missed signal
/// only delays them). With `follow`, other instances' transitions wake them too.
#[derive(Clone)]
pub struct PostCommit {
    changed: broadcast::Sender<Changed>,
    metrics: Arc<Metrics>,
}

impl PostCommit {
    pub fn new(metrics: Arc<Metrics>) -> PostCommit {
        PostCommit {
            changed: broadcast::channel(1024).0,
            metrics,
        }
    }

    /// Passes the order changes every instance on the database commits
    /// (`Database::remote_changes`) to this process's listeners, on a task of the
    /// current runtime that ends when the database does. This instance's own changes
    /// come back this way too: a listener then re-reads the order once more (an open
    /// checkout page of that order, a dispatcher's look for due deliveries), which is
    /// the price of not telling its own from others' in the channel. Nothing is
    /// counted in `/metrics`: the instance that applied a change counts it.
    pub fn follow(&self, mut remote: broadcast::Receiver<RemoteChange>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("other instances' order changes are not followed: no runtime to follow them on");
            return;
        };
        let changed = self.changed.clone();
        runtime.spawn(async move {
            loop {
                let signal = match remote.recv().await {
                    Ok(RemoteChange::Order(id)) => Changed::Order(id),
                    Ok(RemoteChange::Resync) => Changed::All,
                    // Fell behind: whatever was dropped may concern anyone.
                    Err(broadcast::error::RecvError::Lagged(_)) => Changed::All,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                // No listener is fine.
                let _ = changed.send(signal);
            }
        });
    }

    /// `order` is as committed; it came from `from`, caused by `source`.
    pub fn applied(&self, order: &Order, from: OrderStatus, source: TransitionSource) {
        tracing::debug!(order_id = %order.id, %from, to = %order.status, source = source.as_str(), "transition committed");
        self.metrics
            .transition(from.as_str(), order.status.as_str(), source.as_str());
        // No listener is fine.
        let _ = self.changed.send(Changed::Order(order.id.clone()));
    }

    /// Orders as their transitions commit.
    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(signals: &mut broadcast::Receiver<Changed>) -> Changed {
        tokio::time::timeout(std::time::Duration::from_secs(5), signals.recv())
            .await
            .expect("a signal within 5 s")
            .expect("the hook runs")
    }

    #[tokio::test]
    async fn followed_changes_reach_the_listeners_and_a_resync_or_a_lag_wakes_every_one() {
        let hooks = PostCommit::new(Arc::new(Metrics::default()));
        let mut signals = hooks.subscribe();
        let (remote, followed) = broadcast::channel(4);
        hooks.follow(followed);
        let (a, b) = (OrderId::generate(), OrderId::generate());

        remote.send(RemoteChange::Order(a.clone())).unwrap();
        let heard = next(&mut signals).await;
        assert_eq!(heard, Changed::Order(a.clone()));
        assert!(heard.concerns(&a) && !heard.concerns(&b));

        remote.send(RemoteChange::Resync).unwrap();
        let heard = next(&mut signals).await;
        assert_eq!(heard, Changed::All);
        assert!(heard.concerns(&a) && heard.concerns(&b));

        // More than the follower keeps, sent before it runs again: it lagged, and
        // whatever it dropped may have concerned anyone.
        for _ in 0..10 {
            remote.send(RemoteChange::Order(b.clone())).unwrap();
        }
        assert_eq!(next(&mut signals).await, Changed::All);
    }
}
