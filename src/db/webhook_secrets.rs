//! Webhook signing secrets (`webhook_secrets`). The newest signs; a rotated-out one
//! keeps signing alongside it until its `retire_at`.

use chrono::{DateTime, Utc};

use super::sql::args;
use super::types::to_millis;
use super::{DbResult, Tx};

/// Secrets that sign now, newest first.
pub fn signing(tx: &Tx<'_>, now: DateTime<Utc>) -> DbResult<Vec<String>> {
    tx.all(
        "SELECT secret FROM webhook_secrets WHERE retire_at IS NULL OR retire_at > ?1 ORDER BY id DESC",
        args![to_millis(now)],
        |r| r.get_string(0),
    )
}

/// Stores a first secret unless one exists; returns the current one.
///
/// On PostgreSQL two instances starting together would both find the table empty (at
/// READ COMMITTED neither sees the other's uncommitted row) and store two first
/// secrets, each then signing with its own: the table is locked against other writers
/// first, so the second waits and then finds the first's secret. Reads go on.
pub fn ensure(tx: &Tx<'_>, generated: &str, now: DateTime<Utc>) -> DbResult<String> {
    if tx.is_postgres() {
        tx.exec("LOCK TABLE webhook_secrets IN SHARE ROW EXCLUSIVE MODE", args![])?;
    }
    tx.exec(
        "INSERT INTO webhook_secrets (secret, created_at) SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM webhook_secrets)",
        args![generated, to_millis(now)],
    )?;
    tx.one(
        "SELECT secret FROM webhook_secrets ORDER BY id DESC LIMIT 1",
        args![],
        |r| r.get_string(0),
    )
}

/// Adds `new` as the signing secret; the current ones keep signing until `retire_at`.
pub fn rotate(tx: &Tx<'_>, new: &str, now: DateTime<Utc>, retire_at: DateTime<Utc>) -> DbResult<()> {
    tx.exec(
        "UPDATE webhook_secrets SET retire_at = ?1 WHERE retire_at IS NULL OR retire_at > ?1",
        args![to_millis(retire_at)],
    )?;
    tx.exec(
        "INSERT INTO webhook_secrets (secret, created_at) VALUES (?1, ?2)",
        args![new, to_millis(now)],
    )?;
    Ok(())
}
