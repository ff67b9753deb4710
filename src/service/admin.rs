//! Staff sign-in and sessions: the first admin, password checks behind a limiter whose
//! state is in the database, server-side sessions with an idle timeout and an absolute
//! lifetime, and the audit log of what staff do.

use chrono::{DateTime, Duration, Utc};

use crate::config::Settings;
use crate::core::Core;
use crate::db::admin_sessions::{self, NewPending, NewSession};
use crate::db::admin_users::{self, AdminUser};
use crate::db::audit::{self, NewAudit};
use crate::db::login_attempts::{self, Policy, Scope};
use crate::db::{Database, DbError, DbTarget, Offline};
use crate::domain::admin::{self as staff, Role, FIRST_ADMIN};
use crate::domain::totp;
use crate::domain::OrderId;

/// Five failures a minute per address and per user name, then a lockout of a minute
/// that doubles with each further one, up to an hour.
pub const LIMITS: Policy = Policy {
    max_failures: 5,
    window: Duration::minutes(1),
    lockout: Duration::minutes(1),
    max_lockout: Duration::hours(1),
    forget_after: Duration::days(1),
};

/// A session's last use is written at most this often.
const TOUCH_EVERY: Duration = Duration::minutes(1);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Hash(#[from] staff::HashError),
    #[error("{0}")]
    Invalid(String),
    #[error("no admin user named {0:?}")]
    NoSuchUser(String),
    #[error("password check failed: {0}")]
    Task(String),
}

/// The user created on first start.
#[derive(Debug, Clone)]
pub struct FirstAdmin {
    pub username: &'static str,
    /// The generated password, to print once; `None` when it came from
    /// `KASSA_ADMIN_PASSWORD`.
    pub generated_password: Option<String>,
}

/// Creates the `admin` user (role owner) when there is no user at all, with the
/// password from `KASSA_ADMIN_PASSWORD` or a random one. Runs at start-up, on a
/// connection of its own.
pub fn ensure_first_admin_blocking(
    db: &Database,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Option<FirstAdmin>, AdminError> {
    let mut conn = Offline::open_target(db.target())?;
    if conn.read(admin_users::count)? > 0 {
        return Ok(None);
    }
    let (password, generated) = match &settings.admin.initial_password {
        Some(p) => {
            staff::check_password(p.expose())
                .map_err(|e| AdminError::Invalid(format!("{}: {e}", crate::config::ADMIN_PASSWORD_ENV)))?;
            (p.expose().to_owned(), false)
        }
        None => (staff::generate_password(), true),
    };
    let hash = staff::hash_password(&password)?;
    // Another instance may have created it since the count: `create_first` counts
    // again, after waiting for any other instance's first start.
    let created = conn.immediate(|tx| admin_users::create_first(tx, FIRST_ADMIN, &hash, now))?;
    Ok(created.then(|| FirstAdmin {
        username: FIRST_ADMIN,
        generated_password: generated.then_some(password),
    }))
}

/// Sets `username`'s password (from the command line, beside a running server or not)
/// and ends every session of that user.
pub fn change_password_offline(
    target: &DbTarget,
    username: &str,
    password: &str,
    now: DateTime<Utc>,
) -> Result<(), AdminError> {
    staff::check_password(password).map_err(AdminError::Invalid)?;
    let mut conn = Offline::open_target(target)?;
    conn.migrate()?;
    if conn
        .read(|tx| admin_users::find_by_username(tx, username))?
        .is_none()
    {
        return Err(AdminError::NoSuchUser(username.to_owned()));
    }
    let hash = staff::hash_password(password)?;
    let changed = conn.immediate(|tx| {
        let changed = admin_users::set_password(tx, username, &hash, now, None)?;
        if changed {
            audit::insert(
                tx,
                &NewAudit {
                    at: now,
                    actor: "cli",
                    action: "user.password",
                    order_id: None,
                    reason: None,
                    remote_addr: None,
                    outcome: "done",
                    detail: Some(username),
                },
            )?;
        }
        Ok(changed)
    })?;
    if changed {
        Ok(())
    } else {
        Err(AdminError::NoSuchUser(username.to_owned()))
    }
}

/// What a sign-in form submitted, and from where.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    pub remote_addr: Option<String>,
    pub user_agent: Option<String>,
    /// Where to go once signed in (kept through the second-factor step).
    pub next: String,
}

#[derive(Debug)]
pub enum SignIn {
    /// A new session: `token` goes in the cookie, only its hash is stored.
    Started { token: String, user: AdminUser },
    /// The password was right; the user's second factor is still to come. `token`
    /// names the pending sign-in (its own cookie), which gives no rights.
    SecondFactor { token: String },
    /// Unknown user, disabled user or wrong password: one answer for all three.
    Refused,
    /// Too many failures from this address or for this name.
    Locked { until: DateTime<Utc> },
}

/// The limiter's key for a typed user name: case and length do not make a new key.
fn name_key(username: &str) -> String {
    username.trim().to_lowercase().chars().take(64).collect()
}

fn address_key(remote_addr: Option<&str>) -> String {
    remote_addr.unwrap_or("unknown").to_owned()
}

/// Checks a password, behind the limiter: a locked address or name is not even
/// checked. Slow on purpose (argon2id), off the async workers.
pub async fn sign_in(core: &Core, credentials: Credentials) -> Result<SignIn, AdminError> {
    let now = core.now();
    let name = name_key(&credentials.username);
    let address = address_key(credentials.remote_addr.as_deref());
    let (typed, keys) = (credentials.username.clone(), (name.clone(), address.clone()));
    let (user, locked) = core
        .db
        .read(move |tx| {
            let (name, address) = keys;
            let locked = [
                login_attempts::locked_until(tx, Scope::Username, &name, now)?,
                login_attempts::locked_until(tx, Scope::Address, &address, now)?,
            ]
            .into_iter()
            .flatten()
            .max();
            Ok((admin_users::find_by_username(tx, &typed)?, locked))
        })
        .await?;
    if let Some(until) = locked {
        return Ok(SignIn::Locked { until });
    }
    let password = credentials.password.clone();
    let stored = user
        .as_ref()
        .filter(|u| u.disabled_at.is_none())
        .map(|u| u.password_hash.clone());
    let matches = tokio::task::spawn_blocking(move || match stored {
        Some(hash) => staff::verify_password(&password, &hash),
        None => staff::verify_nobody(&password),
    })
    .await
    .map_err(|e| AdminError::Task(e.to_string()))?;
    let actor: String = credentials.username.chars().take(64).collect();
    let remote_addr = credentials.remote_addr.clone();
    let Some(user) = user.filter(|_| matches) else {
        core.db
            .write(move |tx| {
                login_attempts::record_failure(tx, Scope::Username, &name, now, &LIMITS)?;
                login_attempts::record_failure(tx, Scope::Address, &address, now, &LIMITS)?;
                audit::insert(
                    tx,
                    &NewAudit {
                        at: now,
                        actor: &actor,
                        action: "sign_in",
                        order_id: None,
                        reason: None,
                        remote_addr: remote_addr.as_deref(),
                        outcome: "refused",
                        detail: Some("wrong user name or password"),
                    },
                )
            })
            .await?;
        return Ok(SignIn::Refused);
    };
    if user.totp_secret.is_some() {
        let token = staff::new_session_token();
        let (id_hash, csrf) = (staff::session_hash(&token), staff::new_csrf_token());
        let (user_id, next, user_agent) = (user.id, credentials.next.clone(), credentials.user_agent.clone());
        core.db
            .write(move |tx| {
                admin_sessions::insert_pending(
                    tx,
                    &NewPending {
                        id_hash: &id_hash,
                        user_id,
                        csrf_token: &csrf,
                        now,
                        expires_at: now + SECOND_FACTOR_WAIT,
                        next: &next,
                        remote_addr: remote_addr.as_deref(),
                        user_agent: user_agent.as_deref(),
                    },
                )
            })
            .await?;
        return Ok(SignIn::SecondFactor { token });
    }
    let (token, user_id) = (staff::new_session_token(), user.id);
    start_session(
        core,
        &token,
        user_id,
        &user.username,
        remote_addr,
        credentials.user_agent,
        Some(name),
        None,
    )
    .await?;
    Ok(SignIn::Started { token, user })
}

/// How long the code form waits after a right password.
pub const SECOND_FACTOR_WAIT: Duration = Duration::minutes(5);

/// Writes a new session for `token` (and forgets the name's failures), with the audit
/// line of the sign-in.
#[allow(clippy::too_many_arguments)]
async fn start_session(
    core: &Core,
    token: &str,
    user_id: i64,
    username: &str,
    remote_addr: Option<String>,
    user_agent: Option<String>,
    clear_name: Option<String>,
    detail: Option<&'static str>,
) -> Result<(), AdminError> {
    let now = core.now();
    let (id_hash, csrf) = (staff::session_hash(token), staff::new_csrf_token());
    let (idle, lifetime) = (core.settings.admin.session_idle, core.settings.admin.session_max);
    let username = username.to_owned();
    core.db
        .write(move |tx| {
            admin_sessions::delete_expired(tx, now, idle)?;
            login_attempts::prune(tx, now, LIMITS.forget_after)?;
            admin_sessions::insert(
                tx,
                &NewSession {
                    id_hash: &id_hash,
                    user_id,
                    csrf_token: &csrf,
                    now,
                    expires_at: now + lifetime,
                    remote_addr: remote_addr.as_deref(),
                    user_agent: user_agent.as_deref(),
                },
            )?;
            if let Some(name) = &clear_name {
                login_attempts::clear(tx, Scope::Username, name)?;
            }
            audit::insert(
                tx,
                &NewAudit {
                    at: now,
                    actor: &username,
                    action: "sign_in",
                    order_id: None,
                    reason: None,
                    remote_addr: remote_addr.as_deref(),
                    outcome: "done",
                    detail,
                },
            )
        })
        .await?;
    Ok(())
}

/// What came of a second-factor code.
#[derive(Debug)]
pub enum SecondFactor {
    /// The session, and where to go.
    Started {
        token: String,
        next: String,
    },
    /// A wrong code (or a used one): the form again.
    Refused,
    Locked {
        until: DateTime<Utc>,
    },
    /// No such pending sign-in, or it waited too long: start again with the password.
    Expired,
}

/// The limiter's key for second-factor codes of a user: counted apart from passwords,
/// with the same limits.
fn code_key(username: &str) -> String {
    format!("totp:{}", name_key(username))
}

/// What the write of a second-factor code decided.
enum CodeOutcome {
    Accepted(&'static str),
    Refused,
    Locked(DateTime<Utc>),
    /// Another request already took the pending sign-in.
    Gone,
}

/// Checks the code (or a recovery code) of a pending sign-in, behind the same limiter
/// as passwords; a right one turns it into a session.
pub async fn second_factor(
    core: &Core,
    pending_token: &str,
    typed: &str,
    remote_addr: Option<String>,
) -> Result<SecondFactor, AdminError> {
    let now = core.now();
    let pending_hash = staff::session_hash(pending_token);
    let lookup = pending_hash.clone();
    let Some(pending) = core
        .db
        .read(move |tx| admin_sessions::find_pending(tx, &lookup))
        .await?
    else {
        return Ok(SecondFactor::Expired);
    };
    let user = pending.user.clone();
    if now >= pending.expires_at || user.disabled_at.is_some() {
        core.db
            .write(move |tx| admin_sessions::delete_pending(tx, &pending_hash))
            .await?;
        return Ok(SecondFactor::Expired);
    }
    let (name, address) = (code_key(&user.username), address_key(remote_addr.as_deref()));
    let secret = user.totp_secret.clone().unwrap_or_default();
    let typed = typed.trim().to_owned();
    let (user_id, username) = (user.id, user.username.clone());
    let step = crate::domain::totp::verify(&secret, &typed, now.timestamp(), user.totp_last_step);
    let recovery = (step.is_none() && totp::is_recovery_code(&typed)).then(|| totp::recovery_hash(&typed));
    let actor = username.clone();
    let addr = remote_addr.clone();
    // The lockout is read in the same write transaction that counts a failure, and the
    // pending sign-in is taken there too: writes are serial, so a burst of codes sent
    // at once cannot all pass one earlier check, and one pending sign-in gives at most
    // one session.
    let outcome = core
        .db
        .write(move |tx| {
            let locked = [
                login_attempts::locked_until(tx, Scope::Username, &name, now)?,
                login_attempts::locked_until(tx, Scope::Address, &address, now)?,
            ]
            .into_iter()
            .flatten()
            .max();
            if let Some(until) = locked {
                return Ok(CodeOutcome::Locked(until));
            }
            if admin_sessions::find_pending(tx, &pending_hash)?.is_none() {
                return Ok(CodeOutcome::Gone);
            }
            let accepted = match (step, &recovery) {
                (Some(step), _) => admin_users::use_totp_step(tx, user_id, step)?.then_some("code"),
                (None, Some(hash)) => {
                    admin_users::use_recovery_code(tx, user_id, hash, now)?.then_some("recovery code")
                }
                (None, None) => None,
            };
            let Some(how) = accepted else {
                login_attempts::record_failure(tx, Scope::Username, &name, now, &LIMITS)?;
                login_attempts::record_failure(tx, Scope::Address, &address, now, &LIMITS)?;
                audit::insert(
                    tx,
                    &NewAudit {
                        at: now,
                        actor: &actor,
                        action: "sign_in",
                        order_id: None,
                        reason: None,
                        remote_addr: addr.as_deref(),
                        outcome: "refused",
                        detail: Some("wrong second-factor code"),
                    },
                )?;
                return Ok(CodeOutcome::Refused);
            };
            if !admin_sessions::delete_pending(tx, &pending_hash)? {
                return Ok(CodeOutcome::Gone);
            }
            login_attempts::clear(tx, Scope::Username, &name)?;
            Ok(CodeOutcome::Accepted(how))
        })
        .await?;
    let how = match outcome {
        CodeOutcome::Accepted(how) => how,
        CodeOutcome::Refused => return Ok(SecondFactor::Refused),
        CodeOutcome::Locked(until) => return Ok(SecondFactor::Locked { until }),
        CodeOutcome::Gone => return Ok(SecondFactor::Expired),
    };
    let token = staff::new_session_token();
    let detail = if how == "code" {
        "password and code"
    } else {
        "password and recovery code"
    };
    start_session(
        core,
        &token,
        user_id,
        &username,
        remote_addr,
        pending.user_agent,
        Some(name_key(&username)),
        Some(detail),
    )
    .await?;
    Ok(SecondFactor::Started {
        token,
        next: pending.next,
    })
}

/// A signed-in staff user, as every admin page gets it.
#[derive(Debug, Clone)]
pub struct Staff {
    pub username: String,
    pub role: Role,
    /// The session's anti-forgery token, in every form and checked on every POST.
    pub csrf_token: String,
    pub session_hash: Vec<u8>,
    pub user_id: i64,
    pub totp_enabled: bool,
    /// A second factor is required and this user has none yet: the profile page (to
    /// enrol) is all they may open.
    pub must_enrol: bool,
}

impl Staff {
    pub fn may(&self, permission: staff::Permission) -> bool {
        self.role.may(permission)
    }
}

/// The `admin_settings` name of the owners' "everyone signs in with a code".
pub const REQUIRE_TOTP_SETTING: &str = "require_totp";

/// Whether every user must have a second factor: by configuration or by an owner.
pub fn totp_required(settings: &Settings, stored: Option<&str>) -> bool {
    settings.admin.require_totp || stored == Some("1")
}

#[derive(Debug)]
pub enum SessionCheck {
    Valid(Staff),
    /// It existed but ran out (idle or in all); it is deleted now.
    Expired,
    Missing,
}

/// Looks up the session a cookie names, ends it when it ran out, and notes its use.
pub async fn check_session(core: &Core, token: &str) -> Result<SessionCheck, DbError> {
    let now = core.now();
    let id_hash = staff::session_hash(token);
    let lookup = id_hash.clone();
    let found = core
        .db
        .read(move |tx| {
            let session = admin_sessions::find(tx, &lookup)?;
            let required = match &session {
                Some(s) if s.user.totp_secret.is_none() => admin_users::setting(tx, REQUIRE_TOTP_SETTING)?,
                _ => None,
            };
            Ok((session, required))
        })
        .await?;
    let (Some(session), required) = found else {
        return Ok(SessionCheck::Missing);
    };
    let idle = core.settings.admin.session_idle;
    let ended = now >= session.expires_at || now - session.last_seen_at >= idle;
    if ended || session.user.disabled_at.is_some() {
        let gone = id_hash.clone();
        core.db.write(move |tx| admin_sessions::delete(tx, &gone)).await?;
        return Ok(if ended {
            SessionCheck::Expired
        } else {
            SessionCheck::Missing
        });
    }
    if now - session.last_seen_at >= TOUCH_EVERY {
        let seen = id_hash.clone();
        core.db
            .write(move |tx| admin_sessions::touch(tx, &seen, now))
            .await?;
    }
    let totp_enabled = session.user.totp_secret.is_some();
    Ok(SessionCheck::Valid(Staff {
        username: session.user.username,
        role: session.user.role,
        csrf_token: session.csrf_token,
        session_hash: id_hash,
        user_id: session.user.id,
        totp_enabled,
        must_enrol: !totp_enabled && totp_required(&core.settings, required.as_deref()),
    }))
}

/// Ends a session.
pub async fn sign_out(core: &Core, staff: &Staff, remote_addr: Option<String>) -> Result<(), DbError> {
    let (id_hash, username, now) = (staff.session_hash.clone(), staff.username.clone(), core.now());
    core.db
        .write(move |tx| {
            admin_sessions::delete(tx, &id_hash)?;
            audit::insert(
                tx,
                &NewAudit {
                    at: now,
                    actor: &username,
                    action: "sign_out",
                    order_id: None,
                    reason: None,
                    remote_addr: remote_addr.as_deref(),
                    outcome: "done",
                    detail: None,
                },
            )
        })
        .await
}

/// One admin action for the audit log.
#[derive(Debug, Clone)]
pub struct Action {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: &'static str,
    pub order_id: Option<OrderId>,
    pub reason: Option<String>,
    pub remote_addr: Option<String>,
}

impl Action {
    /// Records the action with how it ended.
    pub async fn record(
        self,
        core: &Core,
        outcome: &'static str,
        detail: Option<String>,
    ) -> Result<(), DbError> {
        core.db
            .write(move |tx| {
                audit::insert(
                    tx,
                    &NewAudit {
                        at: self.at,
                        actor: &self.actor,
                        action: self.action,
                        order_id: self.order_id.as_ref(),
                        reason: self.reason.as_deref(),
                        remote_addr: self.remote_addr.as_deref(),
                        outcome,
                        detail: detail.as_deref(),
                    },
                )
            })
            .await
    }
}

/// What came of typing one's password again to see something secret.
#[derive(Debug)]
pub enum Reauth {
    Confirmed,
    Refused,
    /// Too many wrong passwords: not even checked.
    Locked {
        until: DateTime<Utc>,
    },
}

/// The limiter's keys for passwords typed again while signed in: counted apart from
/// sign-in (so a stolen session cannot lock its user out of signing in), per user and
/// per address, with the same limits.
fn reauth_keys(username: &str, remote_addr: Option<&str>) -> (String, String) {
    (
        format!("reauth:{}", name_key(username)),
        format!("reauth:{}", address_key(remote_addr)),
    )
}

/// Checks the signed-in user's password again (`action.actor`), behind the same
/// limiter as sign-in: a session alone cannot try password after password. Every
/// attempt, the locked-out ones too, is written to the audit log as `action`.
pub async fn confirm_password(core: &Core, action: &Action, password: String) -> Result<Reauth, AdminError> {
    let now = core.now();
    let (name, address) = reauth_keys(&action.actor, action.remote_addr.as_deref());
    let (username, keys) = (action.actor.clone(), (name.clone(), address.clone()));
    let (stored, locked) = core
        .db
        .read(move |tx| {
            let (name, address) = keys;
            let locked = [
                login_attempts::locked_until(tx, Scope::Username, &name, now)?,
                login_attempts::locked_until(tx, Scope::Address, &address, now)?,
            ]
            .into_iter()
            .flatten()
            .max();
            let user = admin_users::find_by_username(tx, &username)?;
            Ok((user.map(|u| u.password_hash), locked))
        })
        .await?;
    if let Some(until) = locked {
        action
            .clone()
            .record(core, "refused", Some("too many wrong passwords".to_owned()))
            .await?;
        return Ok(Reauth::Locked { until });
    }
    let matches = tokio::task::spawn_blocking(move || match stored {
        Some(hash) => staff::verify_password(&password, &hash),
        None => staff::verify_nobody(&password),
    })
    .await
    .map_err(|e| AdminError::Task(e.to_string()))?;
    let line = action.clone();
    core.db
        .write(move |tx| {
            if matches {
                login_attempts::clear(tx, Scope::Username, &name)?;
            } else {
                login_attempts::record_failure(tx, Scope::Username, &name, now, &LIMITS)?;
                login_attempts::record_failure(tx, Scope::Address, &address, now, &LIMITS)?;
            }
            audit::insert(
                tx,
                &NewAudit {
                    at: line.at,
                    actor: &line.actor,
                    action: line.action,
                    order_id: line.order_id.as_ref(),
                    reason: line.reason.as_deref(),
                    remote_addr: line.remote_addr.as_deref(),
                    outcome: if matches { "done" } else { "refused" },
                    detail: (!matches).then_some("wrong password"),
                },
            )
        })
        .await?;
    Ok(if matches {
        Reauth::Confirmed
    } else {
        Reauth::Refused
    })
}
