//! Webhook delivery state: claiming due outbox rows with a lease, the attempt log,
//! signing secrets and endpoint health.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::{from_millis, to_millis, DbResult};
use crate::domain::order::rfc3339;

/// An outbox row claimed for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    /// The lease this claim holds; an attempt is recorded only while it still does.
    pub lease_until: i64,
    pub event_id: String,
    pub order_id: String,
    pub event_type: String,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The order's own notify_url, if any.
    pub notify_url: Option<String>,
}

/// Claims the next due row, oldest first, with a lease so that no other dispatcher (or
/// this one after a restart) delivers it at the same time. A row whose order still has
/// an earlier undelivered event waits for it: events of one order arrive in order.
pub fn claim_due(conn: &Connection, now: DateTime<Utc>, lease: Duration) -> DbResult<Option<Claimed>> {
    let at = to_millis(now);
    Ok(conn
        .prepare_cached(
            "UPDATE webhook_outbox SET status = 'delivering', lease_until = ?2, updated_at = ?1 \
             WHERE id = (SELECT o.id FROM webhook_outbox o \
                 WHERE ((o.status = 'pending' AND o.next_attempt_at <= ?1) \
                        OR (o.status = 'delivering' AND o.lease_until <= ?1)) \
                 AND NOT EXISTS (SELECT 1 FROM webhook_outbox e WHERE e.order_id = o.order_id AND e.id < o.id \
                                 AND e.status IN ('pending', 'delivering')) \
                 ORDER BY o.next_attempt_at, o.id LIMIT 1) \
             AND (status = 'pending' OR lease_until <= ?1) \
             RETURNING id, event_id, order_id, event_type, payload, attempts, \
                 (SELECT notify_url FROM orders WHERE orders.id = webhook_outbox.order_id), lease_until",
        )?
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
pub fn record_attempt(conn: &Connection, a: &Attempt<'_>, after: &After) -> DbResult<bool> {
    conn.prepare_cached(
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
        After::Delivered => ("delivered", None, Some(to_millis(a.at))),
        After::RetryAt(t) => ("pending", Some(to_millis(*t)), None),
        After::Failed => ("failed", None, None),
    };
    let last_error = match (a.http_status, a.error) {
        (_, Some(e)) => Some(e.to_owned()),
        (Some(s), None) if !(200..300).contains(&s) => Some(format!("HTTP {s}")),
        _ => None,
    };
    let n = conn
        .prepare_cached(
            "UPDATE webhook_outbox SET status = ?2, attempts = attempts + 1, next_attempt_at = COALESCE(?3, next_attempt_at), \
             lease_until = NULL, last_error = ?4, delivered_at = ?5, url = ?6, updated_at = ?7 \
             WHERE id = ?1 AND status = 'delivering' AND lease_until = ?8",
        )?
        .execute(params![a.outbox_id, status, next, last_error, delivered, a.url, to_millis(a.at), a.lease_until])?;
    Ok(n == 1)
}

/// Marks a claimed row skipped: there is nowhere to deliver it.
pub fn skip(conn: &Connection, id: i64, now: DateTime<Utc>) -> DbResult<()> {
    conn.prepare_cached(
        "UPDATE webhook_outbox SET status = 'skipped', lease_until = NULL, \
         last_error = 'no endpoint: the order has no notify_url and [webhooks] url is empty', updated_at = ?2 \
         WHERE id = ?1",
    )?
    .execute(params![id, to_millis(now)])?;
    Ok(())
}

/// Marks a claimed row failed without an attempt (its endpoint is disabled).
pub fn fail_unsent(conn: &Connection, id: i64, url: &str, reason: &str, now: DateTime<Utc>) -> DbResult<()> {
    conn.prepare_cached(
        "UPDATE webhook_outbox SET status = 'failed', lease_until = NULL, last_error = ?3, url = ?4, updated_at = ?2 WHERE id = ?1",
    )?
    .execute(params![id, to_millis(now), reason, url])?;
    Ok(())
}

/// An operator's re-send means "the endpoint is fixed": its disabled flag and failing
/// streak are cleared for the endpoints of the rows being re-sent.
fn reenable_for(conn: &Connection, filter: &str, arg: &dyn rusqlite::ToSql) -> DbResult<()> {
    let sql = format!(
        "UPDATE webhook_endpoints SET disabled_at = NULL, failing_since = NULL \
         WHERE url IN (SELECT url FROM webhook_outbox WHERE {filter})"
    );
    conn.prepare_cached(&sql)?.execute([arg])?;
    Ok(())
}

/// Queues a delivered, failed or skipped row again, with the same event id (so the
/// shop can deduplicate) and a fresh retry ladder. True when it was re-queued.
pub fn requeue(conn: &Connection, event_id: &str, now: DateTime<Utc>) -> DbResult<bool> {
    reenable_for(conn, "event_id = ?1 AND url IS NOT NULL", &event_id)?;
    let n = conn
        .prepare_cached(
            "UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2, lease_until = NULL, updated_at = ?2 \
             WHERE event_id = ?1 AND status IN ('failed', 'delivered', 'skipped')",
        )?
        .execute(params![event_id, to_millis(now)])?;
    Ok(n == 1)
}

/// Re-queues every row that failed since `since`; returns how many.
pub fn requeue_failed_since(conn: &Connection, since: DateTime<Utc>, now: DateTime<Utc>) -> DbResult<usize> {
    reenable_for(
        conn,
        "status = 'failed' AND updated_at >= ?1 AND url IS NOT NULL",
        &to_millis(since),
    )?;
    Ok(conn
        .prepare_cached(
            "UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2, lease_until = NULL, updated_at = ?2 \
             WHERE status = 'failed' AND updated_at >= ?1",
        )?
        .execute(params![to_millis(since), to_millis(now)])?)
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttemptRecord {
    pub at: String,
    pub url: String,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response: Option<String>,
}

pub fn list_attempts(conn: &Connection, event_id: &str) -> DbResult<Vec<AttemptRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.at, a.url, a.http_status, a.error, a.latency_ms, a.response FROM webhook_attempts a \
         JOIN webhook_outbox o ON o.id = a.outbox_id WHERE o.event_id = ?1 ORDER BY a.id",
    )?;
    let rows = stmt.query_map([event_id], |r| {
        Ok(AttemptRecord {
            at: rfc3339(from_millis(r.get(0)?)?),
            url: r.get(1)?,
            http_status: r.get(2)?,
            error: r.get(3)?,
            latency_ms: r.get(4)?,
            response: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

pub fn find_by_event_id(conn: &Connection, event_id: &str) -> DbResult<Option<OutboxRow>> {
    Ok(conn
        .prepare_cached(
            "SELECT event_id, event_type, status, attempts, next_attempt_at, last_error FROM webhook_outbox WHERE event_id = ?1",
        )?
        .query_row([event_id], |r| {
            Ok(OutboxRow {
                event_id: r.get(0)?,
                event_type: r.get(1)?,
                status: r.get(2)?,
                attempts: r.get(3)?,
                next_attempt_at: from_millis(r.get(4)?)?,
                last_error: r.get(5)?,
            })
        })
        .optional()?)
}

/// Secrets that sign now, newest first.
pub fn signing_secrets(conn: &Connection, now: DateTime<Utc>) -> DbResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT secret FROM webhook_secrets WHERE retire_at IS NULL OR retire_at > ?1 ORDER BY id DESC",
    )?;
    let rows = stmt.query_map([to_millis(now)], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores a first secret unless one exists; returns the current one.
pub fn ensure_secret(conn: &Connection, generated: &str, now: DateTime<Utc>) -> DbResult<String> {
    conn.prepare_cached(
        "INSERT INTO webhook_secrets (secret, created_at) SELECT ?1, ?2 WHERE NOT EXISTS (SELECT 1 FROM webhook_secrets)",
    )?
    .execute(params![generated, to_millis(now)])?;
    Ok(conn.query_row(
        "SELECT secret FROM webhook_secrets ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )?)
}

/// Adds `new` as the signing secret; the current ones keep signing until `retire_at`.
pub fn rotate_secret(
    conn: &Connection,
    new: &str,
    now: DateTime<Utc>,
    retire_at: DateTime<Utc>,
) -> DbResult<()> {
    conn.prepare_cached(
        "UPDATE webhook_secrets SET retire_at = ?1 WHERE retire_at IS NULL OR retire_at > ?1",
    )?
    .execute([to_millis(retire_at)])?;
    conn.prepare_cached("INSERT INTO webhook_secrets (secret, created_at) VALUES (?1, ?2)")?
        .execute(params![new, to_millis(now)])?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub url: String,
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
}

pub fn endpoint(conn: &Connection, url: &str) -> DbResult<Option<EndpointHealth>> {
    Ok(conn
        .prepare_cached("SELECT url, failing_since, disabled_at FROM webhook_endpoints WHERE url = ?1")?
        .query_row([url], |r| {
            Ok(EndpointHealth {
                url: r.get(0)?,
                failing_since: r.get::<_, Option<i64>>(1)?.map(from_millis).transpose()?,
                disabled_at: r.get::<_, Option<i64>>(2)?.map(from_millis).transpose()?,
            })
        })
        .optional()?)
}

/// A success re-enables the endpoint and ends its failing streak.
pub fn endpoint_succeeded(conn: &Connection, url: &str, now: DateTime<Utc>) -> DbResult<()> {
    conn.prepare_cached(
        "INSERT INTO webhook_endpoints (url, last_success_at) VALUES (?1, ?2) \
         ON CONFLICT (url) DO UPDATE SET failing_since = NULL, disabled_at = NULL, last_success_at = ?2",
    )?
    .execute(params![url, to_millis(now)])?;
    Ok(())
}

/// Starts or continues a failing streak; disables the endpoint once the streak is
/// `disable_after` long. A streak is only continuous while failures keep coming: one
/// that was quiet for longer than `quiet_gap` (longer than any retry gap) starts over.
/// Returns true when this failure disabled it.
pub fn endpoint_failed(
    conn: &Connection,
    url: &str,
    now: DateTime<Utc>,
    disable_after: Duration,
    quiet_gap: Duration,
) -> DbResult<bool> {
    let at = to_millis(now);
    conn.prepare_cached(
        "INSERT INTO webhook_endpoints (url, failing_since, last_failure_at) VALUES (?1, ?2, ?2) \
         ON CONFLICT (url) DO UPDATE SET \
             failing_since = CASE WHEN failing_since IS NULL OR last_failure_at < ?3 THEN ?2 ELSE failing_since END, \
             last_failure_at = ?2",
    )?
    .execute(params![url, at, at - quiet_gap.num_milliseconds()])?;
    let n = conn
        .prepare_cached(
            "UPDATE webhook_endpoints SET disabled_at = ?2 WHERE url = ?1 AND disabled_at IS NULL AND failing_since <= ?3",
        )?
        .execute(params![url, at, at - disable_after.num_milliseconds()])?;
    Ok(n == 1)
}

/// Every endpoint kassa has delivered to, with its health.
pub fn list_endpoints(conn: &Connection) -> DbResult<Vec<EndpointHealth>> {
    let mut stmt =
        conn.prepare_cached("SELECT url, failing_since, disabled_at FROM webhook_endpoints ORDER BY url")?;
    let rows = stmt.query_map([], |r| {
        Ok(EndpointHealth {
            url: r.get(0)?,
            failing_since: r.get::<_, Option<i64>>(1)?.map(from_millis).transpose()?,
            disabled_at: r.get::<_, Option<i64>>(2)?.map(from_millis).transpose()?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Outbox rows per status.
pub fn count_by_status(conn: &Connection) -> DbResult<Vec<(String, i64)>> {
    let mut stmt =
        conn.prepare_cached("SELECT status, COUNT(*) FROM webhook_outbox GROUP BY status ORDER BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
