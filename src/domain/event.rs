//! Events the merchant's shop hears about (spec section 8), and the states of their
//! delivery. The payload's shape is the webhooks module's business.

use std::str::FromStr;

use serde::Serialize;

use super::status::OrderStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "&'static str")]
pub enum EventType {
    OrderPaid,
    OrderClosed,
    OrderPartiallyRefunded,
    OrderRefunded,
}

impl EventType {
    pub const ALL: [EventType; 4] = [
        EventType::OrderPaid,
        EventType::OrderClosed,
        EventType::OrderPartiallyRefunded,
        EventType::OrderRefunded,
    ];

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

impl From<EventType> for &'static str {
    fn from(e: EventType) -> &'static str {
        e.as_str()
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown event type {s:?}"))
    }
}

/// Where one outgoing webhook stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// Claimed by a dispatcher whose lease has not run out.
    Delivering,
    Delivered,
    /// The retry ladder ran out, or its endpoint is disabled.
    Failed,
    /// Nowhere to deliver it.
    Skipped,
}

impl OutboxStatus {
    pub const ALL: [OutboxStatus; 5] = [
        OutboxStatus::Pending,
        OutboxStatus::Delivering,
        OutboxStatus::Delivered,
        OutboxStatus::Failed,
        OutboxStatus::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Delivering => "delivering",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Failed => "failed",
            OutboxStatus::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for OutboxStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutboxStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OutboxStatus::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("unknown delivery status {s:?}"))
    }
}
