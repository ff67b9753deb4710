//! The single writer thread and its group commit.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{oneshot, watch};

use super::checkpointer::Wal;
use super::{run_cached, DbError, DbResult, Tx};
use crate::metrics::WriterMetrics;

/// Largest number of jobs committed together; bounds the latency one batch adds.
const MAX_BATCH: usize = 256;
/// No job for this long ends a burst: its summary is logged.
const IDLE: Duration = Duration::from_millis(500);
/// A burst of at least this many jobs is worth an `info` line; smaller ones log at debug.
const BURST_REPORTED: u64 = 1000;

trait Job: Send {
    /// Runs inside the batch's savepoint; false means the job failed (and its
    /// savepoint is rolled back).
    fn run(&mut self, tx: &Tx<'_>) -> bool;
    /// Delivers the result once the batch's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
    /// When it was queued.
    fn submitted(&self) -> Instant;
}

struct WriteJob<R, F> {
    submitted: Instant,
    work: Option<F>,
    result: Option<DbResult<R>>,
    reply: oneshot::Sender<DbResult<R>>,
}

impl<R, F> Job for WriteJob<R, F>
where
    R: Send,
    F: FnOnce(&Tx<'_>) -> DbResult<R> + Send,
{
    fn run(&mut self, tx: &Tx<'_>) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = match catch_unwind(AssertUnwindSafe(|| work(tx))) {
            Ok(r) => r,
            Err(_) => Err(DbError::Task("a database job panicked".to_owned())),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), String>) {
        let result = match (commit, self.result) {
            (_, None) => Err(DbError::Task("job never ran".to_owned())),
            (Ok(()), Some(r)) => r,
            // The job's own error explains more than the commit failure it caused.
            (Err(_), Some(Err(e))) => Err(e),
            (Err(e), Some(Ok(_))) => Err(DbError::Commit(e)),
        };
        // The requester may have gone away (client disconnected); nothing to do then.
        let _ = self.reply.send(result);
    }

    fn submitted(&self) -> Instant {
        self.submitted
    }
}

#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// Held by every handle; background helpers watch it to know when to stop.
    alive: std::sync::Arc<()>,
    /// Closed (its sender dropped) when the thread ends, whichever way it ends.
    running: watch::Receiver<()>,
}

impl Writer {
    /// `open` is held by the thread until its connection is closed (see `Database::threads`).
    /// `wal` is shared with the checkpoint thread.
    /// `metrics` hears about every batch.
    pub(super) fn start(
        conn: Connection,
        wal: Arc<Wal>,
        open: std::sync::Arc<()>,
        metrics: WriterMetrics,
    ) -> DbResult<Writer> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let (ended, running) = watch::channel(());
        std::thread::Builder::new()
            .name("kassa-db-writer".to_owned())
            .spawn(move || {
                // Dropped last, even when the thread unwinds: watchers learn it ended.
                let _ended = ended;
                // Returns once every handle (every sender) is gone; `run` owns and closes
                // the connection before `open` is released.
                run(conn, queue, &wal, &metrics);
                drop(open);
            })
            .map_err(|e| DbError::Task(format!("cannot start the database writer: {e}")))?;
        Ok(Writer {
            jobs,
            alive: std::sync::Arc::new(()),
            running,
        })
    }

    /// Dies when the last handle to this writer is dropped.
    pub(super) fn liveness(&self) -> std::sync::Weak<()> {
        std::sync::Arc::downgrade(&self.alive)
    }

    /// Resolves when the writer thread has ended.
    pub(super) fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut running = self.running.clone();
        async move { while running.changed().await.is_ok() {} }
    }

    fn submit<R, F>(&self, work: F) -> DbResult<oneshot::Receiver<DbResult<R>>>
    where
        R: Send + 'static,
        F: FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = WriteJob {
            submitted: Instant::now(),
            work: Some(work),
            result: None,
            reply,
        };
        self.jobs.send(Box::new(job)).map_err(|_| DbError::WriterGone)?;
        Ok(answer)
    }

    pub(super) async fn write<R, F>(&self, work: F) -> DbResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static,
    {
        self.submit(work)?.await.map_err(|_| DbError::WriterGone)?
    }

    pub(super) fn write_blocking<R, F>(&self, work: F) -> DbResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static,
    {
        self.submit(work)?
            .blocking_recv()
            .map_err(|_| DbError::WriterGone)?
    }
}

/// Jobs per commit, counted in powers of two: how well group commit works under the
/// load of the moment.
#[derive(Default)]
struct Burst {
    started: Option<Instant>,
    jobs: u64,
    commits: u64,
    /// `by_size[k]`: commits of 2^k to 2^(k+1)-1 jobs.
    by_size: [u64; 9],
}

impl Burst {
    fn add(&mut self, jobs: usize) {
        self.started.get_or_insert_with(Instant::now);
        self.jobs += jobs as u64;
        self.commits += 1;
        let k = (usize::BITS - 1 - jobs.max(1).leading_zeros()) as usize;
        self.by_size[k.min(self.by_size.len() - 1)] += 1;
    }

    /// Logs the burst that just ended and starts a new one.
    fn report(&mut self) {
        let Some(started) = self.started else { return };
        let histogram = self
            .by_size
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| {
                let (lo, hi) = (1u64 << k, (1u64 << (k + 1)) - 1);
                if lo == hi {
                    format!("{lo}:{n}")
                } else {
                    format!("{lo}-{hi}:{n}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let seconds = started.elapsed().saturating_sub(IDLE).as_secs_f64();
        if self.jobs >= BURST_REPORTED {
            tracing::info!(
                jobs = self.jobs,
                commits = self.commits,
                seconds,
                jobs_per_commit = %histogram,
                "database writer burst"
            );
        } else {
            tracing::debug!(
                jobs = self.jobs,
                commits = self.commits,
                seconds,
                jobs_per_commit = %histogram,
                "database writer burst"
            );
        }
        *self = Burst::default();
    }
}

fn run(conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>, wal: &Wal, metrics: &WriterMetrics) {
    let mut burst = Burst::default();
    loop {
        let first = match queue.recv_timeout(IDLE) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                burst.report();
                match queue.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let (batch, outcome) = commit_batch(&conn, first, &queue, metrics);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, jobs = batch.len(), "database batch failed");
        }
        burst.add(batch.len());
        metrics.batch(batch.len());
        for job in batch {
            job.finish(outcome.clone());
        }
        wal.after_transaction(&conn);
    }
    burst.report();
    super::checkpointer::empty_log(&conn);
}

/// Ends a failed transaction; the failure being reported is the one that led here.
fn roll_back(conn: &Connection) {
    let _ = run_cached(conn, "ROLLBACK");
}

/// Runs `first` and whatever else is queued, each in its own savepoint, as one
/// transaction. Jobs queued while earlier ones run join the same commit, and before
/// committing the writer lets the threads that queue jobs run once more: every job
/// that makes it in shares the commit's WAL writes and fsync instead of paying for
/// its own.
fn commit_batch(
    conn: &Connection,
    first: Box<dyn Job>,
    queue: &mpsc::Receiver<Box<dyn Job>>,
    metrics: &WriterMetrics,
) -> (Vec<Box<dyn Job>>, Result<(), String>) {
    let mut batch = vec![first];
    if let Err(e) = run_cached(conn, "BEGIN IMMEDIATE") {
        return (batch, Err(e.to_string()));
    }
    let tx = Tx::sqlite(conn);
    let mut next = 0;
    let mut yielded = false;
    loop {
        while next < batch.len() {
            let job = &mut batch[next];
            next += 1;
            metrics.queued(job.submitted().elapsed());
            // A failed job only loses its own savepoint; a failed savepoint loses the batch.
            let step = tx.savepoint_step(|tx| {
                if job.run(tx) {
                    Ok(())
                } else {
                    Err(DbError::Abandoned("job failed".to_owned()))
                }
            });
            if let Err(e) = step {
                roll_back(conn);
                return (batch, Err(e.to_string()));
            }
            if batch.len() < MAX_BATCH {
                if let Ok(job) = queue.try_recv() {
                    batch.push(job);
                }
            }
        }
        if batch.len() >= MAX_BATCH || yielded {
            break;
        }
        yielded = true;
        std::thread::yield_now();
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    if let Err(e) = run_cached(conn, "COMMIT") {
        roll_back(conn);
        return (batch, Err(e.to_string()));
    }
    (batch, Ok(()))
}
