//! `db::history` on both backends: every recorded row reads back as written, in the
//! order it was written, and only under its own order.

use chrono::Duration;

use super::orders::{new_order, store, t0};
use crate::db::history::{self, Cause, HistoryEntry, HistoryOutcome, Recorded};
use crate::db::notifications::{self, Decided, NewNotification};
use crate::db::pg::testing::both_backends;
use crate::domain::{OrderId, OrderStatus, ProviderKind, Reason, Transition, TransitionSource};

both_backends! {
    fn recorded_history_rows_read_back_whole_in_the_order_written_and_only_for_their_order(db: &Database) {
        store(db, vec![new_order("ord_b", 0, 100), new_order("ord_a", 0, 100)]);
        let ids = db
            .write_blocking(|tx| {
                let (a, b) = (OrderId::parse("ord_a").unwrap(), OrderId::parse("ord_b").unwrap());
                let notification = notifications::insert(
                    tx,
                    &NewNotification {
                        provider: ProviderKind::Alipay,
                        received_at: t0(),
                        remote_addr: None,
                        headers: "{}",
                        body: b"x",
                        cut: None,
                    },
                    &Decided {
                        reason: Reason::Paid,
                        detail: None,
                        order_id: Some(&a),
                        dedupe_key: None,
                        unverified: false,
                    },
                )?;
                let causes = [
                    Cause {
                        notification_id: Some(notification),
                        ..Cause::system(TransitionSource::Notification)
                    },
                    Cause {
                        source: TransitionSource::Admin,
                        actor: "alice".into(),
                        detail: Some("by hand".into()),
                        notification_id: None,
                    },
                    Cause::system_because(TransitionSource::Expiry, "expired"),
                ];
                // Written b, a, b, a…: each order's rows interleave with the other's.
                let rows = [
                    (
                        &b,
                        Transition::Close,
                        HistoryOutcome::Applied,
                        OrderStatus::Pending,
                        OrderStatus::Closed,
                        &causes[2],
                        5,
                    ),
                    (
                        &a,
                        Transition::Pay,
                        HistoryOutcome::Applied,
                        OrderStatus::Pending,
                        OrderStatus::Paid,
                        &causes[0],
                        9,
                    ),
                    (
                        &b,
                        Transition::Pay,
                        HistoryOutcome::Refused,
                        OrderStatus::Closed,
                        OrderStatus::Paid,
                        &causes[1],
                        1,
                    ),
                    (
                        &a,
                        Transition::Refund,
                        HistoryOutcome::Refused,
                        OrderStatus::Paid,
                        OrderStatus::PartiallyRefunded,
                        &causes[1],
                        3,
                    ),
                ];
                for (order_id, transition, outcome, from, to, cause, secs) in rows {
                    history::record(
                        tx,
                        &Recorded {
                            order_id,
                            transition,
                            outcome,
                            from,
                            to,
                            cause,
                            at: t0() + Duration::seconds(secs),
                        },
                    )?;
                }
                Ok(notification)
            })
            .unwrap();
        let list = |id: &str| {
            let id = OrderId::parse(id).unwrap();
            db.read_blocking(|tx| history::list_for_order(tx, &id)).unwrap()
        };
        let (a, b) = (list("ord_a"), list("ord_b"));
        assert!(
            a[0].id < a[1].id && b[0].id < b[1].id,
            "ids grow as rows are written"
        );
        let strip = |rows: Vec<HistoryEntry>| {
            rows.into_iter()
                .map(|e| HistoryEntry { id: 0, ..e })
                .collect::<Vec<_>>()
        };
        let entry = |secs,
                     transition,
                     outcome,
                     from,
                     to,
                     source,
                     actor: &str,
                     detail: Option<&str>,
                     notification_id| HistoryEntry {
            id: 0,
            at: t0() + Duration::seconds(secs),
            transition,
            outcome,
            from,
            to,
            source,
            actor: actor.into(),
            detail: detail.map(Into::into),
            notification_id,
        };
        assert_eq!(
            strip(a),
            [
                entry(
                    9,
                    Transition::Pay,
                    HistoryOutcome::Applied,
                    OrderStatus::Pending,
                    OrderStatus::Paid,
                    TransitionSource::Notification,
                    "system",
                    None,
                    Some(ids)
                ),
                entry(
                    3,
                    Transition::Refund,
                    HistoryOutcome::Refused,
                    OrderStatus::Paid,
                    OrderStatus::PartiallyRefunded,
                    TransitionSource::Admin,
                    "alice",
                    Some("by hand"),
                    None
                ),
            ]
        );
        assert_eq!(
            strip(b),
            [
                entry(
                    5,
                    Transition::Close,
                    HistoryOutcome::Applied,
                    OrderStatus::Pending,
                    OrderStatus::Closed,
                    TransitionSource::Expiry,
                    "system",
                    Some("expired"),
                    None
                ),
                entry(
                    1,
                    Transition::Pay,
                    HistoryOutcome::Refused,
                    OrderStatus::Closed,
                    OrderStatus::Paid,
                    TransitionSource::Admin,
                    "alice",
                    Some("by hand"),
                    None
                ),
            ]
        );
        assert!(list("ord_none").is_empty());
    }
}
