//! The contract suite: each database operation's behaviour, written once and run on
//! SQLite always and on PostgreSQL when `KASSA_TEST_PG_URL` is set (`both_backends!`),
//! so the second backend cannot drift from the first unnoticed.
mod admin_sessions;
mod admin_users;
mod api_keys;
mod audit;
mod history;
mod idempotency;
mod leases;
mod login_attempts;
mod logs;
mod notifications;
mod orders;
mod outbox;
mod overview;
mod provider_calls;
mod race;
mod refunds;
mod sandbox;
mod secrets;
mod timeline;
mod transitions;
mod webhook_endpoints;
mod webhook_secrets;
