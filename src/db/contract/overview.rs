//! `overview` on both backends: each number and list of the overview and `/metrics`
//! (their SQLite `INDEXED BY` hints dropped on PostgreSQL give the same rows).

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::overview::*;
use crate::db::pg::testing::both_backends;
use crate::db::sql::tests::new_order;
use crate::db::sql::{args, Arg};
use crate::db::types::to_millis;
use crate::db::{orders, DbResult, Tx};
use crate::domain::{NewOrder, OrderId, OrderStatus, OutTradeNo, Verdict};

/// Second `n` of November (as `new_order(n, …)` creates at).
fn s(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + Duration::seconds(n)
}

fn ms(n: i64) -> i64 {
    to_millis(s(n))
}

/// An order of 100 with id `id` and merchant number `p-{id}`, created at second `n`,
/// then set to `status` (paid at `n + 1` unless pending or closed, late if `late`,
/// `refunded` of it refunded).
fn order(tx: &Tx<'_>, id: &str, n: i64, status: &str, late: bool, refunded: i64) -> DbResult<OrderId> {
    let order = NewOrder {
        id: OrderId::parse(id).unwrap(),
        out_trade_no: OutTradeNo::parse(&format!("p-{id}")).unwrap(),
        ..new_order(n, 100)
    };
    orders::insert(tx, &order, None)?;
    let paid = status != "pending" && status != "closed";
    tx.exec(
        "UPDATE orders SET status = ?2, late_payment = ?3, paid_at = ?4, refunded_amount = ?5 WHERE id = ?1",
        args![&order.id, status, late, paid.then(|| ms(n + 1)), refunded],
    )?;
    Ok(order.id)
}

fn outbox(tx: &Tx<'_>, order: &OrderId, i: i64, status: &str) -> DbResult<usize> {
    tx.exec(
        "INSERT INTO webhook_outbox (event_id, order_id, event_type, payload, status, next_attempt_at, created_at, updated_at) \
         VALUES (?1, ?2, 'order.paid', '{}', ?3, ?4, ?4, ?4)",
        args![format!("evt_{i}"), order, status, ms(i)],
    )
}

both_backends! {
    fn orders_created_in_a_range_come_with_their_status_and_amounts_and_the_range_excludes_its_end(db: &Database) {
        db.write_blocking(|tx| {
            order(tx, "ord_a", 10, "pending", false, 0)?;
            order(tx, "ord_b", 20, "partially_refunded", false, 30)?;
            order(tx, "ord_c", 30, "paid", false, 0)?;
            order(tx, "ord_d", 40, "closed", false, 0)
        })
        .unwrap();
        let mut rows = db.read_blocking(|tx| orders_created(tx, s(20), s(40))).unwrap();
        rows.sort_unstable_by_key(|r| r.0);
        assert_eq!(
            rows,
            [(ms(20), OrderStatus::PartiallyRefunded, 100, 30), (ms(30), OrderStatus::Paid, 100, 0)]
        );
        assert!(db.read_blocking(|tx| orders_created(tx, s(41), s(100))).unwrap().is_empty());
    }

    fn notifications_attempts_and_events_since_a_time_are_those_at_or_after_it(db: &Database) {
        db.write_blocking(|tx| {
            let o = order(tx, "ord_a", 0, "paid", false, 0)?;
            // (second, verdict, reason code)
            for (n, verdict, code) in [(1, "applied", None), (2, "rejected", Some("bad_signature")), (3, "duplicate", None)] {
                tx.exec(
                    "INSERT INTO notifications (provider, received_at, headers, body, verdict, reason_code) \
                     VALUES ('alipay', ?1, '{}', ?2, ?3, ?4)",
                    args![ms(n), Arg::Bytes(b"{}".as_slice().into()), verdict, code],
                )?;
            }
            for (i, status) in (1..).zip(["delivered", "skipped", "failed", "pending", "delivered"]) {
                outbox(tx, &o, i, status)?;
            }
            for (n, http_status) in [(1, Some(200)), (2, None), (3, Some(500))] {
                tx.exec(
                    "INSERT INTO webhook_attempts (outbox_id, at, url, http_status, latency_ms) \
                     VALUES (1, ?1, 'https://a.example/hook', ?2, 5)",
                    args![ms(n), http_status],
                )?;
            }
            Ok(())
        })
        .unwrap();
        let mut notes = db.read_blocking(|tx| notifications_since(tx, s(2))).unwrap();
        notes.sort_unstable_by_key(|r| r.0);
        assert_eq!(
            notes,
            [(ms(2), Verdict::Rejected, Some("bad_signature".to_owned())), (ms(3), Verdict::Duplicate, None)]
        );
        let mut attempts = db.read_blocking(|tx| attempts_since(tx, s(2))).unwrap();
        attempts.sort_unstable();
        assert_eq!(attempts, [(ms(2), None), (ms(3), Some(500))]);
        let mut events = db.read_blocking(|tx| events_since(tx, s(1))).unwrap();
        events.sort_unstable();
        assert_eq!(events, [(ms(1), true), (ms(3), false), (ms(4), false), (ms(5), true)]);
        assert!(db.read_blocking(|tx| notifications_since(tx, s(4))).unwrap().is_empty());
        assert!(db.read_blocking(|tx| attempts_since(tx, s(4))).unwrap().is_empty());
        assert!(db.read_blocking(|tx| events_since(tx, s(6))).unwrap().is_empty());
    }

    fn late_payments_not_acknowledged_are_counted_and_listed_newest_first_with_ids_by_their_bytes(db: &Database) {
        db.write_blocking(|tx| {
            // Three late payments created at the same second: their ids decide.
            for id in ["ord_a", "ord_B", "ord__z"] {
                order(tx, id, 50, "paid", true, 0)?;
            }
            order(tx, "ord_old", 10, "paid", true, 0)?;
            order(tx, "ord_refunded", 60, "refunded", true, 100)?;
            order(tx, "ord_ontime", 70, "paid", false, 0)?;
            order(tx, "ord_acked", 80, "paid", true, 0)?;
            tx.exec(
                "INSERT INTO late_payment_acks (order_id, at, actor, reason) VALUES ('ord_acked', ?1, 'ann', 'kept')",
                args![ms(90)],
            )
        })
        .unwrap();
        let (count, flagged) = db.read_blocking(|tx| late_unacknowledged(tx, 3)).unwrap();
        assert_eq!(count, 4);
        let ids: Vec<&str> = flagged.iter().map(|f| f.order_id.as_str()).collect();
        assert_eq!(ids, ["ord_a", "ord__z", "ord_B"]);
        assert_eq!(
            flagged[0],
            Flagged { order_id: OrderId::parse("ord_a").unwrap(), out_trade_no: "p-ord_a".into(), amount: 100, at: s(51) }
        );
        let (_, all) = db.read_blocking(|tx| late_unacknowledged(tx, 10)).unwrap();
        assert_eq!(all.last().map(|f| f.order_id.as_str()), Some("ord_old"));
    }

    fn a_late_payment_is_acknowledged_once_and_nothing_else_can_be(db: &Database) {
        db.write_blocking(|tx| {
            order(tx, "ord_late", 1, "paid", true, 0)?;
            order(tx, "ord_ontime", 2, "paid", false, 0)?;
            order(tx, "ord_refunded", 3, "refunded", true, 100)?;
            Ok(())
        })
        .unwrap();
        let ack = |id: &'static str, reason: &'static str| {
            db.write_blocking(move |tx| acknowledge_late(tx, &OrderId::parse(id).unwrap(), "ann", reason, s(100)))
                .unwrap()
        };
        assert!(!ack("ord_ontime", "r"));
        assert!(!ack("ord_refunded", "r"));
        assert!(!ack("ord_missing", "r"));
        assert!(ack("ord_late", "kept"));
        assert!(!ack("ord_late", "again"));
        let acks = db
            .read_blocking(|tx| {
                tx.all("SELECT order_id, at, actor, reason FROM late_payment_acks", args![], |r| {
                    Ok((r.get_string(0)?, r.get_i64(1)?, r.get_string(2)?, r.get_string(3)?))
                })
            })
            .unwrap();
        assert_eq!(acks, [("ord_late".to_owned(), ms(100), "ann".to_owned(), "kept".to_owned())]);
        assert_eq!(db.read_blocking(|tx| late_unacknowledged(tx, 10)).unwrap(), (0, vec![]));
    }

    fn pending_orders_past_their_expiry_are_counted_and_listed_soonest_expired_first(db: &Database) {
        db.write_blocking(|tx| {
            for (id, n) in [("ord_c", 30), ("ord_a", 10), ("ord_b", 20)] {
                order(tx, id, n, "pending", false, 0)?;
            }
            order(tx, "ord_paid", 0, "paid", false, 0)?;
            Ok(())
        })
        .unwrap();
        // Each expires 15 minutes after it was created.
        let now = s(25) + Duration::minutes(15);
        let (count, flagged) = db.read_blocking(move |tx| pending_past_expiry(tx, now, 1)).unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            flagged,
            [Flagged {
                order_id: OrderId::parse("ord_a").unwrap(),
                out_trade_no: "p-ord_a".into(),
                amount: 100,
                at: s(10) + Duration::minutes(15),
            }]
        );
        let (_, both) = db.read_blocking(move |tx| pending_past_expiry(tx, now, 10)).unwrap();
        let ids: Vec<&str> = both.iter().map(|f| f.order_id.as_str()).collect();
        assert_eq!(ids, ["ord_a", "ord_b"]);
    }

    fn pending_refunds_are_counted_and_listed_by_their_last_update_and_settled_ones_left_out(db: &Database) {
        db.write_blocking(|tx| {
            let a = order(tx, "ord_a", 1, "partially_refunded", false, 30)?;
            let b = order(tx, "ord_b", 2, "partially_refunded", false, 20)?;
            // (id, order, seq, amount, status, created, updated)
            for (id, o, seq, amount, status, created, updated) in [
                ("rf_1", &a, 1, 10, "pending", 10, 40),
                ("rf_2", &b, 1, 20, "pending", 20, 30),
                ("rf_3", &a, 2, 20, "succeeded", 5, 5),
                ("rf_4", &a, 3, 5, "pending", 50, 50),
            ] {
                tx.exec(
                    "INSERT INTO refunds (id, order_id, seq, amount, reason, status, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, 'r', ?5, ?6, ?7)",
                    args![id, o, seq, amount, status, ms(created), ms(updated)],
                )?;
            }
            Ok(())
        })
        .unwrap();
        let (count, flagged) = db.read_blocking(|tx| refunds_pending(tx, 2)).unwrap();
        assert_eq!(count, 3);
        assert_eq!(
            flagged,
            [
                Flagged { order_id: OrderId::parse("ord_b").unwrap(), out_trade_no: "p-ord_b".into(), amount: 20, at: s(20) },
                Flagged { order_id: OrderId::parse("ord_a").unwrap(), out_trade_no: "p-ord_a".into(), amount: 10, at: s(10) },
            ]
        );
    }

    fn the_gauges_count_orders_per_status_and_deliveries_pending_or_under_way_and_given_up(db: &Database) {
        db.write_blocking(|tx| {
            let o = order(tx, "ord_a", 1, "paid", false, 0)?;
            order(tx, "ord_b", 2, "paid", false, 0)?;
            order(tx, "ord_c", 3, "pending", false, 0)?;
            order(tx, "ord_d", 4, "refunded", false, 100)?;
            for (i, status) in (1..).zip(["pending", "delivering", "delivered", "failed", "failed", "skipped", "failed"]) {
                outbox(tx, &o, i, status)?;
            }
            tx.exec("INSERT INTO webhook_endpoints (url, disabled_at) VALUES ('https://z.example/', ?1)", args![ms(1)])?;
            tx.exec("INSERT INTO webhook_endpoints (url, disabled_at) VALUES ('https://B.example/', ?1)", args![ms(1)])?;
            tx.exec("INSERT INTO webhook_endpoints (url) VALUES ('https://a.example/')", args![])
        })
        .unwrap();
        let g = db.read_blocking(gauges).unwrap();
        assert_eq!(
            g,
            Gauges {
                orders: vec![
                    (OrderStatus::Pending, 1),
                    (OrderStatus::Paid, 2),
                    (OrderStatus::Closed, 0),
                    (OrderStatus::PartiallyRefunded, 0),
                    (OrderStatus::Refunded, 1),
                ],
                outbox_pending: 2,
                outbox_failed: 3,
            }
        );
        assert_eq!(db.read_blocking(failed_deliveries).unwrap(), 3);
        assert_eq!(db.read_blocking(disabled_endpoints).unwrap(), ["https://B.example/", "https://z.example/"]);
    }
}
