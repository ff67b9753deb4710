//! Storage of the built-in sandbox: simulated trades, refunds, notification deliveries
//! and fault switches. Kept in tables apart from kassa's own, and in the database so
//! pending deliveries survive a restart.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::types::{from_millis, opt_from_millis, sql_list, text_column, to_millis};
use super::{DbResult, Tx};

/// A simulated Alipay trade's status, stored as Alipay's own text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxTradeStatus {
    /// Precreated; nobody opened the wallet yet, so for Alipay the trade does not exist.
    NotScanned,
    WaitBuyerPay,
    TradeSuccess,
    /// Closed unpaid, or fully refunded after payment.
    TradeClosed,
}

impl SandboxTradeStatus {
    pub const ALL: [SandboxTradeStatus; 4] = [
        SandboxTradeStatus::NotScanned,
        SandboxTradeStatus::WaitBuyerPay,
        SandboxTradeStatus::TradeSuccess,
        SandboxTradeStatus::TradeClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxTradeStatus::NotScanned => "NOT_SCANNED",
            SandboxTradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            SandboxTradeStatus::TradeSuccess => "TRADE_SUCCESS",
            SandboxTradeStatus::TradeClosed => "TRADE_CLOSED",
        }
    }
}

impl std::fmt::Display for SandboxTradeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SandboxTradeStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SandboxTradeStatus::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown sandbox trade status {s:?}"))
    }
}

/// Where one simulated notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Pending,
    /// The merchant answered `success`.
    Delivered,
    /// The retry schedule ran out.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown delivery status {s:?}"))
    }
}

text_column!(SandboxTradeStatus => as_str, DeliveryStatus => as_str);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxTrade {
    pub out_trade_no: String,
    pub token: String,
    pub app_id: String,
    pub trade_no: Option<String>,
    pub subject: String,
    pub total_amount: i64,
    pub refunded: i64,
    pub status: SandboxTradeStatus,
    pub notify_url: Option<String>,
    pub deadline: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

const TRADE_COLUMNS: &str =
    "out_trade_no, token, app_id, trade_no, subject, total_amount, refunded, status, notify_url, deadline, created_at, paid_at";

fn trade_from_row(r: &Row<'_>) -> rusqlite::Result<SandboxTrade> {
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
        paid_at: opt_from_millis(r.get(11)?)?,
    })
}

/// Stores a precreated trade; an existing trade with that number is left as it is.
pub fn insert_trade(tx: &Tx<'_>, t: &SandboxTrade) -> DbResult<bool> {
    let n = tx
        .conn
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

pub fn find_trade(tx: &Tx<'_>, out_trade_no: &str) -> DbResult<Option<SandboxTrade>> {
    let sql = format!("SELECT {TRADE_COLUMNS} FROM sandbox_trades WHERE out_trade_no = ?1");
    Ok(tx
        .conn
        .prepare_cached(&sql)?
        .query_row([out_trade_no], trade_from_row)
        .optional()?)
}

fn by_trade_no_sql() -> String {
    format!("SELECT {TRADE_COLUMNS} FROM sandbox_trades WHERE trade_no = ?1")
}

/// The trade Alipay numbered `trade_no` (set once the buyer scanned).
pub fn find_trade_by_trade_no(tx: &Tx<'_>, trade_no: &str) -> DbResult<Option<SandboxTrade>> {
    Ok(tx
        .conn
        .prepare_cached(&by_trade_no_sql())?
        .query_row([trade_no], trade_from_row)
        .optional()?)
}

pub fn find_trade_by_token(tx: &Tx<'_>, token: &str) -> DbResult<Option<SandboxTrade>> {
    let sql = format!("SELECT {TRADE_COLUMNS} FROM sandbox_trades WHERE token = ?1");
    Ok(tx
        .conn
        .prepare_cached(&sql)?
        .query_row([token], trade_from_row)
        .optional()?)
}

/// Guarded status change of a simulated trade; false when it was not in `from`.
pub fn move_trade(
    tx: &Tx<'_>,
    out_trade_no: &str,
    from: &[SandboxTradeStatus],
    to: SandboxTradeStatus,
    trade_no: Option<&str>,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let list = sql_list(from.iter().map(|s| s.as_str()));
    let sql = format!(
        "UPDATE sandbox_trades SET status = ?2, trade_no = COALESCE(trade_no, ?3), \
         paid_at = CASE WHEN ?2 = 'TRADE_SUCCESS' THEN ?4 ELSE paid_at END, \
         closed_at = CASE WHEN ?2 = 'TRADE_CLOSED' THEN ?4 ELSE closed_at END \
         WHERE out_trade_no = ?1 AND status IN ({list})"
    );
    let n = tx
        .conn
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
    tx: &Tx<'_>,
    out_trade_no: &str,
    out_request_no: &str,
    amount: i64,
    now: DateTime<Utc>,
) -> DbResult<RefundInsert> {
    let earlier: Option<i64> = tx
        .conn
        .prepare_cached("SELECT amount FROM sandbox_refunds WHERE out_trade_no = ?1 AND out_request_no = ?2")?
        .query_row(params![out_trade_no, out_request_no], |r| r.get(0))
        .optional()?;
    if let Some(amount) = earlier {
        return Ok(RefundInsert::Repeated(amount));
    }
    let n = tx
        .conn
        .prepare_cached(
            "UPDATE sandbox_trades SET refunded = refunded + ?2 WHERE out_trade_no = ?1 \
             AND status = 'TRADE_SUCCESS' AND refunded + ?2 <= total_amount",
        )?
        .execute(params![out_trade_no, amount])?;
    if n == 0 {
        return Ok(RefundInsert::ExceedsBalance);
    }
    tx.conn.prepare_cached(
        "INSERT INTO sandbox_refunds (out_trade_no, out_request_no, amount, created_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![out_trade_no, out_request_no, amount, to_millis(now)])?;
    Ok(RefundInsert::Done)
}

pub fn find_refund(tx: &Tx<'_>, out_trade_no: &str, out_request_no: &str) -> DbResult<Option<i64>> {
    Ok(tx
        .conn
        .prepare_cached("SELECT amount FROM sandbox_refunds WHERE out_trade_no = ?1 AND out_request_no = ?2")?
        .query_row(params![out_trade_no, out_request_no], |r| r.get(0))
        .optional()?)
}

/// A refund by its request number alone (WeChat's refund query names no trade):
/// `(out_trade_no, amount)`.
pub fn find_refund_by_request_no(tx: &Tx<'_>, out_request_no: &str) -> DbResult<Option<(String, i64)>> {
    Ok(tx
        .conn
        .prepare_cached("SELECT out_trade_no, amount FROM sandbox_refunds WHERE out_request_no = ?1 LIMIT 1")?
        .query_row([out_request_no], |r| Ok((r.get(0)?, r.get(1)?)))
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
    pub status: DeliveryStatus,
    pub last_response: Option<String>,
    /// JSON of the fault switches that apply to this delivery.
    pub faults: String,
}

const DELIVERY_COLUMNS: &str =
    "id, out_trade_no, notify_url, params, attempts, status, last_response, faults";

fn delivery_from_row(r: &Row<'_>) -> rusqlite::Result<Delivery> {
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
    tx: &Tx<'_>,
    out_trade_no: &str,
    notify_url: &str,
    params_json: &str,
    faults_json: &str,
    next_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DbResult<i64> {
    Ok(tx
        .conn
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

pub fn due_deliveries(tx: &Tx<'_>, now: DateTime<Utc>, limit: u32) -> DbResult<Vec<Delivery>> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM sandbox_deliveries WHERE status = 'pending' AND next_at <= ?1 ORDER BY next_at, id LIMIT ?2"
    );
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![to_millis(now), limit], delivery_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Earliest time a pending delivery is due, so the notifier knows how long to sleep.
pub fn next_delivery_at(tx: &Tx<'_>) -> DbResult<Option<DateTime<Utc>>> {
    let ms: Option<i64> = tx
        .conn
        .prepare_cached("SELECT MIN(next_at) FROM sandbox_deliveries WHERE status = 'pending'")?
        .query_row([], |r| r.get(0))?;
    Ok(opt_from_millis(ms)?)
}

pub fn list_deliveries(tx: &Tx<'_>, out_trade_no: &str) -> DbResult<Vec<Delivery>> {
    let sql =
        format!("SELECT {DELIVERY_COLUMNS} FROM sandbox_deliveries WHERE out_trade_no = ?1 ORDER BY id");
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([out_trade_no], delivery_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Records one attempt: `next_at` None ends the delivery as `delivered` (when
/// acknowledged) or `failed` (retries exhausted).
pub fn record_attempt(
    tx: &Tx<'_>,
    id: i64,
    acknowledged: bool,
    response: &str,
    next_at: Option<DateTime<Utc>>,
) -> DbResult<()> {
    let status = match (acknowledged, next_at) {
        (true, _) => DeliveryStatus::Delivered,
        (false, Some(_)) => DeliveryStatus::Pending,
        (false, None) => DeliveryStatus::Failed,
    };
    tx.conn
        .prepare_cached(
            "UPDATE sandbox_deliveries SET attempts = attempts + 1, status = ?2, last_response = ?3, \
         next_at = COALESCE(?4, next_at) WHERE id = ?1",
        )?
        .execute(params![id, status, response, next_at.map(to_millis)])?;
    Ok(())
}

pub fn find_faults(tx: &Tx<'_>, scope: &str) -> DbResult<Option<String>> {
    Ok(tx
        .conn
        .prepare_cached("SELECT faults FROM sandbox_faults WHERE scope = ?1")?
        .query_row([scope], |r| r.get(0))
        .optional()?)
}

pub fn set_faults(tx: &Tx<'_>, scope: &str, faults_json: &str) -> DbResult<()> {
    tx.conn.prepare_cached(
        "INSERT INTO sandbox_faults (scope, faults) VALUES (?1, ?2) ON CONFLICT (scope) DO UPDATE SET faults = excluded.faults",
    )?
    .execute(params![scope, faults_json])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::types::tests::{round_trip, stored};
    use super::*;

    #[test]
    fn every_sandbox_trade_status_round_trips_as_alipays_text() {
        round_trip(&SandboxTradeStatus::ALL);
        let texts: Vec<String> = SandboxTradeStatus::ALL.iter().map(stored).collect();
        assert_eq!(
            texts,
            ["NOT_SCANNED", "WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_CLOSED"]
        );
    }

    #[test]
    fn finding_a_trade_by_alipays_trade_no_walks_its_index_and_never_scans_the_trades() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = super::super::Offline::open(&dir.path().join("kassa.db")).unwrap();
        db.migrate().unwrap();
        let plan: Vec<String> = db
            .read(|tx| {
                let mut stmt = tx
                    .conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {}", by_trade_no_sql()))?;
                let rows = stmt.query_map(["2026112422001446880501234567"], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX sandbox_trades_by_trade_no (trade_no=?)")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|step| step.starts_with("SCAN")), "{plan:?}");
    }

    #[test]
    fn every_delivery_status_round_trips_and_keeps_its_stored_text() {
        round_trip(&DeliveryStatus::ALL);
        let texts: Vec<String> = DeliveryStatus::ALL.iter().map(stored).collect();
        assert_eq!(texts, ["pending", "delivered", "failed"]);
    }
}
