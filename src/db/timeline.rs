//! Reads for the admin order page's timeline that no other module offers: the raw
//! notifications of an order, column by column (their columns grow as the notify
//! pipeline learns more, and the page shows whatever is stored), and each webhook
//! delivery with every attempt.

use chrono::{DateTime, Utc};

use super::outbox::{self, AttemptRecord};
use super::sql::{args, Row, Value};
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

impl Field {
    fn read(v: Value<'_>) -> Field {
        match v {
            Value::Null => Field::Null,
            Value::Int(i) => Field::Integer(i),
            Value::Real(f) => Field::Real(f),
            Value::Text(t) => Field::Text(String::from_utf8_lossy(t).into_owned()),
        }
    }
}

/// One row: `(column name, value)` in the table's column order.
pub type RawRow = Vec<(String, Field)>;

/// Every notification recorded for the order, oldest first, with all its columns.
pub fn notifications_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<RawRow>> {
    tx.all(
        "SELECT * FROM notifications WHERE order_id = ?1 ORDER BY id",
        args![order_id],
        |r| {
            (0..r.column_count())
                .map(|i| Ok((r.column_name(i)?.to_owned(), Field::read(r.value(i)?))))
                .collect()
        },
    )
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
    let mut deliveries = tx.all(
        "SELECT id, event_id, event_type, status, created_at, next_attempt_at, delivered_at, last_error \
         FROM webhook_outbox WHERE order_id = ?1 ORDER BY id",
        args![order_id],
        |r| Ok((r.get_i64(0)?, Delivery::read(r)?)),
    )?;
    for (id, delivery) in &mut deliveries {
        delivery.attempts = outbox::attempts_of(tx, *id)?;
    }
    Ok(deliveries.into_iter().map(|(_, d)| d).collect())
}

impl Delivery {
    /// Reads an outbox row selected as `id, event_id, event_type, status, created_at,
    /// next_attempt_at, delivered_at, last_error` (more columns may follow); the
    /// attempts are left for the caller to load once the rows are read.
    pub(super) fn read(r: &Row<'_>) -> DbResult<Self> {
        Ok(Delivery {
            event_id: r.get_string(1)?,
            event_type: r.parse(2)?,
            status: r.parse(3)?,
            created_at: r.get_time(4)?,
            next_attempt_at: r.get_time(5)?,
            delivered_at: r.get_opt_time(6)?,
            last_error: r.get_opt_string(7)?,
            attempts: Vec::new(),
        })
    }
}
