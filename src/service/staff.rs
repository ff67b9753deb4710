//! What owners and each user do about staff accounts, two-factor sign-in, API keys and
//! the webhook secret, from the dashboard or the command line: the same functions, each
//! with its audit line written in the same transaction as the change.

use chrono::{DateTime, Utc};

use super::admin::{Action, AdminError, REQUIRE_TOTP_SETTING};
use crate::core::Core;
use crate::db::audit::{self, NewAudit};
use crate::db::{admin_users, api_keys, webhook_secrets, DbError, DbTarget, Offline, Tx};
use crate::domain::admin::{self as staff, Role};
use crate::domain::{api_key, totp};
use crate::webhooks::{signer, ROTATION_OVERLAP};

/// Why a change to staff was not made.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Invalid(String),
    #[error("a user named {0:?} exists already")]
    NameTaken(String),
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    #[error("{0:?} is the last owner; make another user owner first")]
    LastOwner(String),
    #[error("an active API key named {0:?} exists already")]
    KeyNameTaken(String),
    #[error("no active API key named {0:?}")]
    NoSuchKey(String),
    #[error("the code is wrong or has been used; type the code the app shows now")]
    WrongCode,
    #[error("start the enrolment again")]
    NoEnrolment,
    #[error("the webhook secret comes from the configuration; change it there")]
    ConfiguredSecret,
}

#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Admin(#[from] AdminError),
}

impl From<DbError> for StaffError {
    fn from(e: DbError) -> Self {
        StaffError::Admin(AdminError::Db(e))
    }
}

fn write_audit(tx: &Tx<'_>, a: &Action, outcome: &str, detail: Option<&str>) -> Result<(), DbError> {
    audit::insert(
        tx,
        &NewAudit {
            at: a.at,
            actor: &a.actor,
            action: a.action,
            order_id: a.order_id.as_ref(),
            reason: a.reason.as_deref(),
            remote_addr: a.remote_addr.as_deref(),
            outcome,
            detail,
        },
    )
}

/// Writes the audit line of a refusal, then hands the refusal back.
async fn refuse<T>(core: &Core, action: &Action, why: Refused) -> Result<T, StaffError> {
    let (a, text) = (action.clone(), why.to_string());
    core.db
        .write(move |tx| write_audit(tx, &a, "refused", Some(&text)))
        .await?;
    Err(why.into())
}

async fn hash(password: String) -> Result<String, StaffError> {
    staff::check_password(&password).map_err(Refused::Invalid)?;
    tokio::task::spawn_blocking(move || staff::hash_password(&password))
        .await
        .map_err(|e| AdminError::Task(e.to_string()))?
        .map_err(|e| StaffError::Admin(AdminError::Hash(e)))
}

/// A new user (an owner, on `/admin/users`).
pub async fn add_user(
    core: &Core,
    action: &Action,
    username: &str,
    password: String,
    role: Role,
) -> Result<(), StaffError> {
    if let Err(e) = staff::check_username(username) {
        return refuse(core, action, Refused::Invalid(e)).await;
    }
    if let Err(e) = staff::check_password(&password) {
        return refuse(core, action, Refused::Invalid(e)).await;
    }
    let hashed = hash(password).await?;
    let (a, name, now) = (action.clone(), username.to_owned(), action.at);
    let created = core
        .db
        .write(move |tx| {
            let id = admin_users::insert(tx, &name, &hashed, role, now)?;
            if id.is_some() {
                write_audit(tx, &a, "done", Some(&format!("{name} as {role}")))?;
            }
            Ok(id.is_some())
        })
        .await?;
    if !created {
        return refuse(core, action, Refused::NameTaken(username.to_owned())).await;
    }
    Ok(())
}

/// Changes a user's role; the last owner stays owner.
pub async fn set_role(core: &Core, action: &Action, username: &str, role: Role) -> Result<(), StaffError> {
    let (a, name) = (action.clone(), username.to_owned());
    let outcome = core
        .db
        .write(move |tx| {
            let Some(user) = admin_users::find_by_username(tx, &name)? else {
                return Ok(Err(Refused::NoSuchUser(name)));
            };
            if user.role == Role::Owner && role != Role::Owner && admin_users::count_active_owners(tx)? <= 1 {
                return Ok(Err(Refused::LastOwner(name)));
            }
            admin_users::set_role(tx, &name, role)?;
            // A changed role takes effect at once: sessions read the role on each request.
            write_audit(tx, &a, "done", Some(&format!("{name}: {} to {role}", user.role)))?;
            Ok(Ok(()))
        })
        .await?;
    match outcome {
        Ok(()) => Ok(()),
        Err(why) => refuse(core, action, why).await,
    }
}

/// Removes a user and ends their sessions; the last owner stays.
pub async fn remove_user(core: &Core, action: &Action, username: &str) -> Result<(), StaffError> {
    let (a, name) = (action.clone(), username.to_owned());
    let outcome = core.db.write(move |tx| remove_in(tx, &a, &name)).await?;
    match outcome {
        Ok(()) => Ok(()),
        Err(why) => refuse(core, action, why).await,
    }
}

fn remove_in(tx: &Tx<'_>, a: &Action, name: &str) -> Result<Result<(), Refused>, DbError> {
    let Some(user) = admin_users::find_by_username(tx, name)? else {
        return Ok(Err(Refused::NoSuchUser(name.to_owned())));
    };
    if user.role == Role::Owner && admin_users::count_active_owners(tx)? <= 1 {
        return Ok(Err(Refused::LastOwner(name.to_owned())));
    }
    admin_users::delete(tx, name)?;
    write_audit(tx, a, "done", Some(name))?;
    Ok(Ok(()))
}

/// Turns the owners' "everyone signs in with a code" on or off.
pub async fn set_require_totp(core: &Core, action: &Action, on: bool) -> Result<(), StaffError> {
    let a = action.clone();
    core.db
        .write(move |tx| {
            admin_users::set_setting(tx, REQUIRE_TOTP_SETTING, if on { "1" } else { "0" })?;
            write_audit(tx, &a, "done", Some(if on { "required" } else { "not required" }))
        })
        .await?;
    Ok(())
}

/// Whether the owners require a second factor (the setting alone, not the config).
pub async fn totp_required_by_owners(core: &Core) -> Result<bool, DbError> {
    let v = core
        .db
        .read(|tx| admin_users::setting(tx, REQUIRE_TOTP_SETTING))
        .await?;
    Ok(v.as_deref() == Some("1"))
}

/// Turns a user's second factor off (they lost their device); they enrol again.
pub async fn reset_totp(core: &Core, action: &Action, username: &str) -> Result<(), StaffError> {
    let (a, name) = (action.clone(), username.to_owned());
    let found = core
        .db
        .write(move |tx| {
            let Some(user) = admin_users::find_by_username(tx, &name)? else {
                return Ok(false);
            };
            admin_users::disable_totp(tx, user.id)?;
            write_audit(tx, &a, "done", Some(&name))?;
            Ok(true)
        })
        .await?;
    if !found {
        return refuse(core, action, Refused::NoSuchUser(username.to_owned())).await;
    }
    Ok(())
}

/// Starts an enrolment: a new secret, kept as pending until a code confirms it.
pub async fn begin_enrolment(core: &Core, user_id: i64) -> Result<String, DbError> {
    let secret = totp::generate_secret();
    let stored = secret.clone();
    core.db
        .write(move |tx| admin_users::set_pending_totp(tx, user_id, &stored))
        .await?;
    Ok(secret)
}

/// The pending enrolment's secret, if one was begun.
pub async fn pending_secret(core: &Core, username: &str) -> Result<Option<String>, DbError> {
    let name = username.to_owned();
    Ok(core
        .db
        .read(move |tx| admin_users::find_by_username(tx, &name))
        .await?
        .and_then(|u| u.totp_pending_secret))
}

/// Confirms the enrolment with a code from the app; returns the recovery codes, to
/// show once (only their hashes are kept). The user's sessions other than
/// `session_hash` end.
pub async fn confirm_enrolment(
    core: &Core,
    action: &Action,
    username: &str,
    code: &str,
    session_hash: &[u8],
) -> Result<Vec<String>, StaffError> {
    let name = username.to_owned();
    let Some(user) = core
        .db
        .read(move |tx| admin_users::find_by_username(tx, &name))
        .await?
    else {
        return Err(Refused::NoSuchUser(username.to_owned()).into());
    };
    let Some(secret) = user.totp_pending_secret.clone() else {
        return Err(Refused::NoEnrolment.into());
    };
    let Some(step) = totp::verify(&secret, code, action.at.timestamp(), None) else {
        return refuse(core, action, Refused::WrongCode).await;
    };
    let codes = totp::generate_recovery_codes();
    let hashes: Vec<Vec<u8>> = codes.iter().map(|c| totp::recovery_hash(c)).collect();
    let (a, now, keep) = (action.clone(), action.at, session_hash.to_vec());
    let enabled = core
        .db
        .write(move |tx| {
            let enabled = admin_users::enable_totp(tx, user.id, &secret, step, &hashes, now, &keep)?;
            if enabled {
                write_audit(tx, &a, "done", None)?;
            }
            Ok(enabled)
        })
        .await?;
    if !enabled {
        return Err(Refused::NoEnrolment.into());
    }
    Ok(codes)
}

/// Recovery codes not used yet.
pub async fn recovery_codes_left(core: &Core, user_id: i64) -> Result<i64, DbError> {
    core.db
        .read(move |tx| admin_users::recovery_codes_left(tx, user_id))
        .await
}

/// A new API key; its plaintext is returned to show once.
pub async fn create_api_key(core: &Core, action: &Action, name: &str) -> Result<String, StaffError> {
    if let Err(e) = api_key::check_name(name) {
        return refuse(core, action, Refused::Invalid(e)).await;
    }
    let key = api_key::generate();
    let (a, n, prefix, hash, now) = (
        action.clone(),
        name.to_owned(),
        key.display_prefix.clone(),
        key.hash.clone(),
        action.at,
    );
    let created = core
        .db
        .write(move |tx| {
            let id = api_keys::insert(tx, &n, &prefix, &hash, now)?;
            if id.is_some() {
                write_audit(tx, &a, "done", Some(&format!("{n} ({prefix}…)")))?;
            }
            Ok(id.is_some())
        })
        .await?;
    if !created {
        return refuse(core, action, Refused::KeyNameTaken(name.to_owned())).await;
    }
    Ok(key.plaintext)
}

pub async fn revoke_api_key(core: &Core, action: &Action, name: &str) -> Result<(), StaffError> {
    let (a, n, now) = (action.clone(), name.to_owned(), action.at);
    let revoked = core
        .db
        .write(move |tx| {
            let revoked = api_keys::revoke(tx, &n, now)?;
            if revoked {
                write_audit(tx, &a, "done", Some(&n))?;
            }
            Ok(revoked)
        })
        .await?;
    if !revoked {
        return refuse(core, action, Refused::NoSuchKey(name.to_owned())).await;
    }
    Ok(())
}

/// Starts signing with a new secret; the current ones keep signing beside it for
/// `ROTATION_OVERLAP` (as `kassa webhooks rotate-secret`). Returns when they stop.
pub async fn rotate_webhook_secret(core: &Core, action: &Action) -> Result<DateTime<Utc>, StaffError> {
    if !core.settings.webhooks.secret.is_empty() {
        return refuse(core, action, Refused::ConfiguredSecret).await;
    }
    let (a, now, new) = (action.clone(), action.at, signer::generate_secret());
    let retire = now + ROTATION_OVERLAP;
    core.db
        .write(move |tx| {
            webhook_secrets::rotate(tx, &new, now, retire)?;
            write_audit(tx, &a, "done", None)
        })
        .await?;
    Ok(retire)
}

/// Records an action that needs no change of its own (a reveal, a ping).
pub async fn record(
    core: &Core,
    action: &Action,
    outcome: &'static str,
    detail: Option<String>,
) -> Result<(), DbError> {
    action.clone().record(core, outcome, detail).await
}

/// `kassa admin add`: a new user, from the command line.
pub fn add_user_offline(
    target: &DbTarget,
    username: &str,
    password: &str,
    role: Role,
    now: DateTime<Utc>,
) -> Result<(), StaffError> {
    staff::check_username(username).map_err(Refused::Invalid)?;
    staff::check_password(password).map_err(Refused::Invalid)?;
    let hashed = staff::hash_password(password).map_err(AdminError::Hash)?;
    let mut conn = Offline::open_target(target)?;
    conn.migrate()?;
    let a = cli_action("user.create", now);
    let created = conn.immediate(|tx| {
        let id = admin_users::insert(tx, username, &hashed, role, now)?;
        if id.is_some() {
            write_audit(tx, &a, "done", Some(&format!("{username} as {role}")))?;
        }
        Ok(id.is_some())
    })?;
    if created {
        Ok(())
    } else {
        Err(Refused::NameTaken(username.to_owned()).into())
    }
}

/// `kassa admin remove`: deletes a user and ends their sessions.
pub fn remove_user_offline(target: &DbTarget, username: &str, now: DateTime<Utc>) -> Result<(), StaffError> {
    let mut conn = Offline::open_target(target)?;
    conn.migrate()?;
    let a = cli_action("user.remove", now);
    conn.immediate(|tx| remove_in(tx, &a, username))?
        .map_err(StaffError::from)
}

fn cli_action(action: &'static str, at: DateTime<Utc>) -> Action {
    Action {
        at,
        actor: "cli".to_owned(),
        action,
        order_id: None,
        reason: None,
        remote_addr: None,
    }
}
