//! Pure business types: money, ids, the order state machine, orders and time. Nothing
//! here knows about HTTP or SQL.

pub mod api_key;
pub mod clock;
pub mod event;
pub mod ids;
pub mod money;
pub mod notification;
pub mod order;
pub mod refund;
pub mod status;

pub use clock::{Clock, FixedClock, SystemClock};
pub use event::{EventType, OutboxStatus};
pub use ids::{OrderId, OutTradeNo};
pub use money::{Amount, Currency};
pub use notification::Verdict;
pub use order::{CreateOrderRequest, NewOrder, Order, OrderView, ProviderKind};
pub use refund::RefundStatus;
pub use status::{OrderStatus, Transition, TransitionSource};
