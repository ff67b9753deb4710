//! The raw inbound log: every notification a payment platform sent, stored with its
//! verdict before kassa replies.

use chrono::{DateTime, Utc};
use rusqlite::{params, Row};
use serde::Serialize;

use super::types::{from_millis, to_millis};
use super::{DbResult, Tx};
use crate::domain::order::serialize_rfc3339;
use crate::domain::{OrderId, ProviderKind, Reason, Verdict};

pub struct NewNotification<'a> {
    pub provider: ProviderKind,
    pub received_at: DateTime<Utc>,
    pub remote_addr: Option<&'a str>,
    /// JSON object of header name to value.
    pub headers: &'a str,
    pub body: &'a [u8],
}

/// What was decided about a notification, stored with it.
pub struct Decided<'a> {
    /// The verdict is the reason's.
    pub reason: Reason,
    pub detail: Option<&'a str>,
    pub order_id: Option<&'a OrderId>,
    pub dedupe_key: Option<&'a str>,
}

/// Stores a notification as received, with its verdict; returns its id. Written in
/// the transaction of whatever it changed, once that is decided.
pub fn insert(tx: &Tx<'_>, n: &NewNotification<'_>, d: &Decided<'_>) -> DbResult<i64> {
    Ok(tx
        .conn
        .prepare_cached(
            "INSERT INTO notifications (provider, received_at, remote_addr, headers, body, verdict, reason_code, reason, order_id, dedupe_key) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
        )?
        .query_row(
            params![
                n.provider,
                to_millis(n.received_at),
                n.remote_addr,
                n.headers,
                n.body,
                d.reason.verdict(),
                d.reason,
                d.detail,
                d.order_id,
                d.dedupe_key,
            ],
            |r| r.get(0),
        )?)
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
    /// Absent on rows stored before reasons had codes.
    pub reason_code: Option<Reason>,
    /// The human detail behind the code.
    pub reason: Option<String>,
}

const COLUMNS: &str =
    "id, provider, received_at, remote_addr, headers, body, order_id, verdict, reason_code, reason";

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
        reason_code: r.get(8)?,
        reason: r.get(9)?,
    })
}

/// Newest first.
pub fn list_recent(tx: &Tx<'_>, limit: u32) -> DbResult<Vec<NotificationRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM notifications ORDER BY id DESC LIMIT ?1");
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
