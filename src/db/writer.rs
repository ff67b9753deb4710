//! The single writer thread and its group commit.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::{oneshot, watch};

use super::{DbError, DbResult, Tx};

/// Largest number of jobs committed together; bounds the latency one batch adds.
const MAX_BATCH: usize = 256;

trait Job: Send {
    /// Runs inside the batch's savepoint; false means the job failed (and its
    /// savepoint is rolled back).
    fn run(&mut self, tx: &Tx<'_>) -> bool;
    /// Delivers the result once the batch's fate is known.
    fn finish(self: Box<Self>, commit: Result<(), String>);
}

struct WriteJob<R, F> {
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
    pub(super) fn start(conn: Connection, open: std::sync::Arc<()>) -> DbResult<Writer> {
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let (ended, running) = watch::channel(());
        std::thread::Builder::new()
            .name("kassa-db-writer".to_owned())
            .spawn(move || {
                // Dropped last, even when the thread unwinds: watchers learn it ended.
                let _ended = ended;
                // Returns once every handle (every sender) is gone; `run` owns and closes
                // the connection before `open` is released.
                run(conn, queue);
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

fn run(conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let outcome = commit_batch(&conn, &mut batch);
        if let Err(e) = &outcome {
            tracing::error!(error = %e, jobs = batch.len(), "database batch failed");
        }
        for job in batch {
            job.finish(outcome.clone());
        }
    }
}

fn commit_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), String> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| e.to_string())?;
    let tx = Tx { conn };
    for job in batch.iter_mut() {
        // A failed job only loses its own savepoint; a failed savepoint loses the batch.
        let step = tx.savepoint_step(|tx| {
            if job.run(tx) {
                Ok(())
            } else {
                Err(DbError::Abandoned("job failed".to_owned()))
            }
        });
        if let Err(e) = step {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e.to_string());
        }
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e.to_string());
    }
    Ok(())
}
