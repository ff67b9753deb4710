//! Operations that combine providers and the database; shared by the API, the admin
//! pages and the workers so each behaves the same whoever asks. They take `Core`.

pub mod admin;
pub mod changes;
pub mod export;
pub mod metrics;
pub mod notifications;
pub mod orders;
pub mod overview;
pub mod provider_calls;
pub mod rate_limit;
pub mod refunds;
pub mod staff;
