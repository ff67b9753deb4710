//! The one place an order's status changes. Each change is a single guarded
//! `UPDATE … WHERE id = ? AND status IN (…) RETURNING …` whose returned row decides the
//! outcome (and is the order as changed: no second read), written together with its
//! history row. Callers run it inside one transaction and queue the webhook it
//! announces in the same one (`service::changes` does both).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::history::{self, Cause, HistoryOutcome, Recorded};
use super::orders;
use super::types::{sql_list, to_millis};
use super::{DbResult, Tx};
use crate::domain::{Amount, Currency, Order, OrderId, OrderStatus, ProviderKind, Transition};

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

/// What a change must find besides an allowed status, or it does not apply: a
/// payment platform's notice names its platform and, for a payment, the amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub provider: ProviderKind,
    pub amount: Option<Amount>,
}

/// The order as a change that did not apply found it: enough to say why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub status: OrderStatus,
    pub provider: ProviderKind,
    pub amount: i64,
    pub currency: Currency,
}

// Returned once per change and taken apart at once: boxing the order would only add
// an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// Applied and recorded in the history.
    Applied { from: OrderStatus, order: Order },
    /// Nothing changed and nothing was recorded; `None` when there is no such order.
    NotApplied(Option<Found>),
}

/// One statement per transition, built once: the guarded UPDATE, optionally also
/// requiring the provider (`?5`) and the amount and currency (`?6`, `?7`), returning
/// the changed row and, last, what tells the status it left.
fn update_sql(transition: Transition) -> &'static str {
    fn build(transition: Transition) -> String {
        let allowed = sql_list(transition.allowed_from().iter().map(|s| s.as_str()));
        let (set, from) = match transition {
            Transition::Pay => (
                "status = 'paid', late_payment = (status = 'closed'), paid_at = ?2, \
                 provider_trade_no = COALESCE(?3, provider_trade_no), updated_at = ?4",
                "late_payment",
            ),
            Transition::Close => ("status = 'closed', closed_at = ?4, updated_at = ?4", "0"),
            Transition::Refund => (
                "refunded_amount = refunded_amount + ?2, \
                 status = CASE WHEN refunded_amount + ?2 >= amount THEN 'refunded' ELSE 'partially_refunded' END, \
                 updated_at = ?4",
                "refunded_amount - ?2",
            ),
        };
        let refund_guard = if transition == Transition::Refund {
            " AND ?2 > 0 AND refunded_amount + ?2 <= amount"
        } else {
            ""
        };
        format!(
            "UPDATE orders SET {set} WHERE id = ?1 AND status IN ({allowed}){refund_guard} \
             AND (?5 IS NULL OR provider = ?5) AND (?6 IS NULL OR (amount = ?6 AND currency = ?7)) \
             RETURNING {columns}, {from}",
            columns = orders::COLUMNS
        )
    }
    static PAY: LazyLock<String> = LazyLock::new(|| build(Transition::Pay));
    static CLOSE: LazyLock<String> = LazyLock::new(|| build(Transition::Close));
    static REFUND: LazyLock<String> = LazyLock::new(|| build(Transition::Refund));
    match transition {
        Transition::Pay => PAY.as_str(),
        Transition::Close => CLOSE.as_str(),
        Transition::Refund => REFUND.as_str(),
    }
}

/// Index of the extra column `update_sql` returns after the order's columns.
const FROM_COLUMN: usize = 19;

/// The guarded UPDATE: `(from, order as changed)` when it applied.
fn update(
    tx: &Tx<'_>,
    order_id: &OrderId,
    change: &Change,
    expected: Option<&Expected>,
    now: DateTime<Utc>,
) -> DbResult<Option<(OrderStatus, Order)>> {
    let transition = change.transition();
    let (a, b): (Option<i64>, Option<&str>) = match change {
        Change::Pay {
            provider_trade_no,
            paid_at,
        } => (Some(to_millis(*paid_at)), provider_trade_no.as_deref()),
        Change::Close => (None, None),
        Change::Refund { amount } => (Some(*amount), None),
    };
    let provider = expected.map(|e| e.provider);
    let amount = expected.and_then(|e| e.amount);
    Ok(tx
        .conn
        .prepare_cached(update_sql(transition))?
        .query_row(
            params![
                order_id,
                a,
                b,
                to_millis(now),
                provider,
                amount.map(Amount::minor),
                amount.map(Amount::currency),
            ],
            |r| {
                let order = orders::from_row(r)?;
                let from = match transition {
                    Transition::Pay if r.get::<_, bool>(FROM_COLUMN)? => OrderStatus::Closed,
                    Transition::Pay | Transition::Close => OrderStatus::Pending,
                    Transition::Refund if r.get::<_, i64>(FROM_COLUMN)? == 0 => OrderStatus::Paid,
                    Transition::Refund => OrderStatus::PartiallyRefunded,
                };
                Ok((from, order))
            },
        )
        .optional()?)
}

fn record(
    tx: &Tx<'_>,
    order_id: &OrderId,
    transition: Transition,
    outcome: HistoryOutcome,
    (from, to): (OrderStatus, OrderStatus),
    cause: &Cause,
    now: DateTime<Utc>,
) -> DbResult<()> {
    history::record(
        tx,
        &Recorded {
            order_id,
            transition,
            outcome,
            from,
            to,
            cause,
            at: now,
        },
    )
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
    if let Some((from, order)) = update(tx, order_id, change, None, now)? {
        let to = order.status;
        record(
            tx,
            order_id,
            transition,
            HistoryOutcome::Applied,
            (from, to),
            cause,
            now,
        )?;
        return Ok(Outcome::Applied { from, order });
    }
    let Some(order) = orders::find_by_id(tx, order_id)? else {
        return Ok(Outcome::NotFound);
    };
    if transition.already_applied(order.status) {
        return Ok(Outcome::Duplicate { order });
    }
    let target = transition.targets()[0];
    let fromto = (order.status, target);
    record(
        tx,
        order_id,
        transition,
        HistoryOutcome::Refused,
        fromto,
        cause,
        now,
    )?;
    Ok(Outcome::Refused { order })
}

/// Applies `change` only if the order also is what `expected` says. When it applies,
/// `cause` is asked for the history row's cause (given the order as changed and the
/// status it left) and the history row is written; when it does not, nothing is
/// written and the caller gets what it needs to say why.
pub fn apply_checked(
    tx: &Tx<'_>,
    order_id: &OrderId,
    change: &Change,
    expected: &Expected,
    now: DateTime<Utc>,
    cause: impl FnOnce(&Order, OrderStatus) -> DbResult<Cause>,
) -> DbResult<Checked> {
    let transition = change.transition();
    if let Some((from, order)) = update(tx, order_id, change, Some(expected), now)? {
        let cause = cause(&order, from)?;
        let fromto = (from, order.status);
        record(
            tx,
            order_id,
            transition,
            HistoryOutcome::Applied,
            fromto,
            &cause,
            now,
        )?;
        return Ok(Checked::Applied { from, order });
    }
    Ok(Checked::NotApplied(find(tx, order_id)?))
}

/// The order's status, provider and amount, if there is such an order.
pub fn find(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Option<Found>> {
    Ok(tx
        .conn
        .prepare_cached("SELECT status, provider, amount, currency FROM orders WHERE id = ?1")?
        .query_row([order_id], |r| {
            Ok(Found {
                status: r.get(0)?,
                provider: r.get(1)?,
                amount: r.get(2)?,
                currency: r.get(3)?,
            })
        })
        .optional()?)
}
