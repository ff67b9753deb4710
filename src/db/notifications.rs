//! The raw inbound log: every notification a payment platform sent, stored with its
//! verdict before kassa replies.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::Serialize;

use super::{from_millis, to_millis, DbResult};
use crate::domain::order::rfc3339;
use crate::domain::{OrderId, ProviderKind};

pub struct NewNotification<'a> {
    pub provider: ProviderKind,
    pub received_at: DateTime<Utc>,
    pub remote_addr: Option<&'a str>,
    /// JSON object of header name to value.
    pub headers: &'a str,
    pub body: &'a [u8],
}

/// Stores a notification as received; its verdict follows in the same transaction.
pub fn insert(conn: &Connection, n: &NewNotification<'_>) -> DbResult<i64> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO notifications (provider, received_at, remote_addr, headers, body, verdict) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'received') RETURNING id",
        )?
        .query_row(
            params![
                n.provider.as_str(),
                to_millis(n.received_at),
                n.remote_addr,
                n.headers,
                n.body
            ],
            |r| r.get(0),
        )?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Applied,
    Duplicate,
    Rejected,
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Applied => "applied",
            Verdict::Duplicate => "duplicate",
            Verdict::Rejected => "rejected",
            Verdict::Error => "error",
        }
    }
}

pub fn set_verdict(
    conn: &Connection,
    id: i64,
    verdict: Verdict,
    reason: Option<&str>,
    order_id: Option<&OrderId>,
    dedupe_key: Option<&str>,
) -> DbResult<()> {
    conn.prepare_cached(
        "UPDATE notifications SET verdict = ?2, reason = ?3, order_id = ?4, dedupe_key = ?5 WHERE id = ?1",
    )?
    .execute(params![
        id,
        verdict.as_str(),
        reason,
        order_id.map(OrderId::as_str),
        dedupe_key
    ])?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NotificationRecord {
    pub id: i64,
    pub provider: String,
    pub received_at: String,
    pub remote_addr: Option<String>,
    pub headers: String,
    pub body: String,
    pub order_id: Option<String>,
    pub verdict: String,
    pub reason: Option<String>,
}

const COLUMNS: &str = "id, provider, received_at, remote_addr, headers, body, order_id, verdict, reason";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NotificationRecord> {
    let body: Vec<u8> = r.get(5)?;
    Ok(NotificationRecord {
        id: r.get(0)?,
        provider: r.get(1)?,
        received_at: rfc3339(from_millis(r.get(2)?)?),
        remote_addr: r.get(3)?,
        headers: r.get(4)?,
        body: String::from_utf8_lossy(&body).into_owned(),
        order_id: r.get(6)?,
        verdict: r.get(7)?,
        reason: r.get(8)?,
    })
}

pub fn list_for_order(conn: &Connection, order_id: &OrderId) -> DbResult<Vec<NotificationRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM notifications WHERE order_id = ?1 ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([order_id.as_str()], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Newest first.
pub fn list_recent(conn: &Connection, limit: u32) -> DbResult<Vec<NotificationRecord>> {
    let sql = format!("SELECT {COLUMNS} FROM notifications ORDER BY id DESC LIMIT ?1");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
