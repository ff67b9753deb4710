//! The overview's numbers. Each read is a range of an index or of a primary key:
//! orders by `orders_by_created`, notifications, webhook attempts and outbox rows by
//! id ranges found with `logs::first_id_since`, the attention lists by their partial
//! indexes. The service buckets the rows into the merchant's days.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::logs::{first_id_since, Timed};
use super::types::{from_millis, to_millis};
use super::{DbResult, Tx};
use crate::domain::{OrderId, OrderStatus, Verdict};

/// One order created in the range: `(created_at ms, status, amount, refunded_amount)`.
pub type OrderFacts = (i64, OrderStatus, i64, i64);

pub fn orders_created(tx: &Tx<'_>, from: DateTime<Utc>, before: DateTime<Utc>) -> DbResult<Vec<OrderFacts>> {
    let mut stmt = tx.conn.prepare_cached(
        "SELECT created_at, status, amount, refunded_amount FROM orders INDEXED BY orders_by_created \
         WHERE created_at >= ?1 AND created_at < ?2",
    )?;
    let rows = stmt.query_map(params![to_millis(from), to_millis(before)], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Notifications received since `from`: `(received_at ms, verdict, reason_code)`.
pub fn notifications_since(
    tx: &Tx<'_>,
    from: DateTime<Utc>,
) -> DbResult<Vec<(i64, Verdict, Option<String>)>> {
    let first = first_id_since(tx, Timed::Notifications, from)?;
    let mut stmt = tx
        .conn
        .prepare_cached("SELECT received_at, verdict, reason_code FROM notifications WHERE id >= ?1")?;
    let rows = stmt.query_map([first], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Webhook attempts made since `from`: `(at ms, HTTP status)`.
pub fn attempts_since(tx: &Tx<'_>, from: DateTime<Utc>) -> DbResult<Vec<(i64, Option<i64>)>> {
    let first = first_id_since(tx, Timed::WebhookAttempts, from)?;
    let mut stmt = tx
        .conn
        .prepare_cached("SELECT at, http_status FROM webhook_attempts WHERE id >= ?1")?;
    let rows = stmt.query_map([first], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Events queued for delivery since `from`: `(created_at ms, delivered)`. Events
/// `skipped` (no endpoint configured) were never meant to reach a shop and are left out.
pub fn events_since(tx: &Tx<'_>, from: DateTime<Utc>) -> DbResult<Vec<(i64, bool)>> {
    let first = first_id_since(tx, Timed::WebhookOutbox, from)?;
    let mut stmt = tx.conn.prepare_cached(
        "SELECT created_at, status = 'delivered' FROM webhook_outbox WHERE id >= ?1 AND status != 'skipped'",
    )?;
    let rows = stmt.query_map([first], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
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
    let count = tx
        .conn
        .prepare_cached(&format!("SELECT COUNT(*) {WHERE}"))?
        .query_row([], |r| r.get(0))?;
    let mut stmt = tx.conn.prepare_cached(&format!(
        "SELECT o.id, o.out_trade_no, o.amount, COALESCE(o.paid_at, o.created_at) {WHERE} ORDER BY o.created_at DESC, o.id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit], flagged)?;
    Ok((count, rows.collect::<Result<_, _>>()?))
}

fn flagged(r: &rusqlite::Row<'_>) -> rusqlite::Result<Flagged> {
    Ok(Flagged {
        order_id: r.get(0)?,
        out_trade_no: r.get(1)?,
        amount: r.get(2)?,
        at: from_millis(r.get(3)?)?,
    })
}

/// Pending orders past their expiry (the expiry job has not closed them yet), oldest
/// first (the partial index `orders_pending_by_expiry`).
pub fn pending_past_expiry(tx: &Tx<'_>, now: DateTime<Utc>, limit: u32) -> DbResult<(i64, Vec<Flagged>)> {
    let at = to_millis(now);
    let count = tx
        .conn
        .prepare_cached(
            "SELECT COUNT(*) FROM orders INDEXED BY orders_pending_by_expiry WHERE status = 'pending' AND expires_at < ?1",
        )?
        .query_row([at], |r| r.get(0))?;
    let mut stmt = tx.conn.prepare_cached(
        "SELECT id, out_trade_no, amount, expires_at FROM orders INDEXED BY orders_pending_by_expiry \
         WHERE status = 'pending' AND expires_at < ?1 \
         ORDER BY expires_at LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![at, limit], flagged)?;
    Ok((count, rows.collect::<Result<_, _>>()?))
}

/// Refunds still waiting for the provider, oldest first (the partial index
/// `refunds_pending`).
pub fn refunds_pending(tx: &Tx<'_>, limit: u32) -> DbResult<(i64, Vec<Flagged>)> {
    let count = tx
        .conn
        .prepare_cached("SELECT COUNT(*) FROM refunds INDEXED BY refunds_pending WHERE status = 'pending'")?
        .query_row([], |r| r.get(0))?;
    let mut stmt = tx.conn.prepare_cached(
        "SELECT r.order_id, o.out_trade_no, r.amount, r.created_at FROM refunds r INDEXED BY refunds_pending \
         JOIN orders o ON o.id = r.order_id \
         WHERE r.status = 'pending' ORDER BY r.updated_at LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], flagged)?;
    Ok((count, rows.collect::<Result<_, _>>()?))
}

/// Deliveries that gave up (the partial index `webhook_outbox_failed`).
pub fn failed_deliveries(tx: &Tx<'_>) -> DbResult<i64> {
    Ok(tx
        .conn
        .prepare_cached(
            "SELECT COUNT(*) FROM webhook_outbox INDEXED BY webhook_outbox_failed WHERE status = 'failed'",
        )?
        .query_row([], |r| r.get(0))?)
}

pub fn disabled_endpoints(tx: &Tx<'_>) -> DbResult<Vec<String>> {
    let mut stmt = tx
        .conn
        .prepare_cached("SELECT url FROM webhook_endpoints WHERE disabled_at IS NOT NULL ORDER BY url")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
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
    let n = tx
        .conn
        .prepare_cached(
            "INSERT INTO late_payment_acks (order_id, at, actor, reason) \
             SELECT id, ?2, ?3, ?4 FROM orders WHERE id = ?1 AND late_payment = 1 AND status = 'paid' \
             ON CONFLICT (order_id) DO NOTHING",
        )?
        .execute(params![order_id, to_millis(now), actor, reason])?;
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
    let mut by_status = tx.conn.prepare_cached(
        "SELECT COUNT(*) FROM orders INDEXED BY orders_by_status_created WHERE status = ?1",
    )?;
    let mut orders = Vec::with_capacity(OrderStatus::ALL.len());
    for status in OrderStatus::ALL {
        orders.push((status, by_status.query_row([status.as_str()], |r| r.get(0))?));
    }
    let outbox_pending = tx
        .conn
        .prepare_cached(
            "SELECT COUNT(*) FROM webhook_outbox INDEXED BY webhook_outbox_due WHERE status IN ('pending','delivering')",
        )?
        .query_row([], |r| r.get(0))?;
    let outbox_failed = tx
        .conn
        .prepare_cached(
            "SELECT COUNT(*) FROM webhook_outbox INDEXED BY webhook_outbox_failed WHERE status = 'failed'",
        )?
        .query_row([], |r| r.get(0))?;
    Ok(Gauges {
        orders,
        outbox_pending,
        outbox_failed,
    })
}
