//! What kassa decided about a payment platform's notification: a verdict and the
//! reason that led to it, both from small fixed sets so they can be filtered on and
//! counted (the reason's text is a stable snake_case code; the human detail is kept
//! beside it).

use std::str::FromStr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The notice changed the order.
    Applied,
    /// The same change was already applied (a resend, a second copy).
    Duplicate,
    /// A valid notice that changes nothing (the buyer has not paid yet, a refund
    /// notice): acknowledged.
    Ignored,
    /// Not accepted: forged, malformed, or not matching the order. The platform is
    /// told `failure`.
    Rejected,
    /// kassa could not decide (storage failed, or a refund notice could not be
    /// confirmed with the platform); the platform is asked to resend.
    Error,
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [
        Verdict::Applied,
        Verdict::Duplicate,
        Verdict::Ignored,
        Verdict::Rejected,
        Verdict::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Applied => "applied",
            Verdict::Duplicate => "duplicate",
            Verdict::Ignored => "ignored",
            Verdict::Rejected => "rejected",
            Verdict::Error => "error",
        }
    }

    /// Whether the platform is told the notice was received, so it stops resending.
    pub fn acknowledged(self) -> bool {
        matches!(self, Verdict::Applied | Verdict::Duplicate | Verdict::Ignored)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verdict::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown verdict {s:?}"))
    }
}

/// Why a notification was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    BodyTooLarge,
    /// Sent with a content type the platform never uses (Alipay posts forms only).
    UnsupportedContentType,
    /// Not UTF-8, empty, not a form, a parameter repeated.
    MalformedBody,
    MissingSignature,
    UnsupportedSignType,
    BadSignature,
    MissingField,
    /// A field is present but not in the form the platform documents.
    MalformedField,
    AppIdMismatch,
    SellerIdMismatch,
    /// The platform is not enabled on this server.
    ProviderDisabled,
    UnknownTradeStatus,
    UnknownOrder,
    /// The order was created for another platform.
    ProviderMismatch,
    CurrencyMismatch,
    AmountMismatch,
    /// The change is not allowed from the order's status.
    NotAllowed,
    /// A header the platform always sends is absent (WeChat `Wechatpay-*`).
    MissingHeader,
    /// The signed timestamp is more than 5 minutes off the server's clock.
    StaleTimestamp,
    /// No configured platform key or certificate has this `Wechatpay-Serial`.
    UnknownSerial,
    /// A resource encrypted with an algorithm kassa does not implement.
    UnsupportedAlgorithm,
    /// The resource does not open with the APIv3 key (wrong key, changed ciphertext).
    DecryptFailed,
    MchidMismatch,
    /// A refund's end contradicts how kassa already settled it (WeChat `REFUND.SUCCESS`
    /// for a refund recorded as failed): money may have moved that kassa freed again,
    /// so a person must look.
    RefundConflict,
}

impl RejectionCode {
    pub const ALL: [RejectionCode; 24] = [
        RejectionCode::BodyTooLarge,
        RejectionCode::UnsupportedContentType,
        RejectionCode::MalformedBody,
        RejectionCode::MissingSignature,
        RejectionCode::UnsupportedSignType,
        RejectionCode::BadSignature,
        RejectionCode::MissingField,
        RejectionCode::MalformedField,
        RejectionCode::AppIdMismatch,
        RejectionCode::SellerIdMismatch,
        RejectionCode::ProviderDisabled,
        RejectionCode::UnknownTradeStatus,
        RejectionCode::UnknownOrder,
        RejectionCode::ProviderMismatch,
        RejectionCode::CurrencyMismatch,
        RejectionCode::AmountMismatch,
        RejectionCode::NotAllowed,
        RejectionCode::MissingHeader,
        RejectionCode::StaleTimestamp,
        RejectionCode::UnknownSerial,
        RejectionCode::UnsupportedAlgorithm,
        RejectionCode::DecryptFailed,
        RejectionCode::MchidMismatch,
        RejectionCode::RefundConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectionCode::BodyTooLarge => "body_too_large",
            RejectionCode::UnsupportedContentType => "unsupported_content_type",
            RejectionCode::MalformedBody => "malformed_body",
            RejectionCode::MissingSignature => "missing_signature",
            RejectionCode::UnsupportedSignType => "unsupported_sign_type",
            RejectionCode::BadSignature => "bad_signature",
            RejectionCode::MissingField => "missing_field",
            RejectionCode::MalformedField => "malformed_field",
            RejectionCode::AppIdMismatch => "app_id_mismatch",
            RejectionCode::SellerIdMismatch => "seller_id_mismatch",
            RejectionCode::ProviderDisabled => "provider_disabled",
            RejectionCode::UnknownTradeStatus => "unknown_trade_status",
            RejectionCode::UnknownOrder => "unknown_order",
            RejectionCode::ProviderMismatch => "provider_mismatch",
            RejectionCode::CurrencyMismatch => "currency_mismatch",
            RejectionCode::AmountMismatch => "amount_mismatch",
            RejectionCode::NotAllowed => "not_allowed",
            RejectionCode::MissingHeader => "missing_header",
            RejectionCode::StaleTimestamp => "stale_timestamp",
            RejectionCode::UnknownSerial => "unknown_serial",
            RejectionCode::UnsupportedAlgorithm => "unsupported_algorithm",
            RejectionCode::DecryptFailed => "decrypt_failed",
            RejectionCode::MchidMismatch => "mchid_mismatch",
            RejectionCode::RefundConflict => "refund_conflict",
        }
    }

    /// Whether the notice failed verification (forged, malformed, not for this
    /// merchant) rather than being verified and then refused for what it says. Every
    /// code is named so that a new one must be placed on one side. This one test decides
    /// which notifications are rate limited, kept only in part and deleted by retention
    /// (migration 0008 lists the same codes).
    ///
    /// The `false` side is only ever given once the platform's signature has held
    /// (Alipay and WeChat check the order, amount, currency and trade status after it),
    /// so a sender without the platform's key cannot earn one. Of the `true` side,
    /// `missing_field`, `malformed_field` and `malformed_body` can also follow a good
    /// signature (a WeChat envelope or resource kassa cannot read): the platform's own
    /// notices always carry what kassa reads, so such a notice is one kassa cannot act
    /// on or tell from a replay, and is treated as not vouched for; the app and merchant
    /// mismatches are a genuine notice for someone else's account.
    pub fn is_verification_failure(self) -> bool {
        match self {
            RejectionCode::BodyTooLarge
            | RejectionCode::UnsupportedContentType
            | RejectionCode::MalformedBody
            | RejectionCode::MissingSignature
            | RejectionCode::UnsupportedSignType
            | RejectionCode::BadSignature
            | RejectionCode::MissingField
            | RejectionCode::MalformedField
            | RejectionCode::AppIdMismatch
            | RejectionCode::SellerIdMismatch
            | RejectionCode::ProviderDisabled
            | RejectionCode::MissingHeader
            | RejectionCode::StaleTimestamp
            | RejectionCode::UnknownSerial
            | RejectionCode::UnsupportedAlgorithm
            | RejectionCode::DecryptFailed
            | RejectionCode::MchidMismatch => true,
            RejectionCode::UnknownTradeStatus
            | RejectionCode::UnknownOrder
            | RejectionCode::ProviderMismatch
            | RejectionCode::CurrencyMismatch
            | RejectionCode::AmountMismatch
            | RejectionCode::NotAllowed
            | RejectionCode::RefundConflict => false,
        }
    }
}

/// A notification not accepted, with the code (for filters and metrics) and what
/// exactly was wrong (for people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: RejectionCode,
    pub detail: String,
}

impl Rejection {
    pub fn new(code: RejectionCode, detail: impl Into<String>) -> Rejection {
        Rejection {
            code,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

/// The reason behind a verdict; each reason belongs to exactly one verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// applied: a pending order is paid.
    Paid,
    /// applied: a closed order is paid (money taken after the close), flagged late.
    LatePayment,
    /// applied: a pending order is closed.
    Closed,
    /// duplicate: the order already shows the payment.
    AlreadyPaid,
    /// duplicate: the order is already closed.
    AlreadyClosed,
    /// ignored: the buyer has not paid yet (Alipay `WAIT_BUYER_PAY`).
    AwaitingPayment,
    /// ignored: a refund notice that moves no money (a refund kassa did not make that
    /// did not complete).
    RefundNotice,
    /// ignored: a close for an order already paid that the platform does not confirm
    /// as a full refund (its trade is not closed).
    CloseAfterPayment,
    /// ignored: a valid notice of an event kassa does not act on.
    UnhandledEvent,
    /// applied: a pending refund succeeded (WeChat `REFUND.SUCCESS`).
    RefundSucceeded,
    /// applied: a pending refund failed (WeChat `REFUND.CLOSED`).
    RefundFailed,
    /// ignored: the refund could not reach the buyer's card (WeChat `REFUND.ABNORMAL`);
    /// the merchant may still complete it by hand in the platform's console, so it stays
    /// pending and holds its amount.
    RefundAbnormal,
    /// applied: a refund kassa did not make (the platform's merchant console) is recorded
    /// and applied.
    ExternalRefund,
    /// duplicate: the refund is already settled (or, for a running total such as
    /// Alipay's `refund_fee`, already reflected in the order).
    RefundAlreadySettled,
    /// error: a refund notice that does not say how much was refunded, and the platform's
    /// query could not say either (unreachable, or no such refund yet); the platform is
    /// asked to resend rather than the refund being lost.
    RefundUnconfirmed,
    Rejected(RejectionCode),
    /// error: the notice could not be stored with a decision.
    StorageFailed,
}

impl Reason {
    pub fn verdict(self) -> Verdict {
        match self {
            Reason::Paid
            | Reason::LatePayment
            | Reason::Closed
            | Reason::RefundSucceeded
            | Reason::RefundFailed
            | Reason::ExternalRefund => Verdict::Applied,
            Reason::AlreadyPaid | Reason::AlreadyClosed | Reason::RefundAlreadySettled => Verdict::Duplicate,
            Reason::AwaitingPayment
            | Reason::RefundNotice
            | Reason::CloseAfterPayment
            | Reason::UnhandledEvent
            | Reason::RefundAbnormal => Verdict::Ignored,
            Reason::Rejected(_) => Verdict::Rejected,
            Reason::StorageFailed | Reason::RefundUnconfirmed => Verdict::Error,
        }
    }

    /// The stable snake_case code stored and shown.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Paid => "paid",
            Reason::LatePayment => "late_payment",
            Reason::Closed => "closed",
            Reason::AlreadyPaid => "already_paid",
            Reason::AlreadyClosed => "already_closed",
            Reason::AwaitingPayment => "awaiting_payment",
            Reason::RefundNotice => "refund_notice",
            Reason::CloseAfterPayment => "close_after_payment",
            Reason::UnhandledEvent => "unhandled_event",
            Reason::RefundSucceeded => "refund_succeeded",
            Reason::RefundFailed => "refund_failed",
            Reason::RefundAbnormal => "refund_abnormal",
            Reason::ExternalRefund => "external_refund",
            Reason::RefundAlreadySettled => "refund_already_settled",
            Reason::RefundUnconfirmed => "refund_unconfirmed",
            Reason::Rejected(code) => code.as_str(),
            Reason::StorageFailed => "storage_failed",
        }
    }

    /// Every reason, rejections included: the bounded set of codes.
    pub fn all() -> impl Iterator<Item = Reason> {
        [
            Reason::Paid,
            Reason::LatePayment,
            Reason::Closed,
            Reason::AlreadyPaid,
            Reason::AlreadyClosed,
            Reason::AwaitingPayment,
            Reason::RefundNotice,
            Reason::CloseAfterPayment,
            Reason::UnhandledEvent,
            Reason::RefundSucceeded,
            Reason::RefundFailed,
            Reason::RefundAbnormal,
            Reason::ExternalRefund,
            Reason::RefundAlreadySettled,
            Reason::RefundUnconfirmed,
            Reason::StorageFailed,
        ]
        .into_iter()
        .chain(RejectionCode::ALL.into_iter().map(Reason::Rejected))
    }
}

impl FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::all()
            .find(|r| r.code() == s)
            .ok_or_else(|| format!("unknown notification reason {s:?}"))
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_code_is_distinct_snake_case_and_reads_back_as_itself() {
        let all: Vec<Reason> = Reason::all().collect();
        let mut codes: Vec<&str> = all.iter().map(|r| r.code()).collect();
        for (reason, code) in all.iter().zip(&codes) {
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
            assert_eq!(code.parse::<Reason>().as_ref(), Ok(reason));
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len(), "codes are distinct");
    }

    #[test]
    fn only_applied_duplicate_and_ignored_notices_are_acknowledged() {
        let acknowledged: Vec<&str> = Verdict::ALL
            .into_iter()
            .filter(|v| v.acknowledged())
            .map(Verdict::as_str)
            .collect();
        assert_eq!(acknowledged, ["applied", "duplicate", "ignored"]);
    }
}
