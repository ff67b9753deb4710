//! Health of each webhook destination (`webhook_endpoints`): an endpoint that has only
//! failed for days is disabled until a delivery to it succeeds or an operator re-sends.

use chrono::{DateTime, Duration, Utc};

use super::sql::{args, Row};
use super::types::to_millis;
use super::{DbResult, Tx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub url: String,
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
}

fn from_row(r: &Row<'_>) -> DbResult<EndpointHealth> {
    Ok(EndpointHealth {
        url: r.get_string(0)?,
        failing_since: r.get_opt_time(1)?,
        disabled_at: r.get_opt_time(2)?,
    })
}

pub fn find(tx: &Tx<'_>, url: &str) -> DbResult<Option<EndpointHealth>> {
    tx.opt(
        "SELECT url, failing_since, disabled_at FROM webhook_endpoints WHERE url = ?1",
        args![url],
        from_row,
    )
}

/// Every endpoint kassa has delivered to, with its health.
pub fn list(tx: &Tx<'_>) -> DbResult<Vec<EndpointHealth>> {
    tx.all(
        "SELECT url, failing_since, disabled_at FROM webhook_endpoints ORDER BY url",
        args![],
        from_row,
    )
}

/// A success re-enables the endpoint and ends its failing streak.
pub fn succeeded(tx: &Tx<'_>, url: &str, now: DateTime<Utc>) -> DbResult<()> {
    tx.exec(
        "INSERT INTO webhook_endpoints (url, last_success_at) VALUES (?1, ?2) \
         ON CONFLICT (url) DO UPDATE SET failing_since = NULL, disabled_at = NULL, last_success_at = ?2",
        args![url, to_millis(now)],
    )?;
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
    tx.exec(
        "INSERT INTO webhook_endpoints (url, failing_since, last_failure_at) VALUES (?1, ?2, ?2) \
         ON CONFLICT (url) DO UPDATE SET \
             failing_since = CASE WHEN webhook_endpoints.failing_since IS NULL OR webhook_endpoints.last_failure_at < ?3 \
                 THEN ?2 ELSE webhook_endpoints.failing_since END, \
             last_failure_at = ?2",
        args![url, at, at - quiet_gap.num_milliseconds()],
    )?;
    let n = tx.exec(
        "UPDATE webhook_endpoints SET disabled_at = ?2 WHERE url = ?1 AND disabled_at IS NULL AND failing_since <= ?3",
        args![url, at, at - disable_after.num_milliseconds()],
    )?;
    Ok(n == 1)
}

/// Clears the disabled flag and failing streak of the endpoint of the outbox row
/// `event_id` (an operator re-sends it).
pub(super) fn reenable_for_requeue(tx: &Tx<'_>, event_id: &str) -> DbResult<()> {
    tx.exec(
        "UPDATE webhook_endpoints SET disabled_at = NULL, failing_since = NULL \
         WHERE url IN (SELECT url FROM webhook_outbox WHERE event_id = ?1 AND url IS NOT NULL)",
        args![event_id],
    )?;
    Ok(())
}

/// Clears the disabled flag and failing streak of the endpoints of every outbox row
/// that failed since `since` (an operator re-sends them all).
pub(super) fn reenable_failed_since(tx: &Tx<'_>, since: DateTime<Utc>) -> DbResult<()> {
    tx.exec(
        "UPDATE webhook_endpoints SET disabled_at = NULL, failing_since = NULL \
         WHERE url IN (SELECT url FROM webhook_outbox \
             WHERE status = 'failed' AND updated_at >= ?1 AND url IS NOT NULL)",
        args![to_millis(since)],
    )?;
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::TimeZone;

    use super::super::sql::tests::database;
    use super::*;

    /// One order's outbox rows, updated 50, 100, 200 and 300 s into November: `e-old` and
    /// `e-new` failed, `e-done` delivered, `e-none` failed without a url; and disabled
    /// endpoints for the three urls and for one no row names.
    pub(in crate::db) fn requeue_rows(tx: &Tx<'_>) -> DbResult<()> {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        // (event, status, updated_at in seconds, url)
        let rows = [
            ("e-old", "failed", 50, "https://old.example"),
            ("e-new", "failed", 100, "https://new.example"),
            ("e-done", "delivered", 200, "https://done.example"),
            ("e-none", "failed", 300, ""),
        ];
        let order = super::super::sql::tests::new_order(1, 100);
        super::super::orders::insert(tx, &order, None)?;
        for (event, status, at, url) in rows {
            let at = to_millis(t0 + Duration::seconds(at));
            tx.exec(
                "INSERT INTO webhook_outbox (event_id, order_id, event_type, payload, status, \
                 next_attempt_at, created_at, updated_at, url) \
                 VALUES (?1, ?2, 'order.paid', '{}', ?3, ?4, ?4, ?4, NULLIF(?5, ''))",
                args![event, &order.id, status, at, url],
            )?;
        }
        for url in [
            "https://old.example",
            "https://new.example",
            "https://done.example",
            "https://other.example",
        ] {
            tx.exec(
                "INSERT INTO webhook_endpoints (url, failing_since, last_failure_at, disabled_at) \
                 VALUES (?1, 1, 2, 3)",
                args![url],
            )?;
        }
        Ok(())
    }

    #[test]
    fn a_failing_streak_starts_at_its_first_failure_restarts_after_a_quiet_gap_and_disables_the_endpoint_once_long_enough(
    ) {
        let (_dir, mut db) = database();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let url = "https://a.example/hook";
        let (disable_after, quiet_gap) = (Duration::seconds(100), Duration::seconds(30));
        let mut fail = |s: i64| {
            db.immediate(|tx| failed(tx, url, t0 + Duration::seconds(s), disable_after, quiet_gap))
                .unwrap()
        };
        assert!(!fail(0));
        assert!(!fail(20));
        // 40 s after the last failure: a new streak.
        assert!(!fail(60));
        assert!(!fail(80));
        assert!(!fail(100));
        assert!(!fail(120));
        assert!(!fail(140));
        assert!(fail(160));
        assert!(!fail(170));
        let health = db.read(|tx| find(tx, url)).unwrap().unwrap();
        assert_eq!(health.failing_since, Some(t0 + Duration::seconds(60)));
        assert_eq!(health.disabled_at, Some(t0 + Duration::seconds(160)));
    }

    #[test]
    fn a_requeue_re_enables_only_its_rows_endpoint_and_a_requeue_since_only_those_of_rows_failed_since() {
        let (_dir, mut db) = database();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        db.immediate(requeue_rows).unwrap();
        let enabled = |db: &super::super::Offline| -> Vec<String> {
            db.read(list)
                .unwrap()
                .into_iter()
                .filter(|h| h.disabled_at.is_none() && h.failing_since.is_none())
                .map(|h| h.url)
                .collect()
        };

        db.immediate(|tx| reenable_for_requeue(tx, "e-done")).unwrap();
        assert_eq!(enabled(&db), ["https://done.example"]);

        db.immediate(|tx| reenable_failed_since(tx, t0 + Duration::seconds(100)))
            .unwrap();
        assert_eq!(enabled(&db), ["https://done.example", "https://new.example"]);
    }
}
