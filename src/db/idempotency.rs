//! `Idempotency-Key` records for order creation, scoped to the API key that sent them.
//! A key is claimed (a row without an order) before the provider is asked for a
//! payment, and completed with the order in the transaction that stores it: while a
//! request holds the claim, another with the same key is told so instead of asking the
//! provider a second time.

use chrono::{DateTime, Utc};

use super::sql::args;
use super::types::to_millis;
use super::{DbResult, Tx};
use crate::domain::OrderId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request_hash: Vec<u8>,
    /// None while the request that claimed the key is still in flight.
    pub order_id: Option<OrderId>,
    /// When the key was claimed (or last taken over).
    pub created_at: DateTime<Utc>,
}

pub fn find(tx: &Tx<'_>, api_key_id: i64, key: &str) -> DbResult<Option<IdempotencyRecord>> {
    tx.opt(
        "SELECT request_hash, order_id, created_at FROM idempotency_keys \
         WHERE api_key_id = ?1 AND key = ?2",
        args![api_key_id, key],
        |r| {
            Ok(IdempotencyRecord {
                request_hash: r.get_bytes(0)?,
                order_id: r.get_opt_order_id(1)?,
                created_at: r.get_time(2)?,
            })
        },
    )
}

/// Claims a free key for a request in flight. False when the key was already taken.
pub fn claim(
    tx: &Tx<'_>,
    api_key_id: i64,
    key: &str,
    request_hash: &[u8],
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let n = tx.exec(
        "INSERT INTO idempotency_keys (api_key_id, key, request_hash, order_id, created_at) \
         VALUES (?1, ?2, ?3, NULL, ?4) ON CONFLICT DO NOTHING",
        args![api_key_id, key, request_hash, to_millis(now)],
    )?;
    Ok(n == 1)
}

/// Takes over a claim whose request was abandoned (`claimed_at` is when it was made).
/// False when it is no longer that claim.
pub fn take_over(
    tx: &Tx<'_>,
    api_key_id: i64,
    key: &str,
    claimed_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let n = tx.exec(
        "UPDATE idempotency_keys SET created_at = ?4 \
         WHERE api_key_id = ?1 AND key = ?2 AND order_id IS NULL AND created_at = ?3",
        args![api_key_id, key, to_millis(claimed_at), to_millis(now)],
    )?;
    Ok(n == 1)
}

/// Records the order a claimed key created.
pub fn complete(tx: &Tx<'_>, api_key_id: i64, key: &str, order_id: &OrderId) -> DbResult<()> {
    tx.exec(
        "UPDATE idempotency_keys SET order_id = ?3 \
         WHERE api_key_id = ?1 AND key = ?2 AND order_id IS NULL",
        args![api_key_id, key, order_id],
    )?;
    Ok(())
}

/// Frees a claim whose request created nothing, so the key can be used again. A
/// completed key, or a claim taken over since `claimed_at`, is left alone.
pub fn release(tx: &Tx<'_>, api_key_id: i64, key: &str, claimed_at: DateTime<Utc>) -> DbResult<()> {
    tx.exec(
        "DELETE FROM idempotency_keys \
         WHERE api_key_id = ?1 AND key = ?2 AND order_id IS NULL AND created_at = ?3",
        args![api_key_id, key, to_millis(claimed_at)],
    )?;
    Ok(())
}
