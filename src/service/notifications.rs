//! One pipeline for every payment platform's notifications. The provider's notify
//! module parses and verifies (off the writer); `process` then, in one transaction,
//! records the raw notification, checks the notice against the order (provider,
//! amount, currency), applies the change through `transitions` and stores the verdict
//! with its reason. The HTTP handlers keep only the reply their platform expects.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::core::Core;
use crate::db::history::Cause;
use crate::db::notifications::{self, Cut, Decided, NewNotification};
use crate::db::refunds::{self, NewRefund, Settlement};
use crate::db::transitions::{self, Change, Checked, Expected, Found, Outcome};
use crate::db::{DbResult, Tx};
use crate::domain::{
    Amount, OrderId, OrderStatus, ProviderKind, Reason, RefundStatus, RejectionCode as Code, Transition,
    TransitionSource, Verdict,
};
use crate::providers::{
    IgnoredReason, NoticeEvent, Provider, RefundEnd, RefundNotice, TradeState, Verified, VerifiedNotice,
};
use crate::service::changes::{self, Changes};

/// A notification as received, stored whatever the verdict.
#[derive(Debug, Clone)]
pub struct RawNotification {
    pub provider: ProviderKind,
    pub received_at: DateTime<Utc>,
    pub remote_addr: Option<String>,
    /// The request headers as a JSON object (rendered by the handler).
    pub headers: String,
    pub body: Vec<u8>,
    /// Set by `kept_when_unverified`: `body` is only the start of what came.
    pub cut: Option<CutBody>,
}

/// The whole body's length and hex SHA-256, kept beside a body stored in part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutBody {
    pub length: i64,
    pub sha256: String,
}

/// Bytes of body a notification that failed verification keeps. Anyone can send one, so
/// what each may leave on disk is small: enough to see what it was (with its length and
/// hash), too little for a flood to fill the disk.
pub const KEPT_UNVERIFIED_BODY: usize = 2048;
/// Bytes of headers (as JSON) such a notification keeps.
pub const KEPT_UNVERIFIED_HEADERS: usize = 2048;
/// Characters of one header value it keeps.
const KEPT_HEADER_VALUE: usize = 256;

impl RawNotification {
    pub fn as_new(&self) -> NewNotification<'_> {
        NewNotification {
            provider: self.provider,
            received_at: self.received_at,
            remote_addr: self.remote_addr.as_deref(),
            headers: &self.headers,
            body: &self.body,
            cut: self.cut.as_ref().map(|c| Cut {
                length: c.length,
                sha256: &c.sha256,
            }),
        }
    }

    /// What is stored of a notification that failed verification: the first
    /// `KEPT_UNVERIFIED_BODY` bytes of its body with the whole body's length and hash,
    /// and its headers cut to `KEPT_UNVERIFIED_HEADERS`.
    pub fn kept_when_unverified(mut self) -> RawNotification {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.body);
        let sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let length = i64::try_from(self.body.len()).unwrap_or(i64::MAX);
        self.body.truncate(KEPT_UNVERIFIED_BODY);
        self.headers = bounded_headers(&self.headers, KEPT_UNVERIFIED_HEADERS);
        self.cut = Some(CutBody { length, sha256 });
        self
    }
}

/// Headers (a JSON object of name to value) in at most `budget` bytes: each value cut to
/// `KEPT_HEADER_VALUE` characters, and headers that do not fit left out and counted.
fn bounded_headers(headers: &str, budget: usize) -> String {
    use serde_json::{Map, Value};
    if headers.len() <= budget {
        return headers.to_owned();
    }
    let Ok(all) = serde_json::from_str::<Map<String, Value>>(headers) else {
        return headers.chars().take(budget / 4).collect();
    };
    // Room for the note on what was left out.
    let room = budget.saturating_sub(64);
    let mut kept = Map::new();
    let mut used: usize = 2;
    let mut left_out = 0usize;
    for (name, value) in all {
        let value: String = value
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(KEPT_HEADER_VALUE)
            .collect();
        // As the object will write them: quoted, escaped, with a colon and a comma.
        let cost = Value::String(name.clone())
            .to_string()
            .len()
            .saturating_add(Value::String(value.clone()).to_string().len())
            .saturating_add(2);
        if used.saturating_add(cost) > room {
            left_out += 1;
            continue;
        }
        used = used.saturating_add(cost);
        kept.insert(name, Value::String(value));
    }
    if left_out > 0 {
        kept.insert(
            "(not kept)".to_owned(),
            Value::String(format!("{left_out} more headers")),
        );
    }
    Value::Object(kept).to_string()
}

/// Characters of a rejection's detail that are stored. A detail given before the
/// signature is checked may quote what anyone sent (a parameter's name, a header's
/// value), so it is bounded like the body it came with.
pub const KEPT_DETAIL: usize = 256;

/// `detail` in at most `KEPT_DETAIL` characters, an ellipsis marking a cut.
fn bounded_detail(detail: &str) -> String {
    if detail.chars().nth(KEPT_DETAIL).is_none() {
        return detail.to_owned();
    }
    let mut kept: String = detail.chars().take(KEPT_DETAIL - 1).collect();
    kept.push('…');
    kept
}

/// Whether `notice` failed verification: the one test behind everything that treats
/// such notifications apart (the per-address limit, the body kept only in part, the
/// `unverified` mark retention deletes by). A notice the platform signed and kassa then
/// refused for what it says (an unknown order, another amount or currency) is verified:
/// see `RejectionCode::is_verification_failure`.
pub fn failed_verification(notice: &Verified) -> bool {
    notice
        .as_ref()
        .is_err_and(|rejection| rejection.code.is_verification_failure())
}

/// What was decided, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub reason: Reason,
    pub detail: Option<String>,
    /// The order the notice was about, when there is one.
    pub order_id: Option<OrderId>,
}

impl Decision {
    pub fn verdict(&self) -> Verdict {
        self.reason.verdict()
    }

    fn about(order_id: &OrderId, reason: Reason, detail: Option<String>) -> Decision {
        Decision {
            reason,
            detail,
            order_id: Some(order_id.clone()),
        }
    }
}

/// Decides about one notification and stores it, in `tx`; the change it causes goes
/// through `changes` (history row and webhook in the same transaction). The writer
/// runs this as one job; the benchmark runs it too.
pub fn record(
    tx: &Tx<'_>,
    changes: &mut Changes,
    raw: &NewNotification<'_>,
    notice: &Verified,
) -> DbResult<Decision> {
    let notice = match notice {
        Ok(notice) => notice,
        Err(rejection) => {
            let decision = Decision {
                reason: Reason::Rejected(rejection.code),
                detail: Some(bounded_detail(&rejection.detail)),
                order_id: None,
            };
            if rejection.code.is_verification_failure() {
                store_unverified(tx, raw, &decision)?;
            } else {
                // Signed by the platform, refused for what it says: kept as every
                // verified notification is.
                store(tx, raw, &decision, None)?;
            }
            return Ok(decision);
        }
    };
    let now = raw.received_at;
    let (change, amount) = match &notice.event {
        NoticeEvent::Paid {
            amount,
            provider_trade_no,
            paid_at,
        } => (
            Change::Pay {
                provider_trade_no: provider_trade_no.clone(),
                paid_at: paid_at.unwrap_or(now),
            },
            Some(*amount),
        ),
        NoticeEvent::Closed => (Change::Close, None),
        NoticeEvent::Refunded {
            refunded_total,
            refund_no,
            refunded_at,
            order_total,
        } => {
            let told = RunningTotal {
                refunded_total: *refunded_total,
                refund_no: refund_no.as_deref(),
                refunded_at: *refunded_at,
                order_total: *order_total,
            };
            return running_total_refund(tx, changes, raw, notice, &told);
        }
        NoticeEvent::Ignored(IgnoredReason::AwaitingPayment) => {
            let detail = "the buyer has not paid yet";
            return without_change(tx, raw, notice, Reason::AwaitingPayment, detail);
        }
        NoticeEvent::Ignored(IgnoredReason::OtherEvent) => {
            let detail = "an event kassa does not act on";
            return without_change(tx, raw, notice, Reason::UnhandledEvent, detail);
        }
        NoticeEvent::RefundSettled(refund) => return settle_refund(tx, changes, raw, notice, refund),
    };
    let expected = Expected {
        provider: notice.provider,
        amount,
    };
    let mut stored = None;
    let checked = changes.apply_checked(tx, &notice.order_id, &change, &expected, now, |order, from| {
        let reason = match (change.transition(), from) {
            (Transition::Pay, OrderStatus::Closed) => Reason::LatePayment,
            (Transition::Pay, _) => Reason::Paid,
            _ => Reason::Closed,
        };
        let decision = Decision::about(&order.id, reason, None);
        let id = store(tx, raw, &decision, notice.dedupe_key.as_deref())?;
        stored = Some(decision);
        Ok(cause(notice, id))
    })?;
    match (checked, stored) {
        (Checked::Applied { .. }, Some(decision)) => Ok(decision),
        (Checked::Applied { order, .. }, None) => Err(crate::db::DbError::Corrupt(format!(
            "order {} changed without its notification stored",
            order.id
        ))),
        (Checked::NotApplied(found), _) => {
            let decision = judge(notice, &expected, &change, found);
            store(tx, raw, &decision, notice.dedupe_key.as_deref())?;
            Ok(decision)
        }
    }
}

/// What a refund notice that reports a running total says (Alipay: `refund_fee`,
/// `out_biz_no`, `gmt_refund`, `total_amount`).
struct RunningTotal<'a> {
    refunded_total: Option<Amount>,
    refund_no: Option<&'a str>,
    refunded_at: Option<DateTime<Utc>>,
    order_total: Option<Amount>,
}

/// A refund notice whose amount is the trade's running refunded total (Alipay's
/// `refund_fee`). A refund kassa made (its `out_request_no` is the notice's
/// `out_biz_no`), or one already recorded from an earlier notice, is settled by its
/// number within the order. Any other was made outside kassa: it is recorded as a refund
/// of its own for what the running total adds to what the order already shows refunded,
/// so a resend, or an older notice arriving after a newer one, adds nothing.
fn running_total_refund(
    tx: &Tx<'_>,
    changes: &mut Changes,
    raw: &NewNotification<'_>,
    notice: &VerifiedNotice,
    told: &RunningTotal<'_>,
) -> DbResult<Decision> {
    let id = &notice.order_id;
    let dedupe = notice.dedupe_key.as_deref();
    let decided = |decision: Decision| -> DbResult<Decision> {
        store(tx, raw, &decision, dedupe)?;
        Ok(decision)
    };
    let expected = Expected {
        provider: notice.provider,
        amount: told.order_total,
    };
    if let Some(decision) = mismatch(notice, &expected, transitions::find(tx, id)?.as_ref()) {
        return decided(decision);
    }
    let Some(order) = crate::db::orders::find_by_id(tx, id)? else {
        return decided(Decision::about(id, Reason::Rejected(Code::UnknownOrder), None));
    };
    let currency = order.amount.currency();
    let amount = |minor: i64| {
        Amount::from_minor(minor, currency)
            .map_err(|e| crate::db::DbError::Corrupt(format!("refund amount {minor} of order {id}: {e}")))
    };
    let known = match told.refund_no {
        Some(no) => named_refund(tx, notice, no)?.map(|row| (no, row)),
        None => None,
    };
    if let Some((no, row)) = known {
        // The running total cannot be split into refunds; the row says what this one was.
        let refund = RefundNotice {
            refund_no: no.to_owned(),
            provider_refund_id: None,
            amount: amount(row.amount)?,
            order_total: told.order_total,
            outcome: RefundEnd::Succeeded,
            settled_at: told.refunded_at,
        };
        return settle_refund(tx, changes, raw, notice, &refund);
    }
    let Some(total) = told.refunded_total else {
        return decided(Decision::about(
            id,
            Reason::RefundUnconfirmed,
            Some(format!(
                "refund {} states no refund_fee and Alipay's query did not confirm an amount; Alipay is asked to resend",
                told.refund_no.unwrap_or("(unnamed)")
            )),
        ));
    };
    if total.currency() != currency || total.minor() > order.amount.minor() {
        return decided(Decision::about(
            id,
            Reason::Rejected(Code::AmountMismatch),
            Some(format!(
                "amount mismatch: refund_fee {} {} is more than the order's {} {currency}",
                total.to_decimal_string(),
                total.currency(),
                order.amount.to_decimal_string()
            )),
        ));
    }
    // refund_fee is Alipay's running total: it may already hold a refund of kassa's that
    // kassa still shows pending (its call timed out, or money has not moved yet). Taking
    // the difference now would count that refund twice once it settles; Alipay resends
    // until the pending one is settled.
    let pending = refunds::pending_total(tx, id.as_str())?;
    if pending > 0 {
        return decided(Decision::about(
            id,
            Reason::RefundUnconfirmed,
            Some(format!(
                "refund_fee {} cannot be split while refunds of {} kassa made are pending; Alipay is asked to resend",
                total.to_decimal_string(),
                amount(pending)?.to_decimal_string()
            )),
        ));
    }
    let added = total.minor() - order.refunded_amount;
    if added <= 0 {
        return decided(Decision::about(
            id,
            Reason::RefundAlreadySettled,
            Some(format!(
                "refund_fee {} is already reflected: the order shows {} refunded",
                total.to_decimal_string(),
                amount(order.refunded_amount)?.to_decimal_string()
            )),
        ));
    }
    // A TRADE_CLOSED confirmed as a full refund names no refund; an order is fully
    // refunded once, so its id is derived from the order's.
    let refund = RefundNotice {
        refund_no: told
            .refund_no
            .map_or_else(|| format!("{id}-closed"), |no| outside_refund_id(notice, no)),
        provider_refund_id: told.refund_no.map(str::to_owned),
        amount: amount(added)?,
        order_total: told.order_total,
        outcome: RefundEnd::Succeeded,
        settled_at: told.refunded_at,
    };
    external_refund(tx, changes, raw, notice, &refund)
}

/// A refund's end: settles kassa's refund row (and moves the order when it succeeded),
/// or records a refund kassa never made, in the notification's transaction. A resend
/// finds the row settled and changes nothing.
fn settle_refund(
    tx: &Tx<'_>,
    changes: &mut Changes,
    raw: &NewNotification<'_>,
    notice: &VerifiedNotice,
    refund: &RefundNotice,
) -> DbResult<Decision> {
    let id = &notice.order_id;
    let found = transitions::find(tx, id)?;
    // The order's total the platform states must be kassa's, as for a payment.
    let expected = Expected {
        provider: notice.provider,
        amount: refund.order_total,
    };
    let dedupe = notice.dedupe_key.as_deref();
    let rejected = |code, detail: String| Decision::about(id, Reason::Rejected(code), Some(detail));
    let early = match (mismatch(notice, &expected, found.as_ref()), found) {
        (Some(decision), _) => Some(decision),
        (None, Some(found)) if found.currency != refund.amount.currency() => Some(rejected(
            Code::CurrencyMismatch,
            format!(
                "currency mismatch: the refund is in {} but the order is in {}",
                refund.amount.currency(),
                found.currency
            ),
        )),
        _ => None,
    };
    if let Some(decision) = early {
        store(tx, raw, &decision, dedupe)?;
        return Ok(decision);
    }
    let row = named_refund(tx, notice, &refund.refund_no)?;
    let now = raw.received_at;
    let settled_at = refund.settled_at.unwrap_or(now);
    let Some(row) = row else {
        let outside = RefundNotice {
            refund_no: outside_refund_id(notice, &refund.refund_no),
            ..refund.clone()
        };
        return external_refund(tx, changes, raw, notice, &outside);
    };
    if row.order_id != *id {
        let decision = rejected(
            Code::UnknownOrder,
            format!("refund {} belongs to another order", refund.refund_no),
        );
        store(tx, raw, &decision, dedupe)?;
        return Ok(decision);
    }
    if row.amount != refund.amount.minor() {
        let decision = rejected(
            Code::AmountMismatch,
            format!(
                "amount mismatch: the notice refunds {} but refund {} is {} minor units",
                refund.amount.to_decimal_string(),
                row.id,
                row.amount
            ),
        );
        store(tx, raw, &decision, dedupe)?;
        return Ok(decision);
    }
    if row.status != RefundStatus::Pending {
        let contradicts = matches!(
            (&refund.outcome, row.status),
            (RefundEnd::Succeeded, RefundStatus::Failed) | (RefundEnd::Failed(_), RefundStatus::Succeeded)
        );
        if contradicts {
            let detail = format!(
                "refund {} is {} in kassa but the platform reports it {}",
                row.id,
                row.status,
                refund_end(&refund.outcome)
            );
            tracing::warn!(order_id = %id, refund_id = %row.id, %detail, "refund notice contradicts kassa's record; needs a person");
            let decision = rejected(Code::RefundConflict, detail);
            store(tx, raw, &decision, dedupe)?;
            return Ok(decision);
        }
        let decision = Decision::about(
            id,
            Reason::RefundAlreadySettled,
            Some(format!("refund {} is already {}", row.id, row.status)),
        );
        store(tx, raw, &decision, dedupe)?;
        return Ok(decision);
    }
    match &refund.outcome {
        RefundEnd::Succeeded => {
            let decision = Decision::about(id, Reason::RefundSucceeded, Some(format!("refund {}", row.id)));
            let stored = store(tx, raw, &decision, dedupe)?;
            let settlement = Settlement::Succeeded {
                provider_refund_id: refund.provider_refund_id.as_deref(),
            };
            if refunds::settle(tx, &row.id, &settlement, settled_at)? {
                let change = Change::Refund { amount: row.amount };
                let outcome = changes.apply(tx, id, &change, &cause(notice, stored), now)?;
                must_apply(id, &row.id, outcome)?;
            }
            Ok(decision)
        }
        RefundEnd::Abnormal => {
            let detail = format!(
                "refund {} did not reach the buyer (ABNORMAL); it stays pending until the merchant completes or closes it in the platform's console",
                row.id
            );
            tracing::warn!(order_id = %id, refund_id = %row.id, "WeChat Pay refund is ABNORMAL; the merchant must complete it in the console");
            let decision = Decision::about(id, Reason::RefundAbnormal, Some(detail));
            store(tx, raw, &decision, dedupe)?;
            Ok(decision)
        }
        RefundEnd::Failed(status) => {
            let decision = Decision::about(
                id,
                Reason::RefundFailed,
                Some(format!("refund {} ended {status}", row.id)),
            );
            store(tx, raw, &decision, dedupe)?;
            let settlement = Settlement::Failed {
                code: status,
                message: "the platform reported the refund as not completed",
            };
            refunds::settle(tx, &row.id, &settlement, settled_at)?;
            Ok(decision)
        }
    }
}

fn refund_end(end: &RefundEnd) -> &str {
    match end {
        RefundEnd::Succeeded => "succeeded",
        RefundEnd::Abnormal => "abnormal",
        RefundEnd::Failed(status) => status,
    }
}

/// A settled refund that does not move its order means the order and its refunds
/// disagree: the whole transaction is undone (the platform resends) rather than
/// keep a settled row without its transition.
fn must_apply(order_id: &OrderId, refund_id: &str, outcome: Outcome) -> DbResult<()> {
    match outcome {
        Outcome::Applied { .. } => Ok(()),
        other => Err(crate::db::DbError::Corrupt(format!(
            "refund {refund_id} settled but order {order_id} did not take it: {}",
            match other {
                Outcome::Duplicate { .. } => "duplicate",
                Outcome::Refused { .. } => "refused",
                _ => "not found",
            }
        ))),
    }
}

/// Alipay numbers refunds (`out_biz_no`, kassa's `out_request_no`) per trade only, so
/// two orders may each have a refund made outside kassa under the same number; WeChat's
/// `out_refund_no` is unique per merchant.
fn numbered_per_trade(provider: ProviderKind) -> bool {
    provider == ProviderKind::Alipay
}

/// The id a refund made outside kassa is stored under: for a number given per trade,
/// the order's id and the number (an order id has no `/`), so the same number on two
/// orders makes two rows; otherwise the number itself.
fn outside_refund_id(notice: &VerifiedNotice, no: &str) -> String {
    if numbered_per_trade(notice.provider) {
        format!("{}/{no}", notice.order_id)
    } else {
        no.to_owned()
    }
}

/// The refund row a notice names by `no`. A number given per trade is looked up among
/// the order's refunds only: kassa's own under the number it sent, an outside one under
/// `outside_refund_id`, or under the bare number as such rows were stored before that
/// form (so a resend of their notice still finds them).
fn named_refund(tx: &Tx<'_>, notice: &VerifiedNotice, no: &str) -> DbResult<Option<refunds::Refund>> {
    if numbered_per_trade(notice.provider) {
        refunds::find_in_order(tx, &notice.order_id, no, &outside_refund_id(notice, no))
    } else {
        refunds::find_by_id(tx, no)
    }
}

/// A refund the platform reports that kassa never asked for (made in the platform's
/// merchant console): the money left, so it is recorded as a refund row of its own,
/// under `outside_refund_id`, and applied to the order. A failed one is only
/// acknowledged.
fn external_refund(
    tx: &Tx<'_>,
    changes: &mut Changes,
    raw: &NewNotification<'_>,
    notice: &VerifiedNotice,
    refund: &RefundNotice,
) -> DbResult<Decision> {
    let id = &notice.order_id;
    let dedupe = notice.dedupe_key.as_deref();
    if refund.outcome != RefundEnd::Succeeded {
        let detail = format!(
            "refund {} (not made by kassa) ended {}",
            refund.refund_no,
            refund_end(&refund.outcome)
        );
        let decision = Decision::about(id, Reason::RefundNotice, Some(detail));
        store(tx, raw, &decision, dedupe)?;
        return Ok(decision);
    }
    let now = raw.received_at;
    if !insert_external_refund(tx, id, refund, now)? {
        let detail = format!(
            "refund {} of {} (made outside kassa) does not fit the order: not refundable, or not that much left",
            refund.refund_no,
            refund.amount.to_decimal_string()
        );
        let decision = Decision::about(id, Reason::Rejected(Code::NotAllowed), Some(detail));
        store(tx, raw, &decision, dedupe)?;
        return Ok(decision);
    }
    let detail = format!(
        "refund {} made outside kassa, recorded from the platform's notice",
        refund.refund_no
    );
    let decision = Decision::about(id, Reason::ExternalRefund, Some(detail));
    let stored = store(tx, raw, &decision, dedupe)?;
    apply_external_refund(tx, changes, id, refund, &cause(notice, stored), now)?;
    Ok(decision)
}

/// Stores a refund made outside kassa as a pending row under `refund.refund_no`; `false`
/// when it does not fit (the order is not refundable or has not that much left). Shared
/// by every platform that reports such refunds.
pub fn insert_external_refund(
    tx: &Tx<'_>,
    order_id: &OrderId,
    refund: &RefundNotice,
    now: DateTime<Utc>,
) -> DbResult<bool> {
    refunds::insert_within_balance(
        tx,
        &NewRefund {
            id: &refund.refund_no,
            order_id,
            merchant_refund_id: None,
            amount: refund.amount.minor(),
            reason: EXTERNAL_REFUND_REASON,
            now,
        },
    )
}

/// Settles the row `insert_external_refund` stored as succeeded and moves the order.
pub fn apply_external_refund(
    tx: &Tx<'_>,
    changes: &mut Changes,
    order_id: &OrderId,
    refund: &RefundNotice,
    cause: &Cause,
    now: DateTime<Utc>,
) -> DbResult<()> {
    let settlement = Settlement::Succeeded {
        provider_refund_id: refund.provider_refund_id.as_deref(),
    };
    if refunds::settle(
        tx,
        &refund.refund_no,
        &settlement,
        refund.settled_at.unwrap_or(now),
    )? {
        let change = Change::Refund {
            amount: refund.amount.minor(),
        };
        let outcome = changes.apply(tx, order_id, &change, cause, now)?;
        must_apply(order_id, &refund.refund_no, outcome)?;
    }
    Ok(())
}

/// The reason stored on a refund row kassa learnt of from the platform.
pub const EXTERNAL_REFUND_REASON: &str = "refunded outside kassa (the platform's merchant console)";

/// A valid notice that asks for no change: still checked against its order.
fn without_change(
    tx: &Tx<'_>,
    raw: &NewNotification<'_>,
    notice: &VerifiedNotice,
    reason: Reason,
    detail: &str,
) -> DbResult<Decision> {
    let found = transitions::find(tx, &notice.order_id)?;
    let expected = Expected {
        provider: notice.provider,
        amount: None,
    };
    let decision = match mismatch(notice, &expected, found.as_ref()) {
        Some(rejected) => rejected,
        None => Decision::about(&notice.order_id, reason, Some(detail.to_owned())),
    };
    store(tx, raw, &decision, notice.dedupe_key.as_deref())?;
    Ok(decision)
}

/// Why a notice does not fit its order (unknown, another provider, another
/// currency or amount), or `None` when it fits.
fn mismatch(notice: &VerifiedNotice, expected: &Expected, found: Option<&Found>) -> Option<Decision> {
    let id = &notice.order_id;
    let rejected = |code, detail| Some(Decision::about(id, Reason::Rejected(code), Some(detail)));
    let Some(found) = found else {
        return Some(Decision {
            reason: Reason::Rejected(Code::UnknownOrder),
            detail: Some(format!("unknown out_trade_no {id}")),
            order_id: None,
        });
    };
    if found.provider != expected.provider {
        let detail = format!(
            "order {id} is a {} order, the notice came from {}",
            found.provider, expected.provider
        );
        return rejected(Code::ProviderMismatch, detail);
    }
    let paid = expected.amount?;
    if paid.currency() != found.currency {
        let detail = format!(
            "currency mismatch: the notice is in {} but the order is in {}",
            paid.currency(),
            found.currency
        );
        return rejected(Code::CurrencyMismatch, detail);
    }
    if paid.minor() != found.amount {
        let order = Amount::from_minor(found.amount, found.currency)
            .map_or_else(|_| found.amount.to_string(), |a| a.to_decimal_string());
        let detail = format!(
            "amount mismatch: the notice says {} but the order is {order} {}",
            paid.to_decimal_string(),
            found.currency
        );
        return rejected(Code::AmountMismatch, detail);
    }
    None
}

/// Why a change that fits no longer applies: a duplicate, a close that comes after
/// the payment (ignored), or a change the order's status does not allow.
fn judge(notice: &VerifiedNotice, expected: &Expected, change: &Change, found: Option<Found>) -> Decision {
    if let Some(rejected) = mismatch(notice, expected, found.as_ref()) {
        return rejected;
    }
    let id = &notice.order_id;
    // `mismatch` returned None, so the order exists.
    let Some(status) = found.map(|f| f.status) else {
        return Decision::about(id, Reason::Rejected(Code::UnknownOrder), None);
    };
    let transition = change.transition();
    let reason = match transition {
        _ if transition.already_applied(status) => match change {
            Change::Close => Reason::AlreadyClosed,
            _ => Reason::AlreadyPaid,
        },
        Transition::Close if status != OrderStatus::Pending => {
            // On a paid order a platform's close means "fully refunded" (or arrives
            // out of order); it never closes a paid order.
            return Decision::about(
                id,
                Reason::CloseAfterPayment,
                Some(format!(
                    "a close for an order that is {status}: a refund notice, not a close"
                )),
            );
        }
        _ => {
            return Decision::about(
                id,
                Reason::Rejected(Code::NotAllowed),
                Some(format!(
                    "{} is not allowed for an order that is {status}",
                    transition.as_str()
                )),
            )
        }
    };
    Decision::about(id, reason, None)
}

fn store(
    tx: &Tx<'_>,
    raw: &NewNotification<'_>,
    decision: &Decision,
    dedupe_key: Option<&str>,
) -> DbResult<i64> {
    notifications::insert(
        tx,
        raw,
        &Decided {
            reason: decision.reason,
            detail: decision.detail.as_deref(),
            order_id: decision.order_id.as_ref(),
            dedupe_key,
            unverified: false,
        },
    )
}

/// A notification that failed verification (what it keeps of the body is `process`'s
/// concern; `record` has already cut the detail, which may quote the sender).
fn store_unverified(tx: &Tx<'_>, raw: &NewNotification<'_>, decision: &Decision) -> DbResult<i64> {
    notifications::insert(
        tx,
        raw,
        &Decided {
            reason: decision.reason,
            detail: decision.detail.as_deref(),
            order_id: None,
            dedupe_key: None,
            unverified: true,
        },
    )
}

fn cause(notice: &VerifiedNotice, notification_id: i64) -> Cause {
    Cause {
        source: TransitionSource::Notification,
        actor: notice.provider.as_str().to_owned(),
        detail: Some(notice.summary.clone()),
        notification_id: Some(notification_id),
    }
}

/// Decides about one notification in a writer job of its own, logs the verdict and
/// counts it (the one place every verdict passes). When it cannot be stored with a
/// decision, it is stored (if the database allows) with an `error` verdict so the
/// platform's resend finds it recorded.
pub async fn process(core: &Core, raw: RawNotification, notice: Verified) -> Decision {
    let provider = raw.provider.as_str();
    // Off the writer: the hash is CPU work.
    let raw = if failed_verification(&notice) {
        raw.kept_when_unverified()
    } else {
        raw
    };
    let notice = confirm_alipay(core, notice).await;
    let decision = decide(core, raw, notice).await;
    core.metrics
        .notification(provider, decision.verdict().as_str(), decision.reason.code());
    decision
}

/// Fills in, from Alipay's own queries, what an Alipay notice needs to be decided and
/// does not say: what a refund returned when `refund_fee` is absent
/// (`alipay.trade.fastpay.refund.query` by `out_biz_no`), and whether a `TRADE_CLOSED`
/// on a paid order is a full refund (`alipay.trade.query` shows the trade closed). Done
/// before the writer job, so a platform call never holds the writer. When the query
/// cannot answer, the refund goes on without an amount and is recorded as unconfirmed,
/// so Alipay resends it rather than the refund being lost.
async fn confirm_alipay(core: &Core, notice: Verified) -> Verified {
    let mut notice = notice?;
    let needs_query = notice.provider == ProviderKind::Alipay
        && match &notice.event {
            NoticeEvent::Closed => true,
            NoticeEvent::Refunded { refunded_total, .. } => refunded_total.is_none(),
            _ => false,
        };
    let Some(alipay) = core.providers.alipay().filter(|_| needs_query) else {
        return Ok(notice);
    };
    let id = notice.order_id.clone();
    let order = match core
        .db
        .read(move |tx| crate::db::orders::find_by_id(tx, &id))
        .await
    {
        Ok(Some(order)) if order.provider == ProviderKind::Alipay => order,
        // Unknown, another platform's, or unreadable: the pipeline decides as usual.
        _ => return Ok(notice),
    };
    let unconfirmed = |refund_no, refunded_at, order_total| NoticeEvent::Refunded {
        refunded_total: None,
        refund_no,
        refunded_at,
        order_total,
    };
    notice.event = match std::mem::replace(&mut notice.event, NoticeEvent::Closed) {
        // Already fully refunded: the close says nothing new (a resend), no need to ask.
        NoticeEvent::Closed if order.status == OrderStatus::Refunded => NoticeEvent::Refunded {
            refunded_total: Some(order.amount),
            refund_no: None,
            refunded_at: None,
            order_total: None,
        },
        NoticeEvent::Closed if matches!(order.status, OrderStatus::Paid | OrderStatus::PartiallyRefunded) => {
            match alipay.query(&order).await {
                Ok(TradeState::Closed) => NoticeEvent::Refunded {
                    refunded_total: Some(order.amount),
                    refund_no: None,
                    refunded_at: None,
                    order_total: None,
                },
                Ok(_) => NoticeEvent::Closed,
                Err(e) => {
                    tracing::warn!(order_id = %order.id, error = %e, "TRADE_CLOSED on a paid order could not be confirmed with alipay.trade.query");
                    unconfirmed(None, None, None)
                }
            }
        }
        NoticeEvent::Refunded {
            refunded_total: None,
            refund_no: Some(no),
            refunded_at,
            order_total,
        } => match alipay.refund_amount(&order.id, &no).await {
            Ok(Some(amount)) => NoticeEvent::RefundSettled(RefundNotice {
                refund_no: no.clone(),
                provider_refund_id: Some(no),
                amount,
                order_total,
                outcome: RefundEnd::Succeeded,
                settled_at: refunded_at,
            }),
            outcome => {
                if let Err(e) = outcome {
                    tracing::warn!(order_id = %order.id, refund_no = %no, error = %e, "refund notice without refund_fee could not be confirmed with alipay.trade.fastpay.refund.query");
                }
                unconfirmed(Some(no), refunded_at, order_total)
            }
        },
        other => other,
    };
    Ok(notice)
}

/// Characters of a decision's detail that its log line keeps.
const LOGGED_DETAIL: usize = 200;

async fn decide(core: &Core, raw: RawNotification, notice: Verified) -> Decision {
    let raw = Arc::new(raw);
    let job_raw = raw.clone();
    let provider = raw.provider.as_str();
    let unverified = failed_verification(&notice);
    let outcome = changes::write(core, move |tx, changes| {
        record(tx, changes, &job_raw.as_new(), &notice)
    })
    .await;
    match outcome {
        Ok(decision) => {
            // The detail may quote what the sender wrote (an unknown out_trade_no): kept
            // whole in the database, cut short in the log.
            let detail = decision
                .detail
                .as_deref()
                .map(|d| d.chars().take(LOGGED_DETAIL).collect::<String>());
            tracing::info!(
                provider,
                verdict = decision.verdict().as_str(),
                reason = decision.reason.code(),
                detail = detail.as_deref(),
                order_id = decision.order_id.as_ref().map(OrderId::as_str),
                "notification"
            );
            decision
        }
        Err(e) => {
            tracing::error!(provider, error = %e, "notification could not be stored with a decision; the platform is asked to resend");
            let decision = Decision {
                reason: Reason::StorageFailed,
                detail: Some(format!("error: {e}")),
                order_id: None,
            };
            let stored = decision.clone();
            // Best effort: keep the raw request with the error, if the database allows.
            let _ = core
                .db
                .write(move |tx| {
                    if unverified {
                        store_unverified(tx, &raw.as_new(), &stored)
                    } else {
                        store(tx, &raw.as_new(), &stored, None)
                    }
                })
                .await;
            decision
        }
    }
}

#[cfg(test)]
mod tests {
    //! The verdict table, through `record` on a real database file: Alipay bodies signed
    //! with the test vectors' platform key, verified by Alipay's notify module, decided
    //! by the pipeline. No HTTP.

    use std::collections::BTreeMap;

    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::db::{history, notifications as stored_notifications, orders, outbox, Offline};
    use crate::domain::{Amount, Currency, NewOrder, Order, OutTradeNo, Rejection};
    use crate::providers::alipay::notify::{verify, Expectations};
    use crate::providers::alipay::sign::notification_content;
    use crate::providers::keys::{SigningKey, VerifyingKey};

    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/keys/");
    const APP_ID: &str = "2021000000000001";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 3, 30, 0).unwrap()
    }

    struct Db {
        _dir: tempfile::TempDir,
        db: Offline,
        signing: SigningKey,
        verifying: VerifyingKey,
        next: usize,
    }

    /// What one notification left behind.
    #[derive(Debug)]
    struct After {
        decision: Decision,
        order: Option<Order>,
        history: usize,
        outbox: usize,
        stored: stored_notifications::NotificationRecord,
    }

    impl Db {
        fn new() -> Db {
            let dir = tempfile::tempdir().unwrap();
            let mut db = Offline::open(&dir.path().join("kassa.db")).unwrap();
            db.migrate().unwrap();
            let key = |name: &str| std::fs::read_to_string(format!("{KEYS}{name}")).unwrap();
            Db {
                _dir: dir,
                db,
                signing: SigningKey::from_pem(&key("alipay_platform_private_pkcs8.pem")).unwrap(),
                verifying: VerifyingKey::from_pem(&key("alipay_platform_public.pem")).unwrap(),
                next: 0,
            }
        }

        /// An order of 12.34 in `status`, reached through the transitions themselves.
        fn order(&mut self, status: OrderStatus, provider: ProviderKind, currency: Currency) -> OrderId {
            self.next += 1;
            let order = NewOrder {
                id: OrderId::generate(),
                out_trade_no: OutTradeNo::parse(&format!("shop-{}", self.next)).unwrap(),
                amount: Amount::from_minor(1234, currency).unwrap(),
                subject: "Jasmine tea".into(),
                provider,
                notify_url: None,
                return_url: None,
                metadata: Default::default(),
                created_at: now() - Duration::minutes(5),
                expires_at: now() + Duration::minutes(10),
            };
            let id = order.id.clone();
            let steps: &[Change] = match status {
                OrderStatus::Pending => &[],
                OrderStatus::Closed => &[Change::Close],
                OrderStatus::Paid => &[Change::Pay {
                    provider_trade_no: None,
                    paid_at: now(),
                }],
                OrderStatus::PartiallyRefunded => &[
                    Change::Pay {
                        provider_trade_no: None,
                        paid_at: now(),
                    },
                    Change::Refund { amount: 100 },
                ],
                OrderStatus::Refunded => &[
                    Change::Pay {
                        provider_trade_no: None,
                        paid_at: now(),
                    },
                    Change::Refund { amount: 1234 },
                ],
            };
            self.db
                .immediate(|tx| {
                    orders::insert(tx, &order, None)?;
                    for step in steps {
                        let cause = Cause::system(TransitionSource::Api);
                        transitions::apply(tx, &order.id, step, &cause, now())?;
                    }
                    Ok(())
                })
                .unwrap();
            assert_eq!(self.read(&id).0.unwrap().status, status);
            id
        }

        fn alipay_order(&mut self, status: OrderStatus) -> OrderId {
            self.order(status, ProviderKind::Alipay, Currency::Cny)
        }

        /// A TRADE_SUCCESS for `order_id` as Alipay signs it, with `changes` applied.
        fn body(&self, order_id: &str, changes: &[(&str, &str)]) -> String {
            let mut params: BTreeMap<String, String> = [
                ("app_id", APP_ID),
                ("notify_id", "2026112400222113006000000001"),
                ("notify_time", "2026-11-24 11:30:07"),
                ("out_trade_no", order_id),
                ("trade_no", "2026112422001446880501234567"),
                ("trade_status", "TRADE_SUCCESS"),
                ("total_amount", "12.34"),
                ("gmt_payment", "2026-11-24 11:30:06"),
                ("sign_type", "RSA2"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            for (k, v) in changes {
                params.insert((*k).to_owned(), (*v).to_owned());
            }
            let sign = self.signing.sign_base64(notification_content(&params).as_bytes());
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter())
                .append_pair("sign", &sign)
                .finish()
        }

        fn read(&self, id: &OrderId) -> (Option<Order>, usize, usize) {
            self.db
                .read(|tx| {
                    Ok((
                        orders::find_by_id(tx, id)?,
                        history::list_for_order(tx, id)?.len(),
                        outbox::list_for_order(tx, id)?.len(),
                    ))
                })
                .unwrap()
        }

        /// Sends `body` through Alipay's verification and the pipeline.
        fn notify(&mut self, order_id: &OrderId, body: &str) -> After {
            let expect = Expectations {
                key: &self.verifying,
                app_id: APP_ID,
                seller_id: None,
            };
            let verified = verify(body.as_bytes(), &expect);
            self.record(order_id, body, &verified)
        }

        fn record(&mut self, order_id: &OrderId, body: &str, verified: &Verified) -> After {
            let raw = RawNotification {
                provider: ProviderKind::Alipay,
                received_at: now(),
                remote_addr: Some("127.0.0.1:40000".into()),
                headers: "{}".into(),
                body: body.as_bytes().to_vec(),
                cut: None,
            };
            let decision = self
                .db
                .immediate(|tx| {
                    record(
                        tx,
                        &mut Changes::new("http://kassa.test"),
                        &raw.as_new(),
                        verified,
                    )
                })
                .unwrap();
            let (order, history, outbox) = self.read(order_id);
            let stored = self
                .db
                .read(|tx| stored_notifications::list_recent(tx, 1))
                .unwrap()
                .remove(0);
            After {
                decision,
                order,
                history,
                outbox,
                stored,
            }
        }
    }

    #[test]
    fn each_trade_status_on_each_order_status_gets_the_verdict_of_the_table() {
        use OrderStatus::*;
        let refund = [
            ("refund_fee", "1.00"),
            ("out_biz_no", "rf_1"),
            ("gmt_refund", "2026-11-24 11:40:00"),
        ];
        let full_refund = [
            ("trade_status", "TRADE_CLOSED"),
            ("refund_fee", "12.34"),
            ("out_biz_no", "rf_2"),
        ];
        let statuses = [Pending, Paid, Closed, PartiallyRefunded, Refunded];
        // (what the notice is, its changes to a TRADE_SUCCESS, per order status:
        //  (verdict, reason code, status after)), in the order of `statuses`.
        type Row<'a> = (
            &'a str,
            Vec<(&'a str, &'a str)>,
            [(&'a str, &'a str, OrderStatus); 5],
        );
        let table: Vec<Row<'_>> = vec![
            (
                "TRADE_SUCCESS",
                vec![],
                [
                    ("applied", "paid", Paid),
                    ("duplicate", "already_paid", Paid),
                    ("applied", "late_payment", Paid),
                    ("duplicate", "already_paid", PartiallyRefunded),
                    ("duplicate", "already_paid", Refunded),
                ],
            ),
            (
                "TRADE_FINISHED",
                vec![("trade_status", "TRADE_FINISHED")],
                [
                    ("applied", "paid", Paid),
                    ("duplicate", "already_paid", Paid),
                    ("applied", "late_payment", Paid),
                    ("duplicate", "already_paid", PartiallyRefunded),
                    ("duplicate", "already_paid", Refunded),
                ],
            ),
            (
                "TRADE_CLOSED",
                vec![("trade_status", "TRADE_CLOSED"), ("gmt_payment", "")],
                [
                    ("applied", "closed", Closed),
                    ("ignored", "close_after_payment", Paid),
                    ("duplicate", "already_closed", Closed),
                    ("ignored", "close_after_payment", PartiallyRefunded),
                    ("ignored", "close_after_payment", Refunded),
                ],
            ),
            (
                "WAIT_BUYER_PAY",
                vec![("trade_status", "WAIT_BUYER_PAY"), ("gmt_payment", "")],
                [
                    ("ignored", "awaiting_payment", Pending),
                    ("ignored", "awaiting_payment", Paid),
                    ("ignored", "awaiting_payment", Closed),
                    ("ignored", "awaiting_payment", PartiallyRefunded),
                    ("ignored", "awaiting_payment", Refunded),
                ],
            ),
            (
                "TRADE_SUCCESS with refund_fee (partial refund notice)",
                refund.to_vec(),
                [
                    ("rejected", "not_allowed", Pending),
                    ("applied", "external_refund", PartiallyRefunded),
                    ("rejected", "not_allowed", Closed),
                    // 1.00 of refund_fee is what the order already shows refunded.
                    ("duplicate", "refund_already_settled", PartiallyRefunded),
                    ("duplicate", "refund_already_settled", Refunded),
                ],
            ),
            (
                "TRADE_CLOSED with refund_fee (full refund notice)",
                full_refund.to_vec(),
                [
                    ("rejected", "not_allowed", Pending),
                    ("applied", "external_refund", Refunded),
                    ("rejected", "not_allowed", Closed),
                    ("applied", "external_refund", Refunded),
                    ("duplicate", "refund_already_settled", Refunded),
                ],
            ),
        ];
        let mut db = Db::new();
        for (what, changes, expected) in &table {
            for (status, (verdict, code, status_after)) in statuses.iter().zip(expected) {
                let case = format!("{what} on a {status} order");
                let id = db.alipay_order(*status);
                let (before, history_before, outbox_before) = db.read(&id);
                // Every order's refund has the same out_biz_no: Alipay numbers refunds
                // per trade.
                let body = db.body(id.as_str(), changes);

                let after = db.notify(&id, &body);

                assert_eq!(
                    (after.decision.verdict().as_str(), after.decision.reason.code()),
                    (*verdict, *code),
                    "{case}: {:?}",
                    after.decision.detail
                );
                assert_eq!(after.decision.order_id.as_ref(), Some(&id), "{case}");
                let order = after.order.unwrap();
                assert_eq!(order.status, *status_after, "{case}");
                assert_eq!(
                    (after.stored.verdict.as_str(), after.stored.reason_code),
                    (*verdict, Some(after.decision.reason)),
                    "{case}: stored as decided"
                );
                assert_eq!(after.stored.order_id.as_ref(), Some(&id), "{case}");
                assert_eq!(after.stored.body, body, "{case}: stored raw");
                if *verdict == "applied" {
                    assert_eq!(
                        (after.history, after.outbox),
                        (history_before + 1, outbox_before + 1),
                        "{case}: one history row and one webhook"
                    );
                    assert_eq!(order.late_payment, *code == "late_payment", "{case}");
                } else {
                    assert_eq!(Some(order), before, "{case}: the order is untouched");
                    assert_eq!(
                        (after.history, after.outbox),
                        (history_before, outbox_before),
                        "{case}: no history row, no webhook"
                    );
                }
            }
        }
    }

    #[test]
    fn a_payment_that_applies_is_recorded_with_the_notice_it_came_from() {
        let mut db = Db::new();
        let id = db.alipay_order(OrderStatus::Pending);
        let body = db.body(id.as_str(), &[]);

        let after = db.notify(&id, &body);

        let order = after.order.unwrap();
        assert_eq!(
            order.provider_trade_no.as_deref(),
            Some("2026112422001446880501234567")
        );
        assert_eq!(
            order.paid_at,
            Some(Utc.with_ymd_and_hms(2026, 11, 24, 3, 30, 6).unwrap()),
            "gmt_payment is Beijing time"
        );
        let (entries, webhooks) = db
            .db
            .read(|tx| {
                Ok((
                    history::list_for_order(tx, &id)?,
                    outbox::list_for_order(tx, &id)?,
                ))
            })
            .unwrap();
        let entry = &entries[0];
        assert_eq!(entry.notification_id, Some(after.stored.id));
        assert_eq!((entry.from, entry.to), (OrderStatus::Pending, OrderStatus::Paid));
        assert_eq!(
            entry.detail.as_deref(),
            Some("trade_status=TRADE_SUCCESS notify_id=2026112400222113006000000001")
        );
        assert_eq!(
            (entry.actor.as_str(), entry.source),
            ("alipay", TransitionSource::Notification)
        );
        assert_eq!(webhooks[0].event_type.as_str(), "order.paid");
        let payload: serde_json::Value = serde_json::from_str(&webhooks[0].payload).unwrap();
        assert_eq!(
            (payload["data"]["id"].as_str(), payload["data"]["status"].as_str()),
            (Some(id.as_str()), Some("paid")),
            "the webhook shows the order as changed"
        );
    }

    #[test]
    fn a_notice_that_does_not_fit_its_order_is_rejected_and_changes_nothing() {
        let mut db = Db::new();
        let alipay = db.alipay_order(OrderStatus::Pending);
        let wechat = db.order(OrderStatus::Pending, ProviderKind::Wechat, Currency::Cny);
        let in_usd = db.order(OrderStatus::Pending, ProviderKind::Alipay, Currency::Usd);
        let paid = db.alipay_order(OrderStatus::Paid);
        let missing = OrderId::generate();
        type Case<'a> = (&'a str, &'a OrderId, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                "another amount",
                &alipay,
                vec![("total_amount", "12.35")],
                "amount_mismatch",
            ),
            (
                "another amount on a paid order",
                &paid,
                vec![("total_amount", "0.01")],
                "amount_mismatch",
            ),
            ("a WeChat Pay order", &wechat, vec![], "provider_mismatch"),
            (
                "a close for a WeChat Pay order",
                &wechat,
                vec![("trade_status", "TRADE_CLOSED")],
                "provider_mismatch",
            ),
            ("an order in USD", &in_usd, vec![], "currency_mismatch"),
            ("no such order", &missing, vec![], "unknown_order"),
            (
                "a refund notice for no such order",
                &missing,
                vec![("refund_fee", "1.00")],
                "unknown_order",
            ),
        ];
        for (what, id, changes, code) in cases {
            let before = db.read(id);
            let body = db.body(id.as_str(), &changes);

            let after = db.notify(id, &body);

            assert_eq!(
                (after.decision.verdict(), after.decision.reason.code()),
                (Verdict::Rejected, code),
                "{what}: {:?}",
                after.decision.detail
            );
            assert_eq!(
                (after.stored.verdict, after.stored.reason_code),
                (Verdict::Rejected, Some(after.decision.reason)),
                "{what}"
            );
            assert_eq!(
                after.stored.reason, after.decision.detail,
                "{what}: detail stored"
            );
            assert_eq!(
                (after.order, after.history, after.outbox),
                before,
                "{what}: nothing changed"
            );
        }
        let amount = db.notify(&alipay, &db.body(alipay.as_str(), &[("total_amount", "12.35")]));
        assert_eq!(
            amount.decision.detail.as_deref(),
            Some("amount mismatch: the notice says 12.35 but the order is 12.34 CNY")
        );
        assert_eq!(amount.stored.order_id.as_ref(), Some(&alipay));
    }

    #[test]
    fn a_detail_is_kept_whole_up_to_256_characters_and_cut_at_a_character_past_that() {
        let fits = "é".repeat(KEPT_DETAIL);
        assert_eq!(bounded_detail(&fits), fits);
        let cut = bounded_detail(&format!("{fits}é"));
        assert_eq!(cut.chars().count(), KEPT_DETAIL);
        assert_eq!(cut, format!("{}…", "é".repeat(KEPT_DETAIL - 1)));
    }

    #[test]
    fn a_rejection_from_verification_is_stored_with_its_code_and_touches_no_order() {
        let mut db = Db::new();
        let id = db.alipay_order(OrderStatus::Pending);
        let before = db.read(&id);
        let body = db.body(id.as_str(), &[]);
        let forged = body.replace("total_amount=12.34", "total_amount=0.01");

        let after = db.notify(&id, &forged);
        let given = db.record(
            &id,
            "x",
            &Err(Rejection::new(
                Code::ProviderDisabled,
                "Alipay is not enabled on this server",
            )),
        );

        assert_eq!(after.decision.reason, Reason::Rejected(Code::BadSignature));
        assert_eq!(
            (
                after.stored.reason_code,
                after.stored.reason.as_deref(),
                after.stored.order_id
            ),
            (
                Some(Reason::Rejected(Code::BadSignature)),
                Some("bad signature"),
                None
            )
        );
        assert_eq!(
            (given.stored.verdict, given.stored.reason_code),
            (Verdict::Rejected, Some(Reason::Rejected(Code::ProviderDisabled)))
        );
        assert_eq!(
            (given.order, given.history, given.outbox),
            before,
            "nothing changed"
        );
        assert_eq!(
            db.notify(&id, &body).decision.reason,
            Reason::Paid,
            "the genuine notice still pays"
        );
    }
}
