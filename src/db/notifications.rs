//! The raw inbound log: every notification a payment platform sent, stored with its
//! verdict before kassa replies.

use chrono::{DateTime, Utc};
use rusqlite::{params, Row};
use serde::Serialize;

use super::types::{from_millis, to_millis};
use super::{DbResult, Tx};
use crate::domain::order::serialize_rfc3339;
use crate::domain::{OrderId, ProviderKind, Verdict};

pub struct NewNotification<'a> {
    pub provider: ProviderKind,
    pub received_at: DateTime<Utc>,
    pub remote_addr: Option<&'a str>,
    /// JSON object of header name to value.
    pub headers: &'a str,
    pub body: &'a [u8],
}

/// Stores a notification as received; its verdict follows in the same transaction.
pub fn insert(tx: &Tx<'_>, n: &NewNotification<'_>) -> DbResult<i64> {
    Ok(tx
        .conn
        .prepare_cached(
            "INSERT INTO notifications (provider, received_at, remote_addr, headers, body, verdict) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )?
        .query_row(
            params![
                n.provider,
                to_millis(n.received_at),
                n.remote_addr,
                n.headers,
                n.body,
                Verdict::Received
            ],
            |r| r.get(0),
        )?)
}

pub fn set_verdict(
    tx: &Tx<'_>,
    id: i64,
    verdict: Verdict,
    reason: Option<&str>,
    order_id: Option<&OrderId>,
    dedupe_key: Option<&str>,
) -> DbResult<()> {
    tx.conn.prepare_cached(
        "UPDATE notifications SET verdict = ?2, reason = ?3, order_id = ?4, dedupe_key = ?5 WHERE id = ?1",
    )?
    .execute(params![id, verdict, reason, order_id, dedupe_key])?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NotificationRecord {
    pub id: i64,
    pub provider: ProviderKind,
    #[serde(serialize_with = "serialize_rfc3339")]
    pub received_at: DateTime<Utc>,
    pub remote_addr: Option<String>,
    pub headers: String,
    pub body: String,
    pub order_id: Option<OrderId>,
    pub verdict: Verdict,
    pub reason: Option<String>,
}

const COLUMNS: &str = "id, provider, received_at, remote_addr, headers, body, order_id, verdict, reason";

fn from_row(r: &Row<'_>) -> rusqlite::Result<NotificationRecord> {
    let body: Vec<u8> = r.get(5)?;
    Ok(NotificationRecord {
        id: r.get(0)?,
        provider: r.get(1)?,
        received_at: from_millis(r.get(2)?)?,
        remote_addr: r.get(3)?,
        headers: r.get(4)?,
        body: String::from_utf8_lossy(&body).into_owned(),
        order_id: r.get(6)?,
        verdict: r.get(7)?,
        reason: r.get(8)?,
    })
}

/// Newest first.
pub fn list_recent(tx: &Tx<'_>, limit: u32) -> DbResult<Vec<NotificationRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM notifications ORDER BY id DESC LIMIT ?1");
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
