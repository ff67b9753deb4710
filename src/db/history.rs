//! The order's history (`order_events`): every applied or refused transition, with
//! who caused it and why.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::sql::args;
use super::types::{text_column, to_millis};
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
    tx.exec(
        "INSERT INTO order_events (order_id, at, transition, outcome, from_status, to_status, source, actor, detail, notification_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        args![
            r.order_id,
            to_millis(r.at),
            r.transition,
            r.outcome,
            r.from,
            r.to,
            r.cause.source,
            r.cause.actor.as_str(),
            r.cause.detail.as_deref(),
            r.cause.notification_id,
        ],
    )?;
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
    tx.all(
        "SELECT id, at, transition, outcome, from_status, to_status, source, actor, detail, notification_id \
         FROM order_events WHERE order_id = ?1 ORDER BY id",
        args![order_id],
        |r| {
            Ok(HistoryEntry {
                id: r.get_i64(0)?,
                at: r.get_time(1)?,
                transition: r.parse(2)?,
                outcome: r.parse(3)?,
                from: r.parse(4)?,
                to: r.parse(5)?,
                source: r.parse(6)?,
                actor: r.get_string(7)?,
                detail: r.get_opt_string(8)?,
                notification_id: r.get_opt_i64(9)?,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::sql::tests::round_trip;
    use super::*;

    #[test]
    fn every_history_outcome_round_trips_and_keeps_its_stored_text() {
        assert_eq!(round_trip(&HistoryOutcome::ALL), ["applied", "refused"]);
    }
}
