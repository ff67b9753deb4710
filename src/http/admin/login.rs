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
use super::{LOGIN_COOKIE, SESSION_COOKIE};
use crate::domain::admin::{new_csrf_token, same_secret};
use crate::http::state::AppState;
use crate::service::admin::{self as auth, Credentials, SessionCheck, SignIn};

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

/// Where to go after signing in: a dashboard path, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/admin")
                && !n.starts_with("/admin/login")
                && !n.contains("//")
                && !n.contains('\\') =>
        {
            n.to_owned()
        }
        _ => "/admin/orders".to_owned(),
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
    fn only_dashboard_paths_are_gone_back_to() {
        assert_eq!(safe_next(Some("/admin/orders/ord_1")), "/admin/orders/ord_1");
        assert_eq!(
            safe_next(Some("/admin/orders?status=paid")),
            "/admin/orders?status=paid"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/pay/x",
            "/admin//evil",
            "/admin/login",
            "/admin\\x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/admin/orders", "{bad}");
        }
        assert_eq!(safe_next(None), "/admin/orders");
    }
}
