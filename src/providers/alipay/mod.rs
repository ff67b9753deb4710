//! Alipay face-to-face payment (当面付) through the OpenAPI gateway with RSA2 keys.

pub mod client;
pub mod notify;
pub mod sign;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use self::client::AlipayClient;
use super::{
    CreatedPayment, PaymentFacts, PaymentRequest, Provider, ProviderError, ProviderFuture, RefundOutcome,
    RefundRequest, RefundState, TradeState,
};
use crate::domain::{Amount, Clock, Currency, Order, OrderId, ProviderKind};

pub struct AlipayProvider {
    pub client: AlipayClient,
    /// The application clock: request timestamps and the payment deadline follow it.
    pub clock: Arc<dyn Clock>,
}

impl AlipayProvider {
    /// Parses and verifies a notification for this account, or says why it is rejected.
    pub fn verify_notification(&self, body: &[u8]) -> super::notice::Verified {
        notify::verify(body, &self.client.notice_expectations())
    }

    /// What one refund returned, by its request number (`out_request_no`, which Alipay's
    /// refund notices echo as `out_biz_no`): `None` when Alipay knows no such refund, or
    /// not as succeeded. A refund notice without `refund_fee` is confirmed this way.
    pub async fn refund_amount(
        &self,
        order_id: &OrderId,
        request_no: &str,
    ) -> Result<Option<Amount>, ProviderError> {
        let biz = json!({"out_trade_no": order_id.as_str(), "out_request_no": request_no});
        match self
            .client
            .call("alipay.trade.fastpay.refund.query", &biz, None, self.clock.now())
            .await
        {
            // Alipay answers 10000 for unknown refunds too, without refund_amount; older
            // answers carry no refund_status at all.
            Ok(answer) => {
                let succeeded = matches!(
                    text(&answer, "refund_status").as_deref(),
                    None | Some("REFUND_SUCCESS")
                );
                Ok(text(&answer, "refund_amount")
                    .filter(|_| succeeded)
                    .and_then(|t| Amount::parse_decimal(&t, Currency::Cny).ok()))
            }
            Err(e) if is_code(&e, &["ACQ.TRADE_NOT_EXIST"]) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn text(answer: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    answer
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn is_code(e: &ProviderError, codes: &[&str]) -> bool {
    matches!(e, ProviderError::Rejected { code, .. } if codes.contains(&code.as_str()))
}

/// Minutes from `now` to `deadline`, rounded down so the provider's deadline is never
/// later than kassa's; Alipay's `timeout_express` takes whole minutes, at least 1.
fn timeout_express(now: DateTime<Utc>, deadline: DateTime<Utc>) -> String {
    format!("{}m", ((deadline - now).num_seconds() / 60).max(1))
}

impl Provider for AlipayProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Alipay
    }

    fn currencies(&self) -> &'static [Currency] {
        &[Currency::Cny]
    }

    fn create_payment<'a>(&'a self, request: &'a PaymentRequest) -> ProviderFuture<'a, CreatedPayment> {
        Box::pin(async move {
            let now = self.clock.now();
            // Both deadlines end no later than the order's expiry: closing a trade nobody
            // scanned does not void its QR code, the deadline does.
            let biz = json!({
                "out_trade_no": request.order_id.as_str(),
                "total_amount": request.amount.to_decimal_string(),
                "subject": request.subject,
                "timeout_express": timeout_express(now, request.expires_at),
                "time_expire": sign::beijing(request.expires_at),
            });
            let answer = self
                .client
                .call("alipay.trade.precreate", &biz, Some(&request.notify_url), now)
                .await?;
            let qr_code = text(&answer, "qr_code").ok_or_else(|| ProviderError::Unknown {
                provider: ProviderKind::Alipay,
                reason: "precreate answered without qr_code".into(),
            })?;
            Ok(CreatedPayment { qr_code })
        })
    }

    fn query<'a>(&'a self, order: &'a Order) -> ProviderFuture<'a, TradeState> {
        Box::pin(async move {
            let biz = json!({"out_trade_no": order.id.as_str()});
            let answer = match self
                .client
                .call("alipay.trade.query", &biz, None, self.clock.now())
                .await
            {
                Ok(a) => a,
                // The trade exists only once scanned.
                Err(e) if is_code(&e, &["ACQ.TRADE_NOT_EXIST"]) => return Ok(TradeState::NotPaid),
                Err(e) => return Err(e),
            };
            match text(&answer, "trade_status").as_deref() {
                Some("TRADE_SUCCESS" | "TRADE_FINISHED") => {
                    let amount = text(&answer, "total_amount")
                        .and_then(|t| Amount::parse_decimal(&t, Currency::Cny).ok())
                        .map(Amount::minor)
                        .ok_or_else(|| ProviderError::Unknown {
                            provider: ProviderKind::Alipay,
                            reason: "query answered without a valid total_amount".into(),
                        })?;
                    Ok(TradeState::Paid(PaymentFacts {
                        provider_trade_no: text(&answer, "trade_no"),
                        paid_at: text(&answer, "send_pay_date").and_then(|t| sign::parse_beijing(&t)),
                        amount,
                    }))
                }
                Some("TRADE_CLOSED") => Ok(TradeState::Closed),
                _ => Ok(TradeState::NotPaid),
            }
        })
    }

    fn close<'a>(&'a self, order: &'a Order) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            let biz = json!({"out_trade_no": order.id.as_str()});
            match self
                .client
                .call("alipay.trade.close", &biz, None, self.clock.now())
                .await
            {
                Ok(_) => Ok(()),
                // Never scanned: there is nothing to close, and the QR code's own
                // deadline bounds a late scan.
                Err(e) if is_code(&e, &["ACQ.TRADE_NOT_EXIST"]) => Ok(()),
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
            let biz = json!({
                "out_trade_no": order.id.as_str(),
                "refund_amount": refund.amount.to_decimal_string(),
                "out_request_no": refund.refund_no,
                "refund_reason": refund.reason,
            });
            match self
                .client
                .call("alipay.trade.refund", &biz, None, self.clock.now())
                .await
            {
                // Only fund_change=Y says money moved now; N (a repeat, or not yet)
                // is confirmed by a refund query.
                Ok(answer) if text(&answer, "fund_change").as_deref() == Some("Y") => {
                    Ok(RefundOutcome::Succeeded {
                        provider_refund_id: text(&answer, "trade_no"),
                    })
                }
                Ok(_) => Ok(RefundOutcome::Processing),
                Err(ProviderError::Rejected { code, message, .. }) => {
                    Ok(RefundOutcome::Failed { code, message })
                }
                Err(e) => Err(e),
            }
        })
    }

    fn query_refund<'a>(&'a self, order: &'a Order, refund_no: &'a str) -> ProviderFuture<'a, RefundState> {
        Box::pin(async move {
            let biz = json!({
                "out_trade_no": order.id.as_str(),
                "out_request_no": refund_no,
                "query_options": ["gmt_refund_pay"],
            });
            match self
                .client
                .call("alipay.trade.fastpay.refund.query", &biz, None, self.clock.now())
                .await
            {
                // Alipay answers 10000 for unknown refunds too, without refund_amount.
                Ok(answer) => match (
                    text(&answer, "refund_status").as_deref(),
                    text(&answer, "refund_amount"),
                ) {
                    (Some("REFUND_SUCCESS"), _) | (None, Some(_)) => Ok(RefundState::Succeeded {
                        provider_refund_id: text(&answer, "trade_no"),
                    }),
                    _ => Ok(RefundState::NotFound),
                },
                Err(e) if is_code(&e, &["ACQ.TRADE_NOT_EXIST"]) => Ok(RefundState::NotFound),
                Err(e) => Err(e),
            }
        })
    }
}
