//! Refund rows. A refund is stored, with its provider request number (its id), before
//! the provider is called; the order changes only when the refund succeeded.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::types::{from_millis, opt_from_millis, sql_list, to_millis};
use super::{DbResult, Tx};
use crate::domain::{OrderId, RefundStatus, Transition};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// Also the provider request number (Alipay `out_request_no`).
    pub id: String,
    pub order_id: OrderId,
    pub merchant_refund_id: Option<String>,
    pub amount: i64,
    pub reason: String,
    pub status: RefundStatus,
    pub provider_refund_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, order_id, merchant_refund_id, amount, reason, status, provider_refund_id, \
     failure_code, failure_message, created_at, updated_at, settled_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Refund> {
    Ok(Refund {
        id: r.get(0)?,
        order_id: r.get(1)?,
        merchant_refund_id: r.get(2)?,
        amount: r.get(3)?,
        reason: r.get(4)?,
        status: r.get(5)?,
        provider_refund_id: r.get(6)?,
        failure_code: r.get(7)?,
        failure_message: r.get(8)?,
        created_at: from_millis(r.get(9)?)?,
        updated_at: from_millis(r.get(10)?)?,
        settled_at: opt_from_millis(r.get(11)?)?,
    })
}

pub struct NewRefund<'a> {
    pub id: &'a str,
    pub order_id: &'a OrderId,
    pub merchant_refund_id: Option<&'a str>,
    pub amount: i64,
    pub reason: &'a str,
    pub now: DateTime<Utc>,
}

/// Inserts a pending refund only if the order is refundable (a refund transition may
/// leave its status) and the amount fits what is left after succeeded and
/// still-pending refunds: one guarded statement.
pub fn insert_within_balance(tx: &Tx<'_>, r: &NewRefund<'_>) -> DbResult<bool> {
    let refundable = sql_list(Transition::Refund.allowed_from().iter().map(|s| s.as_str()));
    let n = tx
        .conn
        .prepare_cached(&format!(
            "INSERT INTO refunds (id, order_id, merchant_refund_id, amount, reason, status, created_at, updated_at) \
             SELECT ?1, o.id, ?3, ?4, ?5, 'pending', ?6, ?6 FROM orders o \
             WHERE o.id = ?2 AND o.status IN ({refundable}) \
             AND o.refunded_amount + ?4 + (SELECT COALESCE(SUM(amount), 0) FROM refunds \
                 WHERE order_id = ?2 AND status = 'pending') <= o.amount \
             ON CONFLICT DO NOTHING"
        ))?
        .execute(params![r.id, r.order_id, r.merchant_refund_id, r.amount, r.reason, to_millis(r.now)])?;
    Ok(n == 1)
}

/// What the order's refunds still waiting for the provider's outcome add up to.
pub fn pending_total(tx: &Tx<'_>, order_id: &str) -> DbResult<i64> {
    Ok(tx
        .conn
        .prepare_cached(
            "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE order_id = ?1 AND status = 'pending'",
        )?
        .query_row([order_id], |r| r.get(0))?)
}

pub fn find_by_id(tx: &Tx<'_>, id: &str) -> DbResult<Option<Refund>> {
    let sql = format!("SELECT {COLUMNS} FROM refunds WHERE id = ?1");
    Ok(tx
        .conn
        .prepare_cached(&sql)?
        .query_row([id], from_row)
        .optional()?)
}

/// The order's refund stored as `id` or, failing that, as `alt`: a number the platform
/// gives per trade only (Alipay's) may name a row stored under either form.
pub fn find_in_order(tx: &Tx<'_>, order_id: &OrderId, id: &str, alt: &str) -> DbResult<Option<Refund>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM refunds WHERE order_id = ?1 AND id IN (?2, ?3) ORDER BY id = ?2 DESC LIMIT 1"
    );
    Ok(tx
        .conn
        .prepare_cached(&sql)?
        .query_row(params![order_id, id, alt], from_row)
        .optional()?)
}

pub fn find_by_merchant_id(
    tx: &Tx<'_>,
    order_id: &OrderId,
    merchant_refund_id: &str,
) -> DbResult<Option<Refund>> {
    let sql = format!("SELECT {COLUMNS} FROM refunds WHERE order_id = ?1 AND merchant_refund_id = ?2");
    Ok(tx
        .conn
        .prepare_cached(&sql)?
        .query_row(params![order_id, merchant_refund_id], from_row)
        .optional()?)
}

pub fn list_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<Refund>> {
    let sql = format!("SELECT {COLUMNS} FROM refunds WHERE order_id = ?1 ORDER BY created_at, rowid");
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([order_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Pending refunds not touched since `before`, oldest first.
pub fn list_pending(tx: &Tx<'_>, before: DateTime<Utc>, limit: u32) -> DbResult<Vec<Refund>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM refunds WHERE status = 'pending' AND updated_at <= ?1 ORDER BY updated_at LIMIT ?2"
    );
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![to_millis(before), limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Marks a pending refund as checked now, so the settle job waits before the next try.
pub fn touch(tx: &Tx<'_>, id: &str, now: DateTime<Utc>) -> DbResult<()> {
    tx.conn
        .prepare_cached("UPDATE refunds SET updated_at = ?2 WHERE id = ?1 AND status = 'pending'")?
        .execute(params![id, to_millis(now)])?;
    Ok(())
}

pub enum Settlement<'a> {
    Succeeded { provider_refund_id: Option<&'a str> },
    Failed { code: &'a str, message: &'a str },
}

/// Settles a pending refund; false when it was already settled (by a racing worker).
pub fn settle(tx: &Tx<'_>, id: &str, settlement: &Settlement<'_>, now: DateTime<Utc>) -> DbResult<bool> {
    let (status, provider_refund_id, code, message) = match settlement {
        Settlement::Succeeded { provider_refund_id } => {
            (RefundStatus::Succeeded, *provider_refund_id, None, None)
        }
        Settlement::Failed { code, message } => (RefundStatus::Failed, None, Some(*code), Some(*message)),
    };
    let n = tx
        .conn
        .prepare_cached(
            "UPDATE refunds SET status = ?2, provider_refund_id = ?3, failure_code = ?4, failure_message = ?5, \
             updated_at = ?6, settled_at = ?6 WHERE id = ?1 AND status = 'pending'",
        )?
        .execute(params![id, status, provider_refund_id, code, message, to_millis(now)])?;
    Ok(n == 1)
}
