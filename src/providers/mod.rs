//! Clients of the real payment platforms. Order creation, close, expiry and refunds go
//! through the `Provider` trait; the Alipay and WeChat clients implement it. (The
//! built-in sandbox is a platform of its own, in `crate::sandbox`.)

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::{Amount, Currency, Order, OrderId, ProviderKind};

pub mod alipay;
pub mod keys;
pub mod notice;
pub mod wechat;

pub use notice::{IgnoredReason, NoticeEvent, RefundEnd, RefundNotice, Verified, VerifiedNotice};

pub type ProviderFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// What kassa asks a provider to create: a payment whose QR code the customer scans.
#[derive(Debug, Clone)]
pub struct PaymentRequest {
    /// kassa's order id, sent to the provider as its `out_trade_no`.
    pub order_id: OrderId,
    pub amount: Amount,
    pub subject: String,
    /// The provider must stop accepting payment by then (spec section 3).
    pub expires_at: DateTime<Utc>,
    /// kassa's own notify endpoint for this provider.
    pub notify_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedPayment {
    pub qr_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentFacts {
    pub provider_trade_no: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    /// What the provider says was paid, in minor units.
    pub amount: i64,
}

/// A trade's state at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradeState {
    /// Waiting for payment, or never scanned (Alipay `ACQ.TRADE_NOT_EXIST`).
    NotPaid,
    Paid(PaymentFacts),
    Closed,
}

#[derive(Debug, Clone)]
pub struct RefundRequest {
    /// Stored before the call, so a retry refunds at most once.
    pub refund_no: String,
    pub amount: Amount,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    Succeeded {
        provider_refund_id: Option<String>,
    },
    /// Accepted, result reported later (WeChat `PROCESSING`).
    Processing,
    Failed {
        code: String,
        message: String,
    },
}

/// A refund's state at the provider, from a refund query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundState {
    Succeeded {
        provider_refund_id: Option<String>,
    },
    Processing,
    /// The provider has no such refund: the request never arrived, so it can be retried
    /// with the same refund number.
    NotFound,
    Failed {
        code: String,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider answered with a definite refusal.
    #[error("{provider} refused: {code}: {message}")]
    Rejected {
        provider: ProviderKind,
        code: String,
        message: String,
    },
    /// Timeout, connection error, 5xx or a "system error": the outcome is not known
    /// and must be settled by a query, never assumed.
    #[error("{provider} outcome unknown: {reason}")]
    Unknown { provider: ProviderKind, reason: String },
}

/// Why an HTTP call to a provider failed, without the URL reqwest's text names: the
/// gateway's query carries the signed request (Alipay's `notify_url`, `sign`), and this
/// reason reaches API answers, the admin pages and stored provider calls.
pub(crate) fn transport_failure(error: reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "answer unreadable"
    } else {
        "request failed"
    };
    let error = error.without_url();
    // The innermost cause is the one a person can act on ("Connection refused").
    let mut cause: &dyn std::error::Error = &error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{what}: {cause}")
}

pub trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;
    fn create_payment<'a>(&'a self, request: &'a PaymentRequest) -> ProviderFuture<'a, CreatedPayment>;
    fn query<'a>(&'a self, order: &'a Order) -> ProviderFuture<'a, TradeState>;
    fn close<'a>(&'a self, order: &'a Order) -> ProviderFuture<'a, ()>;
    fn refund<'a>(&'a self, order: &'a Order, refund: &'a RefundRequest)
        -> ProviderFuture<'a, RefundOutcome>;
    fn query_refund<'a>(&'a self, order: &'a Order, refund_no: &'a str) -> ProviderFuture<'a, RefundState>;
    /// Currencies this provider can charge in.
    fn currencies(&self) -> &'static [Currency];
}

/// The providers enabled on this server.
#[derive(Clone, Default)]
pub struct Providers {
    enabled: BTreeMap<ProviderKind, Arc<dyn Provider>>,
    /// The Alipay account whose notifications kassa accepts.
    alipay: Option<Arc<alipay::AlipayProvider>>,
    /// The WeChat Pay merchant whose notifications kassa accepts.
    wechat: Option<Arc<wechat::WechatProvider>>,
}

impl Providers {
    pub fn none() -> Providers {
        Providers::default()
    }

    pub fn with(mut self, provider: Arc<dyn Provider>) -> Providers {
        self.enabled.insert(provider.kind(), provider);
        self
    }

    /// Alipay, whose account also checks the notifications kassa receives.
    pub fn with_alipay(mut self, provider: Arc<alipay::AlipayProvider>) -> Providers {
        self.alipay = Some(provider.clone());
        self.with(provider)
    }

    /// WeChat Pay, whose merchant also checks the notifications kassa receives.
    pub fn with_wechat(mut self, provider: Arc<wechat::WechatProvider>) -> Providers {
        self.wechat = Some(provider.clone());
        self.with(provider)
    }

    pub fn wechat(&self) -> Option<&wechat::WechatProvider> {
        self.wechat.as_deref()
    }

    pub fn get(&self, kind: ProviderKind) -> Option<&Arc<dyn Provider>> {
        self.enabled.get(&kind)
    }

    pub fn alipay(&self) -> Option<&alipay::AlipayProvider> {
        self.alipay.as_deref()
    }

    pub fn enabled(&self) -> Vec<ProviderKind> {
        self.enabled.keys().copied().collect()
    }
}
