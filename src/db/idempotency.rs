//! `Idempotency-Key` records for order creation, scoped to the API key that sent them.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::types::to_millis;
use super::{DbResult, Tx};
use crate::domain::OrderId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request_hash: Vec<u8>,
    pub order_id: OrderId,
}

pub fn find(tx: &Tx<'_>, api_key_id: i64, key: &str) -> DbResult<Option<IdempotencyRecord>> {
    Ok(tx
        .conn
        .prepare_cached(
            "SELECT request_hash, order_id FROM idempotency_keys WHERE api_key_id = ?1 AND key = ?2",
        )?
        .query_row(params![api_key_id, key], |r| {
            Ok(IdempotencyRecord {
                request_hash: r.get(0)?,
                order_id: r.get(1)?,
            })
        })
        .optional()?)
}

/// False when the key was already taken (by a concurrent request).
pub fn insert(
    tx: &Tx<'_>,
    api_key_id: i64,
    key: &str,
    request_hash: &[u8],
    order_id: &OrderId,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let n = tx
        .conn
        .prepare_cached(
            "INSERT INTO idempotency_keys (api_key_id, key, request_hash, order_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )?
        .execute(params![api_key_id, key, request_hash, order_id, to_millis(now)])?;
    Ok(n == 1)
}
