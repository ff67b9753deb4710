//! `db::notifications` on both backends: a notification reads back as stored (its body
//! kept as received), newest first, and retention deletes only what it may.

use chrono::{DateTime, Duration, Utc};

use super::orders::{new_order, store, t0};
use crate::db::history::{self, Cause, HistoryOutcome, Recorded};
use crate::db::notifications::{self, Cut, Decided, NewNotification, NotificationRecord};
use crate::db::pg::testing::both_backends;
use crate::db::sql::args;
use crate::db::Database;
use crate::domain::notification::RejectionCode;
use crate::domain::{OrderId, OrderStatus, ProviderKind, Reason, Transition, TransitionSource, Verdict};

/// Stores a notification received `secs` after `t0`; its id.
fn receive(db: &Database, secs: i64, unverified: bool) -> i64 {
    db.write_blocking(move |tx| {
        notifications::insert(
            tx,
            &NewNotification {
                provider: ProviderKind::Wechat,
                received_at: t0() + Duration::seconds(secs),
                remote_addr: None,
                headers: "{}",
                body: format!("n{secs}").as_bytes(),
                cut: None,
            },
            &Decided {
                reason: if unverified {
                    Reason::Rejected(RejectionCode::BadSignature)
                } else {
                    Reason::AwaitingPayment
                },
                detail: None,
                order_id: None,
                dedupe_key: None,
                unverified,
            },
        )
    })
    .unwrap()
}

fn stored_ids(db: &Database) -> Vec<i64> {
    db.read_blocking(|tx| {
        tx.all("SELECT id FROM notifications ORDER BY id", args![], |r| {
            r.get_i64(0)
        })
    })
    .unwrap()
}

both_backends! {
    fn a_notification_reads_back_as_stored_with_its_body_bytes_kept_and_the_newest_first(db: &Database) {
        store(db, vec![new_order("ord_a", 0, 100)]);
        let first = receive(db, 0, false);
        let body: &[u8] = b"a=1&sign=\xff\xfe&b=\x00";
        let second = db
            .write_blocking(move |tx| {
                let order = OrderId::parse("ord_a").unwrap();
                notifications::insert(
                    tx,
                    &NewNotification {
                        provider: ProviderKind::Alipay,
                        received_at: t0() + Duration::seconds(7),
                        remote_addr: Some("203.0.113.9"),
                        headers: r#"{"content-type":"application/x-www-form-urlencoded"}"#,
                        body,
                        cut: Some(Cut {
                            length: 70_000,
                            sha256: "ab12",
                        }),
                    },
                    &Decided {
                        reason: Reason::Paid,
                        detail: Some("paid in full"),
                        order_id: Some(&order),
                        dedupe_key: Some("alipay:T1"),
                        unverified: false,
                    },
                )
            })
            .unwrap();
        let third = receive(db, 3, true);
        assert!(first < second && second < third);

        let recent = db.read_blocking(|tx| notifications::list_recent(tx, 10)).unwrap();
        assert_eq!(
            recent.iter().map(|n| n.id).collect::<Vec<_>>(),
            [third, second, first]
        );
        assert_eq!(
            recent[1],
            NotificationRecord {
                id: second,
                provider: ProviderKind::Alipay,
                received_at: t0() + Duration::seconds(7),
                remote_addr: Some("203.0.113.9".into()),
                headers: r#"{"content-type":"application/x-www-form-urlencoded"}"#.into(),
                body: String::from_utf8_lossy(body).into_owned(),
                order_id: Some(OrderId::parse("ord_a").unwrap()),
                verdict: Verdict::Applied,
                reason_code: Some(Reason::Paid),
                reason: Some("paid in full".into()),
                body_length: Some(70_000),
                body_sha256: Some("ab12".into()),
                unverified: false,
            }
        );
        assert_eq!(
            (
                recent[0].verdict,
                recent[0].reason_code,
                recent[0].unverified,
                recent[0].body.as_str(),
                recent[0].order_id.clone()
            ),
            (
                Verdict::Rejected,
                Some(Reason::Rejected(RejectionCode::BadSignature)),
                true,
                "n3",
                None
            )
        );
        // The bytes themselves, not only their lossy text.
        let raw = db
            .read_blocking(move |tx| {
                tx.one(
                    "SELECT body FROM notifications WHERE id = ?1",
                    args![second],
                    |r| r.get_bytes(0),
                )
            })
            .unwrap();
        assert_eq!(raw, body);
        let limited = db.read_blocking(|tx| notifications::list_recent(tx, 2)).unwrap();
        assert_eq!(limited.iter().map(|n| n.id).collect::<Vec<_>>(), [third, second]);
    }

    fn retention_deletes_unverified_notifications_received_before_the_cut_oldest_first_but_never_one_history_names(
        db: &Database,
    ) {
        store(db, vec![new_order("ord_a", 0, 100)]);
        // Received at: 5 s, 1 s (named by history), 3 s, 2 s, 4 s verified, 9 s (after the cut).
        let n5 = receive(db, 5, true);
        let named = receive(db, 1, true);
        let n3 = receive(db, 3, true);
        let n2 = receive(db, 2, true);
        let verified = receive(db, 4, false);
        let late = receive(db, 9, true);
        db.write_blocking(move |tx| {
            let cause = Cause {
                notification_id: Some(named),
                ..Cause::system(TransitionSource::Notification)
            };
            history::record(
                tx,
                &Recorded {
                    order_id: &OrderId::parse("ord_a").unwrap(),
                    transition: Transition::Pay,
                    outcome: HistoryOutcome::Refused,
                    from: OrderStatus::Pending,
                    to: OrderStatus::Paid,
                    cause: &cause,
                    at: t0(),
                },
            )
        })
        .unwrap();
        let delete = |before: DateTime<Utc>, limit: u32| {
            db.write_blocking(move |tx| notifications::delete_unverified_before(tx, before, limit))
                .unwrap()
        };
        let cut = t0() + Duration::seconds(6);
        assert_eq!(
            delete(t0() + Duration::seconds(2), 10),
            0,
            "received at the cut is kept"
        );
        assert_eq!(delete(cut, 1), 1);
        let mut left = vec![n5, named, n3, verified, late];
        left.sort();
        assert_eq!(stored_ids(db), left, "the oldest, 2 s, went first");
        assert!(!stored_ids(db).contains(&n2));
        assert_eq!(delete(cut, 10), 2);
        let mut left = vec![named, verified, late];
        left.sort();
        assert_eq!(stored_ids(db), left);
        assert_eq!(delete(cut, 10), 0);
    }
}
