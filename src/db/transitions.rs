//! The one place an order's status changes. Each change is a single guarded
//! `UPDATE … WHERE id = ? AND status IN (…)` whose affected-row count decides the
//! outcome, written together with its history row and (for events the shop hears
//! about) its outbox row. Callers run it inside one transaction: the writer's batch
//! savepoint, or `db::immediate`.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};

use super::{history, orders, outbox, to_millis, DbResult};
use crate::domain::event::{EventType, WebhookPayload};
use crate::domain::{Order, OrderId, OrderStatus, Transition, TransitionSource};

/// A transition together with the facts it records.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Pay {
        provider_trade_no: Option<String>,
        paid_at: DateTime<Utc>,
    },
    Close,
    /// A refund of `amount` minor units that succeeded at the provider.
    Refund {
        amount: i64,
    },
}

impl Change {
    pub fn transition(&self) -> Transition {
        match self {
            Change::Pay { .. } => Transition::Pay,
            Change::Close => Transition::Close,
            Change::Refund { .. } => Transition::Refund,
        }
    }
}

/// Who asks for the change, and why.
#[derive(Debug, Clone)]
pub struct Cause {
    pub source: TransitionSource,
    /// An API key's name, an admin's user name, or `system`.
    pub actor: String,
    pub detail: Option<String>,
    pub notification_id: Option<i64>,
}

impl Cause {
    pub fn system(source: TransitionSource) -> Cause {
        Cause {
            source,
            actor: "system".to_owned(),
            detail: None,
            notification_id: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Applied {
        from: OrderStatus,
        order: Order,
    },
    /// The order already shows this change (a repeated notification, a second close).
    Duplicate {
        order: Order,
    },
    /// The change is not allowed from the order's status; recorded in its history.
    Refused {
        order: Order,
    },
    NotFound,
}

fn in_list(statuses: &[OrderStatus]) -> String {
    statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Applies `change` to the order. `public_url` is needed for the webhook payload's
/// `checkout_url`.
pub fn apply(
    conn: &Connection,
    order_id: &OrderId,
    change: &Change,
    cause: &Cause,
    now: DateTime<Utc>,
    public_url: &str,
) -> DbResult<Outcome> {
    let transition = change.transition();
    let allowed = in_list(transition.allowed_from());
    let at = to_millis(now);
    let from: Option<OrderStatus> = match change {
        Change::Pay {
            provider_trade_no,
            paid_at,
        } => conn
            .prepare_cached(&format!(
                "UPDATE orders SET status = 'paid', late_payment = (status = 'closed'), paid_at = ?2, \
                 provider_trade_no = COALESCE(?3, provider_trade_no), updated_at = ?4 \
                 WHERE id = ?1 AND status IN ({allowed}) RETURNING late_payment"
            ))?
            .query_row(
                params![order_id.as_str(), to_millis(*paid_at), provider_trade_no, at],
                |r| r.get::<_, bool>(0),
            )
            .optional()?
            .map(|late| if late { OrderStatus::Closed } else { OrderStatus::Pending }),
        Change::Close => conn
            .prepare_cached(&format!(
                "UPDATE orders SET status = 'closed', closed_at = ?2, updated_at = ?2 \
                 WHERE id = ?1 AND status IN ({allowed}) RETURNING 1"
            ))?
            .query_row(params![order_id.as_str(), at], |_| Ok(OrderStatus::Pending))
            .optional()?,
        Change::Refund { amount } => conn
            .prepare_cached(&format!(
                "UPDATE orders SET refunded_amount = refunded_amount + ?2, \
                 status = CASE WHEN refunded_amount + ?2 >= amount THEN 'refunded' ELSE 'partially_refunded' END, \
                 updated_at = ?3 \
                 WHERE id = ?1 AND status IN ({allowed}) AND ?2 > 0 AND refunded_amount + ?2 <= amount \
                 RETURNING refunded_amount - ?2"
            ))?
            .query_row(params![order_id.as_str(), amount, at], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|before| if before == 0 { OrderStatus::Paid } else { OrderStatus::PartiallyRefunded }),
    };

    let Some(order) = orders::find_by_id(conn, order_id)? else {
        return Ok(Outcome::NotFound);
    };
    let Some(from) = from else {
        if transition.already_applied(order.status) {
            return Ok(Outcome::Duplicate { order });
        }
        let target = transition.targets()[0];
        history::record(
            conn,
            &order.id,
            transition,
            false,
            order.status,
            target,
            cause,
            now,
        )?;
        return Ok(Outcome::Refused { order });
    };

    history::record(conn, &order.id, transition, true, from, order.status, cause, now)?;
    if let Some(event) = EventType::for_new_status(order.status) {
        let view = order.view(public_url);
        let payload = serde_json::to_string(&WebhookPayload::new(event, now, &view))
            .map_err(|e| super::DbError::Corrupt(e.to_string()))?;
        outbox::enqueue(conn, &order.id, event, &payload, now)?;
    }
    Ok(Outcome::Applied { from, order })
}
