//! Health of each webhook destination (`webhook_endpoints`): an endpoint that has only
//! failed for days is disabled until a delivery to it succeeds or an operator re-sends.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::types::{opt_from_millis, to_millis};
use super::{DbResult, Tx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub url: String,
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<EndpointHealth> {
    Ok(EndpointHealth {
        url: r.get(0)?,
        failing_since: opt_from_millis(r.get(1)?)?,
        disabled_at: opt_from_millis(r.get(2)?)?,
    })
}

pub fn find(tx: &Tx<'_>, url: &str) -> DbResult<Option<EndpointHealth>> {
    Ok(tx
        .conn
        .prepare_cached("SELECT url, failing_since, disabled_at FROM webhook_endpoints WHERE url = ?1")?
        .query_row([url], from_row)
        .optional()?)
}

/// Every endpoint kassa has delivered to, with its health.
pub fn list(tx: &Tx<'_>) -> DbResult<Vec<EndpointHealth>> {
    let mut stmt = tx
        .conn
        .prepare_cached("SELECT url, failing_since, disabled_at FROM webhook_endpoints ORDER BY url")?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A success re-enables the endpoint and ends its failing streak.
pub fn succeeded(tx: &Tx<'_>, url: &str, now: DateTime<Utc>) -> DbResult<()> {
    tx.conn
        .prepare_cached(
            "INSERT INTO webhook_endpoints (url, last_success_at) VALUES (?1, ?2) \
             ON CONFLICT (url) DO UPDATE SET failing_since = NULL, disabled_at = NULL, last_success_at = ?2",
        )?
        .execute(params![url, to_millis(now)])?;
    Ok(())
}

/// Starts or continues a failing streak; disables the endpoint once the streak is
/// `disable_after` long. A streak is only continuous while failures keep coming: one
/// that was quiet for longer than `quiet_gap` (longer than any retry gap) starts over.
/// Returns true when this failure disabled it.
pub fn failed(
    tx: &Tx<'_>,
    url: &str,
    now: DateTime<Utc>,
    disable_after: Duration,
    quiet_gap: Duration,
) -> DbResult<bool> {
    let at = to_millis(now);
    tx.conn
        .prepare_cached(
            "INSERT INTO webhook_endpoints (url, failing_since, last_failure_at) VALUES (?1, ?2, ?2) \
             ON CONFLICT (url) DO UPDATE SET \
                 failing_since = CASE WHEN failing_since IS NULL OR last_failure_at < ?3 THEN ?2 ELSE failing_since END, \
                 last_failure_at = ?2",
        )?
        .execute(params![url, at, at - quiet_gap.num_milliseconds()])?;
    let n = tx
        .conn
        .prepare_cached(
            "UPDATE webhook_endpoints SET disabled_at = ?2 WHERE url = ?1 AND disabled_at IS NULL AND failing_since <= ?3",
        )?
        .execute(params![url, at, at - disable_after.num_milliseconds()])?;
    Ok(n == 1)
}

/// Clears the disabled flag and failing streak of the endpoints of the outbox rows
/// matching `filter` (SQL over `webhook_outbox` with one parameter, `?1`).
pub(super) fn reenable_where(tx: &Tx<'_>, filter: &'static str, arg: &dyn rusqlite::ToSql) -> DbResult<()> {
    let sql = format!(
        "UPDATE webhook_endpoints SET disabled_at = NULL, failing_since = NULL \
         WHERE url IN (SELECT url FROM webhook_outbox WHERE {filter})"
    );
    tx.conn.prepare_cached(&sql)?.execute([arg])?;
    Ok(())
}
