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

/// Waits for every claimer thread of a race test and fails with all the errors they
/// returned, so one failure does not hide another.
pub(super) fn join_claimers(threads: Vec<std::thread::JoinHandle<Result<(), String>>>) {
    let failures: Vec<String> = threads
        .into_iter()
        .filter_map(|thread| thread.join().unwrap().err())
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
}

/// Every row `sql` (a query without parameters) selects, each read by `read`.
pub(super) fn select<T>(
    db: &crate::db::Database,
    sql: &str,
    read: impl FnMut(&crate::db::sql::Row<'_>) -> crate::db::DbResult<T>,
) -> Vec<T> {
    db.read_blocking(|tx| tx.all(sql, crate::db::sql::args![], read))
        .unwrap()
}
