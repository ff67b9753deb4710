//! Copies the write-ahead log into the database file in the background, so the single
//! writer (and the requests waiting on its commits) never pays for a checkpoint.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rusqlite::Connection;

const EVERY: Duration = Duration::from_millis(200);

/// Runs PASSIVE checkpoints on `conn` while `writer` lives.
/// `open` is held by the thread until its connection is closed (see `Database::threads`).
pub(super) fn start(conn: Connection, writer: Weak<()>, open: Arc<()>) {
    let spawned = std::thread::Builder::new()
        .name("kassa-db-checkpoint".to_owned())
        .spawn(move || {
            while writer.strong_count() > 0 {
                std::thread::sleep(EVERY);
                // PASSIVE never blocks the writer or readers; whatever it cannot copy now
                // it copies on a later round.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
            drop(conn);
            drop(open);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the checkpoint thread; SQLite's automatic checkpoints remain");
    }
}
