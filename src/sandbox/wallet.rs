//! The simulated wallet: what a phone shows after scanning a sandbox QR code, Alipay's
//! or WeChat Pay's. Opening it "scans" the code (an Alipay trade now exists); Pay
//! completes it and queues the platform's signed notification; Cancel leaves it
//! waiting, as a buyer who closes the cashier does. Every form carries the page's
//! anti-forgery token (`access`).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::access;
use super::alipay::gateway::new_trade_no;
use super::alipay::notifier;
use super::faults::{self, Faults};
use super::wechat::notifier as wechat_notifier;
use super::wechat::{is_wechat, new_transaction_id, trade_state};
use super::Sandbox;
use crate::db::sandbox::{self as store, Delivery, SandboxTrade, SandboxTradeStatus as Status};
use crate::db::DbError;
use crate::domain::{Amount, Currency};
use crate::http::admin::Form;
use crate::http::error::{Missing, PageError};

#[derive(Template)]
#[template(path = "sandbox/wallet.html")]
struct WalletPage<'a> {
    merchant: &'a str,
    trade: &'a SandboxTrade,
    amount: String,
    message: Option<&'a str>,
    payable: bool,
    faults: Faults,
    deliveries: &'a [Delivery],
    /// A WeChat Pay trade: the page looks like WeChat's (green) instead of Alipay's.
    wechat: bool,
    /// The trade's status in its platform's words (`WAIT_BUYER_PAY`, `NOTPAY`).
    state: &'static str,
    /// Every form's anti-forgery token.
    csrf: String,
    /// A viewer on this machine changes switches without the sandbox token.
    local: bool,
    css: &'static str,
}

#[derive(Deserialize)]
pub struct WalletQuery {
    cancelled: Option<String>,
}

/// Logs a storage failure and answers with the 500 page.
fn failed(req: &HttpRequest) -> impl Fn(DbError) -> PageError + '_ {
    |e| PageError::internal(&e).for_request(req)
}

/// The trade a wallet link names, or the 404 page.
async fn trade_by_token(
    sandbox: &Sandbox,
    req: &HttpRequest,
    token: String,
) -> Result<SandboxTrade, PageError> {
    sandbox
        .core
        .db
        .read(move |c| store::find_trade_by_token(c, &token))
        .await
        .map_err(failed(req))?
        .ok_or_else(|| PageError::not_found(Missing::SandboxPayment).for_request(req))
}

pub async fn show(
    sandbox: web::Data<Sandbox>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<WalletQuery>,
) -> Result<HttpResponse, PageError> {
    let db = &sandbox.core.db;
    let token = path.into_inner();
    let now = sandbox.core.now();
    let trade = trade_by_token(&sandbox, &req, token.clone()).await?;
    // Scanning creates the trade; a deadline that passed closes it (and Alipay tells
    // the merchant).
    let no = trade.out_trade_no.clone();
    let scanned = db
        .write(move |c| {
            store::move_trade(
                c,
                &no,
                &[Status::NotScanned],
                Status::WaitBuyerPay,
                Some(&new_trade_no(now)),
                now,
            )?;
            store::find_trade(c, &no)
        })
        .await
        .map_err(failed(&req))?
        .ok_or_else(|| PageError::not_found(Missing::SandboxPayment).for_request(&req))?;
    let trade = if scanned.status == Status::WaitBuyerPay && now > scanned.deadline {
        let no = scanned.out_trade_no.clone();
        let closed = db
            .write(move |c| {
                store::move_trade(c, &no, &[Status::WaitBuyerPay], Status::TradeClosed, None, now)
            })
            .await
            .map_err(failed(&req))?;
        // Alipay tells the merchant about the close; WeChat Pay sends no close notice.
        if closed && !is_wechat(&scanned) {
            notifier::enqueue(&sandbox, &scanned, Status::TradeClosed, None, now)
                .await
                .map_err(failed(&req))?;
            SandboxTrade {
                status: Status::TradeClosed,
                ..scanned
            }
        } else {
            scanned
        }
    } else {
        scanned
    };
    let no = trade.out_trade_no.clone();
    let deliveries = db
        .read(move |c| store::list_deliveries(c, &no))
        .await
        .unwrap_or_default();
    let own_faults = faults::load(db, faults::trade_scope(&trade.out_trade_no))
        .await
        .unwrap_or_default();
    let message = match trade.status {
        Status::TradeSuccess => Some("Paid. The merchant is being notified."),
        Status::TradeClosed if trade.paid_at.is_some() => Some("Paid, then fully refunded."),
        Status::TradeClosed => Some("This payment is closed or expired and can no longer be paid."),
        _ if query.cancelled.is_some() => {
            Some("Payment cancelled. You can still pay until the order expires.")
        }
        _ => None,
    };
    let amount = Amount::from_minor(trade.total_amount, Currency::Cny)
        .map(Amount::display_with_symbol)
        .unwrap_or_default();
    let page = WalletPage {
        merchant: &sandbox.merchant_name,
        trade: &trade,
        amount,
        message,
        payable: trade.status == Status::WaitBuyerPay,
        faults: own_faults,
        deliveries: &deliveries,
        wechat: is_wechat(&trade),
        state: if is_wechat(&trade) {
            trade_state(&trade)
        } else {
            trade.status.as_str()
        },
        csrf: access::csrf_token(&sandbox, &token),
        local: access::is_local(&req),
        css: access::WALLET_CSS,
    };
    let html = page
        .render()
        .map_err(|e| PageError::internal(&e).for_request(&req))?;
    Ok(access::with_page_headers(&mut HttpResponse::Ok())
        .content_type("text/html; charset=utf-8")
        .body(html))
}

/// The form came from this wallet link's page. Read whatever its content type claims:
/// a missing or unreadable body is a form without its anti-forgery token, refused as such.
fn from_wallet(sandbox: &Sandbox, token: &str, form: &Form) -> bool {
    access::csrf_ok(sandbox, token, form.get(access::CSRF_FIELD))
}

fn back_to(token: &str, query: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/sandbox/wallet/{token}{query}")))
        .finish()
}

pub async fn pay(
    sandbox: web::Data<Sandbox>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, PageError> {
    let token = path.into_inner();
    if !from_wallet(&sandbox, &token, &Form::parse(&body)) {
        return Ok(access::forged());
    }
    let now = sandbox.core.now();
    let trade = trade_by_token(&sandbox, &req, token.clone()).await?;
    if now > trade.deadline || !matches!(trade.status, Status::NotScanned | Status::WaitBuyerPay) {
        return Ok(back_to(&token, ""));
    }
    // The payment and its notification commit together.
    let wechat = is_wechat(&trade);
    let trade_no = trade.trade_no.clone().unwrap_or_else(|| {
        if wechat {
            new_transaction_id(now)
        } else {
            new_trade_no(now)
        }
    });
    let paid = SandboxTrade {
        status: Status::TradeSuccess,
        trade_no: Some(trade_no.clone()),
        paid_at: Some(now),
        ..trade
    };
    let prepared = if wechat {
        wechat_notifier::prepare_payment(&sandbox, &paid, now)
            .await
            .map_err(failed(&req))?
            .map(Prepared::Wechat)
    } else {
        notifier::prepare(&sandbox, &paid, Status::TradeSuccess, None, now)
            .await
            .map_err(failed(&req))?
            .map(Prepared::Alipay)
    };
    let no = paid.out_trade_no.clone();
    let moved = sandbox
        .core
        .db
        .write(move |c| {
            let moved = store::move_trade(
                c,
                &no,
                &[Status::NotScanned, Status::WaitBuyerPay],
                Status::TradeSuccess,
                Some(&trade_no),
                now,
            )?;
            if moved {
                match &prepared {
                    Some(Prepared::Alipay(p)) => p.store(c, now)?,
                    Some(Prepared::Wechat(p)) => p.store(c, now)?,
                    None => {}
                }
            }
            Ok(moved)
        })
        .await
        .map_err(failed(&req))?;
    if moved {
        sandbox.wake.notify_one();
    }
    Ok(back_to(&token, ""))
}

/// A payment's notification, as the trade's platform sends it.
enum Prepared {
    Alipay(notifier::Prepared),
    Wechat(wechat_notifier::Prepared),
}

pub async fn cancel(sandbox: web::Data<Sandbox>, path: web::Path<String>, body: web::Bytes) -> HttpResponse {
    let token = path.into_inner();
    if !from_wallet(&sandbox, &token, &Form::parse(&body)) {
        return access::forged();
    }
    back_to(&token, "?cancelled=1")
}

fn number(field: Option<&str>) -> Result<u32, String> {
    match field.map(str::trim) {
        None | Some("") => Ok(0),
        Some(t) => t.parse().map_err(|_| format!("{t:?} is not a whole number")),
    }
}

pub async fn set_faults(
    sandbox: web::Data<Sandbox>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, PageError> {
    let token = path.into_inner();
    let form = Form::parse(&body);
    if !from_wallet(&sandbox, &token, &form) {
        return Ok(access::forged());
    }
    if !access::may_drive(&req, &sandbox, form.get(access::TOKEN_FIELD)) {
        return Ok(access::with_page_headers(&mut HttpResponse::Forbidden())
            .content_type("text/plain; charset=utf-8")
            .body(format!(
                "403 Forbidden: {}: enter it in the form's Sandbox token field. Nothing was changed.\n",
                access::WHO_MAY_DRIVE
            )));
    }
    let trade = trade_by_token(&sandbox, &req, token.clone()).await?;
    let on = |name: &str| form.get(name).is_some();
    let parsed = (|| -> Result<Faults, String> {
        let f = Faults {
            delay_seconds: number(form.get("delay_seconds"))?,
            duplicates: number(form.get("duplicates"))?,
            drop_first: number(form.get("drop_first"))?,
            tamper_amount: on("tamper_amount"),
            bad_signature: on("bad_signature"),
            out_of_order: on("out_of_order"),
            stale_timestamp: on("stale_timestamp"),
            certificate_mode: on("certificate_mode"),
        };
        faults::usable(&f, &sandbox)?;
        Ok(f)
    })();
    let faults = parsed.map_err(|m| PageError::invalid(m).for_request(&req))?;
    faults::store(&sandbox.core.db, faults::trade_scope(&trade.out_trade_no), faults)
        .await
        .map_err(failed(&req))?;
    Ok(back_to(&token, ""))
}
