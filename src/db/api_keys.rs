//! API key rows. Only hashes are stored.

use chrono::{DateTime, Utc};

use super::sql::{args, Row};
use super::types::to_millis;
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

fn from_row(r: &Row<'_>) -> DbResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.get_i64(0)?,
        name: r.get_string(1)?,
        prefix: r.get_string(2)?,
        created_at: r.get_time(3)?,
        last_used_at: r.get_opt_time(4)?,
        revoked_at: r.get_opt_time(5)?,
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
    tx.opt(
        "INSERT INTO api_keys (name, prefix, key_hash, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT DO NOTHING RETURNING id",
        args![name, prefix, hash, to_millis(now)],
        |r| r.get_i64(0),
    )
}

pub fn find_active_by_hash(tx: &Tx<'_>, hash: &[u8]) -> DbResult<Option<ApiKeyRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL");
    tx.opt(&sql, args![hash], from_row)
}

pub fn list(tx: &Tx<'_>) -> DbResult<Vec<ApiKeyRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY revoked_at IS NOT NULL, name, id");
    tx.all(&sql, args![], from_row)
}

/// True when an active key of that name was revoked.
pub fn revoke(tx: &Tx<'_>, name: &str, now: DateTime<Utc>) -> DbResult<bool> {
    let n = tx.exec(
        "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        args![name, to_millis(now)],
    )?;
    Ok(n > 0)
}

pub fn touch(tx: &Tx<'_>, id: i64, now: DateTime<Utc>) -> DbResult<()> {
    tx.exec(
        "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1",
        args![id, to_millis(now)],
    )?;
    Ok(())
}
