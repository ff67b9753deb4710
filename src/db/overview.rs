//! The overview's numbers. Each read is a range of an index or of a primary key:
//! orders by `orders_by_created`, notifications, webhook attempts and outbox rows by
//! id ranges found with `logs::first_id_since`, the attention lists by their partial
//! indexes. The service buckets the rows into the merchant's days.

use chrono::{DateTime, Utc};

use super::logs::{first_id_since, Timed};
use super::sql::{args, Row};
use super::types::to_millis;
use super::{DbResult, Tx};
use crate::domain::{OrderId, OrderStatus, Verdict};

/// One order created in the range: `(created_at ms, status, amount, refunded_amount)`.
pub type OrderFacts = (i64, OrderStatus, i64, i64);

pub fn orders_created(tx: &Tx<'_>, from: DateTime<Utc>, before: DateTime<Utc>) -> DbResult<Vec<OrderFacts>> {
    tx.all(
        "SELECT created_at, status, amount, refunded_amount FROM orders INDEXED BY orders_by_created \
         WHERE created_at >= ?1 AND created_at < ?2",
        args![to_millis(from), to_millis(before)],
        |r| Ok((r.get_i64(0)?, r.parse(1)?, r.get_i64(2)?, r.get_i64(3)?)),
    )
}

/// Notifications received since `from`: `(received_at ms, verdict, reason_code)`.
pub fn notifications_since(
    tx: &Tx<'_>,
    from: DateTime<Utc>,
) -> DbResult<Vec<(i64, Verdict, Option<String>)>> {
    let first = first_id_since(tx, Timed::Notifications, from)?;
    tx.all(
        "SELECT received_at, verdict, reason_code FROM notifications WHERE id >= ?1",
        args![first],
        |r| Ok((r.get_i64(0)?, r.parse(1)?, r.get_opt_string(2)?)),
    )
}

/// Webhook attempts made since `from`: `(at ms, HTTP status)`.
pub fn attempts_since(tx: &Tx<'_>, from: DateTime<Utc>) -> DbResult<Vec<(i64, Option<i64>)>> {
    let first = first_id_since(tx, Timed::WebhookAttempts, from)?;
    tx.all(
        "SELECT at, http_status FROM webhook_attempts WHERE id >= ?1",
        args![first],
        |r| Ok((r.get_i64(0)?, r.get_opt_i64(1)?)),
    )
}

/// Events queued for delivery since `from`: `(created_at ms, delivered)`. Events
/// `skipped` (no endpoint configured) were never meant to reach a shop and are left out.
pub fn events_since(tx: &Tx<'_>, from: DateTime<Utc>) -> DbResult<Vec<(i64, bool)>> {
    let first = first_id_since(tx, Timed::WebhookOutbox, from)?;
    // An integer flag, not `status = 'delivered'`: a boolean on PostgreSQL.
    tx.all(
        "SELECT created_at, CASE WHEN status = 'delivered' THEN 1 ELSE 0 END FROM webhook_outbox \
         WHERE id >= ?1 AND status != 'skipped'",
        args![first],
        |r| Ok((r.get_i64(0)?, r.get_bool(1)?)),
    )
}

/// An order that needs someone: id, merchant number, amount, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flagged {
    pub order_id: OrderId,
    pub out_trade_no: String,
    pub amount: i64,
    pub at: DateTime<Utc>,
}

/// Late payments neither refunded nor acknowledged, newest first (the partial index
/// `orders_late_by_created`); and how many there are.
pub fn late_unacknowledged(tx: &Tx<'_>, limit: u32) -> DbResult<(i64, Vec<Flagged>)> {
    const WHERE: &str =
        "FROM orders o INDEXED BY orders_late_by_created WHERE o.late_payment = 1 AND o.status = 'paid' \
         AND NOT EXISTS (SELECT 1 FROM late_payment_acks a WHERE a.order_id = o.id)";
    let count = tx.one(&format!("SELECT COUNT(*) {WHERE}"), args![], |r| r.get_i64(0))?;
    let flagged_rows = tx.all(
        &format!(
            "SELECT o.id, o.out_trade_no, o.amount, COALESCE(o.paid_at, o.created_at) {WHERE} ORDER BY o.created_at DESC, o.id DESC LIMIT ?1"
        ),
        args![limit],
        flagged,
    )?;
    Ok((count, flagged_rows))
}

fn flagged(r: &Row<'_>) -> DbResult<Flagged> {
    Ok(Flagged {
        order_id: r.get_order_id(0)?,
        out_trade_no: r.get_string(1)?,
        amount: r.get_i64(2)?,
        at: r.get_time(3)?,
    })
}

/// Pending orders past their expiry (the expiry job has not closed them yet), oldest
/// first (the partial index `orders_pending_by_expiry`).
pub fn pending_past_expiry(tx: &Tx<'_>, now: DateTime<Utc>, limit: u32) -> DbResult<(i64, Vec<Flagged>)> {
    let at = to_millis(now);
    let count = tx.one(
        "SELECT COUNT(*) FROM orders INDEXED BY orders_pending_by_expiry WHERE status = 'pending' AND expires_at < ?1",
        args![at],
        |r| r.get_i64(0),
    )?;
    let flagged_rows = tx.all(
        "SELECT id, out_trade_no, amount, expires_at FROM orders INDEXED BY orders_pending_by_expiry \
         WHERE status = 'pending' AND expires_at < ?1 \
         ORDER BY expires_at LIMIT ?2",
        args![at, limit],
        flagged,
    )?;
    Ok((count, flagged_rows))
}

/// Refunds still waiting for the provider, oldest first (the partial index
/// `refunds_pending`).
pub fn refunds_pending(tx: &Tx<'_>, limit: u32) -> DbResult<(i64, Vec<Flagged>)> {
    let count = tx.one(
        "SELECT COUNT(*) FROM refunds INDEXED BY refunds_pending WHERE status = 'pending'",
        args![],
        |r| r.get_i64(0),
    )?;
    let flagged_rows = tx.all(
        "SELECT r.order_id, o.out_trade_no, r.amount, r.created_at FROM refunds r INDEXED BY refunds_pending \
         JOIN orders o ON o.id = r.order_id \
         WHERE r.status = 'pending' ORDER BY r.updated_at LIMIT ?1",
        args![limit],
        flagged,
    )?;
    Ok((count, flagged_rows))
}

/// Deliveries that gave up (the partial index `webhook_outbox_failed`).
pub fn failed_deliveries(tx: &Tx<'_>) -> DbResult<i64> {
    tx.one(
        "SELECT COUNT(*) FROM webhook_outbox INDEXED BY webhook_outbox_failed WHERE status = 'failed'",
        args![],
        |r| r.get_i64(0),
    )
}

pub fn disabled_endpoints(tx: &Tx<'_>) -> DbResult<Vec<String>> {
    tx.all(
        "SELECT url FROM webhook_endpoints WHERE disabled_at IS NOT NULL ORDER BY url",
        args![],
        |r| r.get_string(0),
    )
}

/// Marks a late payment as seen and kept. False when it is not a late payment still
/// paid, or was acknowledged already.
pub fn acknowledge_late(
    tx: &Tx<'_>,
    order_id: &OrderId,
    actor: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let n = tx.exec(
        "INSERT INTO late_payment_acks (order_id, at, actor, reason) \
         SELECT id, ?2, ?3, ?4 FROM orders WHERE id = ?1 AND late_payment = 1 AND status = 'paid' \
         ON CONFLICT (order_id) DO NOTHING",
        args![order_id, to_millis(now), actor, reason],
    )?;
    Ok(n == 1)
}

/// What `/metrics` shows from the database: orders per status, and webhook deliveries
/// pending (or under way) and given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gauges {
    pub orders: Vec<(OrderStatus, i64)>,
    pub outbox_pending: i64,
    pub outbox_failed: i64,
}

/// Counted on indexes only, never on the tables' rows: orders on
/// `orders_by_status_created` (each status one range of it), the outbox on its two
/// partial indexes, which hold only the rows counted.
pub fn gauges(tx: &Tx<'_>) -> DbResult<Gauges> {
    let mut orders = Vec::with_capacity(OrderStatus::ALL.len());
    for status in OrderStatus::ALL {
        let count = tx.one(
            "SELECT COUNT(*) FROM orders INDEXED BY orders_by_status_created WHERE status = ?1",
            args![status],
            |r| r.get_i64(0),
        )?;
        orders.push((status, count));
    }
    let outbox_pending = tx.one(
        "SELECT COUNT(*) FROM webhook_outbox INDEXED BY webhook_outbox_due WHERE status IN ('pending','delivering')",
        args![],
        |r| r.get_i64(0),
    )?;
    let outbox_failed = tx.one(
        "SELECT COUNT(*) FROM webhook_outbox INDEXED BY webhook_outbox_failed WHERE status = 'failed'",
        args![],
        |r| r.get_i64(0),
    )?;
    Ok(Gauges {
        orders,
        outbox_pending,
        outbox_failed,
    })
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::super::orders;
    use super::super::sql::tests::{database, new_order};
    use super::*;

    #[test]
    fn events_since_counts_only_a_delivered_event_as_delivered_and_leaves_skipped_ones_out() {
        let (_dir, mut db) = database();
        let order = new_order(1, 100);
        let t0 = order.created_at;
        let statuses = [
            "pending",
            "delivering",
            "delivered",
            "failed",
            "skipped",
            "delivered",
        ];
        db.immediate(|tx| {
            orders::insert(tx, &order, None)?;
            for (i, status) in (1_i64..).zip(statuses) {
                let at = to_millis(t0 + Duration::seconds(i));
                tx.exec(
                    "INSERT INTO webhook_outbox (event_id, order_id, event_type, payload, status, next_attempt_at, created_at, updated_at) \
                     VALUES (?1, ?2, 'order.paid', '{}', ?3, ?4, ?4, ?4)",
                    args![format!("evt_{i}"), &order.id, status, at],
                )?;
            }
            Ok(())
        })
        .unwrap();
        let mut events = db.read(|tx| events_since(tx, t0 + Duration::seconds(2))).unwrap();
        // The statement promises no order and its callers need none.
        events.sort_unstable();
        let at = |s: i64| to_millis(t0 + Duration::seconds(s));
        assert_eq!(
            events,
            [(at(2), false), (at(3), true), (at(4), false), (at(6), true)]
        );
    }
}
