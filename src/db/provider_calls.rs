//! The log of calls kassa made to providers about each order (create, query, close,
//! refund, refund query) and how each ended; the order page's timeline shows it.

use chrono::{DateTime, Utc};

use super::sql::args;
use super::types::{text_column, to_millis};
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
    tx.exec(
        "INSERT INTO provider_calls (order_id, at, provider, call, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        args![c.order_id, to_millis(c.at), c.provider, c.call, c.outcome, c.detail],
    )?;
    Ok(())
}

pub fn list_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<CallRecord>> {
    tx.all(
        "SELECT id, order_id, at, provider, call, outcome, detail FROM provider_calls WHERE order_id = ?1 ORDER BY id",
        args![order_id],
        |r| {
            Ok(CallRecord {
                id: r.get_i64(0)?,
                order_id: r.get_order_id(1)?,
                at: r.get_time(2)?,
                provider: r.parse(3)?,
                call: r.parse(4)?,
                outcome: r.parse(5)?,
                detail: r.get_opt_string(6)?,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::sql::tests::round_trip;
    use super::*;

    #[test]
    fn every_call_and_outcome_round_trips_and_keeps_its_stored_text() {
        assert_eq!(
            round_trip(ProviderCall::ALL),
            ["precreate", "query", "close", "refund", "refund_query"]
        );
        assert_eq!(round_trip(CallOutcome::ALL), ["ok", "rejected", "unknown"]);
    }
}
