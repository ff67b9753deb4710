//! Catches what a lost notification would leave behind: pending orders are queried at
//! their provider at +1, +5, +15 min and +1 h after creation, and pending refunds
//! whose outcome was unknown are settled. Queries are capped per minute so a backlog
//! never floods a provider.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};

use crate::db::transitions::{self, Cause, Change};
use crate::db::{orders, DbError};
use crate::domain::TransitionSource;
use crate::providers::TradeState;
use crate::service::refunds;
use crate::state::AppState;

/// Provider queries one pass may make.
pub const MAX_QUERIES_PER_RUN: u32 = 30;
const PASS_EVERY: StdDuration = StdDuration::from_secs(30);
/// A pending refund is retried this long after its last attempt.
pub const REFUND_RETRY_AFTER: Duration = Duration::seconds(60);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChecksReport {
    pub orders_checked: usize,
    pub orders_paid: usize,
    pub refunds_settled: usize,
}

/// One pass: at most `MAX_QUERIES_PER_RUN` order queries plus the refunds due.
pub async fn try_run_once(state: &AppState, now: DateTime<Utc>) -> Result<ChecksReport, DbError> {
    let mut report = ChecksReport::default();
    let due = state
        .db
        .read(move |c| orders::list_due_for_check(c, now, MAX_QUERIES_PER_RUN))
        .await?;
    for order in due {
        let Some(provider) = state.providers.get(order.provider).cloned() else {
            continue;
        };
        report.orders_checked += 1;
        let answer = provider.query(&order).await;
        let id = order.id.clone();
        let public_url = state.public_url().to_owned();
        let paid = match answer {
            Ok(TradeState::Paid(facts)) if facts.amount == order.amount.minor() => Some(facts),
            Ok(TradeState::Paid(facts)) => {
                tracing::warn!(order_id = %order.id, reported = facts.amount, "provider reports a different paid amount");
                None
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(order_id = %order.id, error = %e, "late-notification check failed");
                None
            }
        };
        let applied = state
            .db
            .write(move |c| {
                orders::record_check(c, &id)?;
                let Some(facts) = paid else {
                    return Ok(false);
                };
                let change = Change::Pay {
                    provider_trade_no: facts.provider_trade_no,
                    paid_at: facts.paid_at.unwrap_or(now),
                };
                let mut cause = Cause::system(TransitionSource::ProviderQuery);
                cause.detail = Some("found paid by the late-notification check".into());
                let outcome = transitions::apply(c, &id, &change, &cause, now, &public_url)?;
                Ok(matches!(outcome, transitions::Outcome::Applied { .. }))
            })
            .await?;
        if applied {
            state.signals.changed(&order.id);
        }
        report.orders_paid += usize::from(applied);
    }
    report.refunds_settled = refunds::settle_pending(state, now, now - REFUND_RETRY_AFTER).await?;
    Ok(report)
}

pub async fn run(state: AppState) {
    loop {
        if let Err(e) = try_run_once(&state, state.clock.now()).await {
            tracing::error!(error = %e, "provider checks failed");
        }
        tokio::time::sleep(PASS_EVERY).await;
    }
}
