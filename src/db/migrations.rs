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
