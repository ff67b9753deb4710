//! Events the merchant's shop hears about, and the payload they carry (spec section 8).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::order::{rfc3339, OrderView};
use super::status::OrderStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    OrderPaid,
    OrderClosed,
    OrderPartiallyRefunded,
    OrderRefunded,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::OrderPaid => "order.paid",
            EventType::OrderClosed => "order.closed",
            EventType::OrderPartiallyRefunded => "order.partially_refunded",
            EventType::OrderRefunded => "order.refunded",
        }
    }

    /// The event announced when an order enters `status`; `pending` is never announced.
    pub fn for_new_status(status: OrderStatus) -> Option<EventType> {
        match status {
            OrderStatus::Pending => None,
            OrderStatus::Paid => Some(EventType::OrderPaid),
            OrderStatus::Closed => Some(EventType::OrderClosed),
            OrderStatus::PartiallyRefunded => Some(EventType::OrderPartiallyRefunded),
            OrderStatus::Refunded => Some(EventType::OrderRefunded),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct WebhookPayload<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub timestamp: String,
    pub data: &'a OrderView,
}

impl<'a> WebhookPayload<'a> {
    pub fn new(kind: EventType, at: DateTime<Utc>, order: &'a OrderView) -> Self {
        WebhookPayload {
            kind: kind.as_str(),
            timestamp: rfc3339(at),
            data: order,
        }
    }
}
