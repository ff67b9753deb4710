//! `logs` on both backends: the id bound of a time, the filters of each log, resending,
//! endpoints and secrets.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::logs::*;
use crate::db::pg::testing::both_backends;
use crate::db::sql::tests::new_order;
use crate::db::sql::{args, Arg};
use crate::db::types::to_millis;
use crate::db::{orders, Database, DbResult, Tx};
use crate::domain::{NewOrder, OrderId, OutboxStatus, ProviderKind, Verdict};

fn at(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_764_000_000 + s, 0).unwrap()
}

/// A notification with `id` received at second `s` (of `at`).
fn notification(tx: &Tx<'_>, id: i64, s: i64) -> DbResult<usize> {
    tx.exec(
        "INSERT INTO notifications (id, provider, received_at, headers, body, verdict) \
         VALUES (?1, 'alipay', ?2, '{}', ?3, 'applied')",
        args![id, to_millis(at(s)), Arg::Bytes(b"x".as_slice().into())],
    )
}

/// `(id, second)` rows → the bound `first_id_since` gives for each second asked, as the
/// ids of the rows at or after it, and the ids of the rows at or after that second.
fn split(db: &Database, table: Timed, rows: &[(i64, i64)], second: i64) -> (Vec<i64>, Vec<i64>) {
    let bound = db
        .read_blocking(move |tx| first_id_since(tx, table, at(second)))
        .unwrap();
    let from_bound = rows.iter().filter(|(id, _)| *id >= bound).map(|r| r.0).collect();
    let from_time = rows.iter().filter(|(_, s)| *s >= second).map(|r| r.0).collect();
    (from_bound, from_time)
}

/// An order for the outbox rows to belong to.
fn order(db: &Database, n: i64) -> NewOrder {
    let order = new_order(n, 100);
    let stored = order.clone();
    db.write_blocking(move |tx| orders::insert(tx, &stored, None))
        .unwrap();
    order
}

/// An outbox row of `id` created at second `s`.
fn outbox_row(
    tx: &Tx<'_>,
    id: i64,
    s: i64,
    order: &OrderId,
    event_type: &str,
    status: &str,
    url: &str,
) -> DbResult<usize> {
    tx.exec(
        "INSERT INTO webhook_outbox (id, event_id, order_id, event_type, payload, status, url, attempts, \
         lease_until, lease_owner, next_attempt_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, '{}', ?5, ?6, 3, ?7, 'inst_a', ?7, ?7, ?7)",
        args![
            id,
            format!("evt_{id}"),
            order,
            event_type,
            status,
            url,
            to_millis(at(s))
        ],
    )
}

fn attempt(tx: &Tx<'_>, id: i64, outbox_id: i64, s: i64, http_status: Option<i64>) -> DbResult<usize> {
    tx.exec(
        "INSERT INTO webhook_attempts (id, outbox_id, at, url, http_status, error, latency_ms, response) \
         VALUES (?1, ?2, ?3, 'https://a.example/hook', ?4, NULL, 12, 'ok')",
        args![id, outbox_id, to_millis(at(s)), http_status],
    )
}

/// The default filter with what `set` sets.
fn filter<F: Default>(set: &dyn Fn(&mut F)) -> F {
    let mut f = F::default();
    set(&mut f);
    f
}

both_backends! {
    fn the_id_found_for_a_time_splits_each_timed_table_before_it_from_after_it_whatever_the_gaps(db: &Database) {
        for table in [Timed::Notifications, Timed::WebhookOutbox, Timed::WebhookAttempts] {
            assert_eq!(db.read_blocking(move |tx| first_id_since(tx, table, at(0))).unwrap(), 1);
        }
        let o = order(db, 1);
        // Ids 1..=9 at seconds 0, 10, … 80, without ids 4 and 5.
        let rows = [(1, 0), (2, 10), (3, 20), (6, 50), (7, 60), (8, 70), (9, 80)];
        let id = o.id.clone();
        db.write_blocking(move |tx| {
            for (i, s) in rows {
                notification(tx, i, s)?;
                outbox_row(tx, i, s, &id, "order.paid", "delivered", "https://a.example/hook")?;
                attempt(tx, i, i, s, Some(200))?;
            }
            Ok(())
        })
        .unwrap();
        for table in [Timed::Notifications, Timed::WebhookOutbox, Timed::WebhookAttempts] {
            for second in [-5, 0, 1, 20, 21, 35, 50, 51, 80, 81] {
                let (from_bound, from_time) = split(db, table, &rows, second);
                assert_eq!(from_bound, from_time, "{table:?} at {second} s");
            }
            // After the last row: one past the last id.
            assert_eq!(db.read_blocking(move |tx| first_id_since(tx, table, at(81))).unwrap(), 10);
        }
    }

    fn each_notification_filter_keeps_only_its_rows_alone_or_together_and_pages_newest_first(db: &Database) {
        let o = order(db, 1);
        let t0 = o.created_at;
        // (provider, verdict, reason_code, for the order)
        let rows = [
            ("alipay", "applied", None, true),
            ("wechat", "rejected", Some("bad_signature"), false),
            ("alipay", "duplicate", None, true),
            ("wechat", "applied", Some("bad_signature"), true),
        ];
        let id = o.id.clone();
        db.write_blocking(move |tx| {
            for (i, (provider, verdict, code, ours)) in (0_i64..).zip(rows) {
                tx.exec(
                    "INSERT INTO notifications (provider, received_at, headers, body, verdict, reason_code, order_id) \
                     VALUES (?1, ?2, '{}', ?3, ?4, ?5, ?6)",
                    args![
                        provider,
                        to_millis(t0 + Duration::seconds(i)),
                        Arg::Bytes(vec![0xff, b'a'].into()),
                        verdict,
                        code,
                        ours.then_some(&id)
                    ],
                )?;
            }
            Ok(())
        })
        .unwrap();
        // Seconds after t0 of the rows kept by the filter `set` makes, newest first.
        let kept_n = |set: &dyn Fn(&mut NotificationFilter), limit: u32| -> Vec<i64> {
            let f = filter(set);
            let entries = db.read_blocking(move |tx| notifications(tx, &f, limit)).unwrap();
            entries.iter().map(|e| (e.received_at - t0).num_seconds()).collect()
        };
        let kept = |set: &dyn Fn(&mut NotificationFilter)| kept_n(set, 10);
        let s = |n: i64| Some(t0 + Duration::seconds(n));
        assert_eq!(kept(&|_| {}), [3, 2, 1, 0]);
        assert_eq!(kept_n(&|_| {}, 2), [3, 2]);
        assert_eq!(kept(&|f| f.provider = Some(ProviderKind::Wechat)), [3, 1]);
        assert_eq!(kept(&|f| f.verdict = Some(Verdict::Applied)), [3, 0]);
        assert_eq!(kept(&|f| f.reason_code = Some("bad_signature".into())), [3, 1]);
        assert_eq!(kept(&|f| f.order_id = Some(o.id.clone())), [3, 2, 0]);
        assert_eq!(kept(&|f| f.from = s(2)), [3, 2]);
        assert_eq!(kept(&|f| f.before = s(2)), [1, 0]);
        assert_eq!(kept(&|f| { f.from = s(1); f.before = s(3) }), [2, 1]);
        let third = db
            .read_blocking(|tx| notifications(tx, &NotificationFilter::default(), 10))
            .unwrap()[1]
            .id;
        assert_eq!(kept(&|f| f.before_id = Some(third)), [1, 0]);
        assert_eq!(kept(&|f| { f.before_id = Some(third); f.provider = Some(ProviderKind::Alipay) }), [0]);
        assert_eq!(
            kept(&|f| {
                f.provider = Some(ProviderKind::Wechat);
                f.reason_code = Some("bad_signature".into());
                f.order_id = Some(o.id.clone());
            }),
            [3]
        );
        assert_eq!(
            kept(&|f| {
                f.provider = Some(ProviderKind::Alipay);
                f.verdict = Some(Verdict::Duplicate);
                f.order_id = Some(o.id.clone());
                f.from = s(0);
                f.before = s(4);
            }),
            [2]
        );
        assert_eq!(kept(&|f| { f.provider = Some(ProviderKind::Alipay); f.verdict = Some(Verdict::Rejected) }), Vec::<i64>::new());
    }

    fn a_notification_is_found_by_id_with_its_body_read_as_text_and_a_missing_id_is_none(db: &Database) {
        let o = order(db, 1);
        let id = o.id.clone();
        let received = o.created_at;
        let stored = db
            .write_blocking(move |tx| {
                tx.one(
                    "INSERT INTO notifications (provider, received_at, remote_addr, headers, body, order_id, verdict, \
                     reason_code, reason, body_length, body_sha256) \
                     VALUES ('wechat', ?1, '10.0.0.1', '{\"a\":\"b\"}', ?2, ?3, 'rejected', 'bad_signature', 'why', 4000, 'abc') \
                     RETURNING id",
                    args![to_millis(received), Arg::Bytes(vec![b'{', 0xff, b'}'].into()), &id],
                    |r| r.get_i64(0),
                )
            })
            .unwrap();
        let found = db.read_blocking(move |tx| notification_by_id(tx, stored)).unwrap();
        assert_eq!(
            found,
            Some(NotificationEntry {
                id: stored,
                provider: ProviderKind::Wechat,
                received_at: received,
                remote_addr: Some("10.0.0.1".into()),
                headers: "{\"a\":\"b\"}".into(),
                body: "{\u{fffd}}".into(),
                order_id: Some(o.id.clone()),
                verdict: Verdict::Rejected,
                reason_code: Some("bad_signature".into()),
                reason: Some("why".into()),
                body_length: Some(4000),
                body_sha256: Some("abc".into()),
            })
        );
        assert_eq!(db.read_blocking(move |tx| notification_by_id(tx, stored + 1)).unwrap(), None);
    }

    fn each_delivery_filter_keeps_only_its_rows_alone_or_together_each_with_its_attempts(db: &Database) {
        let (one, two) = (order(db, 1), order(db, 2));
        // (order, event type, status, url)
        let rows = [
            (one.id.clone(), "order.paid", "delivered", "https://a.example/hook"),
            (two.id.clone(), "order.paid", "failed", "https://b.example/hook"),
            (one.id.clone(), "order.refunded", "failed", "https://a.example/hook"),
            (two.id.clone(), "order.closed", "pending", "https://a.example/hook"),
        ];
        db.write_blocking(move |tx| {
            for (i, (order, event, status, url)) in (1_i64..).zip(rows) {
                outbox_row(tx, i, i, &order, event, status, url)?;
            }
            attempt(tx, 1, 2, 5, Some(500))?;
            attempt(tx, 2, 2, 6, None)?;
            attempt(tx, 3, 1, 7, Some(200))
        })
        .unwrap();
        let kept = |set: &dyn Fn(&mut DeliveryFilter)| -> Vec<i64> {
            let f = filter(set);
            let found = db.read_blocking(move |tx| deliveries(tx, &f, 10)).unwrap();
            found.iter().map(|d| d.0).collect()
        };
        let s = |n: i64| Some(at(n));
        assert_eq!(kept(&|_| {}), [4, 3, 2, 1]);
        assert_eq!(kept(&|f| f.status = Some(OutboxStatus::Failed)), [3, 2]);
        assert_eq!(kept(&|f| f.event_type = Some("order.paid".into())), [2, 1]);
        assert_eq!(kept(&|f| f.order_id = Some(two.id.clone())), [4, 2]);
        assert_eq!(kept(&|f| f.url = Some("https://a.example/hook".into())), [4, 3, 1]);
        assert_eq!(kept(&|f| { f.from = s(2); f.before = s(4) }), [3, 2]);
        assert_eq!(kept(&|f| { f.before_id = Some(3); f.url = Some("https://a.example/hook".into()) }), [1]);
        assert_eq!(
            kept(&|f| {
                f.status = Some(OutboxStatus::Failed);
                f.event_type = Some("order.refunded".into());
                f.order_id = Some(one.id.clone());
                f.url = Some("https://a.example/hook".into());
            }),
            [3]
        );
        assert_eq!(kept(&|f| { f.status = Some(OutboxStatus::Pending); f.order_id = Some(one.id.clone()) }), Vec::<i64>::new());

        let all = db.read_blocking(|tx| deliveries(tx, &DeliveryFilter::default(), 10)).unwrap();
        let (id, url, order_id, second) = &all[2];
        assert_eq!((*id, url.as_str(), order_id), (2, "https://b.example/hook", &two.id));
        assert_eq!(second.event_id, "evt_2");
        assert_eq!(second.status, OutboxStatus::Failed);
        let attempts: Vec<(i64, Option<i64>)> =
            second.attempts.iter().map(|a| (a.at.timestamp() - at(0).timestamp(), a.http_status)).collect();
        assert_eq!(attempts, [(5, Some(500)), (6, None)]);
        assert_eq!(all[3].3.attempts.len(), 1);
        assert!(all[0].3.attempts.is_empty());
    }

    fn resending_by_filter_requeues_only_the_failed_rows_it_matches_and_reenables_only_their_endpoints(db: &Database) {
        let o = order(db, 1);
        let id = o.id.clone();
        db.write_blocking(move |tx| {
            outbox_row(tx, 1, 1, &id, "order.paid", "failed", "https://a.example/hook")?;
            outbox_row(tx, 2, 2, &id, "order.refunded", "failed", "https://b.example/hook")?;
            outbox_row(tx, 3, 3, &id, "order.paid", "delivered", "https://c.example/hook")?;
            outbox_row(tx, 4, 4, &id, "order.paid", "failed", "https://d.example/hook")?;
            for url in ["https://a.example/hook", "https://b.example/hook", "https://c.example/hook", "https://d.example/hook"] {
                tx.exec(
                    "INSERT INTO webhook_endpoints (url, failing_since, disabled_at) VALUES (?1, ?2, ?2)",
                    args![url, to_millis(at(0))],
                )?;
            }
            Ok(())
        })
        .unwrap();
        let f = DeliveryFilter {
            status: Some(OutboxStatus::Delivered),
            event_type: Some("order.paid".into()),
            before: Some(at(4)),
            ..Default::default()
        };
        let now = at(100);
        let requeued = db.write_blocking(move |tx| requeue_failed_matching(tx, &f, now)).unwrap();
        assert_eq!(requeued, 1);
        let rows = db
            .read_blocking(|tx| {
                tx.all(
                    "SELECT id, status, attempts, next_attempt_at, lease_until, lease_owner FROM webhook_outbox ORDER BY id",
                    args![],
                    |r| Ok((r.get_i64(0)?, r.get_string(1)?, r.get_i64(2)?, r.get_i64(3)?, r.get_opt_i64(4)?, r.get_opt_string(5)?)),
                )
            })
            .unwrap();
        let old = to_millis(at(0));
        let unchanged = |id: i64, status: &str| (id, status.to_owned(), 3, old + id * 1000, Some(old + id * 1000), Some("inst_a".to_owned()));
        assert_eq!(
            rows,
            [
                (1, "pending".to_owned(), 0, to_millis(now), None, None),
                unchanged(2, "failed"),
                unchanged(3, "delivered"),
                unchanged(4, "failed"),
            ]
        );
        let disabled: Vec<(String, bool)> = db
            .read_blocking(endpoints)
            .unwrap()
            .into_iter()
            .map(|e| (e.url, e.disabled_at.is_some()))
            .collect();
        assert_eq!(
            disabled,
            [
                ("https://a.example/hook".to_owned(), false),
                ("https://b.example/hook".to_owned(), true),
                ("https://c.example/hook".to_owned(), true),
                ("https://d.example/hook".to_owned(), true),
            ]
        );
    }

    fn endpoints_are_listed_by_the_bytes_of_their_urls_and_only_a_disabled_one_is_reenabled(db: &Database) {
        db.write_blocking(|tx| {
            tx.exec(
                "INSERT INTO webhook_endpoints (url, failing_since, last_failure_at, last_success_at, disabled_at) \
                 VALUES ('https://b.example/', ?1, ?2, ?3, ?4)",
                args![to_millis(at(1)), to_millis(at(2)), to_millis(at(0)), to_millis(at(3))],
            )?;
            tx.exec(
                "INSERT INTO webhook_endpoints (url, last_success_at) VALUES ('https://B.example/', ?1)",
                args![to_millis(at(5))],
            )
        })
        .unwrap();
        assert_eq!(
            db.read_blocking(endpoints).unwrap(),
            [
                Endpoint {
                    url: "https://B.example/".into(),
                    failing_since: None,
                    last_failure_at: None,
                    last_success_at: Some(at(5)),
                    disabled_at: None,
                },
                Endpoint {
                    url: "https://b.example/".into(),
                    failing_since: Some(at(1)),
                    last_failure_at: Some(at(2)),
                    last_success_at: Some(at(0)),
                    disabled_at: Some(at(3)),
                },
            ]
        );
        assert!(!db.write_blocking(|tx| reenable_endpoint(tx, "https://B.example/")).unwrap());
        assert!(!db.write_blocking(|tx| reenable_endpoint(tx, "https://none.example/")).unwrap());
        assert!(db.write_blocking(|tx| reenable_endpoint(tx, "https://b.example/")).unwrap());
        let b = db.read_blocking(endpoints).unwrap().remove(1);
        assert_eq!((b.failing_since, b.disabled_at, b.last_failure_at), (None, None, Some(at(2))));
        assert!(!db.write_blocking(|tx| reenable_endpoint(tx, "https://b.example/")).unwrap());
        assert_eq!(db.read_blocking(endpoints).unwrap().len(), 2);
    }

    fn the_secrets_still_signing_are_listed_newest_first_and_a_retired_one_is_left_out(db: &Database) {
        db.write_blocking(|tx| {
            for (secret, created, retire) in [("whsec_a", 0, Some(10)), ("whsec_b", 5, Some(20)), ("whsec_c", 8, None)] {
                tx.exec(
                    "INSERT INTO webhook_secrets (secret, created_at, retire_at) VALUES (?1, ?2, ?3)",
                    args![secret, to_millis(at(created)), retire.map(|s| to_millis(at(s)))],
                )?;
            }
            Ok(())
        })
        .unwrap();
        let signing = |s: i64| -> Vec<String> {
            db.read_blocking(move |tx| signing_secrets(tx, at(s)))
                .unwrap()
                .into_iter()
                .map(|k| k.secret)
                .collect()
        };
        assert_eq!(signing(9), ["whsec_c", "whsec_b", "whsec_a"]);
        assert_eq!(signing(10), ["whsec_c", "whsec_b"]);
        assert_eq!(signing(20), ["whsec_c"]);
        let newest = db.read_blocking(|tx| signing_secrets(tx, at(0))).unwrap().remove(0);
        assert_eq!(
            newest,
            StoredSecret { secret: "whsec_c".into(), created_at: at(8), retire_at: None }
        );
    }
}

/// With several instances (or one pool of connections), a row may commit after rows
/// given later ids, so ids do not grow with time: every row at or after the time must
/// still be at or after the bound (a row before it may fall after the bound).
#[test]
fn a_row_committed_late_with_an_id_below_later_rows_is_still_at_or_after_the_bound_on_postgresql() {
    let Some(schema) = crate::db::pg::testing::TestSchema::new() else {
        println!("{}", crate::db::pg::testing::SKIPPED);
        return;
    };
    let db = Database::open_target(&schema.target()).unwrap();
    // Id 2 got its id first but its row was received at second 60.
    let rows = [(1, 0), (2, 60), (3, 10), (4, 20), (5, 30), (6, 55), (7, 70)];
    db.write_blocking(move |tx| {
        for (id, s) in rows {
            notification(tx, id, s)?;
        }
        Ok(())
    })
    .unwrap();
    for second in [0, 5, 15, 50, 56, 60, 61, 70, 71] {
        let (from_bound, from_time) = split(&db, Timed::Notifications, &rows, second);
        let missed: Vec<&i64> = from_time.iter().filter(|id| !from_bound.contains(id)).collect();
        assert!(
            missed.is_empty(),
            "at {second} s rows {missed:?} fall before the bound"
        );
    }
    drop(db);
}
