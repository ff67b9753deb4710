//! Request limits: a fixed window per key (a source address, an API key). `Limiter`
//! keeps them in memory, at most `capacity` keys at a time; `LimitStore` counts in the
//! database's `rate_limits` table instead when other processes serve from the same
//! database (PostgreSQL), where one process's memory would give each its own budget.
//! Time is the caller's `now` (the app clock), so a test moves a window on by moving
//! its clock.
//!
//! What a limit refuses is counted in `kassa_rate_limited_total{surface}` and logged at
//! most once a minute per surface: a flood of refusals must not become a flood of log
//! lines, which would be its own way to fill the disk.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};

use crate::db::{rate_limits, Database, DbResult};
use crate::metrics::Metrics;

/// `count` per `per`, as `600/min` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(v: &str) -> Result<Rate, String> {
        let bad = || format!("{v:?} is not a rate such as \"600/min\" (per `s`, `min` or `h`)");
        let (count, unit) = v.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::seconds(1),
            "m" | "min" | "minute" => Duration::minutes(1),
            "h" | "hour" => Duration::hours(1),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err("must allow at least 1 request (leave it empty for no limit)".to_owned());
        }
        Ok(Rate { count, per })
    }
}

/// Refused: the window ends in `retry_after` whole seconds (at least 1), the value of
/// the answer's `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: u64,
}

/// At most one log line per surface this often; each says how many refusals it stands for.
const LOG_EVERY: Duration = Duration::seconds(60);

pub struct Limiter<K> {
    surface: &'static str,
    rate: Rate,
    capacity: usize,
    metrics: Arc<Metrics>,
    state: Mutex<State<K>>,
}

struct State<K> {
    windows: HashMap<K, Window>,
    refusals: Refusals,
}

/// Refusals of one surface since its last log line (see `LOG_EVERY`).
#[derive(Default)]
struct Refusals {
    last_logged: Option<DateTime<Utc>>,
    unlogged: u64,
}

impl Refusals {
    fn refused(&mut self, surface: &'static str, metrics: &Metrics, key: &dyn Display, now: DateTime<Utc>) {
        metrics.rate_limited(surface);
        self.unlogged += 1;
        if self.last_logged.is_none_or(|t| now - t >= LOG_EVERY) {
            tracing::warn!(
                surface,
                refused = self.unlogged,
                latest = %key,
                "requests refused by a rate limit (one line a minute at most)"
            );
            self.last_logged = Some(now);
            self.unlogged = 0;
        }
    }
}

#[derive(Clone, Copy)]
struct Window {
    start: DateTime<Utc>,
    count: u32,
}

impl<K: Hash + Eq + Clone + Display> Limiter<K> {
    /// A limit of `rate` per key, remembering at most `capacity` keys; its refusals are
    /// counted under `surface`.
    pub fn new(surface: &'static str, rate: Rate, capacity: usize, metrics: Arc<Metrics>) -> Self {
        metrics.declare_rate_limited(surface);
        Limiter {
            surface,
            rate,
            capacity: capacity.max(1),
            metrics,
            state: Mutex::new(State {
                windows: HashMap::new(),
                refusals: Refusals::default(),
            }),
        }
    }

    /// Counts one request of `key`: refused once `key` has made `rate.count` in its
    /// window. A refused request is not counted, so it does not push the window's end.
    pub fn hit(&self, key: K, now: DateTime<Utc>) -> Result<(), Limited> {
        let mut state = self.lock();
        match self.live(&state, &key, now) {
            Some(w) if w.count >= self.rate.count => {
                let limited = self.limited(w, now);
                self.refused(&mut state, &key, now);
                Err(limited)
            }
            Some(_) => {
                if let Some(w) = state.windows.get_mut(&key) {
                    w.count += 1;
                }
                Ok(())
            }
            None => {
                self.start(&mut state, key, now);
                Ok(())
            }
        }
    }

    /// Refused when `key` has used up its window; counts nothing else. With `record`,
    /// for limits on what fails (an attempt is only known to count once it has failed).
    pub fn check(&self, key: &K, now: DateTime<Utc>) -> Result<(), Limited> {
        let mut state = self.lock();
        match self.live(&state, key, now) {
            Some(w) if w.count >= self.rate.count => {
                let limited = self.limited(w, now);
                self.refused(&mut state, key, now);
                Err(limited)
            }
            _ => Ok(()),
        }
    }

    /// Counts one event of `key` (a failure) towards its limit.
    pub fn record(&self, key: K, now: DateTime<Utc>) {
        let mut state = self.lock();
        match self.live(&state, &key, now) {
            Some(_) => {
                if let Some(w) = state.windows.get_mut(&key) {
                    w.count = w.count.saturating_add(1);
                }
            }
            None => self.start(&mut state, key, now),
        }
    }

    /// How many keys are remembered now.
    pub fn len(&self) -> usize {
        self.lock().windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // Nothing here panics while holding the lock; were it poisoned, the counts in it
        // are still counts.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self, state: &State<K>, key: &K, now: DateTime<Utc>) -> Option<Window> {
        state
            .windows
            .get(key)
            .copied()
            .filter(|w| now < w.start + self.rate.per)
    }

    fn limited(&self, w: Window, now: DateTime<Utc>) -> Limited {
        limited(w.start, self.rate.per, now)
    }

    /// A new window of one for `key`. When the map is full, windows that have ended go
    /// first, then the oldest: memory stays bounded whatever the number of keys a
    /// stranger brings, at worst letting one of them start over.
    fn start(&self, state: &mut State<K>, key: K, now: DateTime<Utc>) {
        if !state.windows.contains_key(&key) && state.windows.len() >= self.capacity {
            let per = self.rate.per;
            state.windows.retain(|_, w| now < w.start + per);
            while state.windows.len() >= self.capacity {
                let oldest = state
                    .windows
                    .iter()
                    .min_by_key(|(_, w)| w.start)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => state.windows.remove(&k),
                    None => break,
                };
            }
        }
        state.windows.insert(key, Window { start: now, count: 1 });
    }

    fn refused(&self, state: &mut State<K>, key: &K, now: DateTime<Utc>) {
        state.refusals.refused(self.surface, &self.metrics, key, now);
    }
}

/// Refused while `window` holds `limit` events or more: the window ends in
/// `retry_after` whole seconds (at least 1).
fn limited(start: DateTime<Utc>, per: Duration, now: DateTime<Utc>) -> Limited {
    let left = (start + per - now).num_milliseconds();
    Limited {
        retry_after: u64::try_from((left + 999) / 1000).unwrap_or(1).max(1),
    }
}

/// A limit counted where every process serving from the database sees it: in memory
/// when this process is the only one (SQLite, at no cost beyond a map), in the
/// database's `rate_limits` table otherwise (`db::rate_limits::shared`).
///
/// A database error in the table fails open: the request goes on (and is logged, at
/// most once a minute). A limit is there to spare the server and slow a guesser, and a
/// request that goes on meets the same database for its own work and fails there as it
/// would have; a limit failing closed would turn every database hiccup into 429s for
/// everyone, and the API must never answer 500 because of its limits.
pub struct LimitStore<K>(Store<K>);

enum Store<K> {
    Memory(Limiter<K>),
    Table(Table),
}

/// Windows kept in the database; see `LimitStore`.
struct Table {
    surface: &'static str,
    rate: Rate,
    capacity: usize,
    metrics: Arc<Metrics>,
    db: Database,
    refusals: Mutex<Refusals>,
    /// When this process last logged a database error of the limit.
    last_failure_logged: Mutex<Option<DateTime<Utc>>>,
    /// When this process last pruned the table of this surface (`PRUNE_EVERY`).
    last_pruned: Mutex<Option<DateTime<Utc>>>,
}

/// How often each process prunes a surface's ended (and surplus) windows from the
/// table: the table grows by at most what arrives in this time beyond `capacity`.
const PRUNE_EVERY: Duration = Duration::seconds(60);

impl<K: Hash + Eq + Clone + Display> LimitStore<K> {
    /// A limit of `rate` per key, kept where `db` calls for (see `LimitStore`), at
    /// most `capacity` keys; its refusals are counted under `surface`.
    pub fn new(
        surface: &'static str,
        rate: Rate,
        capacity: usize,
        metrics: Arc<Metrics>,
        db: &Database,
    ) -> Self {
        if !rate_limits::shared(db) {
            return LimitStore(Store::Memory(Limiter::new(surface, rate, capacity, metrics)));
        }
        LimitStore::in_table(surface, rate, capacity, metrics, db)
    }

    /// Counting in `db`'s table whatever the database (tests use it on SQLite).
    fn in_table(
        surface: &'static str,
        rate: Rate,
        capacity: usize,
        metrics: Arc<Metrics>,
        db: &Database,
    ) -> Self {
        metrics.declare_rate_limited(surface);
        LimitStore(Store::Table(Table {
            surface,
            rate,
            capacity: capacity.max(1),
            metrics,
            db: db.clone(),
            refusals: Mutex::new(Refusals::default()),
            last_failure_logged: Mutex::new(None),
            last_pruned: Mutex::new(None),
        }))
    }

    /// As `Limiter::hit`.
    pub async fn hit(&self, key: K, now: DateTime<Utc>) -> Result<(), Limited> {
        let table = match &self.0 {
            Store::Memory(limiter) => return limiter.hit(key, now),
            Store::Table(table) => table,
        };
        let window = table.count(&key, now).await;
        if window.count > i64::from(table.rate.count) {
            table.refused(&key, now);
            return Err(limited(window.start, table.rate.per, now));
        }
        Ok(())
    }

    /// As `Limiter::check`.
    pub async fn check(&self, key: &K, now: DateTime<Utc>) -> Result<(), Limited> {
        let table = match &self.0 {
            Store::Memory(limiter) => return limiter.check(key, now),
            Store::Table(table) => table,
        };
        let (surface, name, per) = (table.surface, key.to_string(), table.rate.per);
        let found = table
            .db
            .read(move |tx| rate_limits::find(tx, surface, &name, per, now))
            .await;
        match table.failed_open(found, now) {
            Some(Some(window)) if window.count >= i64::from(table.rate.count) => {
                table.refused(key, now);
                Err(limited(window.start, per, now))
            }
            _ => Ok(()),
        }
    }

    /// As `Limiter::record`.
    pub async fn record(&self, key: K, now: DateTime<Utc>) {
        match &self.0 {
            Store::Memory(limiter) => limiter.record(key, now),
            Store::Table(table) => {
                table.count(&key, now).await;
            }
        }
    }
}

impl Table {
    /// Counts one event of `key`; an empty window when the database failed (fails open).
    async fn count(&self, key: &dyn Display, now: DateTime<Utc>) -> rate_limits::Window {
        let (surface, name, rate) = (self.surface, key.to_string(), self.rate);
        let counted = self
            .db
            .write(move |tx| rate_limits::hit(tx, surface, &name, rate.per, i64::from(rate.count), now))
            .await;
        self.prune_if_due(now);
        self.failed_open(counted, now)
            .unwrap_or(rate_limits::Window { start: now, count: 0 })
    }

    fn refused(&self, key: &dyn Display, now: DateTime<Utc>) {
        lock(&self.refusals).refused(self.surface, &self.metrics, key, now);
    }

    /// The value, or None (logged at most once a minute) when the database failed.
    fn failed_open<T>(&self, result: DbResult<T>, now: DateTime<Utc>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                let mut last = lock(&self.last_failure_logged);
                if last.is_none_or(|t| now - t >= LOG_EVERY) {
                    tracing::warn!(
                        surface = self.surface,
                        error = %e,
                        "rate limit not counted (database error); requests are let through (one line a minute at most)"
                    );
                    *last = Some(now);
                }
                None
            }
        }
    }

    /// Once every `PRUNE_EVERY` per process, in the background: no request waits.
    fn prune_if_due(&self, now: DateTime<Utc>) {
        {
            let mut last = lock(&self.last_pruned);
            // A clock set back prunes at once rather than waiting for the old time.
            if last.is_some_and(|t| t <= now && now - t < PRUNE_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let (db, surface, per, keep) = (self.db.clone(), self.surface, self.rate.per, self.capacity);
        tokio::spawn(async move {
            if let Err(e) = db
                .write(move |tx| rate_limits::prune(tx, surface, per, keep, now))
                .await
            {
                tracing::warn!(surface, error = %e, "cannot prune rate limit windows");
            }
        });
    }
}

/// Nothing here panics while holding a lock; were one poisoned, what it holds is
/// still good.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key under which an address is limited. An IPv6 client usually holds a whole /64
/// (one customer's prefix): per single address, it would have 2^64 fresh budgets.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn limiter(count: u32, capacity: usize) -> Limiter<u32> {
        Limiter::new(
            "test",
            Rate {
                count,
                per: Duration::minutes(1),
            },
            capacity,
            Arc::new(Metrics::default()),
        )
    }

    #[test]
    fn rates_parse_per_second_minute_and_hour_and_refuse_anything_else() {
        assert_eq!(
            "600/min".parse::<Rate>(),
            Ok(Rate {
                count: 600,
                per: Duration::minutes(1)
            })
        );
        assert_eq!("5/s".parse::<Rate>().map(|r| r.per), Ok(Duration::seconds(1)));
        assert_eq!("5 / hour".parse::<Rate>().map(|r| r.count), Ok(5));
        for bad in ["600", "0/min", "-1/min", "10/day", "x/min", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_request_after_the_limit_is_refused_until_the_window_ends_and_others_are_not() {
        let l = limiter(3, 10);
        for _ in 0..3 {
            assert_eq!(l.hit(1, at(0)), Ok(()));
        }
        assert_eq!(l.hit(1, at(10)), Err(Limited { retry_after: 50 }));
        assert_eq!(l.hit(2, at(10)), Ok(()), "another key has its own window");
        assert_eq!(l.hit(1, at(59)), Err(Limited { retry_after: 1 }));
        assert_eq!(l.hit(1, at(60)), Ok(()), "a new window");
    }

    #[test]
    fn recorded_failures_refuse_the_key_once_they_reach_the_limit() {
        let l = limiter(2, 10);
        assert_eq!(l.check(&7, at(0)), Ok(()));
        l.record(7, at(0));
        assert_eq!(l.check(&7, at(1)), Ok(()));
        l.record(7, at(1));
        assert_eq!(l.check(&7, at(2)), Err(Limited { retry_after: 58 }));
        assert_eq!(l.check(&7, at(60)), Ok(()));
    }

    #[test]
    fn a_full_limiter_forgets_ended_windows_then_the_oldest_and_never_grows_past_its_capacity() {
        let l = limiter(1, 3);
        for key in 0..1000 {
            l.record(key, at(i64::from(key % 50)));
            assert!(l.len() <= 3);
        }
        // The newest keys stay, still refused.
        assert!(l.check(&999, at(49)).is_err());
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_a_key_and_ipv4_ones_do_not() {
        let a = address_key("2001:db8:1:2::1".parse().unwrap());
        let b = address_key("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = address_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            address_key("192.0.2.1".parse().unwrap()),
            address_key("192.0.2.2".parse().unwrap())
        );
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    /// What a test's subscriber writes, to read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stream_of_refusals_is_logged_once_a_minute_with_how_many_each_line_stands_for() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let l = Limiter::new(
                "api",
                Rate {
                    count: 1,
                    per: Duration::hours(1),
                },
                4,
                Arc::new(Metrics::default()),
            );
            assert!(l.hit(1u32, at(0)).is_ok());
            for s in 1..=100 {
                assert!(l.hit(1, at(s)).is_err());
            }
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "at second 1 and second 61: {text}");
        assert!(lines[0].contains("refused=1 "), "{text}");
        assert!(lines[1].contains("refused=60 "), "seconds 2 to 61: {text}");
        assert!(lines[1].contains("surface=\"api\""), "{text}");
    }

    fn sqlite() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(&dir.path().join("kassa.db")).unwrap();
        (dir, db)
    }

    fn in_table(count: u32, db: &Database, metrics: &Arc<Metrics>) -> LimitStore<u32> {
        let rate = Rate {
            count,
            per: Duration::minutes(1),
        };
        LimitStore::in_table("api", rate, 10, metrics.clone(), db)
    }

    #[tokio::test]
    async fn in_the_table_a_limit_refuses_as_in_memory_with_its_retry_after_and_counts_its_refusals() {
        let (_dir, db) = sqlite();
        let metrics = Arc::new(Metrics::default());
        let l = in_table(3, &db, &metrics);
        for _ in 0..3 {
            assert_eq!(l.hit(1, at(0)).await, Ok(()));
        }
        assert_eq!(l.hit(1, at(10)).await, Err(Limited { retry_after: 50 }));
        assert_eq!(l.hit(2, at(10)).await, Ok(()), "another key has its own window");
        assert_eq!(l.hit(1, at(59)).await, Err(Limited { retry_after: 1 }));
        assert_eq!(l.hit(1, at(60)).await, Ok(()), "a new window");

        // Failures: checked without counting, recorded apart.
        assert_eq!(l.check(&7, at(0)).await, Ok(()));
        for s in 0..3 {
            l.record(7, at(s)).await;
        }
        assert_eq!(l.check(&7, at(3)).await, Err(Limited { retry_after: 57 }));
        assert_eq!(l.check(&7, at(60)).await, Ok(()));
        assert!(
            metrics
                .render()
                .contains(r#"kassa_rate_limited_total{surface="api"} 3"#),
            "{}",
            metrics.render()
        );
        // A second limit on the same database (another instance) sees the same windows.
        let other = in_table(3, &db, &metrics);
        assert_eq!(other.check(&7, at(4)).await, Err(Limited { retry_after: 56 }));
    }

    #[tokio::test]
    async fn a_limit_whose_table_fails_lets_every_request_through() {
        let (_dir, db) = sqlite();
        let metrics = Arc::new(Metrics::default());
        let l = in_table(1, &db, &metrics);
        assert_eq!(l.hit(1, at(0)).await, Ok(()));
        assert!(l.hit(1, at(1)).await.is_err());
        l.record(2, at(0)).await;
        assert!(l.check(&2, at(1)).await.is_err());

        crate::db::rate_limits::tests::drop_table(&db).await;

        for s in 2..5 {
            assert_eq!(l.hit(1, at(s)).await, Ok(()));
            l.record(2, at(s)).await;
            assert_eq!(l.check(&2, at(s)).await, Ok(()));
        }
    }

    #[test]
    fn refusals_are_counted_under_their_surface() {
        let metrics = Arc::new(Metrics::default());
        let l = Limiter::new(
            "api",
            Rate {
                count: 1,
                per: Duration::minutes(1),
            },
            4,
            metrics.clone(),
        );
        assert!(l.hit(1u32, at(0)).is_ok());
        assert!(l.hit(1, at(1)).is_err());
        assert!(l.hit(1, at(2)).is_err());
        assert!(
            metrics
                .render()
                .contains(r#"kassa_rate_limited_total{surface="api"} 2"#),
            "{}",
            metrics.render()
        );
    }
}
