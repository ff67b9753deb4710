//! The webhook log (`/admin/webhooks`): deliveries by status with every attempt,
//! endpoint health, and the actions on them: re-send one, re-send every failed
//! delivery matching the filter, ping an endpoint, re-enable a disabled one; the
//! signing secret masked, revealed only after the password is typed again, rotated
//! with the same 24 h overlap as `kassa webhooks rotate-secret`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use serde_json::json;

use super::logs::{bound, optional, query_pairs};
use super::order_detail::resendable;
use super::orders::Choice;
use super::{begin, iso, local_time, render, see_other, AdminError, Base, Form, SignedIn};
use crate::db::logs::{self, DeliveryFilter};
use crate::db::{outbox, webhook_endpoints};
use crate::domain::admin::Permission;
use crate::domain::ids::new_event_id;
use crate::domain::order::rfc3339;
use crate::domain::{EventType, OrderId, OutboxStatus};
use crate::http::i18n::Lang;
use crate::http::state::AppState;
use crate::service::admin::{self as auth, Reauth};
use crate::service::staff::{self as staff_service, StaffError};
use crate::webhooks::dispatcher::{http_client, post_signed};

pub const PAGE_SIZE: u32 = 50;

/// The filter as typed.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub status: String,
    pub event: String,
    pub order: String,
    pub url: String,
    pub from: String,
    pub to: String,
    pub before: Option<i64>,
}

impl Params {
    fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Params {
        let mut p = Params::default();
        for (k, v) in pairs {
            match k.as_str() {
                "status" => p.status = v,
                "event" => p.event = v,
                "order" => p.order = v,
                "url" => p.url = v,
                "from" => p.from = v,
                "to" => p.to = v,
                "before" => p.before = v.parse().ok(),
                _ => {}
            }
        }
        p
    }

    pub fn canonical(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &self.status),
            ("event", &self.event),
            ("order", &self.order),
            ("url", &self.url),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if !v.is_empty() {
                out.append_pair(k, v);
            }
        }
        out.finish()
    }

    fn url(&self, before: Option<i64>) -> String {
        let mut q = self.canonical();
        if let Some(id) = before {
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(&format!("before={id}"));
        }
        if q.is_empty() {
            "/admin/webhooks".to_owned()
        } else {
            format!("/admin/webhooks?{q}")
        }
    }

    fn filter(&self, tz: chrono_tz::Tz, base: &Base) -> Result<DeliveryFilter, Vec<String>> {
        let mut problems = Vec::new();
        let mut bad = |what: &str| {
            problems.push(format!(
                "{} {what:?}",
                base.tr("Not a valid choice:", "无效的选项：")
            ))
        };
        let status = optional::<OutboxStatus>(&self.status, &mut bad);
        let event_type = optional::<EventType>(&self.event, &mut bad).map(|e| e.as_str().to_owned());
        let order_id = match self.order.as_str() {
            "" => None,
            o => OrderId::parse(o).map_err(|_| bad(o)).ok(),
        };
        if self.url.len() > 2048 {
            bad("url");
        }
        let from = bound(&self.from, tz, false, &mut bad);
        let before = bound(&self.to, tz, true, &mut bad);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(DeliveryFilter {
            status,
            event_type,
            order_id,
            url: Some(self.url.clone()).filter(|u| !u.is_empty()),
            from,
            before,
            before_id: self.before,
        })
    }
}

pub struct AttemptRow {
    pub at: String,
    pub url: String,
    pub answer: String,
    pub ok: bool,
    pub latency_ms: i64,
}

pub struct DeliveryRow {
    pub event_id: String,
    pub event_type: &'static str,
    pub order_id: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub created: String,
    pub created_iso: String,
    pub url: String,
    pub last_error: String,
    pub attempts: Vec<AttemptRow>,
    pub resendable: bool,
}

pub struct EndpointRow {
    pub url: String,
    pub health: String,
    pub disabled: bool,
    pub last_success: String,
    pub failing_since: String,
}

pub struct SecretRow {
    pub masked: String,
    pub revealed: Option<String>,
    pub note: String,
}

#[derive(Template)]
#[template(path = "admin/webhooks.html")]
struct WebhooksPage {
    base: Base,
    f: Params,
    statuses: Vec<Choice>,
    events: Vec<Choice>,
    problems: Vec<String>,
    rows: Vec<DeliveryRow>,
    endpoints: Vec<EndpointRow>,
    secrets: Vec<SecretRow>,
    configured_secret: bool,
    next_url: Option<String>,
    first_url: Option<String>,
    notice: Option<(bool, String)>,
    may_resend: bool,
    may_manage: bool,
}

fn status_class(s: OutboxStatus) -> &'static str {
    match s {
        OutboxStatus::Delivered => "st-paid",
        OutboxStatus::Pending | OutboxStatus::Delivering => "st-pending",
        OutboxStatus::Skipped => "st-closed",
        OutboxStatus::Failed => "st-refunded",
    }
}

/// The prefix and the last four characters only: enough to tell secrets apart (every
/// role sees it), too little to help guess one.
fn mask(secret: &str) -> String {
    let prefix = if secret.starts_with("whsec_") {
        "whsec_"
    } else {
        ""
    };
    let chars: Vec<char> = secret.chars().collect();
    let last: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("{prefix}••••••••{last}")
}

/// Renders the page for `params`, with a notice and the secrets revealed if asked.
async fn page(
    state: &AppState,
    req: &HttpRequest,
    staff: &SignedIn,
    f: Params,
    notice: Option<(bool, String)>,
    reveal: bool,
    status: StatusCode,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(req, Some(&staff.0));
    let tz = state.settings.merchant.timezone;
    let statuses = Choice::any_then(
        base.tr("Any status", "任意状态"),
        &f.status,
        OutboxStatus::ALL.iter().map(|s| (s.as_str(), s.as_str())),
    );
    let events = Choice::any_then(
        base.tr("Any event", "任意事件"),
        &f.event,
        EventType::ALL.iter().map(|e| (e.as_str(), e.as_str())),
    );
    let filter = f.filter(tz, &base);
    let now = state.now();
    let configured = !state.settings.webhooks.secret.is_empty();
    let (rows, endpoints, stored) = {
        let q = filter.clone().ok();
        state
            .db
            .read(move |tx| {
                let rows = match &q {
                    Some(q) => logs::deliveries(tx, q, PAGE_SIZE + 1)?,
                    None => Vec::new(),
                };
                Ok((rows, logs::endpoints(tx)?, logs::signing_secrets(tx, now)?))
            })
            .await
            .map_err(|e| AdminError::internal(base.lang, &e))?
    };
    let more = rows.len() > PAGE_SIZE as usize;
    let shown = &rows[..rows.len().min(PAGE_SIZE as usize)];
    let next_url = shown.last().filter(|_| more).map(|(id, ..)| f.url(Some(*id)));
    let rows = shown
        .iter()
        .map(|(_, url, order_id, d)| DeliveryRow {
            event_id: d.event_id.clone(),
            event_type: d.event_type.as_str(),
            order_id: order_id.to_string(),
            status: d.status.as_str(),
            status_class: status_class(d.status),
            created: local_time(d.created_at, tz),
            created_iso: iso(d.created_at),
            url: url.clone(),
            last_error: d.last_error.clone().unwrap_or_default(),
            attempts: d
                .attempts
                .iter()
                .map(|a| AttemptRow {
                    at: local_time(a.at, tz),
                    url: a.url.clone(),
                    answer: match (a.http_status, &a.error) {
                        (Some(s), _) => format!("HTTP {s}"),
                        (None, Some(e)) => e.clone(),
                        (None, None) => "–".to_owned(),
                    },
                    ok: a.http_status.is_some_and(|s| (200..300).contains(&s)),
                    latency_ms: a.latency_ms,
                })
                .collect(),
            resendable: resendable(d.status),
        })
        .collect();
    let endpoints = endpoints
        .into_iter()
        .map(|e| EndpointRow {
            health: match (e.disabled_at, e.failing_since) {
                (Some(_), _) => base.tr("disabled", "已停用").to_owned(),
                (None, Some(_)) => base.tr("failing", "失败中").to_owned(),
                (None, None) => base.tr("healthy", "正常").to_owned(),
            },
            disabled: e.disabled_at.is_some(),
            last_success: e
                .last_success_at
                .map(|t| local_time(t, tz))
                .unwrap_or_else(|| "–".into()),
            failing_since: e
                .failing_since
                .map(|t| local_time(t, tz))
                .unwrap_or_else(|| "–".into()),
            url: e.url,
        })
        .collect();
    let secrets = if configured {
        let s = state.settings.webhooks.secret.expose().to_owned();
        vec![SecretRow {
            masked: mask(&s),
            revealed: reveal.then(|| s.clone()),
            note: base.tr("from the configuration", "来自配置").to_owned(),
        }]
    } else {
        stored
            .iter()
            .map(|s| SecretRow {
                masked: mask(&s.secret),
                revealed: reveal.then(|| s.secret.clone()),
                note: match s.retire_at {
                    Some(t) => format!("{} {}", base.tr("signs until", "签名至"), local_time(t, tz)),
                    None => base.tr("current", "当前").to_owned(),
                },
            })
            .collect()
    };
    let (problems, status) = match filter {
        Ok(_) => (Vec::new(), status),
        Err(p) => (p, StatusCode::UNPROCESSABLE_ENTITY),
    };
    let page = WebhooksPage {
        first_url: f.before.map(|_| f.url(None)),
        f,
        statuses,
        events,
        problems,
        rows,
        endpoints,
        secrets,
        configured_secret: configured,
        next_url,
        notice,
        may_resend: staff.0.may(Permission::Resend),
        may_manage: staff.0.may(Permission::ManageWebhooks),
        base,
    };
    render(&page, &page.base, status)
}

pub async fn webhooks_page(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
) -> Result<HttpResponse, AdminError> {
    let lang = Base::new(&req, Some(&staff.0)).lang;
    staff.require(Permission::Read, lang)?;
    let f = Params::from_pairs(query_pairs(&req));
    let base = Base::new(&req, Some(&staff.0));
    let notice = query_pairs(&req)
        .into_iter()
        .find(|(k, _)| k == "done")
        .map(|(_, v)| match v.as_str() {
            "resent" => (
                true,
                base.tr(
                    "Queued again; kassa delivers it now.",
                    "已重新排队，kassa 将立即投递。",
                )
                .to_owned(),
            ),
            "reenabled" => (
                true,
                base.tr("The endpoint is enabled again.", "该地址已重新启用。")
                    .to_owned(),
            ),
            "rotated" => (
                true,
                base.tr(
                    "New secret: kassa signs with it and, for 24 hours, with the previous one too.",
                    "已生成新密钥：kassa 用它签名，并在 24 小时内同时用旧密钥签名。",
                )
                .to_owned(),
            ),
            // Only a count is shown: anything else in the address is not echoed.
            n => match n.strip_prefix("matching-").map(str::parse::<u64>) {
                Some(Ok(count)) => (
                    true,
                    format!(
                        "{count} {}",
                        base.tr("failed deliveries queued again.", "条失败的投递已重新排队。")
                    ),
                ),
                _ => (false, String::new()),
            },
        })
        .filter(|(_, text)| !text.is_empty());
    page(&state, &req, &staff, f, notice, false, StatusCode::OK).await
}

fn filter_of(form: &Form) -> Params {
    Params::from_pairs(
        ["status", "event", "order", "url", "from", "to"]
            .iter()
            .filter_map(|k| form.get(k).map(|v| ((*k).to_owned(), v.trim().to_owned()))),
    )
}

pub async fn resend_one(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let (form, mut action) = begin(&state, &req, &staff, &body, Permission::Resend, "webhook.resend").await?;
    let lang = Base::new(&req, Some(&staff.0)).lang;
    let event_id = form.get("event_id").unwrap_or_default().trim().to_owned();
    let lookup = event_id.clone();
    let found = state
        .db
        .read(move |tx| outbox::find_by_event_id(tx, &lookup))
        .await
        .map_err(|e| AdminError::internal(lang, &e))?;
    action.order_id = found.as_ref().map(|r| r.order_id.clone());
    let (id, now) = (event_id.clone(), action.at);
    let queued = found.is_some()
        && state
            .db
            .write(move |tx| outbox::requeue(tx, &id, now))
            .await
            .map_err(|e| AdminError::internal(lang, &e))?;
    let f = filter_of(&form);
    if !queued {
        action
            .record(
                &state,
                "refused",
                Some(format!("delivery {event_id:?} not re-sendable")),
            )
            .await
            .map_err(|e| AdminError::internal(lang, &e))?;
        let base = Base::new(&req, Some(&staff.0));
        let text = base
            .tr(
                "Not re-sent: no such delivery, or it is still being tried.",
                "未重发：没有这条投递，或它仍在重试中。",
            )
            .to_owned();
        return page(
            &state,
            &req,
            &staff,
            f,
            Some((false, text)),
            false,
            StatusCode::CONFLICT,
        )
        .await;
    }
    action
        .record(&state, "done", Some(format!("delivery {event_id} queued again")))
        .await
        .map_err(|e| AdminError::internal(lang, &e))?;
    state.overview.clear();
    Ok(see_other(&with_done(&f, "resent")))
}

fn with_done(f: &Params, done: &str) -> String {
    let q = f.canonical();
    if q.is_empty() {
        format!("/admin/webhooks?done={done}")
    } else {
        format!("/admin/webhooks?{q}&done={done}")
    }
}

pub async fn resend_matching(
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
        Permission::Resend,
        "webhook.resend_matching",
    )
    .await?;
    let base = Base::new(&req, Some(&staff.0));
    let f = filter_of(&form);
    let filter = match f.filter(state.settings.merchant.timezone, &base) {
        Ok(q) => q,
        Err(_) => {
            return page(
                &state,
                &req,
                &staff,
                f,
                None,
                false,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    };
    let now = action.at;
    let n = state
        .db
        .write(move |tx| logs::requeue_failed_matching(tx, &filter, now))
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?;
    let described = match f.canonical() {
        q if q.is_empty() => "every failed delivery".to_owned(),
        q => format!("failed deliveries matching {q}"),
    };
    action
        .record(&state, "done", Some(format!("{n} queued again: {described}")))
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?;
    state.overview.clear();
    Ok(see_other(&with_done(&f, &format!("matching-{n}"))))
}

pub async fn reenable(
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
        Permission::ManageWebhooks,
        "webhook.reenable",
    )
    .await?;
    let lang = Base::new(&req, Some(&staff.0)).lang;
    let url = form.get("url").unwrap_or_default().to_owned();
    let target = url.clone();
    let was = state
        .db
        .write(move |tx| logs::reenable_endpoint(tx, &target))
        .await
        .map_err(|e| AdminError::internal(lang, &e))?;
    action
        .record(&state, if was { "done" } else { "refused" }, Some(url))
        .await
        .map_err(|e| AdminError::internal(lang, &e))?;
    state.overview.clear();
    Ok(see_other(&with_done(
        &Params::default(),
        if was { "reenabled" } else { "none" },
    )))
}

pub async fn ping(
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
        Permission::ManageWebhooks,
        "webhook.ping",
    )
    .await?;
    let base = Base::new(&req, Some(&staff.0));
    let url = form.get("url").unwrap_or_default().to_owned();
    // Only an endpoint kassa knows: the page must not become a way to make the server
    // send requests anywhere.
    let target = url.clone();
    let known = state.settings.webhooks.url.as_deref() == Some(url.as_str())
        || state
            .db
            .read(move |tx| webhook_endpoints::find(tx, &target))
            .await
            .map_err(|e| AdminError::internal(base.lang, &e))?
            .is_some();
    if !known {
        action
            .record(&state, "refused", Some(format!("unknown endpoint {url}")))
            .await
            .map_err(|e| AdminError::internal(base.lang, &e))?;
        let text = base
            .tr("Not an endpoint kassa delivers to.", "不是 kassa 投递的地址。")
            .to_owned();
        return page(
            &state,
            &req,
            &staff,
            Params::default(),
            Some((false, text)),
            false,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let now = action.at;
    let secrets = crate::webhooks::signing_secrets(&state.db, &state.settings, now)
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?;
    let http = http_client(state.settings.webhooks.allow_private)
        .map_err(|e| AdminError::internal(base.lang, &std::io::Error::other(e)))?;
    let event_id = new_event_id();
    let payload = json!({
        "type": "ping",
        "timestamp": rfc3339(now),
        "data": {"message": "kassa webhook test", "merchant": state.settings.merchant.name},
    })
    .to_string();
    let answer = post_signed(&http, &url, &event_id, &secrets, &payload, now).await;
    let ok = answer.status.is_some_and(|s| (200..300).contains(&s));
    let said = match (answer.status, &answer.error) {
        (Some(s), _) => format!("HTTP {s} in {} ms", answer.latency_ms),
        (None, Some(e)) => format!("{e} after {} ms", answer.latency_ms),
        (None, None) => "no answer".to_owned(),
    };
    if ok {
        let target = url.clone();
        state
            .db
            .write(move |tx| webhook_endpoints::succeeded(tx, &target, now))
            .await
            .map_err(|e| AdminError::internal(base.lang, &e))?;
    }
    action
        .record(
            &state,
            if ok { "done" } else { "failed" },
            Some(format!("{url}: {said}")),
        )
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?;
    let text = format!("ping {url} ({event_id}): {said}");
    page(
        &state,
        &req,
        &staff,
        Params::default(),
        Some((ok, text)),
        false,
        StatusCode::OK,
    )
    .await
}

pub async fn reveal_secret(
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
        Permission::ManageWebhooks,
        "webhook.secret_reveal",
    )
    .await?;
    let base = Base::new(&req, Some(&staff.0));
    let password = form.get("password").unwrap_or_default().to_owned();
    let refusal = match auth::confirm_password(&state, &action, password)
        .await
        .map_err(|e| AdminError::internal(base.lang, &e))?
    {
        Reauth::Confirmed => None,
        Reauth::Refused => Some((
            StatusCode::FORBIDDEN,
            base.tr(
                "Wrong password; the secret stays hidden.",
                "密码错误，密钥保持隐藏。",
            )
            .to_owned(),
            None,
        )),
        Reauth::Locked { until } => {
            let seconds = (((until - state.now()).num_milliseconds().max(0) + 999) / 1000).max(1);
            Some((
                StatusCode::TOO_MANY_REQUESTS,
                match base.lang {
                    Lang::En => format!(
                        "Too many wrong passwords; the secret stays hidden. Try again in {seconds} s."
                    ),
                    _ => format!("密码错误次数过多，密钥保持隐藏。请在 {seconds} 秒后再试。"),
                },
                Some(seconds),
            ))
        }
    };
    if let Some((status, text, retry_after)) = refusal {
        let mut response = page(
            &state,
            &req,
            &staff,
            Params::default(),
            Some((false, text)),
            false,
            status,
        )
        .await?;
        if let Some(value) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }
    page(
        &state,
        &req,
        &staff,
        Params::default(),
        None,
        true,
        StatusCode::OK,
    )
    .await
}

pub async fn rotate_secret(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let (_, action) = begin(
        &state,
        &req,
        &staff,
        &body,
        Permission::ManageWebhooks,
        "webhook.rotate_secret",
    )
    .await?;
    let base = Base::new(&req, Some(&staff.0));
    match staff_service::rotate_webhook_secret(&state, &action).await {
        Ok(_) => Ok(see_other("/admin/webhooks?done=rotated#secret")),
        Err(StaffError::Refused(why)) => {
            page(
                &state,
                &req,
                &staff,
                Params::default(),
                Some((false, why.to_string())),
                false,
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(StaffError::Admin(e)) => Err(AdminError::internal(base.lang, &e)),
    }
}
