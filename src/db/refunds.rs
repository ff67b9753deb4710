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
/// still-pending refunds: one guarded statement. It also numbers the refund after the
/// order's others (`seq`), from the same pass over them.
pub fn insert_within_balance(tx: &Tx<'_>, r: &NewRefund<'_>) -> DbResult<bool> {
    let refundable = sql_list(Transition::Refund.allowed_from().iter().map(|s| s.as_str()));
    // Two refunds of one order must not run the INSERT at once: both would read the
    // same refunds, take the same `seq`, and the loser's row would be dropped by
    // `ON CONFLICT` as if it did not fit. SQLite's single writer sees to it; on
    // PostgreSQL (READ COMMITTED, writers side by side) the order row is locked first,
    // so the INSERT's snapshot, taken after the lock is granted, sees every refund of
    // the order committed before.
    if tx.is_postgres() {
        tx.opt(
            "SELECT 1 FROM orders WHERE id = ?1 FOR UPDATE",
            args![r.order_id],
            |_| Ok(()),
        )?;
    }
    // The casts change nothing on SQLite; PostgreSQL needs them to give `?4` one type
    // in both places and to keep `SUM` of bigints out of `numeric`.
    let n = tx.exec(
        &format!(
            "INSERT INTO refunds (id, order_id, merchant_refund_id, amount, reason, status, created_at, updated_at, seq) \
             SELECT ?1, o.id, ?3, CAST(?4 AS BIGINT), ?5, 'pending', ?6, ?6, r.next_seq \
             FROM orders o, (SELECT CAST(COALESCE(SUM(CASE WHEN status = 'pending' THEN amount ELSE 0 END), 0) AS BIGINT) AS pending, \
                 COALESCE(MAX(seq), 0) + 1 AS next_seq FROM refunds WHERE order_id = ?2) r \
             WHERE o.id = ?2 AND o.status IN ({refundable}) \
             AND o.refunded_amount + CAST(?4 AS BIGINT) + r.pending <= o.amount \
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

/// In the order they were stored (`seq`): `created_at, id` would differ for two refunds
/// stored in the same millisecond, as ids are not in insertion order.
pub fn list_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<Refund>> {
    let sql = format!("SELECT {COLUMNS} FROM refunds WHERE order_id = ?1 ORDER BY seq");
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
        let now = pay(&mut db, &order);
        (dir, db, order, now)
    }

    /// Stores `order` paid, 100 of it refunded; returns when.
    fn pay(db: &mut Offline, order: &NewOrder) -> DateTime<Utc> {
        let now = order.created_at + Duration::minutes(1);
        db.immediate(|tx| {
            orders::insert(tx, order, None)?;
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
        now
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

    fn listed(db: &Offline, order: &NewOrder) -> Vec<String> {
        db.read(|tx| list_for_order(tx, &order.id))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    /// Every refund's order and `seq`, by id.
    fn seqs(db: &Offline) -> Vec<(String, String, i64)> {
        db.read(|tx| {
            tx.all(
                "SELECT id, order_id, seq FROM refunds ORDER BY id",
                args![],
                |r| Ok((r.get_string(0)?, r.get_string(1)?, r.get_i64(2)?)),
            )
        })
        .unwrap()
    }

    #[test]
    fn refunds_are_numbered_per_order_as_stored_and_listed_so_even_when_the_clock_went_back_or_stood_still() {
        let (_dir, mut db, order, now) = paid_order(1000);
        let other = new_order(2, 1000);
        pay(&mut db, &other);
        let later = now + Duration::seconds(5);
        assert!(refund(&mut db, &order, "rfd_d", 10, later));
        assert!(refund(&mut db, &other, "rfd_x", 10, now));
        // The same millisecond as the one before it.
        assert!(refund(&mut db, &order, "rfd_b", 10, later));
        // Refused: nothing stored, no number used.
        assert!(!refund(&mut db, &order, "rfd_big", 900, later));
        // A clock set back between two refunds.
        assert!(refund(&mut db, &order, "rfd_a", 10, now));
        assert!(refund(&mut db, &order, "rfd_c", 10, later + Duration::seconds(1)));

        assert_eq!(listed(&db, &order), ["rfd_d", "rfd_b", "rfd_a", "rfd_c"]);
        assert_eq!(listed(&db, &other), ["rfd_x"]);
        let (a, x) = (order.id.to_string(), other.id.to_string());
        assert_eq!(
            seqs(&db),
            [
                ("rfd_a".to_owned(), a.clone(), 3),
                ("rfd_b".to_owned(), a.clone(), 2),
                ("rfd_c".to_owned(), a.clone(), 4),
                ("rfd_d".to_owned(), a, 1),
                ("rfd_x".to_owned(), x, 1),
            ]
        );
    }

    #[test]
    fn refunds_stored_before_migration_11_keep_the_order_they_were_listed_in_and_new_ones_follow() {
        use super::super::migrations::MIGRATIONS;

        let dir = tempfile::tempdir().unwrap();
        let mut db = Offline::open(&dir.path().join("kassa.db")).unwrap();
        // The schema as the release before `seq` left it (version 10).
        db.immediate(|tx| {
            for (_, sql) in &MIGRATIONS[..10] {
                tx.sqlite_conn().execute_batch(sql)?;
            }
            Ok(tx.sqlite_conn().execute_batch("PRAGMA user_version = 10")?)
        })
        .unwrap();
        let (order, other) = (new_order(1, 1000), new_order(2, 1000));
        let now = pay(&mut db, &order);
        pay(&mut db, &other);
        // As that release stored them, in this order: ids out of order, two in one
        // millisecond, one with an earlier time than the one stored before it, and
        // another order's refunds in between.
        let t = to_millis(now);
        for (id, order_id, at) in [
            ("rfd_c", &order.id, t + 5),
            ("rfd_y", &other.id, t + 9),
            ("rfd_a", &order.id, t + 5),
            ("rfd_d", &order.id, t),
            ("rfd_x", &other.id, t + 1),
            ("rfd_b", &order.id, t + 7),
        ] {
            db.immediate(|tx| {
                tx.exec(
                    "INSERT INTO refunds (id, order_id, amount, reason, status, created_at, updated_at) \
                     VALUES (?1, ?2, 10, 'test', 'succeeded', ?3, ?3)",
                    args![id, order_id, at],
                )
            })
            .unwrap();
        }
        let listed_at_10 = |db: &Offline, order: &NewOrder| -> Vec<String> {
            db.read(|tx| {
                tx.all(
                    "SELECT id FROM refunds WHERE order_id = ?1 ORDER BY created_at, rowid",
                    args![&order.id],
                    |r| r.get_string(0),
                )
            })
            .unwrap()
        };
        let (before, before_other) = (listed_at_10(&db, &order), listed_at_10(&db, &other));
        assert_eq!(before, ["rfd_d", "rfd_c", "rfd_a", "rfd_b"]);

        assert_eq!(
            db.migrate().unwrap(),
            ["0011_secrets_and_refund_seq", "0012_rate_limits"]
        );

        assert_eq!(listed(&db, &order), before);
        assert_eq!(listed(&db, &other), before_other);
        assert!(refund(&mut db, &order, "rfd_0", 10, now));
        assert_eq!(listed(&db, &order), ["rfd_d", "rfd_c", "rfd_a", "rfd_b", "rfd_0"]);
        let numbers: Vec<(String, i64)> = seqs(&db).into_iter().map(|(id, _, seq)| (id, seq)).collect();
        let want = [
            ("rfd_0", 5),
            ("rfd_a", 3),
            ("rfd_b", 4),
            ("rfd_c", 2),
            ("rfd_d", 1),
            ("rfd_x", 1),
            ("rfd_y", 2),
        ];
        assert_eq!(numbers, want.map(|(id, seq)| (id.to_owned(), seq)));
    }
}
