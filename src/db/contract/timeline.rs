//! `timeline` on both backends: an order's raw notifications column by column (a body
//! stored as bytes reads as text on both), and its deliveries with their attempts.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::outbox::AttemptRecord;
use crate::db::pg::testing::both_backends;
use crate::db::sql::tests::new_order;
use crate::db::sql::{args, Arg};
use crate::db::timeline::*;
use crate::db::types::to_millis;
use crate::db::{orders, Database};
use crate::domain::{EventType, NewOrder, OutboxStatus};

fn s(n: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + Duration::seconds(n)
}

/// Stores orders `p-1` and `p-2` (100 fen each); returns them.
pub(super) fn two_orders(db: &Database) -> (NewOrder, NewOrder) {
    let (one, two) = (new_order(1, 100), new_order(2, 100));
    let stored = (one.clone(), two.clone());
    db.write_blocking(move |tx| {
        orders::insert(tx, &stored.0, None)?;
        orders::insert(tx, &stored.1, None)
    })
    .unwrap();
    (one, two)
}

both_backends! {
    fn an_orders_notifications_come_oldest_first_with_every_column_and_a_body_of_any_bytes_as_text(db: &Database) {
        let (one, two) = two_orders(db);
        let (a, b) = (one.id.clone(), two.id.clone());
        let ids = db
            .write_blocking(move |tx| {
                let mut ids = Vec::new();
                for (order, body, n) in [(&a, vec![b'{', 0xff, b'}'], 5), (&b, b"other".to_vec(), 6), (&a, b"second".to_vec(), 7)] {
                    ids.push(tx.one(
                        "INSERT INTO notifications (provider, received_at, remote_addr, headers, body, dedupe_key, order_id, \
                         verdict, reason, reason_code, body_length, body_sha256, unverified) \
                         VALUES ('alipay', ?1, NULL, '{\"h\":\"v\"}', ?2, 'dk', ?3, 'rejected', 'why', 'bad_signature', 4000, 'abc', 1) \
                         RETURNING id",
                        args![to_millis(s(n)), Arg::Bytes(body.into()), order],
                        |r| r.get_i64(0),
                    )?);
                }
                Ok(ids)
            })
            .unwrap();
        let a = one.id.clone();
        let rows = db.read_blocking(move |tx| notifications_for_order(tx, &a)).unwrap();
        let text = |t: &str| Field::Text(t.to_owned());
        let row = |id: i64, n: i64, body: &str| -> RawRow {
            [
                ("id", Field::Integer(id)),
                ("provider", text("alipay")),
                ("received_at", Field::Integer(to_millis(s(n)))),
                ("remote_addr", Field::Null),
                ("headers", text("{\"h\":\"v\"}")),
                ("body", text(body)),
                ("dedupe_key", text("dk")),
                ("order_id", text(one.id.as_str())),
                ("verdict", text("rejected")),
                ("reason", text("why")),
                ("reason_code", text("bad_signature")),
                ("body_length", Field::Integer(4000)),
                ("body_sha256", text("abc")),
                ("unverified", Field::Integer(1)),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect()
        };
        assert_eq!(rows, [row(ids[0], 5, "{\u{fffd}}"), row(ids[2], 7, "second")]);
        assert_eq!(rows[0][0].1.as_i64(), Some(ids[0]));
        assert_eq!(rows[0][1].1.as_text(), Some("alipay"));
        let none = new_order(3, 100).id;
        assert!(db.read_blocking(move |tx| notifications_for_order(tx, &none)).unwrap().is_empty());
    }

    fn an_orders_deliveries_come_oldest_first_each_with_its_attempts_in_order(db: &Database) {
        let (one, two) = two_orders(db);
        let (a, b) = (one.id.clone(), two.id.clone());
        db.write_blocking(move |tx| {
            // (id, order, event, status, delivered at, last error)
            for (id, order, event, status, delivered, error) in [
                (1, &a, "order.paid", "delivered", Some(3), None),
                (2, &b, "order.paid", "pending", None, None),
                (3, &a, "order.refunded", "failed", None, Some("HTTP 500")),
            ] {
                tx.exec(
                    "INSERT INTO webhook_outbox (id, event_id, order_id, event_type, payload, status, next_attempt_at, \
                     created_at, updated_at, delivered_at, last_error) \
                     VALUES (?1, ?2, ?3, ?4, '{}', ?5, ?6, ?7, ?7, ?8, ?9)",
                    args![
                        id,
                        format!("evt_{id}"),
                        order,
                        event,
                        status,
                        to_millis(s(id + 100)),
                        to_millis(s(id)),
                        delivered.map(|n| to_millis(s(n))),
                        error
                    ],
                )?;
            }
            // (outbox, at, status, error) with ids out of the outboxes' order.
            for (outbox, n, http_status, error) in
                [(3, 10, Some(500), None), (1, 2, Some(200), None), (3, 11, None, Some("timeout"))]
            {
                tx.exec(
                    "INSERT INTO webhook_attempts (outbox_id, at, url, http_status, error, latency_ms, response) \
                     VALUES (?1, ?2, 'https://a.example/hook', ?3, ?4, 7, 'body')",
                    args![outbox, to_millis(s(n)), http_status, error],
                )?;
            }
            Ok(())
        })
        .unwrap();
        let a = one.id.clone();
        let found = db.read_blocking(move |tx| deliveries_for_order(tx, &a)).unwrap();
        let attempt = |n: i64, http_status: Option<i64>, error: Option<&str>| AttemptRecord {
            at: s(n),
            url: "https://a.example/hook".into(),
            http_status,
            error: error.map(str::to_owned),
            latency_ms: 7,
            response: Some("body".into()),
        };
        assert_eq!(
            found,
            [
                Delivery {
                    event_id: "evt_1".into(),
                    event_type: EventType::OrderPaid,
                    status: OutboxStatus::Delivered,
                    created_at: s(1),
                    next_attempt_at: s(101),
                    delivered_at: Some(s(3)),
                    last_error: None,
                    attempts: vec![attempt(2, Some(200), None)],
                },
                Delivery {
                    event_id: "evt_3".into(),
                    event_type: EventType::OrderRefunded,
                    status: OutboxStatus::Failed,
                    created_at: s(3),
                    next_attempt_at: s(103),
                    delivered_at: None,
                    last_error: Some("HTTP 500".into()),
                    attempts: vec![attempt(10, Some(500), None), attempt(11, None, Some("timeout"))],
                },
            ]
        );
    }
}
