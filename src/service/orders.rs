//! Creating and closing orders.

use chrono::{DateTime, Utc};

use super::{changes, provider_calls};
use crate::core::Core;
use crate::db::history::Cause;
use crate::db::transitions::{Change, Outcome};
use crate::db::{idempotency, orders, DbError, Tx};
use crate::domain::order::{FieldError, OrderRules};
use crate::domain::provider_call::{CallOutcome, ProviderCall};
use crate::domain::{CreateOrderRequest, NewOrder, Order, OrderId, OrderStatus, TransitionSource};
use crate::providers::{PaymentFacts, PaymentRequest, ProviderError, TradeState};

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("an order with out_trade_no {0:?} already exists")]
    OutTradeNoTaken(String),
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyConflict,
    #[error(
        "a request with this Idempotency-Key is still being processed; nothing was done, \
         send it again once that request has been answered"
    )]
    IdempotencyInProgress,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// An `Idempotency-Key` and the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub api_key_id: i64,
    pub key: String,
    pub request_hash: Vec<u8>,
}

#[derive(Debug)]
pub enum Created {
    New(Order),
    /// Same key and body as an earlier request: that request's order.
    Replayed(Order),
}

enum Stored {
    Created(Order),
    Replayed(Order),
    KeyConflict,
    KeyInProgress,
    OutTradeNoTaken,
}

/// A claim older than this was left by a request that died (a crash) rather than one
/// still waiting for the provider: provider calls give up after 15 s.
const CLAIM_ABANDONED_AFTER: chrono::Duration = chrono::Duration::minutes(2);

/// What the key's record says about this request: `None` when it holds the key now
/// (claimed, or taken over from an abandoned claim) and must create the order.
fn claim(tx: &Tx<'_>, idem: &Idempotency, now: DateTime<Utc>) -> Result<Option<Stored>, DbError> {
    let record = loop {
        if let Some(record) = idempotency::find(tx, idem.api_key_id, &idem.key)? {
            break record;
        }
        if idempotency::claim(tx, idem.api_key_id, &idem.key, &idem.request_hash, now)? {
            return Ok(None);
        }
        // Another request claimed the key since the find (on PostgreSQL requests run at
        // once, and the insert waited for that one's commit): its record decides.
    };
    if record.request_hash != idem.request_hash {
        return Ok(Some(Stored::KeyConflict));
    }
    let Some(id) = record.order_id else {
        if now - record.created_at < CLAIM_ABANDONED_AFTER {
            return Ok(Some(Stored::KeyInProgress));
        }
        if !idempotency::take_over(tx, idem.api_key_id, &idem.key, record.created_at, now)? {
            // Another request took the abandoned claim over first.
            return Ok(Some(Stored::KeyInProgress));
        }
        return Ok(None);
    };
    let order = orders::find_by_id(tx, &id)?
        .ok_or_else(|| DbError::Corrupt(format!("idempotency key points at missing order {id}")))?;
    Ok(Some(Stored::Replayed(order)))
}

fn settle(stored: Stored, out_trade_no: &str) -> Result<Created, CreateError> {
    match stored {
        Stored::Created(o) => Ok(Created::New(o)),
        Stored::Replayed(o) => Ok(Created::Replayed(o)),
        Stored::KeyConflict => Err(CreateError::IdempotencyConflict),
        Stored::KeyInProgress => Err(CreateError::IdempotencyInProgress),
        Stored::OutTradeNoTaken => Err(CreateError::OutTradeNoTaken(out_trade_no.to_owned())),
    }
}

/// A claimed key, freed when the request ends without completing it: on an error, and
/// also when the client goes away mid-request (the handler's future is dropped), so a
/// retry with the key is not told "in progress" by a request nobody waits for.
struct ClaimGuard {
    core: Core,
    claim: Option<(Idempotency, DateTime<Utc>)>,
}

impl ClaimGuard {
    fn disarm(&mut self) {
        self.claim = None;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some((idem, claimed_at)) = self.claim.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let core = self.core.clone();
        runtime.spawn(async move {
            let freed = core
                .db
                .write(move |c| idempotency::release(c, idem.api_key_id, &idem.key, claimed_at))
                .await;
            if let Err(e) = freed {
                // Harmless but for a while: the claim counts as abandoned after
                // CLAIM_ABANDONED_AFTER and is taken over then.
                tracing::warn!(error = %e, "cannot free an Idempotency-Key claim");
            }
        });
    }
}

/// Validates, claims the `Idempotency-Key`, asks the provider for a payment (its QR
/// code), then stores the order. Nothing is stored when the provider refuses, so no
/// half-made order is payable; the key's claim is freed again.
pub async fn create(
    core: &Core,
    request: CreateOrderRequest,
    idem: Option<Idempotency>,
) -> Result<Created, CreateError> {
    let out_trade_no = request.out_trade_no.clone();
    let enabled = core.providers.enabled();
    let rules = OrderRules {
        default_currency: core.settings.merchant.currency,
        default_ttl: core.settings.merchant.order_ttl,
        enabled_providers: &enabled,
        now: core.now(),
    };
    let new_order = NewOrder::validate(request, &rules)?;
    let claimed_at = core.now();
    let checks = (idem.clone(), out_trade_no.clone());
    // A write, so that two requests with one key cannot both find it free.
    let early = core
        .db
        .write(move |c| {
            let (idem, out_trade_no) = checks;
            if let Some(idem) = &idem {
                if let Some(stored) = claim(c, idem, claimed_at)? {
                    return Ok(Some(stored));
                }
            }
            if orders::find_by_out_trade_no(c, &out_trade_no)?.is_none() {
                return Ok(None);
            }
            if let Some(idem) = &idem {
                idempotency::release(c, idem.api_key_id, &idem.key, claimed_at)?;
            }
            Ok(Some(Stored::OutTradeNoTaken))
        })
        .await?;
    if let Some(stored) = early {
        return settle(stored, &out_trade_no);
    }
    let mut guard = ClaimGuard {
        core: core.clone(),
        claim: idem.clone().map(|i| (i, claimed_at)),
    };
    let result = precreate_and_store(core, new_order, idem.clone(), claimed_at).await;
    if result.is_err() {
        if let Some(idem) = idem {
            // Freed before the answer, so a retry sent on receiving it finds the key free.
            let freed = core
                .db
                .write(move |c| idempotency::release(c, idem.api_key_id, &idem.key, claimed_at))
                .await;
            if let Err(e) = freed {
                tracing::warn!(error = %e, "cannot free an Idempotency-Key claim");
                return settle(result?, &out_trade_no);
            }
        }
    }
    guard.disarm();
    settle(result?, &out_trade_no)
}

/// The part of `create` done under the key's claim, if any.
async fn precreate_and_store(
    core: &Core,
    new_order: NewOrder,
    idem: Option<Idempotency>,
    claimed_at: DateTime<Utc>,
) -> Result<Stored, CreateError> {
    let provider = core.providers.get(new_order.provider).ok_or_else(|| {
        CreateError::Invalid(FieldError {
            field: "provider",
            message: format!("provider {} is not enabled", new_order.provider),
        })
    })?;
    if !provider.currencies().contains(&new_order.amount.currency()) {
        let accepted: Vec<&str> = provider.currencies().iter().map(|c| c.code()).collect();
        return Err(CreateError::Invalid(FieldError {
            field: "currency",
            message: format!(
                "{} cannot charge {}; it accepts {}",
                new_order.provider,
                new_order.amount.currency(),
                accepted.join(", ")
            ),
        }));
    }
    let payment = provider
        .create_payment(&PaymentRequest {
            order_id: new_order.id.clone(),
            amount: new_order.amount,
            subject: new_order.subject.clone(),
            expires_at: new_order.expires_at,
            notify_url: format!("{}/notify/{}", core.public_url(), new_order.provider),
        })
        .await;
    let outcome = provider_calls::describe(&payment, |_| String::new()).0;
    provider_calls::observed(
        core,
        &new_order.id,
        new_order.provider,
        ProviderCall::Precreate,
        outcome,
    );
    let payment = payment?;

    let now = core.now();
    let stored = core
        .db
        .write(move |conn| {
            if orders::insert(conn, &new_order, Some(&payment.qr_code))? == orders::Inserted::OutTradeNoTaken
            {
                if let Some(idem) = &idem {
                    idempotency::release(conn, idem.api_key_id, &idem.key, claimed_at)?;
                }
                return Ok(Stored::OutTradeNoTaken);
            }
            if let Some(idem) = &idem {
                idempotency::complete(conn, idem.api_key_id, &idem.key, &new_order.id)?;
            }
            // Logged only once the order exists; a refused creation stores nothing.
            provider_calls::insert(
                conn,
                &new_order.id,
                new_order.provider,
                ProviderCall::Precreate,
                (CallOutcome::Ok, "payment created, QR code issued".to_owned()),
                now,
            )?;
            let order = orders::find_by_id(conn, &new_order.id)?
                .ok_or_else(|| DbError::Corrupt("inserted order vanished".to_owned()))?;
            Ok(Stored::Created(order))
        })
        .await?;
    Ok(stored)
}

#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    #[error("order not found")]
    NotFound,
    #[error("order is {0} and cannot be closed")]
    Illegal(OrderStatus),
    #[error("the provider reports this order as paid; it was recorded as paid instead of closed")]
    TurnedOutPaid(Box<Order>),
    #[error(
        "the provider reports {reported} minor units paid for an order of {expected}; nothing was changed"
    )]
    AmountMismatch { expected: i64, reported: i64 },
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The close's answer, whatever the state machine made of it.
fn closed(outcome: Outcome) -> Result<Order, CloseError> {
    match outcome {
        Outcome::Applied { order, .. } | Outcome::Duplicate { order } => Ok(order),
        Outcome::Refused { order } => Err(CloseError::Illegal(order.status)),
        Outcome::NotFound => Err(CloseError::NotFound),
    }
}

/// Closes a pending order: asks the provider first (a payment notification may have
/// been lost), pays the order instead when it was paid, otherwise closes the trade at
/// the provider and then locally. A repeated close answers with the closed order.
pub async fn close(
    core: &Core,
    id: &OrderId,
    mut cause: Cause,
    now: DateTime<Utc>,
) -> Result<Order, CloseError> {
    let lookup = id.clone();
    let order = core
        .db
        .read(move |c| orders::find_by_id(c, &lookup))
        .await?
        .ok_or(CloseError::NotFound)?;
    if order.status == OrderStatus::Pending {
        match core.providers.get(order.provider) {
            Some(provider) => match provider_calls::query(core, provider.as_ref(), &order).await? {
                TradeState::Paid(facts) => {
                    if facts.amount != order.amount.minor() {
                        tracing::warn!(order_id = %order.id, expected = order.amount.minor(), reported = facts.amount, "provider reports a different paid amount");
                        return Err(CloseError::AmountMismatch {
                            expected: order.amount.minor(),
                            reported: facts.amount,
                        });
                    }
                    let pay = pay_change(facts, now);
                    let query_cause = Cause::system_because(
                        TransitionSource::ProviderQuery,
                        format!("found paid while closing ({})", cause.source.as_str()),
                    );
                    return Err(
                        match closed(changes::apply(core, id, pay, query_cause, now).await?) {
                            Ok(order) => CloseError::TurnedOutPaid(Box::new(order)),
                            Err(e) => e,
                        },
                    );
                }
                TradeState::NotPaid => provider_calls::close(core, provider.as_ref(), &order).await?,
                // Already closed at the provider (e.g. its own deadline passed).
                TradeState::Closed => {}
            },
            None => {
                cause.detail = Some(format!(
                    "provider {} is not enabled; closed locally only",
                    order.provider
                ));
            }
        }
    }
    // Not pending: the state machine decides (a duplicate, or refused and recorded).
    closed(changes::apply(core, id, Change::Close, cause, now).await?)
}

/// The payment a provider reported, as the change that records it.
pub fn pay_change(facts: PaymentFacts, now: DateTime<Utc>) -> Change {
    Change::Pay {
        provider_trade_no: facts.provider_trade_no,
        paid_at: facts.paid_at.unwrap_or(now),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("order not found")]
    NotFound,
    #[error("order is {0}; only pending and closed orders are looked up at the provider")]
    NotQueryable(OrderStatus),
    #[error(
        "the provider reports {reported} minor units paid for an order of {expected}; nothing was changed"
    )]
    AmountMismatch { expected: i64, reported: i64 },
    #[error("the order's provider is not enabled")]
    ProviderMissing,
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What the provider said about a pending or closed order, and what kassa did.
#[derive(Debug)]
pub enum Queried {
    /// Paid at the provider: recorded as paid now (with `late_payment` when it was closed).
    Paid(Order),
    /// Paid at the provider and already recorded so.
    AlreadyPaid(Order),
    /// Not paid (or closed) at the provider: nothing changed.
    NotPaid(Order, TradeState),
}

/// Asks the provider about the order now and records a payment it reports: a lost
/// notification becomes `paid` this way (a closed order becomes a late payment, money
/// is never lost). Never closes anything. The change carries `cause`.
pub async fn query_provider(
    core: &Core,
    id: &OrderId,
    cause: Cause,
    now: DateTime<Utc>,
) -> Result<Queried, QueryError> {
    let lookup = id.clone();
    let order = core
        .db
        .read(move |c| orders::find_by_id(c, &lookup))
        .await?
        .ok_or(QueryError::NotFound)?;
    if !matches!(order.status, OrderStatus::Pending | OrderStatus::Closed) {
        return Err(QueryError::NotQueryable(order.status));
    }
    let provider = core
        .providers
        .get(order.provider)
        .cloned()
        .ok_or(QueryError::ProviderMissing)?;
    let facts = match provider_calls::query(core, provider.as_ref(), &order).await? {
        TradeState::Paid(facts) => facts,
        other => return Ok(Queried::NotPaid(order, other)),
    };
    if facts.amount != order.amount.minor() {
        tracing::warn!(order_id = %order.id, expected = order.amount.minor(), reported = facts.amount, "provider reports a different paid amount");
        return Err(QueryError::AmountMismatch {
            expected: order.amount.minor(),
            reported: facts.amount,
        });
    }
    match changes::apply(core, id, pay_change(facts, now), cause, now).await? {
        Outcome::Applied { order, .. } => Ok(Queried::Paid(order)),
        Outcome::Duplicate { order } => Ok(Queried::AlreadyPaid(order)),
        Outcome::Refused { order } => Err(QueryError::NotQueryable(order.status)),
        Outcome::NotFound => Err(QueryError::NotFound),
    }
}
