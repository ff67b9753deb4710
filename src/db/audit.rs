//! The audit log: every admin action and sign-in, who did it, from where, why, and how
//! it ended.

use chrono::{DateTime, Utc};

use super::sql::{args, Row};
use super::types::to_millis;
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
    tx.exec(
        "INSERT INTO audit_log (at, actor, action, order_id, reason, remote_addr, outcome, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![
            to_millis(a.at),
            a.actor,
            a.action,
            a.order_id,
            a.reason.map(|r| capped(r, MAX_REASON)),
            a.remote_addr,
            a.outcome,
            a.detail.map(|d| capped(d, MAX_DETAIL))
        ],
    )?;
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

fn from_row(r: &Row<'_>) -> DbResult<AuditEntry> {
    Ok(AuditEntry {
        id: r.get_i64(0)?,
        at: r.get_time(1)?,
        actor: r.get_string(2)?,
        action: r.get_string(3)?,
        order_id: r.get_opt_order_id(4)?,
        reason: r.get_opt_string(5)?,
        remote_addr: r.get_opt_string(6)?,
        outcome: r.get_string(7)?,
        detail: r.get_opt_string(8)?,
    })
}

pub fn list_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<AuditEntry>> {
    let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE order_id = ?1 ORDER BY id");
    tx.all(&sql, args![order_id], from_row)
}

/// Newest first (the audit page of a later part; tests).
pub fn list_recent(tx: &Tx<'_>, limit: u32) -> DbResult<Vec<AuditEntry>> {
    let sql = format!("SELECT {COLUMNS} FROM audit_log ORDER BY id DESC LIMIT ?1");
    tx.all(&sql, args![limit], from_row)
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
        "SELECT {COLUMNS} FROM audit_log WHERE (CAST(?1 AS TEXT) IS NULL OR actor = ?1) \
         AND (CAST(?2 AS TEXT) IS NULL OR action = ?2) AND (CAST(?3 AS TEXT) IS NULL OR outcome = ?3) \
         AND (CAST(?4 AS BIGINT) IS NULL OR at >= ?4) AND (CAST(?5 AS BIGINT) IS NULL OR at < ?5) \
         AND (CAST(?6 AS BIGINT) IS NULL OR id < ?6) ORDER BY id DESC LIMIT ?7"
    );
    tx.all(
        &sql,
        args![
            f.actor.as_deref(),
            f.action.as_deref(),
            f.outcome.as_deref(),
            f.from.map(to_millis),
            f.before.map(to_millis),
            f.before_id,
            limit
        ],
        from_row,
    )
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::super::sql::tests::database;
    use super::*;

    #[test]
    fn each_audit_filter_keeps_only_its_rows_and_no_filter_keeps_them_all() {
        let (_dir, mut db) = database();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let rows = [
            ("ann", "close", "ok"),
            ("bob", "refund", "refused"),
            ("ann", "refund", "ok"),
            ("bob", "close", "ok"),
        ];
        db.immediate(|tx| {
            for (i, (actor, action, outcome)) in (0_i64..).zip(rows) {
                let entry = NewAudit {
                    at: t0 + Duration::minutes(i),
                    actor,
                    action,
                    order_id: None,
                    reason: None,
                    remote_addr: None,
                    outcome,
                    detail: None,
                };
                insert(tx, &entry)?;
            }
            Ok(())
        })
        .unwrap();
        // Each row by the minute it was written at, newest first.
        let minutes = |f: AuditFilter| -> Vec<i64> {
            let entries = db.read(|tx| list(tx, &f, 10)).unwrap();
            entries.iter().map(|e| (e.at - t0).num_minutes()).collect()
        };
        let id_of_minute_2 = db.read(|tx| list(tx, &AuditFilter::default(), 10)).unwrap()[1].id;
        let text = |s: &str| Some(s.to_owned());
        let at = |m: i64| Some(t0 + Duration::minutes(m));
        assert_eq!(minutes(AuditFilter::default()), [3, 2, 1, 0]);
        assert_eq!(
            minutes(AuditFilter {
                actor: text("ann"),
                ..Default::default()
            }),
            [2, 0]
        );
        assert_eq!(
            minutes(AuditFilter {
                action: text("refund"),
                ..Default::default()
            }),
            [2, 1]
        );
        assert_eq!(
            minutes(AuditFilter {
                outcome: text("refused"),
                ..Default::default()
            }),
            [1]
        );
        assert_eq!(
            minutes(AuditFilter {
                from: at(2),
                ..Default::default()
            }),
            [3, 2]
        );
        assert_eq!(
            minutes(AuditFilter {
                before: at(2),
                ..Default::default()
            }),
            [1, 0]
        );
        assert_eq!(
            minutes(AuditFilter {
                before_id: Some(id_of_minute_2),
                ..Default::default()
            }),
            [1, 0]
        );
        let bob_closing = AuditFilter {
            actor: text("bob"),
            action: text("close"),
            outcome: text("ok"),
            from: at(0),
            before: at(4),
            before_id: Some(i64::MAX),
        };
        assert_eq!(minutes(bob_closing), [3]);
    }
}
