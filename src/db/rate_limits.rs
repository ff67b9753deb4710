//! Rate limit windows in the `rate_limits` table: one fixed window per surface and key,
//! for limits that every instance on one database must count together. Only used where
//! `shared` says so (PostgreSQL); on SQLite one process is the whole deployment and
//! counts in memory (`service::rate_limit`), without a write per request.

use chrono::{DateTime, Duration, Utc};

use super::sql::args;
use super::types::to_millis;
use super::{Backend, Database, DbResult, Tx};

/// One key's window as it stands: opened at `start`, with `count` events in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub count: i64,
}

/// True when other processes may serve from this database (PostgreSQL), so a limit
/// counted in one process's memory would allow each of them its own budget. On SQLite
/// the server's lock keeps the file to one process.
pub fn shared(db: &Database) -> bool {
    matches!(db.backend, Backend::Postgres(_))
}

/// Counts one event of `key` in `surface` and returns the window after it. A window
/// that began `per` or longer before `now` has ended: the event opens a new one. The
/// count stops at `limit + 1`, so a count above `limit` says "refused" and a flood of
/// refused requests does not grow it. One statement, whoever else counts at once.
pub fn hit(
    tx: &Tx<'_>,
    surface: &str,
    key: &str,
    per: Duration,
    limit: i64,
    now: DateTime<Utc>,
) -> DbResult<Window> {
    tx.one(
        "INSERT INTO rate_limits (surface, key, window_start, count) VALUES (?1, ?2, ?3, 1) \
         ON CONFLICT (surface, key) DO UPDATE SET \
             count = CASE WHEN rate_limits.window_start <= ?3 - CAST(?4 AS BIGINT) THEN 1 \
                 WHEN rate_limits.count > ?5 THEN rate_limits.count ELSE rate_limits.count + 1 END, \
             window_start = CASE WHEN rate_limits.window_start <= ?3 - CAST(?4 AS BIGINT) THEN ?3 \
                 ELSE rate_limits.window_start END \
         RETURNING window_start, count",
        args![surface, key, to_millis(now), per.num_milliseconds(), limit],
        |r| {
            Ok(Window {
                start: r.get_time(0)?,
                count: r.get_i64(1)?,
            })
        },
    )
}

/// The window of `key` in `surface`, if one is still open at `now`.
pub fn find(
    tx: &Tx<'_>,
    surface: &str,
    key: &str,
    per: Duration,
    now: DateTime<Utc>,
) -> DbResult<Option<Window>> {
    tx.opt(
        "SELECT window_start, count FROM rate_limits \
         WHERE surface = ?1 AND key = ?2 AND window_start > ?3",
        args![surface, key, to_millis(now - per)],
        |r| {
            Ok(Window {
                start: r.get_time(0)?,
                count: r.get_i64(1)?,
            })
        },
    )
}

/// Forgets the windows of `surface` that have ended, then, past `keep` windows, the
/// oldest: strangers choose the keys (their addresses), so the table must stay bounded
/// whatever they send, at worst letting an old key start over. Returns how many rows
/// went.
pub fn prune(tx: &Tx<'_>, surface: &str, per: Duration, keep: usize, now: DateTime<Utc>) -> DbResult<usize> {
    let ended = tx.exec(
        "DELETE FROM rate_limits WHERE surface = ?1 AND window_start <= ?2",
        args![surface, to_millis(now - per)],
    )?;
    // Older than the newest `keep` (those opened in the same millisecond as the last
    // one kept stay too).
    // At least one is kept.
    let newest_kept = i64::try_from(keep.max(1) - 1).unwrap_or(i64::MAX);
    let over = tx.exec(
        "DELETE FROM rate_limits WHERE surface = ?1 AND window_start < \
             (SELECT window_start FROM rate_limits WHERE surface = ?1 \
              ORDER BY window_start DESC LIMIT 1 OFFSET ?2)",
        args![surface, newest_kept],
    )?;
    Ok(ended + over)
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::db::pg::testing::{both_backends, TestSchema, SKIPPED};

    fn at(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + Duration::seconds(s)
    }

    const MINUTE: Duration = Duration::minutes(1);

    fn count(db: &Database, surface: &'static str, key: &'static str, now: DateTime<Utc>) -> i64 {
        db.write_blocking(move |tx| hit(tx, surface, key, MINUTE, 3, now))
            .unwrap()
            .count
    }

    fn rows(db: &Database) -> Vec<(String, String, i64)> {
        db.read_blocking(|tx| {
            tx.all(
                "SELECT surface, key, window_start FROM rate_limits ORDER BY surface, key",
                args![],
                |r| Ok((r.get_string(0)?, r.get_string(1)?, r.get_i64(2)?)),
            )
        })
        .unwrap()
    }

    both_backends! {
        fn a_window_counts_to_one_past_its_limit_and_starts_again_once_it_has_ended(db: &Database) {
            let counts: Vec<i64> = (0..6).map(|s| count(db, "api", "7", at(s))).collect();
            assert_eq!(counts, [1, 2, 3, 4, 4, 4]);
            assert_eq!(count(db, "api", "8", at(6)), 1, "another key has its own window");
            assert_eq!(count(db, "notify", "7", at(6)), 1, "another surface has its own");
            let open = db.read_blocking(|tx| find(tx, "api", "7", MINUTE, at(59))).unwrap();
            assert_eq!(open, Some(Window { start: at(0), count: 4 }));

            // A minute after the window opened it has ended: nothing found, a new one.
            assert_eq!(db.read_blocking(|tx| find(tx, "api", "7", MINUTE, at(60))).unwrap(), None);
            assert_eq!(count(db, "api", "7", at(60)), 1);
            let open = db.read_blocking(|tx| find(tx, "api", "7", MINUTE, at(61))).unwrap();
            assert_eq!(open, Some(Window { start: at(60), count: 1 }));
        }

        fn pruning_forgets_ended_windows_then_the_oldest_past_the_bound_of_one_surface_only(db: &Database) {
            count(db, "api", "old", at(0));
            for (s, key) in [(30, "a"), (31, "b"), (32, "c"), (33, "d")] {
                count(db, "api", key, at(s));
            }
            count(db, "notify", "old", at(0));

            let gone = db.write_blocking(|tx| prune(tx, "api", MINUTE, 2, at(61))).unwrap();

            assert_eq!(gone, 3, "old (ended), then a and b (the oldest past 2)");
            let start = |s| to_millis(at(s));
            assert_eq!(
                rows(db),
                [
                    ("api".to_owned(), "c".to_owned(), start(32)),
                    ("api".to_owned(), "d".to_owned(), start(33)),
                    ("notify".to_owned(), "old".to_owned(), start(0)),
                ]
            );
            // Within the bound, nothing more goes.
            assert_eq!(db.write_blocking(|tx| prune(tx, "api", MINUTE, 2, at(62))).unwrap(), 0);
            assert_eq!(db.write_blocking(|tx| prune(tx, "api", MINUTE, 1, at(62))).unwrap(), 1);
        }
    }

    /// Two instances on one schema count into the same windows.
    #[test]
    fn two_instances_on_one_database_count_together() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let a = Database::open_target(&schema.target()).unwrap();
        let b = Database::open_target(&schema.target()).unwrap();
        assert!(shared(&a) && shared(&b));
        let counts: Vec<i64> = [&a, &b, &a, &b, &a]
            .into_iter()
            .map(|db| count(db, "api", "7", at(1)))
            .collect();
        assert_eq!(counts, [1, 2, 3, 4, 4]);
        let seen = b.read_blocking(|tx| find(tx, "api", "7", MINUTE, at(2))).unwrap();
        assert_eq!(
            seen,
            Some(Window {
                start: at(1),
                count: 4
            })
        );
        drop((a, b));
    }

    /// Drops the table under a running server, so that every statement on it fails.
    pub(crate) async fn drop_table(db: &Database) {
        db.write(|tx| tx.exec("DROP TABLE rate_limits", args![]))
            .await
            .unwrap();
    }

    #[test]
    fn only_a_database_others_may_share_counts_in_the_table() {
        let (_dir, db) = crate::db::pg::testing::sqlite_database();
        assert!(!shared(&db));
    }
}
