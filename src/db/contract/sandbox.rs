//! `sandbox` (the db module): simulated trades, refunds, notification deliveries and
//! fault switches; and, on PostgreSQL, refunds and delivery claims at once.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::pg::testing::both_backends;
use crate::db::sandbox::{
    self, ClaimedDelivery, Delivery, DeliveryStatus, RefundInsert, SandboxTrade, SandboxTradeStatus,
};
use crate::db::sql::args;
use crate::db::{Database, DbResult, Tx};

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn write<R: Send + 'static>(db: &Database, f: impl FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static) -> R {
    db.write_blocking(f).unwrap()
}

fn trade(no: &str, total: i64) -> SandboxTrade {
    SandboxTrade {
        out_trade_no: no.into(),
        token: format!("tok-{no}"),
        app_id: "app-1".into(),
        trade_no: None,
        subject: "Tea".into(),
        total_amount: total,
        refunded: 0,
        status: SandboxTradeStatus::NotScanned,
        notify_url: Some("http://shop.test/n".into()),
        deadline: at(900),
        created_at: at(0),
        paid_at: None,
    }
}

fn insert(db: &Database, t: &SandboxTrade) -> bool {
    let t = t.clone();
    write(db, move |tx| sandbox::insert_trade(tx, &t))
}

fn find(db: &Database, no: &str) -> Option<SandboxTrade> {
    let no = no.to_owned();
    db.read_blocking(move |tx| sandbox::find_trade(tx, &no)).unwrap()
}

fn move_to(
    db: &Database,
    no: &str,
    from: &'static [SandboxTradeStatus],
    to: SandboxTradeStatus,
    trade_no: Option<&str>,
    now: DateTime<Utc>,
) -> bool {
    let (no, trade_no) = (no.to_owned(), trade_no.map(str::to_owned));
    write(db, move |tx| {
        sandbox::move_trade(tx, &no, from, to, trade_no.as_deref(), now)
    })
}

/// A trade of `total` paid at `at(10)`.
fn paid(db: &Database, no: &str, total: i64) {
    assert!(insert(db, &trade(no, total)));
    assert!(move_to(
        db,
        no,
        &[SandboxTradeStatus::NotScanned],
        SandboxTradeStatus::TradeSuccess,
        Some(&format!("ali-{no}")),
        at(10)
    ));
}

fn refund(db: &Database, no: &str, request: &str, amount: i64) -> RefundInsert {
    let (no, request) = (no.to_owned(), request.to_owned());
    write(db, move |tx| {
        sandbox::add_refund(tx, &no, &request, amount, at(20))
    })
}

/// `(out_trade_no, out_request_no, amount)` of every sandbox refund.
fn refunds(db: &Database) -> Vec<(String, String, i64)> {
    super::select(
        db,
        "SELECT out_trade_no, out_request_no, amount FROM sandbox_refunds ORDER BY out_trade_no, out_request_no",
        |r| Ok((r.get_string(0)?, r.get_string(1)?, r.get_i64(2)?)),
    )
}

fn enqueue(db: &Database, no: &str, next: DateTime<Utc>) -> i64 {
    let no = no.to_owned();
    write(db, move |tx| {
        sandbox::enqueue_delivery(
            tx,
            &no,
            "http://shop.test/n",
            r#"{"a":"1"}"#,
            r#"{"drop":true}"#,
            next,
            at(0),
        )
    })
}

fn claim(db: &Database, owner: &'static str, now: i64) -> Option<ClaimedDelivery> {
    write(db, move |tx| {
        sandbox::claim_due_delivery(tx, at(now), at(now + 60), owner)
    })
}

/// `(status, attempts, lease_owner)` of every delivery, by id.
fn deliveries(db: &Database) -> Vec<(String, i64, Option<String>)> {
    super::select(
        db,
        "SELECT status, attempts, lease_owner FROM sandbox_deliveries ORDER BY id",
        |r| Ok((r.get_string(0)?, r.get_i64(1)?, r.get_opt_string(2)?)),
    )
}

fn record(
    db: &Database,
    claim: &ClaimedDelivery,
    ack: bool,
    response: &'static str,
    next: Option<i64>,
) -> bool {
    let claim = claim.clone();
    write(db, move |tx| {
        sandbox::record_attempt(tx, &claim, ack, response, next.map(at))
    })
}

both_backends! {
    fn a_trade_is_stored_once_and_found_by_number_token_and_alipays_trade_no(db: &Database) {
        let t = trade("t-1", 1000);
        assert!(insert(db, &t));
        let again = SandboxTrade {
            token: "tok-other".into(),
            total_amount: 5,
            ..t.clone()
        };
        assert!(!insert(db, &again), "an existing number is left as it is");

        assert_eq!(find(db, "t-1"), Some(t.clone()));
        assert_eq!(find(db, "t-2"), None);
        assert_eq!(
            db.read_blocking(|tx| sandbox::find_trade_by_token(tx, "tok-t-1"))
                .unwrap(),
            Some(t.clone())
        );
        assert_eq!(
            db.read_blocking(|tx| sandbox::find_trade_by_token(tx, "tok-other"))
                .unwrap(),
            None
        );
        assert_eq!(
            db.read_blocking(|tx| sandbox::find_trade_by_trade_no(tx, "ali-1"))
                .unwrap(),
            None,
            "not scanned yet"
        );

        assert!(move_to(
            db,
            "t-1",
            &[SandboxTradeStatus::NotScanned],
            SandboxTradeStatus::WaitBuyerPay,
            Some("ali-1"),
            at(5)
        ));
        let found = db
            .read_blocking(|tx| sandbox::find_trade_by_trade_no(tx, "ali-1"))
            .unwrap()
            .unwrap();
        assert_eq!(found.out_trade_no, "t-1");
        assert_eq!(found.status, SandboxTradeStatus::WaitBuyerPay);
    }

    fn a_trade_moves_only_from_the_given_statuses_keeps_its_first_trade_no_and_stamps_payment_and_closing(db: &Database) {
        assert!(insert(db, &trade("t-1", 1000)));
        let waiting = &[SandboxTradeStatus::WaitBuyerPay];
        assert!(!move_to(
            db,
            "t-1",
            waiting,
            SandboxTradeStatus::TradeSuccess,
            Some("ali-x"),
            at(5)
        ));
        assert_eq!(find(db, "t-1"), Some(trade("t-1", 1000)), "refused: unchanged");
        assert!(!move_to(
            db,
            "t-9",
            &[SandboxTradeStatus::NotScanned],
            SandboxTradeStatus::WaitBuyerPay,
            None,
            at(5)
        ));

        assert!(move_to(
            db,
            "t-1",
            &[SandboxTradeStatus::NotScanned],
            SandboxTradeStatus::WaitBuyerPay,
            Some("ali-1"),
            at(5)
        ));
        assert!(move_to(
            db,
            "t-1",
            &[SandboxTradeStatus::NotScanned, SandboxTradeStatus::WaitBuyerPay],
            SandboxTradeStatus::TradeSuccess,
            Some("ali-2"),
            at(7)
        ));
        let t = find(db, "t-1").unwrap();
        assert_eq!(
            (t.status, t.trade_no.as_deref(), t.paid_at),
            (SandboxTradeStatus::TradeSuccess, Some("ali-1"), Some(at(7)))
        );

        assert!(move_to(
            db,
            "t-1",
            &[SandboxTradeStatus::TradeSuccess],
            SandboxTradeStatus::TradeClosed,
            None,
            at(9)
        ));
        let t = find(db, "t-1").unwrap();
        assert_eq!(
            (t.status, t.paid_at),
            (SandboxTradeStatus::TradeClosed, Some(at(7))),
            "closing keeps when it was paid"
        );
        let closed_at = db
            .read_blocking(|tx| {
                tx.one(
                    "SELECT closed_at FROM sandbox_trades WHERE out_trade_no = 't-1'",
                    args![],
                    |r| r.get_opt_time(0),
                )
            })
            .unwrap();
        assert_eq!(closed_at, Some(at(9)));
    }

    fn a_refund_is_stored_once_per_request_number_within_the_balance_of_a_paid_trade(db: &Database) {
        paid(db, "t-1", 1000);
        assert!(insert(db, &trade("t-unpaid", 1000)));

        assert_eq!(refund(db, "t-1", "r-1", 300), RefundInsert::Done);
        assert_eq!(
            refund(db, "t-1", "r-1", 999),
            RefundInsert::Repeated(300),
            "the earlier amount"
        );
        assert_eq!(refund(db, "t-1", "r-2", 701), RefundInsert::ExceedsBalance);
        assert_eq!(
            refund(db, "t-unpaid", "r-1", 1),
            RefundInsert::ExceedsBalance,
            "not paid"
        );
        assert_eq!(
            refund(db, "t-none", "r-1", 1),
            RefundInsert::ExceedsBalance,
            "no such trade"
        );
        assert_eq!(
            find(db, "t-1").unwrap().refunded,
            300,
            "refused ones changed nothing"
        );
        assert_eq!(refunds(db), [("t-1".into(), "r-1".into(), 300)]);

        assert_eq!(
            refund(db, "t-1", "r-2", 700),
            RefundInsert::Done,
            "a refused number can be used again"
        );
        assert_eq!(find(db, "t-1").unwrap().refunded, 1000);
        assert_eq!(
            db.read_blocking(|tx| sandbox::find_refund(tx, "t-1", "r-2"))
                .unwrap(),
            Some(700)
        );
        assert_eq!(
            db.read_blocking(|tx| sandbox::find_refund(tx, "t-1", "r-3"))
                .unwrap(),
            None
        );
        assert_eq!(
            db.read_blocking(|tx| sandbox::find_refund(tx, "t-unpaid", "r-1"))
                .unwrap(),
            None
        );
    }

    fn a_request_number_two_trades_share_finds_the_refund_of_the_lowest_trade_number_by_bytes(db: &Database) {
        for (no, amount) in [("t-b", 200), ("t-a", 100), ("T-c", 300)] {
            paid(db, no, 1000);
            assert_eq!(refund(db, no, "r-1", amount), RefundInsert::Done);
        }
        assert_eq!(
            db.read_blocking(|tx| sandbox::find_refund_by_request_no(tx, "r-1"))
                .unwrap(),
            Some(("T-c".to_string(), 300)),
            "upper case sorts first by bytes"
        );
        assert_eq!(
            db.read_blocking(|tx| sandbox::find_refund_by_request_no(tx, "r-2"))
                .unwrap(),
            None
        );
    }

    fn a_delivery_is_queued_claimed_earliest_first_and_not_handed_to_another_owner_while_its_lease_holds(db: &Database) {
        assert_eq!(db.read_blocking(sandbox::next_delivery_at).unwrap(), None, "nothing queued");
        let late = enqueue(db, "t-1", at(5));
        let early = enqueue(db, "t-2", at(2));
        assert!(late < early, "ids in queue order");
        assert_eq!(db.read_blocking(sandbox::next_delivery_at).unwrap(), Some(at(2)));

        assert_eq!(claim(db, "inst_a", 1), None, "nothing due yet");
        let first = claim(db, "inst_a", 5).unwrap();
        assert_eq!(first.delivery.id, early, "the earliest due first");
        assert_eq!(
            (first.lease_owner.as_str(), first.lease_until),
            ("inst_a", at(65).timestamp_millis())
        );
        assert_eq!(
            first.delivery,
            Delivery {
                id: early,
                out_trade_no: "t-2".into(),
                notify_url: "http://shop.test/n".into(),
                params: r#"{"a":"1"}"#.into(),
                attempts: 0,
                status: DeliveryStatus::Pending,
                last_response: None,
                faults: r#"{"drop":true}"#.into(),
            }
        );
        let second = claim(db, "inst_b", 5).unwrap();
        assert_eq!(second.delivery.id, late);
        assert_eq!(claim(db, "inst_b", 64), None, "both claimed, leases hold");
        assert_eq!(
            db.read_blocking(sandbox::next_delivery_at).unwrap(),
            Some(at(65)),
            "waits for the leases"
        );

        let again = claim(db, "inst_c", 65).unwrap();
        assert_eq!(again.delivery.id, early, "a run-out lease is claimed again");
        let listed = db
            .read_blocking(|tx| sandbox::list_deliveries(tx, "t-2"))
            .unwrap();
        assert_eq!(listed, [first.delivery]);
        assert!(db
            .read_blocking(|tx| sandbox::list_deliveries(tx, "t-9"))
            .unwrap()
            .is_empty());
    }

    fn an_attempt_is_recorded_only_under_the_claim_that_holds_and_moves_the_delivery_on(db: &Database) {
        for no in ["t-1", "t-2", "t-3"] {
            enqueue(db, no, at(0));
        }
        let first = claim(db, "inst_a", 0).unwrap();
        let second = claim(db, "inst_b", 60).unwrap();
        assert_eq!(second.delivery.id, first.delivery.id);
        let before = deliveries(db);

        assert!(
            !record(db, &first, true, "HTTP 200 OK: success", None),
            "a stale claim"
        );
        assert_eq!(deliveries(db), before, "refused: unchanged");

        assert!(record(db, &second, false, "HTTP 500", Some(300)));
        let others = (claim(db, "inst_a", 61).unwrap(), claim(db, "inst_a", 61).unwrap());
        assert!(record(db, &others.0, true, "success", None));
        assert!(record(db, &others.1, false, "fail", None));
        assert!(
            !record(db, &others.1, false, "fail", None),
            "the claim ended with it"
        );

        assert_eq!(
            deliveries(db),
            vec![
                ("pending".into(), 1, None),
                ("delivered".into(), 1, None),
                ("failed".into(), 1, None)
            ]
        );
        let listed = db
            .read_blocking(|tx| sandbox::list_deliveries(tx, "t-1"))
            .unwrap();
        assert_eq!(listed[0].last_response.as_deref(), Some("HTTP 500"));
        assert_eq!(claim(db, "inst_a", 299), None, "not due before its next attempt");
        assert_eq!(
            db.read_blocking(sandbox::next_delivery_at).unwrap(),
            Some(at(300))
        );
        assert!(claim(db, "inst_a", 300).is_some());
    }

    fn giving_back_sandbox_claims_frees_only_the_owners_own(db: &Database) {
        enqueue(db, "t-1", at(0));
        enqueue(db, "t-2", at(0));
        claim(db, "inst_a", 0).unwrap();
        claim(db, "inst_b", 0).unwrap();

        assert_eq!(write(db, |tx| sandbox::release_claims(tx, "inst_a")), 1);
        assert_eq!(
            deliveries(db),
            vec![
                ("pending".into(), 0, None),
                ("pending".into(), 0, Some("inst_b".into()))
            ]
        );
        assert_eq!(
            claim(db, "inst_c", 1).map(|c| c.delivery.out_trade_no),
            Some("t-1".into())
        );
    }

    fn fault_switches_are_stored_per_scope_and_replaced(db: &Database) {
        assert_eq!(
            db.read_blocking(|tx| sandbox::find_faults(tx, "global")).unwrap(),
            None
        );
        write(db, |tx| sandbox::set_faults(tx, "global", r#"{"a":1}"#));
        write(db, |tx| sandbox::set_faults(tx, "t-1", r#"{"b":1}"#));
        write(db, |tx| sandbox::set_faults(tx, "global", r#"{"c":1}"#));
        assert_eq!(
            db.read_blocking(|tx| sandbox::find_faults(tx, "global"))
                .unwrap()
                .as_deref(),
            Some(r#"{"c":1}"#)
        );
        assert_eq!(
            db.read_blocking(|tx| sandbox::find_faults(tx, "t-1"))
                .unwrap()
                .as_deref(),
            Some(r#"{"b":1}"#)
        );
    }
}

/// Refunds and claims at once, on PostgreSQL only (SQLite's single writer runs one
/// transaction at a time).
mod concurrent {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier, Mutex};

    use super::*;
    use crate::db::contract::race::race;
    use crate::db::pg::testing::{TestSchema, SKIPPED};

    /// The schema first: bound in this order, the pool is dropped before its schema.
    fn pg() -> Option<(TestSchema, Database)> {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return None;
        };
        let db = Database::open_target(&schema.target()).unwrap();
        Some((schema, db))
    }

    #[test]
    fn the_same_refund_request_twice_at_once_is_stored_once_and_the_second_is_told_it_is_a_repeat() {
        let Some((_schema, db)) = pg() else { return };
        paid(&db, "t-1", 1000);

        let add = |amount| move |tx: &Tx<'_>| sandbox::add_refund(tx, "t-1", "r-1", amount, at(20));
        let (first, second) = race(&db, add(300), add(300));

        assert_eq!(first, RefundInsert::Done);
        assert_eq!(second.unwrap(), RefundInsert::Repeated(300));
        assert_eq!(find(&db, "t-1").unwrap().refunded, 300);
        assert_eq!(refunds(&db), [("t-1".into(), "r-1".into(), 300)]);
    }

    #[test]
    fn two_refunds_at_once_that_together_exceed_the_balance_store_only_the_first() {
        let Some((_schema, db)) = pg() else { return };
        paid(&db, "t-1", 1000);

        let add =
            |request: &'static str| move |tx: &Tx<'_>| sandbox::add_refund(tx, "t-1", request, 600, at(20));
        let (first, second) = race(&db, add("r-1"), add("r-2"));

        assert_eq!(first, RefundInsert::Done);
        assert_eq!(second.unwrap(), RefundInsert::ExceedsBalance);
        assert_eq!(find(&db, "t-1").unwrap().refunded, 600);
        assert_eq!(refunds(&db), [("t-1".into(), "r-1".into(), 600)]);
    }

    #[test]
    fn eight_claimers_at_once_send_each_of_200_deliveries_exactly_once_and_none_idles_while_one_is_free() {
        const CLAIMERS: usize = 8;
        let Some((schema, db)) = pg() else { return };
        write(&db, |tx| {
            for n in 0..200 {
                sandbox::enqueue_delivery(
                    tx,
                    &format!("t-{n}"),
                    "http://shop.test/n",
                    "{}",
                    "{}",
                    at(0),
                    at(0),
                )?;
            }
            Ok(())
        });
        let count = |db: &Database, sql: &'static str| {
            db.read_blocking(move |tx| tx.one(sql, args![], |r| r.get_i64(0)))
                .unwrap()
        };
        // Pending and not claimed (an uncommitted claim still shows as unclaimed).
        const FREE: &str =
            "SELECT COUNT(*) FROM sandbox_deliveries WHERE status = 'pending' AND lease_owner IS NULL";
        const UNDONE: &str = "SELECT COUNT(*) FROM sandbox_deliveries WHERE status = 'pending'";

        let sent = Arc::new(Mutex::new(Vec::new()));
        let empty = Arc::new(Mutex::new(Vec::new()));
        let start = Arc::new(Barrier::new(CLAIMERS));
        // Set by a claimer that fails, so that the others stop rather than wait for a
        // delivery it left claimed.
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..CLAIMERS)
            .map(|i| {
                let db = if i % 2 == 0 {
                    db.clone()
                } else {
                    Database::open_target(&schema.target()).unwrap()
                };
                let (sent, empty, start, stop) = (sent.clone(), empty.clone(), start.clone(), stop.clone());
                std::thread::spawn(move || {
                    let owner: &'static str = Box::leak(format!("inst_{i}").into_boxed_str());
                    start.wait();
                    let claimer = || -> Result<(), String> {
                        while !stop.load(Ordering::SeqCst) {
                            let claimed = db
                                .write_blocking(move |tx| {
                                    let claimed = sandbox::claim_due_delivery(tx, at(1), at(61), owner)?;
                                    // A claim that takes a moment to commit, as under load:
                                    // the others must pass over its row meanwhile.
                                    std::thread::sleep(std::time::Duration::from_millis(1));
                                    Ok(claimed)
                                })
                                .map_err(|e| format!("{owner}: claim: {e}"))?;
                            match claimed {
                                Some(c) => {
                                    let held = c.clone();
                                    let recorded = db
                                        .write_blocking(move |tx| {
                                            sandbox::record_attempt(tx, &held, true, "success", None)
                                        })
                                        .map_err(|e| format!("{owner}: record: {e}"))?;
                                    if !recorded {
                                        return Err(format!("{owner} lost its claim"));
                                    }
                                    sent.lock().unwrap().push(c.delivery.id);
                                }
                                None => {
                                    empty.lock().unwrap().push(count(&db, FREE));
                                    if count(&db, UNDONE) == 0 {
                                        return Ok(());
                                    }
                                }
                            }
                        }
                        Err(format!("{owner} stopped: another claimer failed"))
                    };
                    let done = claimer();
                    if done.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    done
                })
            })
            .collect();
        crate::db::contract::join_claimers(threads);

        let mut per_delivery = BTreeMap::new();
        for id in sent.lock().unwrap().iter() {
            *per_delivery.entry(*id).or_insert(0) += 1;
        }
        assert_eq!(per_delivery.len(), 200);
        assert!(per_delivery.values().all(|&n| n == 1), "{per_delivery:?}");
        assert!(deliveries(&db).iter().all(|d| d.0 == "delivered" && d.1 == 1));
        // Empty-handed only while every free-looking delivery is being claimed by one of
        // the other claimers' transactions.
        let empty = empty.lock().unwrap();
        let idled: Vec<i64> = empty
            .iter()
            .copied()
            .filter(|&free| free >= CLAIMERS as i64)
            .collect();
        assert!(
            idled.is_empty(),
            "{} of {} empty claims left deliveries free: {idled:?}",
            idled.len(),
            empty.len()
        );
    }

    #[test]
    fn an_attempt_recorded_while_another_instance_re_claims_the_expired_delivery_is_refused_after_the_claim()
    {
        let Some((_schema, db)) = pg() else { return };
        enqueue(&db, "t-1", at(0));
        let stale = claim(&db, "inst_a", 0).unwrap();

        let c = stale.clone();
        let (reclaimed, recorded) = race(
            &db,
            |tx| sandbox::claim_due_delivery(tx, at(60), at(120), "inst_b"),
            move |tx| sandbox::record_attempt(tx, &c, true, "success", None),
        );

        assert_eq!(reclaimed.unwrap().delivery.id, stale.delivery.id);
        assert!(!recorded.unwrap());
        assert_eq!(
            deliveries(&db),
            vec![("pending".into(), 0, Some("inst_b".into()))]
        );
    }
}
