//! The simulated WeChat Pay API v3 (`/sandbox/wechat/v3/…`): verifies the merchant's
//! `Authorization` signature (over the URI as received, or without the `/sandbox/wechat`
//! mount, since SDKs disagree about a base path), answers as WeChat does and signs every
//! answer, 204s and errors included.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Duration;
use serde_json::{json, Value};

use super::views::{refund_view, transaction};
use super::{error, is_wechat, notifier, signed};
use crate::db::sandbox::{self as store, RefundInsert, SandboxTrade, SandboxTradeStatus as Status};
use crate::db::DbError;
use crate::domain::ids::random_base62;
use crate::providers::wechat::sign::Authorization;
use crate::providers::wechat::wire::parse_rfc3339;
use crate::sandbox::keys::{WECHAT_APPID, WECHAT_MCHID};
use crate::sandbox::Sandbox;

/// Where the API is mounted.
pub const MOUNT: &str = "/sandbox/wechat";
const MAX_REQUEST_BYTES: usize = 64 * 1024;

pub async fn handle(sandbox: web::Data<Sandbox>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if body.len() > MAX_REQUEST_BYTES {
        return error(&sandbox, 413, "PARAM_ERROR", "request too large");
    }
    if let Err(message) = authenticate(&sandbox, &req, &body) {
        return error(&sandbox, 401, "SIGN_ERROR", &message);
    }
    let path = req.path().strip_prefix(MOUNT).unwrap_or(req.path()).to_owned();
    let query: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let json_body: Value = if req.method() == actix_web::http::Method::POST {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return error(&sandbox, 400, "PARAM_ERROR", "请求体不是合法的 JSON 对象"),
        }
    } else {
        Value::Null
    };
    match dispatch(&sandbox, req.method().as_str(), &path, &query, &json_body).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!(error = %e, "sandbox WeChat API storage failed");
            error(&sandbox, 500, "SYSTEM_ERROR", "系统错误")
        }
    }
}

/// WeChat's check of a merchant request: the scheme, the merchant, the signature. The
/// refusal's message when it fails.
fn authenticate(sandbox: &Sandbox, req: &HttpRequest, body: &[u8]) -> Result<(), String> {
    let Some(header) = req.headers().get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err("缺少 Authorization".into());
    };
    let auth = Authorization::parse(header).map_err(|e| e.to_string())?;
    if auth.mchid != WECHAT_MCHID {
        return Err("商户号与签名不匹配".into());
    }
    let full = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let unmounted = full.strip_prefix(MOUNT).unwrap_or(&full).to_owned();
    let key = &sandbox.keys.wechat.merchant_public;
    let method = req.method().as_str();
    if [full, unmounted]
        .iter()
        .any(|uri| auth.verify(key, method, uri, body))
    {
        Ok(())
    } else {
        Err("签名错误".into())
    }
}

async fn dispatch(
    sandbox: &Sandbox,
    method: &str,
    path: &str,
    query: &[(String, String)],
    body: &Value,
) -> Result<HttpResponse, DbError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["v3", "pay", "transactions", "native"]) => native(sandbox, body).await,
        ("GET", ["v3", "pay", "transactions", "out-trade-no", no]) => {
            let mchid = query.iter().find(|(k, _)| k == "mchid").map(|(_, v)| v.as_str());
            if mchid != Some(WECHAT_MCHID) {
                return Ok(error(sandbox, 400, "PARAM_ERROR", "mchid 与商户不匹配"));
            }
            Ok(match find(sandbox, no).await? {
                Some(trade) => signed(sandbox, 200, transaction(&trade).to_string()),
                None => error(sandbox, 404, "ORDER_NOT_EXIST", "订单不存在"),
            })
        }
        ("POST", ["v3", "pay", "transactions", "out-trade-no", no, "close"]) => {
            if body.get("mchid").and_then(Value::as_str) != Some(WECHAT_MCHID) {
                return Ok(error(sandbox, 400, "PARAM_ERROR", "mchid 与商户不匹配"));
            }
            close(sandbox, no).await
        }
        ("POST", ["v3", "refund", "domestic", "refunds"]) => refund(sandbox, body).await,
        ("GET", ["v3", "refund", "domestic", "refunds", refund_no]) => refund_query(sandbox, refund_no).await,
        _ => Ok(error(sandbox, 404, "RESOURCE_NOT_EXISTS", "无此接口")),
    }
}

async fn find(sandbox: &Sandbox, out_trade_no: &str) -> Result<Option<SandboxTrade>, DbError> {
    let no = out_trade_no.to_owned();
    Ok(sandbox
        .core
        .db
        .read(move |c| store::find_trade(c, &no))
        .await?
        .filter(is_wechat))
}

fn out_trade_no_ok(no: &str) -> bool {
    (6..=32).contains(&no.len())
        && no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'))
}

async fn native(sandbox: &Sandbox, body: &Value) -> Result<HttpResponse, DbError> {
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let param = |message: &str| Ok(error(sandbox, 400, "PARAM_ERROR", message));
    if text("appid") != WECHAT_APPID {
        return Ok(error(
            sandbox,
            400,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        ));
    }
    if text("mchid") != WECHAT_MCHID {
        return Ok(error(sandbox, 400, "MCH_NOT_EXISTS", "商户号不存在"));
    }
    let out_trade_no = text("out_trade_no");
    if !out_trade_no_ok(&out_trade_no) {
        return param("out_trade_no 不合法");
    }
    let description = text("description");
    if description.is_empty() || description.len() > 127 {
        return param("description 不合法");
    }
    let notify_url = text("notify_url");
    if !(notify_url.starts_with("http://") || notify_url.starts_with("https://")) || notify_url.contains('?')
    {
        return param("notify_url 不合法");
    }
    let amount = body.get("amount");
    let total = amount.and_then(|a| a.get("total")).and_then(Value::as_i64);
    let currency = amount
        .and_then(|a| a.get("currency"))
        .and_then(Value::as_str)
        .unwrap_or("CNY");
    let Some(total) = total.filter(|t| (1..=10_000_000_000).contains(t)) else {
        return param("amount.total 不合法");
    };
    if currency != "CNY" {
        return param("amount.currency 不合法");
    }
    let now = sandbox.core.now();
    let mut deadline = now + Duration::hours(2);
    let expire = text("time_expire");
    if !expire.is_empty() {
        match parse_rfc3339(&expire) {
            Some(d) if d > now => deadline = deadline.min(d),
            _ => return param("time_expire 不合法"),
        }
    }
    let existing = find(sandbox, &out_trade_no).await?;
    let trade = match existing {
        Some(t) if t.paid_at.is_some() => return Ok(error(sandbox, 400, "ORDERPAID", "该订单已支付")),
        Some(t) if t.status == Status::TradeClosed => {
            return Ok(error(sandbox, 400, "ORDER_CLOSED", "订单已关闭"))
        }
        Some(t) if t.total_amount != total => {
            return Ok(error(sandbox, 400, "INVALID_REQUEST", "201 商户订单号重复"))
        }
        Some(t) => t,
        None => {
            let trade = SandboxTrade {
                out_trade_no: out_trade_no.clone(),
                token: random_base62(24),
                app_id: WECHAT_APPID.to_owned(),
                trade_no: None,
                subject: description,
                total_amount: total,
                refunded: 0,
                // A Native order exists at once: query says NOTPAY.
                status: Status::WaitBuyerPay,
                notify_url: Some(notify_url),
                deadline,
                created_at: now,
                paid_at: None,
            };
            let insert = trade.clone();
            let db = &sandbox.core.db;
            db.write(move |c| store::insert_trade(c, &insert)).await?;
            let no = out_trade_no.clone();
            match db.read(move |c| store::find_trade(c, &no)).await? {
                Some(t) if is_wechat(&t) => t,
                Some(_) => return Ok(error(sandbox, 400, "INVALID_REQUEST", "201 商户订单号重复")),
                None => trade,
            }
        }
    };
    let code_url = format!(
        "{}/sandbox/wallet/{}",
        sandbox.public_url.trim_end_matches('/'),
        trade.token
    );
    Ok(signed(sandbox, 200, json!({"code_url": code_url}).to_string()))
}

async fn close(sandbox: &Sandbox, out_trade_no: &str) -> Result<HttpResponse, DbError> {
    let Some(trade) = find(sandbox, out_trade_no).await? else {
        return Ok(error(sandbox, 404, "ORDER_NOT_EXIST", "订单不存在"));
    };
    if trade.paid_at.is_some() {
        return Ok(error(sandbox, 400, "ORDERPAID", "该订单已支付"));
    }
    let now = sandbox.core.now();
    let no = trade.out_trade_no.clone();
    sandbox
        .core
        .db
        .write(move |c| {
            store::move_trade(
                c,
                &no,
                &[Status::NotScanned, Status::WaitBuyerPay],
                Status::TradeClosed,
                None,
                now,
            )
        })
        .await?;
    // Closing twice is fine at WeChat; a close is never notified.
    Ok(signed(sandbox, 204, String::new()))
}

async fn refund(sandbox: &Sandbox, body: &Value) -> Result<HttpResponse, DbError> {
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let out_trade_no = text("out_trade_no");
    let out_refund_no = text("out_refund_no");
    if out_refund_no.is_empty() || out_refund_no.len() > 64 {
        return Ok(error(sandbox, 400, "PARAM_ERROR", "out_refund_no 不合法"));
    }
    let Some(trade) = find(sandbox, &out_trade_no).await? else {
        return Ok(error(sandbox, 404, "RESOURCE_NOT_EXISTS", "订单不存在"));
    };
    if trade.paid_at.is_none() {
        return Ok(error(sandbox, 400, "INVALID_REQUEST", "订单未支付"));
    }
    let amount = body.get("amount");
    let refund = amount
        .and_then(|a| a.get("refund"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let total = amount.and_then(|a| a.get("total")).and_then(Value::as_i64);
    if refund < 1 || total != Some(trade.total_amount) {
        return Ok(error(sandbox, 400, "PARAM_ERROR", "amount 不合法"));
    }
    let now = sandbox.core.now();
    let notify_url = Some(text("notify_url"))
        .filter(|u| !u.is_empty())
        .or_else(|| trade.notify_url.clone());
    // The REFUND.SUCCESS notice is queued with the refund, in its transaction.
    let prepared = notifier::prepare_refund(sandbox, &trade, &out_refund_no, refund, notify_url, now).await?;
    let (no, rn) = (trade.out_trade_no.clone(), out_refund_no.clone());
    let result = sandbox
        .core
        .db
        .write(move |c| {
            let r = store::add_refund(c, &no, &rn, refund, now)?;
            if r == RefundInsert::Done {
                if let Some(p) = &prepared {
                    p.store(c, now)?;
                }
            }
            Ok(r)
        })
        .await?;
    match result {
        RefundInsert::ExceedsBalance => Ok(error(sandbox, 403, "NOT_ENOUGH", "退款金额超过可退金额")),
        RefundInsert::Repeated(earlier) if earlier != refund => {
            Ok(error(sandbox, 400, "INVALID_REQUEST", "同一退款单号金额不一致"))
        }
        RefundInsert::Repeated(_) | RefundInsert::Done => {
            sandbox.wake.notify_one();
            let status = refund_status(sandbox, &trade.out_trade_no, &out_refund_no).await?;
            let view = refund_view(&trade, &out_refund_no, refund, status, now);
            Ok(signed(sandbox, 200, view.to_string()))
        }
    }
}

/// `SUCCESS` once the refund's notice has gone out at least once, `PROCESSING` before:
/// WeChat settles refunds asynchronously.
async fn refund_status(
    sandbox: &Sandbox,
    out_trade_no: &str,
    out_refund_no: &str,
) -> Result<&'static str, DbError> {
    let no = out_trade_no.to_owned();
    let deliveries = sandbox
        .core
        .db
        .read(move |c| store::list_deliveries(c, &no))
        .await?;
    let sent = deliveries
        .iter()
        .any(|d| d.attempts > 0 && notifier::refund_no_of(&d.params).as_deref() == Some(out_refund_no));
    Ok(if sent { "SUCCESS" } else { "PROCESSING" })
}

async fn refund_query(sandbox: &Sandbox, out_refund_no: &str) -> Result<HttpResponse, DbError> {
    let rn = out_refund_no.to_owned();
    let found = sandbox
        .core
        .db
        .read(move |c| store::find_refund_by_request_no(c, &rn))
        .await?;
    let Some((out_trade_no, amount)) = found else {
        return Ok(error(sandbox, 404, "RESOURCE_NOT_EXISTS", "退款单不存在"));
    };
    let Some(trade) = find(sandbox, &out_trade_no).await? else {
        return Ok(error(sandbox, 404, "RESOURCE_NOT_EXISTS", "退款单不存在"));
    };
    let status = refund_status(sandbox, &out_trade_no, out_refund_no).await?;
    let view = refund_view(&trade, out_refund_no, amount, status, sandbox.core.now());
    Ok(signed(sandbox, 200, view.to_string()))
}
