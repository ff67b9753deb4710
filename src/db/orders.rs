//! Order rows: insert, look-ups, listing with a cursor, the expiry sweep's query and
//! the export stream.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::ops::ControlFlow;

use chrono::{DateTime, Utc};

use super::sql::{args, Arg, Row};
use super::types::to_millis;
use super::{DbError, DbResult, Tx};
use crate::domain::{Amount, Currency, NewOrder, Order, OrderId, OrderStatus, ProviderKind};

/// The columns `from_row` reads, as a macro so that statements can `concat!` them into
/// static text instead of formatting a string per call (`find_by_id` is on the notify
/// path).
macro_rules! order_columns {
    () => {
        "id, out_trade_no, amount, currency, subject, provider, status, qr_code, \
         notify_url, return_url, metadata, provider_trade_no, refunded_amount, late_payment, \
         created_at, expires_at, paid_at, closed_at, updated_at"
    };
}

pub(super) const COLUMNS: &str = order_columns!();

pub(super) fn from_row(row: &Row<'_>) -> DbResult<Order> {
    let currency: Currency = row.parse(3)?;
    let amount =
        Amount::from_minor(row.get_i64(2)?, currency).map_err(|e| DbError::Corrupt(e.to_string()))?;
    let metadata = row.get_string(10)?;
    let metadata = match serde_json::from_str(&metadata) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => {
            return Err(DbError::Corrupt(format!(
                "metadata is not a JSON object: {metadata}"
            )))
        }
    };
    Ok(Order {
        id: row.get_order_id(0)?,
        out_trade_no: row.get_string(1)?,
        amount,
        subject: row.get_string(4)?,
        provider: row.parse(5)?,
        status: row.parse(6)?,
        qr_code: row.get_opt_string(7)?,
        notify_url: row.get_opt_string(8)?,
        return_url: row.get_opt_string(9)?,
        metadata,
        provider_trade_no: row.get_opt_string(11)?,
        refunded_amount: row.get_i64(12)?,
        late_payment: row.get_bool(13)?,
        created_at: row.get_time(14)?,
        expires_at: row.get_time(15)?,
        paid_at: row.get_opt_time(16)?,
        closed_at: row.get_opt_time(17)?,
        updated_at: row.get_time(18)?,
    })
}

/// Outcome of an insert: the merchant's `out_trade_no` is unique.
#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    Yes,
    OutTradeNoTaken,
}

pub fn insert(tx: &Tx<'_>, order: &NewOrder, qr_code: Option<&str>) -> DbResult<Inserted> {
    let metadata = serde_json::Value::Object(order.metadata.clone()).to_string();
    let created = to_millis(order.created_at);
    let rows = tx.exec(
        "INSERT INTO orders (id, out_trade_no, amount, currency, subject, provider, status, qr_code, \
         notify_url, return_url, metadata, created_at, expires_at, updated_at, next_check_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10, ?11, ?12, ?11, ?13) \
         ON CONFLICT (out_trade_no) DO NOTHING",
        args![
            &order.id,
            order.out_trade_no.as_str(),
            order.amount.minor(),
            order.amount.currency(),
            order.subject.as_str(),
            order.provider,
            qr_code,
            order.notify_url.as_deref(),
            order.return_url.as_deref(),
            metadata.as_str(),
            created,
            to_millis(order.expires_at),
            created + LATE_CHECKS_MS[0],
        ],
    )?;
    Ok(if rows == 1 {
        Inserted::Yes
    } else {
        Inserted::OutTradeNoTaken
    })
}

pub fn find_by_id(tx: &Tx<'_>, id: &OrderId) -> DbResult<Option<Order>> {
    const SQL: &str = concat!("SELECT ", order_columns!(), " FROM orders WHERE id = ?1");
    tx.opt(SQL, args![id], from_row)
}

pub fn find_by_out_trade_no(tx: &Tx<'_>, out_trade_no: &str) -> DbResult<Option<Order>> {
    const SQL: &str = concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE out_trade_no = ?1"
    );
    tx.opt(SQL, args![out_trade_no], from_row)
}

/// Position in the newest-first order list: the last row of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at_ms: i64,
    pub id: String,
}

impl Cursor {
    pub fn after(order: &Order) -> Cursor {
        Cursor {
            created_at_ms: to_millis(order.created_at),
            id: order.id.to_string(),
        }
    }

    /// Opaque text for clients.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at_ms, self.id))
    }

    pub fn decode(text: &str) -> Option<Cursor> {
        let raw = URL_SAFE_NO_PAD.decode(text).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (ms, id) = raw.split_once(':')?;
        OrderId::parse(id).ok()?;
        Some(Cursor {
            created_at_ms: ms.parse().ok()?,
            id: id.to_owned(),
        })
    }
}

#[derive(Debug, Default, Clone)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    pub provider: Option<ProviderKind>,
    pub out_trade_no: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

impl OrderFilter {
    fn where_clause<'a>(&'a self, args: &mut Vec<Arg<'a>>) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.status {
            args.push(Arg::from(s));
            parts.push(format!("status = ?{}", args.len()));
        }
        if let Some(p) = self.provider {
            args.push(Arg::from(p));
            parts.push(format!("provider = ?{}", args.len()));
        }
        if let Some(o) = &self.out_trade_no {
            args.push(Arg::from(o.as_str()));
            parts.push(format!("out_trade_no = ?{}", args.len()));
        }
        if let Some(t) = self.created_from {
            args.push(Arg::from(to_millis(t)));
            parts.push(format!("created_at >= ?{}", args.len()));
        }
        if let Some(t) = self.created_before {
            args.push(Arg::from(to_millis(t)));
            parts.push(format!("created_at < ?{}", args.len()));
        }
        if parts.is_empty() {
            "1 = 1".to_owned()
        } else {
            parts.join(" AND ")
        }
    }
}

/// Newest first. Stable under concurrent inserts: the cursor names a position
/// `(created_at, id)`, and new orders sort before it.
pub fn list(tx: &Tx<'_>, filter: &OrderFilter, after: Option<&Cursor>, limit: u32) -> DbResult<Vec<Order>> {
    let mut args = Vec::new();
    let mut clause = filter.where_clause(&mut args);
    if let Some(c) = after {
        args.push(Arg::from(c.created_at_ms));
        let ms = args.len();
        args.push(Arg::from(c.id.as_str()));
        clause.push_str(&format!(" AND (created_at, id) < (?{ms}, ?{})", args.len()));
    }
    args.push(Arg::from(i64::from(limit)));
    let sql = format!(
        "SELECT {COLUMNS} FROM orders WHERE {clause} ORDER BY created_at DESC, id DESC LIMIT ?{}",
        args.len()
    );
    tx.all(&sql, &args, from_row)
}

/// Pending orders whose time is up, oldest deadline first.
pub fn list_due_for_expiry(tx: &Tx<'_>, now: DateTime<Utc>, limit: u32) -> DbResult<Vec<Order>> {
    const SQL: &str = concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE status = 'pending' AND expires_at <= ?1 ORDER BY expires_at LIMIT ?2"
    );
    tx.all(SQL, args![to_millis(now), limit], from_row)
}

/// Calls `each` for every order created in `[from, before)`, oldest first, one row at a
/// time so an export of any size runs in constant memory.
pub fn for_each_created_between<E>(
    tx: &Tx<'_>,
    from: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
    mut each: impl FnMut(&Order) -> Result<(), E>,
) -> DbResult<Result<(), E>> {
    const SQL: &str = concat!(
        "SELECT ",
        order_columns!(),
        " FROM orders WHERE created_at >= ?1 AND created_at < ?2 ORDER BY created_at, id"
    );
    let from = from.map(to_millis).unwrap_or(i64::MIN);
    let before = before.map(to_millis).unwrap_or(i64::MAX);
    let mut stopped = Ok(());
    tx.each(SQL, args![from, before], |row| {
        let order = from_row(row)?;
        Ok(match each(&order) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                stopped = Err(e);
                ControlFlow::Break(())
            }
        })
    })?;
    Ok(stopped)
}

/// When, after creation, a still-pending order is checked at its provider in case its
/// notification was lost: +1 min, +5 min, +15 min, +1 h.
pub const LATE_CHECKS_MS: [i64; 4] = [60_000, 300_000, 900_000, 3_600_000];

/// An order due for a late-notification check, with the checks already done: the
/// check is recorded against that count (`record_check`).
#[derive(Debug, Clone)]
pub struct DueCheck {
    pub order: Order,
    pub checks_done: i64,
}

/// Pending orders due for a late-notification check, that have not expired yet (the
/// expiry sweep handles those).
pub fn list_due_for_check(tx: &Tx<'_>, now: DateTime<Utc>, limit: u32) -> DbResult<Vec<DueCheck>> {
    const SQL: &str = concat!(
        "SELECT ",
        order_columns!(),
        ", checks_done FROM orders WHERE status = 'pending' AND next_check_at <= ?1 \
         AND expires_at > ?1 ORDER BY next_check_at LIMIT ?2"
    );
    let checks_done = COLUMNS.split(',').count();
    tx.all(SQL, args![to_millis(now), limit], |r| {
        Ok(DueCheck {
            order: from_row(r)?,
            checks_done: r.get_i64(checks_done)?,
        })
    })
}

/// Moves an order's next check to the following step of `LATE_CHECKS_MS` (or none),
/// only if `seen` checks were done (what `list_due_for_check` read): of two processes
/// that checked the same step, one records it, and the other cannot skip the next step.
/// True when recorded.
pub fn record_check(tx: &Tx<'_>, id: &OrderId, seen: i64) -> DbResult<bool> {
    // Each branch adds to `created_at` so that PostgreSQL types its parameter as a
    // bigint; a CASE of bare parameters would be text there. No branch after the
    // last step: NULL, no further check.
    let n = tx.exec(
        "UPDATE orders SET checks_done = checks_done + 1, next_check_at = CASE checks_done + 1 \
         WHEN 1 THEN created_at + ?2 WHEN 2 THEN created_at + ?3 WHEN 3 THEN created_at + ?4 END \
         WHERE id = ?1 AND checks_done = ?5",
        args![id, LATE_CHECKS_MS[1], LATE_CHECKS_MS[2], LATE_CHECKS_MS[3], seen],
    )?;
    Ok(n == 1)
}

/// What the admin order list sorts by; ties are broken by id, so the order is total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Created,
    Amount,
}

impl SortKey {
    fn column(self) -> &'static str {
        match self {
            SortKey::Created => "created_at",
            SortKey::Amount => "amount",
        }
    }

    /// The sort value of `order`, as stored.
    pub fn value_of(self, order: &Order) -> i64 {
        match self {
            SortKey::Created => to_millis(order.created_at),
            SortKey::Amount => order.amount.minor(),
        }
    }
}

/// The admin order list's filter. Every part narrows the list; empty parts do not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderQuery {
    /// Any of these; empty means all.
    pub statuses: Vec<OrderStatus>,
    pub provider: Option<ProviderKind>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Minor units, inclusive.
    pub amount_min: Option<i64>,
    pub amount_max: Option<i64>,
    pub late_only: bool,
    /// Exactly a kassa id, an `out_trade_no` or a provider trade number.
    pub search: Option<String>,
    pub sort: SortKey,
    pub descending: bool,
}

/// A position in the list: the sort value and id of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageKey {
    pub value: i64,
    pub id: String,
}

impl PageKey {
    pub fn of(order: &Order, sort: SortKey) -> PageKey {
        PageKey {
            value: sort.value_of(order),
            id: order.id.to_string(),
        }
    }
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seek {
    First,
    /// The rows after this one, in list order.
    After(PageKey),
    /// The rows before this one, in list order.
    Before(PageKey),
}

/// Rows in list order, and whether more lie beyond them in the direction travelled.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub rows: Vec<Order>,
    pub more: bool,
}

/// Below this many rows, a filter is selective enough to read all its rows and sort
/// them, rather than walk the sort order's index past rows that do not match.
const SELECTIVE: i64 = 5_000;

/// Which index a page is read through. Chosen per query, because a filter that matches
/// few of a million rows must not make the page walk the whole index of the sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// The search's own three unique look-ups.
    Search,
    Late,
    /// `status IN (…)` on the status index: rows of each status in time order.
    Statuses,
    Created,
    Amount,
}

impl Driver {
    /// SQLite's `INDEXED BY`: the one part of a page's text PostgreSQL cannot run; its
    /// arm will drop it (the plan's translator), as its planner picks the index itself.
    fn index(self) -> &'static str {
        match self {
            Driver::Search => "",
            Driver::Late => "INDEXED BY orders_late_by_created",
            Driver::Statuses => "INDEXED BY orders_by_status_created",
            Driver::Created => "INDEXED BY orders_by_created",
            Driver::Amount => "INDEXED BY orders_by_amount",
        }
    }
}

impl OrderQuery {
    /// Statuses that narrow the list (all five, or none, do not).
    fn status_filter(&self) -> &[OrderStatus] {
        if self.statuses.len() >= OrderStatus::ALL.len() {
            &[]
        } else {
            &self.statuses
        }
    }

    fn has_amount_range(&self) -> bool {
        self.amount_min.is_some() || self.amount_max.is_some()
    }

    fn has_date_range(&self) -> bool {
        self.created_from.is_some() || self.created_before.is_some()
    }

    /// `col >= ?`/`col <= ?` terms and their values, for a probe or the page itself.
    fn terms<'a>(&'a self, args: &mut Vec<Arg<'a>>, with_statuses: bool) -> Vec<String> {
        fn push<'a>(args: &mut Vec<Arg<'a>>, v: Arg<'a>) -> usize {
            args.push(v);
            args.len()
        }
        let mut parts = Vec::new();
        if let Some(q) = &self.search {
            let n = push(args, Arg::from(q.as_str()));
            parts.push(format!(
                "id IN (SELECT id FROM orders WHERE id = ?{n} UNION ALL SELECT id FROM orders WHERE out_trade_no = ?{n} \
                 UNION ALL SELECT id FROM orders WHERE provider_trade_no = ?{n})"
            ));
        }
        if self.late_only {
            parts.push("late_payment = 1".to_owned());
        }
        let statuses = self.status_filter();
        if with_statuses && !statuses.is_empty() {
            let list: Vec<String> = statuses
                .iter()
                .map(|s| format!("?{}", push(args, Arg::from(*s))))
                .collect();
            parts.push(format!("status IN ({})", list.join(",")));
        }
        if let Some(p) = self.provider {
            parts.push(format!("provider = ?{}", push(args, Arg::from(p))));
        }
        if let Some(t) = self.created_from {
            parts.push(format!("created_at >= ?{}", push(args, Arg::from(to_millis(t)))));
        }
        if let Some(t) = self.created_before {
            parts.push(format!("created_at < ?{}", push(args, Arg::from(to_millis(t)))));
        }
        if let Some(a) = self.amount_min {
            parts.push(format!("amount >= ?{}", push(args, Arg::from(a))));
        }
        if let Some(a) = self.amount_max {
            parts.push(format!("amount <= ?{}", push(args, Arg::from(a))));
        }
        parts
    }

    /// Whether fewer than `SELECTIVE` rows match `terms` read through `driver`. The
    /// probes steer SQLite's planner, which takes the index it is told; PostgreSQL's
    /// picks one from its statistics, so there a probe would only cost a query: none is
    /// run, and the page keeps the default driver (per-status parts included). The
    /// rows are the same either way, only the plan differs.
    fn selective(&self, tx: &Tx<'_>, driver: Driver, terms: &[&str], args: Vec<Arg<'_>>) -> DbResult<bool> {
        if tx.is_postgres() {
            return Ok(false);
        }
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM orders {} WHERE {} LIMIT {SELECTIVE}) AS probe",
            driver.index(),
            terms.join(" AND ")
        );
        let n = tx.one(&sql, &args, |r| r.get_i64(0))?;
        Ok(n < SELECTIVE)
    }

    fn driver(&self, tx: &Tx<'_>) -> DbResult<Driver> {
        if self.search.is_some() {
            return Ok(Driver::Search);
        }
        if self.late_only {
            return Ok(Driver::Late);
        }
        let statuses = !self.status_filter().is_empty();
        match self.sort {
            SortKey::Created => {
                if self.has_amount_range() {
                    let probe = OrderQuery {
                        amount_min: self.amount_min,
                        amount_max: self.amount_max,
                        ..OrderQuery::default()
                    };
                    let mut args = Vec::new();
                    let terms = probe.terms(&mut args, false);
                    let terms: Vec<&str> = terms.iter().map(String::as_str).collect();
                    if self.selective(tx, Driver::Amount, &terms, args)? {
                        return Ok(Driver::Amount);
                    }
                }
                Ok(if statuses {
                    Driver::Statuses
                } else {
                    Driver::Created
                })
            }
            SortKey::Amount => {
                if self.has_date_range() {
                    let probe = OrderQuery {
                        created_from: self.created_from,
                        created_before: self.created_before,
                        ..OrderQuery::default()
                    };
                    let mut args = Vec::new();
                    let terms = probe.terms(&mut args, false);
                    let terms: Vec<&str> = terms.iter().map(String::as_str).collect();
                    if self.selective(tx, Driver::Created, &terms, args)? {
                        return Ok(Driver::Created);
                    }
                }
                if statuses {
                    let probe = OrderQuery {
                        statuses: self.statuses.clone(),
                        ..OrderQuery::default()
                    };
                    let mut args = Vec::new();
                    let terms = probe.terms(&mut args, true);
                    let terms: Vec<&str> = terms.iter().map(String::as_str).collect();
                    if self.selective(tx, Driver::Statuses, &terms, args)? {
                        return Ok(Driver::Statuses);
                    }
                }
                Ok(Driver::Amount)
            }
        }
    }

    /// The SQL of a page read through `driver`, travelling `forward` (in list order) or
    /// back, from `from`; with `status` set, for that status only.
    fn page_sql<'a>(
        &'a self,
        driver: Driver,
        forward: bool,
        from: Option<&'a PageKey>,
        limit: u32,
        args: &mut Vec<Arg<'a>>,
    ) -> String {
        let mut terms = self.terms(args, true);
        let key = self.sort.column();
        // Scanning in list order when going forward, against it when going back.
        let descending = self.descending == forward;
        if let Some(k) = from {
            args.push(Arg::from(k.value));
            let v = args.len();
            args.push(Arg::from(k.id.as_str()));
            let op = if descending { "<" } else { ">" };
            terms.push(format!("({key}, id) {op} (?{v}, ?{})", args.len()));
        }
        let dir = if descending { "DESC" } else { "ASC" };
        let clause = if terms.is_empty() {
            "1 = 1".to_owned()
        } else {
            terms.join(" AND ")
        };
        format!(
            "SELECT {COLUMNS} FROM orders {} WHERE {clause} ORDER BY {key} {dir}, id {dir} LIMIT {}",
            driver.index(),
            u64::from(limit) + 1
        )
    }
}

/// One page of the admin order list: up to `limit` rows from `seek`, in list order.
/// Each page is an index seek (keyset pagination), so the millionth row costs what the
/// first does.
pub fn page(tx: &Tx<'_>, query: &OrderQuery, seek: &Seek, limit: u32) -> DbResult<Page> {
    let driver = query.driver(tx)?;
    let (forward, from) = match seek {
        Seek::First => (true, None),
        Seek::After(k) => (true, Some(k)),
        Seek::Before(k) => (false, Some(k)),
    };
    let mut rows: Vec<Order> = Vec::new();
    for part in query.parts(driver) {
        let mut args = Vec::new();
        let sql = part.page_sql(driver, forward, from, limit, &mut args);
        rows.extend(tx.all(&sql, &args, from_row)?);
    }
    // Several statuses are read one by one, each in order; merge them.
    let descending = query.descending == forward;
    let sort = query.sort;
    rows.sort_by(|a, b| {
        let ordering = (sort.value_of(a), a.id.as_str()).cmp(&(sort.value_of(b), b.id.as_str()));
        if descending {
            ordering.reverse()
        } else {
            ordering
        }
    });
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    if !forward {
        rows.reverse();
    }
    Ok(Page { rows, more })
}

impl OrderQuery {
    /// The queries a page is read with: one per status when the status index must
    /// deliver rows in time order (an `IN` over several statuses would sort them all).
    fn parts(&self, driver: Driver) -> Vec<OrderQuery> {
        let statuses = self.status_filter();
        if driver == Driver::Statuses && self.sort == SortKey::Created && statuses.len() > 1 {
            statuses
                .iter()
                .map(|s| OrderQuery {
                    statuses: vec![*s],
                    ..self.clone()
                })
                .collect()
        } else {
            vec![self.clone()]
        }
    }
}

/// The query plans of a page of `query` (one per part), for tests and the bench:
/// SQLite's `EXPLAIN QUERY PLAN` (its plans' text is the fourth column), PostgreSQL's
/// `EXPLAIN` (one line of text per row). The plan tests stay SQLite's: the two
/// planners' words differ.
pub fn explain_page(tx: &Tx<'_>, query: &OrderQuery, seek: &Seek) -> DbResult<Vec<String>> {
    let (explain, column) = if tx.is_postgres() {
        ("EXPLAIN", 0)
    } else {
        ("EXPLAIN QUERY PLAN", 3)
    };
    let driver = query.driver(tx)?;
    let (forward, from) = match seek {
        Seek::First => (true, None),
        Seek::After(k) => (true, Some(k)),
        Seek::Before(k) => (false, Some(k)),
    };
    let mut plan = Vec::new();
    for part in query.parts(driver) {
        let mut args = Vec::new();
        let sql = part.page_sql(driver, forward, from, 50, &mut args);
        tx.each(&format!("{explain} {sql}"), &args, |r| {
            plan.push(r.get_string(column)?);
            Ok(ControlFlow::Continue(()))
        })?;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::super::sql::tests::new_order;
    use super::*;
    use crate::db::Offline;

    /// A database with `n` pending orders of 1.00 each.
    fn database(n: i64) -> (tempfile::TempDir, Offline) {
        let (dir, mut db) = super::super::sql::tests::database();
        db.immediate(|tx| {
            for i in 0..n {
                insert(tx, &new_order(i, 100), None)?;
            }
            Ok(())
        })
        .unwrap();
        (dir, db)
    }

    fn plan(db: &Offline, query: &OrderQuery) -> String {
        let key = PageKey {
            value: 1,
            id: "ord_x".into(),
        };
        db.read(|tx| explain_page(tx, query, &Seek::After(key)))
            .unwrap()
            .join(" | ")
    }

    #[test]
    fn a_late_check_step_checked_by_two_processes_is_recorded_once_and_the_next_step_is_kept() {
        let (_dir, mut db) = database(1);
        let now = new_order(0, 100).created_at + Duration::minutes(2);
        let due = db.read(|tx| list_due_for_check(tx, now, 10)).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].checks_done, 0);
        let id = due[0].order.id.clone();

        let first = db.immediate(|tx| record_check(tx, &id, 0)).unwrap();
        let second = db.immediate(|tx| record_check(tx, &id, 0)).unwrap();

        assert!(first);
        assert!(!second, "the same step again");
        let stored: (i64, Option<i64>) = db
            .read(|tx| {
                tx.one(
                    "SELECT checks_done, next_check_at - created_at FROM orders",
                    args![],
                    |r| Ok((r.get_i64(0)?, r.get_opt_i64(1)?)),
                )
            })
            .unwrap();
        assert_eq!(stored, (1, Some(LATE_CHECKS_MS[1])), "one step on, at +5 min");
    }

    #[test]
    fn each_recorded_check_moves_the_next_one_to_the_following_step_and_the_last_to_none() {
        let (_dir, mut db) = database(1);
        let now = new_order(0, 100).created_at + Duration::minutes(2);
        let id = db.read(|tx| list_due_for_check(tx, now, 10)).unwrap()[0]
            .order
            .id
            .clone();
        let stored = |db: &Offline| -> (i64, Option<i64>) {
            db.read(|tx| {
                tx.one(
                    "SELECT checks_done, next_check_at - created_at FROM orders",
                    args![],
                    |r| Ok((r.get_i64(0)?, r.get_opt_i64(1)?)),
                )
            })
            .unwrap()
        };
        assert_eq!(stored(&db), (0, Some(LATE_CHECKS_MS[0])));

        let mut seen = Vec::new();
        for done in 0..4 {
            assert!(db.immediate(|tx| record_check(tx, &id, done)).unwrap());
            seen.push(stored(&db));
        }

        assert_eq!(
            seen,
            [
                (1, Some(LATE_CHECKS_MS[1])),
                (2, Some(LATE_CHECKS_MS[2])),
                (3, Some(LATE_CHECKS_MS[3])),
                (4, None),
            ]
        );
    }

    #[test]
    fn every_filter_is_read_through_an_index_and_only_selective_ones_are_sorted() {
        let (_dir, db) = database(SELECTIVE + 1);
        let q = |f: fn(&mut OrderQuery)| {
            let mut query = OrderQuery {
                descending: true,
                ..OrderQuery::default()
            };
            f(&mut query);
            query
        };
        // (query, index it must use, whether it may sort rows itself)
        let cases: Vec<(OrderQuery, &str, bool)> = vec![
            (q(|_| {}), "orders_by_created", false),
            (q(|q| q.descending = false), "orders_by_created", false),
            (
                q(|q| q.provider = Some(ProviderKind::Wechat)),
                "orders_by_created",
                false,
            ),
            (
                q(|q| q.statuses = vec![OrderStatus::Paid, OrderStatus::Closed]),
                "orders_by_status_created",
                false,
            ),
            (q(|q| q.late_only = true), "orders_late_by_created", false),
            (q(|q| q.sort = SortKey::Amount), "orders_by_amount", false),
            // 1.00 matches every row: the amount range is not selective.
            (q(|q| q.amount_min = Some(100)), "orders_by_created", false),
            // Nothing costs 2.00: the few rows of the range are read and sorted.
            (q(|q| q.amount_min = Some(200)), "orders_by_amount", true),
            (
                q(|q| {
                    q.sort = SortKey::Amount;
                    q.created_from = Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
                }),
                "orders_by_created",
                true,
            ),
            (
                q(|q| {
                    q.sort = SortKey::Amount;
                    q.statuses = vec![OrderStatus::Refunded];
                }),
                "orders_by_status_created",
                true,
            ),
            (
                q(|q| {
                    q.sort = SortKey::Amount;
                    q.statuses = vec![OrderStatus::Pending];
                }),
                "orders_by_amount",
                false,
            ),
            (
                q(|q| q.search = Some("p-1".into())),
                "orders_by_provider_trade_no",
                true,
            ),
        ];
        for (query, index, may_sort) in cases {
            let plan = plan(&db, &query);
            assert!(plan.contains(index), "{query:?}: {plan}");
            assert!(!plan.contains("SCAN orders"), "{query:?}: a full scan: {plan}");
            if !may_sort {
                assert!(!plan.contains("TEMP B-TREE"), "{query:?}: sorts: {plan}");
            }
        }
    }

    #[test]
    fn a_page_after_the_last_row_of_each_status_merges_statuses_in_order() {
        let (_dir, db) = database(0);
        db.read(|_| Ok(())).unwrap();
        let mut db = db;
        db.immediate(|tx| {
            for i in 0..6 {
                insert(tx, &new_order(i, 100 + i), None)?;
            }
            tx.exec(
                "UPDATE orders SET status = 'paid' WHERE out_trade_no IN ('p-1', 'p-4')",
                args![],
            )?;
            tx.exec(
                "UPDATE orders SET status = 'closed' WHERE out_trade_no = 'p-2'",
                args![],
            )?;
            Ok(())
        })
        .unwrap();
        let query = OrderQuery {
            statuses: vec![OrderStatus::Paid, OrderStatus::Closed],
            descending: true,
            ..OrderQuery::default()
        };
        let names = |page: &Page| {
            page.rows
                .iter()
                .map(|o| o.out_trade_no.clone())
                .collect::<Vec<_>>()
        };
        let first = db.read(|tx| page(tx, &query, &Seek::First, 2)).unwrap();
        assert_eq!(
            (names(&first), first.more),
            (vec!["p-4".to_owned(), "p-2".into()], true)
        );
        let after = PageKey::of(first.rows.last().unwrap(), SortKey::Created);
        let second = db.read(|tx| page(tx, &query, &Seek::After(after), 2)).unwrap();
        assert_eq!((names(&second), second.more), (vec!["p-1".to_owned()], false));
        let before = PageKey::of(&second.rows[0], SortKey::Created);
        let back = db.read(|tx| page(tx, &query, &Seek::Before(before), 2)).unwrap();
        assert_eq!((names(&back), back.more), (names(&first), false));
    }
}
