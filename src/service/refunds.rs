//! Refunds: the row and its provider request number are stored first, then the
//! provider is called; the order's `refunded_amount` and status change only when the
//! provider says the refund succeeded. An unknown outcome is settled by a refund query
//! (and, when the provider never saw it, a retry with the same number).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{changes, provider_calls};
use crate::core::Core;
use crate::db::history::Cause;
use crate::db::refunds::{self, NewRefund, Refund, Settlement};
use crate::db::transitions::Change;
use crate::db::{orders, DbError};
use crate::domain::ids::random_base62;
use crate::domain::order::{serialize_rfc3339, serialize_rfc3339_opt, FieldError};
use crate::domain::provider_call::ProviderCall;
use crate::domain::{Amount, Order, OrderId, OrderStatus, RefundStatus, TransitionSource};
use crate::providers::{ProviderError, RefundOutcome, RefundRequest, RefundState};

pub const MAX_REASON_CHARS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    #[error("order not found")]
    OrderNotFound,
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("order is {0}; only paid orders can be refunded")]
    NotRefundable(OrderStatus),
    #[error("refund of {requested} exceeds what is left to refund ({available})")]
    ExceedsBalance { requested: String, available: String },
    #[error("refund_id {0:?} was already used for a refund of another amount")]
    RefundIdConflict(String),
    #[error("the order's provider is not enabled")]
    ProviderMissing,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A refund as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RefundView {
    pub id: String,
    pub order_id: OrderId,
    pub refund_id: Option<String>,
    pub amount: i64,
    pub currency: &'static str,
    pub reason: String,
    pub status: RefundStatus,
    pub provider_refund_id: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    #[serde(serialize_with = "serialize_rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "serialize_rfc3339_opt")]
    pub settled_at: Option<DateTime<Utc>>,
}

pub fn view(refund: &Refund, order: &Order) -> RefundView {
    RefundView {
        id: refund.id.clone(),
        order_id: refund.order_id.clone(),
        refund_id: refund.merchant_refund_id.clone(),
        amount: refund.amount,
        currency: order.amount.currency().code(),
        reason: refund.reason.clone(),
        status: refund.status,
        provider_refund_id: refund.provider_refund_id.clone(),
        failure_code: refund.failure_code.clone(),
        failure_message: refund.failure_message.clone(),
        created_at: refund.created_at,
        settled_at: refund.settled_at,
    }
}

pub struct NewRefundRequest {
    pub amount: i64,
    pub reason: String,
    pub refund_id: Option<String>,
}

fn check(req: &NewRefundRequest) -> Result<(), FieldError> {
    if req.amount < 1 {
        return Err(FieldError {
            field: "amount",
            message: format!("must be a positive integer of minor units, got {}", req.amount),
        });
    }
    let chars = req.reason.chars().count();
    if req.reason.trim().is_empty() || chars > MAX_REASON_CHARS || req.reason.chars().any(char::is_control) {
        return Err(FieldError {
            field: "reason",
            message: format!("must be 1 to {MAX_REASON_CHARS} characters without control characters"),
        });
    }
    if let Some(id) = &req.refund_id {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(FieldError {
                field: "refund_id",
                message: "must be 1 to 64 characters of letters, digits, '_' and '-'".into(),
            });
        }
    }
    Ok(())
}

fn money(minor: i64, order: &Order) -> String {
    Amount::from_minor(minor, order.amount.currency())
        .map(|a| a.to_string())
        .unwrap_or_else(|_| minor.to_string())
}

/// Records the provider's answer: succeeded refunds move the order in the same
/// transaction.
async fn settle(
    core: &Core,
    refund: &Refund,
    outcome: Settled,
    cause: Cause,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let (id, target, amount) = (refund.id.clone(), refund.order_id.clone(), refund.amount);
    changes::write(core, move |c, changes| {
        match outcome {
            Settled::Succeeded(provider_refund_id) => {
                let settlement = Settlement::Succeeded {
                    provider_refund_id: provider_refund_id.as_deref(),
                };
                if refunds::settle(c, &id, &settlement, now)? {
                    changes.apply(c, &target, &Change::Refund { amount }, &cause, now)?;
                }
            }
            Settled::Failed(code, message) => {
                refunds::settle(
                    c,
                    &id,
                    &Settlement::Failed {
                        code: &code,
                        message: &message,
                    },
                    now,
                )?;
            }
            Settled::StillPending => refunds::touch(c, &id, now)?,
        }
        Ok(())
    })
    .await
}

enum Settled {
    Succeeded(Option<String>),
    Failed(String, String),
    StillPending,
}

impl From<RefundOutcome> for Settled {
    fn from(o: RefundOutcome) -> Self {
        match o {
            RefundOutcome::Succeeded { provider_refund_id } => Settled::Succeeded(provider_refund_id),
            RefundOutcome::Failed { code, message } => Settled::Failed(code, message),
            RefundOutcome::Processing => Settled::StillPending,
        }
    }
}

/// Asks the provider for a refund, and logs the call.
async fn refund_call(
    core: &Core,
    provider: &dyn crate::providers::Provider,
    order: &Order,
    request: &RefundRequest,
) -> Result<RefundOutcome, ProviderError> {
    let result = provider.refund(order, request).await;
    let (outcome, detail) = match &result {
        Ok(o) => provider_calls::refund_outcome(o),
        Err(_) => provider_calls::describe(&result, |_| String::new()),
    };
    let amount = request.amount.to_string();
    let detail = format!("refund {} of {amount}: {detail}", request.refund_no);
    provider_calls::record(core, order, ProviderCall::Refund, (outcome, detail)).await;
    result
}

/// Asks the provider about a refund whose outcome is not known, retrying the refund
/// with the same number when the provider never saw it.
async fn resolve(core: &Core, order: &Order, refund: &Refund) -> Settled {
    let Some(provider) = core.providers.get(order.provider).cloned() else {
        return Settled::StillPending;
    };
    let state = provider.query_refund(order, &refund.id).await;
    let described = match &state {
        Ok(s) => provider_calls::refund_state(s),
        Err(_) => provider_calls::describe(&state, |_| String::new()),
    };
    let described = (described.0, format!("refund {}: {}", refund.id, described.1));
    provider_calls::record(core, order, ProviderCall::RefundQuery, described).await;
    match state {
        Ok(RefundState::Succeeded { provider_refund_id }) => Settled::Succeeded(provider_refund_id),
        Ok(RefundState::Failed { code, message }) => Settled::Failed(code, message),
        Ok(RefundState::Processing) | Err(_) => Settled::StillPending,
        Ok(RefundState::NotFound) => {
            let Ok(amount) = Amount::from_minor(refund.amount, order.amount.currency()) else {
                tracing::error!(refund_id = %refund.id, "stored refund amount is invalid; not retrying");
                return Settled::StillPending;
            };
            let again = RefundRequest {
                refund_no: refund.id.clone(),
                amount,
                reason: refund.reason.clone(),
            };
            match refund_call(core, provider.as_ref(), order, &again).await {
                Ok(outcome) => outcome.into(),
                Err(_) => Settled::StillPending,
            }
        }
    }
}

/// Creates a refund and asks the provider for it. Returns the refund row and whether
/// it is new (`false`: an earlier refund with the same `refund_id`).
pub async fn create(
    core: &Core,
    order_id: &OrderId,
    request: NewRefundRequest,
    mut cause: Cause,
) -> Result<(Refund, Order, bool), RefundError> {
    let lookup = order_id.clone();
    let order = core
        .db
        .read(move |c| orders::find_by_id(c, &lookup))
        .await?
        .ok_or(RefundError::OrderNotFound)?;
    check(&request)?;
    let replay = |found: Refund| -> Result<(Refund, Order, bool), RefundError> {
        if found.amount != request.amount {
            return Err(RefundError::RefundIdConflict(
                found.merchant_refund_id.clone().unwrap_or_default(),
            ));
        }
        Ok((found, order.clone(), false))
    };
    if let Some(mid) = request.refund_id.clone() {
        let oid = order.id.clone();
        if let Some(found) = core
            .db
            .read(move |c| refunds::find_by_merchant_id(c, &oid, &mid))
            .await?
        {
            return replay(found);
        }
    }
    if !order.status.is_refundable() {
        return Err(RefundError::NotRefundable(order.status));
    }
    let provider = core
        .providers
        .get(order.provider)
        .cloned()
        .ok_or(RefundError::ProviderMissing)?;
    let now = core.now();
    let id = format!("rf_{}", random_base62(24));
    let (oid, rid, mid, reason, amount) = (
        order.id.clone(),
        id.clone(),
        request.refund_id.clone(),
        request.reason.clone(),
        request.amount,
    );
    let stored = core
        .db
        .write(move |c| {
            let inserted = refunds::insert_within_balance(
                c,
                &NewRefund {
                    id: &rid,
                    order_id: &oid,
                    merchant_refund_id: mid.as_deref(),
                    amount,
                    reason: &reason,
                    now,
                },
            )?;
            if inserted {
                return Ok(Ok(refunds::find_by_id(c, &rid)?));
            }
            let earlier = match &mid {
                Some(m) => refunds::find_by_merchant_id(c, &oid, m)?,
                None => None,
            };
            let pending: i64 = refunds::list_for_order(c, &oid)?
                .iter()
                .filter(|r| r.status == RefundStatus::Pending)
                .map(|r| r.amount)
                .sum();
            let current = orders::find_by_id(c, &oid)?;
            Ok(Err((earlier, pending, current)))
        })
        .await?;
    let refund = match stored {
        Ok(Some(r)) => r,
        Ok(None) => return Err(DbError::Corrupt("inserted refund vanished".into()).into()),
        Err((Some(earlier), _, _)) => return replay(earlier),
        Err((None, pending, current)) => {
            let current = current.unwrap_or_else(|| order.clone());
            if !current.status.is_refundable() {
                return Err(RefundError::NotRefundable(current.status));
            }
            let available = current.amount.minor() - current.refunded_amount - pending;
            return Err(RefundError::ExceedsBalance {
                requested: money(request.amount, &current),
                available: money(available.max(0), &current),
            });
        }
    };
    cause.detail = Some(format!("refund {}", refund.id));
    let call = RefundRequest {
        refund_no: refund.id.clone(),
        amount: Amount::from_minor(refund.amount, order.amount.currency())
            .map_err(|e| DbError::Corrupt(e.to_string()))?,
        reason: refund.reason.clone(),
    };
    let settled = match refund_call(core, provider.as_ref(), &order, &call).await {
        Ok(RefundOutcome::Processing) => resolve(core, &order, &refund).await,
        Ok(outcome) => outcome.into(),
        Err(ProviderError::Rejected { code, message, .. }) => Settled::Failed(code, message),
        Err(ProviderError::Unknown { reason, .. }) => {
            tracing::warn!(refund_id = %refund.id, %reason, "refund outcome unknown; querying");
            resolve(core, &order, &refund).await
        }
    };
    settle(core, &refund, settled, cause, core.now()).await?;
    let (rid, oid) = (refund.id.clone(), order.id.clone());
    let (refund, order) = core
        .db
        .read(move |c| Ok((refunds::find_by_id(c, &rid)?, orders::find_by_id(c, &oid)?)))
        .await?;
    match (refund, order) {
        (Some(r), Some(o)) => Ok((r, o, true)),
        _ => Err(DbError::Corrupt("refund or order vanished".into()).into()),
    }
}

/// Settles pending refunds last tried before `before`. Returns how many were settled.
pub async fn settle_pending(
    core: &Core,
    now: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Result<usize, DbError> {
    let pending = core
        .db
        .read(move |c| refunds::list_pending(c, before, 20))
        .await?;
    let mut settled_count = 0;
    for refund in pending {
        let lookup = refund.order_id.clone();
        let Some(order) = core.db.read(move |c| orders::find_by_id(c, &lookup)).await? else {
            continue;
        };
        let settled = resolve(core, &order, &refund).await;
        if !matches!(settled, Settled::StillPending) {
            settled_count += 1;
        }
        let cause = Cause::system_because(
            TransitionSource::ProviderQuery,
            format!("refund {} settled by query", refund.id),
        );
        settle(core, &refund, settled, cause, now).await?;
    }
    Ok(settled_count)
}
