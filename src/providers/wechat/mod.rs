//! WeChat Pay API v3 (Native payment). The protocol primitives do no HTTP and read no
//! clock, so the client, the notify endpoint and the sandbox share them: `sign` makes and
//! checks `WECHATPAY2-SHA256-RSA2048` signatures, `aead` opens and seals notification
//! resources (`AEAD_AES_256_GCM`), `platform_keys` holds the platform's verification keys
//! in public-key and certificate mode and picks one by `Wechatpay-Serial`, `wire` holds what
//! answers and notifications share. `client` makes signed calls and believes only signed
//! answers; `notify` turns a notification into a verified notice or a rejection; this file
//! is the `Provider` kassa's orders use.

pub mod aead;
pub mod platform_keys;
pub mod sign;

pub use aead::{AeadError, ApiV3Key};
pub use platform_keys::{
    KeyMode, PlatformCertificate, PlatformKeyError, PlatformKeys, PlatformPublicKey, SelectedKey, VerifyError,
};
pub use sign::{Authorization, AuthorizationError, MerchantSigner, RandomUnavailable, SCHEMA};

pub mod client;
pub mod notify;
pub mod wire;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{json, Value};

use self::client::WechatClient;
use self::wire::{parse_rfc3339, PlatformHeaders};
use super::{
    CreatedPayment, PaymentFacts, PaymentRequest, Provider, ProviderError, ProviderFuture, RefundOutcome,
    RefundRequest, RefundState, TradeState,
};
use crate::domain::{Clock, Currency, Order, ProviderKind};

/// WeChat Pay Native payments: the customer scans `code_url`.
pub struct WechatProvider {
    pub client: WechatClient,
    /// The application clock: request timestamps, response and notification freshness.
    pub clock: Arc<dyn Clock>,
}

impl WechatProvider {
    /// Verifies a notification received now, or says why it is rejected.
    pub fn verify_notification(&self, headers: &PlatformHeaders, body: &[u8]) -> super::notice::Verified {
        notify::verify(
            headers,
            body,
            &self.client.notice_expectations(),
            self.clock.now(),
        )
    }
}

fn text(answer: &Value, key: &str) -> Option<String> {
    answer
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn is_code(e: &ProviderError, codes: &[&str]) -> bool {
    matches!(e, ProviderError::Rejected { code, .. } if codes.contains(&code.as_str()))
}

/// WeChat's `description` is at most 127 bytes; cut on a character boundary.
fn description(subject: &str) -> String {
    let mut end = subject.len().min(127);
    while !subject.is_char_boundary(end) {
        end -= 1;
    }
    subject[..end].to_owned()
}

/// The payment deadline in whole seconds, never later than the order's.
fn time_expire(deadline: DateTime<Utc>) -> String {
    let whole = DateTime::from_timestamp(deadline.timestamp(), 0).unwrap_or(deadline);
    wire::beijing_rfc3339(whole)
}

/// Path segments kassa builds from its own ids and numbers: letters, digits, `_` and
/// `-` only, but escaped anyway so nothing can change the path.
fn segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

impl Provider for WechatProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Wechat
    }

    fn currencies(&self) -> &'static [Currency] {
        &[Currency::Cny]
    }

    fn create_payment<'a>(&'a self, request: &'a PaymentRequest) -> ProviderFuture<'a, CreatedPayment> {
        Box::pin(async move {
            let body = json!({
                "appid": self.client.appid(),
                "mchid": self.client.mchid(),
                "description": description(&request.subject),
                "out_trade_no": request.order_id.as_str(),
                "time_expire": time_expire(request.expires_at),
                "notify_url": request.notify_url,
                "amount": {"total": request.amount.minor(), "currency": request.amount.currency().code()},
            });
            let answer = self
                .client
                .call(
                    Method::POST,
                    "/v3/pay/transactions/native",
                    Some(&body),
                    self.clock.now(),
                )
                .await?
                .json()?;
            let qr_code = text(&answer, "code_url")
                .ok_or_else(|| client::unknown("native order answered without code_url".into()))?;
            Ok(CreatedPayment { qr_code })
        })
    }

    fn query<'a>(&'a self, order: &'a Order) -> ProviderFuture<'a, TradeState> {
        Box::pin(async move {
            let path = format!(
                "/v3/pay/transactions/out-trade-no/{}?mchid={}",
                segment(order.id.as_str()),
                segment(self.client.mchid())
            );
            let answer = match self.client.call(Method::GET, &path, None, self.clock.now()).await {
                Ok(a) => a.json()?,
                Err(e) if is_code(&e, &["ORDER_NOT_EXIST", "RESOURCE_NOT_EXISTS"]) => {
                    return Ok(TradeState::NotPaid)
                }
                Err(e) => return Err(e),
            };
            match text(&answer, "trade_state").as_deref() {
                // REFUND: paid, then (partly) refunded.
                Some("SUCCESS" | "REFUND") => {
                    let amount = answer
                        .get("amount")
                        .and_then(|a| a.get("total"))
                        .and_then(Value::as_i64)
                        .ok_or_else(|| client::unknown("query answered without amount.total".into()))?;
                    Ok(TradeState::Paid(PaymentFacts {
                        provider_trade_no: text(&answer, "transaction_id"),
                        paid_at: text(&answer, "success_time").and_then(|t| parse_rfc3339(&t)),
                        amount,
                    }))
                }
                Some("CLOSED" | "REVOKED") => Ok(TradeState::Closed),
                Some("NOTPAY" | "USERPAYING" | "PAYERROR") => Ok(TradeState::NotPaid),
                other => Err(client::unknown(format!("query answered trade_state {other:?}"))),
            }
        })
    }

    fn close<'a>(&'a self, order: &'a Order) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            let path = format!(
                "/v3/pay/transactions/out-trade-no/{}/close",
                segment(order.id.as_str())
            );
            let body = json!({"mchid": self.client.mchid()});
            match self
                .client
                .call(Method::POST, &path, Some(&body), self.clock.now())
                .await
            {
                Ok(_) => Ok(()),
                // Already closed, or never created: nothing left to close.
                Err(e) if is_code(&e, &["ORDER_CLOSED", "ORDER_NOT_EXIST"]) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn refund<'a>(
        &'a self,
        order: &'a Order,
        refund: &'a RefundRequest,
    ) -> ProviderFuture<'a, RefundOutcome> {
        Box::pin(async move {
            let body = json!({
                "out_trade_no": order.id.as_str(),
                "out_refund_no": refund.refund_no,
                "reason": description(&refund.reason).chars().take(80).collect::<String>(),
                "notify_url": self.client.notify_url(),
                "amount": {
                    "refund": refund.amount.minor(),
                    "total": order.amount.minor(),
                    "currency": order.amount.currency().code(),
                },
            });
            match self
                .client
                .call(
                    Method::POST,
                    "/v3/refund/domestic/refunds",
                    Some(&body),
                    self.clock.now(),
                )
                .await
            {
                Ok(answer) => Ok(refund_outcome(&answer.json()?)),
                Err(ProviderError::Rejected { code, message, .. }) => {
                    Ok(RefundOutcome::Failed { code, message })
                }
                Err(e) => Err(e),
            }
        })
    }

    fn query_refund<'a>(&'a self, _order: &'a Order, refund_no: &'a str) -> ProviderFuture<'a, RefundState> {
        Box::pin(async move {
            let path = format!("/v3/refund/domestic/refunds/{}", segment(refund_no));
            match self.client.call(Method::GET, &path, None, self.clock.now()).await {
                Ok(answer) => {
                    let answer = answer.json()?;
                    Ok(match refund_outcome(&answer) {
                        RefundOutcome::Succeeded { provider_refund_id } => {
                            RefundState::Succeeded { provider_refund_id }
                        }
                        RefundOutcome::Processing => RefundState::Processing,
                        RefundOutcome::Failed { code, message } => RefundState::Failed { code, message },
                    })
                }
                Err(e) if is_code(&e, &["RESOURCE_NOT_EXISTS", "ORDER_NOT_EXIST"]) => {
                    Ok(RefundState::NotFound)
                }
                Err(e) => Err(e),
            }
        })
    }
}

/// A refund's `status`: only `SUCCESS` moves money now, only `CLOSED` ends it unpaid;
/// `PROCESSING` and `ABNORMAL` wait for the `REFUND.*` notification or a query.
fn refund_outcome(answer: &Value) -> RefundOutcome {
    match text(answer, "status").as_deref() {
        Some("SUCCESS") => RefundOutcome::Succeeded {
            provider_refund_id: text(answer, "refund_id"),
        },
        Some(status @ "CLOSED") => RefundOutcome::Failed {
            code: status.to_owned(),
            message: "WeChat Pay reports the refund as not completed".into(),
        },
        // ABNORMAL: the money did not reach the buyer's card and the merchant may still
        // complete the refund by hand in WeChat's console, so it keeps its amount held.
        _ => RefundOutcome::Processing,
    }
}
