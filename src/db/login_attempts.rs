//! The limiter's state (sign-in passwords, second-factor codes, and passwords typed
//! again to reveal the webhook secret, each under keys of its own): failures per client
//! address and per user name within a window, and a lockout that grows with each one.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{params, OptionalExtension};

use super::types::{from_millis, to_millis};
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

/// Until when `key` is locked, if it is now.
pub fn locked_until(
    tx: &Tx<'_>,
    scope: Scope,
    key: &str,
    now: DateTime<Utc>,
) -> DbResult<Option<DateTime<Utc>>> {
    let until: Option<i64> = tx
        .conn
        .prepare_cached(
            "SELECT locked_until FROM login_attempts WHERE scope = ?1 AND key = ?2 AND locked_until > ?3",
        )?
        .query_row(params![scope.as_str(), key, to_millis(now)], |r| r.get(0))
        .optional()?;
    Ok(until.map(from_millis).transpose()?)
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
    let (failures, lockouts): (i64, i64) = tx
        .conn
        .prepare_cached(
            "INSERT INTO login_attempts (scope, key, failures, window_start, lockouts, updated_at) \
             VALUES (?1, ?2, 1, ?3, 0, ?3) \
             ON CONFLICT (scope, key) DO UPDATE SET \
                 lockouts = CASE WHEN updated_at <= ?3 - ?5 THEN 0 ELSE lockouts END, \
                 failures = CASE WHEN window_start <= ?3 - ?4 THEN 1 ELSE failures + 1 END, \
                 window_start = CASE WHEN window_start <= ?3 - ?4 THEN ?3 ELSE window_start END, \
                 updated_at = ?3 \
             RETURNING failures, lockouts",
        )?
        .query_row(
            params![
                scope.as_str(),
                key,
                at,
                policy.window.num_milliseconds(),
                policy.forget_after.num_milliseconds()
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
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
    tx.conn
        .prepare_cached(
            "UPDATE login_attempts SET failures = 0, window_start = ?3, lockouts = lockouts + 1, locked_until = ?4 \
             WHERE scope = ?1 AND key = ?2",
        )?
        .execute(params![scope.as_str(), key, at, to_millis(until)])?;
    Ok(Some(until))
}

/// Forgets a key's failures (after a successful sign-in).
pub fn clear(tx: &Tx<'_>, scope: Scope, key: &str) -> DbResult<()> {
    tx.conn
        .prepare_cached("DELETE FROM login_attempts WHERE scope = ?1 AND key = ?2")?
        .execute(params![scope.as_str(), key])?;
    Ok(())
}

/// Deletes keys quiet for `forget_after` and not locked.
pub fn prune(tx: &Tx<'_>, now: DateTime<Utc>, forget_after: Duration) -> DbResult<usize> {
    let at = to_millis(now);
    Ok(tx
        .conn
        .prepare_cached(
            "DELETE FROM login_attempts WHERE updated_at <= ?1 AND (locked_until IS NULL OR locked_until <= ?2)",
        )?
        .execute(params![at - forget_after.num_milliseconds(), at])?)
}
