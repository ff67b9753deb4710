//! Staff users of the admin dashboard. Passwords are stored as argon2id PHC strings.

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, Row};

use super::types::{from_millis, opt_from_millis, text_column, to_millis};
use super::{DbResult, Tx};
use crate::domain::admin::Role;

text_column!(Role => as_str);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub password_changed_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
    /// The confirmed second-factor secret (base32); `None`: no second factor.
    pub totp_secret: Option<String>,
    /// An enrolment begun, not yet confirmed with a code.
    pub totp_pending_secret: Option<String>,
    pub totp_enabled_at: Option<DateTime<Utc>>,
    /// The step of the last code accepted: codes of it and before are refused.
    pub totp_last_step: Option<i64>,
}

pub(super) const COLUMNS: &str =
    "u.id, u.username, u.password_hash, u.role, u.created_at, u.password_changed_at, u.disabled_at, \
     u.totp_secret, u.totp_pending_secret, u.totp_enabled_at, u.totp_last_step";

/// Reads the user from `COLUMNS`, starting at column `at`.
pub(super) fn from_row_at(r: &Row<'_>, at: usize) -> rusqlite::Result<AdminUser> {
    Ok(AdminUser {
        id: r.get(at)?,
        username: r.get(at + 1)?,
        password_hash: r.get(at + 2)?,
        role: r.get(at + 3)?,
        created_at: from_millis(r.get(at + 4)?)?,
        password_changed_at: from_millis(r.get(at + 5)?)?,
        disabled_at: opt_from_millis(r.get(at + 6)?)?,
        totp_secret: r.get(at + 7)?,
        totp_pending_secret: r.get(at + 8)?,
        totp_enabled_at: opt_from_millis(r.get(at + 9)?)?,
        totp_last_step: r.get(at + 10)?,
    })
}

/// `None` when the name is taken.
pub fn insert(
    tx: &Tx<'_>,
    username: &str,
    password_hash: &str,
    role: Role,
    now: DateTime<Utc>,
) -> DbResult<Option<i64>> {
    Ok(tx
        .conn
        .prepare_cached(
            "INSERT INTO admin_users (username, password_hash, role, created_at, password_changed_at) \
             VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (username) DO NOTHING RETURNING id",
        )?
        .query_row(params![username, password_hash, role, to_millis(now)], |r| {
            r.get(0)
        })
        .optional()?)
}

pub fn count(tx: &Tx<'_>) -> DbResult<i64> {
    Ok(tx
        .conn
        .prepare_cached("SELECT COUNT(*) FROM admin_users")?
        .query_row([], |r| r.get(0))?)
}

pub fn find_by_username(tx: &Tx<'_>, username: &str) -> DbResult<Option<AdminUser>> {
    let sql = format!("SELECT {COLUMNS} FROM admin_users u WHERE u.username = ?1");
    Ok(tx
        .conn
        .prepare_cached(&sql)?
        .query_row([username], |r| from_row_at(r, 0))
        .optional()?)
}

/// Sets a new password hash and ends the user's sessions, except `keep` (the session
/// of a user changing their own password), and their pending sign-ins (the old password
/// let them in). False when there is no such user.
pub fn set_password(
    tx: &Tx<'_>,
    username: &str,
    password_hash: &str,
    now: DateTime<Utc>,
    keep: Option<&[u8]>,
) -> DbResult<bool> {
    let id: Option<i64> = tx
        .conn
        .prepare_cached(
            "UPDATE admin_users SET password_hash = ?2, password_changed_at = ?3 WHERE username = ?1 RETURNING id",
        )?
        .query_row(params![username, password_hash, to_millis(now)], |r| r.get(0))
        .optional()?;
    let Some(id) = id else {
        return Ok(false);
    };
    tx.conn
        .prepare_cached("DELETE FROM admin_sessions WHERE user_id = ?1 AND id_hash IS NOT ?2")?
        .execute(params![id, keep])?;
    delete_pending_logins(tx, id)?;
    Ok(true)
}

/// Deletes a user's sign-ins waiting for a second factor.
fn delete_pending_logins(tx: &Tx<'_>, user_id: i64) -> DbResult<()> {
    tx.conn
        .prepare_cached("DELETE FROM admin_pending_logins WHERE user_id = ?1")?
        .execute([user_id])?;
    Ok(())
}

/// Changes a user's role (the command line and the users page of a later part).
pub fn set_role(tx: &Tx<'_>, username: &str, role: Role) -> DbResult<bool> {
    let n = tx
        .conn
        .prepare_cached("UPDATE admin_users SET role = ?2 WHERE username = ?1")?
        .execute(params![username, role])?;
    Ok(n == 1)
}

/// Every user, by name.
pub fn list(tx: &Tx<'_>) -> DbResult<Vec<AdminUser>> {
    let sql = format!("SELECT {COLUMNS} FROM admin_users u ORDER BY u.username");
    let mut stmt = tx.conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], |r| from_row_at(r, 0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Owners who can still sign in.
pub fn count_active_owners(tx: &Tx<'_>) -> DbResult<i64> {
    Ok(tx
        .conn
        .prepare_cached("SELECT COUNT(*) FROM admin_users WHERE role = 'owner' AND disabled_at IS NULL")?
        .query_row([], |r| r.get(0))?)
}

/// Deletes a user with their sessions, pending sign-ins and recovery codes (the audit
/// log keeps their name). False when there is no such user.
pub fn delete(tx: &Tx<'_>, username: &str) -> DbResult<bool> {
    let Some(user) = find_by_username(tx, username)? else {
        return Ok(false);
    };
    for table in ["admin_sessions", "admin_pending_logins", "admin_recovery_codes"] {
        tx.conn
            .prepare_cached(&format!("DELETE FROM {table} WHERE user_id = ?1"))?
            .execute([user.id])?;
    }
    tx.conn
        .prepare_cached("DELETE FROM admin_users WHERE id = ?1")?
        .execute([user.id])?;
    Ok(true)
}

/// Starts (or restarts) an enrolment with `secret`, to be confirmed by a code.
pub fn set_pending_totp(tx: &Tx<'_>, user_id: i64, secret: &str) -> DbResult<()> {
    tx.conn
        .prepare_cached("UPDATE admin_users SET totp_pending_secret = ?2 WHERE id = ?1")?
        .execute(params![user_id, secret])?;
    Ok(())
}

/// Confirms the pending enrolment (the code of `step` matched it): the pending secret
/// becomes the user's, with new recovery codes (their hashes) replacing any old ones,
/// and the user's sessions other than `keep` end (they were opened by the password
/// alone). False when the pending secret changed meanwhile.
pub fn enable_totp(
    tx: &Tx<'_>,
    user_id: i64,
    secret: &str,
    step: i64,
    recovery_hashes: &[Vec<u8>],
    now: DateTime<Utc>,
    keep: &[u8],
) -> DbResult<bool> {
    let n = tx
        .conn
        .prepare_cached(
            "UPDATE admin_users SET totp_secret = ?2, totp_pending_secret = NULL, totp_enabled_at = ?3, totp_last_step = ?4 \
             WHERE id = ?1 AND totp_pending_secret = ?2",
        )?
        .execute(params![user_id, secret, to_millis(now), step])?;
    if n != 1 {
        return Ok(false);
    }
    tx.conn
        .prepare_cached("DELETE FROM admin_recovery_codes WHERE user_id = ?1")?
        .execute([user_id])?;
    let mut insert = tx
        .conn
        .prepare_cached("INSERT INTO admin_recovery_codes (user_id, code_hash) VALUES (?1, ?2)")?;
    for hash in recovery_hashes {
        insert.execute(params![user_id, hash])?;
    }
    tx.conn
        .prepare_cached("DELETE FROM admin_sessions WHERE user_id = ?1 AND id_hash IS NOT ?2")?
        .execute(params![user_id, keep])?;
    delete_pending_logins(tx, user_id)?;
    Ok(true)
}

/// Turns the second factor off (an owner resetting a user who lost their device), and
/// drops the user's sign-ins waiting for a code of the old secret.
pub fn disable_totp(tx: &Tx<'_>, user_id: i64) -> DbResult<()> {
    tx.conn
        .prepare_cached(
            "UPDATE admin_users SET totp_secret = NULL, totp_pending_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL WHERE id = ?1",
        )?
        .execute([user_id])?;
    tx.conn
        .prepare_cached("DELETE FROM admin_recovery_codes WHERE user_id = ?1")?
        .execute([user_id])?;
    delete_pending_logins(tx, user_id)?;
    Ok(())
}

/// Records the step of an accepted code, only if it is later than the last one: two
/// sign-ins racing with one code cannot both pass. True when recorded.
pub fn use_totp_step(tx: &Tx<'_>, user_id: i64, step: i64) -> DbResult<bool> {
    let n = tx
        .conn
        .prepare_cached(
            "UPDATE admin_users SET totp_last_step = ?2 WHERE id = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
        )?
        .execute(params![user_id, step])?;
    Ok(n == 1)
}

/// Uses up a recovery code. True when it was one of the user's and unused.
pub fn use_recovery_code(tx: &Tx<'_>, user_id: i64, hash: &[u8], now: DateTime<Utc>) -> DbResult<bool> {
    let n = tx
        .conn
        .prepare_cached(
            "UPDATE admin_recovery_codes SET used_at = ?3 WHERE user_id = ?1 AND code_hash = ?2 AND used_at IS NULL",
        )?
        .execute(params![user_id, hash, to_millis(now)])?;
    Ok(n == 1)
}

/// Recovery codes not used yet.
pub fn recovery_codes_left(tx: &Tx<'_>, user_id: i64) -> DbResult<i64> {
    Ok(tx
        .conn
        .prepare_cached("SELECT COUNT(*) FROM admin_recovery_codes WHERE user_id = ?1 AND used_at IS NULL")?
        .query_row([user_id], |r| r.get(0))?)
}

/// A dashboard setting (`admin_settings`).
pub fn setting(tx: &Tx<'_>, name: &str) -> DbResult<Option<String>> {
    Ok(tx
        .conn
        .prepare_cached("SELECT value FROM admin_settings WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}

pub fn set_setting(tx: &Tx<'_>, name: &str, value: &str) -> DbResult<()> {
    tx.conn
        .prepare_cached(
            "INSERT INTO admin_settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
        )?
        .execute(params![name, value])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::types::tests::{round_trip, stored};
    use super::*;

    #[test]
    fn every_role_round_trips_and_keeps_its_stored_text() {
        round_trip(&Role::ALL);
        let texts: Vec<String> = Role::ALL.iter().map(stored).collect();
        assert_eq!(texts, ["owner", "operator", "viewer"]);
    }
}
