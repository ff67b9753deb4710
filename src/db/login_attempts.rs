//! The limiter's state (sign-in passwords, second-factor codes, and passwords typed
//! again to reveal the webhook secret, each under keys of its own): failures per client
//! address and per user name within a window, and a lockout that grows with each one.

use chrono::{DateTime, Duration, Utc};

use super::sql::args;
use super::types::to_millis;
use super::{DbResult, Tx};

/// What a limit is counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Address,
    Username,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Scope::Address => "address",
            Scope::Username => "username",
        }
    }
}

/// How failures turn into lockouts.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures allowed within `window`; the next one locks.
    pub max_failures: i64,
    pub window: Duration,
    /// The first lockout; each further one doubles, up to `max_lockout`.
    pub lockout: Duration,
    pub max_lockout: Duration,
    /// A key quiet this long starts again from the first lockout.
    pub forget_after: Duration,
}

/// Until when `key` is locked, if it is now. In a write transaction that may then
/// count a failure (`record_failure`), the check and the count must be one step, or a
/// burst of attempts sent at once would all pass the check before any is counted. On
/// SQLite the single writer makes them so; on PostgreSQL, at READ COMMITTED, the key is
/// held (a transaction-level advisory lock, as its row may not exist yet) until the
/// transaction ends, and the next attempt on it waits and sees what this one counted.
/// Callers take their keys in one order (user name, then address).
pub fn locked_until(
    tx: &Tx<'_>,
    scope: Scope,
    key: &str,
    now: DateTime<Utc>,
) -> DbResult<Option<DateTime<Utc>>> {
    if tx.is_postgres() {
        tx.exec(
            "SELECT pg_advisory_xact_lock(hashtext('kassa-login:' || current_schema() || ':' || ?1 || ':' || ?2))",
            args![scope.as_str(), key],
        )?;
    }
    tx.opt(
        "SELECT locked_until FROM login_attempts WHERE scope = ?1 AND key = ?2 AND locked_until > ?3",
        args![scope.as_str(), key, to_millis(now)],
        |r| r.get_time(0),
    )
}

/// Counts a failure; returns the end of the lockout it started, if it started one.
pub fn record_failure(
    tx: &Tx<'_>,
    scope: Scope,
    key: &str,
    now: DateTime<Utc>,
    policy: &Policy,
) -> DbResult<Option<DateTime<Utc>>> {
    let at = to_millis(now);
    let (failures, lockouts) = tx.one(
        "INSERT INTO login_attempts (scope, key, failures, window_start, lockouts, updated_at) \
         VALUES (?1, ?2, 1, ?3, 0, ?3) \
         ON CONFLICT (scope, key) DO UPDATE SET \
             lockouts = CASE WHEN login_attempts.updated_at <= ?3 - ?5 THEN 0 ELSE login_attempts.lockouts END, \
             failures = CASE WHEN login_attempts.window_start <= ?3 - ?4 THEN 1 ELSE login_attempts.failures + 1 END, \
             window_start = CASE WHEN login_attempts.window_start <= ?3 - ?4 THEN ?3 ELSE login_attempts.window_start END, \
             updated_at = ?3 \
         RETURNING failures, lockouts",
        args![
            scope.as_str(),
            key,
            at,
            policy.window.num_milliseconds(),
            policy.forget_after.num_milliseconds()
        ],
        |r| Ok((r.get_i64(0)?, r.get_i64(1)?)),
    )?;
    if failures < policy.max_failures {
        return Ok(None);
    }
    // 1, 2, 4, 8 … times the first lockout.
    let factor = 1_i64 << lockouts.clamp(0, 20);
    let length = policy
        .lockout
        .checked_mul(factor as i32)
        .unwrap_or(policy.max_lockout)
        .min(policy.max_lockout);
    let until = now + length;
    tx.exec(
        "UPDATE login_attempts SET failures = 0, window_start = ?3, lockouts = lockouts + 1, locked_until = ?4 \
         WHERE scope = ?1 AND key = ?2",
        args![scope.as_str(), key, at, to_millis(until)],
    )?;
    Ok(Some(until))
}

/// Forgets a key's failures (after a successful sign-in).
pub fn clear(tx: &Tx<'_>, scope: Scope, key: &str) -> DbResult<()> {
    tx.exec(
        "DELETE FROM login_attempts WHERE scope = ?1 AND key = ?2",
        args![scope.as_str(), key],
    )?;
    Ok(())
}

/// Deletes keys quiet for `forget_after` and not locked.
pub fn prune(tx: &Tx<'_>, now: DateTime<Utc>, forget_after: Duration) -> DbResult<usize> {
    let at = to_millis(now);
    tx.exec(
        "DELETE FROM login_attempts WHERE updated_at <= ?1 AND (locked_until IS NULL OR locked_until <= ?2)",
        args![at - forget_after.num_milliseconds(), at],
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::super::sql::tests::database;
    use super::*;

    /// `(failures, window_start, lockouts, updated_at)` of the key, times in seconds
    /// since `t0`.
    fn state(db: &super::super::Offline, t0: DateTime<Utc>) -> (i64, i64, i64, i64) {
        let s = |ms: i64| (ms - to_millis(t0)) / 1000;
        db.read(|tx| {
            tx.one(
                "SELECT failures, window_start, lockouts, updated_at FROM login_attempts WHERE key = 'ann'",
                args![],
                |r| Ok((r.get_i64(0)?, s(r.get_i64(1)?), r.get_i64(2)?, s(r.get_i64(3)?))),
            )
        })
        .unwrap()
    }

    #[test]
    fn a_failure_counts_within_the_window_restarts_it_after_and_a_quiet_key_forgets_its_lockouts() {
        let (_dir, mut db) = database();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let policy = Policy {
            max_failures: 3,
            window: Duration::seconds(60),
            lockout: Duration::seconds(10),
            max_lockout: Duration::seconds(1000),
            forget_after: Duration::seconds(500),
        };
        let mut fail = |s: i64| {
            db.immediate(|tx| record_failure(tx, Scope::Username, "ann", t0 + Duration::seconds(s), &policy))
                .unwrap()
        };
        assert_eq!(fail(0), None);
        assert_eq!(fail(30), None);
        // Past the window: counting starts again from this failure.
        assert_eq!(fail(70), None);
        assert_eq!(fail(80), None);
        assert_eq!(fail(90), Some(t0 + Duration::seconds(100)));
        assert_eq!(fail(100), None);
        assert_eq!(fail(110), None);
        // The second lockout in a row is twice as long.
        assert_eq!(fail(120), Some(t0 + Duration::seconds(140)));
        assert_eq!(state(&db, t0), (0, 120, 2, 120));
        let mut fail = |s: i64| {
            db.immediate(|tx| record_failure(tx, Scope::Username, "ann", t0 + Duration::seconds(s), &policy))
                .unwrap()
        };
        // Quiet for `forget_after`: the lockouts are forgotten, the next lockout is the first one.
        assert_eq!(fail(620), None);
        assert_eq!(state(&db, t0), (1, 620, 0, 620));
    }
}
