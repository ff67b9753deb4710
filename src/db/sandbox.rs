//! Storage of the built-in sandbox: simulated trades, refunds, notification deliveries
//! and fault switches. Kept in tables apart from kassa's own, and in the database so
//! pending deliveries survive a restart.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::sql::{args, Row};
use super::types::{sql_list, text_column, to_millis};
use super::{DbResult, Tx};

/// A simulated Alipay trade's status, stored as Alipay's own text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SandboxTradeStatus {
    /// Precreated; nobody opened the wallet yet, so for Alipay the trade does not exist.
    NotScanned,
    WaitBuyerPay,
    TradeSuccess,
    /// Closed unpaid, or fully refunded after payment.
    TradeClosed,
}

impl SandboxTradeStatus {
    pub const ALL: [SandboxTradeStatus; 4] = [
        SandboxTradeStatus::NotScanned,
        SandboxTradeStatus::WaitBuyerPay,
        SandboxTradeStatus::TradeSuccess,
        SandboxTradeStatus::TradeClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxTradeStatus::NotScanned => "NOT_SCANNED",
            SandboxTradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            SandboxTradeStatus::TradeSuccess => "TRADE_SUCCESS",
            SandboxTradeStatus::TradeClosed => "TRADE_CLOSED",
        }
    }
}

impl std::fmt::Display for SandboxTradeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SandboxTradeStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SandboxTradeStatus::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown sandbox trade status {s:?}"))
    }
}

/// Where one simulated notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    Pending,
    /// The merchant answered `success`.
    Delivered,
    /// The retry schedule ran out.
    Failed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 3] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeliveryStatus::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown delivery status {s:?}"))
    }
}

text_column!(SandboxTradeStatus => as_str, DeliveryStatus => as_str);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxTrade {
    pub out_trade_no: String,
    pub token: String,
    pub app_id: String,
    pub trade_no: Option<String>,
    pub subject: String,
    pub total_amount: i64,
    pub refunded: i64,
    pub status: SandboxTradeStatus,
    pub notify_url: Option<String>,
    pub deadline: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

const TRADE_COLUMNS: &str =
    "out_trade_no, token, app_id, trade_no, subject, total_amount, refunded, status, notify_url, deadline, created_at, paid_at";

fn trade_from_row(r: &Row<'_>) -> DbResult<SandboxTrade> {
    Ok(SandboxTrade {
        out_trade_no: r.get_string(0)?,
        token: r.get_string(1)?,
        app_id: r.get_string(2)?,
        trade_no: r.get_opt_string(3)?,
        subject: r.get_string(4)?,
        total_amount: r.get_i64(5)?,
        refunded: r.get_i64(6)?,
        status: r.parse(7)?,
        notify_url: r.get_opt_string(8)?,
        deadline: r.get_time(9)?,
        created_at: r.get_time(10)?,
        paid_at: r.get_opt_time(11)?,
    })
}

/// Stores a precreated trade; an existing trade with that number is left as it is.
pub fn insert_trade(tx: &Tx<'_>, t: &SandboxTrade) -> DbResult<bool> {
    let n = tx.exec(
        "INSERT INTO sandbox_trades (out_trade_no, token, app_id, subject, total_amount, status, notify_url, deadline, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (out_trade_no) DO NOTHING",
        args![
            t.out_trade_no.as_str(),
            t.token.as_str(),
            t.app_id.as_str(),
            t.subject.as_str(),
            t.total_amount,
            t.status,
            t.notify_url.as_deref(),
            to_millis(t.deadline),
            to_millis(t.created_at)
        ],
    )?;
    Ok(n == 1)
}

pub fn find_trade(tx: &Tx<'_>, out_trade_no: &str) -> DbResult<Option<SandboxTrade>> {
    let sql = format!("SELECT {TRADE_COLUMNS} FROM sandbox_trades WHERE out_trade_no = ?1");
    tx.opt(&sql, args![out_trade_no], trade_from_row)
}

fn by_trade_no_sql() -> String {
    format!("SELECT {TRADE_COLUMNS} FROM sandbox_trades WHERE trade_no = ?1")
}

/// The trade Alipay numbered `trade_no` (set once the buyer scanned).
pub fn find_trade_by_trade_no(tx: &Tx<'_>, trade_no: &str) -> DbResult<Option<SandboxTrade>> {
    tx.opt(&by_trade_no_sql(), args![trade_no], trade_from_row)
}

pub fn find_trade_by_token(tx: &Tx<'_>, token: &str) -> DbResult<Option<SandboxTrade>> {
    let sql = format!("SELECT {TRADE_COLUMNS} FROM sandbox_trades WHERE token = ?1");
    tx.opt(&sql, args![token], trade_from_row)
}

/// Guarded status change of a simulated trade; false when it was not in `from`.
pub fn move_trade(
    tx: &Tx<'_>,
    out_trade_no: &str,
    from: &[SandboxTradeStatus],
    to: SandboxTradeStatus,
    trade_no: Option<&str>,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    let list = sql_list(from.iter().map(|s| s.as_str()));
    let sql = format!(
        "UPDATE sandbox_trades SET status = ?2, trade_no = COALESCE(trade_no, ?3), \
         paid_at = CASE WHEN ?2 = 'TRADE_SUCCESS' THEN ?4 ELSE paid_at END, \
         closed_at = CASE WHEN ?2 = 'TRADE_CLOSED' THEN ?4 ELSE closed_at END \
         WHERE out_trade_no = ?1 AND status IN ({list})"
    );
    let n = tx.exec(&sql, args![out_trade_no, to, trade_no, to_millis(now)])?;
    Ok(n == 1)
}

#[derive(Debug, PartialEq, Eq)]
pub enum RefundInsert {
    Done,
    /// The same `out_request_no` again: the earlier refund's amount.
    Repeated(i64),
    ExceedsBalance,
}

/// Stores a refund of `amount` on a paid trade, unless `out_request_no` was used on it
/// before (the earlier amount is returned) or the amount exceeds what is left.
///
/// The refund row goes in first, with `ON CONFLICT DO NOTHING`, and is counted against
/// the balance after: a request number another transaction is storing at the same time
/// (PostgreSQL) makes the insert wait for it and then do nothing, and the re-read reports
/// the repeat. Read first, the repeat would be missed and the insert would fail on the
/// key, aborting the whole transaction.
pub fn add_refund(
    tx: &Tx<'_>,
    out_trade_no: &str,
    out_request_no: &str,
    amount: i64,
    now: DateTime<Utc>,
) -> DbResult<RefundInsert> {
    // The trade must exist for the row's foreign key; the casts give PostgreSQL the
    // columns' types for parameters it otherwise reads as text.
    let stored = tx.exec(
        "INSERT INTO sandbox_refunds (out_trade_no, out_request_no, amount, created_at) \
         SELECT ?1, ?2, CAST(?3 AS BIGINT), CAST(?4 AS BIGINT) \
         WHERE EXISTS (SELECT 1 FROM sandbox_trades WHERE out_trade_no = ?1) \
         ON CONFLICT (out_trade_no, out_request_no) DO NOTHING",
        args![out_trade_no, out_request_no, amount, to_millis(now)],
    )?;
    if stored == 0 {
        return Ok(match find_refund(tx, out_trade_no, out_request_no)? {
            Some(earlier) => RefundInsert::Repeated(earlier),
            None => RefundInsert::ExceedsBalance,
        });
    }
    let n = tx.exec(
        "UPDATE sandbox_trades SET refunded = refunded + ?2 WHERE out_trade_no = ?1 \
         AND status = 'TRADE_SUCCESS' AND refunded + ?2 <= total_amount",
        args![out_trade_no, amount],
    )?;
    if n == 0 {
        tx.exec(
            "DELETE FROM sandbox_refunds WHERE out_trade_no = ?1 AND out_request_no = ?2",
            args![out_trade_no, out_request_no],
        )?;
        return Ok(RefundInsert::ExceedsBalance);
    }
    Ok(RefundInsert::Done)
}

pub fn find_refund(tx: &Tx<'_>, out_trade_no: &str, out_request_no: &str) -> DbResult<Option<i64>> {
    tx.opt(
        "SELECT amount FROM sandbox_refunds WHERE out_trade_no = ?1 AND out_request_no = ?2",
        args![out_trade_no, out_request_no],
        |r| r.get_i64(0),
    )
}

/// A refund by its request number alone (WeChat's refund query names no trade):
/// `(out_trade_no, amount)`. Should two trades carry the same request number, the
/// lowest trade number wins, on every backend (SQLite's primary-key scan order).
pub fn find_refund_by_request_no(tx: &Tx<'_>, out_request_no: &str) -> DbResult<Option<(String, i64)>> {
    tx.opt(
        "SELECT out_trade_no, amount FROM sandbox_refunds WHERE out_request_no = ?1 \
         ORDER BY out_trade_no LIMIT 1",
        args![out_request_no],
        |r| Ok((r.get_string(0)?, r.get_i64(1)?)),
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub out_trade_no: String,
    pub notify_url: String,
    /// JSON object of the notification's parameters, without `notify_time` and `sign`.
    pub params: String,
    pub attempts: i64,
    pub status: DeliveryStatus,
    pub last_response: Option<String>,
    /// JSON of the fault switches that apply to this delivery.
    pub faults: String,
}

const DELIVERY_COLUMNS: &str =
    "id, out_trade_no, notify_url, params, attempts, status, last_response, faults";

fn delivery_from_row(r: &Row<'_>) -> DbResult<Delivery> {
    Ok(Delivery {
        id: r.get_i64(0)?,
        out_trade_no: r.get_string(1)?,
        notify_url: r.get_string(2)?,
        params: r.get_string(3)?,
        attempts: r.get_i64(4)?,
        status: r.parse(5)?,
        last_response: r.get_opt_string(6)?,
        faults: r.get_string(7)?,
    })
}

pub fn enqueue_delivery(
    tx: &Tx<'_>,
    out_trade_no: &str,
    notify_url: &str,
    params_json: &str,
    faults_json: &str,
    next_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DbResult<i64> {
    tx.one(
        "INSERT INTO sandbox_deliveries (out_trade_no, notify_url, params, faults, next_at, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        args![
            out_trade_no,
            notify_url,
            params_json,
            faults_json,
            to_millis(next_at),
            to_millis(now)
        ],
        |r| r.get_i64(0),
    )
}

/// A delivery claimed for one attempt: `lease_owner` sends it, and its attempt is
/// recorded only while the claim holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub delivery: Delivery,
    pub lease_owner: String,
    pub lease_until: i64,
}

/// The claim; `lock` follows the subquery's `LIMIT 1` (PostgreSQL's row lock).
fn claim_sql(lock: &str) -> String {
    format!(
        "UPDATE sandbox_deliveries SET lease_owner = ?2, lease_until = ?3 \
         WHERE id = (SELECT id FROM sandbox_deliveries WHERE status = 'pending' AND next_at <= ?1 \
                     AND (lease_until IS NULL OR lease_until <= ?1) ORDER BY next_at, id LIMIT 1{lock}) \
         AND status = 'pending' AND next_at <= ?1 AND (lease_until IS NULL OR lease_until <= ?1) \
         RETURNING {DELIVERY_COLUMNS}, lease_owner, lease_until"
    )
}

/// Claims the next due delivery for `owner` until `lease_until`, oldest first: no other
/// process (or loop) sends it until the claim is recorded or its lease runs out.
/// The outer WHERE repeats the whole due condition: at READ COMMITTED (PostgreSQL) the
/// row the subquery chose may have been sent, rescheduled or claimed by another process
/// before this UPDATE reaches it, and is then left alone.
pub fn claim_due_delivery(
    tx: &Tx<'_>,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    owner: &str,
) -> DbResult<Option<ClaimedDelivery>> {
    // On PostgreSQL the subquery locks the row it picks and passes over rows other
    // claimers hold locked, or they would all pick the same one and all but one idle.
    let lock = if tx.is_postgres() {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    tx.opt(
        &claim_sql(lock),
        args![to_millis(now), owner, to_millis(lease_until)],
        |r| {
            Ok(ClaimedDelivery {
                delivery: delivery_from_row(r)?,
                lease_owner: r.get_string(8)?,
                lease_until: r.get_i64(9)?,
            })
        },
    )
}

/// Gives back `owner`'s claims (at shutdown), so the next start sends them at once.
pub fn release_claims(tx: &Tx<'_>, owner: &str) -> DbResult<usize> {
    tx.exec(
        "UPDATE sandbox_deliveries SET lease_owner = NULL, lease_until = NULL \
         WHERE status = 'pending' AND lease_owner = ?1",
        args![owner],
    )
}

/// Earliest time a pending delivery may be sent (it is due, and no claim holds it), so
/// the notifier knows how long to sleep.
pub fn next_delivery_at(tx: &Tx<'_>) -> DbResult<Option<DateTime<Utc>>> {
    tx.one(
        "SELECT MIN(CASE WHEN lease_until > next_at THEN lease_until ELSE next_at END) \
         FROM sandbox_deliveries WHERE status = 'pending'",
        args![],
        |r| r.get_opt_time(0),
    )
}

pub fn list_deliveries(tx: &Tx<'_>, out_trade_no: &str) -> DbResult<Vec<Delivery>> {
    let sql =
        format!("SELECT {DELIVERY_COLUMNS} FROM sandbox_deliveries WHERE out_trade_no = ?1 ORDER BY id");
    tx.all(&sql, args![out_trade_no], delivery_from_row)
}

/// Records one attempt made under `claim`, only while that claim holds (a sender whose
/// lease ran out and was re-claimed must not overwrite the new holder's result): `next_at`
/// None ends the delivery as `delivered` (when acknowledged) or `failed` (retries
/// exhausted). True when recorded.
pub fn record_attempt(
    tx: &Tx<'_>,
    claim: &ClaimedDelivery,
    acknowledged: bool,
    response: &str,
    next_at: Option<DateTime<Utc>>,
) -> DbResult<bool> {
    let status = match (acknowledged, next_at) {
        (true, _) => DeliveryStatus::Delivered,
        (false, Some(_)) => DeliveryStatus::Pending,
        (false, None) => DeliveryStatus::Failed,
    };
    let n = tx.exec(
        "UPDATE sandbox_deliveries SET attempts = attempts + 1, status = ?2, last_response = ?3, \
         next_at = COALESCE(?4, next_at), lease_owner = NULL, lease_until = NULL \
         WHERE id = ?1 AND status = 'pending' AND lease_owner = ?5 AND lease_until = ?6",
        args![
            claim.delivery.id,
            status,
            response,
            next_at.map(to_millis),
            claim.lease_owner.as_str(),
            claim.lease_until
        ],
    )?;
    Ok(n == 1)
}

pub fn find_faults(tx: &Tx<'_>, scope: &str) -> DbResult<Option<String>> {
    tx.opt(
        "SELECT faults FROM sandbox_faults WHERE scope = ?1",
        args![scope],
        |r| r.get_string(0),
    )
}

pub fn set_faults(tx: &Tx<'_>, scope: &str, faults_json: &str) -> DbResult<()> {
    tx.exec(
        "INSERT INTO sandbox_faults (scope, faults) VALUES (?1, ?2) ON CONFLICT (scope) DO UPDATE SET faults = excluded.faults",
        args![scope, faults_json],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::sql::tests::round_trip;
    use super::*;

    #[test]
    fn every_sandbox_trade_status_round_trips_as_alipays_text() {
        assert_eq!(
            round_trip(&SandboxTradeStatus::ALL),
            ["NOT_SCANNED", "WAIT_BUYER_PAY", "TRADE_SUCCESS", "TRADE_CLOSED"]
        );
    }

    #[test]
    fn a_request_number_two_trades_share_finds_the_refund_of_the_lowest_trade_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = super::super::Offline::open(&dir.path().join("kassa.db")).unwrap();
        db.migrate().unwrap();
        db.immediate(|tx| {
            for (trade, amount) in [("t-b", 200), ("t-a", 100), ("t-c", 300)] {
                tx.exec(
                    "INSERT INTO sandbox_trades (out_trade_no, token, app_id, subject, total_amount, \
                     refunded, status, deadline, created_at) \
                     VALUES (?1, ?1, 'app', 'Tea', 1000, ?2, 'TRADE_SUCCESS', 0, 0)",
                    args![trade, amount],
                )?;
                tx.exec(
                    "INSERT INTO sandbox_refunds (out_trade_no, out_request_no, amount, created_at) \
                     VALUES (?1, 'r-1', ?2, 0)",
                    args![trade, amount],
                )?;
            }
            Ok(())
        })
        .unwrap();

        let found = db.read(|tx| find_refund_by_request_no(tx, "r-1")).unwrap();

        assert_eq!(found, Some(("t-a".to_string(), 100)));
    }

    #[test]
    fn finding_a_trade_by_alipays_trade_no_walks_its_index_and_never_scans_the_trades() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = super::super::Offline::open(&dir.path().join("kassa.db")).unwrap();
        db.migrate().unwrap();
        let plan: Vec<String> = db
            .read(|tx| {
                tx.all(
                    &format!("EXPLAIN QUERY PLAN {}", by_trade_no_sql()),
                    args!["2026112422001446880501234567"],
                    |r| r.get_string(3),
                )
            })
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.contains("USING INDEX sandbox_trades_by_trade_no (trade_no=?)")),
            "{plan:?}"
        );
        assert!(!plan.iter().any(|step| step.starts_with("SCAN")), "{plan:?}");
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap() + chrono::Duration::seconds(seconds)
    }

    /// `(status, attempts, lease_owner)` of every delivery, by id.
    fn deliveries(db: &super::super::Offline) -> Vec<(String, i64, Option<String>)> {
        db.read(|tx| {
            tx.all(
                "SELECT status, attempts, lease_owner FROM sandbox_deliveries ORDER BY id",
                args![],
                |r| Ok((r.get_string(0)?, r.get_i64(1)?, r.get_opt_string(2)?)),
            )
        })
        .unwrap()
    }

    #[test]
    fn a_claimed_delivery_is_not_handed_to_another_owner_until_its_lease_expires_and_a_stale_attempt_is_refused(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = super::super::Offline::open(&dir.path().join("kassa.db")).unwrap();
        db.migrate().unwrap();
        db.immediate(|tx| enqueue_delivery(tx, "t-1", "http://shop.test/n", "{}", "{}", at(0), at(0)))
            .unwrap();
        let claim = |db: &mut super::super::Offline, owner: &str, now: i64| {
            db.immediate(|tx| claim_due_delivery(tx, at(now), at(now + 60), owner))
                .unwrap()
        };

        let first = claim(&mut db, "inst_a", 0).expect("due");
        assert_eq!(first.lease_owner, "inst_a");
        assert_eq!(claim(&mut db, "inst_b", 0), None, "claimed, not handed out again");
        assert_eq!(claim(&mut db, "inst_b", 59), None, "the lease still holds");
        assert_eq!(
            db.read(next_delivery_at).unwrap(),
            Some(at(60)),
            "the notifier waits for the lease, not the due time already past"
        );

        let second = claim(&mut db, "inst_b", 60).expect("the lease ran out");
        assert_eq!(second.delivery.id, first.delivery.id);
        let stale = db
            .immediate(|tx| record_attempt(tx, &first, true, "HTTP 200 OK: success", None))
            .unwrap();
        assert!(!stale);
        assert_eq!(
            deliveries(&db),
            vec![("pending".into(), 0, Some("inst_b".into()))]
        );

        let current = db
            .immediate(|tx| record_attempt(tx, &second, false, "HTTP 500", Some(at(300))))
            .unwrap();
        assert!(current);
        assert_eq!(deliveries(&db), vec![("pending".into(), 1, None)]);
        assert_eq!(
            claim(&mut db, "inst_a", 299),
            None,
            "not due before its next attempt"
        );
        assert!(claim(&mut db, "inst_a", 300).is_some());
    }

    #[test]
    fn giving_back_sandbox_claims_frees_only_the_owners_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = super::super::Offline::open(&dir.path().join("kassa.db")).unwrap();
        db.migrate().unwrap();
        db.immediate(|tx| {
            enqueue_delivery(tx, "t-1", "http://shop.test/n", "{}", "{}", at(0), at(0))?;
            enqueue_delivery(tx, "t-2", "http://shop.test/n", "{}", "{}", at(0), at(0))
        })
        .unwrap();
        for owner in ["inst_a", "inst_b"] {
            db.immediate(|tx| claim_due_delivery(tx, at(0), at(60), owner))
                .unwrap()
                .unwrap();
        }

        let released = db.immediate(|tx| release_claims(tx, "inst_a")).unwrap();

        assert_eq!(released, 1);
        assert_eq!(
            deliveries(&db),
            vec![
                ("pending".into(), 0, None),
                ("pending".into(), 0, Some("inst_b".into()))
            ]
        );
    }

    #[test]
    fn every_delivery_status_round_trips_and_keeps_its_stored_text() {
        assert_eq!(
            round_trip(&DeliveryStatus::ALL),
            ["pending", "delivered", "failed"]
        );
    }
}
