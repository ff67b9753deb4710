//! `db::transitions` on both backends: each change applies only from its allowed
//! statuses and, when checked, only to the expected provider, amount and currency;
//! whatever does not apply changes nothing but the history it is meant to write.

use chrono::{DateTime, Duration};

use super::orders::{find, new_order, store, t0};
use crate::db::history::{self, Cause, HistoryEntry, HistoryOutcome};
use crate::db::pg::testing::both_backends;
use crate::db::sql::args;
use crate::db::transitions::{self, Change, Checked, Expected, Found, Outcome};
use crate::db::Database;
use crate::domain::{
    Amount, Currency, Order, OrderId, OrderStatus, ProviderKind, Transition, TransitionSource,
};

fn at(minutes: i64) -> DateTime<chrono::Utc> {
    t0() + Duration::minutes(minutes)
}

fn cause() -> Cause {
    Cause::system(TransitionSource::Notification)
}

fn apply(db: &Database, id: &str, change: Change, now: DateTime<chrono::Utc>) -> Outcome {
    let id = OrderId::parse(id).unwrap();
    db.write_blocking(move |tx| transitions::apply(tx, &id, &change, &cause(), now))
        .unwrap()
}

fn history_of(db: &Database, id: &str) -> Vec<HistoryEntry> {
    let id = OrderId::parse(id).unwrap();
    db.read_blocking(|tx| history::list_for_order(tx, &id)).unwrap()
}

fn pay(minutes: i64) -> Change {
    Change::Pay {
        provider_trade_no: Some(format!("T{minutes}")),
        paid_at: at(minutes),
    }
}

/// `(transition, outcome, from, to)` of each history row.
fn steps(h: &[HistoryEntry]) -> Vec<(Transition, HistoryOutcome, OrderStatus, OrderStatus)> {
    h.iter()
        .map(|e| (e.transition, e.outcome, e.from, e.to))
        .collect()
}

both_backends! {
    fn a_payment_a_close_and_refunds_apply_from_their_allowed_statuses_and_store_their_facts(db: &Database) {
        store(db, vec![new_order("ord_p", 0, 100), new_order("ord_c", 0, 100)]);
        let Outcome::Applied { from, order } = apply(db, "ord_p", pay(1), at(2)) else {
            panic!("the payment did not apply");
        };
        assert_eq!(
            (from, order.status, order.paid_at, order.updated_at),
            (OrderStatus::Pending, OrderStatus::Paid, Some(at(1)), at(2))
        );
        assert_eq!(order.provider_trade_no.as_deref(), Some("T1"));
        assert!(!order.late_payment);
        assert_eq!(
            find(db, "ord_p").unwrap(),
            order,
            "the order returned is the order stored"
        );

        let Outcome::Applied { from, order } = apply(db, "ord_p", Change::Refund { amount: 30 }, at(3))
        else {
            panic!("the partial refund did not apply");
        };
        assert_eq!(
            (from, order.status, order.refunded_amount),
            (OrderStatus::Paid, OrderStatus::PartiallyRefunded, 30)
        );
        let Outcome::Applied { from, order } = apply(db, "ord_p", Change::Refund { amount: 70 }, at(4))
        else {
            panic!("the refund of the rest did not apply");
        };
        assert_eq!(
            (from, order.status, order.refunded_amount, order.updated_at),
            (OrderStatus::PartiallyRefunded, OrderStatus::Refunded, 100, at(4))
        );
        assert_eq!(find(db, "ord_p").unwrap(), order);

        let Outcome::Applied { from, order } = apply(db, "ord_c", Change::Close, at(5)) else {
            panic!("the close did not apply");
        };
        assert_eq!(
            (from, order.status, order.closed_at, order.updated_at),
            (OrderStatus::Pending, OrderStatus::Closed, Some(at(5)), at(5))
        );
        assert_eq!(find(db, "ord_c").unwrap(), order);

        assert_eq!(
            steps(&history_of(db, "ord_p")),
            [
                (
                    Transition::Pay,
                    HistoryOutcome::Applied,
                    OrderStatus::Pending,
                    OrderStatus::Paid
                ),
                (
                    Transition::Refund,
                    HistoryOutcome::Applied,
                    OrderStatus::Paid,
                    OrderStatus::PartiallyRefunded
                ),
                (
                    Transition::Refund,
                    HistoryOutcome::Applied,
                    OrderStatus::PartiallyRefunded,
                    OrderStatus::Refunded
                ),
            ]
        );
    }

    fn a_repeated_change_is_a_duplicate_and_a_forbidden_one_is_refused_and_neither_changes_the_order(
        db: &Database,
    ) {
        store(db, vec![new_order("ord_p", 0, 100), new_order("ord_c", 0, 100)]);
        apply(db, "ord_p", pay(1), at(1));
        apply(db, "ord_c", Change::Close, at(1));
        let (paid, closed) = (find(db, "ord_p").unwrap(), find(db, "ord_c").unwrap());

        assert_eq!(
            apply(db, "ord_p", pay(2), at(2)),
            Outcome::Duplicate { order: paid.clone() }
        );
        assert_eq!(
            apply(db, "ord_c", Change::Close, at(2)),
            Outcome::Duplicate {
                order: closed.clone()
            }
        );
        assert_eq!(
            apply(db, "ord_p", Change::Close, at(3)),
            Outcome::Refused { order: paid.clone() }
        );
        assert_eq!(
            apply(db, "ord_c", Change::Refund { amount: 10 }, at(3)),
            Outcome::Refused {
                order: closed.clone()
            }
        );
        // More than is left, and nothing: refused by the refund's own guard.
        assert_eq!(
            apply(db, "ord_p", Change::Refund { amount: 101 }, at(4)),
            Outcome::Refused { order: paid.clone() }
        );
        assert_eq!(
            apply(db, "ord_p", Change::Refund { amount: 0 }, at(4)),
            Outcome::Refused { order: paid.clone() }
        );
        assert_eq!(apply(db, "ord_none", pay(5), at(5)), Outcome::NotFound);

        assert_eq!(find(db, "ord_p").unwrap(), paid);
        assert_eq!(find(db, "ord_c").unwrap(), closed);
        // Duplicates leave no trace; refusals are recorded, towards the first target.
        assert_eq!(
            steps(&history_of(db, "ord_p")),
            [
                (
                    Transition::Pay,
                    HistoryOutcome::Applied,
                    OrderStatus::Pending,
                    OrderStatus::Paid
                ),
                (
                    Transition::Close,
                    HistoryOutcome::Refused,
                    OrderStatus::Paid,
                    OrderStatus::Closed
                ),
                (
                    Transition::Refund,
                    HistoryOutcome::Refused,
                    OrderStatus::Paid,
                    OrderStatus::PartiallyRefunded
                ),
                (
                    Transition::Refund,
                    HistoryOutcome::Refused,
                    OrderStatus::Paid,
                    OrderStatus::PartiallyRefunded
                ),
            ]
        );
        assert_eq!(
            steps(&history_of(db, "ord_c")),
            [
                (
                    Transition::Close,
                    HistoryOutcome::Applied,
                    OrderStatus::Pending,
                    OrderStatus::Closed
                ),
                (
                    Transition::Refund,
                    HistoryOutcome::Refused,
                    OrderStatus::Closed,
                    OrderStatus::PartiallyRefunded
                ),
            ]
        );
        assert!(history_of(db, "ord_none").is_empty());
    }

    fn a_payment_flags_late_payment_stored_as_1_only_on_an_order_it_found_closed(db: &Database) {
        store(
            db,
            vec![
                new_order("ord_on", 0, 100),
                new_order("ord_late", 0, 100),
                new_order("ord_chk", 0, 100),
            ],
        );
        apply(db, "ord_late", Change::Close, at(1));
        apply(db, "ord_chk", Change::Close, at(1));
        let Outcome::Applied { from: a, order: x } = apply(db, "ord_on", pay(2), at(2)) else {
            panic!("the on-time payment did not apply");
        };
        let Outcome::Applied { from: b, order: y } = apply(db, "ord_late", pay(2), at(2)) else {
            panic!("the late payment did not apply");
        };
        let expected = Expected {
            provider: ProviderKind::Alipay,
            amount: Some(Amount::from_minor(100, Currency::Cny).unwrap()),
        };
        let id = OrderId::parse("ord_chk").unwrap();
        let checked = db
            .write_blocking(move |tx| {
                transitions::apply_checked(tx, &id, &pay(2), &expected, at(2), |_, _| Ok(cause()))
            })
            .unwrap();
        let Checked::Applied { from: c, order: z } = checked else {
            panic!("the checked late payment did not apply: {checked:?}");
        };
        assert_eq!(
            [(a, x.late_payment), (b, y.late_payment), (c, z.late_payment)],
            [
                (OrderStatus::Pending, false),
                (OrderStatus::Closed, true),
                (OrderStatus::Closed, true)
            ]
        );
        for (id, flag) in [("ord_on", 0), ("ord_late", 1), ("ord_chk", 1)] {
            let stored = db
                .read_blocking(move |tx| {
                    tx.one("SELECT late_payment FROM orders WHERE id = ?1", args![id], |r| {
                        r.get_i64(0)
                    })
                })
                .unwrap();
            assert_eq!(stored, flag, "{id}");
        }
        assert_eq!(
            steps(&history_of(db, "ord_chk"))[1],
            (
                Transition::Pay,
                HistoryOutcome::Applied,
                OrderStatus::Closed,
                OrderStatus::Paid
            )
        );
    }

    fn a_checked_change_applies_only_to_the_expected_provider_amount_and_currency_and_otherwise_writes_nothing(
        db: &Database,
    ) {
        store(
            db,
            vec![
                new_order("ord_p", 0, 100),
                new_order("ord_c", 0, 100),
                new_order("ord_r", 0, 100),
            ],
        );
        apply(db, "ord_r", pay(1), at(1));
        let before: Vec<Order> = ["ord_p", "ord_c", "ord_r"]
            .iter()
            .map(|id| find(db, id).unwrap())
            .collect();
        let cny = |minor| Some(Amount::from_minor(minor, Currency::Cny).unwrap());
        let wrong = [
            Expected {
                provider: ProviderKind::Wechat,
                amount: cny(100),
            },
            Expected {
                provider: ProviderKind::Alipay,
                amount: cny(101),
            },
            Expected {
                provider: ProviderKind::Alipay,
                amount: Some(Amount::from_minor(100, Currency::Usd).unwrap()),
            },
            Expected {
                provider: ProviderKind::Wechat,
                amount: None,
            },
        ];
        let changes = [
            ("ord_p", pay(2)),
            ("ord_c", Change::Close),
            ("ord_r", Change::Refund { amount: 30 }),
        ];
        let found = |status| {
            Some(Found {
                status,
                provider: ProviderKind::Alipay,
                amount: 100,
                currency: Currency::Cny,
            })
        };
        for (id, change) in &changes {
            for expected in wrong {
                let (order_id, change) = (OrderId::parse(id).unwrap(), change.clone());
                let checked = db
                    .write_blocking(move |tx| {
                        transitions::apply_checked(tx, &order_id, &change, &expected, at(3), |_, _| {
                            panic!("asked for a cause of a change that did not apply")
                        })
                    })
                    .unwrap();
                let status = if *id == "ord_r" {
                    OrderStatus::Paid
                } else {
                    OrderStatus::Pending
                };
                assert_eq!(checked, Checked::NotApplied(found(status)), "{id} {expected:?}");
            }
        }
        let any = wrong[0];
        let missing = db
            .write_blocking(move |tx| {
                let id = OrderId::parse("ord_none").unwrap();
                transitions::apply_checked(tx, &id, &pay(3), &any, at(3), |_, _| Ok(cause()))
            })
            .unwrap();
        assert_eq!(missing, Checked::NotApplied(None));
        let after: Vec<Order> = ["ord_p", "ord_c", "ord_r"]
            .iter()
            .map(|id| find(db, id).unwrap())
            .collect();
        assert_eq!(after, before);
        assert!(history_of(db, "ord_p").is_empty());
        assert!(history_of(db, "ord_c").is_empty());
        assert_eq!(history_of(db, "ord_r").len(), 1);

        // Right: applied, and the cause is asked with the order as changed.
        for (id, change) in changes {
            let order_id = OrderId::parse(id).unwrap();
            let expected = Expected {
                provider: ProviderKind::Alipay,
                amount: cny(100),
            };
            let checked = db
                .write_blocking(move |tx| {
                    transitions::apply_checked(tx, &order_id, &change, &expected, at(4), |order, from| {
                        Ok(Cause::system_because(
                            TransitionSource::ProviderQuery,
                            format!("{from:?}->{:?}", order.status),
                        ))
                    })
                })
                .unwrap();
            let Checked::Applied { order, .. } = checked else {
                panic!("{id} did not apply: {checked:?}");
            };
            assert_eq!(find(db, id).unwrap(), order);
            let last = history_of(db, id).pop().unwrap();
            assert_eq!(last.source, TransitionSource::ProviderQuery);
            assert_eq!(last.detail, Some(format!("{:?}->{:?}", last.from, last.to)));
        }
    }

    fn find_reports_an_orders_status_provider_and_amount_or_none(db: &Database) {
        let mut o = new_order("ord_w", 0, 250);
        o.provider = ProviderKind::Wechat;
        store(db, vec![o]);
        apply(db, "ord_w", Change::Close, at(1));
        let found = db
            .read_blocking(|tx| {
                Ok((
                    transitions::find(tx, &OrderId::parse("ord_w").unwrap())?,
                    transitions::find(tx, &OrderId::parse("ord_x").unwrap())?,
                ))
            })
            .unwrap();
        assert_eq!(
            found,
            (
                Some(Found {
                    status: OrderStatus::Closed,
                    provider: ProviderKind::Wechat,
                    amount: 250,
                    currency: Currency::Cny
                }),
                None
            )
        );
    }
}

/// On PostgreSQL changes of one order run side by side at READ COMMITTED: the guarded
/// UPDATE's WHERE, evaluated again on the row a concurrent change committed, decides.
#[test]
fn changes_of_one_order_arriving_at_once_on_postgresql_apply_as_if_one_after_another() {
    use std::sync::Barrier;

    use crate::db::pg::testing::{TestSchema, SKIPPED};

    let Some(schema) = TestSchema::new() else {
        println!("{SKIPPED}");
        return;
    };
    let db = Database::open_target(&schema.target()).unwrap();
    const AT_ONCE: usize = 12;
    let at_once = |change: Change| -> Vec<Outcome> {
        let barrier = Barrier::new(AT_ONCE);
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..AT_ONCE)
                .map(|_| {
                    let (db, change, barrier) = (db.clone(), change.clone(), &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        apply(&db, "ord_a", change, at(2))
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    };
    store(&db, vec![new_order("ord_a", 0, 1000)]);

    let paid = at_once(pay(1));
    let applied = paid
        .iter()
        .filter(|o| matches!(o, Outcome::Applied { .. }))
        .count();
    let duplicates = paid
        .iter()
        .filter(|o| matches!(o, Outcome::Duplicate { .. }))
        .count();
    assert_eq!((applied, duplicates), (1, AT_ONCE - 1), "{paid:?}");

    // 1000 to refund, twelve refunds of 300: three fit, and none of the rest.
    let refunded = at_once(Change::Refund { amount: 300 });
    let applied = refunded
        .iter()
        .filter(|o| matches!(o, Outcome::Applied { .. }))
        .count();
    let refused = refunded
        .iter()
        .filter(|o| matches!(o, Outcome::Refused { .. }))
        .count();
    assert_eq!((applied, refused), (3, 9), "{refunded:?}");
    let order = find(&db, "ord_a").unwrap();
    assert_eq!(
        (order.status, order.refunded_amount),
        (OrderStatus::PartiallyRefunded, 900)
    );

    let history = history_of(&db, "ord_a");
    let count = |t: Transition, o: HistoryOutcome| {
        history
            .iter()
            .filter(|e| e.transition == t && e.outcome == o)
            .count()
    };
    assert_eq!(
        [
            count(Transition::Pay, HistoryOutcome::Applied),
            count(Transition::Refund, HistoryOutcome::Applied),
            count(Transition::Refund, HistoryOutcome::Refused),
        ],
        [1, 3, 9],
        "duplicates leave no row"
    );
    assert_eq!(history.len(), 13);
    drop(db);
}
