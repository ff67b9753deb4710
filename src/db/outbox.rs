//! Outgoing webhooks (`webhook_outbox`, with its attempt log `webhook_attempts`): rows
//! are queued in the transaction of the transition they announce, holding the payload
//! they are given, and claimed with a lease for delivery.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::sql::{args, Row};
use super::types::to_millis;
use super::{webhook_endpoints, DbResult, Tx};
use crate::domain::ids::new_event_id;
use crate::domain::order::serialize_rfc3339;
use crate::domain::{EventType, OrderId, OutboxStatus};

/// Queues `payload` (already rendered) for delivery now.
pub fn enqueue(
    tx: &Tx<'_>,
    order_id: &OrderId,
    event: EventType,
    payload: &str,
    now: DateTime<Utc>,
) -> DbResult<()> {
    tx.exec(
        "INSERT INTO webhook_outbox (event_id, order_id, event_type, payload, next_attempt_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5)",
        args![new_event_id(), order_id, event, payload, to_millis(now)],
    )?;
    Ok(())
}

/// One outbox row, for views, the command line and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub event_id: String,
    pub order_id: OrderId,
    pub event_type: EventType,
    pub payload: String,
    pub status: OutboxStatus,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// The columns `from_row` reads, as a macro so that statements `concat!` them into
/// static text rather than formatting a string per call.
macro_rules! outbox_columns {
    () => {
        "event_id, order_id, event_type, payload, status, attempts, next_attempt_at, last_error"
    };
}

fn from_row(r: &Row<'_>) -> DbResult<OutboxRow> {
    Ok(OutboxRow {
        event_id: r.get_string(0)?,
        order_id: r.get_order_id(1)?,
        event_type: r.parse(2)?,
        payload: r.get_string(3)?,
        status: r.parse(4)?,
        attempts: r.get_i64(5)?,
        next_attempt_at: r.get_time(6)?,
        last_error: r.get_opt_string(7)?,
    })
}

pub fn list_for_order(tx: &Tx<'_>, order_id: &OrderId) -> DbResult<Vec<OutboxRow>> {
    const SQL: &str = concat!(
        "SELECT ",
        outbox_columns!(),
        " FROM webhook_outbox WHERE order_id = ?1 ORDER BY id"
    );
    tx.all(SQL, args![order_id], from_row)
}

pub fn find_by_event_id(tx: &Tx<'_>, event_id: &str) -> DbResult<Option<OutboxRow>> {
    const SQL: &str = concat!(
        "SELECT ",
        outbox_columns!(),
        " FROM webhook_outbox WHERE event_id = ?1"
    );
    tx.opt(SQL, args![event_id], from_row)
}

/// Outbox rows per status.
pub fn count_by_status(tx: &Tx<'_>) -> DbResult<Vec<(OutboxStatus, i64)>> {
    tx.all(
        "SELECT status, COUNT(*) FROM webhook_outbox GROUP BY status ORDER BY status",
        args![],
        |r| Ok((r.parse(0)?, r.get_i64(1)?)),
    )
}

/// An outbox row claimed for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    /// The lease this claim holds (for the claiming process, `Core::instance`); an
    /// attempt is recorded only while it still does.
    pub lease_until: i64,
    pub event_id: String,
    pub order_id: OrderId,
    pub event_type: EventType,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: i64,
    /// The order's own notify_url, if any.
    pub notify_url: Option<String>,
}

/// The claim, with `$lock` after the subquery's `LIMIT 1` (PostgreSQL's row lock).
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE webhook_outbox SET status = 'delivering', lease_until = ?2, lease_owner = ?3, updated_at = ?1 \
             WHERE id = (SELECT o.id FROM webhook_outbox o \
                 WHERE o.status IN ('pending', 'delivering') \
                 AND ((o.status = 'pending' AND o.next_attempt_at <= ?1) \
                        OR (o.status = 'delivering' AND o.lease_until <= ?1)) \
                 AND NOT EXISTS (SELECT 1 FROM webhook_outbox e WHERE e.order_id = o.order_id AND e.id < o.id \
                                 AND e.status IN ('pending', 'delivering')) \
                 ORDER BY o.next_attempt_at, o.id LIMIT 1",
            $lock,
            ") \
             AND ((status = 'pending' AND next_attempt_at <= ?1) OR (status = 'delivering' AND lease_until <= ?1)) \
             RETURNING id, event_id, order_id, event_type, payload, attempts, \
                 (SELECT notify_url FROM orders WHERE orders.id = webhook_outbox.order_id), lease_until"
        )
    };
}

const CLAIM: &str = claim_sql!("");

/// PostgreSQL's claim, for one kind of due row (`$due`: its condition, `$order`: the
/// claim order). Each locks the row it picks and passes over
/// rows other claimers hold locked: without it every claimer picks the same oldest row,
/// all but one find it taken once they reach it, and go idle with rows still due. Two
/// statements, not SQLite's one with an `OR`: with the `OR` the planner read every due
/// row and sorted them on each claim (a bitmap scan; the cost of a claim grew with the
/// backlog), while each half reads an index in order and stops at the first row it can
/// take. `OFFSET 0` keeps the earlier-event check a probe of `webhook_outbox_by_order`
/// per candidate: as an anti-join, planned on the statistics of a queue that had just
/// been empty, it read every undelivered row for each claim.
macro_rules! claim_pg_sql {
    ($due:literal, $order:literal) => {
        concat!(
            "UPDATE webhook_outbox SET status = 'delivering', lease_until = ?2, lease_owner = ?3, updated_at = ?1 \
             WHERE id = (SELECT o.id FROM webhook_outbox o WHERE ",
            $due,
            " AND NOT EXISTS (SELECT 1 FROM webhook_outbox e WHERE e.order_id = o.order_id AND e.id < o.id \
                                 AND e.status IN ('pending', 'delivering') OFFSET 0) \
                 ORDER BY ",
            $order,
            " LIMIT 1 FOR UPDATE OF o SKIP LOCKED) \
             AND ((status = 'pending' AND next_attempt_at <= ?1) OR (status = 'delivering' AND lease_until <= ?1)) \
             RETURNING id, event_id, order_id, event_type, payload, attempts, \
                 (SELECT notify_url FROM orders WHERE orders.id = webhook_outbox.order_id), lease_until"
        )
    };
}

/// Rows whose claim's lease ran out (their claimer died or stalled): few, as there are
/// at most as many claims as dispatchers, so they go first.
const CLAIM_EXPIRED_PG: &str = claim_pg_sql!(
    "o.status = 'delivering' AND o.lease_until <= ?1",
    "o.lease_until, o.id"
);
/// Pending rows due, oldest first: `webhook_outbox_due` in order, the ties of one
/// `next_attempt_at` sorted by id.
const CLAIM_PENDING_PG: &str = claim_pg_sql!(
    "o.status = 'pending' AND o.next_attempt_at <= ?1",
    "o.next_attempt_at, o.id"
);

/// Claims the next due row for `owner` (this process), oldest first, with a lease so
/// that no other dispatcher, of this process or another, delivers it at the same time.
/// A row whose order still has an earlier undelivered event waits for it: events of one
/// order arrive in order.
///
/// The leading `status IN (…)` is the condition of the partial index
/// `webhook_outbox_due`: with it SQLite walks that index (undelivered rows only, in
/// `next_attempt_at` order) instead of scanning and sorting every row ever queued,
/// which made each claim cost as much as the whole outbox.
///
/// The outer WHERE repeats the whole due condition: at READ COMMITTED (PostgreSQL) a row
/// chosen by the subquery may have been delivered, rescheduled or claimed by another
/// process before this UPDATE reaches it, and is then left alone.
pub fn claim_due(tx: &Tx<'_>, now: DateTime<Utc>, lease: Duration, owner: &str) -> DbResult<Option<Claimed>> {
    let at = to_millis(now);
    let until = to_millis(now + lease);
    if !tx.is_postgres() {
        return tx.opt(CLAIM, args![at, until, owner], claimed_from);
    }
    match tx.opt(CLAIM_EXPIRED_PG, args![at, until, owner], claimed_from)? {
        Some(claimed) => Ok(Some(claimed)),
        None => tx.opt(CLAIM_PENDING_PG, args![at, until, owner], claimed_from),
    }
}

fn claimed_from(r: &Row<'_>) -> DbResult<Claimed> {
    Ok(Claimed {
        id: r.get_i64(0)?,
        event_id: r.get_string(1)?,
        order_id: r.get_order_id(2)?,
        event_type: r.parse(3)?,
        payload: r.get_string(4)?,
        attempts: r.get_i64(5)?,
        notify_url: r.get_opt_string(6)?,
        lease_until: r.get_i64(7)?,
    })
}

pub struct Attempt<'a> {
    pub outbox_id: i64,
    /// The claim the attempt was made under (`Claimed::lease_until`, and the claiming
    /// process, `Core::instance`).
    pub lease_until: i64,
    pub lease_owner: &'a str,
    pub at: DateTime<Utc>,
    pub url: &'a str,
    pub http_status: Option<u16>,
    pub error: Option<&'a str>,
    pub latency_ms: i64,
    pub response: Option<&'a str>,
}

/// What became of the row after an attempt.
pub enum After {
    Delivered,
    RetryAt(DateTime<Utc>),
    Failed,
}

/// Logs an attempt and moves the row on, only if the claim it was made under still holds
/// (the same owner and lease): a dispatcher whose lease ran out and was re-claimed, by
/// this process or another, must not overwrite the new holder's result. A refused
/// attempt leaves no row in `webhook_attempts` either: the log shows only attempts
/// whose outcome the row took.
pub fn record_attempt(tx: &Tx<'_>, a: &Attempt<'_>, after: &After) -> DbResult<bool> {
    let (status, next, delivered) = match after {
        After::Delivered => (OutboxStatus::Delivered, None, Some(to_millis(a.at))),
        After::RetryAt(t) => (OutboxStatus::Pending, Some(to_millis(*t)), None),
        After::Failed => (OutboxStatus::Failed, None, None),
    };
    let last_error = match (a.http_status, a.error) {
        (_, Some(e)) => Some(e.to_owned()),
        (Some(s), None) if !(200..300).contains(&s) => Some(format!("HTTP {s}")),
        _ => None,
    };
    let n = tx.exec(
        "UPDATE webhook_outbox SET status = ?2, attempts = attempts + 1, next_attempt_at = COALESCE(?3, next_attempt_at), \
         lease_until = NULL, lease_owner = NULL, last_error = ?4, delivered_at = ?5, url = ?6, updated_at = ?7 \
         WHERE id = ?1 AND status = 'delivering' AND lease_until = ?8 AND lease_owner = ?9",
        args![
            a.outbox_id,
            status,
            next,
            last_error.as_deref(),
            delivered,
            a.url,
            to_millis(a.at),
            a.lease_until,
            a.lease_owner
        ],
    )?;
    if n != 1 {
        // The new holder logs its own attempt; this one's outcome is nobody's record.
        return Ok(false);
    }
    tx.exec(
        "INSERT INTO webhook_attempts (outbox_id, at, url, http_status, error, latency_ms, response) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        args![
            a.outbox_id,
            to_millis(a.at),
            a.url,
            a.http_status,
            a.error,
            a.latency_ms,
            a.response
        ],
    )?;
    Ok(true)
}

/// Marks a row `owner` claimed skipped (there is nowhere to deliver it), only while
/// that claim holds, as `record_attempt`. True when marked.
pub fn skip(tx: &Tx<'_>, claim: &Claimed, owner: &str, now: DateTime<Utc>) -> DbResult<bool> {
    let n = tx.exec(
        "UPDATE webhook_outbox SET status = 'skipped', lease_until = NULL, lease_owner = NULL, \
         last_error = 'no endpoint: the order has no notify_url and [webhooks] url is empty', updated_at = ?2 \
         WHERE id = ?1 AND status = 'delivering' AND lease_owner = ?3 AND lease_until = ?4",
        args![claim.id, to_millis(now), owner, claim.lease_until],
    )?;
    Ok(n == 1)
}

/// Marks a row `owner` claimed failed without an attempt (its endpoint is disabled),
/// only while that claim holds: a dispatcher that stalled past its lease must not fail
/// a row another process has since claimed and may be delivering. True when marked.
pub fn fail_unsent(
    tx: &Tx<'_>,
    claim: &Claimed,
    owner: &str,
    url: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let n = tx.exec(
        "UPDATE webhook_outbox SET status = 'failed', lease_until = NULL, lease_owner = NULL, last_error = ?3, url = ?4, updated_at = ?2 \
         WHERE id = ?1 AND status = 'delivering' AND lease_owner = ?5 AND lease_until = ?6",
        args![claim.id, to_millis(now), reason, url, owner, claim.lease_until],
    )?;
    Ok(n == 1)
}

/// Queues a delivered, failed or skipped row again, with the same event id (so the
/// shop can deduplicate) and a fresh retry ladder; an operator's re-send also means
/// "the endpoint is fixed", so the row's endpoint is re-enabled. True when re-queued.
pub fn requeue(tx: &Tx<'_>, event_id: &str, now: DateTime<Utc>) -> DbResult<bool> {
    webhook_endpoints::reenable_for_requeue(tx, event_id)?;
    let n = tx.exec(
        "UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2, lease_until = NULL, lease_owner = NULL, updated_at = ?2 \
         WHERE event_id = ?1 AND status IN ('failed', 'delivered', 'skipped')",
        args![event_id, to_millis(now)],
    )?;
    Ok(n == 1)
}

/// Gives back `owner`'s claims at shutdown, once its dispatchers have stopped: a row
/// left `delivering` would wait for its lease (a minute) after the restart. Only its
/// own: another process's claims are deliveries under way, and a dead process's wait
/// for their lease. The row stays due as it was; an attempt cut short is sent again
/// with the same webhook-id.
pub fn release_claims(tx: &Tx<'_>, owner: &str, now: DateTime<Utc>) -> DbResult<usize> {
    tx.exec(RELEASE, args![to_millis(now), owner])
}

const RELEASE: &str =
    "UPDATE webhook_outbox SET status = 'pending', lease_until = NULL, lease_owner = NULL, updated_at = ?1 \
     WHERE status = 'delivering' AND lease_owner = ?2";

/// Re-queues every row that failed since `since` (re-enabling their endpoints);
/// returns how many.
pub fn requeue_failed_since(tx: &Tx<'_>, since: DateTime<Utc>, now: DateTime<Utc>) -> DbResult<usize> {
    webhook_endpoints::reenable_failed_since(tx, since)?;
    tx.exec(
        "UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = ?2, lease_until = NULL, lease_owner = NULL, updated_at = ?2 \
         WHERE status = 'failed' AND updated_at >= ?1",
        args![to_millis(since), to_millis(now)],
    )
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttemptRecord {
    #[serde(serialize_with = "serialize_rfc3339")]
    pub at: DateTime<Utc>,
    pub url: String,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response: Option<String>,
}

impl AttemptRecord {
    /// Reads the columns `at, url, http_status, error, latency_ms, response`, in that order.
    fn read(r: &Row<'_>) -> DbResult<Self> {
        Ok(AttemptRecord {
            at: r.get_time(0)?,
            url: r.get_string(1)?,
            http_status: r.get_opt_i64(2)?,
            error: r.get_opt_string(3)?,
            latency_ms: r.get_i64(4)?,
            response: r.get_opt_string(5)?,
        })
    }
}

pub fn list_attempts(tx: &Tx<'_>, event_id: &str) -> DbResult<Vec<AttemptRecord>> {
    tx.all(
        "SELECT a.at, a.url, a.http_status, a.error, a.latency_ms, a.response FROM webhook_attempts a \
         JOIN webhook_outbox o ON o.id = a.outbox_id WHERE o.event_id = ?1 ORDER BY a.id",
        args![event_id],
        AttemptRecord::read,
    )
}

/// Every attempt of the outbox row `outbox_id`, oldest first.
pub fn attempts_of(tx: &Tx<'_>, outbox_id: i64) -> DbResult<Vec<AttemptRecord>> {
    tx.all(
        "SELECT at, url, http_status, error, latency_ms, response FROM webhook_attempts WHERE outbox_id = ?1 ORDER BY id",
        args![outbox_id],
        AttemptRecord::read,
    )
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::db::sql::tests::{database, new_order};
    use crate::db::{orders, Offline};
    use crate::domain::NewOrder;

    const LEASE: Duration = Duration::seconds(60);

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap()
    }

    /// A database with `n` orders, each with one event due at t0.
    fn outbox_of(n: i64) -> (tempfile::TempDir, Offline) {
        let (dir, mut db) = database();
        db.immediate(|tx| {
            for i in 0..n {
                let order = NewOrder {
                    notify_url: Some("http://shop.test/hook".into()),
                    ..new_order(i, 100)
                };
                orders::insert(tx, &order, None)?;
                enqueue(tx, &order.id, EventType::OrderPaid, "{}", t0())?;
            }
            Ok(())
        })
        .unwrap();
        (dir, db)
    }

    /// `(status, lease_owner, lease_until, attempts)` of an outbox row.
    pub(in crate::db) type LeaseRow = (String, Option<String>, Option<i64>, i64);

    /// `(status, lease_owner, lease_until, attempts)` of every outbox row, by id.
    pub(in crate::db) fn rows_in(tx: &Tx<'_>) -> DbResult<Vec<LeaseRow>> {
        tx.all(
            "SELECT status, lease_owner, lease_until, attempts FROM webhook_outbox ORDER BY id",
            args![],
            |r| {
                Ok((
                    r.get_string(0)?,
                    r.get_opt_string(1)?,
                    r.get_opt_i64(2)?,
                    r.get_i64(3)?,
                ))
            },
        )
    }

    pub(in crate::db) fn rows(db: &Offline) -> Vec<LeaseRow> {
        db.read(rows_in).unwrap()
    }

    fn claim(db: &mut Offline, owner: &str, now: DateTime<Utc>) -> Claimed {
        db.immediate(|tx| claim_due(tx, now, LEASE, owner))
            .unwrap()
            .expect("a row is due")
    }

    #[test]
    fn giving_back_claims_at_shutdown_frees_only_this_instances_and_spares_another_instances() {
        let (_dir, mut db) = outbox_of(2);
        let mine = claim(&mut db, "inst_a", t0());
        let theirs = claim(&mut db, "inst_b", t0());
        assert_eq!(
            rows(&db).into_iter().map(|r| r.1.unwrap()).collect::<Vec<_>>(),
            ["inst_a", "inst_b"]
        );

        let released = db
            .immediate(|tx| release_claims(tx, "inst_a", t0() + Duration::seconds(1)))
            .unwrap();

        assert_eq!(released, 1);
        assert_eq!(
            rows(&db),
            vec![
                ("pending".into(), None, None, 0),
                (
                    "delivering".into(),
                    Some("inst_b".into()),
                    Some(theirs.lease_until),
                    0
                ),
            ]
        );
        // What was given back is due again at once; inst_b's row is not.
        let again = claim(&mut db, "inst_c", t0() + Duration::seconds(2));
        assert_eq!(again.id, mine.id);
        assert!(db
            .immediate(|tx| claim_due(tx, t0() + Duration::seconds(2), LEASE, "inst_c"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_attempt_under_an_expired_claim_is_refused_once_another_instance_re_claimed_the_row() {
        let (_dir, mut db) = outbox_of(1);
        let first = claim(&mut db, "inst_a", t0());
        let later = t0() + LEASE;
        let second = claim(&mut db, "inst_b", later);
        assert_eq!(second.id, first.id, "the expired claim was taken over");
        let before = rows(&db);

        let attempt = |claim: &Claimed| Attempt {
            outbox_id: claim.id,
            lease_until: claim.lease_until,
            lease_owner: "inst_a",
            at: later + Duration::seconds(1),
            url: "http://shop.test/hook",
            http_status: Some(200),
            error: None,
            latency_ms: 3,
            response: None,
        };
        let stale = db
            .immediate(|tx| record_attempt(tx, &attempt(&first), &After::Delivered))
            .unwrap();
        // inst_a's name on inst_b's lease: the owner alone refuses it.
        let wrong_owner = db
            .immediate(|tx| record_attempt(tx, &attempt(&second), &After::Delivered))
            .unwrap();

        assert!(!stale);
        assert!(!wrong_owner);
        assert_eq!(rows(&db), before, "still inst_b's claim, untouched");
        assert_eq!(before[0].1.as_deref(), Some("inst_b"));
        assert_eq!(attempt_rows(&db), 0, "a refused attempt is not logged");

        let current = Attempt {
            lease_owner: "inst_b",
            ..attempt(&second)
        };
        assert!(db
            .immediate(|tx| record_attempt(tx, &current, &After::Delivered))
            .unwrap());
        assert_eq!(rows(&db), vec![("delivered".into(), None, None, 1)]);
        assert_eq!(attempt_rows(&db), 1);
    }

    fn attempt_rows(db: &Offline) -> i64 {
        db.read(|tx| tx.one("SELECT COUNT(*) FROM webhook_attempts", args![], |r| r.get_i64(0)))
            .unwrap()
    }

    #[test]
    fn skipping_or_failing_a_row_under_an_expired_claim_is_refused_once_another_instance_re_claimed_it() {
        let (_dir, mut db) = outbox_of(1);
        let first = claim(&mut db, "inst_a", t0());
        let later = t0() + LEASE;
        let second = claim(&mut db, "inst_b", later);
        assert_eq!(second.id, first.id);
        let before = rows(&db);

        let skipped = db.immediate(|tx| skip(tx, &first, "inst_a", later)).unwrap();
        let failed = db
            .immediate(|tx| fail_unsent(tx, &first, "inst_a", "http://shop.test/hook", "disabled", later))
            .unwrap();
        // inst_a's name on inst_b's lease: refused by the owner alone.
        let wrong_owner = db
            .immediate(|tx| fail_unsent(tx, &second, "inst_a", "http://shop.test/hook", "disabled", later))
            .unwrap();

        assert!(!skipped && !failed && !wrong_owner);
        assert_eq!(rows(&db), before, "still inst_b's claim, untouched");
        assert_eq!(before[0].0, "delivering");

        assert!(db
            .immediate(|tx| fail_unsent(tx, &second, "inst_b", "http://shop.test/hook", "disabled", later))
            .unwrap());
        assert_eq!(rows(&db), vec![("failed".into(), None, None, 0)]);
    }

    #[test]
    fn skipping_a_row_under_its_own_claim_marks_it_skipped() {
        let (_dir, mut db) = outbox_of(1);
        let mine = claim(&mut db, "inst_a", t0());
        assert!(db.immediate(|tx| skip(tx, &mine, "inst_a", t0())).unwrap());
        assert_eq!(rows(&db), vec![("skipped".into(), None, None, 0)]);
    }

    #[test]
    fn giving_back_claims_walks_the_index_of_claimed_rows_by_owner_and_never_scans_the_whole_outbox() {
        let (_dir, db) = outbox_of(0);
        let plan: Vec<String> = db
            .read(|tx| {
                tx.all(
                    &format!("EXPLAIN QUERY PLAN {RELEASE}"),
                    args![0_i64, "inst_x"],
                    |r| r.get_string(3),
                )
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX webhook_outbox_claims_by_owner")),
            "{plan:?}"
        );
    }

    #[test]
    fn a_claim_walks_the_index_of_undelivered_rows_and_never_scans_the_whole_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = super::super::Offline::open(&dir.path().join("kassa.db")).unwrap();
        db.migrate().unwrap();
        let plan: Vec<String> = db
            .read(|tx| {
                tx.all(
                    &format!("EXPLAIN QUERY PLAN {CLAIM}"),
                    args![0_i64, 0_i64, "inst_x"],
                    |r| r.get_string(3),
                )
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX webhook_outbox_due")),
            "{plan:?}"
        );
        assert!(
            !plan
                .iter()
                .any(|step| step == "SCAN o" || step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
    }
}
