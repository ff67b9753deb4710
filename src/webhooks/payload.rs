//! The body of a webhook (spec section 8): `{"type", "timestamp", "data"}` where `data`
//! is the order as the API shows it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::order::rfc3339;
use crate::domain::{EventType, Order, OrderView};

#[derive(Debug, Serialize)]
struct WebhookPayload<'a> {
    #[serde(rename = "type")]
    kind: EventType,
    timestamp: String,
    data: &'a OrderView,
}

/// The JSON text announcing `event` for `order` at `at`.
pub fn render(
    order: &Order,
    event: EventType,
    at: DateTime<Utc>,
    public_url: &str,
) -> Result<String, serde_json::Error> {
    serde_json::to_string(&WebhookPayload {
        kind: event,
        timestamp: rfc3339(at),
        data: &order.view(public_url),
    })
}
