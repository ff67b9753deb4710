//! Operations that combine providers and the database; shared by the API, the admin
//! pages and the workers so each behaves the same whoever asks.

pub mod orders;
pub mod refunds;
