//! Catches what a lost notification would leave behind: pending orders are queried at
//! their provider at +1, +5, +15 min and +1 h after creation, and a paid one is
//! recorded as paid. Queries are capped per pass so a backlog never floods a provider.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Utc};

use crate::core::Core;
use crate::db::history::Cause;
use crate::db::transitions::Outcome;
use crate::db::{orders, DbError};
use crate::domain::TransitionSource;
use crate::providers::TradeState;
use crate::service::orders::pay_change;
use crate::service::{changes, provider_calls};

/// Provider queries one pass may make.
pub const MAX_QUERIES_PER_RUN: u32 = 30;
pub const PASS_EVERY: StdDuration = StdDuration::from_secs(30);
/// The job's lease (`jobs::lease`).
pub const LEASE: &str = "late-checks";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LateChecksReport {
    pub orders_checked: usize,
    pub orders_paid: usize,
}

/// One pass: at most `MAX_QUERIES_PER_RUN` order queries.
pub async fn try_run_once(core: &Core, now: DateTime<Utc>) -> Result<LateChecksReport, DbError> {
    let mut report = LateChecksReport::default();
    let due = core
        .db
        .read(move |c| orders::list_due_for_check(c, now, MAX_QUERIES_PER_RUN))
        .await?;
    for due in due {
        let (order, seen) = (due.order, due.checks_done);
        let Some(provider) = core.providers.get(order.provider).cloned() else {
            continue;
        };
        report.orders_checked += 1;
        let paid = match provider_calls::query(core, provider.as_ref(), &order).await {
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
        let id = order.id.clone();
        let applied = changes::write(core, move |c, changes| {
            // Refused when another process recorded this step meanwhile; what either
            // found paid still applies, through the guarded transition.
            orders::record_check(c, &id, seen)?;
            let Some(facts) = paid else {
                return Ok(false);
            };
            let change = pay_change(facts, now);
            let cause = Cause::system_because(
                TransitionSource::ProviderQuery,
                "found paid by the late-notification check",
            );
            let outcome = changes.apply(c, &id, &change, &cause, now)?;
            Ok(matches!(outcome, Outcome::Applied { .. }))
        })
        .await?;
        report.orders_paid += usize::from(applied);
    }
    Ok(report)
}

/// `try_run_once` while this process holds the job's lease; `None` when another does.
pub async fn pass(core: &Core, now: DateTime<Utc>) -> Result<Option<LateChecksReport>, DbError> {
    super::lease::run_leased(core, LEASE, now, try_run_once(core, now)).await
}

pub async fn run(core: Core) {
    loop {
        if let Err(e) = pass(&core, core.now()).await {
            tracing::error!(error = %e, "late-notification checks failed");
        }
        tokio::time::sleep(PASS_EVERY).await;
    }
}
