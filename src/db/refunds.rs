//! Refund rows. A refund is stored, with its provider request number (its id), before
//! the provider is called; the order changes only when the refund succeeded.

use chrono::{DateTime, Utc};

use super::sql::{args, Row};
use super::types::{sql_list, to_millis};
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

fn from_row(r: &Row<'_>) -> DbResult<Refund> {
    Ok(Refund {
        id: r.get_string(0)?,
        order_id: r.get_order_id(1)?,
        merchant_refund_id: r.get_opt_string(2)?,
        amount: r.get_i64(3)?,
        reason: r.get_string(4)?,
        status: r.parse(5)?,
        provider_refund_id: r.get_opt_string(6)?,
        failure_code: r.get_opt_string(7)?,
        failure_message: r.get_opt_string(8)?,
        created_at: r.get_time(9)?,
        updated_at: r.get_time(10)?,
        settled_at: r.get_opt_time(11)?,
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
    // The casts change nothing on SQLite; PostgreSQL needs them to give `?4` one type
    // in both places and to keep `SUM` of bigints out of `numeric`.
    let n = tx.exec(
        &format!(
            "INSERT INTO refunds (id, order_id, merchant_refund_id, amount, reason, status, created_at, updated_at) \
             SELECT ?1, o.id, ?3, CAST(?4 AS BIGINT), ?5, 'pending', ?6, ?6 FROM orders o \
             WHERE o.id = ?2 AND o.status IN ({refundable}) \
             AND o.refunded_amount + CAST(?4 AS BIGINT) + (SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM refunds \
                 WHERE order_id = ?2 AND status = 'pending') <= o.amount \
             ON CONFLICT DO NOTHING"
        ),
        args![r.id, r.order_id, r.merchant_refund_id, r.amount, r.reason, to_millis(r.now)],
    )?;
    Ok(n == 1)
}

/// What the order's refunds still waiting for the provider's outcome add up to.
pub fn pending_total(tx: &Tx<'_>, order_id: &str) -> DbResult<i64> {
    tx.one(
        "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM refunds WHERE order_id = ?1 AND status = 'pending'",
        args![order_id],
        |r| r.get_i64(0),
    )
}

pub fn find_by_id(tx: &Tx<'_>, id: &str) -> DbResult<Option<Refund>> {
    let sql = format!("SELECT {COLUMNS} FROM refunds WHERE id = ?1");
    tx.opt(&sql, args![id], from_row)
}

/// The order's refund stored as `id` or, failing that, as `alt`: a number the platform
/// gives per trade only (Alipay's) may name a row stored under either form.
pub fn find_in_order(tx: &Tx<'_>, order_id: &OrderId, id: &str, alt: &str) -> DbResult<Option<Refund>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM refunds WHERE order_id = ?1 AND id IN (?2, ?3) ORDER BY id = ?2 DESC LIMIT 1"
    );
    tx.opt(&sql, args![order_id, id, alt], from_row)
}

pub fn find_by_merchant_id(
    tx: &Tx<'_>,
    order_id: &OrderId,
    merchant_refund_id: &str,
) -> DbResult<Option<Refund>> {
    let sql = format!("SELECT {COLUMNS} FROM refunds WHERE order_id = ?1 AND merchant_refund_id = ?2");
    tx.opt(&sql, args![order_id, merchant_refund_id], from_row)
}

/// In the order they were stored. By `rowid`, which PostgreSQL lacks: `created_at, id`
/// would differ for two refunds stored in the same millisecond (ids are not in
/// insertion order), so PostgreSQL needs a sequence column of its own (issue 17, step 3).
pub fn list_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<Refund>> {
    let sql = format!("SELECT {COLUMNS} FROM refunds WHERE order_id = ?1 ORDER BY created_at, rowid");
    tx.all(&sql, args![order_id], from_row)
}

/// Pending refunds not touched since `before`, oldest first.
pub fn list_pending(tx: &Tx<'_>, before: DateTime<Utc>, limit: u32) -> DbResult<Vec<Refund>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM refunds WHERE status = 'pending' AND updated_at <= ?1 ORDER BY updated_at LIMIT ?2"
    );
    tx.all(&sql, args![to_millis(before), limit], from_row)
}

/// Marks a pending refund as checked now, so the settle job waits before the next try.
pub fn touch(tx: &Tx<'_>, id: &str, now: DateTime<Utc>) -> DbResult<()> {
    tx.exec(
        "UPDATE refunds SET updated_at = ?2 WHERE id = ?1 AND status = 'pending'",
        args![id, to_millis(now)],
    )?;
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
    let n = tx.exec(
        "UPDATE refunds SET status = ?2, provider_refund_id = ?3, failure_code = ?4, failure_message = ?5, \
         updated_at = ?6, settled_at = ?6 WHERE id = ?1 AND status = 'pending'",
        args![id, status, provider_refund_id, code, message, to_millis(now)],
    )?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::super::history::Cause;
    use super::super::sql::tests::{database, new_order};
    use super::super::{orders, transitions, Offline};
    use super::*;
    use crate::domain::{NewOrder, TransitionSource};

    /// A paid order of `amount`, 100 of it refunded, in a new database.
    fn paid_order(amount: i64) -> (tempfile::TempDir, Offline, NewOrder, DateTime<Utc>) {
        let (dir, mut db) = database();
        let order = new_order(1, amount);
        let now = order.created_at + Duration::minutes(1);
        db.immediate(|tx| {
            orders::insert(tx, &order, None)?;
            let pay = transitions::Change::Pay {
                provider_trade_no: None,
                paid_at: now,
            };
            let cause = Cause::system(TransitionSource::Notification);
            transitions::apply(tx, &order.id, &pay, &cause, now)?;
            transitions::apply(
                tx,
                &order.id,
                &transitions::Change::Refund { amount: 100 },
                &cause,
                now,
            )?;
            Ok(())
        })
        .unwrap();
        (dir, db, order, now)
    }

    fn refund(db: &mut Offline, order: &NewOrder, id: &str, amount: i64, now: DateTime<Utc>) -> bool {
        db.immediate(|tx| {
            insert_within_balance(
                tx,
                &NewRefund {
                    id,
                    order_id: &order.id,
                    merchant_refund_id: None,
                    amount,
                    reason: "test",
                    now,
                },
            )
        })
        .unwrap()
    }

    #[test]
    fn a_refund_is_stored_only_while_it_fits_what_earlier_and_pending_refunds_leave_and_pending_ones_add_up()
    {
        let (_dir, mut db, order, now) = paid_order(1000);
        assert!(refund(&mut db, &order, "r1", 300, now));
        assert!(refund(&mut db, &order, "r2", 400, now));
        // 100 + 300 + 400 + 201 > 1000.
        assert!(!refund(&mut db, &order, "r3", 201, now));
        assert!(refund(&mut db, &order, "r4", 200, now));
        assert!(!refund(&mut db, &order, "r5", 1, now));
        assert_eq!(db.read(|tx| pending_total(tx, order.id.as_str())).unwrap(), 900);
        assert_eq!(db.read(|tx| pending_total(tx, "ord_none")).unwrap(), 0);
    }

    #[test]
    fn refunds_stored_in_one_millisecond_are_listed_in_the_order_they_were_stored_not_by_their_ids() {
        let (_dir, mut db, order, now) = paid_order(1000);
        for id in ["rfd_c", "rfd_a", "rfd_b"] {
            assert!(refund(&mut db, &order, id, 10, now));
        }
        let listed: Vec<String> = db
            .read(|tx| list_for_order(tx, &order.id))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, ["rfd_c", "rfd_a", "rfd_b"]);
    }
}
