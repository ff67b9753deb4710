//! API key rows. Only hashes are stored.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::types::{from_millis, opt_from_millis, to_millis};
use super::{DbResult, Tx};

#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, name, prefix, created_at, last_used_at, revoked_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        prefix: r.get(2)?,
        created_at: from_millis(r.get(3)?)?,
        last_used_at: opt_from_millis(r.get(4)?)?,
        revoked_at: opt_from_millis(r.get(5)?)?,
    })
}

/// `Ok(None)` when an active key already has that name.
pub fn insert(
    tx: &Tx<'_>,
    name: &str,
    prefix: &str,
    hash: &[u8],
    now: DateTime<Utc>,
) -> DbResult<Option<i64>> {
    let id = tx
        .conn
        .prepare_cached(
            "INSERT INTO api_keys (name, prefix, key_hash, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT DO NOTHING RETURNING id",
        )?
        .query_row(params![name, prefix, hash, to_millis(now)], |r| r.get(0))
        .optional()?;
    Ok(id)
}

pub fn find_active_by_hash(tx: &Tx<'_>, hash: &[u8]) -> DbResult<Option<ApiKeyRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL");
    Ok(tx
        .conn
        .prepare_cached(&sql)?
        .query_row([hash], from_row)
        .optional()?)
}

pub fn list(tx: &Tx<'_>) -> DbResult<Vec<ApiKeyRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY revoked_at IS NOT NULL, name, id");
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// True when an active key of that name was revoked.
pub fn revoke(tx: &Tx<'_>, name: &str, now: DateTime<Utc>) -> DbResult<bool> {
    let n = tx
        .conn
        .prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL")?
        .execute(params![name, to_millis(now)])?;
    Ok(n > 0)
}

pub fn touch(tx: &Tx<'_>, id: i64, now: DateTime<Utc>) -> DbResult<()> {
    tx.conn
        .prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")?
        .execute(params![id, to_millis(now)])?;
    Ok(())
}
