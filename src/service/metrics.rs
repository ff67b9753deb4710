//! `/metrics`: the counters as they stand, with the database gauges (orders by status,
//! the webhook outbox) read again at most every `metrics::COUNTS_MAX_AGE`, so a
//! scraper that asks often costs no more than one that asks every 15 s.

use crate::core::Core;
use crate::db::{overview, DbError};
use crate::domain::provider_call::{CallOutcome, ProviderCall};
use crate::domain::{ProviderKind, Reason};
use crate::metrics::{Counts, Metrics};
use crate::webhooks::dispatcher::Outcome;

/// The OpenMetrics text (`metrics::CONTENT_TYPE`). When the database cannot be read,
/// the gauges keep their last values and the next scrape tries again.
pub async fn render(core: &Core) -> String {
    let read = || async {
        let g = core.db.read(overview::gauges).await?;
        Ok::<_, DbError>(Counts {
            orders: g.orders.iter().map(|(status, n)| (status.as_str(), *n)).collect(),
            outbox_pending: g.outbox_pending,
            outbox_failed: g.outbox_failed,
        })
    };
    if let Err(e) = core.metrics.refresh_counts(read).await {
        tracing::warn!(error = %e, "cannot count orders and webhook deliveries for /metrics; showing the last counts");
    }
    core.metrics.render()
}

/// Shows every counter series with known labels at 0 from the start (see
/// `Metrics::declare_notification`): notifications by provider and reason, provider
/// calls, webhook attempts. Transitions and requests appear with their first count.
pub fn declare(metrics: &Metrics) {
    for provider in [ProviderKind::Alipay, ProviderKind::Wechat] {
        for reason in Reason::all() {
            metrics.declare_notification(provider.as_str(), reason.verdict().as_str(), reason.code());
        }
        for &call in ProviderCall::ALL {
            for &outcome in CallOutcome::ALL {
                metrics.declare_provider_call(provider.as_str(), call.as_str(), outcome.as_str());
            }
        }
    }
    for outcome in [Outcome::Delivered, Outcome::Retried, Outcome::Failed] {
        metrics.declare_webhook_attempt(outcome.as_str());
    }
}
