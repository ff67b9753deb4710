//! The simulated WeChat Pay notifier: POSTs `TRANSACTION.SUCCESS` and `REFUND.SUCCESS`
//! notifications, resource encrypted with the APIv3 key (a fresh 12-character nonce per
//! attempt) and the whole signed with the platform key, and repeats them on WeChat's
//! schedule (15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m, 30m, 60m, 3h, 3h, 3h, 6h, 6h, divided
//! by `time_scale`) until the answer is a 2xx. Deliveries are rows of the sandbox's
//! delivery table, told apart from Alipay's by their `wechat` parameter object.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::views::{refund_view, transaction};
use super::{platform_headers, Headers, Signing};
use crate::db::sandbox::{self as store, Delivery, SandboxTrade};
use crate::db::{DbError, DbResult, Tx};
use crate::providers::wechat::aead::{new_resource_nonce, ALGORITHM};
use crate::providers::wechat::wire::beijing_rfc3339;
use crate::sandbox::faults::{self, Faults};
use crate::sandbox::keys::WECHAT_MCHID;
use crate::sandbox::Sandbox;

/// WeChat's resend delays after the first attempt: sixteen attempts in 24h4m.
pub const RETRY_SCHEDULE: [Duration; 15] = [
    Duration::seconds(15),
    Duration::seconds(15),
    Duration::seconds(30),
    Duration::minutes(3),
    Duration::minutes(10),
    Duration::minutes(20),
    Duration::minutes(30),
    Duration::minutes(30),
    Duration::minutes(30),
    Duration::minutes(60),
    Duration::hours(3),
    Duration::hours(3),
    Duration::hours(3),
    Duration::hours(6),
    Duration::hours(6),
];

/// A notification ready to be queued in the transaction of the change that causes it.
#[derive(Clone)]
pub struct Prepared {
    out_trade_no: String,
    url: String,
    params_json: String,
    faults_json: String,
    first_at: DateTime<Utc>,
}

impl Prepared {
    pub fn store(&self, tx: &Tx<'_>, now: DateTime<Utc>) -> DbResult<()> {
        store::enqueue_delivery(
            tx,
            &self.out_trade_no,
            &self.url,
            &self.params_json,
            &self.faults_json,
            self.first_at,
            now,
        )?;
        Ok(())
    }
}

fn scaled(d: Duration, time_scale: u32) -> Duration {
    d / i32::try_from(time_scale.max(1)).unwrap_or(i32::MAX)
}

/// A notification id in the UUID shape real ones have.
fn notification_id() -> String {
    let b = crate::domain::ids::random_bytes::<16>();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

async fn prepare(
    sandbox: &Sandbox,
    trade: &SandboxTrade,
    url: Option<String>,
    event: Value,
    now: DateTime<Utc>,
) -> Result<Option<Prepared>, DbError> {
    let Some(url) = url else {
        return Ok(None);
    };
    let db = &sandbox.core.db;
    let global = faults::load(db, faults::WECHAT_GLOBAL.to_owned()).await?;
    let own = faults::load(db, faults::trade_scope(&trade.out_trade_no)).await?;
    let faults = own.over(global);
    let first_at = now
        + scaled(
            Duration::seconds(i64::from(faults.delay_seconds)),
            sandbox.time_scale,
        );
    Ok(Some(Prepared {
        out_trade_no: trade.out_trade_no.clone(),
        url,
        params_json: json!({ "wechat": event }).to_string(),
        faults_json: serde_json::to_string(&faults).unwrap_or_else(|_| "{}".into()),
        first_at,
    }))
}

/// The `TRANSACTION.SUCCESS` of `trade`, as paid.
pub async fn prepare_payment(
    sandbox: &Sandbox,
    trade: &SandboxTrade,
    now: DateTime<Utc>,
) -> Result<Option<Prepared>, DbError> {
    let event = json!({
        "id": notification_id(),
        "create_time": beijing_rfc3339(now),
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "original_type": "transaction",
        "resource": transaction(trade),
    });
    prepare(sandbox, trade, trade.notify_url.clone(), event, now).await
}

/// The `REFUND.SUCCESS` of one refund of `trade`.
pub async fn prepare_refund(
    sandbox: &Sandbox,
    trade: &SandboxTrade,
    out_refund_no: &str,
    amount: i64,
    url: Option<String>,
    now: DateTime<Utc>,
) -> Result<Option<Prepared>, DbError> {
    let view = refund_view(trade, out_refund_no, amount, "SUCCESS", now);
    let resource = json!({
        "mchid": WECHAT_MCHID,
        "out_trade_no": trade.out_trade_no,
        "transaction_id": trade.trade_no,
        "out_refund_no": out_refund_no,
        "refund_id": view["refund_id"],
        "refund_status": "SUCCESS",
        "success_time": beijing_rfc3339(now),
        "user_received_account": "支付用户零钱",
        "amount": {"total": trade.total_amount, "refund": amount,
            "payer_total": trade.total_amount, "payer_refund": amount},
    });
    let event = json!({
        "id": notification_id(),
        "create_time": beijing_rfc3339(now),
        "event_type": "REFUND.SUCCESS",
        "summary": "退款成功",
        "original_type": "refund",
        "resource": resource,
    });
    prepare(sandbox, trade, url, event, now).await
}

/// The WeChat notification a delivery row carries, when it is one.
pub fn event_of(params_json: &str) -> Option<Value> {
    let v: Value = serde_json::from_str(params_json).ok()?;
    v.get("wechat").filter(|w| w.is_object()).cloned()
}

/// The refund number a delivery's notification is about, when it is a refund notice.
pub fn refund_no_of(params_json: &str) -> Option<String> {
    event_of(params_json)?
        .get("resource")?
        .get("out_refund_no")?
        .as_str()
        .map(str::to_owned)
}

/// The body and headers of one attempt, encrypted and signed now.
pub fn signed_request(
    sandbox: &Sandbox,
    event: &Value,
    faults: &Faults,
    now: DateTime<Utc>,
) -> Result<(String, Headers), String> {
    let mut resource = event.get("resource").cloned().unwrap_or(Value::Null);
    let paid = event.get("event_type").and_then(Value::as_str) == Some("TRANSACTION.SUCCESS");
    if faults.tamper_amount && paid {
        if let Some(total) = resource.pointer_mut("/amount/total") {
            *total = json!(total.as_i64().unwrap_or(0) + 1);
        }
    }
    let original_type = event
        .get("original_type")
        .and_then(Value::as_str)
        .unwrap_or("transaction");
    let nonce = new_resource_nonce().map_err(|e| e.to_string())?;
    let ciphertext = sandbox
        .keys
        .wechat
        .apiv3
        .encrypt(&nonce, original_type, resource.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    let body = json!({
        "id": event.get("id"),
        "create_time": event.get("create_time"),
        "resource_type": "encrypt-resource",
        "event_type": event.get("event_type"),
        "summary": event.get("summary"),
        "resource": {
            "original_type": original_type,
            "algorithm": ALGORITHM,
            "ciphertext": ciphertext,
            "associated_data": original_type,
            "nonce": nonce,
        },
    })
    .to_string();
    let how = Signing {
        certificate: faults.certificate_mode,
        stale: faults.stale_timestamp,
        forged: faults.bad_signature,
    };
    let headers = platform_headers(sandbox, body.as_bytes(), now, how);
    Ok((body, headers))
}

/// One attempt of a WeChat delivery: acknowledged on any 2xx.
pub async fn attempt(
    sandbox: &Sandbox,
    delivery: &Delivery,
    event: &Value,
    now: DateTime<Utc>,
) -> (bool, String) {
    let faults = Faults::parse(&delivery.faults);
    if delivery.attempts < i64::from(faults.drop_first) {
        return (false, "not sent: dropped by the drop_first fault switch".into());
    }
    let (body, headers) = match signed_request(sandbox, event, &faults, now) {
        Ok(signed) => signed,
        Err(e) => return (false, format!("not sent: {e}")),
    };
    let copies = 1 + faults.duplicates.min(Faults::MAX_DUPLICATES);
    let sends: Vec<_> = (0..copies)
        .map(|_| {
            let mut request = sandbox
                .http
                .post(&delivery.notify_url)
                .header("content-type", "application/json")
                .header(
                    "user-agent",
                    "Mozilla/4.0 (kassa sandbox; WeChat Pay notification simulator)",
                )
                .body(body.clone());
            for (name, value) in &headers {
                request = request.header(*name, value.as_str());
            }
            tokio::spawn(async move {
                match request.send().await {
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        (
                            status.is_success(),
                            format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()),
                        )
                    }
                    Err(e) => (false, format!("error: {e}")),
                }
            })
        })
        .collect();
    let mut acknowledged = false;
    let mut last = String::new();
    for send in sends {
        if let Ok((ok, response)) = send.await {
            acknowledged |= ok;
            last = response;
        }
    }
    (acknowledged, last)
}
