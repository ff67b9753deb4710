//! Tells open checkout pages that an order changed. An in-process broadcast today;
//! listeners always re-read the order row, so a missed signal only delays them.

use tokio::sync::broadcast;

use crate::domain::OrderId;

#[derive(Clone)]
pub struct OrderSignals(broadcast::Sender<OrderId>);

impl Default for OrderSignals {
    fn default() -> Self {
        OrderSignals(broadcast::channel(1024).0)
    }
}

impl OrderSignals {
    /// Call after the change is committed.
    pub fn changed(&self, id: &OrderId) {
        // No listener is fine.
        let _ = self.0.send(id.clone());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<OrderId> {
        self.0.subscribe()
    }
}
