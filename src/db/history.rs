//! The order's history: every applied or refused transition, with its source.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::Serialize;

use super::transitions::Cause;
use super::{from_millis, to_millis, DbResult};
use crate::domain::order::rfc3339;
use crate::domain::{OrderId, OrderStatus, Transition};

#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    conn: &Connection,
    order_id: &OrderId,
    transition: Transition,
    applied: bool,
    from: OrderStatus,
    to: OrderStatus,
    cause: &Cause,
    now: DateTime<Utc>,
) -> DbResult<()> {
    conn.prepare_cached(
        "INSERT INTO order_events (order_id, at, transition, outcome, from_status, to_status, source, actor, detail, notification_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        order_id.as_str(),
        to_millis(now),
        transition.as_str(),
        if applied { "applied" } else { "refused" },
        from.as_str(),
        to.as_str(),
        cause.source.as_str(),
        cause.actor,
        cause.detail,
        cause.notification_id,
    ])?;
    Ok(())
}

/// One history row as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryEntry {
    pub id: i64,
    pub at: String,
    pub transition: String,
    pub outcome: String,
    pub from: String,
    pub to: String,
    pub source: String,
    pub actor: String,
    pub detail: Option<String>,
    pub notification_id: Option<i64>,
}

pub fn list_for_order(conn: &Connection, order_id: &OrderId) -> DbResult<Vec<HistoryEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, transition, outcome, from_status, to_status, source, actor, detail, notification_id \
         FROM order_events WHERE order_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([order_id.as_str()], |r| {
        Ok(HistoryEntry {
            id: r.get(0)?,
            at: rfc3339(from_millis(r.get(1)?)?),
            transition: r.get(2)?,
            outcome: r.get(3)?,
            from: r.get(4)?,
            to: r.get(5)?,
            source: r.get(6)?,
            actor: r.get(7)?,
            detail: r.get(8)?,
            notification_id: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
