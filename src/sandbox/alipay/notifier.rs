//! The simulated platform's notifier (the WeChat side's deliveries run through the
//! same loop, see `sandbox::wechat::notifier`): POSTs signed notifications to the merchant's
//! `notify_url` and repeats them on Alipay's schedule (4m, 10m, 10m, 1h, 2h, 6h, 15h,
//! divided by `time_scale`) until the answer is `success`. Deliveries are rows, so a
//! restart loses none.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use super::yuan;
use crate::db::sandbox::{self as store, Delivery, SandboxTrade, SandboxTradeStatus as Status};
use crate::db::{DbError, DbResult, Tx};
use crate::providers::alipay::sign::{beijing, notification_content};
use crate::sandbox::faults::{self, Faults};
use crate::sandbox::{Sandbox, SANDBOX_APP_ID, SANDBOX_SELLER_ID};

/// Alipay's resend delays after the first attempt: eight attempts in about 25 hours.
pub const RETRY_SCHEDULE: [Duration; 7] = [
    Duration::minutes(4),
    Duration::minutes(10),
    Duration::minutes(10),
    Duration::hours(1),
    Duration::hours(2),
    Duration::hours(6),
    Duration::hours(15),
];

/// Deliveries one pass sends at most.
const BATCH: u32 = 64;
/// How long a claimed delivery is this process's to send: longer than an attempt (15 s
/// per request, copies sent at once).
pub const LEASE: Duration = Duration::seconds(60);

fn notify_id() -> String {
    crate::domain::ids::random_bytes::<34>()
        .iter()
        .map(|b| char::from(b'0' + b % 10))
        .collect()
}

fn scaled(d: Duration, time_scale: u32) -> Duration {
    d / i32::try_from(time_scale.max(1)).unwrap_or(i32::MAX)
}

/// A notification ready to be queued: built (with the fault switches that apply now)
/// outside the writer, stored by `store` inside the same transaction as the trade
/// change that causes it, so a crash can never keep one without the other.
#[derive(Clone)]
pub struct Prepared {
    out_trade_no: String,
    url: String,
    params_json: String,
    faults_json: String,
    first_at: DateTime<Utc>,
    /// The stale TRADE_CLOSED of the out_of_order fault.
    stale_json: Option<String>,
}

impl Prepared {
    pub fn store(&self, tx: &Tx<'_>, now: DateTime<Utc>) -> DbResult<()> {
        let queue = |params: &str, faults: &str, at: DateTime<Utc>| {
            store::enqueue_delivery(tx, &self.out_trade_no, &self.url, params, faults, at, now)
        };
        queue(&self.params_json, &self.faults_json, self.first_at)?;
        if let Some(stale) = &self.stale_json {
            let calm = serde_json::to_string(&Faults::default()).unwrap_or_else(|_| "{}".into());
            queue(stale, &calm, self.first_at + Duration::milliseconds(1))?;
        }
        Ok(())
    }
}

/// Queues a notification for `trade` in `trade_status` (on its own transaction).
pub async fn enqueue(
    sandbox: &Sandbox,
    trade: &SandboxTrade,
    trade_status: Status,
    extra: Option<Map<String, Value>>,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let Some(prepared) = prepare(sandbox, trade, trade_status, extra, now).await? else {
        return Ok(());
    };
    sandbox.core.db.write(move |c| prepared.store(c, now)).await?;
    sandbox.wake.notify_one();
    Ok(())
}

/// Builds the notification for `trade` in `trade_status`; `extra` adds fields (refund
/// notices). `None` when the trade has no notify URL.
pub async fn prepare(
    sandbox: &Sandbox,
    trade: &SandboxTrade,
    trade_status: Status,
    extra: Option<Map<String, Value>>,
    now: DateTime<Utc>,
) -> Result<Option<Prepared>, DbError> {
    let Some(url) = trade.notify_url.clone() else {
        return Ok(None);
    };
    let db = &sandbox.core.db;
    let global = faults::load(db, faults::GLOBAL.to_owned()).await?;
    let own = faults::load(db, faults::trade_scope(&trade.out_trade_no)).await?;
    let faults = own.over(global);
    let mut params = Map::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            params.insert(k.to_owned(), Value::String(v));
        }
    };
    let amount = yuan(trade.total_amount);
    put("notify_type", "trade_status_sync".into());
    put("notify_id", notify_id());
    put("app_id", SANDBOX_APP_ID.into());
    put("auth_app_id", SANDBOX_APP_ID.into());
    put("charset", "utf-8".into());
    put("version", "1.0".into());
    put("sign_type", "RSA2".into());
    put("trade_no", trade.trade_no.clone().unwrap_or_default());
    put("out_trade_no", trade.out_trade_no.clone());
    put("buyer_id", "2088102177846880".into());
    put("buyer_logon_id", "csq***@sandbox.com".into());
    put("seller_id", SANDBOX_SELLER_ID.into());
    put("trade_status", trade_status.as_str().into());
    let paid = trade.paid_at.is_some();
    let is_refund = extra.is_some();
    let tamper = faults.tamper_amount && trade_status == Status::TradeSuccess && !is_refund;
    put(
        "total_amount",
        if tamper {
            yuan(trade.total_amount + 1)
        } else {
            amount.clone()
        },
    );
    if paid {
        put("receipt_amount", amount.clone());
        put("buyer_pay_amount", amount.clone());
        put("invoice_amount", amount.clone());
        put("point_amount", "0.00".into());
        put(
            "fund_bill_list",
            format!("[{{\"amount\":\"{amount}\",\"fundChannel\":\"ALIPAYACCOUNT\"}}]"),
        );
    }
    put("subject", trade.subject.clone());
    put("gmt_create", beijing(trade.created_at));
    if let Some(p) = trade.paid_at {
        put("gmt_payment", beijing(p));
    }
    if trade_status == Status::TradeClosed {
        put("gmt_close", beijing(now));
    }
    if let Some(extra) = extra {
        params.extend(extra);
    }
    let first_at = now
        + scaled(
            Duration::seconds(i64::from(faults.delay_seconds)),
            sandbox.time_scale,
        );
    let stale_json = (faults.out_of_order && trade_status == Status::TradeSuccess && !is_refund).then(|| {
        // A TRADE_CLOSED from before the payment, arriving after it.
        let mut stale = params.clone();
        stale.insert("trade_status".into(), Status::TradeClosed.as_str().into());
        stale.insert("notify_id".into(), notify_id().into());
        stale.remove("gmt_payment");
        Value::Object(stale).to_string()
    });
    Ok(Some(Prepared {
        out_trade_no: trade.out_trade_no.clone(),
        url,
        params_json: Value::Object(params).to_string(),
        faults_json: serde_json::to_string(&faults).unwrap_or_else(|_| "{}".into()),
        first_at,
        stale_json,
    }))
}

/// The form body of one attempt, signed now (Alipay re-signs each resend: its
/// `notify_time` changes).
pub fn signed_body(sandbox: &Sandbox, params_json: &str, faults: &Faults, now: DateTime<Utc>) -> String {
    let map: Map<String, Value> = serde_json::from_str(params_json).unwrap_or_default();
    let mut params: std::collections::BTreeMap<String, String> = map
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
        .collect();
    params.insert("notify_time".into(), beijing(now));
    let content = notification_content(&params);
    let sign = if faults.bad_signature {
        sandbox
            .keys
            .platform_private
            .sign_base64(format!("{content}&forged=1").as_bytes())
    } else {
        sandbox.keys.platform_private.sign_base64(content.as_bytes())
    };
    params.insert("sign".into(), sign);
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NotifierReport {
    pub attempted: usize,
    pub acknowledged: usize,
}

async fn attempt(sandbox: &Sandbox, delivery: &Delivery, now: DateTime<Utc>) -> (bool, String) {
    let faults = Faults::parse(&delivery.faults);
    if delivery.attempts < i64::from(faults.drop_first) {
        return (false, "not sent: dropped by the drop_first fault switch".into());
    }
    let body = signed_body(sandbox, &delivery.params, &faults, now);
    let copies = 1 + faults.duplicates.min(Faults::MAX_DUPLICATES);
    let sends: Vec<_> = (0..copies)
        .map(|_| {
            let request = sandbox
                .http
                .post(&delivery.notify_url)
                .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
                .body(body.clone());
            tokio::spawn(async move {
                match request.send().await {
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        (
                            status.is_success() && text.trim() == "success",
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

/// Sends every delivery that is due (up to `BATCH`), each claimed first in this
/// process's name: another process (or loop) on the database never sends the same
/// notice at the same time.
///
/// `start` is when the pass began; each claim after the first reads the clock again:
/// an attempt can take seconds, and a claim whose lease is dated from the pass start
/// would already have run out by the time its notice goes out, letting another process
/// send it at the same time (and its retry would be due early).
pub async fn try_run_once(sandbox: &Sandbox, start: DateTime<Utc>) -> Result<NotifierReport, DbError> {
    let db = &sandbox.core.db;
    let mut report = NotifierReport::default();
    for i in 0..BATCH {
        let now = if i == 0 {
            start
        } else {
            sandbox.core.now().max(start)
        };
        let owner = sandbox.core.instance.clone();
        let Some(claim) = db
            .write(move |c| store::claim_due_delivery(c, now, now + LEASE, owner.as_str()))
            .await?
        else {
            break;
        };
        let delivery = &claim.delivery;
        // One queue for both platforms: a WeChat delivery carries its notification as
        // a `wechat` object and follows WeChat's schedule.
        let (ok, response, schedule): (bool, String, &[Duration]) =
            match crate::sandbox::wechat::notifier::event_of(&delivery.params) {
                Some(event) => {
                    let (ok, response) =
                        crate::sandbox::wechat::notifier::attempt(sandbox, delivery, &event, now).await;
                    (ok, response, &crate::sandbox::wechat::notifier::RETRY_SCHEDULE)
                }
                None => {
                    let (ok, response) = attempt(sandbox, delivery, now).await;
                    (ok, response, &RETRY_SCHEDULE)
                }
            };
        report.attempted += 1;
        report.acknowledged += usize::from(ok);
        let done = usize::try_from(delivery.attempts).unwrap_or(0) + 1;
        let next = (!ok)
            .then(|| {
                // At least a millisecond on: a pass claims until nothing is due, and
                // must not claim the notice it just sent again (a huge time_scale
                // scales the delays to nothing).
                schedule
                    .get(done - 1)
                    .map(|d| now + scaled(*d, sandbox.time_scale).max(Duration::milliseconds(1)))
            })
            .flatten();
        let id = delivery.id;
        let recorded = db
            .write(move |c| store::record_attempt(c, &claim, ok, &response, next))
            .await?;
        if !recorded {
            tracing::warn!(
                delivery_id = id,
                "sandbox notice: the claim ran out during the attempt; its new holder records it"
            );
        }
    }
    Ok(report)
}

pub async fn run(sandbox: Arc<Sandbox>) {
    let core = &sandbox.core;
    loop {
        match try_run_once(&sandbox, core.now()).await {
            Ok(r) if r.attempted > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "sandbox notifier failed"),
        }
        let next = core.db.read(store::next_delivery_at).await.ok().flatten();
        let wait = next
            .map(|t| (t - core.now()).to_std().unwrap_or(StdDuration::ZERO))
            .unwrap_or(StdDuration::from_secs(5))
            .clamp(StdDuration::from_millis(20), StdDuration::from_secs(5));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = sandbox.wake.notified() => {}
        }
    }
}
