//! The raw inbound log: every notification a payment platform sent, stored with its
//! verdict before kassa replies.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::sql::{args, Row};
use super::types::to_millis;
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
    /// Set when `body` is only the start of what was received.
    pub cut: Option<Cut<'a>>,
}

/// What is kept of a body stored only in part: how long it was and its hash.
#[derive(Debug, Clone, Copy)]
pub struct Cut<'a> {
    pub length: i64,
    /// Hex SHA-256 of the whole body as received.
    pub sha256: &'a str,
}

/// What was decided about a notification, stored with it.
pub struct Decided<'a> {
    /// The verdict is the reason's.
    pub reason: Reason,
    pub detail: Option<&'a str>,
    pub order_id: Option<&'a OrderId>,
    pub dedupe_key: Option<&'a str>,
    /// It failed verification: no platform vouches for it, and retention may delete it.
    pub unverified: bool,
}

/// Stores a notification as received, with its verdict; returns its id. Written in
/// the transaction of whatever it changed, once that is decided.
pub fn insert(tx: &Tx<'_>, n: &NewNotification<'_>, d: &Decided<'_>) -> DbResult<i64> {
    tx.one(
        "INSERT INTO notifications (provider, received_at, remote_addr, headers, body, verdict, reason_code, reason, order_id, dedupe_key, body_length, body_sha256, unverified) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) RETURNING id",
        args![
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
            n.cut.map(|c| c.length),
            n.cut.map(|c| c.sha256),
            d.unverified,
        ],
        |r| r.get_i64(0),
    )
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
    /// Length of the whole body when `body` holds only its start.
    pub body_length: Option<i64>,
    pub body_sha256: Option<String>,
    pub unverified: bool,
}

const COLUMNS: &str =
    "id, provider, received_at, remote_addr, headers, body, order_id, verdict, reason_code, reason, \
     body_length, body_sha256, unverified";

fn from_row(r: &Row<'_>) -> DbResult<NotificationRecord> {
    Ok(NotificationRecord {
        id: r.get_i64(0)?,
        provider: r.parse(1)?,
        received_at: r.get_time(2)?,
        remote_addr: r.get_opt_string(3)?,
        headers: r.get_string(4)?,
        body: r.get_blob_lossy(5)?,
        order_id: r.get_opt_order_id(6)?,
        verdict: r.parse(7)?,
        reason_code: r.parse_opt(8)?,
        reason: r.get_opt_string(9)?,
        body_length: r.get_opt_i64(10)?,
        body_sha256: r.get_opt_string(11)?,
        unverified: r.get_bool(12)?,
    })
}

/// Newest first.
pub fn list_recent(tx: &Tx<'_>, limit: u32) -> DbResult<Vec<NotificationRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM notifications ORDER BY id DESC LIMIT ?1");
    tx.all(&sql, args![limit], from_row)
}

/// Deletes at most `limit` notifications that failed verification and were received
/// before `before`, oldest first; returns how many. Verified ones are never deleted,
/// nor one that history names (its foreign key would refuse the whole statement).
pub fn delete_unverified_before(tx: &Tx<'_>, before: DateTime<Utc>, limit: u32) -> DbResult<usize> {
    tx.exec(
        "DELETE FROM notifications WHERE id IN (\
           SELECT n.id FROM notifications n WHERE n.unverified = 1 AND n.received_at < ?1 \
           AND NOT EXISTS (SELECT 1 FROM order_events e WHERE e.notification_id = n.id) \
           ORDER BY n.received_at LIMIT ?2)",
        args![to_millis(before), limit],
    )
}
