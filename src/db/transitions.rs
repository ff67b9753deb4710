//! The one place an order's status changes. Each change is a single guarded
//! `UPDATE … WHERE id = ? AND status IN (…)` whose affected-row count decides the
//! outcome, written together with its history row. Callers run it inside one
//! transaction and queue the webhook it announces in the same one
//! (`service::changes` does both).

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::history::{self, Cause, HistoryOutcome, Recorded};
use super::orders;
use super::types::{sql_list, to_millis};
use super::{DbResult, Tx};
use crate::domain::{Order, OrderId, OrderStatus, Transition};

/// A transition together with the facts it records.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Pay {
        provider_trade_no: Option<String>,
        paid_at: DateTime<Utc>,
    },
    Close,
    /// A refund of `amount` minor units that succeeded at the provider.
    Refund {
        amount: i64,
    },
}

impl Change {
    pub fn transition(&self) -> Transition {
        match self {
            Change::Pay { .. } => Transition::Pay,
            Change::Close => Transition::Close,
            Change::Refund { .. } => Transition::Refund,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Applied {
        from: OrderStatus,
        order: Order,
    },
    /// The order already shows this change (a repeated notification, a second close).
    Duplicate {
        order: Order,
    },
    /// The change is not allowed from the order's status; recorded in its history.
    Refused {
        order: Order,
    },
    NotFound,
}

/// Applies `change` to the order and records it in the order's history.
pub fn apply(
    tx: &Tx<'_>,
    order_id: &OrderId,
    change: &Change,
    cause: &Cause,
    now: DateTime<Utc>,
) -> DbResult<Outcome> {
    let transition = change.transition();
    let allowed = sql_list(transition.allowed_from().iter().map(|s| s.as_str()));
    let at = to_millis(now);
    let from: Option<OrderStatus> = match change {
        Change::Pay {
            provider_trade_no,
            paid_at,
        } => tx
            .conn
            .prepare_cached(&format!(
                "UPDATE orders SET status = 'paid', late_payment = (status = 'closed'), paid_at = ?2, \
                 provider_trade_no = COALESCE(?3, provider_trade_no), updated_at = ?4 \
                 WHERE id = ?1 AND status IN ({allowed}) RETURNING late_payment"
            ))?
            .query_row(
                params![order_id, to_millis(*paid_at), provider_trade_no, at],
                |r| r.get::<_, bool>(0),
            )
            .optional()?
            .map(|late| if late { OrderStatus::Closed } else { OrderStatus::Pending }),
        Change::Close => tx
            .conn
            .prepare_cached(&format!(
                "UPDATE orders SET status = 'closed', closed_at = ?2, updated_at = ?2 \
                 WHERE id = ?1 AND status IN ({allowed}) RETURNING 1"
            ))?
            .query_row(params![order_id, at], |_| Ok(OrderStatus::Pending))
            .optional()?,
        Change::Refund { amount } => tx
            .conn
            .prepare_cached(&format!(
                "UPDATE orders SET refunded_amount = refunded_amount + ?2, \
                 status = CASE WHEN refunded_amount + ?2 >= amount THEN 'refunded' ELSE 'partially_refunded' END, \
                 updated_at = ?3 \
                 WHERE id = ?1 AND status IN ({allowed}) AND ?2 > 0 AND refunded_amount + ?2 <= amount \
                 RETURNING refunded_amount - ?2"
            ))?
            .query_row(params![order_id, amount, at], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|before| if before == 0 { OrderStatus::Paid } else { OrderStatus::PartiallyRefunded }),
    };

    let Some(order) = orders::find_by_id(tx, order_id)? else {
        return Ok(Outcome::NotFound);
    };
    let recorded = |outcome, from, to| Recorded {
        order_id,
        transition,
        outcome,
        from,
        to,
        cause,
        at: now,
    };
    let Some(from) = from else {
        if transition.already_applied(order.status) {
            return Ok(Outcome::Duplicate { order });
        }
        let target = transition.targets()[0];
        history::record(tx, &recorded(HistoryOutcome::Refused, order.status, target))?;
        return Ok(Outcome::Refused { order });
    };
    history::record(tx, &recorded(HistoryOutcome::Applied, from, order.status))?;
    Ok(Outcome::Applied { from, order })
}
