//! Storage of the built-in sandbox: simulated trades, refunds and notification
//! deliveries. Kept in tables apart from kassa's own, and in the database so pending
//! deliveries survive a restart.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{from_millis, to_millis, DbResult};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxTrade {
    pub out_trade_no: String,
    pub token: String,
    pub app_id: String,
    pub trade_no: Option<String>,
    pub subject: String,
    pub total_amount: i64,
    pub refunded: i64,
    /// NOT_SCANNED, WAIT_BUYER_PAY, TRADE_SUCCESS or TRADE_CLOSED.
    pub status: String,
    pub notify_url: Option<String>,
    pub deadline: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

const TRADE_COLUMNS: &str =
    "out_trade_no, token, app_id, trade_no, subject, total_amount, refunded, status, notify_url, deadline, created_at, paid_at";

fn trade_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SandboxTrade> {
    Ok(SandboxTrade {
        out_trade_no: r.get(0)?,
        token: r.get(1)?,
        app_id: r.get(2)?,
        trade_no: r.get(3)?,
        subject: r.get(4)?,
        total_amount: r.get(5)?,
        refunded: r.get(6)?,
        status: r.get(7)?,
        notify_url: r.get(8)?,
        deadline: from_millis(r.get(9)?)?,
        created_at: from_millis(r.get(10)?)?,
        paid_at: r.get::<_, Option<i64>>(11)?.map(from_millis).transpose()?,
    })
}

/// Stores a precreated trade; an existing trade with that number is left as it is.
pub fn insert_trade(conn: &Connection, t: &SandboxTrade) -> DbResult<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO sandbox_trades (out_trade_no, token, app_id, subject, total_amount, status, notify_url, deadline, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (out_trade_no) DO NOTHING",
        )?
        .execute(params![
            t.out_trade_no,
            t.token,
            t.app_id,
            t.subject,
            t.total_amount,
            t.status,
            t.notify_url,
            to_millis(t.deadline),
            to_millis(t.created_at)
        ])?;
    Ok(n == 1)
}

pub fn find_trade(conn: &Connection, out_trade_no: &str) -> DbResult<Option<SandboxTrade>> {
    let sql = format!("SELECT {TRADE_COLUMNS} FROM sandbox_trades WHERE out_trade_no = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([out_trade_no], trade_from_row)
        .optional()?)
}

pub fn find_trade_by_token(conn: &Connection, token: &str) -> DbResult<Option<SandboxTrade>> {
    let sql = format!("SELECT {TRADE_COLUMNS} FROM sandbox_trades WHERE token = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([token], trade_from_row)
        .optional()?)
}

/// Guarded status change of a simulated trade; false when it was not in `from`.
pub fn move_trade(
    conn: &Connection,
    out_trade_no: &str,
    from: &[&str],
    to: &str,
    trade_no: Option<&str>,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let list = from
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "UPDATE sandbox_trades SET status = ?2, trade_no = COALESCE(trade_no, ?3), \
         paid_at = CASE WHEN ?2 = 'TRADE_SUCCESS' THEN ?4 ELSE paid_at END, \
         closed_at = CASE WHEN ?2 = 'TRADE_CLOSED' THEN ?4 ELSE closed_at END \
         WHERE out_trade_no = ?1 AND status IN ({list})"
    );
    let n = conn
        .prepare_cached(&sql)?
        .execute(params![out_trade_no, to, trade_no, to_millis(now)])?;
    Ok(n == 1)
}

#[derive(Debug, PartialEq, Eq)]
pub enum RefundInsert {
    Done,
    /// The same `out_request_no` again: the earlier refund's amount.
    Repeated(i64),
    ExceedsBalance,
}

pub fn add_refund(
    conn: &Connection,
    out_trade_no: &str,
    out_request_no: &str,
    amount: i64,
    now: DateTime<Utc>,
) -> DbResult<RefundInsert> {
    let earlier: Option<i64> = conn
        .prepare_cached("SELECT amount FROM sandbox_refunds WHERE out_trade_no = ?1 AND out_request_no = ?2")?
        .query_row(params![out_trade_no, out_request_no], |r| r.get(0))
        .optional()?;
    if let Some(amount) = earlier {
        return Ok(RefundInsert::Repeated(amount));
    }
    let n = conn
        .prepare_cached(
            "UPDATE sandbox_trades SET refunded = refunded + ?2 WHERE out_trade_no = ?1 \
             AND status = 'TRADE_SUCCESS' AND refunded + ?2 <= total_amount",
        )?
        .execute(params![out_trade_no, amount])?;
    if n == 0 {
        return Ok(RefundInsert::ExceedsBalance);
    }
    conn.prepare_cached(
        "INSERT INTO sandbox_refunds (out_trade_no, out_request_no, amount, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![out_trade_no, out_request_no, amount, to_millis(now)])?;
    Ok(RefundInsert::Done)
}

pub fn find_refund(conn: &Connection, out_trade_no: &str, out_request_no: &str) -> DbResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT amount FROM sandbox_refunds WHERE out_trade_no = ?1 AND out_request_no = ?2")?
        .query_row(params![out_trade_no, out_request_no], |r| r.get(0))
        .optional()?)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub out_trade_no: String,
    pub notify_url: String,
    /// JSON object of the notification's parameters, without `notify_time` and `sign`.
    pub params: String,
    pub attempts: i64,
    pub status: String,
    pub last_response: Option<String>,
    /// JSON of the fault switches that apply to this delivery.
    pub faults: String,
}

const DELIVERY_COLUMNS: &str =
    "id, out_trade_no, notify_url, params, attempts, status, last_response, faults";

fn delivery_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        out_trade_no: r.get(1)?,
        notify_url: r.get(2)?,
        params: r.get(3)?,
        attempts: r.get(4)?,
        status: r.get(5)?,
        last_response: r.get(6)?,
        faults: r.get(7)?,
    })
}

pub fn enqueue_delivery(
    conn: &Connection,
    out_trade_no: &str,
    notify_url: &str,
    params_json: &str,
    faults_json: &str,
    next_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DbResult<i64> {
    Ok(conn
        .prepare_cached(
            "INSERT INTO sandbox_deliveries (out_trade_no, notify_url, params, faults, next_at, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        )?
        .query_row(
            params![
                out_trade_no,
                notify_url,
                params_json,
                faults_json,
                to_millis(next_at),
                to_millis(now)
            ],
            |r| r.get(0),
        )?)
}

pub fn due_deliveries(conn: &Connection, now: DateTime<Utc>, limit: u32) -> DbResult<Vec<Delivery>> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM sandbox_deliveries WHERE status = 'pending' AND next_at <= ?1 ORDER BY next_at, id LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![to_millis(now), limit], delivery_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Earliest time a pending delivery is due, so the notifier knows how long to sleep.
pub fn next_delivery_at(conn: &Connection) -> DbResult<Option<DateTime<Utc>>> {
    let ms: Option<i64> = conn
        .prepare_cached("SELECT MIN(next_at) FROM sandbox_deliveries WHERE status = 'pending'")?
        .query_row([], |r| r.get(0))?;
    ms.map(from_millis).transpose().map_err(Into::into)
}

pub fn list_deliveries(conn: &Connection, out_trade_no: &str) -> DbResult<Vec<Delivery>> {
    let sql =
        format!("SELECT {DELIVERY_COLUMNS} FROM sandbox_deliveries WHERE out_trade_no = ?1 ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([out_trade_no], delivery_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records one attempt: `next_at` None ends the delivery as `delivered` (when
/// acknowledged) or `failed` (retries exhausted).
pub fn record_attempt(
    conn: &Connection,
    id: i64,
    acknowledged: bool,
    response: &str,
    next_at: Option<DateTime<Utc>>,
) -> DbResult<()> {
    let status = match (acknowledged, next_at) {
        (true, _) => "delivered",
        (false, Some(_)) => "pending",
        (false, None) => "failed",
    };
    conn.prepare_cached(
        "UPDATE sandbox_deliveries SET attempts = attempts + 1, status = ?2, last_response = ?3, \
         next_at = COALESCE(?4, next_at) WHERE id = ?1",
    )?
    .execute(params![id, status, response, next_at.map(to_millis)])?;
    Ok(())
}

pub fn find_faults(conn: &Connection, scope: &str) -> DbResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT faults FROM sandbox_faults WHERE scope = ?1")?
        .query_row([scope], |r| r.get(0))
        .optional()?)
}

pub fn set_faults(conn: &Connection, scope: &str, faults_json: &str) -> DbResult<()> {
    conn.prepare_cached(
        "INSERT INTO sandbox_faults (scope, faults) VALUES (?1, ?2) ON CONFLICT (scope) DO UPDATE SET faults = excluded.faults",
    )?
    .execute(params![scope, faults_json])?;
    Ok(())
}
