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
    /// Money was refunded. `refunded_total` is the running total the platform reports.
    Refunded {
        refunded_total: Option<Amount>,
        refund_no: Option<String>,
        refunded_at: Option<DateTime<Utc>>,
    },
    /// A valid notice about nothing kassa acts on.
    Ignored(IgnoredReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoredReason {
    /// The trade exists, the buyer has not paid (Alipay `WAIT_BUYER_PAY`).
    AwaitingPayment,
}

/// What a provider's notify module hands to the pipeline.
pub type Verified = Result<VerifiedNotice, Rejection>;
