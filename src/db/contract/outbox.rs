//! `outbox`: queueing, claims with a lease, guarded attempts and re-queues; and, on
//! PostgreSQL, many claimers at once.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::outbox::tests::LeaseRow;
use crate::db::outbox::{self, After, Attempt, AttemptRecord, Claimed, OutboxRow};
use crate::db::pg::testing::both_backends;
use crate::db::sql::args;
use crate::db::sql::tests::new_order;
use crate::db::{orders, webhook_endpoints, Database, DbResult, Tx};
use crate::domain::{EventType, NewOrder, OrderId, OutboxStatus};

const LEASE: Duration = Duration::seconds(60);
const URL: &str = "http://shop.test/hook";

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn write<R: Send + 'static>(db: &Database, f: impl FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static) -> R {
    db.write_blocking(f).unwrap()
}

/// Stores order number `n`, with a notify_url when `hook`.
fn order(db: &Database, n: i64, hook: bool) -> OrderId {
    let order = NewOrder {
        notify_url: hook.then(|| URL.to_owned()),
        ..new_order(n, 100)
    };
    let id = order.id.clone();
    write(db, move |tx| orders::insert(tx, &order, None).map(|_| ()));
    id
}

fn enqueue(db: &Database, order: &OrderId, event: EventType, payload: &str, at: DateTime<Utc>) {
    let (order, payload) = (order.clone(), payload.to_owned());
    write(db, move |tx| outbox::enqueue(tx, &order, event, &payload, at));
}

fn claim(db: &Database, owner: &'static str, now: DateTime<Utc>) -> Option<Claimed> {
    write(db, move |tx| outbox::claim_due(tx, now, LEASE, owner))
}

fn listed(db: &Database, order: &OrderId) -> Vec<OutboxRow> {
    let order = order.clone();
    db.read_blocking(|tx| outbox::list_for_order(tx, &order)).unwrap()
}

/// `(status, lease_owner, lease_until, attempts)` of every outbox row, by id.
fn rows(db: &Database) -> Vec<LeaseRow> {
    db.read_blocking(outbox::tests::rows_in).unwrap()
}

fn attempt_count(db: &Database) -> i64 {
    db.read_blocking(|tx| tx.one("SELECT COUNT(*) FROM webhook_attempts", args![], |r| r.get_i64(0)))
        .unwrap()
}

/// An attempt at `claim` by `owner` at `at` that got `status`.
fn attempt(claim: &Claimed, owner: &'static str, at: DateTime<Utc>, status: u16) -> Attempt<'static> {
    Attempt {
        outbox_id: claim.id,
        lease_until: claim.lease_until,
        lease_owner: owner,
        at,
        url: URL,
        http_status: Some(status),
        error: None,
        latency_ms: 7,
        response: Some("ok"),
    }
}

fn record(
    db: &Database,
    claim: &Claimed,
    owner: &'static str,
    at: DateTime<Utc>,
    status: u16,
    after: After,
) -> bool {
    let claim = claim.clone();
    write(db, move |tx| {
        outbox::record_attempt(tx, &attempt(&claim, owner, at, status), &after)
    })
}

/// `(url, failing_since, disabled_at)` of every endpoint, by url.
fn endpoints(db: &Database) -> Vec<(String, bool, bool)> {
    db.read_blocking(webhook_endpoints::list)
        .unwrap()
        .into_iter()
        .map(|h| (h.url, h.failing_since.is_some(), h.disabled_at.is_some()))
        .collect()
}

/// Sets an outbox row's status and `updated_at` as a finished delivery leaves it.
fn finish(db: &Database, event_id: &str, status: &'static str, updated: DateTime<Utc>, url: &'static str) {
    let event_id = event_id.to_owned();
    write(db, move |tx| {
        tx.exec(
            "UPDATE webhook_outbox SET status = ?2, updated_at = ?3, url = ?4, attempts = 3, \
             lease_owner = NULL, lease_until = NULL WHERE event_id = ?1",
            args![event_id, status, crate::db::types::to_millis(updated), url],
        )
    });
}

fn disable(db: &Database, url: &'static str) {
    write(db, move |tx| {
        tx.exec(
            "INSERT INTO webhook_endpoints (url, failing_since, last_failure_at, disabled_at) VALUES (?1, 1, 2, 3)",
            args![url],
        )
    });
}

both_backends! {
    fn enqueued_events_are_listed_per_order_in_queue_order_found_by_event_id_and_counted_by_status(db: &Database) {
        let a = order(db, 1, true);
        let b = order(db, 2, false);
        enqueue(db, &a, EventType::OrderPaid, r#"{"n":1}"#, t(0));
        enqueue(db, &b, EventType::OrderPaid, r#"{"n":2}"#, t(1));
        enqueue(db, &a, EventType::OrderRefunded, r#"{"n":3}"#, t(2));

        let of_a = listed(db, &a);
        assert_eq!(
            of_a.iter()
                .map(|r| (r.event_type, r.payload.as_str()))
                .collect::<Vec<_>>(),
            [
                (EventType::OrderPaid, r#"{"n":1}"#),
                (EventType::OrderRefunded, r#"{"n":3}"#)
            ]
        );
        assert!(of_a.iter().all(|r| r.order_id == a
            && r.status == OutboxStatus::Pending
            && r.attempts == 0
            && r.last_error.is_none()));
        assert_eq!(of_a[0].next_attempt_at, t(0), "due when queued");
        assert_eq!(of_a[1].next_attempt_at, t(2));
        assert_ne!(of_a[0].event_id, of_a[1].event_id);

        let id = of_a[1].event_id.clone();
        let found = db
            .read_blocking(move |tx| outbox::find_by_event_id(tx, &id))
            .unwrap();
        assert_eq!(found.as_ref(), Some(&of_a[1]));
        assert_eq!(
            db.read_blocking(|tx| outbox::find_by_event_id(tx, "evt_none"))
                .unwrap(),
            None
        );

        let first = claim(db, "inst_a", t(5)).unwrap();
        record(db, &first, "inst_a", t(5), 200, After::Delivered);
        claim(db, "inst_a", t(5)).unwrap();
        assert_eq!(
            db.read_blocking(outbox::count_by_status).unwrap(),
            [
                (OutboxStatus::Delivered, 1),
                (OutboxStatus::Delivering, 1),
                (OutboxStatus::Pending, 1)
            ],
            "per status, by its stored text"
        );
    }

    fn a_claim_takes_the_earliest_due_row_for_its_owner_with_a_lease_and_the_orders_notify_url(db: &Database) {
        let hooked = order(db, 1, true);
        let bare = order(db, 2, false);
        enqueue(db, &hooked, EventType::OrderPaid, "{}", t(10));
        enqueue(db, &bare, EventType::OrderPaid, "{}", t(5));
        enqueue(db, &order(db, 3, true), EventType::OrderPaid, "{}", t(30));

        assert_eq!(claim(db, "inst_a", t(4)), None, "nothing due yet");
        let first = claim(db, "inst_a", t(10)).unwrap();
        assert_eq!(first.order_id, bare, "the earliest due, not the first queued");
        assert_eq!(first.notify_url, None);
        assert_eq!(first.attempts, 0);
        assert_eq!(first.lease_until, (t(10) + LEASE).timestamp_millis());
        let second = claim(db, "inst_b", t(10)).unwrap();
        assert_eq!(second.order_id, hooked);
        assert_eq!(second.notify_url.as_deref(), Some(URL));
        assert_eq!(second.event_type, EventType::OrderPaid);
        assert_eq!(
            claim(db, "inst_a", t(29)),
            None,
            "the third is not due before t(30)"
        );

        let lease = |c: &Claimed| Some(c.lease_until);
        assert_eq!(
            rows(db),
            vec![
                ("delivering".into(), Some("inst_b".into()), lease(&second), 0),
                ("delivering".into(), Some("inst_a".into()), lease(&first), 0),
                ("pending".into(), None, None, 0),
            ]
        );
    }

    fn a_later_event_of_an_order_waits_until_the_earlier_one_is_done(db: &Database) {
        let a = order(db, 1, true);
        enqueue(db, &a, EventType::OrderPaid, "{}", t(0));
        enqueue(db, &a, EventType::OrderRefunded, "{}", t(0));

        let first = claim(db, "inst_a", t(1)).unwrap();
        assert_eq!(first.event_type, EventType::OrderPaid);
        assert_eq!(
            claim(db, "inst_b", t(1)),
            None,
            "the refund waits for the payment"
        );
        assert!(record(db, &first, "inst_a", t(2), 500, After::RetryAt(t(100))));
        assert_eq!(
            claim(db, "inst_b", t(3)),
            None,
            "still waits while the payment retries"
        );
        let again = claim(db, "inst_b", t(100)).unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!(again.attempts, 1);
        assert!(record(db, &again, "inst_b", t(100), 200, After::Delivered));
        let second = claim(db, "inst_b", t(100)).unwrap();
        assert_eq!(second.event_type, EventType::OrderRefunded);
    }

    fn a_claimed_row_is_not_claimed_again_until_its_lease_runs_out(db: &Database) {
        enqueue(db, &order(db, 1, true), EventType::OrderPaid, "{}", t(0));
        let first = claim(db, "inst_a", t(0)).unwrap();
        assert_eq!(claim(db, "inst_b", t(0)), None);
        assert_eq!(claim(db, "inst_b", t(60) - Duration::milliseconds(1)), None);
        let before = rows(db);

        let second = claim(db, "inst_b", t(60)).unwrap();

        assert_eq!(before[0].1.as_deref(), Some("inst_a"), "untouched while it held");
        assert_eq!(second.id, first.id);
        assert_eq!(second.lease_until, (t(60) + LEASE).timestamp_millis());
        assert_eq!(rows(db)[0].1.as_deref(), Some("inst_b"));
    }

    fn each_outcome_of_an_attempt_moves_the_row_on_and_is_logged(db: &Database) {
        for n in 0..3 {
            enqueue(db, &order(db, n, true), EventType::OrderPaid, "{}", t(0));
        }
        let claims: Vec<Claimed> = (0..3).map(|_| claim(db, "inst_a", t(1)).unwrap()).collect();

        assert!(record(db, &claims[0], "inst_a", t(2), 204, After::Delivered));
        assert!(record(db, &claims[1], "inst_a", t(3), 503, After::RetryAt(t(90))));
        let failed = Attempt {
            http_status: None,
            error: Some("connection refused"),
            response: None,
            ..attempt(&claims[2], "inst_a", t(4), 0)
        };
        assert!(write(db, move |tx| outbox::record_attempt(
            tx,
            &failed,
            &After::Failed
        )));

        let got: Vec<(OutboxStatus, i64, DateTime<Utc>, Option<String>)> = claims
            .iter()
            .map(|c| {
                let id = c.event_id.clone();
                let r = db
                    .read_blocking(move |tx| outbox::find_by_event_id(tx, &id))
                    .unwrap()
                    .unwrap();
                (r.status, r.attempts, r.next_attempt_at, r.last_error)
            })
            .collect();
        assert_eq!(
            got,
            [
                (OutboxStatus::Delivered, 1, t(0), None),
                (OutboxStatus::Pending, 1, t(90), Some("HTTP 503".into())),
                (OutboxStatus::Failed, 1, t(0), Some("connection refused".into())),
            ]
        );
        assert!(
            rows(db).iter().all(|r| r.1.is_none() && r.2.is_none()),
            "claims ended"
        );

        let id = claims[1].event_id.clone();
        assert_eq!(
            db.read_blocking(move |tx| outbox::list_attempts(tx, &id))
                .unwrap(),
            [AttemptRecord {
                at: t(3),
                url: URL.into(),
                http_status: Some(503),
                error: None,
                latency_ms: 7,
                response: Some("ok".into()),
            }]
        );
        let id = claims[2].id;
        let of_failed = db.read_blocking(move |tx| outbox::attempts_of(tx, id)).unwrap();
        assert_eq!(of_failed.len(), 1);
        assert_eq!(of_failed[0].error.as_deref(), Some("connection refused"));
        assert_eq!(of_failed[0].http_status, None);
        assert!(db
            .read_blocking(|tx| outbox::list_attempts(tx, "evt_none"))
            .unwrap()
            .is_empty());
    }

    fn an_attempt_skip_or_failure_under_a_lost_claim_is_refused_and_changes_nothing(db: &Database) {
        enqueue(db, &order(db, 1, true), EventType::OrderPaid, "{}", t(0));
        let first = claim(db, "inst_a", t(0)).unwrap();
        let second = claim(db, "inst_b", t(60)).unwrap();
        let before = rows(db);

        let stale = record(db, &first, "inst_a", t(61), 200, After::Delivered);
        // inst_a's name on inst_b's lease: the owner alone refuses it.
        let wrong_owner = record(db, &second, "inst_a", t(61), 200, After::Delivered);
        let (f, s) = (first.clone(), second.clone());
        let skipped = write(db, move |tx| outbox::skip(tx, &f, "inst_a", t(61)));
        let failed = write(db, move |tx| {
            outbox::fail_unsent(tx, &s, "inst_a", URL, "disabled", t(61))
        });

        assert!(!stale && !wrong_owner && !skipped && !failed);
        assert_eq!(rows(db), before, "still inst_b's claim, untouched");
        assert_eq!(before[0].1.as_deref(), Some("inst_b"));
        assert_eq!(attempt_count(db), 0, "a refused attempt is not logged");

        assert!(record(db, &second, "inst_b", t(61), 200, After::Delivered));
        assert_eq!(rows(db), vec![("delivered".into(), None, None, 1)]);
        assert_eq!(attempt_count(db), 1);
    }

    fn a_row_is_skipped_or_failed_unsent_under_its_own_claim_without_an_attempt(db: &Database) {
        enqueue(db, &order(db, 1, false), EventType::OrderPaid, "{}", t(0));
        enqueue(db, &order(db, 2, true), EventType::OrderPaid, "{}", t(0));
        let (a, b) = (
            claim(db, "inst_a", t(0)).unwrap(),
            claim(db, "inst_a", t(0)).unwrap(),
        );

        assert!(write(db, move |tx| outbox::skip(tx, &a, "inst_a", t(1))));
        let b2 = b.clone();
        assert!(write(db, move |tx| outbox::fail_unsent(
            tx,
            &b2,
            "inst_a",
            URL,
            "endpoint disabled",
            t(1)
        )));

        assert_eq!(
            rows(db),
            vec![
                ("skipped".into(), None, None, 0),
                ("failed".into(), None, None, 0)
            ]
        );
        let id = b.event_id.clone();
        let failed = db
            .read_blocking(move |tx| outbox::find_by_event_id(tx, &id))
            .unwrap()
            .unwrap();
        assert_eq!(failed.last_error.as_deref(), Some("endpoint disabled"));
        assert_eq!(attempt_count(db), 0);
        // Done rows are not claimed again.
        assert_eq!(claim(db, "inst_a", t(500)), None);
    }

    fn a_requeue_restarts_only_a_finished_row_with_its_event_id_and_re_enables_its_endpoint(db: &Database) {
        for n in 0..3 {
            enqueue(db, &order(db, n, true), EventType::OrderPaid, "{}", t(0));
        }
        let ids: Vec<String> = rows_by_event(db);
        finish(db, &ids[0], "failed", t(5), "http://a.test/h");
        finish(db, &ids[1], "delivered", t(5), "http://b.test/h");
        disable(db, "http://a.test/h");
        disable(db, "http://c.test/h");
        let before = rows(db);

        let (first, third) = (ids[0].clone(), ids[2].clone());
        let pending = write(db, move |tx| outbox::requeue(tx, &third, t(9)));
        assert!(!pending, "a pending row is not re-queued");
        assert_eq!(rows(db), before);
        assert!(write(db, move |tx| outbox::requeue(tx, &first, t(10))));
        let second = ids[1].clone();
        assert!(write(db, move |tx| outbox::requeue(tx, &second, t(10))));
        assert!(!write(db, |tx| outbox::requeue(tx, "evt_none", t(10))));

        let id = ids[0].clone();
        let row = db
            .read_blocking(move |tx| outbox::find_by_event_id(tx, &id))
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.status, row.attempts, row.next_attempt_at),
            (OutboxStatus::Pending, 0, t(10))
        );
        assert_eq!(
            endpoints(db),
            [
                ("http://a.test/h".into(), false, false),
                ("http://c.test/h".into(), true, true)
            ],
            "only the re-queued row's endpoint"
        );
        // By due time: the never-sent third row first, then the re-queued ones.
        let claimed: Vec<String> = (0..3)
            .map(|_| claim(db, "inst_a", t(10)).unwrap().event_id)
            .collect();
        assert_eq!(
            claimed,
            [ids[2].as_str(), &ids[0], &ids[1]],
            "the same event ids go out again"
        );
    }

    fn a_requeue_since_restarts_only_rows_failed_since_then_and_re_enables_their_endpoints(db: &Database) {
        for n in 0..4 {
            enqueue(db, &order(db, n, true), EventType::OrderPaid, "{}", t(0));
        }
        let ids = rows_by_event(db);
        finish(db, &ids[0], "failed", t(50), "http://old.test/h");
        finish(db, &ids[1], "failed", t(100), "http://new.test/h");
        finish(db, &ids[2], "delivered", t(200), "http://done.test/h");
        for url in ["http://old.test/h", "http://new.test/h", "http://done.test/h"] {
            disable(db, url);
        }

        let n = write(db, |tx| outbox::requeue_failed_since(tx, t(100), t(300)));

        assert_eq!(n, 1);
        assert_eq!(
            rows(db).into_iter().map(|r| (r.0, r.3)).collect::<Vec<_>>(),
            [
                ("failed".into(), 3),
                ("pending".into(), 0),
                ("delivered".into(), 3),
                ("pending".into(), 0)
            ]
        );
        assert_eq!(
            endpoints(db),
            [
                ("http://done.test/h".into(), true, true),
                ("http://new.test/h".into(), false, false),
                ("http://old.test/h".into(), true, true),
            ]
        );
    }

    fn giving_back_claims_frees_only_the_owners_own_and_leaves_them_due_as_they_were(db: &Database) {
        for n in 0..3 {
            enqueue(db, &order(db, n, true), EventType::OrderPaid, "{}", t(0));
        }
        let mine = claim(db, "inst_a", t(0)).unwrap();
        let theirs = claim(db, "inst_b", t(0)).unwrap();
        claim(db, "inst_a", t(0)).unwrap();

        let released = write(db, |tx| outbox::release_claims(tx, "inst_a", t(1)));

        assert_eq!(released, 2);
        assert_eq!(
            rows(db),
            vec![
                ("pending".into(), None, None, 0),
                (
                    "delivering".into(),
                    Some("inst_b".into()),
                    Some(theirs.lease_until),
                    0
                ),
                ("pending".into(), None, None, 0),
            ]
        );
        let again = claim(db, "inst_c", t(2)).unwrap();
        assert_eq!(again.id, mine.id, "due again at once");
        assert_eq!(write(db, |tx| outbox::release_claims(tx, "inst_z", t(3))), 0);
    }
}

/// Event ids of every outbox row, by id.
fn rows_by_event(db: &Database) -> Vec<String> {
    db.read_blocking(|tx| {
        tx.all("SELECT event_id FROM webhook_outbox ORDER BY id", args![], |r| {
            r.get_string(0)
        })
    })
    .unwrap()
}

/// Many claimers at once, on PostgreSQL only: SQLite's single writer never runs two
/// claims at once.
mod concurrent {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier, Mutex};

    use super::*;
    use crate::db::contract::race::race;
    use crate::db::pg::testing::{TestSchema, SKIPPED};

    const CLAIMERS: usize = 8;

    /// Half the claimers share `db`'s pool, half have a `Database` of their own (as
    /// separate instances would).
    fn handles(db: &Database, schema: &TestSchema) -> Vec<Database> {
        (0..CLAIMERS)
            .map(|i| {
                if i % 2 == 0 {
                    db.clone()
                } else {
                    Database::open_target(&schema.target()).unwrap()
                }
            })
            .collect()
    }

    /// Rows still `pending`, as a transaction started now sees them.
    fn pending(db: &Database) -> i64 {
        db.read_blocking(|tx| {
            tx.one(
                "SELECT COUNT(*) FROM webhook_outbox WHERE status = 'pending'",
                args![],
                |r| r.get_i64(0),
            )
        })
        .unwrap()
    }

    fn undone(db: &Database) -> i64 {
        db.read_blocking(|tx| {
            tx.one(
                "SELECT COUNT(*) FROM webhook_outbox WHERE status IN ('pending', 'delivering')",
                args![],
                |r| r.get_i64(0),
            )
        })
        .unwrap()
    }

    /// What the claimers saw: every claim, and for every claim that came back empty the
    /// rows still pending just after.
    #[derive(Default)]
    struct Seen {
        claims: Vec<(String, Claimed)>,
        empty: Vec<i64>,
    }

    /// `CLAIMERS` threads claim and deliver until no row is left undone.
    fn run(dbs: Vec<Database>, now: DateTime<Utc>) -> Seen {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let start = Arc::new(Barrier::new(dbs.len()));
        // Set by a claimer that fails, so that the others stop rather than wait for rows
        // it left claimed.
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = dbs
            .into_iter()
            .enumerate()
            .map(|(i, db)| {
                let (seen, start, stop) = (seen.clone(), start.clone(), stop.clone());
                std::thread::spawn(move || {
                    let owner: &'static str = Box::leak(format!("inst_{i}").into_boxed_str());
                    start.wait();
                    let done = claimer(&db, owner, now, &seen, &stop);
                    if done.is_err() {
                        stop.store(true, Ordering::SeqCst);
                    }
                    done
                })
            })
            .collect();
        crate::db::contract::join_claimers(threads);
        Arc::try_unwrap(seen).ok().unwrap().into_inner().unwrap()
    }

    /// One claimer's loop: claim, deliver, until no row is left undone.
    fn claimer(
        db: &Database,
        owner: &'static str,
        now: DateTime<Utc>,
        seen: &Mutex<Seen>,
        stop: &AtomicBool,
    ) -> Result<(), String> {
        let failed = |what: &str, e: crate::db::DbError| format!("{owner}: {what}: {e}");
        while !stop.load(Ordering::SeqCst) {
            let claimed = db
                .write_blocking(move |tx| {
                    let claimed = outbox::claim_due(tx, now, LEASE, owner)?;
                    // A claim that takes a moment to commit, as under load: the others
                    // must pass over its row meanwhile.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    Ok(claimed)
                })
                .map_err(|e| failed("claim", e))?;
            match claimed {
                Some(c) => {
                    let held = c.clone();
                    let recorded = db
                        .write_blocking(move |tx| {
                            let a = attempt(&held, owner, now, 200);
                            outbox::record_attempt(tx, &a, &After::Delivered)
                        })
                        .map_err(|e| failed("record", e))?;
                    if !recorded {
                        return Err(format!("{owner} lost its claim of row {}", c.id));
                    }
                    seen.lock().unwrap().claims.push((owner.to_owned(), c));
                }
                None => {
                    let left = pending(db);
                    seen.lock().unwrap().empty.push(left);
                    if undone(db) == 0 {
                        return Ok(());
                    }
                }
            }
        }
        Err(format!("{owner} stopped: another claimer failed"))
    }

    /// `(outbox_id, attempt id)` of every attempt, by attempt id.
    fn attempts(db: &Database) -> Vec<(i64, i64)> {
        db.read_blocking(|tx| {
            tx.all(
                "SELECT outbox_id, id FROM webhook_attempts ORDER BY id",
                args![],
                |r| Ok((r.get_i64(0)?, r.get_i64(1)?)),
            )
        })
        .unwrap()
    }

    fn per_row(claims: &[(String, Claimed)]) -> BTreeMap<i64, usize> {
        let mut n = BTreeMap::new();
        for (_, c) in claims {
            *n.entry(c.id).or_insert(0) += 1;
        }
        n
    }

    #[test]
    fn eight_claimers_at_once_claim_and_record_each_of_200_rows_exactly_once_and_none_idles_while_a_row_is_free(
    ) {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let db = Database::open_target(&schema.target()).unwrap();
        write(&db, |tx| {
            for n in 0..200 {
                let order = NewOrder {
                    notify_url: Some(URL.into()),
                    ..new_order(n, 100)
                };
                orders::insert(tx, &order, None)?;
                outbox::enqueue(tx, &order.id, EventType::OrderPaid, "{}", t(0))?;
            }
            Ok(())
        });

        let seen = run(handles(&db, &schema), t(1));

        let claimed = per_row(&seen.claims);
        assert_eq!(claimed.len(), 200, "every row claimed");
        assert!(
            claimed.values().all(|&n| n == 1),
            "a row claimed twice: {claimed:?}"
        );
        let mut per_attempt = BTreeMap::new();
        for (row, _) in attempts(&db) {
            *per_attempt.entry(row).or_insert(0) += 1;
        }
        assert_eq!(per_attempt.len(), 200);
        assert!(per_attempt.values().all(|&n| n == 1), "{per_attempt:?}");
        assert_eq!(rows(&db).iter().filter(|r| r.0 == "delivered").count(), 200);
        // A claim comes back empty only when every row still pending is being claimed by
        // another claimer's transaction, at most one each: a larger count means it passed
        // over a free row and idled.
        let idled: Vec<i64> = seen
            .empty
            .iter()
            .copied()
            .filter(|&left| left >= CLAIMERS as i64)
            .collect();
        assert!(
            idled.is_empty(),
            "{} empty claims of {} left rows pending: {idled:?}",
            idled.len(),
            seen.empty.len()
        );
        let owners: std::collections::BTreeSet<&str> = seen.claims.iter().map(|(o, _)| o.as_str()).collect();
        assert!(owners.len() > 1, "only {owners:?} ever claimed");
    }

    #[test]
    fn eight_claimers_at_once_deliver_each_orders_events_in_the_order_they_were_queued() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let db = Database::open_target(&schema.target()).unwrap();
        // 25 orders × 8 events, queued interleaved, all due at once.
        write(&db, |tx| {
            let orders: Vec<NewOrder> = (0..25).map(|n| new_order(n, 100)).collect();
            for order in &orders {
                orders::insert(tx, order, None)?;
            }
            for round in 0..8 {
                for order in &orders {
                    outbox::enqueue(tx, &order.id, EventType::OrderPaid, &format!("{round}"), t(0))?;
                }
            }
            Ok(())
        });

        let seen = run(handles(&db, &schema), t(1));

        let claimed = per_row(&seen.claims);
        assert_eq!(claimed.len(), 200);
        assert!(claimed.values().all(|&n| n == 1), "{claimed:?}");
        let order_of: BTreeMap<i64, OrderId> = seen
            .claims
            .iter()
            .map(|(_, c)| (c.id, c.order_id.clone()))
            .collect();
        let mut delivered: BTreeMap<&OrderId, Vec<i64>> = BTreeMap::new();
        let attempts = attempts(&db);
        assert_eq!(attempts.len(), 200, "one attempt per row");
        for (row, _) in &attempts {
            delivered.entry(&order_of[row]).or_default().push(*row);
        }
        assert_eq!(delivered.len(), 25);
        for (order, rows) in delivered {
            let mut queued = rows.clone();
            queued.sort();
            assert_eq!(rows, queued, "events of {order} attempted out of queue order");
        }
    }

    #[test]
    fn an_outcome_recorded_while_another_instance_re_claims_the_expired_row_is_refused_after_the_claim() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let db = Database::open_target(&schema.target()).unwrap();
        for n in 0..3 {
            enqueue(&db, &order(&db, n, true), EventType::OrderPaid, "{}", t(0));
        }
        let stale: Vec<Claimed> = (0..3).map(|_| claim(&db, "inst_a", t(0)).unwrap()).collect();

        // inst_b re-claims each row, its lease run out, while inst_a records what it did
        // under the old claim: inst_a waits for inst_b's claim and then finds it gone.
        let reclaim = || |tx: &Tx<'_>| outbox::claim_due(tx, t(60), LEASE, "inst_b");
        let c = stale[0].clone();
        let (first, recorded) = race(&db, reclaim(), move |tx| {
            outbox::record_attempt(tx, &attempt(&c, "inst_a", t(60), 200), &After::Delivered)
        });
        let c = stale[1].clone();
        let (second, skipped) = race(&db, reclaim(), move |tx| outbox::skip(tx, &c, "inst_a", t(60)));
        let c = stale[2].clone();
        let (third, failed) = race(&db, reclaim(), move |tx| {
            outbox::fail_unsent(tx, &c, "inst_a", URL, "disabled", t(60))
        });

        assert_eq!(
            [first, second, third].map(|c| c.unwrap().id),
            [stale[0].id, stale[1].id, stale[2].id]
        );
        assert!(!recorded.unwrap() && !skipped.unwrap() && !failed.unwrap());
        let lease = (t(60) + LEASE).timestamp_millis();
        assert_eq!(
            rows(&db),
            vec![("delivering".to_owned(), Some("inst_b".to_owned()), Some(lease), 0); 3],
            "inst_b's claims, untouched"
        );
        assert_eq!(attempt_count(&db), 0);
    }

    #[test]
    fn a_claim_made_while_the_holder_records_its_outcome_skips_the_row_and_takes_the_next() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let db = Database::open_target(&schema.target()).unwrap();
        for n in 0..2 {
            enqueue(&db, &order(&db, n, true), EventType::OrderPaid, "{}", t(0));
        }
        let held = claim(&db, "inst_a", t(0)).unwrap();

        // The lease ran out just as inst_a records: inst_b passes over the row inst_a is
        // updating rather than wait for it, and claims the other.
        let c = held.clone();
        let (recorded, other) = race(
            &db,
            move |tx| outbox::record_attempt(tx, &attempt(&c, "inst_a", t(60), 200), &After::Delivered),
            |tx| outbox::claim_due(tx, t(60), LEASE, "inst_b"),
        );

        assert!(recorded);
        let other = other.unwrap().expect("the free row");
        assert_ne!(other.id, held.id);
        assert_eq!(
            rows(&db),
            vec![
                ("delivered".to_owned(), None, None, 1),
                (
                    "delivering".to_owned(),
                    Some("inst_b".to_owned()),
                    Some(other.lease_until),
                    0
                ),
            ]
        );
    }
}
