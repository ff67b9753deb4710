//! Outgoing webhook rows, written in the same transaction as the transition that
//! caused them. Delivery is the webhook dispatcher's job.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};

use super::{to_millis, DbResult};
use crate::domain::event::EventType;
use crate::domain::ids::new_event_id;
use crate::domain::OrderId;

pub(crate) fn enqueue(
    conn: &Connection,
    order_id: &OrderId,
    event: EventType,
    payload: &str,
    now: DateTime<Utc>,
) -> DbResult<()> {
    let at = to_millis(now);
    conn.prepare_cached(
        "INSERT INTO webhook_outbox (event_id, order_id, event_type, payload, next_attempt_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5)",
    )?
    .execute(params![new_event_id(), order_id.as_str(), event.as_str(), payload, at])?;
    Ok(())
}

/// One outbox row, for views and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub status: String,
}

pub fn list_for_order(conn: &Connection, order_id: &OrderId) -> DbResult<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT event_id, event_type, payload, status FROM webhook_outbox WHERE order_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([order_id.as_str()], |r| {
        Ok(OutboxEntry {
            event_id: r.get(0)?,
            event_type: r.get(1)?,
            payload: r.get(2)?,
            status: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
