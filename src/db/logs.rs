//! The dashboard's logs: raw notifications, webhook deliveries with their attempts,
//! endpoint health, signing secrets. Tables without a time index are walked by their
//! primary key: rows get their id in arrival order, so the first row of a time range is
//! found by a binary search over ids (a few point lookups), never a scan.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};

use super::outbox::AttemptRecord;
use super::timeline::Delivery;
use super::types::{from_millis, opt_from_millis, to_millis};
use super::{webhook_endpoints, DbResult, Tx};
use crate::domain::{OrderId, OutboxStatus, ProviderKind, Verdict};

/// A table whose ids grow with one of its time columns.
#[derive(Debug, Clone, Copy)]
pub enum Timed {
    Notifications,
    WebhookOutbox,
    WebhookAttempts,
}

impl Timed {
    fn table_and_column(self) -> (&'static str, &'static str) {
        match self {
            Timed::Notifications => ("notifications", "received_at"),
            Timed::WebhookOutbox => ("webhook_outbox", "created_at"),
            Timed::WebhookAttempts => ("webhook_attempts", "at"),
        }
    }
}

/// An id that splits the table at `t`: every row at or after `t` has an id at least
/// this, every row before it a smaller one (one past the last id when none is after).
pub fn first_id_since(tx: &Tx<'_>, table: Timed, t: DateTime<Utc>) -> DbResult<i64> {
    let (name, column) = table.table_and_column();
    // Two statements: SQLite answers a lone MIN or MAX of the key from the b-tree's
    // ends, but both in one statement scan the whole table.
    let end = |sql: String| -> DbResult<Option<i64>> {
        Ok(tx.conn.prepare_cached(&sql)?.query_row([], |r| r.get(0))?)
    };
    let (min, max) = (
        end(format!("SELECT MIN(id) FROM {name}"))?,
        end(format!("SELECT MAX(id) FROM {name}"))?,
    );
    let (Some(mut lo), Some(max)) = (min, max) else {
        return Ok(1);
    };
    let at = to_millis(t);
    let mut hi = max + 1;
    let mut probe = tx.conn.prepare_cached(&format!(
        "SELECT id, {column} FROM {name} WHERE id >= ?1 ORDER BY id LIMIT 1"
    ))?;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let found: Option<(i64, i64)> = probe
            .query_row([mid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        match found {
            Some((id, time)) if time < at => lo = id + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The notification log's filter.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    pub provider: Option<ProviderKind>,
    pub verdict: Option<Verdict>,
    pub reason_code: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    pub order_id: Option<OrderId>,
    /// Rows older than this id (the next page).
    pub before_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotificationEntry {
    pub id: i64,
    pub provider: ProviderKind,
    pub received_at: DateTime<Utc>,
    pub remote_addr: Option<String>,
    pub headers: String,
    pub body: String,
    pub order_id: Option<OrderId>,
    pub verdict: Verdict,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    /// Length and hex SHA-256 of the whole body, on rows that failed verification
    /// (whose `body` is at most its first 2 KiB).
    pub body_length: Option<i64>,
    pub body_sha256: Option<String>,
}

const NOTIFICATION_COLUMNS: &str =
    "id, provider, received_at, remote_addr, headers, body, order_id, verdict, reason_code, reason, \
     body_length, body_sha256";

fn notification(r: &rusqlite::Row<'_>) -> rusqlite::Result<NotificationEntry> {
    let body: Vec<u8> = r.get(5)?;
    Ok(NotificationEntry {
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
        body_length: r.get(10)?,
        body_sha256: r.get(11)?,
    })
}

/// The id range `[first, end)` of rows in `[from, before)`.
fn id_range(
    tx: &Tx<'_>,
    table: Timed,
    from: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
    before_id: Option<i64>,
) -> DbResult<(i64, i64)> {
    let first = match from {
        Some(t) => first_id_since(tx, table, t)?,
        None => 0,
    };
    let mut end = match before {
        Some(t) => first_id_since(tx, table, t)?,
        None => i64::MAX,
    };
    if let Some(id) = before_id {
        end = end.min(id);
    }
    Ok((first, end))
}

/// Newest first, `limit` rows.
pub fn notifications(tx: &Tx<'_>, f: &NotificationFilter, limit: u32) -> DbResult<Vec<NotificationEntry>> {
    let (first, end) = id_range(tx, Timed::Notifications, f.from, f.before, f.before_id)?;
    let sql = format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id >= ?1 AND id < ?2 \
         AND (?3 IS NULL OR provider = ?3) AND (?4 IS NULL OR verdict = ?4) AND (?5 IS NULL OR reason_code = ?5) \
         AND (?6 IS NULL OR order_id = ?6) ORDER BY id DESC LIMIT ?7"
    );
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            first,
            end,
            f.provider,
            f.verdict,
            f.reason_code,
            f.order_id,
            limit
        ],
        notification,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn notification_by_id(tx: &Tx<'_>, id: i64) -> DbResult<Option<NotificationEntry>> {
    let sql = format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = ?1");
    Ok(tx
        .conn
        .prepare_cached(&sql)?
        .query_row([id], notification)
        .optional()?)
}

/// The webhook log's filter.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<OutboxStatus>,
    pub event_type: Option<String>,
    pub order_id: Option<OrderId>,
    pub url: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    pub before_id: Option<i64>,
}

/// `WHERE` of a delivery filter over `webhook_outbox`, parameters `?1` … `?6`.
const DELIVERY_WHERE: &str =
    "id >= ?1 AND id < ?2 AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR event_type = ?4) \
     AND (?5 IS NULL OR order_id = ?5) AND (?6 IS NULL OR url = ?6)";

/// Newest first, `limit` deliveries, each with its attempts; `.0` is each one's id.
pub fn deliveries(
    tx: &Tx<'_>,
    f: &DeliveryFilter,
    limit: u32,
) -> DbResult<Vec<(i64, String, OrderId, Delivery)>> {
    let (first, end) = id_range(tx, Timed::WebhookOutbox, f.from, f.before, f.before_id)?;
    let sql = format!(
        "SELECT id, event_id, event_type, status, created_at, next_attempt_at, delivered_at, last_error, url, order_id \
         FROM webhook_outbox WHERE {DELIVERY_WHERE} ORDER BY id DESC LIMIT ?7"
    );
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![first, end, f.status, f.event_type, f.order_id, f.url, limit],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                r.get::<_, OrderId>(9)?,
                Delivery {
                    event_id: r.get(1)?,
                    event_type: r.get(2)?,
                    status: r.get(3)?,
                    created_at: from_millis(r.get(4)?)?,
                    next_attempt_at: from_millis(r.get(5)?)?,
                    delivered_at: opt_from_millis(r.get(6)?)?,
                    last_error: r.get(7)?,
                    attempts: Vec::new(),
                },
            ))
        },
    )?;
    let mut out = rows.collect::<Result<Vec<_>, _>>()?;
    let mut attempts = tx.conn.prepare_cached(
        "SELECT at, url, http_status, error, latency_ms, response FROM webhook_attempts WHERE outbox_id = ?1 ORDER BY id",
    )?;
    for (id, _, _, delivery) in &mut out {
        let rows = attempts.query_map([*id], |r| {
            Ok(AttemptRecord {
                at: from_millis(r.get(0)?)?,
                url: r.get(1)?,
                http_status: r.get(2)?,
                error: r.get(3)?,
                latency_ms: r.get(4)?,
                response: r.get(5)?,
            })
        })?;
        delivery.attempts = rows.collect::<Result<_, _>>()?;
    }
    Ok(out)
}

/// Queues every failed delivery the filter matches again (same event ids, a fresh
/// retry ladder) and re-enables their endpoints; returns how many. The filter's status,
/// whatever it says, is `failed`.
pub fn requeue_failed_matching(tx: &Tx<'_>, f: &DeliveryFilter, now: DateTime<Utc>) -> DbResult<usize> {
    let (first, end) = id_range(tx, Timed::WebhookOutbox, f.from, f.before, None)?;
    let failed = Some(OutboxStatus::Failed);
    let args = params![first, end, failed, f.event_type, f.order_id, f.url];
    tx.conn
        .prepare_cached(&format!(
            "UPDATE webhook_endpoints SET disabled_at = NULL, failing_since = NULL \
             WHERE url IN (SELECT url FROM webhook_outbox WHERE {DELIVERY_WHERE} AND url IS NOT NULL)"
        ))?
        .execute(args)?;
    Ok(tx
        .conn
        .prepare_cached(&format!(
            "UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = ?7, lease_until = NULL, updated_at = ?7 \
             WHERE {DELIVERY_WHERE}"
        ))?
        .execute(params![first, end, failed, f.event_type, f.order_id, f.url, to_millis(now)])?)
}

/// An endpoint's health with its last success and failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
}

pub fn endpoints(tx: &Tx<'_>) -> DbResult<Vec<Endpoint>> {
    let mut stmt = tx.conn.prepare_cached(
        "SELECT url, failing_since, last_failure_at, last_success_at, disabled_at FROM webhook_endpoints ORDER BY url",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Endpoint {
            url: r.get(0)?,
            failing_since: opt_from_millis(r.get(1)?)?,
            last_failure_at: opt_from_millis(r.get(2)?)?,
            last_success_at: opt_from_millis(r.get(3)?)?,
            disabled_at: opt_from_millis(r.get(4)?)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Re-enables a disabled endpoint (its failing streak starts over). True when it was
/// disabled.
pub fn reenable_endpoint(tx: &Tx<'_>, url: &str) -> DbResult<bool> {
    let was = webhook_endpoints::find(tx, url)?.is_some_and(|e| e.disabled_at.is_some());
    tx.conn
        .prepare_cached(
            "UPDATE webhook_endpoints SET disabled_at = NULL, failing_since = NULL WHERE url = ?1",
        )?
        .execute([url])?;
    Ok(was)
}

/// A stored signing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub retire_at: Option<DateTime<Utc>>,
}

/// Secrets still signing at `now`, newest first.
pub fn signing_secrets(tx: &Tx<'_>, now: DateTime<Utc>) -> DbResult<Vec<StoredSecret>> {
    let mut stmt = tx.conn.prepare_cached(
        "SELECT secret, created_at, retire_at FROM webhook_secrets WHERE retire_at IS NULL OR retire_at > ?1 ORDER BY id DESC",
    )?;
    let rows = stmt.query_map([to_millis(now)], |r| {
        Ok(StoredSecret {
            secret: r.get(0)?,
            created_at: from_millis(r.get(1)?)?,
            retire_at: opt_from_millis(r.get(2)?)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_id_found_for_a_time_splits_the_rows_before_it_from_those_after_whatever_the_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = super::super::Offline::open(&dir.path().join("kassa.db")).unwrap();
        db.migrate().unwrap();
        let at = |s: i64| Utc.timestamp_opt(1_764_000_000 + s, 0).unwrap();
        assert_eq!(
            db.read(|tx| first_id_since(tx, Timed::Notifications, at(0)))
                .unwrap(),
            1
        );
        // Ids 1..=9 at seconds 0, 10, … 80, with ids 4 and 5 deleted.
        db.immediate(|tx| {
            for i in 0..9 {
                tx.conn.execute(
                    "INSERT INTO notifications (provider, received_at, headers, body, verdict) VALUES ('alipay', ?1, '{}', X'00', 'applied')",
                    [to_millis(at(i * 10))],
                )?;
            }
            tx.conn.execute("DELETE FROM notifications WHERE id IN (4, 5)", [])?;
            Ok(())
        })
        .unwrap();
        // Ids kept, with their second.
        let rows = [(1, 0), (2, 10), (3, 20), (6, 50), (7, 60), (8, 70), (9, 80)];
        for second in [-5, 0, 1, 20, 21, 35, 50, 51, 80, 81] {
            let bound = db
                .read(|tx| first_id_since(tx, Timed::Notifications, at(second)))
                .unwrap();
            let from_bound: Vec<i64> = rows.iter().filter(|(id, _)| *id >= bound).map(|r| r.0).collect();
            let from_time: Vec<i64> = rows.iter().filter(|(_, s)| *s >= second).map(|r| r.0).collect();
            assert_eq!(from_bound, from_time, "at {second} s");
        }
    }
}
