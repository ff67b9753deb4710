//! `audit` on both backends: what is stored (cut to its limits), each list, and the
//! audit page's filters alone and together.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::audit::*;
use crate::db::orders;
use crate::db::pg::testing::both_backends;
use crate::db::sql::tests::new_order;
use crate::db::Database;
use crate::domain::OrderId;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

/// Writes `(actor, action, outcome, order)` rows at minutes 0, 1, 2 …
fn write(db: &Database, rows: Vec<(&'static str, &'static str, &'static str, Option<OrderId>)>) {
    db.write_blocking(move |tx| {
        for (i, (actor, action, outcome, order_id)) in (0_i64..).zip(rows) {
            insert(
                tx,
                &NewAudit {
                    at: t0() + Duration::minutes(i),
                    actor,
                    action,
                    order_id: order_id.as_ref(),
                    reason: None,
                    remote_addr: None,
                    outcome,
                    detail: None,
                },
            )?;
        }
        Ok(())
    })
    .unwrap();
}

fn minutes(entries: &[AuditEntry]) -> Vec<i64> {
    entries.iter().map(|e| (e.at - t0()).num_minutes()).collect()
}

both_backends! {
    fn an_entry_is_stored_as_given_with_its_reason_and_detail_cut_at_their_limits(db: &Database) {
        let order = new_order(1, 100);
        let stored = order.clone();
        db.write_blocking(move |tx| {
            orders::insert(tx, &stored, None)?;
            let reason = "é".repeat(MAX_REASON + 5);
            let detail = "d".repeat(MAX_DETAIL + 1);
            insert(
                tx,
                &NewAudit {
                    at: t0(),
                    actor: "ann",
                    action: "order.refund",
                    order_id: Some(&stored.id),
                    reason: Some(&reason),
                    remote_addr: Some("10.0.0.1"),
                    outcome: "refused",
                    detail: Some(&detail),
                },
            )
        })
        .unwrap();
        let entries = db.read_blocking(|tx| list_recent(tx, 10)).unwrap();
        assert_eq!(
            entries,
            [AuditEntry {
                id: entries[0].id,
                at: t0(),
                actor: "ann".into(),
                action: "order.refund".into(),
                order_id: Some(order.id.clone()),
                reason: Some("é".repeat(MAX_REASON)),
                remote_addr: Some("10.0.0.1".into()),
                outcome: "refused".into(),
                detail: Some("d".repeat(MAX_DETAIL)),
            }]
        );
    }

    fn the_entries_of_an_order_come_oldest_first_and_recent_ones_newest_first_up_to_the_limit(db: &Database) {
        let (one, two) = crate::db::contract::timeline::two_orders(db);
        write(
            db,
            vec![
                ("ann", "order.close", "done", Some(one.id.clone())),
                ("bob", "sign_in", "done", None),
                ("ann", "order.refund", "done", Some(two.id.clone())),
                ("bob", "order.refund", "failed", Some(one.id.clone())),
            ],
        );
        let id = one.id.clone();
        assert_eq!(minutes(&db.read_blocking(move |tx| list_for_order(tx, &id)).unwrap()), [0, 3]);
        let id = two.id.clone();
        assert_eq!(minutes(&db.read_blocking(move |tx| list_for_order(tx, &id)).unwrap()), [2]);
        assert_eq!(minutes(&db.read_blocking(|tx| list_recent(tx, 3)).unwrap()), [3, 2, 1]);
        assert_eq!(minutes(&db.read_blocking(|tx| list_recent(tx, 10)).unwrap()), [3, 2, 1, 0]);
    }

    fn each_audit_filter_keeps_only_its_rows_alone_or_together_and_pages_by_id(db: &Database) {
        write(
            db,
            vec![
                ("ann", "close", "ok", None),
                ("bob", "refund", "refused", None),
                ("ann", "refund", "ok", None),
                ("bob", "close", "ok", None),
                ("ann", "close", "refused", None),
            ],
        );
        let kept_n = |f: AuditFilter, limit: u32| -> Vec<i64> {
            minutes(&db.read_blocking(move |tx| list(tx, &f, limit)).unwrap())
        };
        let kept = |f: AuditFilter| kept_n(f, 10);
        let text = |s: &str| Some(s.to_owned());
        let at = |m: i64| Some(t0() + Duration::minutes(m));
        let all = db.read_blocking(|tx| list(tx, &AuditFilter::default(), 10)).unwrap();
        let id_of = |m: usize| Some(all[4 - m].id);
        assert_eq!(minutes(&all), [4, 3, 2, 1, 0]);
        assert_eq!(kept_n(AuditFilter::default(), 2), [4, 3]);
        assert_eq!(kept(AuditFilter { actor: text("ann"), ..Default::default() }), [4, 2, 0]);
        assert_eq!(kept(AuditFilter { action: text("refund"), ..Default::default() }), [2, 1]);
        assert_eq!(kept(AuditFilter { outcome: text("refused"), ..Default::default() }), [4, 1]);
        assert_eq!(kept(AuditFilter { from: at(2), ..Default::default() }), [4, 3, 2]);
        assert_eq!(kept(AuditFilter { before: at(2), ..Default::default() }), [1, 0]);
        assert_eq!(kept(AuditFilter { before_id: id_of(3), ..Default::default() }), [2, 1, 0]);
        // The next page of a filtered list.
        let first_page = kept_n(AuditFilter { actor: text("ann"), ..Default::default() }, 2);
        assert_eq!(first_page, [4, 2]);
        assert_eq!(kept(AuditFilter { actor: text("ann"), before_id: id_of(2), ..Default::default() }), [0]);
        assert_eq!(kept(AuditFilter { actor: text("ann"), outcome: text("ok"), ..Default::default() }), [2, 0]);
        assert_eq!(kept(AuditFilter { action: text("close"), from: at(1), before: at(4), ..Default::default() }), [3]);
        assert_eq!(kept(AuditFilter { actor: text("bob"), action: text("close"), outcome: text("refused"), ..Default::default() }), Vec::<i64>::new());
        let bob_closing = AuditFilter {
            actor: text("bob"),
            action: text("close"),
            outcome: text("ok"),
            from: at(0),
            before: at(5),
            before_id: Some(i64::MAX),
        };
        assert_eq!(kept(bob_closing), [3]);
        // Text compares by its bytes: no case folding.
        assert_eq!(kept(AuditFilter { actor: text("Ann"), ..Default::default() }), Vec::<i64>::new());
    }
}
