//! Copies the write-ahead log into the database file in the background, so the single
//! writer (and the requests waiting on its commits) rarely pays for a checkpoint; keeps
//! the log from growing under sustained load; and, once the writer is idle, empties it.
//!
//! Under load the log never starts over by itself: a checkpoint can only copy what was
//! in the log when it began, and by the time it ends the writer has appended more. So
//! when a round has copied everything it saw and the log is large, this thread asks
//! the writer to checkpoint once itself, between two transactions: it copies only the
//! last few commits (a millisecond or so), and the writer's next transaction starts
//! the log over from its beginning (cut back to `journal_size_limit`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// Between two rounds while the writer commits: short, so each checkpoint copies
/// (and syncs into the database file) little, rather than a burst of pages that holds
/// up the writer's own fsync.
const BUSY_ROUND: Duration = Duration::from_millis(10);
/// Between two rounds while the writer is idle and the log is empty.
const IDLE_ROUND: Duration = Duration::from_millis(100);
/// The writer idle this long: the log is emptied (TRUNCATE).
const IDLE_BEFORE_TRUNCATE: Duration = Duration::from_millis(250);
/// Pages in the log (4 KiB each) from which the writer is asked to let it start over.
const RESTART_AT_PAGES: i64 = 1024;

/// What the writer and the checkpoint thread tell each other.
#[derive(Debug, Default)]
pub(super) struct Wal {
    /// Transactions the writer has ended; standing still means it is idle.
    commits: AtomicU64,
    /// The whole log as it was has been copied: the writer's own checkpoint now lets
    /// it start over.
    catch_up: AtomicBool,
}

impl Wal {
    /// The writer ended a transaction on `conn`; between two transactions is where it
    /// does the catch-up checkpoint, when asked.
    pub(super) fn after_transaction(&self, conn: &Connection) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if self.catch_up.swap(false, Ordering::Relaxed) {
            // PASSIVE: never waits; if something is in the way, the next round asks again.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL catch-up checkpoint failed");
            }
        }
    }
}

/// Runs checkpoints on `conn` while `writer` lives: PASSIVE while the writer commits,
/// TRUNCATE once it has been idle for `IDLE_BEFORE_TRUNCATE`.
/// `open` is held by the thread until its connection is closed (see `Database::threads`).
pub(super) fn start(conn: Connection, writer: Weak<()>, wal: Arc<Wal>, open: Arc<()>) {
    // A TRUNCATE must not keep the writer waiting: when a reader or the writer is in
    // the way it gives up at once and is tried again on a later round.
    if let Err(e) = conn.busy_timeout(Duration::ZERO) {
        tracing::warn!(error = %e, "cannot set the checkpoint connection's busy timeout");
    }
    let spawned = std::thread::Builder::new()
        .name("kassa-db-checkpoint".to_owned())
        .spawn(move || {
            let mut seen = wal.commits.load(Ordering::Relaxed);
            let mut idle_since = Instant::now();
            // True once the log holds nothing a TRUNCATE still has to remove.
            let mut emptied = false;
            while writer.strong_count() > 0 {
                std::thread::sleep(if emptied { IDLE_ROUND } else { BUSY_ROUND });
                let now = wal.commits.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    idle_since = Instant::now();
                    emptied = false;
                }
                let truncate = idle_since.elapsed() >= IDLE_BEFORE_TRUNCATE;
                if emptied {
                    continue;
                }
                // PASSIVE never blocks the writer or readers; whatever it cannot copy
                // now it copies on a later round. TRUNCATE copies the rest and cuts the
                // log to nothing, so the next write starts it afresh.
                let mode = if truncate { "TRUNCATE" } else { "PASSIVE" };
                let done = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                });
                match done {
                    Ok((0, log, copied)) => {
                        emptied = truncate;
                        if !truncate && log >= RESTART_AT_PAGES && copied == log {
                            wal.catch_up.store(true, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::DatabaseBusy => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
            }
            drop(conn);
            drop(open);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the checkpoint thread; SQLite's automatic checkpoints remain");
    }
}

/// The writer's last act, once its queue is drained and closed: copies the whole log
/// into the database file and cuts it to nothing, so a stopped kassa leaves one
/// self-contained file (what a plain file copy of the data directory then gets right).
/// Waits, within the busy timeout, for a checkpoint or a read still under way.
pub(super) fn empty_log(conn: &Connection) {
    let done = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    });
    match done {
        Ok((0, _)) => tracing::debug!("database log checkpointed and emptied"),
        Ok((_, pages)) => {
            tracing::warn!(pages, "database log not emptied: a reader was still in the way")
        }
        Err(e) => tracing::warn!(error = %e, "final WAL checkpoint failed"),
    }
}
