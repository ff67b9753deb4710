//! The order's history (`order_events`): every applied or refused transition, with
//! who caused it and why.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::params;
use serde::Serialize;

use super::types::{from_millis, text_column, to_millis};
use super::{DbResult, Tx};
use crate::domain::order::serialize_rfc3339;
use crate::domain::{OrderId, OrderStatus, Transition, TransitionSource};

/// Who asks for a change, and why.
#[derive(Debug, Clone)]
pub struct Cause {
    pub source: TransitionSource,
    /// An API key's name, an admin's user name, or `system`.
    pub actor: String,
    pub detail: Option<String>,
    pub notification_id: Option<i64>,
}

impl Cause {
    pub fn system(source: TransitionSource) -> Cause {
        Cause {
            source,
            actor: "system".to_owned(),
            detail: None,
            notification_id: None,
        }
    }

    /// The system acting for a reason worth keeping in the history.
    pub fn system_because(source: TransitionSource, detail: impl Into<String>) -> Cause {
        Cause {
            detail: Some(detail.into()),
            ..Cause::system(source)
        }
    }
}

/// Whether a transition recorded in the history took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryOutcome {
    Applied,
    Refused,
}

impl HistoryOutcome {
    pub const ALL: [HistoryOutcome; 2] = [HistoryOutcome::Applied, HistoryOutcome::Refused];

    pub fn as_str(self) -> &'static str {
        match self {
            HistoryOutcome::Applied => "applied",
            HistoryOutcome::Refused => "refused",
        }
    }
}

impl FromStr for HistoryOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HistoryOutcome::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown history outcome {s:?}"))
    }
}

text_column!(HistoryOutcome => as_str);

/// One transition as recorded.
pub(super) struct Recorded<'a> {
    pub order_id: &'a OrderId,
    pub transition: Transition,
    pub outcome: HistoryOutcome,
    pub from: OrderStatus,
    pub to: OrderStatus,
    pub cause: &'a Cause,
    pub at: DateTime<Utc>,
}

pub(super) fn record(tx: &Tx<'_>, r: &Recorded<'_>) -> DbResult<()> {
    tx.conn
        .prepare_cached(
            "INSERT INTO order_events (order_id, at, transition, outcome, from_status, to_status, source, actor, detail, notification_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            r.order_id,
            to_millis(r.at),
            r.transition,
            r.outcome,
            r.from,
            r.to,
            r.cause.source,
            r.cause.actor,
            r.cause.detail,
            r.cause.notification_id,
        ])?;
    Ok(())
}

/// One history row as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryEntry {
    pub id: i64,
    #[serde(serialize_with = "serialize_rfc3339")]
    pub at: DateTime<Utc>,
    pub transition: Transition,
    pub outcome: HistoryOutcome,
    pub from: OrderStatus,
    pub to: OrderStatus,
    pub source: TransitionSource,
    pub actor: String,
    pub detail: Option<String>,
    pub notification_id: Option<i64>,
}

pub fn list_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<HistoryEntry>> {
    let mut stmt = tx.conn.prepare_cached(
        "SELECT id, at, transition, outcome, from_status, to_status, source, actor, detail, notification_id \
         FROM order_events WHERE order_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([order_id], |r| {
        Ok(HistoryEntry {
            id: r.get(0)?,
            at: from_millis(r.get(1)?)?,
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

#[cfg(test)]
mod tests {
    use super::super::types::tests::{round_trip, stored};
    use super::*;

    #[test]
    fn every_history_outcome_round_trips_and_keeps_its_stored_text() {
        round_trip(&HistoryOutcome::ALL);
        let texts: Vec<String> = HistoryOutcome::ALL.iter().map(stored).collect();
        assert_eq!(texts, ["applied", "refused"]);
    }
}
