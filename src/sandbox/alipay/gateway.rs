//! The simulated Alipay OpenAPI gateway (`/sandbox/alipay/gateway.do`). Like Alipay it
//! merges query-string and form parameters, verifies the request's RSA2 signature with
//! the app public key, and answers `{"<method>_response": {…}, "sign": "…"}` signed
//! over the exact text of the response object, with `/` escaped as Alipay does.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::{notifier, yuan};
use crate::db::sandbox::{self as store, RefundInsert, SandboxTrade, SandboxTradeStatus as Status};
use crate::db::DbError;
use crate::domain::ids::random_base62;
use crate::domain::{Amount, Currency};
use crate::providers::alipay::sign::{beijing, parse_beijing, request_content};
use crate::sandbox::{access, Sandbox, SANDBOX_APP_ID};

const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Longer than any of Alipay's method names (`alipay.trade.fastpay.refund.query` is 33).
const MAX_METHOD_LEN: usize = 64;

/// Whether `method` has the shape of an Alipay method name. Anything else is answered
/// as `error_response` and never written back: the answer is `text/html` (what the
/// SDKs expect) on the server's own origin, so a name carrying markup would be a
/// reflected script on a GET link.
fn method_shaped(method: &str) -> bool {
    !method.is_empty()
        && method.len() <= MAX_METHOD_LEN
        && method
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.')
}

/// Signs and wraps a response object as Alipay does.
pub fn signed_response(sandbox: &Sandbox, method: &str, fields: Map<String, Value>) -> HttpResponse {
    let inner = Value::Object(fields).to_string().replace('/', "\\/");
    let sign = sandbox.keys.platform_private.sign_base64(inner.as_bytes());
    // `handle` lets only well-shaped method names through; encoded as a JSON string
    // anyway, so the key can never end the string it is in.
    let key = Value::String(format!("{}_response", method.replace('.', "_"))).to_string();
    HttpResponse::Ok()
        .content_type("text/html;charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, access::GATEWAY_CSP))
        .body(format!("{{{key}:{inner},\"sign\":\"{sign}\"}}"))
}

fn business_error(sub_code: &str, sub_msg: &str) -> Map<String, Value> {
    obj(json!({"code": "40004", "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg}))
}

fn invalid(sub_code: &str, sub_msg: &str) -> Map<String, Value> {
    obj(json!({"code": "40002", "msg": "Invalid Arguments", "sub_code": sub_code, "sub_msg": sub_msg}))
}

fn system_error() -> Map<String, Value> {
    obj(
        json!({"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "aop.ACQ.SYSTEM_ERROR", "sub_msg": "系统繁忙"}),
    )
}

/// The amount fields of a `biz_content`, as the JSON text they were written in. Alipay
/// takes `"88.88"` and `88.88` alike; a number's text is its only exact form (88.88 is
/// not an f64, and an f64 would let `88.880000000000001` or `8.888e1` through).
#[derive(Deserialize, Default)]
struct AmountFields {
    total_amount: Option<Box<RawValue>>,
    refund_amount: Option<Box<RawValue>>,
}

/// The decimal text of an amount written as a JSON string or a JSON number; `None` for
/// anything else. A number's text goes to the amount parser as written, so signs,
/// exponents and a third decimal are refused there exactly as in a string.
fn amount_text(raw: Option<&RawValue>) -> Option<String> {
    let text = raw?.get();
    match text.bytes().next()? {
        b'"' => serde_json::from_str::<String>(text).ok(),
        b'-' | b'0'..=b'9' => Some(text.to_owned()),
        _ => None,
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Digits-only trade number in Alipay's shape: date + channel + random.
pub fn new_trade_no(now: DateTime<Utc>) -> String {
    let digits: String = crate::domain::ids::random_bytes::<16>()
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    format!("{}22001{}", now.format("%Y%m%d"), digits)
}

/// Alipay's `timeout_express`: `1c` (end of the Beijing day) or a whole number of
/// minutes, hours or days (`15m`, `2h`, `1d`). Anything else is `None`, never a panic.
fn parse_timeout_express(text: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if text == "1c" {
        let midnight = (now + Duration::hours(8))
            .date_naive()
            .succ_opt()?
            .and_hms_opt(0, 0, 0)?;
        return Some(midnight.and_utc() - Duration::hours(8));
    }
    let (number, unit): (&str, fn(i64) -> Option<Duration>) = if let Some(n) = text.strip_suffix('m') {
        (n, Duration::try_minutes)
    } else if let Some(n) = text.strip_suffix('h') {
        (n, Duration::try_hours)
    } else if let Some(n) = text.strip_suffix('d') {
        (n, Duration::try_days)
    } else {
        return None;
    };
    let n: i64 = number.parse().ok().filter(|n| *n >= 1)?;
    now.checked_add_signed(unit(n)?)
}

pub async fn handle(sandbox: web::Data<Sandbox>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if body.len() > MAX_REQUEST_BYTES {
        return HttpResponse::PayloadTooLarge()
            .insert_header((header::CONTENT_SECURITY_POLICY, access::GATEWAY_CSP))
            .content_type("text/plain; charset=utf-8")
            .body("request too large");
    }
    let mut params: BTreeMap<String, String> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    params.extend(url::form_urlencoded::parse(&body).into_owned());
    let method = params.get("method").cloned().unwrap_or_default();
    if !method.is_empty() && !method_shaped(&method) {
        return signed_response(&sandbox, "error", invalid("isv.invalid-method", "不存在的方法名"));
    }
    let biz_text = params.get("biz_content").map_or("", String::as_str);
    let answer = match authenticate(&sandbox, &params) {
        Err(fields) => fields,
        Ok(()) => match (
            serde_json::from_str::<Map<String, Value>>(biz_text),
            serde_json::from_str::<AmountFields>(biz_text),
        ) {
            (Err(_), _) | (_, Err(_)) => {
                invalid("isv.invalid-biz-content", "biz_content 不是合法的 JSON 对象")
            }
            (Ok(biz), Ok(amounts)) => match dispatch(&sandbox, &method, &params, &biz, &amounts).await {
                Ok(fields) => fields,
                Err(e) => {
                    tracing::error!(error = %e, "sandbox gateway storage failed");
                    system_error()
                }
            },
        },
    };
    let method = if method.is_empty() {
        "error"
    } else {
        method.as_str()
    };
    signed_response(&sandbox, method, answer)
}

fn authenticate(sandbox: &Sandbox, params: &BTreeMap<String, String>) -> Result<(), Map<String, Value>> {
    for required in [
        "app_id",
        "method",
        "sign",
        "sign_type",
        "timestamp",
        "version",
        "charset",
    ] {
        if params.get(required).is_none_or(String::is_empty) {
            return Err(obj(json!({"code": "40001", "msg": "Missing Required Arguments",
                "sub_code": format!("isv.missing-{}", required.replace('_', "-")), "sub_msg": format!("缺少参数 {required}")})));
        }
    }
    if params.get("app_id").map(String::as_str) != Some(SANDBOX_APP_ID) {
        return Err(invalid("isv.invalid-app-id", "无效的AppID参数"));
    }
    if params.get("sign_type").map(String::as_str) != Some("RSA2") {
        return Err(invalid("isv.invalid-signature-type", "无效的签名类型"));
    }
    let sign = params.get("sign").map(String::as_str).unwrap_or_default();
    if !sandbox
        .keys
        .app_public
        .verify_base64(request_content(params).as_bytes(), sign)
    {
        return Err(invalid("isv.invalid-signature", "验签出错"));
    }
    Ok(())
}

async fn dispatch(
    sandbox: &Sandbox,
    method: &str,
    params: &BTreeMap<String, String>,
    biz: &Map<String, Value>,
    amounts: &AmountFields,
) -> Result<Map<String, Value>, DbError> {
    let text = |k: &str| biz.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let db = &sandbox.core.db;
    let now = sandbox.core.now();
    const METHODS: [&str; 5] = [
        "alipay.trade.precreate",
        "alipay.trade.query",
        "alipay.trade.close",
        "alipay.trade.refund",
        "alipay.trade.fastpay.refund.query",
    ];
    if !METHODS.contains(&method) {
        return Ok(invalid("isv.invalid-method", "不存在的方法名"));
    }
    let (out_trade_no, trade_no) = (text("out_trade_no"), text("trade_no"));
    if method == "alipay.trade.precreate" {
        if out_trade_no.is_empty() {
            return Ok(obj(json!({"code": "40001", "msg": "Missing Required Arguments",
                "sub_code": "isv.missing-out-trade-no", "sub_msg": "缺少参数 out_trade_no"})));
        }
        let no = out_trade_no.clone();
        let found = db.read(move |c| store::find_trade(c, &no)).await?;
        return precreate(sandbox, params, biz, amounts, found, now).await;
    }
    // Every other method names the trade by either number; given both, Alipay's
    // documented rule is that trade_no wins ("两者同时设置优先取值trade_no").
    let found = if !trade_no.is_empty() {
        db.read(move |c| store::find_trade_by_trade_no(c, &trade_no))
            .await?
    } else if !out_trade_no.is_empty() {
        db.read(move |c| store::find_trade(c, &out_trade_no)).await?
    } else {
        return Ok(business_error(
            "ACQ.INVALID_PARAMETER",
            "参数无效: out_trade_no 和 trade_no 不能同时为空",
        ));
    };
    let exists = found.as_ref().filter(|t| t.status != Status::NotScanned);
    match method {
        "alipay.trade.query" => Ok(match exists {
            None => business_error("ACQ.TRADE_NOT_EXIST", "交易不存在"),
            Some(t) => {
                let mut m = obj(json!({
                    "code": "10000", "msg": "Success", "out_trade_no": t.out_trade_no, "trade_status": t.status.as_str(),
                    "total_amount": yuan(t.total_amount), "buyer_logon_id": "csq***@sandbox.com",
                    "buyer_user_id": "2088102177846880",
                }));
                if let Some(no) = &t.trade_no {
                    m.insert("trade_no".into(), no.clone().into());
                }
                if let Some(paid) = t.paid_at {
                    m.insert("send_pay_date".into(), beijing(paid).into());
                    m.insert("receipt_amount".into(), yuan(t.total_amount).into());
                    m.insert("buyer_pay_amount".into(), yuan(t.total_amount).into());
                }
                m
            }
        }),
        "alipay.trade.close" => {
            let Some(t) = exists.cloned() else {
                return Ok(business_error("ACQ.TRADE_NOT_EXIST", "交易不存在"));
            };
            let no = t.out_trade_no.clone();
            let closed = db
                .write(move |c| {
                    store::move_trade(c, &no, &[Status::WaitBuyerPay], Status::TradeClosed, None, now)
                })
                .await?;
            if !closed {
                return Ok(business_error(
                    "ACQ.TRADE_STATUS_ERROR",
                    "只有等待买家付款状态下才能发起交易关闭",
                ));
            }
            notifier::enqueue(sandbox, &t, Status::TradeClosed, None, now).await?;
            Ok(obj(
                json!({"code": "10000", "msg": "Success", "out_trade_no": t.out_trade_no, "trade_no": t.trade_no}),
            ))
        }
        "alipay.trade.refund" => refund(sandbox, biz, amounts, exists.cloned(), now).await,
        "alipay.trade.fastpay.refund.query" => {
            let Some(t) = exists.cloned() else {
                return Ok(business_error("ACQ.TRADE_NOT_EXIST", "交易不存在"));
            };
            // A refund made without out_request_no is numbered by its out_trade_no.
            let request_no = {
                let r = text("out_request_no");
                if r.is_empty() {
                    t.out_trade_no.clone()
                } else {
                    r
                }
            };
            let (no, rn) = (t.out_trade_no.clone(), request_no.clone());
            let refunded = db.read(move |c| store::find_refund(c, &no, &rn)).await?;
            let mut m = obj(
                json!({"code": "10000", "msg": "Success", "out_trade_no": t.out_trade_no,
                "trade_no": t.trade_no, "out_request_no": request_no}),
            );
            if let Some(amount) = refunded {
                m.insert("refund_amount".into(), yuan(amount).into());
                m.insert("total_amount".into(), yuan(t.total_amount).into());
                m.insert("refund_status".into(), "REFUND_SUCCESS".into());
            }
            Ok(m)
        }
        _ => Ok(invalid("isv.invalid-method", "不存在的方法名")),
    }
}

async fn precreate(
    sandbox: &Sandbox,
    params: &BTreeMap<String, String>,
    biz: &Map<String, Value>,
    amounts: &AmountFields,
    existing: Option<SandboxTrade>,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, DbError> {
    let text = |k: &str| biz.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let out_trade_no = text("out_trade_no");
    if out_trade_no.len() > 64
        || !out_trade_no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Ok(business_error("ACQ.INVALID_PARAMETER", "out_trade_no 不合法"));
    }
    let subject = text("subject");
    if subject.is_empty() || subject.chars().count() > 256 {
        return Ok(business_error("ACQ.INVALID_PARAMETER", "subject 不合法"));
    }
    let total = amount_text(amounts.total_amount.as_deref()).unwrap_or_default();
    let amount = match Amount::parse_decimal(&total, Currency::Cny) {
        Ok(a) if (1..=10_000_000_000).contains(&a.minor()) => a.minor(),
        _ => return Ok(business_error("ACQ.TOTAL_FEE_EXCEED", "订单金额不合法")),
    };
    let mut deadline = now + Duration::hours(2);
    let express = text("timeout_express");
    if !express.is_empty() {
        match parse_timeout_express(&express, now) {
            Some(d) => deadline = deadline.min(d),
            None => return Ok(business_error("ACQ.INVALID_PARAMETER", "timeout_express 不合法")),
        }
    }
    let expire = text("time_expire");
    if !expire.is_empty() {
        match parse_beijing(&expire) {
            Some(d) => deadline = deadline.min(d),
            None => return Ok(business_error("ACQ.INVALID_PARAMETER", "time_expire 不合法")),
        }
    }
    let trade = match existing {
        Some(t)
            if t.status == Status::TradeSuccess || t.status == Status::TradeClosed && t.paid_at.is_some() =>
        {
            return Ok(business_error("ACQ.TRADE_HAS_SUCCESS", "交易已被支付"))
        }
        Some(t) if t.status == Status::TradeClosed => {
            return Ok(business_error("ACQ.TRADE_HAS_CLOSE", "交易已经关闭"))
        }
        Some(t) if t.total_amount != amount => {
            return Ok(business_error("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改"));
        }
        Some(t) => t,
        None => {
            let trade = SandboxTrade {
                out_trade_no: out_trade_no.clone(),
                token: random_base62(24),
                app_id: SANDBOX_APP_ID.to_owned(),
                trade_no: None,
                subject,
                total_amount: amount,
                refunded: 0,
                status: Status::NotScanned,
                notify_url: params.get("notify_url").filter(|u| !u.is_empty()).cloned(),
                deadline,
                created_at: now,
                paid_at: None,
            };
            let insert = trade.clone();
            let db = &sandbox.core.db;
            db.write(move |c| store::insert_trade(c, &insert)).await?;
            // A concurrent precreate may have won: answer with whatever is stored.
            let no = out_trade_no.clone();
            db.read(move |c| store::find_trade(c, &no))
                .await?
                .unwrap_or(trade)
        }
    };
    Ok(obj(json!({
        "code": "10000", "msg": "Success", "out_trade_no": trade.out_trade_no,
        "qr_code": format!("{}/sandbox/wallet/{}", sandbox.public_url.trim_end_matches('/'), trade.token),
    })))
}

async fn refund(
    sandbox: &Sandbox,
    biz: &Map<String, Value>,
    amounts: &AmountFields,
    trade: Option<SandboxTrade>,
    now: DateTime<Utc>,
) -> Result<Map<String, Value>, DbError> {
    let text = |k: &str| biz.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    let Some(trade) = trade else {
        return Ok(business_error("ACQ.TRADE_NOT_EXIST", "交易不存在"));
    };
    if trade.paid_at.is_none() {
        return Ok(business_error("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"));
    }
    let asked = amount_text(amounts.refund_amount.as_deref()).unwrap_or_default();
    let amount = match Amount::parse_decimal(&asked, Currency::Cny) {
        Ok(a) if a.minor() > 0 => a.minor(),
        _ => return Ok(business_error("ACQ.INVALID_PARAMETER", "refund_amount 不合法")),
    };
    let request_no = {
        let r = text("out_request_no");
        if r.is_empty() {
            trade.out_trade_no.clone()
        } else {
            r
        }
    };
    let (no, rn) = (trade.out_trade_no.clone(), request_no.clone());
    let total = trade.total_amount;
    let db = &sandbox.core.db;
    let result = db
        .write(move |c| {
            let r = store::add_refund(c, &no, &rn, amount, now)?;
            if r == RefundInsert::Done {
                // A full refund ends the trade, as on Alipay.
                let after = store::find_trade(c, &no)?;
                if after.is_some_and(|t| t.refunded >= total) {
                    store::move_trade(c, &no, &[Status::TradeSuccess], Status::TradeClosed, None, now)?;
                }
            }
            Ok(r)
        })
        .await?;
    let fund_change = match result {
        RefundInsert::ExceedsBalance => {
            return Ok(business_error("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限"))
        }
        RefundInsert::Repeated(earlier) if earlier != amount => {
            return Ok(business_error(
                "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
                "同一退款请求号金额不一致",
            ))
        }
        RefundInsert::Repeated(_) => "N",
        RefundInsert::Done => "Y",
    };
    let no = trade.out_trade_no.clone();
    let after = db
        .read(move |c| store::find_trade(c, &no))
        .await?
        .unwrap_or(trade);
    if fund_change == "Y" {
        let status = if after.status == Status::TradeClosed {
            Status::TradeClosed
        } else {
            Status::TradeSuccess
        };
        let extra =
            json!({"refund_fee": yuan(after.refunded), "out_biz_no": request_no, "gmt_refund": beijing(now)});
        notifier::enqueue(sandbox, &after, status, Some(obj(extra)), now).await?;
    }
    Ok(obj(json!({
        "code": "10000", "msg": "Success", "out_trade_no": after.out_trade_no, "trade_no": after.trade_no,
        "buyer_logon_id": "csq***@sandbox.com", "fund_change": fund_change, "refund_fee": yuan(after.refunded),
        "gmt_refund_pay": beijing(now),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn minor_units(biz: &str) -> (Option<i64>, Option<i64>) {
        let fields: AmountFields = serde_json::from_str(biz).unwrap();
        let read = |raw: Option<&RawValue>| {
            amount_text(raw)
                .and_then(|t| Amount::parse_decimal(&t, Currency::Cny).ok())
                .map(|a| a.minor())
        };
        (
            read(fields.total_amount.as_deref()),
            read(fields.refund_amount.as_deref()),
        )
    }

    #[test]
    fn amounts_are_read_exactly_from_json_numbers_and_strings_and_odd_forms_are_refused() {
        assert_eq!(
            minor_units(r#"{"total_amount": 88.88, "refund_amount": "0.29"}"#),
            (Some(8888), Some(29))
        );
        assert_eq!(
            minor_units(r#"{"total_amount": 20, "refund_amount": 0.29}"#),
            (Some(2000), Some(29))
        );
        // Each of these is 88.88 or near it as an f64; none is an amount Alipay takes.
        for bad in [
            "88.880000000000001",
            "8.888e1",
            "88.88E0",
            "88.885",
            "-88.88",
            "-0",
            "1e2",
            "null",
            "true",
            "[88.88]",
            r#"{"v":1}"#,
            r#""88.885""#,
            r#""-1.00""#,
            r#""1e2""#,
            r#"" 8.00""#,
        ] {
            let biz = format!(r#"{{"total_amount": {bad}, "refund_amount": {bad}}}"#);
            assert_eq!(minor_units(&biz), (None, None), "{bad}");
        }
    }

    #[test]
    fn timeout_express_reads_alipays_units_and_refuses_anything_else_without_panicking() {
        let now = at("2026-11-24T03:30:00Z");
        assert_eq!(
            parse_timeout_express("15m", now),
            Some(at("2026-11-24T03:45:00Z"))
        );
        assert_eq!(parse_timeout_express("2h", now), Some(at("2026-11-24T05:30:00Z")));
        assert_eq!(parse_timeout_express("1d", now), Some(at("2026-11-25T03:30:00Z")));
        assert_eq!(
            parse_timeout_express("1c", now),
            Some(at("2026-11-24T16:00:00Z")),
            "midnight in Beijing"
        );
        for bad in ["5分", "分", "", "m", "0m", "-5m", "5x", "5 m", "99999999999999d"] {
            assert_eq!(parse_timeout_express(bad, now), None, "{bad:?}");
        }
    }
}
