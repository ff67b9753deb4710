//! The admin dashboard (`/admin`): sign-in, the order list and its CSV export, each
//! order's page with its whole story, and the actions staff may take on it.
//!
//! Every route but the sign-in form needs a session (`SignedIn`): without one, it
//! redirects to `/admin/login`. Every state change is a POST that carries the
//! session's anti-forgery token (`Form::check_csrf`). Every response carries the pages'
//! security headers and `Cache-Control: no-store`. Pages work without JavaScript.

pub mod charts;
pub mod export;
pub mod login;
pub mod logs;
pub mod order_actions;
pub mod order_detail;
pub mod orders;
pub mod overview;
pub mod staff;
pub mod texts;
pub mod webhooks;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::DefaultHeaders;
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use self::texts::AdminTexts;
use super::assets;
use super::error::{database_unreachable, error_chain, UNAVAILABLE_RETRY_AFTER};
use super::i18n::{self, Lang};
use super::state::AppState;
use super::PAGE_CSP;
use crate::domain::admin::{same_secret, Permission, Role};
use crate::domain::ids::random_base62;
use crate::domain::{Amount, Currency, OrderStatus};
use crate::service::admin::{self as auth, Action, SessionCheck, Staff};

/// The session cookie: its value is the session id, whose hash is the session's key.
pub const SESSION_COOKIE: &str = "kassa_admin";
/// The sign-in form's anti-forgery token, before there is a session to hold one.
pub const LOGIN_COOKIE: &str = "kassa_admin_login";
/// A sign-in whose password was right, waiting for its second factor.
pub const PENDING_COOKIE: &str = "kassa_admin_pending";
/// Cookies are sent to the dashboard only.
const COOKIE_PATH: &str = "/admin";

/// A resource that takes only POST; any other method gets 405 with `Allow: POST`.
fn post<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path).route(web::post().to(handler))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .wrap(admin_headers())
            .service(web::resource("").route(web::get().to(overview::overview_page)))
            .service(web::resource("/").route(web::get().to(overview::overview_page)))
            .service(
                web::resource("/login")
                    .route(web::get().to(login::login_form))
                    .route(web::post().to(login::sign_in)),
            )
            .service(web::resource("/logout").route(web::post().to(login::sign_out)))
            .service(
                web::resource("/login/code")
                    .route(web::get().to(login::code_form))
                    .route(web::post().to(login::code_submit)),
            )
            .service(web::resource("/notifications").route(web::get().to(logs::list_notifications)))
            .service(web::resource("/notifications/{id}").route(web::get().to(logs::show_notification)))
            .service(web::resource("/webhooks").route(web::get().to(webhooks::webhooks_page)))
            .service(post("/webhooks/resend", webhooks::resend_one))
            .service(post("/webhooks/resend-matching", webhooks::resend_matching))
            .service(post("/webhooks/ping", webhooks::ping))
            .service(post("/webhooks/reenable", webhooks::reenable))
            .service(post("/webhooks/secret", webhooks::reveal_secret))
            .service(post("/webhooks/rotate", webhooks::rotate_secret))
            .service(web::resource("/users").route(web::get().to(staff::users_page)))
            .service(post("/users/add", staff::add_user))
            .service(post("/users/role", staff::change_role))
            .service(post("/users/remove", staff::remove_user))
            .service(post("/users/reset-totp", staff::reset_totp))
            .service(post("/users/require-totp", staff::require_totp))
            .service(web::resource("/profile").route(web::get().to(staff::profile_page)))
            .service(post("/profile/totp", staff::profile_totp))
            .service(web::resource("/api-keys").route(web::get().to(staff::api_keys_page)))
            .service(post("/api-keys/create", staff::create_api_key))
            .service(post("/api-keys/revoke", staff::revoke_api_key))
            .service(web::resource("/audit").route(web::get().to(staff::audit_page)))
            .service(post("/orders/{id}/acknowledge", overview::acknowledge_late))
            .service(web::resource("/orders").route(web::get().to(orders::list_orders)))
            .service(web::resource("/orders.csv").route(web::get().to(export::export_orders)))
            .service(web::resource("/orders/{id}").route(web::get().to(order_detail::show_order)))
            .service(post("/orders/{id}/close", order_actions::close_order))
            .service(post("/orders/{id}/refund", order_actions::refund_order))
            .service(post("/orders/{id}/query", order_actions::query_order))
            .service(post("/orders/{id}/resend", order_actions::resend_webhook))
            .default_service(web::to(not_found)),
    );
}

/// The checkout page's security headers, and no caching of anything staff see.
fn admin_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, PAGE_CSP))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::CACHE_CONTROL, "no-store"))
}

async fn not_found(req: HttpRequest, staff: SignedIn) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    Err(AdminError::NotFound(base.lang, base.t.page_not_found))
}

pub fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Whether cookies must be `Secure`: the dashboard is reached over HTTPS.
pub fn secure_cookies(state: &AppState) -> bool {
    state.public_url().starts_with("https://")
}

pub fn cookie<'c>(name: &'c str, value: String, secure: bool) -> Cookie<'c> {
    Cookie::build(name, value)
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish()
}

/// A cookie that deletes `name`.
pub fn removal(name: &str, secure: bool) -> Cookie<'_> {
    let mut c = cookie(name, String::new(), secure);
    c.make_removal();
    c
}

/// A posted action's first steps, shared by the staff and webhook pages: the CSRF token,
/// then the role (a refusal is audited); returns the form and the audit line's start,
/// with the form's `reason` when one was typed.
pub(super) async fn begin(
    state: &AppState,
    req: &HttpRequest,
    staff: &SignedIn,
    body: &Bytes,
    permission: Permission,
    name: &'static str,
) -> Result<(Form, Action), AdminError> {
    let lang = Base::new(req, Some(&staff.0)).lang;
    let form = Form::parse(body);
    form.check_csrf(&staff.0, lang)?;
    let action = Action {
        at: state.now(),
        actor: staff.0.username.clone(),
        action: name,
        order_id: None,
        reason: form
            .get("reason")
            .map(|r| r.trim().chars().take(200).collect::<String>())
            .filter(|r| !r.is_empty()),
        remote_addr: remote_addr(req),
    };
    staff.require_action(state, &action, permission, lang).await?;
    Ok((form, action))
}

/// The client's address: the connection's peer, or behind one of `[server]
/// trusted_proxies` the client it forwards for.
pub fn remote_addr(req: &HttpRequest) -> Option<String> {
    crate::http::client_ip(req).map(|ip| ip.to_string())
}

/// Errors of the dashboard, each its own response.
#[derive(Debug)]
pub enum AdminError {
    /// No valid session: to the sign-in form, coming back to `next` afterwards.
    SignIn {
        next: Option<String>,
        expired: bool,
    },
    /// A missing or wrong anti-forgery token: nothing was done.
    Forbidden(Lang),
    /// The user's role may not open this page or take this action: nothing was done.
    NotAllowed(Lang),
    /// Two-factor sign-in is required and the user has not enrolled: to the profile.
    MustEnrol,
    NotFound(Lang, &'static str),
    /// Logged with its whole chain under this id, which the page shows.
    Internal(Lang, String),
    /// The database cannot be reached or is busy: a `503`, to be tried again.
    Unavailable(Lang),
}

impl AdminError {
    /// Logs `error` and its causes. The database out of reach is no bug of kassa's: a
    /// warning and a `503` page, not an error and a `500`.
    pub fn internal(lang: Lang, error: &(dyn std::error::Error + 'static)) -> AdminError {
        let request_id = crate::http::telemetry::current_request_id().unwrap_or_else(|| random_base62(12));
        if database_unreachable(error) {
            tracing::warn!(%request_id, error = %error_chain(error), "database unavailable; admin page refused");
            return AdminError::Unavailable(lang);
        }
        tracing::error!(%request_id, error = %error_chain(error), "admin page failed");
        AdminError::Internal(lang, request_id)
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::SignIn { .. } => f.write_str("not signed in"),
            AdminError::Forbidden(_) => f.write_str("anti-forgery token missing or wrong"),
            AdminError::NotAllowed(_) => f.write_str("the role may not do this"),
            AdminError::MustEnrol => f.write_str("two-factor sign-in must be set up first"),
            AdminError::NotFound(_, what) => write!(f, "not found: {what}"),
            AdminError::Internal(_, id) => write!(f, "internal error {id}"),
            AdminError::Unavailable(_) => f.write_str("database unavailable"),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/error.html")]
struct ErrorPage<'a> {
    base: Base,
    title: &'a str,
    message: &'a str,
    reference: Option<&'a str>,
    sign_in_link: bool,
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::SignIn { .. } => StatusCode::SEE_OTHER,
            AdminError::Forbidden(_) | AdminError::NotAllowed(_) => StatusCode::FORBIDDEN,
            AdminError::MustEnrol => StatusCode::SEE_OTHER,
            AdminError::NotFound(..) => StatusCode::NOT_FOUND,
            AdminError::Internal(..) => StatusCode::INTERNAL_SERVER_ERROR,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (lang, title, message, reference, sign_in_link) = match self {
            AdminError::SignIn { next, expired } => {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                if let Some(next) = next {
                    query.append_pair("next", next);
                }
                if *expired {
                    query.append_pair("expired", "1");
                }
                let query = query.finish();
                let location = if query.is_empty() {
                    "/admin/login".to_owned()
                } else {
                    format!("/admin/login?{query}")
                };
                return see_other(&location);
            }
            AdminError::Forbidden(lang) => {
                let t = AdminTexts::of(*lang);
                (*lang, t.forbidden_title, t.form_expired, None, true)
            }
            AdminError::NotAllowed(lang) => {
                let t = AdminTexts::of(*lang);
                let message = match lang {
                    Lang::En => "Your role does not allow this. Nothing was changed.",
                    _ => "您的角色无权进行此操作。什么都没有改变。",
                };
                (*lang, t.forbidden_title, message, None, false)
            }
            AdminError::MustEnrol => return see_other("/admin/profile?enrol=1"),
            AdminError::NotFound(lang, message) => (
                *lang,
                AdminTexts::of(*lang).not_found_title,
                *message,
                None,
                false,
            ),
            AdminError::Internal(lang, id) => {
                let t = AdminTexts::of(*lang);
                (
                    *lang,
                    t.server_error_title,
                    t.server_error_body,
                    Some(id.as_str()),
                    false,
                )
            }
            AdminError::Unavailable(lang) => {
                let t = AdminTexts::of(*lang);
                (*lang, t.unavailable_title, t.unavailable_body, None, false)
            }
        };
        let page = ErrorPage {
            base: Base::bare(lang),
            title,
            message,
            reference,
            sign_in_link,
        };
        let mut response = match page.render() {
            Ok(body) => html(self.status_code(), lang, body),
            Err(e) => {
                tracing::error!(error = %e, "admin error page failed to render");
                HttpResponse::build(self.status_code())
                    .content_type("text/plain; charset=utf-8")
                    .body(format!("{}\n", self.status_code()))
            }
        };
        if let AdminError::Unavailable(_) = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(UNAVAILABLE_RETRY_AFTER),
            );
        }
        response
    }
}

/// An HTML response in `lang`.
pub fn html(status: StatusCode, lang: Lang, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_LANGUAGE, lang.tag()))
        .body(body)
}

/// Renders `page` with `status`; a `?lang=` choice is remembered in the same cookie the
/// checkout page uses.
pub fn render(page: &impl Template, base: &Base, status: StatusCode) -> Result<HttpResponse, AdminError> {
    let body = page.render().map_err(|e| AdminError::internal(base.lang, &e))?;
    let mut response = html(status, base.lang, body);
    if base.remember_lang {
        let cookie = Cookie::build(i18n::COOKIE, base.lang.tag())
            .path("/")
            .max_age(actix_web::cookie::time::Duration::days(365))
            .same_site(SameSite::Lax)
            .http_only(true)
            .secure(base.secure)
            .finish();
        if let Err(e) = response.add_cookie(&cookie) {
            tracing::warn!(error = %e, "cannot set the language cookie");
        }
    }
    Ok(response)
}

/// The signed-in staff user, as a handler argument: without a valid session the
/// request goes to the sign-in form instead.
pub struct SignedIn(pub Staff);

impl FromRequest for SignedIn {
    type Error = AdminError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        let lang = i18n::negotiate(req).0;
        let path = req.path().to_owned();
        // Only a page can be gone back to; a form's POST cannot be replayed.
        let next = (req.method() == actix_web::http::Method::GET).then(|| match req.query_string() {
            "" => req.path().to_owned(),
            q => format!("{}?{q}", req.path()),
        });
        Box::pin(async move {
            let state = state.ok_or_else(|| {
                AdminError::internal(lang, &std::io::Error::other("application state missing"))
            })?;
            let Some(token) = token.filter(|t| !t.is_empty()) else {
                return Err(AdminError::SignIn { next, expired: false });
            };
            match auth::check_session(&state, &token).await {
                Ok(SessionCheck::Valid(staff))
                    if staff.must_enrol && !ENROL_PATHS.contains(&path.as_str()) =>
                {
                    Err(AdminError::MustEnrol)
                }
                Ok(SessionCheck::Valid(staff)) => Ok(SignedIn(staff)),
                Ok(SessionCheck::Expired) => Err(AdminError::SignIn { next, expired: true }),
                Ok(SessionCheck::Missing) => Err(AdminError::SignIn { next, expired: false }),
                Err(e) => Err(AdminError::internal(lang, &e)),
            }
        })
    }
}

/// What a user who must enrol in two-factor sign-in may open before they have.
const ENROL_PATHS: [&str; 3] = ["/admin/profile", "/admin/profile/totp", "/admin/logout"];

impl SignedIn {
    /// The role check every page and action makes before anything else (after the
    /// anti-forgery token on a POST).
    pub fn require(&self, permission: Permission, lang: Lang) -> Result<(), AdminError> {
        if self.0.may(permission) {
            Ok(())
        } else {
            tracing::warn!(user = %self.0.username, role = %self.0.role, ?permission, "admin request refused: role");
            Err(AdminError::NotAllowed(lang))
        }
    }

    /// The role check of an action (a POST), after its anti-forgery token: a refusal
    /// is also written to the audit log as `action` (who, from where, what), as the
    /// order actions' refusals are. A refused page view writes no line.
    pub async fn require_action(
        &self,
        state: &AppState,
        action: &Action,
        permission: Permission,
        lang: Lang,
    ) -> Result<(), AdminError> {
        let refused = self.require(permission, lang);
        if refused.is_err() {
            action
                .clone()
                .record(state, "refused", Some(role_refusal(self.0.role, permission)))
                .await
                .map_err(|e| AdminError::internal(lang, &e))?;
        }
        refused
    }
}

/// The audit log's words for a role refusal.
pub fn role_refusal(role: Role, permission: Permission) -> String {
    let what = match permission {
        Permission::Read => "read the dashboard",
        Permission::ActOnOrders => "act on orders",
        Permission::Resend => "re-send webhooks",
        Permission::ManageWebhooks => "manage webhooks",
        Permission::ManageApiKeys => "manage API keys",
        Permission::ManageUsers => "manage users",
        Permission::ReadAudit => "read the audit log",
    };
    format!("role {role} may not {what}")
}

/// A submitted form (`application/x-www-form-urlencoded`), read whatever its fields:
/// a missing field is a missing value, never a rejected request.
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(body: &Bytes) -> Form {
        Form(url::form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The form's anti-forgery token against the session's: checked on every POST,
    /// before anything else.
    pub fn check_csrf(&self, staff: &Staff, lang: Lang) -> Result<(), AdminError> {
        match self.get("csrf") {
            Some(token) if same_secret(token, &staff.csrf_token) => Ok(()),
            _ => {
                tracing::warn!(user = %staff.username, "admin form refused: anti-forgery token missing or wrong");
                Err(AdminError::Forbidden(lang))
            }
        }
    }
}

/// The signed-in user as the layout shows them.
pub struct StaffView {
    pub username: String,
    pub role: &'static str,
    /// Owners see the pages only they may open.
    pub owner: bool,
}

/// What every dashboard page's layout needs.
pub struct Base {
    pub lang: Lang,
    pub t: &'static AdminTexts,
    pub css: String,
    pub favicon: String,
    pub merchant: String,
    pub staff: Option<StaffView>,
    /// For the sign-out form.
    pub csrf: String,
    pub tz: String,
    /// This page's path (for the menu's current page).
    pub path: String,
    /// This page in the other languages.
    pub lang_zh: String,
    pub lang_en: String,
    remember_lang: bool,
    secure: bool,
}

impl Base {
    pub fn new(req: &HttpRequest, staff: Option<&Staff>) -> Base {
        let (lang, remember_lang) = i18n::negotiate(req);
        let state = req.app_data::<web::Data<AppState>>();
        let (merchant, tz, secure) = match state {
            Some(s) => (
                s.settings.merchant.name.clone(),
                s.settings.merchant.timezone.name().to_owned(),
                secure_cookies(s),
            ),
            None => (String::new(), "UTC".to_owned(), false),
        };
        let with_lang = |tag: &str| {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
                if k != "lang" && k != "done" {
                    query.append_pair(&k, &v);
                }
            }
            query.append_pair("lang", tag);
            // After a POST, the switch goes to the page the form was on.
            let path = if req.method() == actix_web::http::Method::GET || req.path() == "/admin/login" {
                req.path().to_owned()
            } else {
                req.path()
                    .rsplit_once('/')
                    .map(|(p, _)| p.to_owned())
                    .unwrap_or_default()
            };
            format!("{path}?{}", query.finish())
        };
        Base {
            lang,
            t: AdminTexts::of(lang),
            css: assets::url("admin.css"),
            favicon: assets::url("favicon.svg"),
            merchant,
            staff: staff.map(|s| StaffView {
                username: s.username.clone(),
                role: s.role.as_str(),
                owner: s.may(Permission::ManageUsers),
            }),
            csrf: staff.map(|s| s.csrf_token.clone()).unwrap_or_default(),
            tz,
            path: req.path().to_owned(),
            lang_zh: with_lang("zh-CN"),
            lang_en: with_lang("en"),
            remember_lang,
            secure,
        }
    }

    /// The words of the dashboard's later pages, given in both languages where they
    /// are used.
    pub fn tr(&self, en: &'static str, zh: &'static str) -> &'static str {
        match self.lang {
            Lang::En => en,
            _ => zh,
        }
    }

    /// For error pages, which know only the language.
    fn bare(lang: Lang) -> Base {
        Base {
            lang,
            t: AdminTexts::of(lang),
            css: assets::url("admin.css"),
            favicon: assets::url("favicon.svg"),
            merchant: String::new(),
            staff: None,
            csrf: String::new(),
            tz: String::new(),
            path: String::new(),
            lang_zh: "?lang=zh-CN".to_owned(),
            lang_en: "?lang=en".to_owned(),
            remember_lang: false,
            secure: false,
        }
    }
}

/// A time in the merchant's zone, with the zone's abbreviation.
pub fn local_time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z").to_string()
}

pub fn iso(t: DateTime<Utc>) -> String {
    crate::domain::order::rfc3339(t)
}

/// Minor units as money with its symbol.
pub fn money(minor: i64, currency: Currency) -> String {
    Amount::from_minor(minor, currency)
        .map(|a| a.display_with_symbol())
        .unwrap_or_else(|_| minor.to_string())
}

/// The CSS class of a status badge (its words come from the texts).
pub fn status_class(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Pending => "st-pending",
        OrderStatus::Paid => "st-paid",
        OrderStatus::Closed => "st-closed",
        OrderStatus::PartiallyRefunded => "st-partial",
        OrderStatus::Refunded => "st-refunded",
    }
}

/// A status badge: a class for its colour and words that say it.
pub struct Badge {
    pub class: &'static str,
    pub word: &'static str,
}

impl Badge {
    pub fn of(status: OrderStatus, t: &AdminTexts) -> Badge {
        Badge {
            class: status_class(status),
            word: t.status(status),
        }
    }
}
