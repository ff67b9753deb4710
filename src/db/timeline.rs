//! Reads for the admin order page's timeline that no other module offers: the raw
//! notifications of an order, column by column (their columns grow as the notify
//! pipeline learns more, and the page shows whatever is stored), and each webhook
//! delivery with every attempt.

use chrono::{DateTime, Utc};
use rusqlite::params;
use rusqlite::types::ValueRef;

use super::outbox::AttemptRecord;
use super::types::{from_millis, opt_from_millis};
use super::{DbResult, Tx};
use crate::domain::{EventType, OrderId, OutboxStatus};

/// A stored value, as a page shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Null,
    Integer(i64),
    Real(f64),
    /// Text, or a blob read as UTF-8 (lossily).
    Text(String),
}

impl Field {
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Field::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Field::Text(t) => Some(t),
            _ => None,
        }
    }
}

impl From<ValueRef<'_>> for Field {
    fn from(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => Field::Null,
            ValueRef::Integer(i) => Field::Integer(i),
            ValueRef::Real(f) => Field::Real(f),
            ValueRef::Text(t) | ValueRef::Blob(t) => Field::Text(String::from_utf8_lossy(t).into_owned()),
        }
    }
}

/// One row: `(column name, value)` in the table's column order.
pub type RawRow = Vec<(String, Field)>;

/// Every notification recorded for the order, oldest first, with all its columns.
pub fn notifications_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<RawRow>> {
    let mut stmt = tx
        .conn
        .prepare_cached("SELECT * FROM notifications WHERE order_id = ?1 ORDER BY id")?;
    let names: Vec<String> = stmt.column_names().iter().map(|s| (*s).to_owned()).collect();
    let mut rows = stmt.query([order_id])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut fields = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            fields.push((name.clone(), Field::from(row.get_ref(i)?)));
        }
        out.push(fields);
    }
    Ok(out)
}

/// A webhook delivery (an outbox row) and its attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub event_id: String,
    pub event_type: EventType,
    pub status: OutboxStatus,
    pub created_at: DateTime<Utc>,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub attempts: Vec<AttemptRecord>,
}

pub fn deliveries_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<Delivery>> {
    let mut stmt = tx.conn.prepare_cached(
        "SELECT id, event_id, event_type, status, created_at, next_attempt_at, delivered_at, last_error \
         FROM webhook_outbox WHERE order_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([order_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
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
    })?;
    let mut deliveries = rows.collect::<Result<Vec<_>, _>>()?;
    let mut attempts = tx.conn.prepare_cached(
        "SELECT at, url, http_status, error, latency_ms, response FROM webhook_attempts WHERE outbox_id = ?1 ORDER BY id",
    )?;
    for (id, delivery) in &mut deliveries {
        let rows = attempts.query_map(params![*id], |r| {
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
    Ok(deliveries.into_iter().map(|(_, d)| d).collect())
}
