//! The audit log: every admin action and sign-in, who did it, from where, why, and how
//! it ended.

use chrono::{DateTime, Utc};
use rusqlite::{params, Row};

use super::types::{from_millis, to_millis};
use super::{DbResult, Tx};
use crate::domain::OrderId;

pub struct NewAudit<'a> {
    pub at: DateTime<Utc>,
    pub actor: &'a str,
    /// e.g. `order.refund`, `sign_in`.
    pub action: &'a str,
    pub order_id: Option<&'a OrderId>,
    pub reason: Option<&'a str>,
    pub remote_addr: Option<&'a str>,
    /// e.g. `done`, `refused`, `failed`.
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
}

/// The longest `reason` kept, in characters (the longest a refund or acknowledgement
/// accepts); longer ones are cut. What people type and what requests carry (event ids,
/// addresses) is written here, so a row stays small whatever a request sent.
pub const MAX_REASON: usize = 256;
/// The longest `detail` kept, in characters.
pub const MAX_DETAIL: usize = 500;

/// `text` cut to at most `max` characters (on a character boundary).
fn capped(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

pub fn insert(tx: &Tx<'_>, a: &NewAudit<'_>) -> DbResult<()> {
    tx.conn
        .prepare_cached(
            "INSERT INTO audit_log (at, actor, action, order_id, reason, remote_addr, outcome, detail) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            to_millis(a.at),
            a.actor,
            a.action,
            a.order_id,
            a.reason.map(|r| capped(r, MAX_REASON)),
            a.remote_addr,
            a.outcome,
            a.detail.map(|d| capped(d, MAX_DETAIL))
        ])?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub order_id: Option<OrderId>,
    pub reason: Option<String>,
    pub remote_addr: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

const COLUMNS: &str = "id, at, actor, action, order_id, reason, remote_addr, outcome, detail";

fn from_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        at: from_millis(r.get(1)?)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        order_id: r.get(4)?,
        reason: r.get(5)?,
        remote_addr: r.get(6)?,
        outcome: r.get(7)?,
        detail: r.get(8)?,
    })
}

pub fn list_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<AuditEntry>> {
    let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE order_id = ?1 ORDER BY id");
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([order_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Newest first (the audit page of a later part; tests).
pub fn list_recent(tx: &Tx<'_>, limit: u32) -> DbResult<Vec<AuditEntry>> {
    let sql = format!("SELECT {COLUMNS} FROM audit_log ORDER BY id DESC LIMIT ?1");
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([limit], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What the audit page filters by; every part optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    /// Rows older than this id (the next page).
    pub before_id: Option<i64>,
}

/// Newest first, walking the primary key; times filter by `at`, which grows with the id.
pub fn list(tx: &Tx<'_>, f: &AuditFilter, limit: u32) -> DbResult<Vec<AuditEntry>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_log WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2) \
         AND (?3 IS NULL OR outcome = ?3) AND (?4 IS NULL OR at >= ?4) AND (?5 IS NULL OR at < ?5) \
         AND (?6 IS NULL OR id < ?6) ORDER BY id DESC LIMIT ?7"
    );
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            f.actor,
            f.action,
            f.outcome,
            f.from.map(to_millis),
            f.before.map(to_millis),
            f.before_id,
            limit
        ],
        from_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}
