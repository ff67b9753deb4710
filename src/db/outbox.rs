//! Outgoing webhooks (`webhook_outbox`, with its attempt log `webhook_attempts`): rows
//! are queued in the transaction of the transition they announce, holding the payload
//! they are given, and claimed with a lease for delivery.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::types::{from_millis, to_millis};
use super::{webhook_endpoints, DbResult, Tx};
use crate::domain::ids::new_event_id;
use crate::domain::order::serialize_rfc3339;
use crate::domain::{EventType, OrderId, OutboxStatus};

/// Queues `payload` (already rendered) for delivery now.
pub fn enqueue(
    tx: &Tx<'_>,
    order_id: &OrderId,
    event: EventType,
    payload: &str,
    now: DateTime<Utc>,
) -> DbResult<()> {
    tx.conn
        .prepare_cached(
            "INSERT INTO webhook_outbox (event_id, order_id, event_type, payload, next_attempt_at, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5)",
        )?
        .execute(params![new_event_id(), order_id, event, payload, to_millis(now)])?;
    Ok(())
}

/// One outbox row, for views, the command line and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub event_id: String,
    pub order_id: OrderId,
    pub event_type: EventType,
    pub payload: String,
    pub status: OutboxStatus,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

const COLUMNS: &str =
    "event_id, order_id, event_type, payload, status, attempts, next_attempt_at, last_error";

fn from_row(r: &Row<'_>) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        event_id: r.get(0)?,
        order_id: r.get(1)?,
        event_type: r.get(2)?,
        payload: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        next_attempt_at: from_millis(r.get(6)?)?,
        last_error: r.get(7)?,
    })
}

pub fn list_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<OutboxRow>> {
    let sql = format!("SELECT {COLUMNS} FROM webhook_outbox WHERE order_id = ?1 ORDER BY id");
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([order_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn find_by_event_id(tx: &Tx<'_>, event_id: &str) -> DbResult<Option<OutboxRow>> {
    let sql = format!("SELECT {COLUMNS} FROM webhook_outbox WHERE event_id = ?1");
    Ok(tx
        .conn
        .prepare_cached(&sql)?
        .query_row([event_id], from_row)
        .optional()?)
}

/// Outbox rows per status.
pub fn count_by_status(tx: &Tx<'_>) -> DbResult<Vec<(OutboxStatus, i64)>> {
    let mut stmt = tx
        .conn
        .prepare_cached("SELECT status, COUNT(*) FROM webhook_outbox GROUP BY status ORDER BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// An outbox row claimed for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    /// The lease this claim holds; an attempt is recorded only while it still does.
    pub lease_until: i64,
    pub event_id: String,
    pub order_id: OrderId,
    pub event_type: EventType,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The order's own notify_url, if any.
    pub notify_url: Option<String>,
}

const CLAIM: &str = "UPDATE webhook_outbox SET status = 'delivering', lease_until = ?2, updated_at = ?1 \
     WHERE id = (SELECT o.id FROM webhook_outbox o \
         WHERE o.status IN ('pending', 'delivering') \
         AND ((o.status = 'pending' AND o.next_attempt_at <= ?1) \
                OR (o.status = 'delivering' AND o.lease_until <= ?1)) \
         AND NOT EXISTS (SELECT 1 FROM webhook_outbox e WHERE e.order_id = o.order_id AND e.id < o.id \
                         AND e.status IN ('pending', 'delivering')) \
         ORDER BY o.next_attempt_at, o.id LIMIT 1) \
     AND (status = 'pending' OR lease_until <= ?1) \
     RETURNING id, event_id, order_id, event_type, payload, attempts, \
         (SELECT notify_url FROM orders WHERE orders.id = webhook_outbox.order_id), lease_until";

/// Claims the next due row, oldest first, with a lease so that no other dispatcher (or
/// this one after a restart) delivers it at the same time. A row whose order still has
/// an earlier undelivered event waits for it: events of one order arrive in order.
///
/// The leading `status IN (…)` is the condition of the partial index
/// `webhook_outbox_due`: with it SQLite walks that index (undelivered rows only, in
/// `next_attempt_at` order) instead of scanning and sorting every row ever queued,
/// which made each claim cost as much as the whole outbox.
pub fn claim_due(tx: &Tx<'_>, now: DateTime<Utc>, lease: Duration) -> DbResult<Option<Claimed>> {
    let at = to_millis(now);
    Ok(tx
        .conn
        .prepare_cached(CLAIM)?
        .query_row(params![at, to_millis(now + lease)], |r| {
            Ok(Claimed {
                id: r.get(0)?,
                event_id: r.get(1)?,
                order_id: r.get(2)?,
                event_type: r.get(3)?,
                payload: r.get(4)?,
                attempts: r.get(5)?,
                notify_url: r.get(6)?,
                lease_until: r.get(7)?,
            })
        })
        .optional()?)
}

pub struct Attempt<'a> {
    pub outbox_id: i64,
    pub lease_until: i64,
    pub at: DateTime<Utc>,
    pub url: &'a str,
    pub http_status: Option<u16>,
    pub error: Option<&'a str>,
    pub latency_ms: i64,
    pub response: Option<&'a str>,
}

/// What became of the row after an attempt.
pub enum After {
    Delivered,
    RetryAt(DateTime<Utc>),
    Failed,
}

/// Logs an attempt and moves the row on, only if this dispatcher still holds the lease
/// (a dispatcher whose lease ran out and was re-claimed must not overwrite the new
/// holder's result).
pub fn record_attempt(tx: &Tx<'_>, a: &Attempt<'_>, after: &After) -> DbResult<bool> {
    tx.conn
        .prepare_cached(
            "INSERT INTO webhook_attempts (outbox_id, at, url, http_status, error, latency_ms, response) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            a.outbox_id,
            to_millis(a.at),
            a.url,
            a.http_status,
            a.error,
            a.latency_ms,
            a.response
        ])?;
    let (status, next, delivered) = match after {
        After::Delivered => (OutboxStatus::Delivered, None, Some(to_millis(a.at))),
        After::RetryAt(t) => (OutboxStatus::Pending, Some(to_millis(*t)), None),
        After::Failed => (OutboxStatus::Failed, None, None),
    };
    let last_error = match (a.http_status, a.error) {
        (_, Some(e)) => Some(e.to_owned()),
        (Some(s), None) if !(200..300).contains(&s) => Some(format!("HTTP {s}")),
        _ => None,
    };
    let n = tx
        .conn
        .prepare_cached(
            "UPDATE webhook_outbox SET status = ?2, attempts = attempts + 1, next_attempt_at = COALESCE(?3, next_attempt_at), \
             lease_until = NULL, last_error = ?4, delivered_at = ?5, url = ?6, updated_at = ?7 \
             WHERE id = ?1 AND status = 'delivering' AND lease_until = ?8",
        )?
        .execute(params![a.outbox_id, status, next, last_error, delivered, a.url, to_millis(a.at), a.lease_until])?;
    Ok(n == 1)
}

/// Marks a claimed row skipped: there is nowhere to deliver it.
pub fn skip(tx: &Tx<'_>, id: i64, now: DateTime<Utc>) -> DbResult<()> {
    tx.conn
        .prepare_cached(
            "UPDATE webhook_outbox SET status = 'skipped', lease_until = NULL, \
             last_error = 'no endpoint: the order has no notify_url and [webhooks] url is empty', updated_at = ?2 \
             WHERE id = ?1",
        )?
        .execute(params![id, to_millis(now)])?;
    Ok(())
}

/// Marks a claimed row failed without an attempt (its endpoint is disabled).
pub fn fail_unsent(tx: &Tx<'_>, id: i64, url: &str, reason: &str, now: DateTime<Utc>) -> DbResult<()> {
    tx.conn
        .prepare_cached(
            "UPDATE webhook_outbox SET status = 'failed', lease_until = NULL, last_error = ?3, url = ?4, updated_at = ?2 WHERE id = ?1",
        )?
        .execute(params![id, to_millis(now), reason, url])?;
    Ok(())
}

/// Queues a delivered, failed or skipped row again, with the same event id (so the
/// shop can deduplicate) and a fresh retry ladder; an operator's re-send also means
/// "the endpoint is fixed", so the row's endpoint is re-enabled. True when re-queued.
pub fn requeue(tx: &Tx<'_>, event_id: &str, now: DateTime<Utc>) -> DbResult<bool> {
    webhook_endpoints::reenable_where(tx, "event_id = ?1 AND url IS NOT NULL", &event_id)?;
    let n = tx
        .conn
        .prepare_cached(
            "UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2, lease_until = NULL, updated_at = ?2 \
             WHERE event_id = ?1 AND status IN ('failed', 'delivered', 'skipped')",
        )?
        .execute(params![event_id, to_millis(now)])?;
    Ok(n == 1)
}

/// Gives back every claim at shutdown, once the dispatchers have stopped: a row left
/// `delivering` would wait for its lease (a minute) after the restart. The server holds
/// the data directory's lock, so every claim is its own (or a dead process's). The row
/// stays due as it was; an attempt cut short is sent again with the same webhook-id.
pub fn release_claims(tx: &Tx<'_>, now: DateTime<Utc>) -> DbResult<usize> {
    Ok(tx.conn.execute(
        "UPDATE webhook_outbox SET status = 'pending', lease_until = NULL, updated_at = ?1 \
         WHERE status = 'delivering'",
        params![to_millis(now)],
    )?)
}

/// Re-queues every row that failed since `since` (re-enabling their endpoints);
/// returns how many.
pub fn requeue_failed_since(tx: &Tx<'_>, since: DateTime<Utc>, now: DateTime<Utc>) -> DbResult<usize> {
    webhook_endpoints::reenable_where(
        tx,
        "status = 'failed' AND updated_at >= ?1 AND url IS NOT NULL",
        &to_millis(since),
    )?;
    Ok(tx
        .conn
        .prepare_cached(
            "UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2, lease_until = NULL, updated_at = ?2 \
             WHERE status = 'failed' AND updated_at >= ?1",
        )?
        .execute(params![to_millis(since), to_millis(now)])?)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttemptRecord {
    #[serde(serialize_with = "serialize_rfc3339")]
    pub at: DateTime<Utc>,
    pub url: String,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response: Option<String>,
}

pub fn list_attempts(tx: &Tx<'_>, event_id: &str) -> DbResult<Vec<AttemptRecord>> {
    let mut stmt = tx.conn.prepare_cached(
        "SELECT a.at, a.url, a.http_status, a.error, a.latency_ms, a.response FROM webhook_attempts a \
         JOIN webhook_outbox o ON o.id = a.outbox_id WHERE o.event_id = ?1 ORDER BY a.id",
    )?;
    let rows = stmt.query_map([event_id], |r| {
        Ok(AttemptRecord {
            at: from_millis(r.get(0)?)?,
            url: r.get(1)?,
            http_status: r.get(2)?,
            error: r.get(3)?,
            latency_ms: r.get(4)?,
            response: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_walks_the_index_of_undelivered_rows_and_never_scans_the_whole_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = super::super::Offline::open(&dir.path().join("kassa.db")).unwrap();
        db.migrate().unwrap();
        let plan: Vec<String> = db
            .read(|tx| {
                let mut stmt = tx.conn.prepare(&format!("EXPLAIN QUERY PLAN {CLAIM}"))?;
                let rows = stmt.query_map(params![0, 0], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX webhook_outbox_due")),
            "{plan:?}"
        );
        assert!(
            !plan
                .iter()
                .any(|step| step == "SCAN o" || step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }
}
