//! Order rows: insert, look-ups, listing with a cursor, the expiry sweep's query and
//! the export stream.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{named_params, params, OptionalExtension, Row};

use super::types::{corrupt, from_millis, opt_from_millis, to_millis};
use super::{DbResult, Tx};
use crate::domain::{Amount, Currency, NewOrder, Order, OrderId, OrderStatus, ProviderKind};

const COLUMNS: &str = "id, out_trade_no, amount, currency, subject, provider, status, qr_code, \
     notify_url, return_url, metadata, provider_trade_no, refunded_amount, late_payment, \
     created_at, expires_at, paid_at, closed_at, updated_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Order> {
    let currency: Currency = row.get(3)?;
    let amount = Amount::from_minor(row.get(2)?, currency).map_err(|e| corrupt(e.to_string()))?;
    let metadata: String = row.get(10)?;
    let metadata = match serde_json::from_str(&metadata) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err(corrupt(format!("metadata is not a JSON object: {metadata}"))),
    };
    Ok(Order {
        id: row.get(0)?,
        out_trade_no: row.get(1)?,
        amount,
        subject: row.get(4)?,
        provider: row.get(5)?,
        status: row.get(6)?,
        qr_code: row.get(7)?,
        notify_url: row.get(8)?,
        return_url: row.get(9)?,
        metadata,
        provider_trade_no: row.get(11)?,
        refunded_amount: row.get(12)?,
        late_payment: row.get(13)?,
        created_at: from_millis(row.get(14)?)?,
        expires_at: from_millis(row.get(15)?)?,
        paid_at: opt_from_millis(row.get(16)?)?,
        closed_at: opt_from_millis(row.get(17)?)?,
        updated_at: from_millis(row.get(18)?)?,
    })
}

/// Outcome of an insert: the merchant's `out_trade_no` is unique.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    Yes,
    OutTradeNoTaken,
}

pub fn insert(tx: &Tx<'_>, order: &NewOrder, qr_code: Option<&str>) -> DbResult<Inserted> {
    let metadata = serde_json::Value::Object(order.metadata.clone()).to_string();
    let created = to_millis(order.created_at);
    let rows = tx
        .conn
        .prepare_cached(
            "INSERT INTO orders (id, out_trade_no, amount, currency, subject, provider, status, qr_code, \
             notify_url, return_url, metadata, created_at, expires_at, updated_at, next_check_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10, ?11, ?12, ?11, ?13) \
             ON CONFLICT (out_trade_no) DO NOTHING",
        )?
        .execute(params![
            order.id,
            order.out_trade_no.as_str(),
            order.amount.minor(),
            order.amount.currency(),
            order.subject,
            order.provider,
            qr_code,
            order.notify_url,
            order.return_url,
            metadata,
            created,
            to_millis(order.expires_at),
            created + LATE_CHECKS_MS[0],
        ])?;
    Ok(if rows == 1 {
        Inserted::Yes
    } else {
        Inserted::OutTradeNoTaken
    })
}

pub fn find_by_id(tx: &Tx<'_>, id: &OrderId) -> DbResult<Option<Order>> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE id = ?1");
    Ok(tx
        .conn
        .prepare_cached(&sql)?
        .query_row([id], from_row)
        .optional()?)
}

pub fn find_by_out_trade_no(tx: &Tx<'_>, out_trade_no: &str) -> DbResult<Option<Order>> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE out_trade_no = ?1");
    Ok(tx
        .conn
        .prepare_cached(&sql)?
        .query_row([out_trade_no], from_row)
        .optional()?)
}

/// Position in the newest-first order list: the last row of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ms: i64,
    pub id: String,
}

impl Cursor {
    pub fn after(order: &Order) -> Cursor {
        Cursor {
            created_at_ms: to_millis(order.created_at),
            id: order.id.to_string(),
        }
    }

    /// Opaque text for clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at_ms, self.id))
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (ms, id) = raw.split_once(':')?;
        OrderId::parse(id).ok()?;
        Some(Cursor {
            created_at_ms: ms.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

#[derive(Debug, Default, Clone)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub provider: Option<ProviderKind>,
    pub out_trade_no: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

impl OrderFilter {
    fn where_clause(&self, args: &mut Vec<Value>) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.status {
            args.push(Value::Text(s.as_str().to_owned()));
            parts.push(format!("status = ?{}", args.len()));
        }
        if let Some(p) = self.provider {
            args.push(Value::Text(p.as_str().to_owned()));
            parts.push(format!("provider = ?{}", args.len()));
        }
        if let Some(o) = &self.out_trade_no {
            args.push(Value::Text(o.clone()));
            parts.push(format!("out_trade_no = ?{}", args.len()));
        }
        if let Some(t) = self.created_from {
            args.push(Value::Integer(to_millis(t)));
            parts.push(format!("created_at >= ?{}", args.len()));
        }
        if let Some(t) = self.created_before {
            args.push(Value::Integer(to_millis(t)));
            parts.push(format!("created_at < ?{}", args.len()));
        }
        if parts.is_empty() {
            "1 = 1".to_owned()
        } else {
            parts.join(" AND ")
        }
    }
}

/// Newest first. Stable under concurrent inserts: the cursor names a position
/// `(created_at, id)`, and new orders sort before it.
pub fn list(tx: &Tx<'_>, filter: &OrderFilter, after: Option<&Cursor>, limit: u32) -> DbResult<Vec<Order>> {
    let mut args = Vec::new();
    let mut clause = filter.where_clause(&mut args);
    if let Some(c) = after {
        args.push(Value::Integer(c.created_at_ms));
        let ms = args.len();
        args.push(Value::Text(c.id.clone()));
        clause.push_str(&format!(" AND (created_at, id) < (?{ms}, ?{})", args.len()));
    }
    args.push(Value::Integer(i64::from(limit)));
    let sql = format!(
        "SELECT {COLUMNS} FROM orders WHERE {clause} ORDER BY created_at DESC, id DESC LIMIT ?{}",
        args.len()
    );
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Pending orders whose time is up, oldest deadline first.
pub fn list_due_for_expiry(tx: &Tx<'_>, now: DateTime<Utc>, limit: u32) -> DbResult<Vec<Order>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM orders WHERE status = 'pending' AND expires_at <= :now \
         ORDER BY expires_at LIMIT :limit"
    );
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(named_params! {":now": to_millis(now), ":limit": limit}, from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Calls `each` for every order created in `[from, before)`, oldest first, one row at a
/// time so an export of any size runs in constant memory.
pub fn for_each_created_between<E>(
    tx: &Tx<'_>,
    from: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
    mut each: impl FnMut(&Order) -> Result<(), E>,
) -> DbResult<Result<(), E>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM orders WHERE created_at >= ?1 AND created_at < ?2 ORDER BY created_at, id"
    );
    let mut stmt = tx.conn.prepare(&sql)?;
    let from = from.map(to_millis).unwrap_or(i64::MIN);
    let before = before.map(to_millis).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![from, before])?;
    while let Some(row) = rows.next()? {
        let order = from_row(row)?;
        if let Err(e) = each(&order) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// When, after creation, a still-pending order is checked at its provider in case its
/// notification was lost: +1 min, +5 min, +15 min, +1 h.
pub const LATE_CHECKS_MS: [i64; 4] = [60_000, 300_000, 900_000, 3_600_000];

/// Pending orders due for a late-notification check, that have not expired yet (the
/// expiry sweep handles those).
pub fn list_due_for_check(tx: &Tx<'_>, now: DateTime<Utc>, limit: u32) -> DbResult<Vec<Order>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM orders WHERE status = 'pending' AND next_check_at <= :now \
         AND expires_at > :now ORDER BY next_check_at LIMIT :limit"
    );
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(named_params! {":now": to_millis(now), ":limit": limit}, from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Moves an order's next check to the following step of `LATE_CHECKS_MS` (or none).
pub fn record_check(tx: &Tx<'_>, id: &OrderId) -> DbResult<()> {
    tx.conn.prepare_cached(
        "UPDATE orders SET checks_done = checks_done + 1, next_check_at = created_at + CASE checks_done + 1 \
         WHEN 1 THEN ?2 WHEN 2 THEN ?3 WHEN 3 THEN ?4 ELSE NULL END WHERE id = ?1",
    )?
    .execute(params![
        id,
        LATE_CHECKS_MS[1],
        LATE_CHECKS_MS[2],
        LATE_CHECKS_MS[3]
    ])?;
    Ok(())
}
