//! The only module that knows SQL, and the only one that names rusqlite. Callers get
//! whole operations (`orders::insert`, `transitions::apply`, `outbox::claim_due`) run on
//! a `Tx`, a handle this module owns, so a second backend can implement the same
//! operations without anything above `db` changing. Inside `db`, the operations run
//! their statements through `sql` (`Tx::exec/one/opt/all/each`, `Arg`, `Row`) rather
//! than rusqlite itself, so that each statement is written once for every backend;
//! `.ci/layering.py` lets only the driver files (this one, `sql`, `backup`,
//! `checkpointer`, `migrations`, `writer`) name rusqlite, and only `pg` the PostgreSQL
//! driver.
//!
//! On SQLite, reads go through a pool of read-only connections; every write goes to one
//! writer thread that commits whatever is queued as one transaction (group commit), each
//! job in its own savepoint, and answers each job only after its batch is durable. With
//! `synchronous=FULL` that makes a reply survive power loss at little cost, because one
//! fsync serves many requests. On PostgreSQL (`pg`), each read or write is a transaction
//! of its own on a pooled connection.

pub mod admin_sessions;
pub mod admin_users;
pub mod api_keys;
pub mod audit;
pub mod backup;
mod checkpointer;
#[cfg(test)]
mod contract;
pub mod copy;
pub mod history;
pub mod idempotency;
pub mod leases;
pub mod lock;
pub mod login_attempts;
pub mod logs;
pub mod migrations;
pub mod notifications;
pub mod orders;
pub mod outbox;
pub mod overview;
mod pg;
pub mod provider_calls;
pub mod rate_limits;
pub mod refunds;
pub mod sandbox;
pub mod secrets;
mod sql;
pub mod target;
pub mod timeline;
pub mod transitions;
mod types;
pub mod webhook_endpoints;
pub mod webhook_secrets;
mod writer;

pub use pg::RemoteChange;
pub use target::DbTarget;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use writer::Writer;

// For `sql`'s PostgreSQL arm, which reaches the driver only through here.
use pg::{PgRow, PgRowRead};

use crate::metrics::WriterMetrics;

pub type DbResult<T> = Result<T, DbError>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL driver error of the client's own (an argument that does not fit its
    /// parameter, a URL it cannot use, a protocol error). The server's errors are mapped
    /// by `pg::error` to the variants below, never kept: their DETAIL can hold values.
    #[error("database error: {}", pg::describe(.0))]
    Postgres(pg::PgError),
    /// PostgreSQL refused a statement (a CHECK, NOT NULL or foreign key violated, an
    /// unknown table): the server's message and SQLSTATE, without any value.
    #[error("database error: {0}")]
    Refused(String),
    /// A lock or serialization conflict (PostgreSQL): the transaction may succeed if
    /// run again.
    #[error("the database is busy: {0}")]
    Busy(String),
    /// A unique key that is already taken (PostgreSQL; an op that expects one says
    /// `ON CONFLICT`).
    #[error("a unique key is already taken: {0}")]
    Conflict(String),
    /// The database cannot be reached or gave no connection in time: `/healthz` says
    /// so and payment notifications answer `failure`, so the platform retries.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
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
    /// A statement that must return a row returned none.
    #[error("the statement returned no row")]
    NoRow,
    /// A job refused to commit what it wrote (for a reason of its own, not the database's).
    #[error("the write was abandoned: {0}")]
    Abandoned(String),
    #[error("database task failed: {0}")]
    Task(String),
    #[error("cannot create data directory {path}: {reason}")]
    DataDir { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    /// Something that works on a SQLite file only (a file copy, a pragma), asked of a
    /// PostgreSQL database; `target` is shown without its password.
    #[error("{target} is a PostgreSQL database: this works on a SQLite file only")]
    NotBuilt { target: String },
}

/// Every PostgreSQL driver error becomes kassa's through `pg::error`, `?` included.
impl From<pg::PgError> for DbError {
    fn from(e: pg::PgError) -> DbError {
        pg::error(e)
    }
}

/// One connection, inside a transaction for writes. Every operation of this module
/// takes one; nothing outside `db` can reach the connection inside it.
pub struct Tx<'a>(TxInner<'a>);

/// A match per statement is all the second backend costs SQLite.
#[derive(Clone, Copy)]
enum TxInner<'a> {
    Sqlite(&'a Connection),
    Pg(pg::PgTx<'a>),
}

impl<'a> Tx<'a> {
    fn sqlite(conn: &'a Connection) -> Tx<'a> {
        Tx(TxInner::Sqlite(conn))
    }

    fn pg(tx: pg::PgTx<'a>) -> Tx<'a> {
        Tx(TxInner::Pg(tx))
    }

    /// True on PostgreSQL: for the few operations whose SQL or locking must differ
    /// there (plan §2's D and C operations); everything else shares one text.
    pub(super) fn is_postgres(&self) -> bool {
        matches!(self.0, TxInner::Pg(_))
    }

    /// The SQLite connection, for tests that build a schema by hand.
    #[cfg(test)]
    fn sqlite_conn(&self) -> &'a Connection {
        match self.0 {
            TxInner::Sqlite(conn) => conn,
            TxInner::Pg(_) => panic!("not a SQLite transaction"),
        }
    }
}

impl Tx<'_> {
    /// Runs `f` in a savepoint: when it fails, what it wrote is undone and the rest of
    /// the transaction stays (the writer runs every job this way).
    pub fn savepoint<R>(&self, f: impl FnOnce(&Tx<'_>) -> DbResult<R>) -> DbResult<R> {
        self.savepoint_step(f)?
    }

    /// As `savepoint`, keeping apart the job's own failure (inner) from a failure of the
    /// savepoint itself (outer), after which the transaction cannot go on.
    fn savepoint_step<R>(&self, f: impl FnOnce(&Tx<'_>) -> DbResult<R>) -> DbResult<DbResult<R>> {
        let conn = match self.0 {
            TxInner::Sqlite(conn) => conn,
            TxInner::Pg(tx) => return tx.savepoint(|| f(self)),
        };
        run_cached(conn, "SAVEPOINT job")?;
        let result = f(self);
        if result.is_ok() {
            run_cached(conn, "RELEASE job")?;
        } else {
            run_cached(conn, "ROLLBACK TO job")?;
            run_cached(conn, "RELEASE job")?;
        }
        Ok(result)
    }
}

/// Runs a statement without parameters or rows from the connection's statement cache:
/// the writer runs its transaction and savepoint statements thousands of times a
/// second, and `execute_batch` would parse them each time.
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const READERS: u32 = 8;
/// The WAL file is cut back to this size whenever the log restarts from its beginning
/// (after a checkpoint copied all of it), so one burst does not leave it large.
const WAL_SIZE_LIMIT: i64 = 8 * 1024 * 1024;
/// Pages in the WAL after which the writer checkpoints by itself, in its commit: only a
/// backstop, in case the checkpoint thread cannot keep the log short
/// (`checkpointer`), so the WAL stays below about 48 MiB whatever happens.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 12_000;

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A `success` reply to a payment platform must survive power loss.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Opens one read-write connection with kassa's pragmas (WAL, busy timeout, foreign
/// keys, synchronous=FULL), creating the file and its directory if needed.
fn connect(path: &Path) -> DbResult<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(|e| DbError::DataDir {
            path: dir.to_owned(),
            reason: e.to_string(),
        })?;
    }
    create_private(path)?;
    // Not as a URI: a path starting with `file:` is that file, as it is for the lock.
    let conn = Connection::open(target::not_a_uri(path))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    configure(&conn)?;
    Ok(conn)
}

/// Creates a directory (and its missing parents) readable by its owner only: the data
/// directory holds the webhook secret, generated keys and API key hashes. An existing
/// directory is left as the operator made it.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates `path` empty and readable by its owner only, unless it exists: SQLite would
/// create it 0644 (less the umask), and it holds every order and key hash. SQLite gives
/// the `-wal` and `-shm` files the database file's permissions.
fn create_private(path: &Path) -> DbResult<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(DbError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// The writer connection's own settings, on top of `connect`'s. Also used for the
/// benchmark's raw ceiling, so that it measures the same connection.
fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    // Each job runs in a savepoint, whose statement journal would otherwise go to a
    // temp file. Checkpoints (copying the WAL into the database, with an fsync) run on
    // their own thread so requests waiting for a commit rarely wait for one; the
    // writer's own automatic checkpoint stays as a backstop.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    conn.pragma_update(None, "cache_size", -8000)?;
    // Every statement the writer runs stays prepared (rusqlite keeps 16 by default,
    // fewer than the writer's distinct statements).
    conn.set_prepared_statement_cache_capacity(256);
    Ok(())
}

/// Opens the database, applies pending migrations and returns the schema names applied.
pub fn migrate(path: &Path) -> DbResult<Vec<&'static str>> {
    Offline::open(path)?.migrate()
}

/// A read-write connection of its own, outside the writer: for the command-line tools,
/// and for start-up, where waiting on the writer from inside the runtime is not possible.
/// Writes still take SQLite's lock, so it is safe beside a running server. On
/// PostgreSQL it is a pool of its own (`OFFLINE_PG_CONNECTIONS`), each call one
/// transaction, beside any running server as any other client is.
pub struct Offline(OfflineInner);

enum OfflineInner {
    Sqlite {
        conn: Connection,
        /// With `open_as_writer`: keeps the checkpoint thread going, and works with it.
        as_writer: Option<(std::sync::Arc<()>, std::sync::Arc<checkpointer::Wal>)>,
    },
    Postgres(pg::PgDb),
}

/// `Offline`'s connections on PostgreSQL: every call is one transaction, one at a time
/// (`&mut self` for writes, and no call runs inside another's closure), so a command
/// takes one of the server's `max_connections`, as README says.
const OFFLINE_PG_CONNECTIONS: usize = 1;

impl Offline {
    /// Opens the database `target` names, without migrating it: a SQLite file is
    /// created if needed; a PostgreSQL server is connected to (and must be reachable:
    /// `DbError::Unavailable` naming the URL without its password).
    pub fn open_target(target: &DbTarget) -> DbResult<Offline> {
        match target {
            DbTarget::Sqlite(path) => Offline::open(path),
            DbTarget::Postgres(url) => Ok(Offline(OfflineInner::Postgres(pg::PgDb::connect(
                url,
                OFFLINE_PG_CONNECTIONS,
            )?))),
        }
    }

    /// Opens (creating if needed) the database at `path`, without migrating it.
    pub fn open(path: &Path) -> DbResult<Offline> {
        Ok(Offline(OfflineInner::Sqlite {
            conn: connect(path)?,
            as_writer: None,
        }))
    }

    /// Opens an existing database for reading only: never creates the file and never
    /// migrates it (`kassa doctor` looks without touching).
    pub fn open_read_only(path: &Path) -> DbResult<Offline> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let wal = backup::with_tail(path, "-wal");
        // No `-wal` means no connection is open and everything is checkpointed into the
        // file. A plain reader would create `-wal` and `-shm` and, read-only, could not
        // delete them again: left behind by another user (root running a check), they
        // would keep the server out. Read such a file as immutable, which creates nothing.
        let conn = match path.to_str().filter(|_| !wal.exists()) {
            Some(text) => {
                let escaped = text.replace('%', "%25").replace('?', "%3f").replace('#', "%23");
                Connection::open_with_flags(
                    format!("file:{escaped}?immutable=1"),
                    flags | OpenFlags::SQLITE_OPEN_URI,
                )?
            }
            None => Connection::open_with_flags(path, flags)?,
        };
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(Offline(OfflineInner::Sqlite {
            conn,
            as_writer: None,
        }))
    }

    /// As `open`, with the connection set up exactly as the server's writer and the
    /// server's checkpoint thread beside it: to measure what the writer's transactions
    /// cost without the server around them (`writer_transaction`).
    pub fn open_as_writer(path: &Path) -> DbResult<Offline> {
        let conn = connect(path)?;
        configure_writer(&conn)?;
        let alive = std::sync::Arc::new(());
        let wal = std::sync::Arc::new(checkpointer::Wal::default());
        checkpointer::start(
            connect(path)?,
            std::sync::Arc::downgrade(&alive),
            wal.clone(),
            std::sync::Arc::new(()),
        );
        Ok(Offline(OfflineInner::Sqlite {
            conn,
            as_writer: Some((alive, wal)),
        }))
    }

    /// The SQLite connection, or the error naming what only works on a SQLite file.
    fn sqlite_conn(&self) -> DbResult<&Connection> {
        match &self.0 {
            OfflineInner::Sqlite { conn, .. } => Ok(conn),
            OfflineInner::Postgres(pg) => Err(DbError::NotBuilt {
                target: pg.shown().to_owned(),
            }),
        }
    }

    /// Runs `f` as the writer runs a batch of one job, with the same statements:
    /// BEGIN IMMEDIATE, the job in its savepoint, COMMIT. As in the writer, a failed
    /// job loses only its savepoint and the (empty) transaction still commits. SQLite
    /// only (PostgreSQL has no writer).
    pub fn writer_transaction<R>(&mut self, f: impl FnOnce(&Tx<'_>) -> DbResult<R>) -> DbResult<R> {
        let conn = self.sqlite_conn()?;
        run_cached(conn, "BEGIN IMMEDIATE")?;
        let ended = Tx::sqlite(conn)
            .savepoint_step(f)
            .and_then(|result| Ok(run_cached(conn, "COMMIT").map(|()| result)?));
        if let OfflineInner::Sqlite {
            as_writer: Some((_, wal)),
            ..
        } = &self.0
        {
            wal.after_transaction(conn);
        }
        match ended {
            Ok(result) => result,
            Err(e) => {
                let _ = run_cached(conn, "ROLLBACK");
                Err(e)
            }
        }
    }

    /// Applies pending migrations; returns the names applied.
    pub fn migrate(&mut self) -> DbResult<Vec<&'static str>> {
        match &mut self.0 {
            OfflineInner::Sqlite { conn, .. } => migrations::run(conn),
            OfflineInner::Postgres(pg) => pg.migrate(),
        }
    }

    /// The schema version the database is at, read without migrating.
    pub fn schema_version(&self) -> DbResult<i64> {
        match &self.0 {
            OfflineInner::Sqlite { conn, .. } => migrations::current_version(conn),
            OfflineInner::Postgres(pg) => pg.schema_version(),
        }
    }

    /// The PostgreSQL server's version (`SHOW server_version`); None on SQLite.
    pub fn server_version(&self) -> DbResult<Option<String>> {
        match &self.0 {
            OfflineInner::Sqlite { .. } => Ok(None),
            OfflineInner::Postgres(pg) => pg.server_version().map(Some),
        }
    }

    /// Runs `f` in one write transaction, committing only when it succeeds: IMMEDIATE
    /// on SQLite (the write lock from the start), READ COMMITTED on PostgreSQL.
    pub fn immediate<R>(&mut self, f: impl FnOnce(&Tx<'_>) -> DbResult<R>) -> DbResult<R> {
        match &mut self.0 {
            OfflineInner::Sqlite { conn, .. } => {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let r = f(&Tx::sqlite(&tx))?;
                tx.commit()?;
                Ok(r)
            }
            OfflineInner::Postgres(pg) => pg.transaction(false, f),
        }
    }

    /// Runs reads: outside any explicit transaction on SQLite, in one READ ONLY
    /// transaction on PostgreSQL (which can then change nothing).
    pub fn read<R>(&self, f: impl FnOnce(&Tx<'_>) -> DbResult<R>) -> DbResult<R> {
        match &self.0 {
            OfflineInner::Sqlite { conn, .. } => f(&Tx::sqlite(conn)),
            OfflineInner::Postgres(pg) => pg.transaction(true, f),
        }
    }

    /// A pragma's current value on this connection, as text (for diagnostics). SQLite
    /// only.
    pub fn pragma(&self, name: &str) -> DbResult<String> {
        let conn = self.sqlite_conn()?;
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(DbError::Task(format!("{name:?} is not a pragma name")));
        }
        let value: rusqlite::types::Value = conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))?;
        Ok(match value {
            rusqlite::types::Value::Null => String::new(),
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Real(f) => f.to_string(),
            rusqlite::types::Value::Text(t) => t,
            rusqlite::types::Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
        })
    }

    /// `synchronous=NORMAL` on this connection: a commit may be lost on power loss (the
    /// file stays sound). Only for measuring what `FULL` costs; kassa never runs so.
    /// SQLite only.
    pub fn relax_durability(&self) -> DbResult<()> {
        Ok(self.sqlite_conn()?.pragma_update(None, "synchronous", "NORMAL")?)
    }
}

/// The database: on SQLite a pool of readers plus the single writer, on PostgreSQL a
/// pool of connections (`pg`). Every method means the same on both.
#[derive(Clone)]
pub struct Database {
    backend: Backend,
    target: DbTarget,
}

#[derive(Clone)]
enum Backend {
    Sqlite {
        readers: r2d2::Pool<SqliteConnectionManager>,
        writer: Writer,
        threads: DbThreads,
    },
    Postgres(pg::PgDb),
}

/// See `Database::threads`. Holds no handle, so watching never keeps the threads alive.
#[derive(Clone, Debug)]
pub struct DbThreads(std::sync::Weak<()>);

impl DbThreads {
    /// True while the writer or the checkpoint thread still runs (on PostgreSQL: while
    /// the pool and its runtime do).
    pub fn running(&self) -> bool {
        self.0.strong_count() > 0
    }
}

impl Database {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> DbResult<Database> {
        Database::open_target(&DbTarget::Sqlite(path.to_owned()))
    }

    /// Opens (creating if needed) and migrates the database `target` names.
    pub fn open_target(target: &DbTarget) -> DbResult<Database> {
        Database::open_counted(target, WriterMetrics::default())
    }

    /// As `open_target`, the writer counting its batches and queue waits into `metrics`
    /// (SQLite; PostgreSQL has no writer). A PostgreSQL server that cannot be reached is
    /// `DbError::Unavailable`.
    pub fn open_counted(target: &DbTarget, metrics: WriterMetrics) -> DbResult<Database> {
        Database::open_with(target, metrics, pg::POOL_SIZE)
    }

    /// As `open_counted`, with `pool_size` connections on PostgreSQL (`[database]
    /// pool_size`; SQLite has its one writer and ignores it).
    pub fn open_with(target: &DbTarget, metrics: WriterMetrics, pool_size: usize) -> DbResult<Database> {
        let path = match target {
            DbTarget::Sqlite(path) => path,
            DbTarget::Postgres(url) => {
                return Ok(Database {
                    backend: Backend::Postgres(pg::PgDb::open(url, pool_size)?),
                    target: target.clone(),
                })
            }
        };
        let mut conn = connect(path)?;
        migrations::run(&mut conn)?;
        configure_writer(&conn)?;
        let open = std::sync::Arc::new(());
        let threads = DbThreads(std::sync::Arc::downgrade(&open));
        let wal = std::sync::Arc::new(checkpointer::Wal::default());
        let writer = Writer::start(conn, wal.clone(), open.clone(), metrics)?;
        checkpointer::start(connect(path)?, writer.liveness(), wal, open);
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
            backend: Backend::Sqlite {
                readers,
                writer,
                threads,
            },
            target: target.clone(),
        })
    }

    /// A PostgreSQL database with a pool of `size` connections, each waited for at most
    /// `wait`: for tests of an exhausted pool.
    #[cfg(test)]
    fn open_pg_sized(target: &DbTarget, size: usize, wait: Duration) -> DbResult<Database> {
        let DbTarget::Postgres(url) = target else {
            panic!("not a PostgreSQL target");
        };
        Ok(Database {
            backend: Backend::Postgres(pg::PgDb::open_sized(url, size, wait)?),
            target: target.clone(),
        })
    }

    /// What was opened; its `Display` hides passwords.
    pub fn target(&self) -> &DbTarget {
        &self.target
    }

    /// The SQLite file, when the database is one (files, backups, `-wal`).
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.target.sqlite_path()
    }

    /// Watches this database's writer and checkpoint threads, which end (closing their
    /// read-write connections) once the last handle is dropped. Whoever opens the file
    /// again in the same process (a restart) can make sure the old writer is gone first.
    /// On PostgreSQL it watches the pool and its runtime, which are let go when the last
    /// handle is dropped; their connections then close in the background, unwaited
    /// (PostgreSQL has no file lock for a restart to wait for).
    pub fn threads(&self) -> DbThreads {
        match &self.backend {
            Backend::Sqlite { threads, .. } => threads.clone(),
            Backend::Postgres(pg) => DbThreads(pg.alive()),
        }
    }

    /// Resolves when the writer thread has ended while this handle still exists: no
    /// write can succeed any more, so the server stops rather than answer with errors.
    /// Never on PostgreSQL: there is no writer to lose, and a server that went away is
    /// a per-request `Unavailable` (and `/healthz` failing) until it is back, rather
    /// than a reason to stop.
    pub fn writer_stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let stopped = match &self.backend {
            Backend::Sqlite { writer, .. } => Some(writer.stopped()),
            Backend::Postgres(_) => None,
        };
        async move {
            match stopped {
                Some(stopped) => stopped.await,
                None => std::future::pending().await,
            }
        }
    }

    /// Runs a read off the async workers: on a pooled read-only connection (SQLite), or
    /// in a READ ONLY transaction (PostgreSQL).
    pub async fn read<R, F>(&self, f: F) -> DbResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static,
    {
        // Only the part the read needs, as before there was a second backend.
        enum Reader {
            Sqlite(r2d2::Pool<SqliteConnectionManager>),
            Postgres(pg::PgDb),
        }
        let reader = match &self.backend {
            Backend::Sqlite { readers, .. } => Reader::Sqlite(readers.clone()),
            Backend::Postgres(pg) => Reader::Postgres(pg.clone()),
        };
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            match reader {
                Reader::Sqlite(pool) => {
                    let conn = pool.get()?;
                    f(&Tx::sqlite(&conn))
                }
                Reader::Postgres(pg) => pg.transaction(true, f),
            }
        })
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// As `read`, on the calling thread (never an async task's).
    pub fn read_blocking<R>(&self, f: impl FnOnce(&Tx<'_>) -> DbResult<R>) -> DbResult<R> {
        match &self.backend {
            Backend::Sqlite { readers, .. } => {
                let conn = readers.get()?;
                f(&Tx::sqlite(&conn))
            }
            Backend::Postgres(pg) => pg.transaction(true, f),
        }
    }

    /// Runs `f` in a write transaction and resolves once it has committed: queued for the
    /// writer (SQLite), or in a READ COMMITTED transaction of its own on a blocking thread
    /// (PostgreSQL).
    pub async fn write<R, F>(&self, f: F) -> DbResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite { writer, .. } => writer.write(f).await,
            Backend::Postgres(pg) => {
                let pg = pg.clone();
                let span = tracing::Span::current();
                tokio::task::spawn_blocking(move || {
                    let _entered = span.enter();
                    pg.transaction(false, f)
                })
                .await
                .map_err(|e| DbError::Task(e.to_string()))?
            }
        }
    }

    /// As `write`, on the calling thread (never an async task's).
    pub fn write_blocking<R, F>(&self, f: F) -> DbResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite { writer, .. } => writer.write_blocking(f),
            Backend::Postgres(pg) => pg.transaction(false, f),
        }
    }

    /// Order changes committed by any instance on this database (this one included),
    /// as they commit: PostgreSQL's LISTEN, on one connection of its own, started by the
    /// first call. `RemoteChange::Resync` after the listener reconnected; a receiver that
    /// falls behind is told it lagged, which means the same. None on SQLite, where this
    /// process is the only one.
    pub fn remote_changes(&self) -> Option<tokio::sync::broadcast::Receiver<RemoteChange>> {
        match &self.backend {
            Backend::Sqlite { .. } => None,
            Backend::Postgres(pg) => Some(pg.remote_changes()),
        }
    }

    /// The PostgreSQL listener's session pid while it listens.
    #[cfg(test)]
    fn listener_pid(&self) -> Option<tokio::sync::watch::Receiver<Option<i32>>> {
        match &self.backend {
            Backend::Sqlite { .. } => None,
            Backend::Postgres(pg) => Some(pg.listener_pid()),
        }
    }

    /// Waits up to `within` until no transaction of this process is under way, and says
    /// whether that came. A transaction keeps running on the pool after the task that
    /// started it was dropped (a job stopped at shutdown), and could commit a claim after
    /// shutdown gave this instance's claims back. SQLite's writer runs writes in the order
    /// they were queued, so a write queued after such a one already runs after it.
    pub async fn settle(&self, within: std::time::Duration) -> bool {
        match &self.backend {
            Backend::Sqlite { .. } => true,
            Backend::Postgres(pg) => {
                let deadline = tokio::time::Instant::now() + within;
                while !pg.idle() {
                    if tokio::time::Instant::now() >= deadline {
                        return false;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                true
            }
        }
    }

    /// `SELECT 1`: what `/healthz` checks. On PostgreSQL bounded to 2 s, the wait for a
    /// connection included.
    pub async fn ping(&self) -> DbResult<()> {
        match &self.backend {
            Backend::Sqlite { .. } => self.read(|tx| tx.one("SELECT 1", &[], |_| Ok(()))).await,
            Backend::Postgres(pg) => pg.ping().await,
        }
    }
}

#[cfg(test)]
mod pg_pools {
    #[test]
    fn offline_statements_on_postgresql_have_no_time_bound_and_the_servers_do() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let timeout = |tx: &Tx<'_>| {
            tx.one("SELECT current_setting('statement_timeout')", args![], |r| {
                r.get_string(0)
            })
        };
        let offline = Offline::open_target(&schema.target()).unwrap();
        assert_eq!(offline.read(timeout).unwrap(), "0");
        drop(offline);
        let db = Database::open_target(&schema.target()).unwrap();
        assert_eq!(db.read_blocking(timeout).unwrap(), "30s");
        drop(db);
    }

    /// A write whose task was dropped (a job stopped at shutdown) still runs to its
    /// commit; `settle` waits for it, so that a write made after (shutdown giving back
    /// this instance's claims) comes after its commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn settle_waits_for_a_transaction_whose_task_was_dropped_and_no_longer() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let db = Database::open_target(&schema.target()).unwrap();
        db.write(|tx| tx.exec("CREATE TABLE settled (n BIGINT)", args![]))
            .await
            .unwrap();
        assert!(db.settle(std::time::Duration::ZERO).await, "idle at first");

        let (started, starting) = tokio::sync::oneshot::channel();
        let writer = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(move |tx| {
                    let _ = started.send(());
                    tx.one("SELECT pg_sleep(0.5)", args![], |_| Ok(()))?;
                    tx.exec("INSERT INTO settled (n) VALUES (1)", args![])
                })
                .await
            }
        });
        starting.await.unwrap();
        writer.abort();
        assert!(
            !db.settle(std::time::Duration::from_millis(50)).await,
            "still running"
        );
        assert!(db.settle(std::time::Duration::from_secs(10)).await);
        let rows = db
            .read(|tx| tx.one("SELECT COUNT(*) FROM settled", args![], |r| r.get_i64(0)))
            .await
            .unwrap();
        assert_eq!(rows, 1, "settled means committed");
        drop(db);
    }

    use super::pg::testing::{HeldConnection, TestSchema, SKIPPED};
    use super::sql::args;
    use super::*;

    /// `size - 1` transactions holding their connections, then one more beside them, and
    /// then one more than the pool has: the last waits `POOL_WAIT` and is told no
    /// connection was free.
    #[test]
    fn a_postgresql_database_opened_with_a_pool_size_keeps_that_many_connections() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let db = Database::open_with(&schema.target(), WriterMetrics::default(), 2).unwrap();
        let holder = HeldConnection::take(&db);
        let beside = db.read_blocking(|tx| tx.one("SELECT 2", args![], |r| r.get_i64(0)));
        let second = HeldConnection::take(&db);
        let third = db.read_blocking(|tx| tx.one("SELECT 3", args![], |r| r.get_i64(0)));
        holder.release();
        second.release();

        assert_eq!(beside.unwrap(), 2);
        match third {
            Err(DbError::Unavailable(why)) => assert!(why.contains("no connection"), "{why}"),
            other => panic!("a third connection was found: {other:?}"),
        }
        drop(db);
    }
}
