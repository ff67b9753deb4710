//! Sign-in (`/admin/login`) and sign-out. The sign-in form is protected against
//! forgery before any session exists by a double-submit token: a random value in a
//! `SameSite=Strict` cookie that the form must repeat.

use actix_web::http::{header, StatusCode};
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;

use super::texts::fill;
use super::{
    cookie, remote_addr, removal, render, secure_cookies, see_other, AdminError, Base, Form, SignedIn,
};
use super::{LOGIN_COOKIE, PENDING_COOKIE, SESSION_COOKIE};
use crate::db::admin_sessions;
use crate::domain::admin::session_hash;
use crate::domain::admin::{new_csrf_token, same_secret};
use crate::http::state::AppState;
use crate::service::admin::{self as auth, Credentials, SecondFactor, SessionCheck, SignIn};

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage {
    base: Base,
    csrf: String,
    next: String,
    username: String,
    message: Option<String>,
    notice: Option<&'static str>,
}

/// Where staff land after signing in when no page asked for it: the overview.
const LANDING: &str = "/admin";

/// Where to go after signing in: a path of the dashboard itself (relative, same site,
/// under `/admin`), never another site nor the sign-in form; else the overview.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n == "/admin" || n.starts_with("/admin/") || n.starts_with("/admin?"))
                && !n.starts_with("/admin/login")
                && !n.contains("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => LANDING.to_owned(),
    }
}

fn query_value(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The form with a fresh anti-forgery token (also set as the cookie it must match).
fn form_page(
    req: &HttpRequest,
    state: &AppState,
    status: StatusCode,
    next: String,
    username: String,
    message: Option<String>,
    notice: Option<&'static str>,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(req, None);
    let csrf = new_csrf_token();
    let page = LoginPage {
        base,
        csrf: csrf.clone(),
        next,
        username,
        message,
        notice,
    };
    let mut response = render(&page, &page.base, status)?;
    if let Err(e) = response.add_cookie(&cookie(LOGIN_COOKIE, csrf, secure_cookies(state))) {
        tracing::warn!(error = %e, "cannot set the sign-in cookie");
    }
    Ok(response)
}

pub async fn login_form(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, AdminError> {
    let next = safe_next(query_value(&req, "next").as_deref());
    // Already signed in: straight on.
    if let Some(token) = req.cookie(SESSION_COOKIE) {
        if let Ok(SessionCheck::Valid(_)) = auth::check_session(&state, token.value()).await {
            return Ok(see_other(&next));
        }
    }
    let t = Base::new(&req, None).t;
    let notice = query_value(&req, "expired").map(|_| t.session_ended);
    form_page(&req, &state, StatusCode::OK, next, String::new(), None, notice)
}

pub async fn sign_in(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let form = Form::parse(&body);
    let base = Base::new(&req, None);
    let cookie_token = req
        .cookie(LOGIN_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    if !form.get("csrf").is_some_and(|t| same_secret(t, &cookie_token)) {
        tracing::warn!("sign-in form refused: anti-forgery token missing or wrong");
        return Err(AdminError::Forbidden(base.lang));
    }
    let next = safe_next(form.get("next"));
    let username = form.get("username").unwrap_or_default().trim().to_owned();
    let credentials = Credentials {
        username: username.clone(),
        password: form.get("password").unwrap_or_default().to_owned(),
        remote_addr: remote_addr(&req),
        next: next.clone(),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect()),
    };
    let t = base.t;
    match auth::sign_in(&state, credentials)
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?
    {
        SignIn::Started { token, user } => {
            tracing::info!(user = %user.username, "admin signed in");
            let secure = secure_cookies(&state);
            let mut response = see_other(&next);
            let set = response
                .add_cookie(&cookie(SESSION_COOKIE, token, secure))
                .and_then(|()| response.add_cookie(&removal(LOGIN_COOKIE, secure)));
            if let Err(e) = set {
                return Err(AdminError::internal(base.lang, &e));
            }
            Ok(response)
        }
        SignIn::SecondFactor { token } => {
            let mut response = see_other("/admin/login/code");
            let secure = secure_cookies(&state);
            let set = response
                .add_cookie(&cookie(PENDING_COOKIE, token, secure))
                .and_then(|()| response.add_cookie(&removal(LOGIN_COOKIE, secure)));
            if let Err(e) = set {
                return Err(AdminError::internal(base.lang, &e));
            }
            Ok(response)
        }
        SignIn::Refused => form_page(
            &req,
            &state,
            StatusCode::OK,
            next,
            username,
            Some(t.wrong_credentials.to_owned()),
            None,
        ),
        SignIn::Locked { until } => {
            let seconds = ((until - state.now()).num_milliseconds().max(0) + 999) / 1000;
            let seconds = seconds.max(1).to_string();
            let mut response = form_page(
                &req,
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                next,
                username,
                Some(fill(t.locked_out, &[&seconds])),
                None,
            )?;
            if let Ok(value) = header::HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Ok(response)
        }
    }
}

#[derive(Template)]
#[template(path = "admin/login_code.html")]
struct CodePage {
    base: Base,
    csrf: String,
    message: Option<String>,
}

/// The pending sign-in the cookie names, if it is still waiting.
async fn pending(state: &AppState, req: &HttpRequest) -> Result<Option<admin_sessions::Pending>, AdminError> {
    let lang = Base::new(req, None).lang;
    let Some(token) = req.cookie(PENDING_COOKIE).map(|c| c.value().to_owned()) else {
        return Ok(None);
    };
    let hash = session_hash(&token);
    let now = state.now();
    let found = state
        .db
        .read(move |tx| admin_sessions::find_pending(tx, &hash))
        .await
        .map_err(|e| AdminError::internal(lang, &e))?;
    Ok(found.filter(|p| now < p.expires_at))
}

/// Back to the password form, saying the sign-in must start again.
fn start_again(state: &AppState) -> HttpResponse {
    let mut response = see_other("/admin/login?expired=1");
    if let Err(e) = response.add_cookie(&removal(PENDING_COOKIE, secure_cookies(state))) {
        tracing::warn!(error = %e, "cannot clear the pending sign-in cookie");
    }
    response
}

/// The second step of signing in: the code from the authenticator app.
pub async fn code_form(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, AdminError> {
    let Some(p) = pending(&state, &req).await? else {
        return Ok(start_again(&state));
    };
    let page = CodePage {
        base: Base::new(&req, None),
        csrf: p.csrf_token,
        message: None,
    };
    render(&page, &page.base, StatusCode::OK)
}

pub async fn code_submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let form = Form::parse(&body);
    let base = Base::new(&req, None);
    let Some(p) = pending(&state, &req).await? else {
        return Ok(start_again(&state));
    };
    if !form.get("csrf").is_some_and(|t| same_secret(t, &p.csrf_token)) {
        tracing::warn!("code form refused: anti-forgery token missing or wrong");
        return Err(AdminError::Forbidden(base.lang));
    }
    let token = req
        .cookie(PENDING_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    let typed = form.get("code").unwrap_or_default();
    let t = base.t;
    let again = |status: StatusCode, message: String| {
        let page = CodePage {
            base: Base::new(&req, None),
            csrf: p.csrf_token.clone(),
            message: Some(message),
        };
        render(&page, &page.base, status)
    };
    match auth::second_factor(&state, &token, typed, remote_addr(&req))
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?
    {
        SecondFactor::Started { token, next } => {
            let secure = secure_cookies(&state);
            let mut response = see_other(&safe_next(Some(&next)));
            let set = response
                .add_cookie(&cookie(SESSION_COOKIE, token, secure))
                .and_then(|()| response.add_cookie(&removal(PENDING_COOKIE, secure)));
            if let Err(e) = set {
                return Err(AdminError::internal(base.lang, &e));
            }
            Ok(response)
        }
        SecondFactor::Refused => again(
            StatusCode::OK,
            base.tr("The code is wrong or was used already.", "验证码错误或已被使用。")
                .to_owned(),
        ),
        SecondFactor::Locked { until } => {
            let seconds = (((until - state.now()).num_milliseconds().max(0) + 999) / 1000)
                .max(1)
                .to_string();
            let mut response = again(StatusCode::TOO_MANY_REQUESTS, fill(t.locked_out, &[&seconds]))?;
            if let Ok(value) = header::HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Ok(response)
        }
        SecondFactor::Expired => Ok(start_again(&state)),
    }
}

pub async fn sign_out(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    Form::parse(&body).check_csrf(&staff.0, base.lang)?;
    auth::sign_out(&state, &staff.0, remote_addr(&req))
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?;
    let mut response = see_other("/admin/login");
    if let Err(e) = response.add_cookie(&removal(SESSION_COOKIE, secure_cookies(&state))) {
        return Err(AdminError::internal(base.lang, &e));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn only_dashboard_paths_are_gone_back_to_and_anything_else_lands_on_the_overview() {
        for good in [
            "/admin",
            "/admin?lang=en",
            "/admin/orders",
            "/admin/orders/ord_1",
            "/admin/orders?status=paid",
            "/admin/webhooks?status=failed",
        ] {
            assert_eq!(safe_next(Some(good)), good);
        }
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/pay/x",
            "/admin//evil",
            "/admin/login",
            "/admin/login/code",
            "/admin\\x",
            "/administrator",
            "/admin.evil.example",
            "admin/orders",
            "/admin/orders\r\nSet-Cookie: x=1",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/admin", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/admin");
    }
}
