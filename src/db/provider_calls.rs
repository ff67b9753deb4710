//! The log of calls kassa made to providers about each order (create, query, close,
//! refund, refund query) and how each ended; the order page's timeline shows it.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::types::{from_millis, text_column, to_millis};
use super::{DbResult, Tx};
use crate::domain::provider_call::{CallOutcome, ProviderCall};
use crate::domain::{OrderId, ProviderKind};

text_column!(ProviderCall => as_str, CallOutcome => as_str);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub id: i64,
    pub order_id: OrderId,
    pub at: DateTime<Utc>,
    pub provider: ProviderKind,
    pub call: ProviderCall,
    pub outcome: CallOutcome,
    pub detail: Option<String>,
}

pub struct NewCall<'a> {
    pub order_id: &'a OrderId,
    pub at: DateTime<Utc>,
    pub provider: ProviderKind,
    pub call: ProviderCall,
    pub outcome: CallOutcome,
    pub detail: Option<&'a str>,
}

pub fn insert(tx: &Tx<'_>, c: &NewCall<'_>) -> DbResult<()> {
    tx.conn
        .prepare_cached(
            "INSERT INTO provider_calls (order_id, at, provider, call, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![c.order_id, to_millis(c.at), c.provider, c.call, c.outcome, c.detail])?;
    Ok(())
}

pub fn list_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<CallRecord>> {
    let mut stmt = tx.conn.prepare_cached(
        "SELECT id, order_id, at, provider, call, outcome, detail FROM provider_calls WHERE order_id = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([order_id], |r| {
        Ok(CallRecord {
            id: r.get(0)?,
            order_id: r.get(1)?,
            at: from_millis(r.get(2)?)?,
            provider: r.get(3)?,
            call: r.get(4)?,
            outcome: r.get(5)?,
            detail: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::super::types::tests::{round_trip, stored};
    use super::*;

    #[test]
    fn every_call_and_outcome_round_trips_and_keeps_its_stored_text() {
        round_trip(ProviderCall::ALL);
        round_trip(CallOutcome::ALL);
        let calls: Vec<String> = ProviderCall::ALL.iter().map(stored).collect();
        assert_eq!(calls, ["precreate", "query", "close", "refund", "refund_query"]);
        let outcomes: Vec<String> = CallOutcome::ALL.iter().map(stored).collect();
        assert_eq!(outcomes, ["ok", "rejected", "unknown"]);
    }
}
