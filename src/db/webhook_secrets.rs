//! Webhook signing secrets (`webhook_secrets`). The newest signs; a rotated-out one
//! keeps signing alongside it until its `retire_at`.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::types::to_millis;
use super::{DbResult, Tx};

/// Secrets that sign now, newest first.
pub fn signing(tx: &Tx<'_>, now: DateTime<Utc>) -> DbResult<Vec<String>> {
    let mut stmt = tx.conn.prepare_cached(
        "SELECT secret FROM webhook_secrets WHERE retire_at IS NULL OR retire_at > ?1 ORDER BY id DESC",
    )?;
    let rows = stmt.query_map([to_millis(now)], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores a first secret unless one exists; returns the current one.
pub fn ensure(tx: &Tx<'_>, generated: &str, now: DateTime<Utc>) -> DbResult<String> {
    tx.conn
        .prepare_cached(
            "INSERT INTO webhook_secrets (secret, created_at) SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM webhook_secrets)",
        )?
        .execute(params![generated, to_millis(now)])?;
    Ok(tx.conn.query_row(
        "SELECT secret FROM webhook_secrets ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )?)
}

/// Adds `new` as the signing secret; the current ones keep signing until `retire_at`.
pub fn rotate(tx: &Tx<'_>, new: &str, now: DateTime<Utc>, retire_at: DateTime<Utc>) -> DbResult<()> {
    tx.conn
        .prepare_cached(
            "UPDATE webhook_secrets SET retire_at = ?1 WHERE retire_at IS NULL OR retire_at > ?1",
        )?
        .execute([to_millis(retire_at)])?;
    tx.conn
        .prepare_cached("INSERT INTO webhook_secrets (secret, created_at) VALUES (?1, ?2)")?
        .execute(params![new, to_millis(now)])?;
    Ok(())
}
