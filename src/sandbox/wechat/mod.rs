//! The simulated WeChat Pay (API v3, Native): its API under `/sandbox/wechat/v3/…` and
//! its notifier. Trades live in the sandbox's tables beside Alipay's, told apart by
//! their app id.

pub mod gateway;
pub mod notifier;
pub mod views;

use actix_web::HttpResponse;
use chrono::{DateTime, Utc};

use super::keys::{WECHAT_APPID, WECHAT_PUBLIC_KEY_ID};
use super::Sandbox;
use crate::db::sandbox::{SandboxTrade, SandboxTradeStatus as Status};
use crate::providers::wechat::sign::{new_nonce, platform_message, SCHEMA};

/// True for a trade made through the WeChat side.
pub fn is_wechat(trade: &SandboxTrade) -> bool {
    trade.app_id == WECHAT_APPID
}

/// WeChat's `trade_state` for a stored trade.
pub fn trade_state(trade: &SandboxTrade) -> &'static str {
    match trade.status {
        Status::NotScanned | Status::WaitBuyerPay => "NOTPAY",
        Status::TradeSuccess if trade.refunded > 0 => "REFUND",
        Status::TradeSuccess => "SUCCESS",
        Status::TradeClosed if trade.paid_at.is_some() => "REFUND",
        Status::TradeClosed => "CLOSED",
    }
}

/// A WeChat transaction id: `42` + date + digits, the shape WeChat uses.
pub fn new_transaction_id(now: DateTime<Utc>) -> String {
    let digits: String = crate::domain::ids::random_bytes::<20>()
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    format!("42{}{}", now.format("%Y%m%d"), digits)
}

/// How one message is signed: which key, which serial, at which time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signing {
    /// Sign with the platform certificate's key and name its serial.
    pub certificate: bool,
    /// Put the timestamp ten minutes in the past.
    pub stale: bool,
    /// Sign something else than what is sent.
    pub forged: bool,
}

/// Header names and values, in the order sent.
pub type Headers = Vec<(&'static str, String)>;

/// The five `Wechatpay-*` headers over `body`, signed as WeChat signs answers and
/// notifications: `timestamp\nnonce\nbody\n`.
pub fn platform_headers(sandbox: &Sandbox, body: &[u8], now: DateTime<Utc>, how: Signing) -> Headers {
    let at = if how.stale {
        now - chrono::Duration::minutes(10)
    } else {
        now
    };
    let timestamp = at.timestamp().to_string();
    let nonce = new_nonce().unwrap_or_else(|_| "0".repeat(32));
    let keys = &sandbox.keys.wechat;
    let (serial, key) = match (&keys.certificate, how.certificate) {
        (Some((cert, key)), true) => (cert.serial().to_owned(), key),
        _ => (WECHAT_PUBLIC_KEY_ID.to_owned(), &keys.platform_private),
    };
    let mut message = platform_message(&timestamp, &nonce, body);
    if how.forged {
        message.extend_from_slice(b"forged");
    }
    let signature = key.sign_base64(&message);
    vec![
        ("Wechatpay-Timestamp", timestamp),
        ("Wechatpay-Nonce", nonce),
        ("Wechatpay-Serial", serial),
        ("Wechatpay-Signature-Type", SCHEMA.to_owned()),
        ("Wechatpay-Signature", signature),
        ("Request-ID", crate::domain::ids::random_base62(32)),
    ]
}

/// An API answer, signed (204s included) with the platform public key.
pub fn signed(sandbox: &Sandbox, status: u16, body: String) -> HttpResponse {
    let headers = platform_headers(sandbox, body.as_bytes(), sandbox.core.now(), Signing::default());
    let code = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(code);
    // As the Alipay gateway's: an answer is data, never a page (nosniff comes with
    // every answer from `http::default_headers`).
    response.insert_header((
        actix_web::http::header::CONTENT_SECURITY_POLICY,
        super::access::GATEWAY_CSP,
    ));
    for header in headers {
        response.insert_header(header);
    }
    if body.is_empty() {
        response.finish()
    } else {
        response
            .content_type("application/json; charset=utf-8")
            .body(body)
    }
}

/// WeChat's error answer `{"code","message"}`, signed.
pub fn error(sandbox: &Sandbox, status: u16, code: &str, message: &str) -> HttpResponse {
    signed(
        sandbox,
        status,
        serde_json::json!({"code": code, "message": message}).to_string(),
    )
}
