//! Fault switches, per trade or global, for testing how a merchant handles a misbehaving
//! platform: delay, duplicate deliveries, dropped first deliveries, out-of-order
//! TRADE_CLOSED, a wrong amount, a bad signature; for WeChat Pay also a stale timestamp
//! and certificate mode. Only for loopback clients and holders of the sandbox token
//! (`access`); per-trade switches only for trades that exist.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::access::{may_drive, refused};
use super::Sandbox;
use crate::db::{sandbox, Database, DbError};

pub const GLOBAL: &str = "global";
/// The global switches of the WeChat Pay side.
pub const WECHAT_GLOBAL: &str = "wechat:global";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Seconds before the first delivery (divided by `time_scale`).
    pub delay_seconds: u32,
    /// Extra copies sent at once with every delivery attempt.
    pub duplicates: u32,
    /// Attempts not sent at all; the platform's retries follow.
    pub drop_first: u32,
    /// `total_amount` raised by 0.01 yuan and validly signed: a wrong amount.
    pub tamper_amount: bool,
    /// A signature that does not match the parameters.
    pub bad_signature: bool,
    /// After TRADE_SUCCESS, a stale TRADE_CLOSED arrives (Alipay; WeChat Pay sends no
    /// close notifications).
    pub out_of_order: bool,
    /// WeChat Pay: `Wechatpay-Timestamp` ten minutes in the past, validly signed.
    pub stale_timestamp: bool,
    /// WeChat Pay: signed with the sandbox's platform certificate instead of its public
    /// key, as during WeChat's switch between the two.
    pub certificate_mode: bool,
}

impl Faults {
    pub const MAX_DUPLICATES: u32 = 200;

    /// Per-trade switches win where set; otherwise the global ones apply.
    pub fn over(self, global: Faults) -> Faults {
        if self == Faults::default() {
            global
        } else {
            self
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if self.duplicates > Self::MAX_DUPLICATES {
            return Err(format!("duplicates must be at most {}", Self::MAX_DUPLICATES));
        }
        if self.drop_first > 20 || self.delay_seconds > 86_400 {
            return Err("drop_first must be at most 20 and delay_seconds at most 86400".into());
        }
        Ok(())
    }

    pub fn parse(json: &str) -> Faults {
        serde_json::from_str(json).unwrap_or_default()
    }
}

/// `check`, and a switch this sandbox can honour: `certificate_mode` needs a platform
/// certificate.
pub fn usable(faults: &Faults, sandbox: &Sandbox) -> Result<(), String> {
    faults.check()?;
    if faults.certificate_mode && sandbox.keys.wechat.certificate.is_none() {
        return Err(
            "certificate_mode needs a sandbox platform certificate (data/sandbox/wechat_platform_cert.pem)"
                .into(),
        );
    }
    Ok(())
}

/// The scope of one trade's switches.
pub fn trade_scope(out_trade_no: &str) -> String {
    format!("trade:{out_trade_no}")
}

pub async fn load(db: &Database, scope: String) -> Result<Faults, DbError> {
    Ok(db
        .read(move |c| sandbox::find_faults(c, &scope))
        .await?
        .map(|j| Faults::parse(&j))
        .unwrap_or_default())
}

pub async fn store(db: &Database, scope: String, faults: Faults) -> Result<(), DbError> {
    let json = serde_json::to_string(&faults).unwrap_or_else(|_| "{}".into());
    db.write(move |c| sandbox::set_faults(c, &scope, &json)).await
}

fn error(status: StatusCode, message: String) -> HttpResponse {
    error_with(status, "invalid_faults", message)
}

fn error_with(status: StatusCode, code: &str, message: String) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({"error": {"code": code, "message": message}}))
}

/// The longest `out_trade_no` either platform takes (Alipay 64, WeChat Pay 32): a longer
/// name is no trade's, refused before any lookup.
pub const MAX_OUT_TRADE_NO: usize = 64;

/// The scope of an existing sandbox trade's switches; any other name is refused, so
/// scopes are only ever as many as the trades (which need the merchant's signed calls).
async fn trade_scope_of(sandbox: &Sandbox, out_trade_no: String) -> Result<String, HttpResponse> {
    let unknown = |what: &str| {
        error_with(
            StatusCode::NOT_FOUND,
            "unknown_trade",
            format!(
                "{what}: per-order switches are for an order created through the sandbox, named by its order id (the out_trade_no the sandbox got). Nothing was stored."
            ),
        )
    };
    if out_trade_no.len() > MAX_OUT_TRADE_NO {
        return Err(unknown(&format!(
            "no sandbox trade has a {}-byte out_trade_no (at most {MAX_OUT_TRADE_NO})",
            out_trade_no.len()
        )));
    }
    let no = out_trade_no.clone();
    match sandbox.core.db.read(move |c| sandbox::find_trade(c, &no)).await {
        Ok(Some(_)) => Ok(trade_scope(&out_trade_no)),
        Ok(None) => Err(unknown(&format!(
            "no sandbox trade has out_trade_no {out_trade_no:?}"
        ))),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn respond_get(sandbox: web::Data<Sandbox>, scope: String) -> HttpResponse {
    match load(&sandbox.core.db, scope).await {
        Ok(f) => HttpResponse::Ok().json(f),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn respond_set(sandbox: web::Data<Sandbox>, scope: String, body: web::Bytes) -> HttpResponse {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
    };
    if let Err(m) = usable(&faults, &sandbox) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, m);
    }
    match store(&sandbox.core.db, scope, faults).await {
        Ok(()) => HttpResponse::Ok().json(faults),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub async fn get_global(sandbox: web::Data<Sandbox>, req: HttpRequest) -> HttpResponse {
    if !may_drive(&req, &sandbox, None) {
        return refused();
    }
    respond_get(sandbox, GLOBAL.to_owned()).await
}

pub async fn set_global(sandbox: web::Data<Sandbox>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if !may_drive(&req, &sandbox, None) {
        return refused();
    }
    respond_set(sandbox, GLOBAL.to_owned(), body).await
}

pub async fn get_wechat_global(sandbox: web::Data<Sandbox>, req: HttpRequest) -> HttpResponse {
    if !may_drive(&req, &sandbox, None) {
        return refused();
    }
    respond_get(sandbox, WECHAT_GLOBAL.to_owned()).await
}

pub async fn set_wechat_global(
    sandbox: web::Data<Sandbox>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    if !may_drive(&req, &sandbox, None) {
        return refused();
    }
    respond_set(sandbox, WECHAT_GLOBAL.to_owned(), body).await
}

pub async fn get_trade(
    sandbox: web::Data<Sandbox>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    if !may_drive(&req, &sandbox, None) {
        return refused();
    }
    match trade_scope_of(&sandbox, path.into_inner()).await {
        Ok(scope) => respond_get(sandbox, scope).await,
        Err(response) => response,
    }
}

pub async fn set_trade(
    sandbox: web::Data<Sandbox>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    if !may_drive(&req, &sandbox, None) {
        return refused();
    }
    match trade_scope_of(&sandbox, path.into_inner()).await {
        Ok(scope) => respond_set(sandbox, scope, body).await,
        Err(response) => response,
    }
}
