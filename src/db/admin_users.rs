//! Staff users of the admin dashboard. Passwords are stored as argon2id PHC strings.

use chrono::{DateTime, Utc};

use super::sql::{args, Row};
use super::types::{text_column, to_millis};
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
pub(super) fn from_row_at(r: &Row<'_>, at: usize) -> DbResult<AdminUser> {
    Ok(AdminUser {
        id: r.get_i64(at)?,
        username: r.get_string(at + 1)?,
        password_hash: r.get_string(at + 2)?,
        role: r.parse(at + 3)?,
        created_at: r.get_time(at + 4)?,
        password_changed_at: r.get_time(at + 5)?,
        disabled_at: r.get_opt_time(at + 6)?,
        totp_secret: r.get_opt_string(at + 7)?,
        totp_pending_secret: r.get_opt_string(at + 8)?,
        totp_enabled_at: r.get_opt_time(at + 9)?,
        totp_last_step: r.get_opt_i64(at + 10)?,
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
    tx.opt(
        "INSERT INTO admin_users (username, password_hash, role, created_at, password_changed_at) \
         VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (username) DO NOTHING RETURNING id",
        args![username, password_hash, role, to_millis(now)],
        |r| r.get_i64(0),
    )
}

/// Creates `username` as the first user, an owner, with its audit row, unless any user
/// exists; true when it did. Instances starting together each call it: the bootstrap
/// lock (`leases::bootstrap`) makes the second wait for the first and then find its
/// user, where at READ COMMITTED both would count none and, under different names, both
/// create an owner (and, under one name, the second would still write an audit row for
/// a user it did not create).
pub fn create_first(tx: &Tx<'_>, username: &str, password_hash: &str, now: DateTime<Utc>) -> DbResult<bool> {
    super::leases::bootstrap(tx)?;
    if count(tx)? > 0 {
        return Ok(false);
    }
    if insert(tx, username, password_hash, Role::Owner, now)?.is_none() {
        return Ok(false);
    }
    super::audit::insert(
        tx,
        &super::audit::NewAudit {
            at: now,
            actor: "kassa",
            action: "user.create",
            order_id: None,
            reason: Some("first start"),
            remote_addr: None,
            outcome: "done",
            detail: Some(username),
        },
    )?;
    Ok(true)
}

pub fn count(tx: &Tx<'_>) -> DbResult<i64> {
    tx.one("SELECT COUNT(*) FROM admin_users", args![], |r| r.get_i64(0))
}

pub fn find_by_username(tx: &Tx<'_>, username: &str) -> DbResult<Option<AdminUser>> {
    let sql = format!("SELECT {COLUMNS} FROM admin_users u WHERE u.username = ?1");
    tx.opt(&sql, args![username], |r| from_row_at(r, 0))
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
    let id = tx.opt(
        "UPDATE admin_users SET password_hash = ?2, password_changed_at = ?3 WHERE username = ?1 RETURNING id",
        args![username, password_hash, to_millis(now)],
        |r| r.get_i64(0),
    )?;
    let Some(id) = id else {
        return Ok(false);
    };
    tx.exec(
        "DELETE FROM admin_sessions WHERE user_id = ?1 AND id_hash IS DISTINCT FROM ?2",
        args![id, keep],
    )?;
    delete_pending_logins(tx, id)?;
    Ok(true)
}

/// Deletes a user's sign-ins waiting for a second factor.
fn delete_pending_logins(tx: &Tx<'_>, user_id: i64) -> DbResult<()> {
    tx.exec(
        "DELETE FROM admin_pending_logins WHERE user_id = ?1",
        args![user_id],
    )?;
    Ok(())
}

/// Changes a user's role (the command line and the users page of a later part).
pub fn set_role(tx: &Tx<'_>, username: &str, role: Role) -> DbResult<bool> {
    let n = tx.exec(
        "UPDATE admin_users SET role = ?2 WHERE username = ?1",
        args![username, role],
    )?;
    Ok(n == 1)
}

/// Every user, by name.
pub fn list(tx: &Tx<'_>) -> DbResult<Vec<AdminUser>> {
    let sql = format!("SELECT {COLUMNS} FROM admin_users u ORDER BY u.username");
    tx.all(&sql, args![], |r| from_row_at(r, 0))
}

/// Owners who can still sign in, for the last-owner check of a write that then demotes
/// or deletes one of them in the same transaction. On SQLite the single writer runs one
/// such write at a time. On PostgreSQL two of them at READ COMMITTED would both count
/// two owners and both pass, leaving none: the owner rows are locked (in id order, so
/// two checks never deadlock), and a second check waits for the first write to commit,
/// then counts the rows as it left them. So only a write may call it there.
pub fn count_active_owners(tx: &Tx<'_>) -> DbResult<i64> {
    if tx.is_postgres() {
        let owners = tx.all(
            "SELECT id FROM admin_users WHERE role = 'owner' AND disabled_at IS NULL ORDER BY id FOR UPDATE",
            args![],
            |r| r.get_i64(0),
        )?;
        return Ok(owners.len() as i64);
    }
    tx.one(
        "SELECT COUNT(*) FROM admin_users WHERE role = 'owner' AND disabled_at IS NULL",
        args![],
        |r| r.get_i64(0),
    )
}

/// Deletes a user with their sessions, pending sign-ins and recovery codes (the audit
/// log keeps their name). False when there is no such user.
pub fn delete(tx: &Tx<'_>, username: &str) -> DbResult<bool> {
    let Some(user) = find_by_username(tx, username)? else {
        return Ok(false);
    };
    for table in ["admin_sessions", "admin_pending_logins", "admin_recovery_codes"] {
        tx.exec(&format!("DELETE FROM {table} WHERE user_id = ?1"), args![user.id])?;
    }
    tx.exec("DELETE FROM admin_users WHERE id = ?1", args![user.id])?;
    Ok(true)
}

/// Starts (or restarts) an enrolment with `secret`, to be confirmed by a code.
pub fn set_pending_totp(tx: &Tx<'_>, user_id: i64, secret: &str) -> DbResult<()> {
    tx.exec(
        "UPDATE admin_users SET totp_pending_secret = ?2 WHERE id = ?1",
        args![user_id, secret],
    )?;
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
    let n = tx.exec(
        "UPDATE admin_users SET totp_secret = ?2, totp_pending_secret = NULL, totp_enabled_at = ?3, totp_last_step = ?4 \
         WHERE id = ?1 AND totp_pending_secret = ?2",
        args![user_id, secret, to_millis(now), step],
    )?;
    if n != 1 {
        return Ok(false);
    }
    tx.exec(
        "DELETE FROM admin_recovery_codes WHERE user_id = ?1",
        args![user_id],
    )?;
    for hash in recovery_hashes {
        tx.exec(
            "INSERT INTO admin_recovery_codes (user_id, code_hash) VALUES (?1, ?2)",
            args![user_id, hash.as_slice()],
        )?;
    }
    tx.exec(
        "DELETE FROM admin_sessions WHERE user_id = ?1 AND id_hash IS DISTINCT FROM ?2",
        args![user_id, keep],
    )?;
    delete_pending_logins(tx, user_id)?;
    Ok(true)
}

/// Turns the second factor off (an owner resetting a user who lost their device), and
/// drops the user's sign-ins waiting for a code of the old secret.
pub fn disable_totp(tx: &Tx<'_>, user_id: i64) -> DbResult<()> {
    tx.exec(
        "UPDATE admin_users SET totp_secret = NULL, totp_pending_secret = NULL, totp_enabled_at = NULL, totp_last_step = NULL WHERE id = ?1",
        args![user_id],
    )?;
    tx.exec(
        "DELETE FROM admin_recovery_codes WHERE user_id = ?1",
        args![user_id],
    )?;
    delete_pending_logins(tx, user_id)?;
    Ok(())
}

/// Records the step of an accepted code, only if it is later than the last one: two
/// sign-ins racing with one code cannot both pass. True when recorded.
pub fn use_totp_step(tx: &Tx<'_>, user_id: i64, step: i64) -> DbResult<bool> {
    let n = tx.exec(
        "UPDATE admin_users SET totp_last_step = ?2 WHERE id = ?1 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
        args![user_id, step],
    )?;
    Ok(n == 1)
}

/// Uses up a recovery code. True when it was one of the user's and unused.
pub fn use_recovery_code(tx: &Tx<'_>, user_id: i64, hash: &[u8], now: DateTime<Utc>) -> DbResult<bool> {
    let n = tx.exec(
        "UPDATE admin_recovery_codes SET used_at = ?3 WHERE user_id = ?1 AND code_hash = ?2 AND used_at IS NULL",
        args![user_id, hash, to_millis(now)],
    )?;
    Ok(n == 1)
}

/// Recovery codes not used yet.
pub fn recovery_codes_left(tx: &Tx<'_>, user_id: i64) -> DbResult<i64> {
    tx.one(
        "SELECT COUNT(*) FROM admin_recovery_codes WHERE user_id = ?1 AND used_at IS NULL",
        args![user_id],
        |r| r.get_i64(0),
    )
}

/// A dashboard setting (`admin_settings`).
pub fn setting(tx: &Tx<'_>, name: &str) -> DbResult<Option<String>> {
    tx.opt(
        "SELECT value FROM admin_settings WHERE name = ?1",
        args![name],
        |r| r.get_string(0),
    )
}

pub fn set_setting(tx: &Tx<'_>, name: &str, value: &str) -> DbResult<()> {
    tx.exec(
        "INSERT INTO admin_settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = ?2",
        args![name, value],
    )?;
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::sql::tests::round_trip;
    use super::*;

    /// Opens one session for the user per hash in `id_hashes`, each lasting an hour
    /// from `now`.
    pub(in crate::db) fn open_sessions(
        tx: &Tx<'_>,
        user_id: i64,
        id_hashes: &[&[u8]],
        now: DateTime<Utc>,
    ) -> DbResult<()> {
        for id_hash in id_hashes {
            super::super::admin_sessions::insert(
                tx,
                &super::super::admin_sessions::NewSession {
                    id_hash,
                    user_id,
                    csrf_token: "csrf",
                    now,
                    expires_at: now + chrono::Duration::hours(1),
                    remote_addr: None,
                    user_agent: None,
                },
            )?;
        }
        Ok(())
    }

    #[test]
    fn a_new_password_or_second_factor_ends_every_session_but_the_one_kept() {
        use chrono::TimeZone;

        use super::super::sql::tests::database;

        let (_dir, mut db) = database();
        let now = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
        let sessions = |db: &super::super::Offline| -> Vec<Vec<u8>> {
            db.read(|tx| {
                tx.all(
                    "SELECT id_hash FROM admin_sessions ORDER BY id_hash",
                    args![],
                    |r| r.get_bytes(0),
                )
            })
            .unwrap()
        };
        let sign_in = |db: &mut super::super::Offline, user_id: i64| {
            db.immediate(|tx| open_sessions(tx, user_id, &[b"s1", b"s2", b"s3"], now))
                .unwrap();
        };
        let id = db
            .immediate(|tx| insert(tx, "ann", "hash", Role::Owner, now))
            .unwrap()
            .unwrap();
        sign_in(&mut db, id);
        db.immediate(|tx| set_password(tx, "ann", "new", now, Some(b"s2")))
            .unwrap();
        assert_eq!(sessions(&db), [b"s2"]);
        db.immediate(|tx| set_password(tx, "ann", "newer", now, None))
            .unwrap();
        assert!(sessions(&db).is_empty());
        sign_in(&mut db, id);
        db.immediate(|tx| {
            set_pending_totp(tx, id, "SECRET")?;
            enable_totp(tx, id, "SECRET", 1, &[], now, b"s3")
        })
        .unwrap();
        assert_eq!(sessions(&db), [b"s3"]);
    }

    #[test]
    fn every_role_round_trips_and_keeps_its_stored_text() {
        assert_eq!(round_trip(&Role::ALL), ["owner", "operator", "viewer"]);
    }
}
