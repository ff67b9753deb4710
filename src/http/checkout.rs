//! The customer's checkout page (`/pay/{id}`), its status endpoint and its live event
//! stream. Works without JavaScript (a 5 s refresh while pending); with it, the page
//! turns to "paid" without a reload and returns to the shop.

use std::convert::Infallible;
use std::time::Duration as StdDuration;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

use super::assets::AssetUrls;
use super::error::{ApiError, Missing, PageError};
use super::i18n::{self, Lang, Texts};
use super::page_headers;
use super::qr;
use super::state::AppState;
use crate::db::orders;
use crate::domain::{Order, OrderId, OrderStatus, ProviderKind};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/pay")
            .wrap(page_headers())
            .service(web::resource("/{id}").route(web::get().to(show_checkout)))
            .service(web::resource("/{id}/status").route(web::get().to(checkout_status)))
            .service(web::resource("/{id}/events").route(web::get().to(checkout_events))),
    );
}

/// What the customer is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    Pending,
    Paid,
    LatePaid,
    Expired,
    Closed,
    Refunded,
}

impl PageState {
    pub fn of(order: &Order, now: DateTime<Utc>) -> PageState {
        match order.status {
            OrderStatus::Pending if now >= order.expires_at => PageState::Expired,
            OrderStatus::Pending => PageState::Pending,
            OrderStatus::Paid if order.late_payment => PageState::LatePaid,
            OrderStatus::Paid => PageState::Paid,
            OrderStatus::Closed if order.closed_at.is_some_and(|t| t >= order.expires_at) => {
                PageState::Expired
            }
            OrderStatus::Closed => PageState::Closed,
            OrderStatus::PartiallyRefunded | OrderStatus::Refunded => PageState::Refunded,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PageState::Pending => "pending",
            PageState::Paid => "paid",
            PageState::LatePaid => "late_paid",
            PageState::Expired => "expired",
            PageState::Closed => "closed",
            PageState::Refunded => "refunded",
        }
    }
}

#[derive(Template)]
#[template(path = "checkout/pay.html")]
struct PayPage<'a> {
    lang: Lang,
    t: &'static Texts,
    assets: AssetUrls,
    sandbox: bool,
    merchant: &'a str,
    order_id: &'a str,
    out_trade_no: &'a str,
    subject: &'a str,
    amount: String,
    state: PageState,
    provider_class: &'static str,
    scan_with: &'static str,
    open_in_app: &'static str,
    /// Shown on phones instead of an app link the browser cannot open.
    phone_note: Option<&'static str>,
    qr_svg: String,
    qr_code: &'a str,
    expires_in: i64,
    expires_at_iso: String,
    expires_at_local: String,
    return_url: Option<String>,
    refresh: bool,
    redirect_now: Option<String>,
}

/// `return_url` with `order_id=<id>` added to its query, and nothing else: the
/// merchant's own query text is kept byte for byte (it may be signed).
pub fn return_url_for(return_url: &str, order_id: &OrderId) -> Option<String> {
    let mut url = url::Url::parse(return_url).ok()?;
    let query = match url.query().filter(|q| !q.is_empty()) {
        Some(q) => format!("{q}&order_id={order_id}"),
        None => format!("order_id={order_id}"),
    };
    url.set_query(Some(&query));
    Some(url.into())
}

fn html(body: String, lang: Lang, remember: bool, secure: bool) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    response
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_LANGUAGE, lang.tag()));
    if remember {
        let cookie = Cookie::build(i18n::COOKIE, lang.tag())
            .path("/")
            .max_age(actix_web::cookie::time::Duration::days(365))
            .same_site(SameSite::Lax)
            .http_only(true)
            .secure(secure)
            .finish();
        response.cookie(cookie);
    }
    response.body(body)
}

async fn find_order(state: &AppState, raw: &str) -> Result<Option<Order>, crate::db::DbError> {
    let Ok(id) = OrderId::parse(raw) else {
        return Ok(None);
    };
    state.db.read(move |c| orders::find_by_id(c, &id)).await
}

async fn show_checkout(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, PageError> {
    let (lang, remember) = i18n::negotiate(&req);
    let t = lang.texts();
    let secure = state.public_url().starts_with("https://");
    let failed = |e: &(dyn std::error::Error + 'static)| PageError::internal(e).for_request(&req);
    let order = find_order(&state, &path)
        .await
        .map_err(|e| failed(&e))?
        .ok_or_else(|| PageError::not_found(Missing::Order).for_request(&req))?;
    let now = state.now();
    let page_state = PageState::of(&order, now);
    let (provider_class, scan_with, open_in_app, qr_label) = match order.provider {
        ProviderKind::Alipay => ("alipay", t.scan_alipay, t.open_alipay, t.qr_label_alipay),
        ProviderKind::Wechat => ("wechat", t.scan_wechat, t.open_wechat, t.qr_label_wechat),
    };
    // Only a payable order gets its QR string on the page, even in a hidden link.
    let qr_code = order
        .qr_code
        .clone()
        .filter(|_| page_state == PageState::Pending)
        .unwrap_or_default();
    let qr_svg = if page_state == PageState::Pending && !qr_code.is_empty() {
        qr::svg(&qr_code, qr_label).map_err(|e| failed(&e))?
    } else {
        String::new()
    };
    let tz = state.settings.merchant.timezone;
    let return_url = order
        .return_url
        .as_deref()
        .and_then(|u| return_url_for(u, &order.id));
    let page = PayPage {
        lang,
        t,
        assets: AssetUrls::get(),
        sandbox: state.sandbox_payments,
        merchant: &state.settings.merchant.name,
        order_id: order.id.as_str(),
        out_trade_no: &order.out_trade_no,
        subject: &order.subject,
        amount: order.amount.display_with_symbol(),
        state: page_state,
        provider_class,
        scan_with,
        open_in_app,
        // A Native QR code (`weixin://wxpay/…`) opens nowhere but in WeChat's scanner;
        // the sandbox's wallet link still opens in the browser.
        phone_note: (order.provider == ProviderKind::Wechat && !qr_code.starts_with("http"))
            .then_some(t.wechat_phone_note),
        qr_svg,
        qr_code: &qr_code,
        expires_in: seconds_left(&order, now),
        expires_at_iso: crate::domain::order::rfc3339(order.expires_at),
        expires_at_local: order
            .expires_at
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M %Z")
            .to_string(),
        redirect_now: return_url.clone().filter(|_| page_state == PageState::Paid),
        return_url,
        refresh: page_state == PageState::Pending,
    };
    let body = page.render().map_err(|e| failed(&e))?;
    Ok(html(body, lang, remember, secure))
}

#[derive(Serialize)]
struct StatusBody {
    status: &'static str,
    expires_in: i64,
}

fn status_body(order: &Order, now: DateTime<Utc>) -> StatusBody {
    StatusBody {
        status: PageState::of(order, now).as_str(),
        expires_in: seconds_left(order, now),
    }
}

/// Whole seconds until expiry, rounded up (stored times have millisecond precision).
fn seconds_left(order: &Order, now: DateTime<Utc>) -> i64 {
    let ms = (order.expires_at - now).num_milliseconds().max(0);
    (ms + 999) / 1000
}

fn status_not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({"status": "not_found"}))
}

async fn checkout_status(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(match find_order(&state, &path).await? {
        Some(order) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(status_body(&order, state.now())),
        None => status_not_found(),
    })
}

/// How long the stream waits for a signal before re-reading the order anyway; also
/// its keep-alive interval.
const HEARTBEAT: StdDuration = StdDuration::from_secs(15);

struct Stream {
    state: web::Data<AppState>,
    id: OrderId,
    signals: broadcast::Receiver<crate::core::Changed>,
    stopping: watch::Receiver<bool>,
    last: Option<&'static str>,
    done: bool,
}

/// Returns once a graceful stop has begun; never, when no stop can come (the sender is
/// gone with an application that was never run).
async fn until_stopping(stopping: &mut watch::Receiver<bool>) {
    if stopping.wait_for(|stopping| *stopping).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn signal_for(signals: &mut broadcast::Receiver<crate::core::Changed>, id: &OrderId) {
    loop {
        match signals.recv().await {
            Ok(changed) if changed.concerns(id) => return,
            Ok(_) => {}
            // Missed some: re-read to be sure.
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

async fn next_event(mut s: Stream) -> Option<(Result<Bytes, Infallible>, Stream)> {
    if s.done || *s.stopping.borrow() {
        return None;
    }
    loop {
        let id = s.id.clone();
        let order = match s.state.db.read(move |c| orders::find_by_id(c, &id)).await {
            Ok(Some(o)) => o,
            _ => return None,
        };
        let now = s.state.now();
        let body = status_body(&order, now);
        if s.last != Some(body.status) {
            s.last = Some(body.status);
            // An expired page keeps listening: a payment made just before the
            // provider's deadline may still be recorded after ours.
            s.done = !matches!(body.status, "pending" | "expired");
            let data = serde_json::to_string(&body).unwrap_or_default();
            return Some((Ok(Bytes::from(format!("event: status\ndata: {data}\n\n"))), s));
        }
        // Wake at expiry too, so an expiring page is told without waiting a heartbeat.
        let until_expiry =
            (order.expires_at - now).to_std().unwrap_or_default() + StdDuration::from_millis(200);
        let wait = HEARTBEAT.min(until_expiry);
        // At a stop the stream ends (the page's EventSource reconnects to the next
        // start): the server waits for open responses before it exits.
        let signalled = tokio::select! {
            () = until_stopping(&mut s.stopping) => return None,
            waited = tokio::time::timeout(wait, signal_for(&mut s.signals, &s.id)) => waited.is_ok(),
        };
        if !signalled && wait == HEARTBEAT {
            return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), s));
        }
    }
}

async fn checkout_events(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Some(order) = find_order(&state, &path).await? else {
        return Ok(status_not_found());
    };
    let stream = Stream {
        signals: state.hooks.subscribe(),
        stopping: state.stopping.clone(),
        state,
        id: order.id,
        last: None,
        done: false,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures_util::stream::unfold(stream, next_event)))
}
