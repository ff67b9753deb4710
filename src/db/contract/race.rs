//! Two write transactions at once on PostgreSQL, for the operations whose SQLite version
//! is only safe because SQLite's single writer runs one transaction at a time.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::db::sql::args;
use crate::db::{Database, DbResult, Tx};

/// How long `race` waits for the second transaction before calling the test stuck.
const STUCK: Duration = Duration::from_secs(60);

/// Runs `first` in a write transaction, then `second` in another on a thread of its own,
/// and commits the first only once the second has finished or is waiting for a lock the
/// first holds: the interleaving in which a read-then-decide at READ COMMITTED goes
/// wrong, made every time instead of by chance. Returns both results; `first` must
/// succeed.
pub(super) fn race<A, B>(
    db: &Database,
    first: impl FnOnce(&Tx<'_>) -> DbResult<A> + Send + 'static,
    second: impl FnOnce(&Tx<'_>) -> DbResult<B> + Send + 'static,
) -> (A, DbResult<B>)
where
    A: Send + 'static,
    B: Send + 'static,
{
    let other = db.clone();
    let (a, second_thread) = db
        .write_blocking(move |tx| {
            let a = first(tx)?;
            let (done, finished) = mpsc::channel();
            let second_thread = std::thread::spawn(move || {
                let b = other.write_blocking(second);
                let _ = done.send(());
                b
            });
            let started = Instant::now();
            loop {
                if finished.try_recv().is_ok() || waited_on(tx)? {
                    break;
                }
                assert!(
                    started.elapsed() < STUCK,
                    "the second transaction neither finished nor waited for the first"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok((a, second_thread))
        })
        .expect("the first transaction commits");
    (a, second_thread.join().expect("the second transaction's thread"))
}

/// True when another session waits for a lock this transaction holds.
fn waited_on(tx: &Tx<'_>) -> DbResult<bool> {
    tx.one(
        "SELECT COUNT(*) FROM pg_locks WHERE NOT granted AND pg_backend_pid() = ANY (pg_blocking_pids(pid))",
        args![],
        |r| Ok(r.get_i64(0)? > 0),
    )
}
