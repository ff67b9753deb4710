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
}

pub(super) const COLUMNS: &str =
    "u.id, u.username, u.password_hash, u.role, u.created_at, u.password_changed_at, u.disabled_at";

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
/// of a user changing their own password). False when there is no such user.
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
    Ok(true)
}

/// Changes a user's role (the command line and the users page of a later part).
pub fn set_role(tx: &Tx<'_>, username: &str, role: Role) -> DbResult<bool> {
    let n = tx
        .conn
        .prepare_cached("UPDATE admin_users SET role = ?2 WHERE username = ?1")?
        .execute(params![username, role])?;
    Ok(n == 1)
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
