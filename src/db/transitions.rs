//! The one place an order's status changes. Each change is a single guarded
//! `UPDATE … WHERE id = ? AND status IN (…) RETURNING …` whose returned row decides the
//! outcome (and is the order as changed: no second read), written together with its
//! history row. Callers run it inside one transaction and queue the webhook it
//! announces in the same one (`service::changes` does both).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};

use super::history::{self, Cause, HistoryOutcome, Recorded};
use super::orders;
use super::sql::{args, Arg};
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
/// requiring the provider and the amount and currency, returning the changed row and,
/// last, what tells the status it left. Its parameters are the order's id, the
/// transition's own facts (`PARAMS`), then provider, amount and currency: each
/// statement uses exactly `?1` to `?N`, as PostgreSQL will not type a parameter that
/// no statement text names.
fn update_sql(transition: Transition) -> &'static str {
    fn build(transition: Transition) -> String {
        let allowed = sql_list(transition.allowed_from().iter().map(|s| s.as_str()));
        // `CASE … THEN 1 ELSE 0`, not the comparison itself: PostgreSQL stores no
        // boolean in an integer column.
        let (set, from) = match transition {
            // ?2 paid_at, ?3 provider_trade_no, ?4 now
            Transition::Pay => (
                "status = 'paid', late_payment = CASE WHEN status = 'closed' THEN 1 ELSE 0 END, paid_at = ?2, \
                 provider_trade_no = COALESCE(?3, provider_trade_no), updated_at = ?4",
                "late_payment",
            ),
            // ?2 now
            Transition::Close => ("status = 'closed', closed_at = ?2, updated_at = ?2", "0"),
            // ?2 amount, ?3 now
            Transition::Refund => (
                "refunded_amount = refunded_amount + ?2, \
                 status = CASE WHEN refunded_amount + ?2 >= amount THEN 'refunded' ELSE 'partially_refunded' END, \
                 updated_at = ?3",
                "refunded_amount - ?2",
            ),
        };
        let refund_guard = if transition == Transition::Refund {
            " AND ?2 > 0 AND refunded_amount + ?2 <= amount"
        } else {
            ""
        };
        let p = params(transition);
        let (provider, amount, currency) = (p + 1, p + 2, p + 3);
        // The casts give PostgreSQL a type for a parameter that is only tested for NULL.
        format!(
            "UPDATE orders SET {set} WHERE id = ?1 AND status IN ({allowed}){refund_guard} \
             AND (CAST(?{provider} AS TEXT) IS NULL OR provider = ?{provider}) \
             AND (CAST(?{amount} AS BIGINT) IS NULL OR (amount = ?{amount} AND currency = ?{currency})) \
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

/// How many parameters of `update_sql` come before the expected provider: the id
/// and the transition's own facts.
const fn params(transition: Transition) -> usize {
    match transition {
        Transition::Pay => 4,
        Transition::Close => 2,
        Transition::Refund => 3,
    }
}

/// Index of the extra column `update_sql` returns after the order's columns.
const FROM_COLUMN: usize = 19;

/// This schema's channel for order changes, as SQL: see `pg::listen`, which listens on
/// it. One channel per schema, so deployments (and tests) sharing a database in schemas
/// of their own do not wake each other; a digest of the schema's name keeps it a short
/// identifier whatever the schema is called (a channel name is cut at 63 bytes).
macro_rules! channel {
    () => {
        "'kassa_order_' || left(md5(current_schema()), 16)"
    };
}
pub(super) const CHANNEL: &str = channel!();
/// Sent in the transaction of every applied transition on PostgreSQL: delivered when it
/// commits, never when it rolls back. SQLite has no other process to tell.
const NOTIFY: &str = concat!("SELECT pg_notify(", channel!(), ", ?1)");

/// The guarded UPDATE: `(from, order as changed)` when it applied.
fn update(
    tx: &Tx<'_>,
    order_id: &OrderId,
    change: &Change,
    expected: Option<&Expected>,
    now: DateTime<Utc>,
) -> DbResult<Option<(OrderStatus, Order)>> {
    let transition = change.transition();
    let provider = Arg::from(expected.map(|e| e.provider));
    let amount = expected.and_then(|e| e.amount);
    let (minor, currency) = (
        Arg::from(amount.map(Amount::minor)),
        Arg::from(amount.map(Amount::currency)),
    );
    let now = Arg::from(to_millis(now));
    // Numbered as `update_sql` numbers them; a shorter list is padded at the end and
    // cut off again, so no list needs an allocation.
    let args: [Arg<'_>; 7] = match change {
        Change::Pay {
            provider_trade_no,
            paid_at,
        } => [
            order_id.into(),
            to_millis(*paid_at).into(),
            provider_trade_no.as_deref().into(),
            now,
            provider,
            minor,
            currency,
        ],
        Change::Close => [
            order_id.into(),
            now,
            provider,
            minor,
            currency,
            Arg::Null,
            Arg::Null,
        ],
        Change::Refund { amount } => [
            order_id.into(),
            (*amount).into(),
            now,
            provider,
            minor,
            currency,
            Arg::Null,
        ],
    };
    let applied = tx.opt(update_sql(transition), &args[..params(transition) + 3], |r| {
        let order = orders::from_row(r)?;
        let from = match transition {
            Transition::Pay if r.get_bool(FROM_COLUMN)? => OrderStatus::Closed,
            Transition::Pay | Transition::Close => OrderStatus::Pending,
            Transition::Refund if r.get_i64(FROM_COLUMN)? == 0 => OrderStatus::Paid,
            Transition::Refund => OrderStatus::PartiallyRefunded,
        };
        Ok((from, order))
    })?;
    if applied.is_some() && tx.is_postgres() {
        // Other instances' checkout pages and webhook dispatchers wake on it. The
        // outbox row a transition queues is in this same transaction, so this one
        // signal covers it too.
        tx.exec(NOTIFY, args![order_id])?;
    }
    Ok(applied)
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
    tx.opt(
        "SELECT status, provider, amount, currency FROM orders WHERE id = ?1",
        args![order_id],
        |r| {
            Ok(Found {
                status: r.parse(0)?,
                provider: r.parse(1)?,
                amount: r.get_i64(2)?,
                currency: r.parse(3)?,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::super::sql::tests::{database, new_order};
    use super::*;
    use crate::domain::TransitionSource;

    #[test]
    fn each_transition_stores_its_own_facts_and_applies_only_when_the_provider_amount_and_currency_are_as_expected(
    ) {
        let (_dir, mut db) = database();
        let (paying, closing, refunding) = (new_order(1, 100), new_order(2, 100), new_order(3, 100));
        let t = |m: i64| paying.created_at + Duration::minutes(m);
        let cause = Cause::system(TransitionSource::Notification);
        let right = |o: &crate::domain::NewOrder| Expected {
            provider: o.provider,
            amount: Some(o.amount),
        };
        let wrong = |o: &crate::domain::NewOrder| {
            let other = if o.provider == ProviderKind::Alipay {
                ProviderKind::Wechat
            } else {
                ProviderKind::Alipay
            };
            let (minor, currency) = (o.amount.minor(), o.amount.currency());
            let other_currency = if currency == Currency::Cny {
                Currency::Usd
            } else {
                Currency::Cny
            };
            [
                Expected {
                    provider: other,
                    amount: Some(o.amount),
                },
                Expected {
                    provider: o.provider,
                    amount: Some(Amount::from_minor(minor + 1, currency).unwrap()),
                },
                Expected {
                    provider: o.provider,
                    amount: Some(Amount::from_minor(minor, other_currency).unwrap()),
                },
                Expected {
                    provider: other,
                    amount: None,
                },
            ]
        };
        let pay = Change::Pay {
            provider_trade_no: Some("T1".into()),
            paid_at: t(1),
        };
        let refund = Change::Refund { amount: 30 };
        db.immediate(|tx| {
            for o in [&paying, &closing, &refunding] {
                orders::insert(tx, o, None)?;
            }
            apply(tx, &refunding.id, &pay, &cause, t(1))?;
            for (order, change) in [(&paying, &pay), (&closing, &Change::Close), (&refunding, &refund)] {
                for expected in wrong(order) {
                    let checked =
                        apply_checked(tx, &order.id, change, &expected, t(2), |_, _| Ok(cause.clone()))?;
                    assert!(
                        matches!(checked, Checked::NotApplied(Some(_))),
                        "{change:?} {expected:?}: {checked:?}"
                    );
                }
            }
            Ok(())
        })
        .unwrap();
        let applied = db
            .immediate(|tx| {
                let mut orders = Vec::new();
                for (order, change) in [(&paying, &pay), (&closing, &Change::Close), (&refunding, &refund)] {
                    let checked = apply_checked(tx, &order.id, change, &right(order), t(3), |_, _| {
                        Ok(cause.clone())
                    })?;
                    let Checked::Applied { order, .. } = checked else {
                        panic!("{change:?} did not apply: {checked:?}");
                    };
                    orders.push(order);
                }
                // Without an expectation, and a refund of the rest.
                let Outcome::Applied { order, .. } =
                    apply(tx, &refunding.id, &Change::Refund { amount: 70 }, &cause, t(4))?
                else {
                    panic!("the second refund did not apply");
                };
                orders.push(order);
                Ok(orders)
            })
            .unwrap();
        let facts: Vec<_> = applied
            .iter()
            .map(|o| {
                (
                    o.status,
                    o.paid_at,
                    o.provider_trade_no.as_deref(),
                    o.closed_at,
                    o.refunded_amount,
                    o.updated_at,
                )
            })
            .collect();
        assert_eq!(
            facts,
            [
                (OrderStatus::Paid, Some(t(1)), Some("T1"), None, 0, t(3)),
                (OrderStatus::Closed, None, None, Some(t(3)), 0, t(3)),
                (
                    OrderStatus::PartiallyRefunded,
                    Some(t(1)),
                    Some("T1"),
                    None,
                    30,
                    t(3)
                ),
                (OrderStatus::Refunded, Some(t(1)), Some("T1"), None, 100, t(4)),
            ]
        );
        // The order as stored is the order last returned.
        for o in [&applied[0], &applied[1], &applied[3]] {
            let stored = db.read(|tx| orders::find_by_id(tx, &o.id)).unwrap().unwrap();
            assert_eq!(&stored, o);
        }
    }

    #[test]
    fn a_payment_stores_late_payment_as_1_only_for_an_order_it_found_closed_and_says_which_status_it_left() {
        let (_dir, mut db) = database();
        let (on_time, late, checked) = (new_order(1, 100), new_order(2, 100), new_order(3, 100));
        let now = on_time.created_at + Duration::minutes(20);
        let cause = Cause::system(TransitionSource::Notification);
        db.immediate(|tx| {
            for o in [&on_time, &late, &checked] {
                orders::insert(tx, o, None)?;
            }
            apply(tx, &late.id, &Change::Close, &cause, now)?;
            apply(tx, &checked.id, &Change::Close, &cause, now)?;
            Ok(())
        })
        .unwrap();
        let pay = Change::Pay {
            provider_trade_no: Some("T1".into()),
            paid_at: now,
        };
        let expected = Expected {
            provider: ProviderKind::Alipay,
            amount: Some(checked.amount),
        };
        let outcomes = db
            .immediate(|tx| {
                let Outcome::Applied { from: a, order: x } = apply(tx, &on_time.id, &pay, &cause, now)?
                else {
                    panic!("the on-time payment did not apply");
                };
                let Outcome::Applied { from: b, order: y } = apply(tx, &late.id, &pay, &cause, now)? else {
                    panic!("the late payment did not apply");
                };
                let Checked::Applied { from: c, order: z } =
                    apply_checked(tx, &checked.id, &pay, &expected, now, |_, _| Ok(cause.clone()))?
                else {
                    panic!("the checked late payment did not apply");
                };
                Ok([(a, x.late_payment), (b, y.late_payment), (c, z.late_payment)])
            })
            .unwrap();
        assert_eq!(
            outcomes,
            [
                (OrderStatus::Pending, false),
                (OrderStatus::Closed, true),
                (OrderStatus::Closed, true)
            ]
        );
        for (order, flag) in [(&on_time, 0), (&late, 1), (&checked, 1)] {
            let stored = db
                .read(|tx| {
                    tx.one(
                        "SELECT typeof(late_payment), late_payment FROM orders WHERE id = ?1",
                        args![&order.id],
                        |r| Ok((r.get_string(0)?, r.get_i64(1)?)),
                    )
                })
                .unwrap();
            assert_eq!(stored, ("integer".to_owned(), flag), "{}", order.out_trade_no);
        }
    }
}
