//! `db::refunds` on both backends: a refund is stored only while it fits the order's
//! balance, is numbered after the order's others, and settles once; and, on
//! PostgreSQL, refunds of one order arriving at once still do.

use std::sync::Barrier;

use chrono::{DateTime, Duration, Utc};

use super::orders::{find, new_order, store, t0};
use crate::db::history::Cause;
use crate::db::pg::testing::{both_backends, TestSchema, SKIPPED};
use crate::db::refunds::{self, NewRefund, Refund, Settlement};
use crate::db::sql::args;
use crate::db::transitions::{self, Change};
use crate::db::Database;
use crate::domain::{OrderId, OrderStatus, RefundStatus, TransitionSource};

fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

/// Stores order `id` of `amount`, paid, 100 of it refunded.
fn paid(db: &Database, id: &str, amount: i64) {
    store(db, vec![new_order(id, 0, amount)]);
    let id = OrderId::parse(id).unwrap();
    db.write_blocking(move |tx| {
        let cause = Cause::system(TransitionSource::Notification);
        let pay = Change::Pay {
            provider_trade_no: None,
            paid_at: at(1),
        };
        transitions::apply(tx, &id, &pay, &cause, at(1))?;
        transitions::apply(tx, &id, &Change::Refund { amount: 100 }, &cause, at(1))
    })
    .unwrap();
}

fn refund_as(db: &Database, order: &str, id: &str, merchant: Option<&str>, amount: i64, secs: i64) -> bool {
    let (order, id, merchant) = (
        OrderId::parse(order).unwrap(),
        id.to_owned(),
        merchant.map(str::to_owned),
    );
    db.write_blocking(move |tx| {
        refunds::insert_within_balance(
            tx,
            &NewRefund {
                id: &id,
                order_id: &order,
                merchant_refund_id: merchant.as_deref(),
                amount,
                reason: "test",
                now: at(secs),
            },
        )
    })
    .unwrap()
}

fn refund(db: &Database, order: &str, id: &str, amount: i64) -> bool {
    refund_as(db, order, id, None, amount, 2)
}

fn listed(db: &Database, order: &str) -> Vec<String> {
    let order = OrderId::parse(order).unwrap();
    db.read_blocking(|tx| refunds::list_for_order(tx, &order))
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

fn pending_total(db: &Database, order: &str) -> i64 {
    let order = order.to_owned();
    db.read_blocking(move |tx| refunds::pending_total(tx, &order))
        .unwrap()
}

fn find_refund(db: &Database, id: &str) -> Option<Refund> {
    let id = id.to_owned();
    db.read_blocking(move |tx| refunds::find_by_id(tx, &id)).unwrap()
}

/// `(id, seq)` of the order's refunds, by seq.
fn seqs(db: &Database, order: &str) -> Vec<(String, i64)> {
    let order = order.to_owned();
    db.read_blocking(move |tx| {
        tx.all(
            "SELECT id, seq FROM refunds WHERE order_id = ?1 ORDER BY seq",
            args![order.as_str()],
            |r| Ok((r.get_string(0)?, r.get_i64(1)?)),
        )
    })
    .unwrap()
}

both_backends! {
    fn a_refund_is_stored_only_while_it_fits_what_earlier_and_pending_refunds_leave_and_only_on_a_refundable_order(
        db: &Database,
    ) {
        paid(db, "ord_a", 1000);
        store(db, vec![new_order("ord_pending", 0, 1000)]);
        assert!(refund(db, "ord_a", "r1", 300));
        assert!(refund(db, "ord_a", "r2", 400));
        // 100 + 300 + 400 + 201 > 1000.
        assert!(!refund(db, "ord_a", "r3", 201));
        assert!(refund(db, "ord_a", "r4", 200));
        assert!(!refund(db, "ord_a", "r5", 1));
        assert!(
            !refund(db, "ord_pending", "r6", 1),
            "a pending order has nothing to refund"
        );
        assert!(!refund(db, "ord_none", "r7", 1));
        assert_eq!(pending_total(db, "ord_a"), 900);
        assert_eq!(pending_total(db, "ord_pending"), 0);
        assert_eq!(pending_total(db, "ord_none"), 0);
        assert_eq!(listed(db, "ord_a"), ["r1", "r2", "r4"]);
        assert!(listed(db, "ord_pending").is_empty());
        for id in ["r3", "r5", "r6", "r7"] {
            assert_eq!(find_refund(db, id), None, "{id}");
        }
        assert_eq!(
            find(db, "ord_a").unwrap().refunded_amount,
            100,
            "storing a refund leaves the order"
        );
    }

    fn a_refund_id_or_merchant_refund_id_taken_stores_nothing_and_keeps_the_first(db: &Database) {
        paid(db, "ord_a", 1000);
        paid(db, "ord_b", 1000);
        assert!(refund_as(db, "ord_a", "r1", Some("m1"), 10, 2));
        let first = find_refund(db, "r1").unwrap();
        assert!(
            !refund_as(db, "ord_b", "r1", None, 20, 3),
            "the id is taken, in any order"
        );
        assert!(
            !refund_as(db, "ord_a", "r2", Some("m1"), 30, 3),
            "the merchant's id is taken in this order"
        );
        assert!(
            refund_as(db, "ord_b", "r3", Some("m1"), 40, 3),
            "another order may use it"
        );
        assert_eq!(find_refund(db, "r1").unwrap(), first);
        assert_eq!(find_refund(db, "r2"), None);
        assert_eq!(listed(db, "ord_a"), ["r1"]);
        assert_eq!(listed(db, "ord_b"), ["r3"]);
        assert_eq!(pending_total(db, "ord_a"), 10);
    }

    fn a_refund_reads_back_whole_by_id_by_either_of_its_numbers_and_by_the_merchants_id(db: &Database) {
        paid(db, "ord_a", 1000);
        paid(db, "ord_b", 1000);
        assert!(refund_as(db, "ord_a", "ord_a_1", Some("m1"), 10, 7));
        assert!(refund_as(db, "ord_a", "r-alt", None, 20, 8));
        let want = Refund {
            id: "ord_a_1".into(),
            order_id: OrderId::parse("ord_a").unwrap(),
            merchant_refund_id: Some("m1".into()),
            amount: 10,
            reason: "test".into(),
            status: RefundStatus::Pending,
            provider_refund_id: None,
            failure_code: None,
            failure_message: None,
            created_at: at(7),
            updated_at: at(7),
            settled_at: None,
        };
        assert_eq!(find_refund(db, "ord_a_1"), Some(want.clone()));
        let found = db
            .read_blocking(|tx| {
                let (a, b) = (OrderId::parse("ord_a").unwrap(), OrderId::parse("ord_b").unwrap());
                Ok([
                    refunds::find_in_order(tx, &a, "ord_a_1", "r-alt")?.map(|r| r.id),
                    refunds::find_in_order(tx, &a, "r-alt", "ord_a_1")?.map(|r| r.id),
                    refunds::find_in_order(tx, &a, "nope", "r-alt")?.map(|r| r.id),
                    refunds::find_in_order(tx, &a, "nope", "nada")?.map(|r| r.id),
                    refunds::find_in_order(tx, &b, "ord_a_1", "r-alt")?.map(|r| r.id),
                    refunds::find_by_merchant_id(tx, &a, "m1")?.map(|r| r.id),
                    refunds::find_by_merchant_id(tx, &b, "m1")?.map(|r| r.id),
                ])
            })
            .unwrap();
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            found,
            [
                some("ord_a_1"),
                some("r-alt"),
                some("r-alt"),
                None,
                None,
                some("ord_a_1"),
                None
            ]
        );
    }

    fn refunds_are_numbered_and_listed_per_order_as_stored_even_when_the_clock_went_back_or_stood_still(
        db: &Database,
    ) {
        paid(db, "ord_a", 1000);
        paid(db, "ord_x", 1000);
        assert!(refund_as(db, "ord_a", "rfd_d", None, 10, 5));
        assert!(refund_as(db, "ord_x", "rfd_x", None, 10, 2));
        assert!(refund_as(db, "ord_a", "rfd_b", None, 10, 5));
        assert!(
            !refund_as(db, "ord_a", "rfd_big", None, 900, 5),
            "refused: no number used"
        );
        assert!(refund_as(db, "ord_a", "rfd_a", None, 10, 2));
        assert!(refund_as(db, "ord_a", "rfd_c", None, 10, 6));
        assert_eq!(listed(db, "ord_a"), ["rfd_d", "rfd_b", "rfd_a", "rfd_c"]);
        assert_eq!(listed(db, "ord_x"), ["rfd_x"]);
        let numbered = |pairs: &[(&str, i64)]| {
            pairs
                .iter()
                .map(|(id, n)| (id.to_string(), *n))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seqs(db, "ord_a"),
            numbered(&[("rfd_d", 1), ("rfd_b", 2), ("rfd_a", 3), ("rfd_c", 4)])
        );
        assert_eq!(seqs(db, "ord_x"), numbered(&[("rfd_x", 1)]));
    }

    fn pending_refunds_are_listed_oldest_touched_first_and_a_settled_one_leaves_the_list_and_the_pending_total(
        db: &Database,
    ) {
        paid(db, "ord_a", 1000);
        for (id, secs) in [("r_late", 9), ("r_early", 3), ("r_mid", 5), ("r_gone", 4)] {
            assert!(refund_as(db, "ord_a", id, None, 10, secs));
        }
        let pending = |before: i64, limit: u32| {
            db.read_blocking(move |tx| refunds::list_pending(tx, at(before), limit))
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            pending(5, 10),
            ["r_early", "r_gone", "r_mid"],
            "touched at the cut counts"
        );
        assert_eq!(pending(5, 2), ["r_early", "r_gone"]);

        db.write_blocking(|tx| refunds::touch(tx, "r_early", at(20)))
            .unwrap();
        assert_eq!(pending(5, 10), ["r_gone", "r_mid"]);
        let settled = db
            .write_blocking(|tx| {
                Ok([
                    refunds::settle(
                        tx,
                        "r_mid",
                        &Settlement::Succeeded {
                            provider_refund_id: Some("P1"),
                        },
                        at(30),
                    )?,
                    refunds::settle(
                        tx,
                        "r_gone",
                        &Settlement::Failed {
                            code: "NOT_ENOUGH",
                            message: "no funds",
                        },
                        at(31),
                    )?,
                    refunds::settle(
                        tx,
                        "r_mid",
                        &Settlement::Failed {
                            code: "X",
                            message: "again",
                        },
                        at(32),
                    )?,
                    refunds::settle(
                        tx,
                        "r_none",
                        &Settlement::Succeeded {
                            provider_refund_id: None,
                        },
                        at(32),
                    )?,
                ])
            })
            .unwrap();
        assert_eq!(settled, [true, true, false, false]);
        // A settled refund is not touched either.
        db.write_blocking(|tx| refunds::touch(tx, "r_mid", at(40)))
            .unwrap();

        let mid = find_refund(db, "r_mid").unwrap();
        assert_eq!(
            (
                mid.status,
                mid.provider_refund_id.as_deref(),
                mid.failure_code,
                mid.updated_at,
                mid.settled_at
            ),
            (RefundStatus::Succeeded, Some("P1"), None, at(30), Some(at(30)))
        );
        let gone = find_refund(db, "r_gone").unwrap();
        assert_eq!(
            (
                gone.status,
                gone.provider_refund_id,
                gone.failure_code.as_deref(),
                gone.failure_message.as_deref(),
                gone.settled_at
            ),
            (
                RefundStatus::Failed,
                None,
                Some("NOT_ENOUGH"),
                Some("no funds"),
                Some(at(31))
            )
        );
        let early = find_refund(db, "r_early").unwrap();
        assert_eq!(
            (early.status, early.updated_at, early.created_at),
            (RefundStatus::Pending, at(20), at(3))
        );
        assert_eq!(pending(100, 10), ["r_late", "r_early"]);
        assert_eq!(pending_total(db, "ord_a"), 20);
    }
}

/// PostgreSQL runs refunds of one order side by side (no single writer): each must see
/// the others that committed before it, or two would both pass the balance check, or
/// both take the same number and the loser be dropped as if it did not fit.
#[test]
fn refunds_of_one_order_arriving_at_once_on_postgresql_take_exactly_the_balance_each_with_its_own_number() {
    let Some(schema) = TestSchema::new() else {
        println!("{SKIPPED}");
        return;
    };
    let db = Database::open_target(&schema.target()).unwrap();
    const AT_ONCE: usize = 12;
    for round in 0..5 {
        let order = format!("ord_{round}");
        // 900 left: nine refunds of 100 fit, the other three do not.
        paid(&db, &order, 1000);
        let barrier = Barrier::new(AT_ONCE);
        let stored: Vec<bool> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..AT_ONCE)
                .map(|i| {
                    let (db, order, barrier) = (db.clone(), order.clone(), &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        refund(&db, &order, &format!("r_{round}_{i}"), 100)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let listed = listed(&db, &order);
        assert_eq!(
            stored.iter().filter(|s| **s).count(),
            9,
            "round {round}: {stored:?}"
        );
        assert_eq!(listed.len(), 9, "round {round}");
        assert_eq!(pending_total(&db, &order), 900, "round {round}");
        let numbers: Vec<i64> = seqs(&db, &order).into_iter().map(|(_, n)| n).collect();
        assert_eq!(numbers, (1..=9).collect::<Vec<_>>(), "round {round}");
        let o = find(&db, &order).unwrap();
        assert_eq!(
            (o.status, o.refunded_amount),
            (OrderStatus::PartiallyRefunded, 100)
        );
    }
    drop(db);
}

/// The interleaving the lock is for, made every time: a refund stored while another
/// refund of its order is written but not yet committed.
#[test]
fn a_refund_stored_while_another_of_its_order_is_uncommitted_on_postgresql_waits_and_counts_it() {
    use super::race::race;

    let Some(schema) = TestSchema::new() else {
        println!("{SKIPPED}");
        return;
    };
    let db = Database::open_target(&schema.target()).unwrap();
    let insert = |order: &str, id: &str, amount: i64| {
        let (order, id) = (OrderId::parse(order).unwrap(), id.to_owned());
        move |tx: &crate::db::Tx<'_>| {
            refunds::insert_within_balance(
                tx,
                &NewRefund {
                    id: &id,
                    order_id: &order,
                    merchant_refund_id: None,
                    amount,
                    reason: "test",
                    now: at(2),
                },
            )
        }
    };
    // 900 left on each. 500 then 400 fit, and the second is numbered after the first.
    paid(&db, "ord_a", 1000);
    let (first, second) = race(&db, insert("ord_a", "r1", 500), insert("ord_a", "r2", 400));
    assert_eq!((first, second.unwrap()), (true, true));
    let numbered = |pairs: &[(&str, i64)]| {
        pairs
            .iter()
            .map(|(id, n)| (id.to_string(), *n))
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&db, "ord_a"), numbered(&[("r1", 1), ("r2", 2)]));
    // 500 then 500 do not both fit: the second is refused, counting the first.
    paid(&db, "ord_b", 1000);
    let (first, second) = race(&db, insert("ord_b", "r3", 500), insert("ord_b", "r4", 500));
    assert_eq!((first, second.unwrap()), (true, false));
    assert_eq!(seqs(&db, "ord_b"), numbered(&[("r3", 1)]));
    assert_eq!(pending_total(&db, "ord_b"), 500);
    drop(db);
}
