//! Server-side sessions of the admin dashboard, looked up by the SHA-256 of the id the
//! cookie carries.

use chrono::{DateTime, Duration, Utc};

use super::admin_users::{self, AdminUser};
use super::sql::args;
use super::types::to_millis;
use super::{DbResult, Tx};

pub struct NewSession<'a> {
    pub id_hash: &'a [u8],
    pub user_id: i64,
    pub csrf_token: &'a str,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub remote_addr: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

pub fn insert(tx: &Tx<'_>, s: &NewSession<'_>) -> DbResult<()> {
    tx.exec(
        "INSERT INTO admin_sessions (id_hash, user_id, csrf_token, created_at, last_seen_at, expires_at, remote_addr, user_agent) \
         VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7)",
        args![
            s.id_hash,
            s.user_id,
            s.csrf_token,
            to_millis(s.now),
            to_millis(s.expires_at),
            s.remote_addr,
            s.user_agent
        ],
    )?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub user: AdminUser,
}

pub fn find(tx: &Tx<'_>, id_hash: &[u8]) -> DbResult<Option<Session>> {
    let sql = format!(
        "SELECT s.csrf_token, s.created_at, s.last_seen_at, s.expires_at, {} \
         FROM admin_sessions s JOIN admin_users u ON u.id = s.user_id WHERE s.id_hash = ?1",
        admin_users::COLUMNS
    );
    tx.opt(&sql, args![id_hash], |r| {
        Ok(Session {
            csrf_token: r.get_string(0)?,
            created_at: r.get_time(1)?,
            last_seen_at: r.get_time(2)?,
            expires_at: r.get_time(3)?,
            user: admin_users::from_row_at(r, 4)?,
        })
    })
}

pub fn touch(tx: &Tx<'_>, id_hash: &[u8], now: DateTime<Utc>) -> DbResult<()> {
    tx.exec(
        "UPDATE admin_sessions SET last_seen_at = ?2 WHERE id_hash = ?1",
        args![id_hash, to_millis(now)],
    )?;
    Ok(())
}

/// True when there was such a session.
pub fn delete(tx: &Tx<'_>, id_hash: &[u8]) -> DbResult<bool> {
    let n = tx.exec("DELETE FROM admin_sessions WHERE id_hash = ?1", args![id_hash])?;
    Ok(n == 1)
}

/// Deletes every session past its lifetime or idle for `idle`; returns how many.
pub fn delete_expired(tx: &Tx<'_>, now: DateTime<Utc>, idle: Duration) -> DbResult<usize> {
    let at = to_millis(now);
    tx.exec(
        "DELETE FROM admin_sessions WHERE expires_at <= ?1 OR last_seen_at <= ?2",
        args![at, at - idle.num_milliseconds()],
    )
}

/// Sessions of a user (for tests and the users page of a later part).
pub fn count_for_user(tx: &Tx<'_>, username: &str) -> DbResult<i64> {
    tx.one(
        "SELECT COUNT(*) FROM admin_sessions s JOIN admin_users u ON u.id = s.user_id WHERE u.username = ?1",
        args![username],
        |r| r.get_i64(0),
    )
}

/// A sign-in waiting for its second factor.
pub struct NewPending<'a> {
    pub id_hash: &'a [u8],
    pub user_id: i64,
    pub csrf_token: &'a str,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub next: &'a str,
    pub remote_addr: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

pub fn insert_pending(tx: &Tx<'_>, p: &NewPending<'_>) -> DbResult<()> {
    tx.exec(
        "DELETE FROM admin_pending_logins WHERE expires_at <= ?1",
        args![to_millis(p.now)],
    )?;
    tx.exec(
        "INSERT INTO admin_pending_logins (id_hash, user_id, csrf_token, created_at, expires_at, next, remote_addr, user_agent) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        args![
            p.id_hash,
            p.user_id,
            p.csrf_token,
            to_millis(p.now),
            to_millis(p.expires_at),
            p.next,
            p.remote_addr,
            p.user_agent
        ],
    )?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Pending {
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
    pub next: String,
    pub user_agent: Option<String>,
    pub user: AdminUser,
}

pub fn find_pending(tx: &Tx<'_>, id_hash: &[u8]) -> DbResult<Option<Pending>> {
    let sql = format!(
        "SELECT p.csrf_token, p.expires_at, p.next, p.user_agent, {} \
         FROM admin_pending_logins p JOIN admin_users u ON u.id = p.user_id WHERE p.id_hash = ?1",
        admin_users::COLUMNS
    );
    tx.opt(&sql, args![id_hash], |r| {
        Ok(Pending {
            csrf_token: r.get_string(0)?,
            expires_at: r.get_time(1)?,
            next: r.get_string(2)?,
            user_agent: r.get_opt_string(3)?,
            user: admin_users::from_row_at(r, 4)?,
        })
    })
}

pub fn delete_pending(tx: &Tx<'_>, id_hash: &[u8]) -> DbResult<bool> {
    let n = tx.exec(
        "DELETE FROM admin_pending_logins WHERE id_hash = ?1",
        args![id_hash],
    )?;
    Ok(n == 1)
}
