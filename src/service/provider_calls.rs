//! Every call kassa makes to a provider about an order is logged with its outcome
//! (`db::provider_calls`), so the order's timeline shows what was asked and answered.
//! Logging never fails the operation it describes: a lost log line is a warning.

use chrono::{DateTime, Utc};

use crate::core::Core;
use crate::db::provider_calls::{self, NewCall};
use crate::db::{DbResult, Tx};
use crate::domain::provider_call::{CallOutcome, ProviderCall};
use crate::domain::{Amount, Order, OrderId, ProviderKind};
use crate::providers::{Provider, ProviderError, RefundOutcome, RefundState, TradeState};

/// The outcome and a one-line description of a provider's answer.
pub fn describe<T>(
    result: &Result<T, ProviderError>,
    ok: impl FnOnce(&T) -> String,
) -> (CallOutcome, String) {
    match result {
        Ok(value) => (CallOutcome::Ok, ok(value)),
        Err(ProviderError::Rejected { code, message, .. }) => {
            (CallOutcome::Rejected, format!("{code}: {message}"))
        }
        Err(ProviderError::Unknown { reason, .. }) => (CallOutcome::Unknown, reason.clone()),
    }
}

fn money(minor: i64, order: &Order) -> String {
    Amount::from_minor(minor, order.amount.currency())
        .map(|a| a.to_string())
        .unwrap_or_else(|_| format!("{minor} minor units"))
}

pub fn trade_state(state: &TradeState, order: &Order) -> String {
    match state {
        TradeState::NotPaid => "not paid".to_owned(),
        TradeState::Closed => "closed".to_owned(),
        TradeState::Paid(facts) => match &facts.provider_trade_no {
            Some(no) => format!("paid {} (trade {no})", money(facts.amount, order)),
            None => format!("paid {}", money(facts.amount, order)),
        },
    }
}

pub fn refund_outcome(outcome: &RefundOutcome) -> (CallOutcome, String) {
    match outcome {
        RefundOutcome::Succeeded { provider_refund_id } => (
            CallOutcome::Ok,
            match provider_refund_id {
                Some(id) => format!("succeeded ({id})"),
                None => "succeeded".to_owned(),
            },
        ),
        RefundOutcome::Processing => (CallOutcome::Ok, "accepted, processing".to_owned()),
        RefundOutcome::Failed { code, message } => (CallOutcome::Rejected, format!("{code}: {message}")),
    }
}

pub fn refund_state(state: &RefundState) -> (CallOutcome, String) {
    match state {
        RefundState::Succeeded { .. } => (CallOutcome::Ok, "succeeded".to_owned()),
        RefundState::Processing => (CallOutcome::Ok, "processing".to_owned()),
        RefundState::NotFound => (CallOutcome::Ok, "no such refund at the provider".to_owned()),
        RefundState::Failed { code, message } => (CallOutcome::Ok, format!("failed: {code}: {message}")),
    }
}

/// Logs a call inside a write that is running anyway.
pub fn insert(
    tx: &Tx<'_>,
    order_id: &OrderId,
    provider: ProviderKind,
    call: ProviderCall,
    (outcome, detail): (CallOutcome, String),
    at: DateTime<Utc>,
) -> DbResult<()> {
    provider_calls::insert(
        tx,
        &NewCall {
            order_id,
            at,
            provider,
            call,
            outcome,
            detail: Some(&detail),
        },
    )
}

/// Counts a call that was made and logs one line about it, whatever became of it: the
/// one place every call passes (its row in `provider_calls` is written apart, and only
/// about orders that exist). The line names no amount, key or answer text.
pub fn observed(
    core: &Core,
    order_id: &OrderId,
    provider: ProviderKind,
    call: ProviderCall,
    outcome: CallOutcome,
) {
    tracing::info!(
        provider = provider.as_str(),
        call = call.as_str(),
        outcome = outcome.as_str(),
        %order_id,
        "provider call"
    );
    core.metrics
        .provider_call(provider.as_str(), call.as_str(), outcome.as_str());
}

/// Counts and logs a call (`observed`) in a write of its own.
pub async fn record(core: &Core, order: &Order, call: ProviderCall, described: (CallOutcome, String)) {
    observed(core, &order.id, order.provider, call, described.0);
    let (id, provider, at) = (order.id.clone(), order.provider, core.now());
    let written = core
        .db
        .write(move |tx| insert(tx, &id, provider, call, described, at))
        .await;
    if let Err(e) = written {
        tracing::warn!(order_id = %order.id, call = call.as_str(), error = %e, "cannot log the provider call");
    }
}

/// Asks the provider for the order's trade state, and logs the call.
pub async fn query(core: &Core, provider: &dyn Provider, order: &Order) -> Result<TradeState, ProviderError> {
    let result = provider.query(order).await;
    record(
        core,
        order,
        ProviderCall::Query,
        describe(&result, |s| trade_state(s, order)),
    )
    .await;
    result
}

/// Closes the trade at the provider, and logs the call.
pub async fn close(core: &Core, provider: &dyn Provider, order: &Order) -> Result<(), ProviderError> {
    let result = provider.close(order).await;
    record(
        core,
        order,
        ProviderCall::Close,
        describe(&result, |_| "closed".to_owned()),
    )
    .await;
    result
}
