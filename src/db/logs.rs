//! The dashboard's logs: raw notifications, webhook deliveries with their attempts,
//! endpoint health, signing secrets. Tables without a time index are walked by their
//! primary key: rows get their id in arrival order, so the first row of a time range is
//! found by a binary search over ids (a few point lookups), never a scan. (On
//! PostgreSQL, where ids only nearly follow arrival, from a time index: see
//! `first_id_since`.)

use chrono::{DateTime, Utc};

use super::outbox;
use super::sql::{args, Row};
use super::timeline::Delivery;
use super::types::to_millis;
use super::{webhook_endpoints, DbResult, Tx};
use crate::domain::{OrderId, OutboxStatus, ProviderKind, Verdict};

/// A table whose ids grow with one of its time columns.
#[derive(Debug, Clone, Copy)]
pub enum Timed {
    Notifications,
    WebhookOutbox,
    WebhookAttempts,
}

impl Timed {
    fn table_and_column(self) -> (&'static str, &'static str) {
        match self {
            Timed::Notifications => ("notifications", "received_at"),
            Timed::WebhookOutbox => ("webhook_outbox", "created_at"),
            Timed::WebhookAttempts => ("webhook_attempts", "at"),
        }
    }
}

/// How much later than the first row at or after a time a row may get its id, on
/// PostgreSQL (`first_id_since`): far more than a request waits between taking its time
/// and inserting (a pool wait, a transaction's idle limit) plus clock skew.
const WINDOW: chrono::Duration = chrono::Duration::minutes(10);

/// An id that splits the table at `t`: every row at or after `t` has an id at least
/// this (one past the last id when none is after), and on SQLite every row before it a
/// smaller one.
///
/// On SQLite the single writer gives ids in commit order, so a binary search over ids
/// finds the split in a few point lookups. On PostgreSQL an id is taken at insert, on
/// several connections of several instances, so ids do not quite grow with time: a row
/// stamped at `t` may get its id after rows stamped later. There the bound is the least
/// id of the rows stamped from `t` until `WINDOW` after the first of them, read from the
/// time index `<table>_by_<column>`. A row stamped later than that took its id after the
/// first row took its own, unless the first one waited longer than `WINDOW` between its
/// stamp and its insert (or the instances' clocks differ by more), so every row at or
/// after `t` is at or after the bound. A row stamped before `t` may be too: the logs and
/// the overview may show a few boundary rows of the range before. (The least id of all
/// rows at or after `t` would need no window, but no index answers it: PostgreSQL
/// walks the primary key or every row since `t`.)
pub fn first_id_since(tx: &Tx<'_>, table: Timed, t: DateTime<Utc>) -> DbResult<i64> {
    let (name, column) = table.table_and_column();
    if tx.is_postgres() {
        // `id + 0`: a bare MIN(id) makes PostgreSQL walk the primary key, filtering.
        let sql = format!(
            "SELECT COALESCE(\
                 (SELECT MIN(id + 0) FROM {name} WHERE {column} >= ?1 \
                  AND {column} < (SELECT MIN({column}) FROM {name} WHERE {column} >= ?1) + ?2), \
                 (SELECT MAX(id) FROM {name}) + 1, 1)"
        );
        return tx.one(&sql, args![to_millis(t), WINDOW.num_milliseconds()], |r| {
            r.get_i64(0)
        });
    }
    // Two statements: SQLite answers a lone MIN or MAX of the key from the b-tree's
    // ends, but both in one statement scan the whole table.
    let end = |sql: String| -> DbResult<Option<i64>> { tx.one(&sql, args![], |r| r.get_opt_i64(0)) };
    let (min, max) = (
        end(format!("SELECT MIN(id) FROM {name}"))?,
        end(format!("SELECT MAX(id) FROM {name}"))?,
    );
    let (Some(mut lo), Some(max)) = (min, max) else {
        return Ok(1);
    };
    let at = to_millis(t);
    let mut hi = max + 1;
    let probe = format!("SELECT id, {column} FROM {name} WHERE id >= ?1 ORDER BY id LIMIT 1");
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let found = tx.opt(&probe, args![mid], |r| Ok((r.get_i64(0)?, r.get_i64(1)?)))?;
        match found {
            Some((id, time)) if time < at => lo = id + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The notification log's filter.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    pub provider: Option<ProviderKind>,
    pub verdict: Option<Verdict>,
    pub reason_code: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    pub order_id: Option<OrderId>,
    /// Rows older than this id (the next page).
    pub before_id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotificationEntry {
    pub id: i64,
    pub provider: ProviderKind,
    pub received_at: DateTime<Utc>,
    pub remote_addr: Option<String>,
    pub headers: String,
    pub body: String,
    pub order_id: Option<OrderId>,
    pub verdict: Verdict,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    /// Length and hex SHA-256 of the whole body, on rows that failed verification
    /// (whose `body` is at most its first 2 KiB).
    pub body_length: Option<i64>,
    pub body_sha256: Option<String>,
}

const NOTIFICATION_COLUMNS: &str =
    "id, provider, received_at, remote_addr, headers, body, order_id, verdict, reason_code, reason, \
     body_length, body_sha256";

fn notification(r: &Row<'_>) -> DbResult<NotificationEntry> {
    Ok(NotificationEntry {
        id: r.get_i64(0)?,
        provider: r.parse(1)?,
        received_at: r.get_time(2)?,
        remote_addr: r.get_opt_string(3)?,
        headers: r.get_string(4)?,
        body: r.get_blob_lossy(5)?,
        order_id: r.get_opt_order_id(6)?,
        verdict: r.parse(7)?,
        reason_code: r.get_opt_string(8)?,
        reason: r.get_opt_string(9)?,
        body_length: r.get_opt_i64(10)?,
        body_sha256: r.get_opt_string(11)?,
    })
}

/// The id range `[first, end)` of rows in `[from, before)`.
fn id_range(
    tx: &Tx<'_>,
    table: Timed,
    from: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
    before_id: Option<i64>,
) -> DbResult<(i64, i64)> {
    let first = match from {
        Some(t) => first_id_since(tx, table, t)?,
        None => 0,
    };
    let mut end = match before {
        Some(t) => first_id_since(tx, table, t)?,
        None => i64::MAX,
    };
    if let Some(id) = before_id {
        end = end.min(id);
    }
    Ok((first, end))
}

/// Newest first, `limit` rows.
pub fn notifications(tx: &Tx<'_>, f: &NotificationFilter, limit: u32) -> DbResult<Vec<NotificationEntry>> {
    let (first, end) = id_range(tx, Timed::Notifications, f.from, f.before, f.before_id)?;
    let sql = format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id >= ?1 AND id < ?2 \
         AND (CAST(?3 AS TEXT) IS NULL OR provider = ?3) AND (CAST(?4 AS TEXT) IS NULL OR verdict = ?4) \
         AND (CAST(?5 AS TEXT) IS NULL OR reason_code = ?5) AND (CAST(?6 AS TEXT) IS NULL OR order_id = ?6) \
         ORDER BY id DESC LIMIT ?7"
    );
    tx.all(
        &sql,
        args![
            first,
            end,
            f.provider,
            f.verdict,
            f.reason_code.as_deref(),
            f.order_id.as_ref(),
            limit
        ],
        notification,
    )
}

pub fn notification_by_id(tx: &Tx<'_>, id: i64) -> DbResult<Option<NotificationEntry>> {
    let sql = format!("SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id = ?1");
    tx.opt(&sql, args![id], notification)
}

/// The webhook log's filter.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<OutboxStatus>,
    pub event_type: Option<String>,
    pub order_id: Option<OrderId>,
    pub url: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    pub before_id: Option<i64>,
}

/// `WHERE` of a delivery filter over `webhook_outbox`, parameters `?1` … `?6`. A
/// filter left out is a NULL; the casts give PostgreSQL its type.
const DELIVERY_WHERE: &str = "id >= ?1 AND id < ?2 AND (CAST(?3 AS TEXT) IS NULL OR status = ?3) \
     AND (CAST(?4 AS TEXT) IS NULL OR event_type = ?4) AND (CAST(?5 AS TEXT) IS NULL OR order_id = ?5) \
     AND (CAST(?6 AS TEXT) IS NULL OR url = ?6)";

/// Newest first, `limit` deliveries, each with its attempts; `.0` is each one's id.
pub fn deliveries(
    tx: &Tx<'_>,
    f: &DeliveryFilter,
    limit: u32,
) -> DbResult<Vec<(i64, String, OrderId, Delivery)>> {
    let (first, end) = id_range(tx, Timed::WebhookOutbox, f.from, f.before, f.before_id)?;
    let sql = format!(
        "SELECT id, event_id, event_type, status, created_at, next_attempt_at, delivered_at, last_error, url, order_id \
         FROM webhook_outbox WHERE {DELIVERY_WHERE} ORDER BY id DESC LIMIT ?7"
    );
    let mut out = tx.all(
        &sql,
        args![
            first,
            end,
            f.status,
            f.event_type.as_deref(),
            f.order_id.as_ref(),
            f.url.as_deref(),
            limit
        ],
        |r| {
            Ok((
                r.get_i64(0)?,
                r.get_opt_string(8)?.unwrap_or_default(),
                r.get_order_id(9)?,
                Delivery::read(r)?,
            ))
        },
    )?;
    for (id, _, _, delivery) in &mut out {
        delivery.attempts = outbox::attempts_of(tx, *id)?;
    }
    Ok(out)
}

/// Queues every failed delivery the filter matches again (same event ids, a fresh
/// retry ladder) and re-enables their endpoints; returns how many. The filter's status,
/// whatever it says, is `failed`.
pub fn requeue_failed_matching(tx: &Tx<'_>, f: &DeliveryFilter, now: DateTime<Utc>) -> DbResult<usize> {
    let (first, end) = id_range(tx, Timed::WebhookOutbox, f.from, f.before, None)?;
    let failed = Some(OutboxStatus::Failed);
    tx.exec(
        &format!(
            "UPDATE webhook_endpoints SET disabled_at = NULL, failing_since = NULL \
             WHERE url IN (SELECT url FROM webhook_outbox WHERE {DELIVERY_WHERE} AND url IS NOT NULL)"
        ),
        args![
            first,
            end,
            failed,
            f.event_type.as_deref(),
            f.order_id.as_ref(),
            f.url.as_deref()
        ],
    )?;
    tx.exec(
        &format!(
            "UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = ?7, lease_until = NULL, lease_owner = NULL, updated_at = ?7 \
             WHERE {DELIVERY_WHERE}"
        ),
        args![
            first,
            end,
            failed,
            f.event_type.as_deref(),
            f.order_id.as_ref(),
            f.url.as_deref(),
            to_millis(now)
        ],
    )
}

/// An endpoint's health with its last success and failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub disabled_at: Option<DateTime<Utc>>,
}

pub fn endpoints(tx: &Tx<'_>) -> DbResult<Vec<Endpoint>> {
    tx.all(
        "SELECT url, failing_since, last_failure_at, last_success_at, disabled_at FROM webhook_endpoints ORDER BY url",
        args![],
        |r| {
            Ok(Endpoint {
                url: r.get_string(0)?,
                failing_since: r.get_opt_time(1)?,
                last_failure_at: r.get_opt_time(2)?,
                last_success_at: r.get_opt_time(3)?,
                disabled_at: r.get_opt_time(4)?,
            })
        },
    )
}

/// Re-enables a disabled endpoint (its failing streak starts over). True when it was
/// disabled.
pub fn reenable_endpoint(tx: &Tx<'_>, url: &str) -> DbResult<bool> {
    let was = webhook_endpoints::find(tx, url)?.is_some_and(|e| e.disabled_at.is_some());
    tx.exec(
        "UPDATE webhook_endpoints SET disabled_at = NULL, failing_since = NULL WHERE url = ?1",
        args![url],
    )?;
    Ok(was)
}

/// A stored signing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub retire_at: Option<DateTime<Utc>>,
}

/// Secrets still signing at `now`, newest first.
pub fn signing_secrets(tx: &Tx<'_>, now: DateTime<Utc>) -> DbResult<Vec<StoredSecret>> {
    tx.all(
        "SELECT secret, created_at, retire_at FROM webhook_secrets WHERE retire_at IS NULL OR retire_at > ?1 ORDER BY id DESC",
        args![to_millis(now)],
        |r| {
            Ok(StoredSecret {
                secret: r.get_string(0)?,
                created_at: r.get_time(1)?,
                retire_at: r.get_opt_time(2)?,
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::super::orders;
    use super::super::outbox::tests::rows;
    use super::super::sql::tests::{database, new_order};
    use super::*;

    /// The default filter with what `set` sets.
    fn filter<F: Default>(set: &dyn Fn(&mut F)) -> F {
        let mut f = F::default();
        set(&mut f);
        f
    }

    #[test]
    fn each_notification_filter_keeps_only_its_rows_and_no_filter_keeps_them_all() {
        let (_dir, mut db) = database();
        let order = new_order(1, 100);
        let t0 = order.created_at;
        // (provider, verdict, reason_code, for the order)
        let rows = [
            ("alipay", "applied", None, true),
            ("wechat", "rejected", Some("bad_signature"), false),
            ("alipay", "duplicate", None, true),
            ("wechat", "applied", Some("bad_signature"), true),
        ];
        db.immediate(|tx| {
            orders::insert(tx, &order, None)?;
            for (i, (provider, verdict, code, ours)) in (0_i64..).zip(rows) {
                tx.exec(
                    "INSERT INTO notifications (provider, received_at, headers, body, verdict, reason_code, order_id) \
                     VALUES (?1, ?2, '{}', X'00', ?3, ?4, ?5)",
                    args![provider, to_millis(t0 + Duration::seconds(i)), verdict, code, ours.then_some(&order.id)],
                )?;
            }
            Ok(())
        })
        .unwrap();
        // Seconds after t0 of the rows kept by the filter `set` makes, newest first.
        let kept = |set: &dyn Fn(&mut NotificationFilter)| -> Vec<i64> {
            let entries = db.read(|tx| notifications(tx, &filter(set), 10)).unwrap();
            entries
                .iter()
                .map(|e| (e.received_at - t0).num_seconds())
                .collect()
        };
        assert_eq!(kept(&|_| {}), [3, 2, 1, 0]);
        assert_eq!(kept(&|f| f.provider = Some(ProviderKind::Wechat)), [3, 1]);
        assert_eq!(kept(&|f| f.verdict = Some(Verdict::Applied)), [3, 0]);
        assert_eq!(kept(&|f| f.reason_code = Some("bad_signature".into())), [3, 1]);
        assert_eq!(kept(&|f| f.order_id = Some(order.id.clone())), [3, 2, 0]);
        let all_four = |f: &mut NotificationFilter| {
            f.provider = Some(ProviderKind::Alipay);
            f.verdict = Some(Verdict::Duplicate);
            f.reason_code = None;
            f.order_id = Some(order.id.clone());
        };
        assert_eq!(kept(&all_four), [2]);
    }

    #[test]
    fn each_delivery_filter_keeps_only_its_rows_and_no_filter_keeps_them_all() {
        let (_dir, mut db) = database();
        let (one, two) = (new_order(1, 100), new_order(2, 100));
        let t0 = one.created_at;
        // (order, event type, status, url)
        let rows = [
            (&one, "order.paid", "delivered", "https://a.example/hook"),
            (&two, "order.paid", "failed", "https://b.example/hook"),
            (&one, "order.refunded", "failed", "https://a.example/hook"),
            (&two, "order.closed", "pending", "https://a.example/hook"),
        ];
        db.immediate(|tx| {
            orders::insert(tx, &one, None)?;
            orders::insert(tx, &two, None)?;
            for (i, (order, event, status, url)) in (0_i64..).zip(rows) {
                let at = to_millis(t0 + Duration::seconds(i));
                tx.exec(
                    "INSERT INTO webhook_outbox (event_id, order_id, event_type, payload, status, url, next_attempt_at, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, '{}', ?4, ?5, ?6, ?6, ?6)",
                    args![format!("evt_{i}"), &order.id, event, status, url, at],
                )?;
            }
            Ok(())
        })
        .unwrap();
        // Seconds after t0 of the rows kept by the filter `set` makes, newest first.
        let kept = |set: &dyn Fn(&mut DeliveryFilter)| -> Vec<i64> {
            let found = db.read(|tx| deliveries(tx, &filter(set), 10)).unwrap();
            found
                .iter()
                .map(|d| (d.3.created_at - t0).num_seconds())
                .collect()
        };
        assert_eq!(kept(&|_| {}), [3, 2, 1, 0]);
        assert_eq!(kept(&|f| f.status = Some(OutboxStatus::Failed)), [2, 1]);
        assert_eq!(kept(&|f| f.event_type = Some("order.paid".into())), [1, 0]);
        assert_eq!(kept(&|f| f.order_id = Some(two.id.clone())), [3, 1]);
        assert_eq!(
            kept(&|f| f.url = Some("https://a.example/hook".into())),
            [3, 2, 0]
        );
        let all_four = |f: &mut DeliveryFilter| {
            f.status = Some(OutboxStatus::Failed);
            f.event_type = Some("order.refunded".into());
            f.order_id = Some(one.id.clone());
            f.url = Some("https://a.example/hook".into());
        };
        assert_eq!(kept(&all_four), [2]);
    }

    #[test]
    fn resending_failed_deliveries_by_filter_clears_their_whole_claim_owner_included_and_leaves_the_rest() {
        let (_dir, mut db) = database();
        let order = new_order(1, 100);
        let t0 = order.created_at;
        // A failed row still naming the claim it failed under, and a delivered one.
        db.immediate(|tx| {
            orders::insert(tx, &order, None)?;
            for (i, status) in [(0_i64, "failed"), (1, "delivered")] {
                let at = to_millis(t0 + Duration::seconds(i));
                tx.exec(
                    "INSERT INTO webhook_outbox (event_id, order_id, event_type, payload, status, url, attempts, \
                     lease_until, lease_owner, next_attempt_at, created_at, updated_at) \
                     VALUES (?1, ?2, 'order.paid', '{}', ?3, 'https://a.example/hook', 5, ?4, 'inst_a', ?4, ?4, ?4)",
                    args![format!("evt_{i}"), &order.id, status, at],
                )?;
            }
            Ok(())
        })
        .unwrap();
        let delivered = rows(&db)[1].clone();

        let filter = DeliveryFilter {
            status: Some(OutboxStatus::Failed),
            ..Default::default()
        };
        let requeued = db
            .immediate(|tx| requeue_failed_matching(tx, &filter, t0 + Duration::minutes(1)))
            .unwrap();

        assert_eq!(requeued, 1);
        assert_eq!(rows(&db), [("pending".to_owned(), None, None, 0), delivered]);
    }

    #[test]
    fn the_id_found_for_a_time_splits_the_rows_before_it_from_those_after_whatever_the_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = super::super::Offline::open(&dir.path().join("kassa.db")).unwrap();
        db.migrate().unwrap();
        let at = |s: i64| Utc.timestamp_opt(1_764_000_000 + s, 0).unwrap();
        assert_eq!(
            db.read(|tx| first_id_since(tx, Timed::Notifications, at(0)))
                .unwrap(),
            1
        );
        // Ids 1..=9 at seconds 0, 10, … 80, with ids 4 and 5 deleted.
        db.immediate(|tx| {
            for i in 0..9 {
                tx.exec(
                    "INSERT INTO notifications (provider, received_at, headers, body, verdict) VALUES ('alipay', ?1, '{}', X'00', 'applied')",
                    args![to_millis(at(i * 10))],
                )?;
            }
            tx.exec("DELETE FROM notifications WHERE id IN (4, 5)", args![])?;
            Ok(())
        })
        .unwrap();
        // Ids kept, with their second.
        let rows = [(1, 0), (2, 10), (3, 20), (6, 50), (7, 60), (8, 70), (9, 80)];
        for second in [-5, 0, 1, 20, 21, 35, 50, 51, 80, 81] {
            let bound = db
                .read(|tx| first_id_since(tx, Timed::Notifications, at(second)))
                .unwrap();
            let from_bound: Vec<i64> = rows.iter().filter(|(id, _)| *id >= bound).map(|r| r.0).collect();
            let from_time: Vec<i64> = rows.iter().filter(|(_, s)| *s >= second).map(|r| r.0).collect();
            assert_eq!(from_bound, from_time, "at {second} s");
        }
    }
}
