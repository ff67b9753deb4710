//! The only module that knows SQL. Reads go through a pool of read-only connections;
//! every write goes to one writer thread that commits whatever is queued as one
//! transaction (group commit), each job in its own savepoint, and answers each job only
//! after its batch is durable. With `synchronous=FULL` that makes a reply survive power
//! loss at little cost, because one fsync serves many requests.

pub mod api_keys;
pub mod backup;
mod checkpointer;
pub mod history;
pub mod idempotency;
pub mod migrations;
pub mod notifications;
pub mod orders;
pub mod outbox;
pub mod refunds;
pub mod sandbox;
pub mod transitions;
pub mod webhooks;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use r2d2_sqlite::SqliteConnectionManager;
pub use rusqlite::Connection;
use rusqlite::{OpenFlags, TransactionBehavior};

pub use writer::Writer;

pub type DbResult<T> = Result<T, DbError>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database pool error: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("the database was written by a newer kassa (schema version {found}, this binary knows up to {supported}); upgrade kassa or restore a backup")]
    TooNew { found: i64, supported: i64 },
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("a stored value is invalid: {0}")]
    Corrupt(String),
    #[error("database task failed: {0}")]
    Task(String),
    #[error("cannot create data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const READERS: u32 = 8;

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A `success` reply to a payment platform must survive power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Opens one read-write connection with kassa's pragmas (WAL, busy timeout, foreign
/// keys, synchronous=FULL). Used by the writer and by CLI commands.
pub fn connect(path: &Path) -> DbResult<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| DbError::DataDir {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
    }
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    configure(&conn)?;
    Ok(conn)
}

/// Runs `f` in one IMMEDIATE transaction on `conn`, committing only when it succeeds.
pub fn immediate<R>(conn: &mut Connection, f: impl FnOnce(&Connection) -> DbResult<R>) -> DbResult<R> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let r = f(&tx)?;
    tx.commit()?;
    Ok(r)
}

/// Opens the database, applies pending migrations and returns the schema names applied.
pub fn migrate(path: &Path) -> DbResult<Vec<&'static str>> {
    let mut conn = connect(path)?;
    migrations::run(&mut conn)
}

/// The database: a pool of readers plus the single writer.
#[derive(Clone)]
pub struct Database {
    readers: r2d2::Pool<SqliteConnectionManager>,
    writer: Writer,
    path: PathBuf,
    threads: DbThreads,
}

/// See `Database::threads`. Holds no handle, so watching never keeps the threads alive.
#[derive(Clone, Debug)]
pub struct DbThreads(std::sync::Weak<()>);

impl DbThreads {
    /// True while the writer or the checkpoint thread still runs.
    pub fn running(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl Database {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> DbResult<Database> {
        let mut conn = connect(path)?;
        migrations::run(&mut conn)?;
        // Each job runs in a savepoint, whose statement journal would otherwise go to
        // a temp file. Checkpoints (copying the WAL into the database, with an fsync)
        // run on their own thread so requests waiting for a commit never wait for one;
        // the writer's own automatic checkpoint stays as a backstop.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "wal_autocheckpoint", 20_000)?;
        conn.pragma_update(None, "cache_size", -8000)?;
        let open = std::sync::Arc::new(());
        let threads = DbThreads(std::sync::Arc::downgrade(&open));
        let writer = Writer::start(conn, open.clone())?;
        checkpointer::start(path, writer.clone(), open)?;
        let manager = SqliteConnectionManager::file(path)
            .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .with_init(|c| {
                c.busy_timeout(BUSY_TIMEOUT)?;
                c.pragma_update(None, "foreign_keys", "ON")
            });
        let readers = r2d2::Pool::builder()
            .max_size(READERS)
            .min_idle(Some(1))
            .build(manager)?;
        Ok(Database {
            readers,
            writer,
            path: path.to_owned(),
            threads,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Watches this database's writer and checkpoint threads, which end (closing their
    /// read-write connections) once the last handle is dropped. Whoever opens the file
    /// again in the same process (a restart) can make sure the old writer is gone first.
    pub fn threads(&self) -> DbThreads {
        self.threads.clone()
    }

    /// Runs a read on a pooled read-only connection, off the async workers.
    pub async fn read<R, F>(&self, f: F) -> DbResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<R> + Send + 'static,
    {
        let pool = self.readers.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let conn = pool.get()?;
            f(&conn)
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    pub fn read_blocking<R>(&self, f: impl FnOnce(&Connection) -> DbResult<R>) -> DbResult<R> {
        let conn = self.readers.get()?;
        f(&conn)
    }

    /// Queues `f` for the writer; resolves once its batch has committed.
    pub async fn write<R, F>(&self, f: F) -> DbResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<R> + Send + 'static,
    {
        self.writer.write(f).await
    }

    pub fn write_blocking<R, F>(&self, f: F) -> DbResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> DbResult<R> + Send + 'static,
    {
        self.writer.write_blocking(f)
    }

    /// `SELECT 1` on a reader: what `/healthz` checks.
    pub async fn ping(&self) -> DbResult<()> {
        self.read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }
}

pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(format!("time {ms} out of range")))
}

pub(crate) fn corrupt(message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        Box::new(DbError::Corrupt(message)),
    )
}
