//! Operations that combine providers and the database; shared by the API, the admin
//! pages and the workers so each behaves the same whoever asks. They take `Core`.

pub mod changes;
pub mod orders;
pub mod refunds;
