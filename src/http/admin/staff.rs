//! Staff and security pages: users and their roles (owners), one's own profile with
//! two-factor enrolment, API keys (owners), the audit log (owners).

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;

use super::logs::query_pairs;
use super::{begin, iso, local_time, render, see_other, AdminError, Base, Form, SignedIn};
use crate::db::audit::{self, AuditFilter};
use crate::db::{admin_users, api_keys};
use crate::domain::admin::{Permission, Role};
use crate::domain::totp;
use crate::http::qr;
use crate::http::state::AppState;
use crate::service::admin::totp_required;
use crate::service::export::parse_bound;
use crate::service::staff::{self as service, StaffError};

/// A refusal goes back to the page with its words; anything else is an error page.
fn outcome(
    result: Result<(), StaffError>,
    lang: crate::http::i18n::Lang,
) -> Result<Option<String>, AdminError> {
    match result {
        Ok(()) => Ok(None),
        Err(StaffError::Refused(why)) => Ok(Some(why.to_string())),
        Err(StaffError::Admin(e)) => Err(AdminError::internal(lang, &e)),
    }
}

pub struct UserRow {
    pub username: String,
    pub role: &'static str,
    pub totp: bool,
    pub created: String,
    pub me: bool,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    base: Base,
    users: Vec<UserRow>,
    roles: [&'static str; 3],
    required_by_owners: bool,
    required_by_config: bool,
    notice: Option<(bool, String)>,
}

async fn users(
    state: &AppState,
    req: &HttpRequest,
    staff: &SignedIn,
    notice: Option<(bool, String)>,
    status: StatusCode,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(req, Some(&staff.0));
    let tz = state.settings.merchant.timezone;
    let (list, required) = state
        .db
        .read(|tx| {
            Ok((
                admin_users::list(tx)?,
                admin_users::setting(tx, crate::service::admin::REQUIRE_TOTP_SETTING)?,
            ))
        })
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?;
    let page = UsersPage {
        users: list
            .into_iter()
            .map(|u| UserRow {
                me: u.username == staff.0.username,
                role: u.role.as_str(),
                totp: u.totp_secret.is_some(),
                created: local_time(u.created_at, tz),
                username: u.username,
            })
            .collect(),
        roles: [
            Role::Owner.as_str(),
            Role::Operator.as_str(),
            Role::Viewer.as_str(),
        ],
        required_by_owners: required.as_deref() == Some("1"),
        required_by_config: state.settings.admin.require_totp,
        notice,
        base,
    };
    render(&page, &page.base, status)
}

pub async fn users_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    staff.require(Permission::ManageUsers, base.lang)?;
    let notice = query_pairs(&req)
        .into_iter()
        .find(|(k, _)| k == "done")
        .map(|_| (true, base.tr("Saved.", "已保存。").to_owned()));
    users(&state, &req, &staff, notice, StatusCode::OK).await
}

async fn after(
    state: &AppState,
    req: &HttpRequest,
    staff: &SignedIn,
    result: Result<(), StaffError>,
) -> Result<HttpResponse, AdminError> {
    let lang = Base::new(req, Some(&staff.0)).lang;
    match outcome(result, lang)? {
        None => Ok(see_other("/admin/users?done=1")),
        Some(why) => {
            users(
                state,
                req,
                staff,
                Some((false, why)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

fn role_of(form: &Form) -> Result<Role, StaffError> {
    form.get("role")
        .unwrap_or_default()
        .parse::<Role>()
        .map_err(|e| StaffError::Refused(service::Refused::Invalid(e)))
}

pub async fn add_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let (form, action) = begin(
        &state,
        &req,
        &staff,
        &body,
        Permission::ManageUsers,
        "user.create",
    )
    .await?;
    let username = form.get("username").unwrap_or_default().trim().to_owned();
    let password = form.get("password").unwrap_or_default().to_owned();
    let result = match role_of(&form) {
        Ok(role) => service::add_user(&state, &action, &username, password, role).await,
        Err(e) => Err(e),
    };
    after(&state, &req, &staff, result).await
}

pub async fn change_role(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let (form, action) = begin(&state, &req, &staff, &body, Permission::ManageUsers, "user.role").await?;
    let username = form.get("username").unwrap_or_default().trim().to_owned();
    let result = match role_of(&form) {
        Ok(role) => service::set_role(&state, &action, &username, role).await,
        Err(e) => Err(e),
    };
    after(&state, &req, &staff, result).await
}

pub async fn remove_user(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let (form, action) = begin(
        &state,
        &req,
        &staff,
        &body,
        Permission::ManageUsers,
        "user.remove",
    )
    .await?;
    let username = form.get("username").unwrap_or_default().trim().to_owned();
    let result = service::remove_user(&state, &action, &username).await;
    after(&state, &req, &staff, result).await
}

pub async fn reset_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let (form, action) = begin(
        &state,
        &req,
        &staff,
        &body,
        Permission::ManageUsers,
        "user.totp_reset",
    )
    .await?;
    let username = form.get("username").unwrap_or_default().trim().to_owned();
    let result = service::reset_totp(&state, &action, &username).await;
    after(&state, &req, &staff, result).await
}

pub async fn require_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let (form, action) = begin(
        &state,
        &req,
        &staff,
        &body,
        Permission::ManageUsers,
        "user.require_totp",
    )
    .await?;
    let on = form.get("required") == Some("1");
    let result = service::set_require_totp(&state, &action, on).await;
    after(&state, &req, &staff, result).await
}

#[derive(Template)]
#[template(path = "admin/profile.html")]
struct ProfilePage {
    base: Base,
    username: String,
    role: &'static str,
    totp_enabled: bool,
    must_enrol: bool,
    required: bool,
    codes_left: i64,
    /// An enrolment under way: the QR code and the secret to type by hand.
    enrol_qr: Option<String>,
    enrol_secret: Option<String>,
    /// Shown once, right after enrolment.
    recovery_codes: Vec<String>,
    notice: Option<(bool, String)>,
}

#[allow(clippy::too_many_arguments)]
async fn profile(
    state: &AppState,
    req: &HttpRequest,
    staff: &SignedIn,
    enrol_secret: Option<String>,
    recovery_codes: Vec<String>,
    notice: Option<(bool, String)>,
    status: StatusCode,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(req, Some(&staff.0));
    let s = &staff.0;
    let required = totp_required(
        &state.settings,
        service::totp_required_by_owners(state)
            .await
            .map_err(|e| AdminError::internal(base.lang, &e))?
            .then_some("1"),
    );
    let codes_left = service::recovery_codes_left(state, s.user_id)
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?;
    let totp_enabled = s.totp_enabled || !recovery_codes.is_empty();
    let enrol_qr = match &enrol_secret {
        Some(secret) => {
            let uri = totp::otpauth_uri(
                &format!("kassa {}", state.settings.merchant.name),
                &s.username,
                secret,
            );
            Some(
                qr::svg(
                    &uri,
                    base.tr("QR code for your authenticator app", "身份验证器应用的二维码"),
                )
                .map_err(|e| AdminError::internal(base.lang, &e))?,
            )
        }
        None => None,
    };
    let page = ProfilePage {
        username: s.username.clone(),
        role: s.role.as_str(),
        totp_enabled,
        must_enrol: s.must_enrol && !totp_enabled,
        required,
        codes_left,
        enrol_qr,
        enrol_secret,
        recovery_codes,
        notice,
        base,
    };
    render(&page, &page.base, status)
}

pub async fn profile_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    staff.require(Permission::Read, base.lang)?;
    let pending = if staff.0.totp_enabled {
        None
    } else {
        service::pending_secret(&state, &staff.0.username)
            .await
            .map_err(|e| AdminError::internal(base.lang, &e))?
    };
    profile(&state, &req, &staff, pending, Vec::new(), None, StatusCode::OK).await
}

/// `step=begin` starts an enrolment (a new secret and its QR code); `step=confirm`
/// checks a code against it and, if right, turns the second factor on.
pub async fn profile_totp(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let (form, action) = begin(&state, &req, &staff, &body, Permission::Read, "user.totp_enable").await?;
    let base = Base::new(&req, Some(&staff.0));
    if staff.0.totp_enabled {
        return profile(&state, &req, &staff, None, Vec::new(), None, StatusCode::CONFLICT).await;
    }
    match form.get("step") {
        Some("confirm") => {
            let code = form.get("code").unwrap_or_default();
            match service::confirm_enrolment(&state, &action, &staff.0.username, code, &staff.0.session_hash)
                .await
            {
                Ok(codes) => profile(&state, &req, &staff, None, codes, None, StatusCode::OK).await,
                Err(StaffError::Refused(why)) => {
                    let pending = service::pending_secret(&state, &staff.0.username)
                        .await
                        .map_err(|e| AdminError::internal(base.lang, &e))?;
                    profile(
                        &state,
                        &req,
                        &staff,
                        pending,
                        Vec::new(),
                        Some((false, why.to_string())),
                        StatusCode::UNPROCESSABLE_ENTITY,
                    )
                    .await
                }
                Err(StaffError::Admin(e)) => Err(AdminError::internal(base.lang, &e)),
            }
        }
        _ => {
            let secret = service::begin_enrolment(&state, staff.0.user_id)
                .await
                .map_err(|e| AdminError::internal(base.lang, &e))?;
            profile(
                &state,
                &req,
                &staff,
                Some(secret),
                Vec::new(),
                None,
                StatusCode::OK,
            )
            .await
        }
    }
}

pub struct KeyRow {
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub last_used: String,
    pub revoked: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/api_keys.html")]
struct KeysPage {
    base: Base,
    keys: Vec<KeyRow>,
    created: Option<(String, String)>,
    notice: Option<(bool, String)>,
}

async fn keys(
    state: &AppState,
    req: &HttpRequest,
    staff: &SignedIn,
    created: Option<(String, String)>,
    notice: Option<(bool, String)>,
    status: StatusCode,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(req, Some(&staff.0));
    let tz = state.settings.merchant.timezone;
    let list = state
        .db
        .read(api_keys::list)
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?;
    let never = base.tr("never", "从未").to_owned();
    let page = KeysPage {
        keys: list
            .into_iter()
            .map(|k| KeyRow {
                name: k.name,
                prefix: format!("{}…", k.prefix),
                created: local_time(k.created_at, tz),
                last_used: k
                    .last_used_at
                    .map(|t| local_time(t, tz))
                    .unwrap_or_else(|| never.clone()),
                revoked: k.revoked_at.map(|t| local_time(t, tz)),
            })
            .collect(),
        created,
        notice,
        base,
    };
    render(&page, &page.base, status)
}

pub async fn api_keys_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    staff.require(Permission::ManageApiKeys, base.lang)?;
    let notice = query_pairs(&req).into_iter().find(|(k, _)| k == "done").map(|_| {
        (
            true,
            base.tr("Revoked: the key no longer works.", "已吊销：该密钥不再可用。")
                .to_owned(),
        )
    });
    keys(&state, &req, &staff, None, notice, StatusCode::OK).await
}

pub async fn create_api_key(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let (form, action) = begin(
        &state,
        &req,
        &staff,
        &body,
        Permission::ManageApiKeys,
        "apikey.create",
    )
    .await?;
    let lang = Base::new(&req, Some(&staff.0)).lang;
    let name = form.get("name").unwrap_or_default().trim().to_owned();
    match service::create_api_key(&state, &action, &name).await {
        // Shown on this response only (no redirect): a reload does not show it again.
        Ok(key) => keys(&state, &req, &staff, Some((name, key)), None, StatusCode::OK).await,
        Err(StaffError::Refused(why)) => {
            keys(
                &state,
                &req,
                &staff,
                None,
                Some((false, why.to_string())),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(StaffError::Admin(e)) => Err(AdminError::internal(lang, &e)),
    }
}

pub async fn revoke_api_key(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let (form, action) = begin(
        &state,
        &req,
        &staff,
        &body,
        Permission::ManageApiKeys,
        "apikey.revoke",
    )
    .await?;
    let lang = Base::new(&req, Some(&staff.0)).lang;
    let name = form.get("name").unwrap_or_default().trim().to_owned();
    match outcome(service::revoke_api_key(&state, &action, &name).await, lang)? {
        None => Ok(see_other("/admin/api-keys?done=revoked")),
        Some(why) => {
            keys(
                &state,
                &req,
                &staff,
                None,
                Some((false, why)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

pub struct AuditRow {
    pub at: String,
    pub at_iso: String,
    pub actor: String,
    pub action: String,
    pub order_id: String,
    pub reason: String,
    pub remote_addr: String,
    pub outcome: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    base: Base,
    actor: String,
    action: String,
    outcome: String,
    from: String,
    to: String,
    problems: Vec<String>,
    rows: Vec<AuditRow>,
    next_url: Option<String>,
}

pub const AUDIT_PAGE: u32 = 100;

pub async fn audit_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    staff.require(Permission::ReadAudit, base.lang)?;
    let tz = state.settings.merchant.timezone;
    let mut page = AuditPage {
        base,
        actor: String::new(),
        action: String::new(),
        outcome: String::new(),
        from: String::new(),
        to: String::new(),
        problems: Vec::new(),
        rows: Vec::new(),
        next_url: None,
    };
    let mut before_id = None;
    for (k, v) in query_pairs(&req) {
        match k.as_str() {
            "actor" => page.actor = v,
            "action" => page.action = v,
            "outcome" => page.outcome = v,
            "from" => page.from = v,
            "to" => page.to = v,
            "before" => before_id = v.parse().ok(),
            _ => {}
        }
    }
    let mut bound = |text: &str, end: bool| -> Option<chrono::DateTime<chrono::Utc>> {
        if text.is_empty() {
            return None;
        }
        match parse_bound(text, tz, end) {
            Ok(t) => Some(t),
            Err(_) => {
                page.problems
                    .push(format!("{} {text:?}", page.base.tr("Not a date:", "不是日期：")));
                None
            }
        }
    };
    let (from, before) = (bound(&page.from.clone(), false), bound(&page.to.clone(), true));
    if !page.problems.is_empty() {
        return render(&page, &page.base, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let some = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    let filter = AuditFilter {
        actor: some(&page.actor),
        action: some(&page.action),
        outcome: some(&page.outcome),
        from,
        before,
        before_id,
    };
    let found = state
        .db
        .read(move |tx| audit::list(tx, &filter, AUDIT_PAGE + 1))
        .await
        .map_err(|e| AdminError::internal(page.base.lang, &e))?;
    let more = found.len() > AUDIT_PAGE as usize;
    let shown = &found[..found.len().min(AUDIT_PAGE as usize)];
    page.next_url = shown.last().filter(|_| more).map(|e| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("actor", &page.actor),
            ("action", &page.action),
            ("outcome", &page.outcome),
            ("from", &page.from),
            ("to", &page.to),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        q.append_pair("before", &e.id.to_string());
        format!("/admin/audit?{}", q.finish())
    });
    page.rows = shown
        .iter()
        .map(|e| AuditRow {
            at: local_time(e.at, tz),
            at_iso: iso(e.at),
            actor: e.actor.clone(),
            action: e.action.clone(),
            order_id: e.order_id.as_ref().map(ToString::to_string).unwrap_or_default(),
            reason: e.reason.clone().unwrap_or_default(),
            remote_addr: e.remote_addr.clone().unwrap_or_default(),
            outcome: e.outcome.clone(),
            detail: e.detail.clone().unwrap_or_default(),
        })
        .collect();
    render(&page, &page.base, StatusCode::OK)
}
