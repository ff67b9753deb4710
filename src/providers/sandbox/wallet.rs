//! The simulated wallet: what a phone shows after scanning a sandbox QR code. Opening
//! it "scans" the code (the trade now exists, as on Alipay); Pay completes it and
//! queues the signed notification; Cancel leaves it waiting, as a buyer who closes the
//! cashier does.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::faults::{self, Faults};
use super::gateway::new_trade_no;
use super::notifier;
use crate::db::sandbox::{self as store, Delivery, SandboxTrade};
use crate::domain::{Amount, Currency};
use crate::state::AppState;

pub fn sandbox_off() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("The sandbox is off on this server ([sandbox] enabled).\n")
}

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
}

#[derive(Deserialize)]
pub struct WalletQuery {
    cancelled: Option<String>,
}

fn page_error(status: actix_web::http::StatusCode, text: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .body(text.to_owned())
}

fn internal(e: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %e, "sandbox wallet failed");
    page_error(
        actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
        "The sandbox wallet failed; see the server log.",
    )
}

async fn trade_by_token(state: &AppState, token: String) -> Result<Option<SandboxTrade>, crate::db::DbError> {
    state
        .db
        .read(move |c| store::find_trade_by_token(c, &token))
        .await
}

pub async fn show(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: web::Query<WalletQuery>,
) -> HttpResponse {
    let Some(sandbox) = state.sandbox.clone() else {
        return sandbox_off();
    };
    let token = path.into_inner();
    let now = state.clock.now();
    let trade = match trade_by_token(&state, token.clone()).await {
        Ok(Some(t)) => t,
        Ok(None) => return page_error(actix_web::http::StatusCode::NOT_FOUND, "No such sandbox payment."),
        Err(e) => return internal(e),
    };
    // Scanning creates the trade; a deadline that passed closes it (and Alipay tells
    // the merchant).
    let no = trade.out_trade_no.clone();
    let scanned = match state
        .db
        .write(move |c| {
            store::move_trade(
                c,
                &no,
                &["NOT_SCANNED"],
                "WAIT_BUYER_PAY",
                Some(&new_trade_no(now)),
                now,
            )?;
            store::find_trade(c, &no)
        })
        .await
    {
        Ok(Some(t)) => t,
        Ok(None) => return page_error(actix_web::http::StatusCode::NOT_FOUND, "No such sandbox payment."),
        Err(e) => return internal(e),
    };
    let trade = if scanned.status == "WAIT_BUYER_PAY" && now > scanned.deadline {
        let no = scanned.out_trade_no.clone();
        match state
            .db
            .write(move |c| store::move_trade(c, &no, &["WAIT_BUYER_PAY"], "TRADE_CLOSED", None, now))
            .await
        {
            Ok(true) => {
                if let Err(e) = notifier::enqueue(&state, &sandbox, &scanned, "TRADE_CLOSED", None, now).await
                {
                    return internal(e);
                }
                SandboxTrade {
                    status: "TRADE_CLOSED".into(),
                    ..scanned
                }
            }
            Ok(false) => scanned,
            Err(e) => return internal(e),
        }
    } else {
        scanned
    };
    let no = trade.out_trade_no.clone();
    let deliveries = state
        .db
        .read(move |c| store::list_deliveries(c, &no))
        .await
        .unwrap_or_default();
    let own_faults = faults::load(&state, format!("trade:{}", trade.out_trade_no))
        .await
        .unwrap_or_default();
    let message = match trade.status.as_str() {
        "TRADE_SUCCESS" => Some("Paid. The merchant is being notified."),
        "TRADE_CLOSED" if trade.paid_at.is_some() => Some("Paid, then fully refunded."),
        "TRADE_CLOSED" => Some("This payment is closed or expired and can no longer be paid."),
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
        payable: trade.status == "WAIT_BUYER_PAY",
        faults: own_faults,
        deliveries: &deliveries,
    };
    match page.render() {
        Ok(html) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(html),
        Err(e) => internal(e),
    }
}

fn back_to(token: &str, query: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/sandbox/wallet/{token}{query}")))
        .finish()
}

pub async fn pay(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let Some(sandbox) = state.sandbox.clone() else {
        return sandbox_off();
    };
    let token = path.into_inner();
    let now = state.clock.now();
    let trade = match trade_by_token(&state, token.clone()).await {
        Ok(Some(t)) => t,
        Ok(None) => return page_error(actix_web::http::StatusCode::NOT_FOUND, "No such sandbox payment."),
        Err(e) => return internal(e),
    };
    if now > trade.deadline {
        return back_to(&token, "");
    }
    if !matches!(trade.status.as_str(), "NOT_SCANNED" | "WAIT_BUYER_PAY") {
        return back_to(&token, "");
    }
    // The payment and its notification commit together.
    let trade_no = trade.trade_no.clone().unwrap_or_else(|| new_trade_no(now));
    let paid = SandboxTrade {
        status: "TRADE_SUCCESS".into(),
        trade_no: Some(trade_no.clone()),
        paid_at: Some(now),
        ..trade
    };
    let prepared = match notifier::prepare(&state, &sandbox, &paid, "TRADE_SUCCESS", None, now).await {
        Ok(p) => p,
        Err(e) => return internal(e),
    };
    let no = paid.out_trade_no.clone();
    let stored = state
        .db
        .write(move |c| {
            let moved = store::move_trade(
                c,
                &no,
                &["NOT_SCANNED", "WAIT_BUYER_PAY"],
                "TRADE_SUCCESS",
                Some(&trade_no),
                now,
            )?;
            if moved {
                if let Some(p) = &prepared {
                    p.store(c, now)?;
                }
            }
            Ok(moved)
        })
        .await;
    match stored {
        Ok(true) => {
            sandbox.wake.notify_one();
            back_to(&token, "")
        }
        Ok(false) => back_to(&token, ""),
        Err(e) => internal(e),
    }
}

pub async fn cancel(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    if state.sandbox.is_none() {
        return sandbox_off();
    }
    back_to(&path.into_inner(), "?cancelled=1")
}

#[derive(Deserialize)]
pub struct FaultsForm {
    #[serde(default)]
    delay_seconds: Option<String>,
    #[serde(default)]
    duplicates: Option<String>,
    #[serde(default)]
    drop_first: Option<String>,
    #[serde(default)]
    tamper_amount: Option<String>,
    #[serde(default)]
    bad_signature: Option<String>,
    #[serde(default)]
    out_of_order: Option<String>,
}

fn number(field: &Option<String>) -> Result<u32, String> {
    match field.as_deref().map(str::trim) {
        None | Some("") => Ok(0),
        Some(t) => t.parse().map_err(|_| format!("{t:?} is not a whole number")),
    }
}

pub async fn set_faults(
    state: web::Data<AppState>,
    path: web::Path<String>,
    form: web::Form<FaultsForm>,
) -> HttpResponse {
    if state.sandbox.is_none() {
        return sandbox_off();
    }
    let token = path.into_inner();
    let trade = match trade_by_token(&state, token.clone()).await {
        Ok(Some(t)) => t,
        Ok(None) => return page_error(actix_web::http::StatusCode::NOT_FOUND, "No such sandbox payment."),
        Err(e) => return internal(e),
    };
    let parsed = (|| -> Result<Faults, String> {
        let f = Faults {
            delay_seconds: number(&form.delay_seconds)?,
            duplicates: number(&form.duplicates)?,
            drop_first: number(&form.drop_first)?,
            tamper_amount: form.tamper_amount.is_some(),
            bad_signature: form.bad_signature.is_some(),
            out_of_order: form.out_of_order.is_some(),
        };
        f.check()?;
        Ok(f)
    })();
    match parsed {
        Ok(f) => match faults::store(&state, format!("trade:{}", trade.out_trade_no), f).await {
            Ok(()) => back_to(&token, ""),
            Err(e) => internal(e),
        },
        Err(m) => page_error(actix_web::http::StatusCode::UNPROCESSABLE_ENTITY, &m),
    }
}
