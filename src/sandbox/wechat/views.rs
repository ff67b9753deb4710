//! The sandbox's trades and refunds as WeChat's API v3 shows them: the gateway answers
//! with these and the notifier encrypts them into notifications.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::trade_state;
use crate::db::sandbox::SandboxTrade;
use crate::providers::wechat::wire::beijing_rfc3339;
use crate::sandbox::keys::{WECHAT_APPID, WECHAT_MCHID};

/// The transaction as WeChat's query shows it.
pub fn transaction(trade: &SandboxTrade) -> Value {
    let state = trade_state(trade);
    let mut t = json!({
        "appid": WECHAT_APPID,
        "mchid": WECHAT_MCHID,
        "out_trade_no": trade.out_trade_no,
        "trade_type": "NATIVE",
        "trade_state": state,
        "trade_state_desc": match state {
            "SUCCESS" => "支付成功",
            "REFUND" => "转入退款",
            "CLOSED" => "已关闭",
            _ => "订单未支付",
        },
        "attach": "",
        "amount": {"total": trade.total_amount, "currency": "CNY"},
    });
    if let (Some(paid), Some(no)) = (trade.paid_at, &trade.trade_no) {
        t["transaction_id"] = json!(no);
        t["bank_type"] = json!("OTHERS");
        t["success_time"] = json!(beijing_rfc3339(paid));
        t["payer"] = json!({"openid": "oSandbox0000000000000000000"});
        t["amount"] = json!({"total": trade.total_amount, "payer_total": trade.total_amount,
            "currency": "CNY", "payer_currency": "CNY"});
    }
    t
}

/// A refund id in WeChat's shape, the same for the same refund number.
fn refund_id(out_refund_no: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, out_refund_no.as_bytes());
    let digits: String = digest
        .as_ref()
        .iter()
        .take(24)
        .map(|b| char::from(b'0' + b % 10))
        .collect();
    format!("50300{digits}")
}

/// The refund as WeChat's refund call and query show it.
pub fn refund_view(
    trade: &SandboxTrade,
    out_refund_no: &str,
    amount: i64,
    status: &str,
    now: DateTime<Utc>,
) -> Value {
    let mut v = json!({
        "refund_id": refund_id(out_refund_no),
        "out_refund_no": out_refund_no,
        "transaction_id": trade.trade_no,
        "out_trade_no": trade.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": beijing_rfc3339(now),
        "status": status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": trade.total_amount, "refund": amount,
            "payer_total": trade.total_amount, "payer_refund": amount,
            "settlement_total": trade.total_amount, "settlement_refund": amount,
            "discount_refund": 0, "currency": "CNY",
        },
    });
    if status == "SUCCESS" {
        v["success_time"] = json!(beijing_rfc3339(now));
    }
    v
}
