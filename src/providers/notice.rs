//! What a payment platform's notification says, once its provider module has parsed
//! and verified it: the same shape whichever platform sent it, so one pipeline
//! (`service::notifications`) decides about all of them.

use chrono::{DateTime, Utc};

use crate::domain::{Amount, OrderId, ProviderKind, Rejection};

/// A notification whose signature and merchant identity checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNotice {
    pub provider: ProviderKind,
    /// kassa's order id, as the platform echoes it back.
    pub order_id: OrderId,
    /// Stable across the platform's resends of the same notice (Alipay `notify_id`).
    pub dedupe_key: Option<String>,
    pub event: NoticeEvent,
    /// What the platform said, in its own terms, for the order's history
    /// (`trade_status=TRADE_SUCCESS notify_id=…`).
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeEvent {
    /// The buyer paid `amount` (exactly, in the notice's currency).
    Paid {
        amount: Amount,
        provider_trade_no: Option<String>,
        paid_at: Option<DateTime<Utc>>,
    },
    /// The platform closed the trade.
    Closed,
    /// Money was refunded. `refunded_total` is the running total the platform reports
    /// (Alipay `refund_fee`); `refund_no` names the refund (Alipay `out_biz_no`: kassa's
    /// `out_request_no` for a refund kassa made).
    Refunded {
        refunded_total: Option<Amount>,
        refund_no: Option<String>,
        refunded_at: Option<DateTime<Utc>>,
        /// The order's amount as the platform states it, checked against kassa's.
        order_total: Option<Amount>,
    },
    /// The end of one refund, named by kassa's refund number (WeChat `REFUND.*`).
    RefundSettled(RefundNotice),
    /// A valid notice about nothing kassa acts on.
    Ignored(IgnoredReason),
}

/// How one refund ended at the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNotice {
    /// The refund's number as kassa sent it (WeChat `out_refund_no`); a refund made in
    /// the platform's merchant console carries a number kassa never issued.
    pub refund_no: String,
    pub provider_refund_id: Option<String>,
    /// This refund's amount (not a running total).
    pub amount: Amount,
    /// The order's amount as the platform states it (WeChat `amount.total`), checked
    /// against kassa's order when given.
    pub order_total: Option<Amount>,
    pub outcome: RefundEnd,
    pub settled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundEnd {
    Succeeded,
    /// The money could not reach the buyer (WeChat `ABNORMAL`); the merchant may still
    /// complete the refund by hand, after which it succeeds, so it is not an end yet.
    Abnormal,
    /// The platform's status (`CLOSED`) as the failure code.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredReason {
    /// The trade exists, the buyer has not paid (Alipay `WAIT_BUYER_PAY`).
    AwaitingPayment,
    /// An event type kassa does not act on.
    OtherEvent,
}

/// What a provider's notify module hands to the pipeline.
pub type Verified = Result<VerifiedNotice, Rejection>;
