//! Pure business types: money, ids, the order state machine, orders and time. Nothing
//! here knows about HTTP or SQL.

pub mod address;
pub mod admin;
pub mod api_key;
pub mod clock;
pub mod event;
pub mod ids;
pub mod money;
pub mod notification;
pub mod order;
pub mod provider_call;
pub mod refund;
pub mod status;
pub mod totp;

pub use clock::{Clock, FixedClock, SystemClock};
pub use event::{EventType, OutboxStatus};
pub use ids::{OrderId, OutTradeNo};
pub use money::{Amount, Currency};
pub use notification::{Reason, Rejection, RejectionCode, Verdict};
pub use order::{CreateOrderRequest, NewOrder, Order, OrderView, ProviderKind};
pub use refund::RefundStatus;
pub use status::{OrderStatus, Transition, TransitionSource};
