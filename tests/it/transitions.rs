//! The guarded transition function against a real SQLite file.

use std::sync::{Arc, Barrier};

use chrono::{Duration, Utc};
use kassa::db::history::{Cause, HistoryOutcome};
use kassa::db::transitions::{Change, Outcome};
use kassa::db::{self, history, orders, outbox, Database, DbError, DbResult, Offline, Tx};
use kassa::domain::order::{NewOrder, OrderRules};
use kassa::domain::{CreateOrderRequest, Currency, OrderId, OrderStatus, ProviderKind, TransitionSource};
use kassa::service::changes::Changes;

fn new_order(out_trade_no: &str, amount: i64) -> NewOrder {
    let request: CreateOrderRequest = serde_json::from_value(serde_json::json!({
        "out_trade_no": out_trade_no, "amount": amount, "subject": "s", "provider": "alipay"
    }))
    .unwrap();
    NewOrder::validate(
        request,
        &OrderRules {
            default_currency: Currency::Cny,
            default_ttl: Duration::minutes(15),
            enabled_providers: &[ProviderKind::Alipay],
            now: Utc::now(),
        },
    )
    .unwrap()
}

fn database() -> (tempfile::TempDir, Database, OrderId) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&dir.path().join("kassa.db")).unwrap();
    let order = new_order("t-1", 1000);
    let id = order.id.clone();
    db.write_blocking(move |c| orders::insert(c, &order, Some("qr")))
        .unwrap();
    (dir, db, id)
}

fn pay() -> Change {
    Change::Pay {
        provider_trade_no: Some("T1".into()),
        paid_at: Utc::now(),
    }
}

fn cause() -> Cause {
    Cause::system(TransitionSource::Notification)
}

/// The one way a transition is applied (with its webhook row), inside `tx`.
fn apply(tx: &Tx<'_>, id: &OrderId, change: &Change, cause: &Cause) -> DbResult<Outcome> {
    Changes::new("http://k").apply(tx, id, change, cause, Utc::now())
}

#[test]
fn fifty_threads_paying_one_order_apply_it_exactly_once() {
    let (dir, db, id) = database();
    let path = dir.path().join("kassa.db");
    let barrier = Arc::new(Barrier::new(50));

    let outcomes: Vec<Outcome> = (0..50)
        .map(|_| {
            let (path, id, barrier) = (path.clone(), id.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut db = Offline::open(&path).unwrap();
                barrier.wait();
                db.immediate(|c| apply(c, &id, &pay(), &cause())).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();

    let applied = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Applied { .. }))
        .count();
    let duplicates = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Duplicate { .. }))
        .count();
    assert_eq!((applied, duplicates), (1, 49));
    let (events, queued) = db
        .read_blocking(|c| Ok((history::list_for_order(c, &id)?, outbox::list_for_order(c, &id)?)))
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].from.as_str(), events[0].to.as_str()),
        ("pending", "paid")
    );
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].event_type.as_str(), "order.paid");
    let payload: serde_json::Value = serde_json::from_str(&queued[0].payload).unwrap();
    assert_eq!(payload["type"], "order.paid");
    assert_eq!(payload["data"]["id"], id.as_str());
    assert_eq!(payload["data"]["status"], "paid");
    assert_eq!(payload["data"]["checkout_url"], format!("http://k/pay/{id}"));
}

#[test]
fn fifty_concurrent_writer_jobs_apply_once_through_group_commit() {
    let (_dir, db, id) = database();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (db, id) = (db.clone(), id.clone());
            std::thread::spawn(move || {
                db.write_blocking(move |c| apply(c, &id, &pay(), &cause()))
                    .unwrap()
            })
        })
        .collect();
    let applied = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|o| matches!(o, Outcome::Applied { .. }))
        .count();
    assert_eq!(applied, 1);
    let queued = db.read_blocking(|c| outbox::list_for_order(c, &id)).unwrap();
    assert_eq!(queued.len(), 1);
}

#[test]
fn a_payment_for_a_closed_order_is_recorded_as_late() {
    let (_dir, db, id) = database();
    let run = |change: Change| {
        let id = id.clone();
        db.write_blocking(move |c| apply(c, &id, &change, &cause()))
            .unwrap()
    };

    assert!(matches!(
        run(Change::Close),
        Outcome::Applied {
            from: OrderStatus::Pending,
            ..
        }
    ));
    let Outcome::Applied { from, order } = run(pay()) else {
        panic!("late payment refused")
    };

    assert_eq!(from, OrderStatus::Closed);
    assert_eq!(order.status, OrderStatus::Paid);
    assert!(order.late_payment);
    assert!(order.closed_at.is_some() && order.paid_at.is_some());
    assert!(matches!(run(pay()), Outcome::Duplicate { .. }));
    assert!(matches!(run(Change::Close), Outcome::Refused { .. }));
}

#[test]
fn refunds_move_through_partial_to_full_and_never_past_the_amount() {
    let (_dir, db, id) = database();
    let run = |change: Change| {
        let id = id.clone();
        db.write_blocking(move |c| apply(c, &id, &change, &cause()))
            .unwrap()
    };
    assert!(
        matches!(run(Change::Refund { amount: 100 }), Outcome::Refused { .. }),
        "unpaid"
    );
    run(pay());

    let Outcome::Applied { from, order } = run(Change::Refund { amount: 300 }) else {
        panic!()
    };
    assert_eq!(
        (from, order.status, order.refunded_amount),
        (OrderStatus::Paid, OrderStatus::PartiallyRefunded, 300)
    );
    let Outcome::Applied { from, order } = run(Change::Refund { amount: 300 }) else {
        panic!()
    };
    assert_eq!(
        (from, order.status, order.refunded_amount),
        (
            OrderStatus::PartiallyRefunded,
            OrderStatus::PartiallyRefunded,
            600
        )
    );
    assert!(
        matches!(run(Change::Refund { amount: 401 }), Outcome::Refused { .. }),
        "over-refund"
    );
    assert!(matches!(
        run(Change::Refund { amount: 0 }),
        Outcome::Refused { .. }
    ));
    let Outcome::Applied { order, .. } = run(Change::Refund { amount: 400 }) else {
        panic!()
    };
    assert_eq!(
        (order.status, order.refunded_amount),
        (OrderStatus::Refunded, 1000)
    );
    assert!(matches!(
        run(Change::Refund { amount: 1 }),
        Outcome::Refused { .. }
    ));

    let queued: Vec<String> = db
        .read_blocking(|c| outbox::list_for_order(c, &id))
        .unwrap()
        .into_iter()
        .map(|e| e.event_type.to_string())
        .collect();
    assert_eq!(
        queued,
        [
            "order.paid",
            "order.partially_refunded",
            "order.partially_refunded",
            "order.refunded"
        ]
    );
    let events = db.read_blocking(|c| history::list_for_order(c, &id)).unwrap();
    let refused = events
        .iter()
        .filter(|e| e.outcome == HistoryOutcome::Refused)
        .count();
    assert_eq!(refused, 4, "every refused attempt is in the history");
}

#[test]
fn an_unknown_order_is_not_found() {
    let (_dir, db, _) = database();
    let ghost = OrderId::parse("ord_ghost").unwrap();
    let outcome = db
        .write_blocking(move |c| apply(c, &ghost, &pay(), &cause()))
        .unwrap();
    assert_eq!(outcome, Outcome::NotFound);
}

#[test]
fn a_failed_job_rolls_back_only_itself() {
    let (_dir, db, _) = database();
    let ok_order = new_order("kept", 5);
    let failed_order = new_order("dropped", 5);
    let kept = std::thread::spawn({
        let db = db.clone();
        move || db.write_blocking(move |c| orders::insert(c, &ok_order, None))
    });
    let failed = db.write_blocking(move |c| {
        orders::insert(c, &failed_order, None)?;
        Err::<(), _>(DbError::Corrupt("the job decided to fail after writing".into()))
    });
    assert!(failed.is_err());
    kept.join().unwrap().unwrap();
    let (kept, dropped) = db
        .read_blocking(|c| {
            Ok((
                orders::find_by_out_trade_no(c, "kept")?,
                orders::find_by_out_trade_no(c, "dropped")?,
            ))
        })
        .unwrap();
    assert!(kept.is_some());
    assert!(dropped.is_none(), "a failed job's writes are rolled back");
}

#[test]
fn a_database_from_a_newer_kassa_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kassa.db");
    drop(Database::open(&path).unwrap());
    let conn = crate::helpers::raw_connection(&path);
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);

    let err = Database::open(&path).err().expect("refused");

    assert!(matches!(err, DbError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer kassa"));
    assert_eq!(Offline::open(&path).unwrap().schema_version().unwrap(), 99);
}

#[test]
fn migrations_are_recorded_and_not_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kassa.db");
    assert_eq!(
        db::migrate(&path).unwrap(),
        vec![
            "0001_init",
            "0002_refunds_checks_sandbox",
            "0003_webhooks",
            "0004_notification_reasons",
            "0005_admin",
            "0006_admin_staff",
            "0007_idempotency_claims",
            "0008_rejected_notifications",
            "0009_sandbox_trades_by_trade_no",
            "0010_leases_and_claim_owners",
            "0011_secrets_and_refund_seq",
            "0012_rate_limits"
        ]
    );
    assert!(db::migrate(&path).unwrap().is_empty());
    let conn = Offline::open(&path).unwrap();
    assert_eq!(conn.schema_version().unwrap(), db::migrations::latest_version());
    assert_eq!(conn.pragma("journal_mode").unwrap(), "wal");
    assert_eq!(conn.pragma("foreign_keys").unwrap(), "1");
}
