//! Schema migrations: compiled in, append-only, numbered by `PRAGMA user_version`.
//! Never edit a shipped entry; add a new one at the end.

use rusqlite::{Connection, TransactionBehavior};

use super::{DbError, DbResult};

pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("migrations/0001_init.sql")),
    (
        "0002_refunds_checks_sandbox",
        include_str!("migrations/0002_refunds_checks_sandbox.sql"),
    ),
    ("0003_webhooks", include_str!("migrations/0003_webhooks.sql")),
    (
        "0004_notification_reasons",
        include_str!("migrations/0004_notification_reasons.sql"),
    ),
    ("0005_admin", include_str!("migrations/0005_admin.sql")),
    (
        "0006_admin_staff",
        include_str!("migrations/0006_admin_staff.sql"),
    ),
    (
        "0007_idempotency_claims",
        include_str!("migrations/0007_idempotency_claims.sql"),
    ),
    (
        "0008_rejected_notifications",
        include_str!("migrations/0008_rejected_notifications.sql"),
    ),
    (
        "0009_sandbox_trades_by_trade_no",
        include_str!("migrations/0009_sandbox_trades_by_trade_no.sql"),
    ),
    (
        "0010_leases_and_claim_owners",
        include_str!("migrations/0010_leases_and_claim_owners.sql"),
    ),
    (
        "0011_secrets_and_refund_seq",
        include_str!("migrations/0011_secrets_and_refund_seq.sql"),
    ),
    (
        "0012_rate_limits",
        include_str!("migrations/0012_rate_limits.sql"),
    ),
];

/// Schema version this binary writes.
pub fn latest_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Applies every pending migration in one exclusive transaction. Returns the names of
/// the ones applied. A database written by a newer kassa is refused, not touched.
pub(super) fn run(conn: &mut Connection) -> DbResult<Vec<&'static str>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest_version() {
        return Err(DbError::TooNew {
            found: current,
            supported: latest_version(),
        });
    }
    let mut applied = Vec::new();
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)
            .map_err(|e| DbError::Migration(format!("{name}: {e}")))?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        applied.push(*name);
    }
    tx.commit()?;
    Ok(applied)
}

pub(super) fn current_version(conn: &Connection) -> DbResult<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Duration, TimeZone, Utc};

    use super::MIGRATIONS;
    use crate::db::outbox::tests::rows as outbox_rows;
    use crate::db::outbox::{claim_due, enqueue, release_claims};
    use crate::db::sql::args;
    use crate::db::sql::tests::new_order;
    use crate::db::types::to_millis;
    use crate::db::{orders, Offline};
    use crate::domain::{EventType, NewOrder};

    const LEASE: Duration = Duration::seconds(60);

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap()
    }

    #[test]
    fn a_row_left_delivering_before_claims_had_owners_is_claimed_again_once_its_lease_has_run_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kassa.db");
        let mut db = Offline::open(&path).unwrap();
        // The schema as the release before owners left it (version 9).
        db.immediate(|tx| {
            for (_, sql) in &MIGRATIONS[..9] {
                tx.sqlite_conn().execute_batch(sql)?;
            }
            Ok(tx.sqlite_conn().execute_batch("PRAGMA user_version = 9")?)
        })
        .unwrap();
        let order = NewOrder {
            notify_url: Some("http://shop.test/hook".into()),
            ..new_order(0, 100)
        };
        let lease_until = t0() + Duration::seconds(30);
        db.immediate(|tx| {
            orders::insert(tx, &order, None)?;
            enqueue(tx, &order.id, EventType::OrderPaid, "{}", t0())?;
            tx.exec(
                "UPDATE webhook_outbox SET status = 'delivering', lease_until = ?1",
                args![to_millis(lease_until)],
            )
        })
        .unwrap();

        assert_eq!(
            db.migrate().unwrap(),
            [
                "0010_leases_and_claim_owners",
                "0011_secrets_and_refund_seq",
                "0012_rate_limits"
            ]
        );
        assert_eq!(
            outbox_rows(&db),
            vec![("delivering".into(), None, Some(to_millis(lease_until)), 0)]
        );
        // Nobody's claim to give back.
        assert_eq!(db.immediate(|tx| release_claims(tx, "inst_a", t0())).unwrap(), 0);
        let early = lease_until - Duration::milliseconds(1);
        assert!(db
            .immediate(|tx| claim_due(tx, early, LEASE, "inst_a"))
            .unwrap()
            .is_none());

        let claimed = db
            .immediate(|tx| claim_due(tx, lease_until, LEASE, "inst_a"))
            .unwrap()
            .expect("due once its lease has run out");
        assert_eq!(claimed.order_id, order.id);
        assert_eq!(
            outbox_rows(&db),
            vec![(
                "delivering".into(),
                Some("inst_a".into()),
                Some(to_millis(lease_until + LEASE)),
                0
            )]
        );
    }
}
