//! The PostgreSQL backend (issue 17): the same operations as SQLite behind `Tx`, run on
//! a bounded pool by tokio-postgres. Only this directory and the SQLite driver files
//! name a driver.
//!
//! The operations are synchronous closures over a `Tx` (as on SQLite), so each
//! transaction runs on a blocking thread of the caller's runtime and waits for every
//! statement (`wait`) while a small runtime of this backend's own ("kassa-pg") drives
//! the pool's connections. There is no writer thread: PostgreSQL takes
//! concurrent writers itself and batches their commits' WAL flushes.

mod listen;
pub(super) mod migrations;
#[cfg(test)]
pub(in crate::db) mod testing;
#[cfg(test)]
mod tests;
mod translate;
mod value;

use std::cell::RefCell;
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType};
use futures_util::StreamExt;
use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, NoTls};

pub use listen::RemoteChange;
pub(in crate::db) use tokio_postgres::Error as PgError;
pub(in crate::db) use tokio_postgres::Row as PgRow;
pub(in crate::db) use value::PgRowRead;

use super::sql::Arg;
use super::target::PgUrl;
use super::{DbError, DbResult, Tx};

/// Connections per instance unless `[database] pool_size` says otherwise. A
/// transaction holds one for its whole length (and a blocking thread), so this bounds
/// the server's concurrent transactions.
pub(in crate::db) const POOL_SIZE: usize = 16;
/// How long a transaction waits for a free connection before the request is answered
/// "database unavailable" (a payment notification `failure`, which the platform retries).
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Opening one connection, and checking a returned one, is bounded too: a server that
/// stopped answering must not hold requests.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `/healthz`'s whole `SELECT 1`, connection wait included.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Every connection's session settings, before the URL's own `options` (which may
/// override them): a statement or lock wait that runs away ends as an error instead of
/// holding a connection and a thread, and a session left idle inside a transaction (a
/// stuck instance) gives its locks back. They travel in the startup packet's
/// `options`, which PgBouncer refuses (or drops, with `ignore_startup_parameters`):
/// behind such a proxy they must be set on the role (`ALTER ROLE … SET`).
const SESSION_OPTIONS: &str =
    "-c statement_timeout=30s -c lock_timeout=10s -c idle_in_transaction_session_timeout=60s";
/// `SESSION_OPTIONS` for `Offline` (the commands, and start-up's own connection): no
/// statement timeout, since `kassa export orders` streams every order in one statement
/// for as long as its reader takes; the lock and idle bounds stay.
const COMMAND_OPTIONS: &str =
    "-c statement_timeout=0 -c lock_timeout=10s -c idle_in_transaction_session_timeout=60s";
/// The client's own bound on a connection whose server stopped answering (a network
/// partition), where `statement_timeout` cannot help: the server never hears of it.
/// The kernel probes an idle or waiting connection after `KEEPALIVE_IDLE`, every
/// `KEEPALIVE_INTERVAL`, and closes it once the server has acknowledged nothing (probe
/// or data) for `TCP_USER_TIMEOUT`; every statement waiting on it then ends as
/// `Unavailable` and the pool drops the closed connection. Chosen over a timeout around
/// each wait because a healthy server acknowledges the probes however long a statement
/// runs (a migration has no statement timeout, and an operator may raise it), and
/// because the connection is then closed, not left with an answer still to come.
/// Only for TCP (a Unix socket cannot be partitioned); values in the URL win.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);
/// tokio-postgres' `keepalives_idle` when the URL sets none (it keeps no "unset").
const DRIVER_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// A PostgreSQL database: the pool, and the runtime its connections run on. Cloning
/// shares both; the runtime stops when the last clone goes.
#[derive(Clone)]
pub(in crate::db) struct PgDb(Arc<Inner>);

struct Inner {
    /// Only taken in `drop`.
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle,
    pool: Pool,
    translations: translate::Translations,
    /// The URL as it may be shown (no password), for messages.
    shown: String,
    /// How long a transaction waits for a connection.
    wait: Duration,
    /// Watched by `DbThreads`: gone when the last handle is.
    alive: Arc<()>,
    /// Other instances' order changes (`Database::remote_changes`).
    listen: listen::Listen,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle may go inside another runtime's task (a test, the server's
        // shutdown), where a blocking shutdown is not allowed; connections close as
        // their tasks are dropped.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgDb {
    /// Connects, migrates, and keeps a pool of `size` connections (`[database]
    /// pool_size`), each waited for at most `POOL_WAIT`. A server that cannot be reached
    /// is `DbError::Unavailable` naming the URL without its password.
    pub(in crate::db) fn open(url: &PgUrl, size: usize) -> DbResult<PgDb> {
        PgDb::open_sized(url, size, POOL_WAIT)
    }

    /// As `connect_sized`, with `POOL_WAIT`.
    pub(in crate::db) fn connect(url: &PgUrl, size: usize) -> DbResult<PgDb> {
        PgDb::connect_sized(url, size, POOL_WAIT)
    }

    pub(in crate::db) fn open_sized(url: &PgUrl, size: usize, wait: Duration) -> DbResult<PgDb> {
        let db = PgDb::pool(client_config(url)?, url, size, wait)?;
        db.migrate()?;
        Ok(db)
    }

    /// A pool of `size` connections that has reached the server once, without
    /// migrating: for the command-line tools (`Offline`), which look before they touch
    /// (`kassa doctor` never migrates). A server that cannot be reached is
    /// `DbError::Unavailable` here, not at the first statement. Its statements have no
    /// time bound (`COMMAND_OPTIONS`).
    pub(in crate::db) fn connect_sized(url: &PgUrl, size: usize, patience: Duration) -> DbResult<PgDb> {
        let db = PgDb::pool(client_config_with(url, COMMAND_OPTIONS)?, url, size, patience)?;
        let inner = &*db.0;
        drop(wait(&inner.handle, inner.pool.get()).map_err(|e| inner.pool_error(e))?);
        Ok(db)
    }

    /// The pool and its runtime; no connection is opened yet.
    fn pool(config: tokio_postgres::Config, url: &PgUrl, size: usize, wait: Duration) -> DbResult<PgDb> {
        let shown = url.to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kassa-pg")
            .enable_all()
            .build()
            .map_err(|e| DbError::Task(format!("cannot start the PostgreSQL runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let listen = listen::Listen::new(config.clone());
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| DbError::Task(format!("cannot build the PostgreSQL pool: {e}")))?;
        let db = PgDb(Arc::new(Inner {
            runtime: Some(runtime),
            handle,
            pool,
            translations: translate::Translations::default(),
            shown,
            wait,
            alive: Arc::new(()),
            listen,
        }));
        Ok(db)
    }

    /// Applies pending migrations; returns the names applied.
    pub(in crate::db) fn migrate(&self) -> DbResult<Vec<&'static str>> {
        let inner = &*self.0;
        wait(&inner.handle, async {
            let mut client = inner.pool.get().await.map_err(|e| inner.pool_error(e))?;
            // The pool's wrapper derefs to the plain client the migrations take.
            let client: &mut tokio_postgres::Client = &mut client;
            migrations::run(client).await
        })
    }

    /// The schema version the database is at (0 before the first migration), read
    /// without migrating.
    pub(in crate::db) fn schema_version(&self) -> DbResult<i64> {
        let inner = &*self.0;
        wait(&inner.handle, async {
            let client = inner.pool.get().await.map_err(|e| inner.pool_error(e))?;
            let client: &tokio_postgres::Client = &client;
            migrations::current_version(client).await
        })
    }

    /// The server's `server_version` setting (`15.4 (Debian 15.4-1)`), for diagnostics.
    pub(in crate::db) fn server_version(&self) -> DbResult<String> {
        let inner = &*self.0;
        wait(&inner.handle, async {
            let client = inner.pool.get().await.map_err(|e| inner.pool_error(e))?;
            let row = client
                .query_one("SELECT current_setting('server_version')", &[])
                .await
                .map_err(error)?;
            row.try_get::<_, String>(0).map_err(error)
        })
    }

    /// The URL as it may be shown (no password).
    /// Whether every connection is back in the pool and no transaction waits for one:
    /// none of this process's transactions is under way.
    pub(in crate::db) fn idle(&self) -> bool {
        let status = self.0.pool.status();
        status.available == status.size && status.waiting == 0
    }

    pub(in crate::db) fn shown(&self) -> &str {
        &self.0.shown
    }

    /// Runs `f` in one READ COMMITTED transaction on a pooled connection (read only
    /// when `read_only`), committing when it succeeds and rolling back when it fails.
    /// Blocks the calling thread (see `wait`): from an async task, it blocks that task's
    /// worker as SQLite's `*_blocking` do.
    pub(in crate::db) fn transaction<R>(
        &self,
        read_only: bool,
        f: impl FnOnce(&Tx<'_>) -> DbResult<R>,
    ) -> DbResult<R> {
        let inner = &*self.0;
        let rt = &inner.handle;
        let mut client = wait(rt, inner.pool.get()).map_err(|e| inner.pool_error(e))?;
        let tx = wait(
            rt,
            client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .read_only(read_only)
                .start(),
        )
        .map_err(error)?;
        let failed = RefCell::new(None);
        let result = f(&Tx::pg(PgTx {
            rt,
            tx: &tx,
            translations: &inner.translations,
            failed: &failed,
        }));
        match result {
            // A statement that failed outside a savepoint rolled back has aborted the
            // transaction, and PostgreSQL answers COMMIT with a silent rollback: a job
            // that went on after such an error must not be told its writes are kept.
            Ok(_) if failed.borrow().is_some() => {
                let _ = wait(rt, tx.rollback());
                Err(DbError::Commit(format!(
                    "a statement failed inside the transaction, which was rolled back: {}",
                    failed.take().unwrap_or_default()
                )))
            }
            Ok(r) => {
                wait(rt, tx.commit()).map_err(error)?;
                Ok(r)
            }
            Err(e) => {
                let _ = wait(rt, tx.rollback());
                Err(e)
            }
        }
    }

    /// `SELECT 1` on a pooled connection, the wait for one included, within
    /// `PING_TIMEOUT`.
    pub(in crate::db) async fn ping(&self) -> DbResult<()> {
        // The task holds the pool, not `Inner`: the last handle must never be dropped on
        // the runtime it stops.
        let pool = self.0.pool.clone();
        let check = self
            .0
            .handle
            .spawn(tokio::time::timeout(PING_TIMEOUT, async move {
                let client = pool.get().await?;
                Ok::<_, PoolError>(client.simple_query("SELECT 1").await)
            }));
        match check.await.map_err(|e| DbError::Task(e.to_string()))? {
            Ok(Ok(answer)) => answer.map(drop).map_err(error),
            Ok(Err(e)) => Err(self.0.pool_error(e)),
            Err(_) => Err(DbError::Unavailable(format!(
                "{} did not answer within {PING_TIMEOUT:?}",
                self.0.shown
            ))),
        }
    }

    /// Alive while the pool and its runtime are (while any handle is).
    pub(in crate::db) fn alive(&self) -> std::sync::Weak<()> {
        Arc::downgrade(&self.0.alive)
    }
}

impl Inner {
    fn pool_error(&self, e: PoolError) -> DbError {
        match e {
            PoolError::Timeout(TimeoutType::Wait) => DbError::Unavailable(format!(
                "no connection to {} was free within {:?}",
                self.shown, self.wait
            )),
            PoolError::Timeout(_) => DbError::Unavailable(format!(
                "cannot connect to {}: no answer within {CONNECT_TIMEOUT:?}",
                self.shown
            )),
            PoolError::Backend(e) => {
                DbError::Unavailable(format!("cannot connect to {}: {}", self.shown, describe(&e)))
            }
            other => DbError::Unavailable(format!("{}: {other}", self.shown)),
        }
    }
}

/// One transaction on one pooled connection, as `Tx` holds it.
#[derive(Clone, Copy)]
pub(in crate::db) struct PgTx<'a> {
    rt: &'a Handle,
    tx: &'a deadpool_postgres::Transaction<'a>,
    translations: &'a translate::Translations,
    /// The first statement that failed, in words, for the error the commit that then
    /// cannot happen reports; a savepoint rolled back clears what failed inside it.
    /// Client-side failures (an argument that does not fit its parameter) count too,
    /// although the server's transaction goes on after them: the job saw an error.
    failed: &'a RefCell<Option<String>>,
}

impl PgTx<'_> {
    fn statement(&self, sql: &str) -> DbResult<tokio_postgres::Statement> {
        let text = self.translations.get(sql);
        self.check(wait(self.rt, self.tx.prepare_cached(&text)))
    }

    /// Notes a failure (see `failed`) and maps it.
    fn check<T>(&self, r: Result<T, tokio_postgres::Error>) -> DbResult<T> {
        r.map_err(|e| {
            let mut failed = self.failed.borrow_mut();
            if failed.is_none() {
                *failed = Some(describe(&e));
            }
            error(e)
        })
    }

    /// A statement with no parameters and no rows, as it is (no translation).
    pub(in crate::db) fn batch(&self, sql: &str) -> DbResult<()> {
        self.check(wait(self.rt, self.tx.batch_execute(sql)))
    }

    /// Runs `f` in a savepoint, as `Tx::savepoint_step` does on SQLite.
    pub(in crate::db) fn savepoint<R>(&self, f: impl FnOnce() -> DbResult<R>) -> DbResult<DbResult<R>> {
        self.batch("SAVEPOINT job")?;
        let result = match f() {
            // As for a whole transaction (`PgDb::transaction`): its writes are not kept.
            Ok(_) if self.failed.borrow().is_some() => Err(DbError::Abandoned(format!(
                "a statement failed inside the savepoint, which was rolled back: {}",
                self.failed.borrow().as_deref().unwrap_or_default()
            ))),
            result => result,
        };
        if result.is_ok() {
            self.batch("RELEASE job")?;
        } else {
            self.batch("ROLLBACK TO job")?;
            self.batch("RELEASE job")?;
            // What failed inside is undone with the savepoint (SAVEPOINT itself would
            // have failed in a transaction already aborted).
            self.failed.replace(None);
        }
        Ok(result)
    }

    pub(in crate::db) fn exec(&self, sql: &str, args: &[Arg<'_>]) -> DbResult<usize> {
        let stmt = self.statement(sql)?;
        let n = self.check(wait(self.rt, self.tx.execute_raw(&stmt, args.iter())))?;
        usize::try_from(n).map_err(|_| DbError::Corrupt(format!("{n} rows changed")))
    }

    /// Hands each row to `read` as the server sends it, until the rows run out or
    /// `read` breaks (the rest of the answer is then discarded by the connection).
    pub(in crate::db) fn each(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        mut read: impl FnMut(&PgRow) -> DbResult<ControlFlow<()>>,
    ) -> DbResult<()> {
        let stmt = self.statement(sql)?;
        let rows = self.check(wait(self.rt, self.tx.query_raw(&stmt, args.iter())))?;
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = wait(self.rt, rows.next()) {
            let row = self.check(row)?;
            if read(&row)?.is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// The connection settings: the URL's, with kassa's session options before its own
/// `options`, and kassa's defaults for what it leaves unset (see `SESSION_OPTIONS`,
/// `KEEPALIVE_IDLE`).
fn client_config(url: &PgUrl) -> DbResult<tokio_postgres::Config> {
    client_config_with(url, SESSION_OPTIONS)
}

/// As `client_config`, with `session` as kassa's session options.
fn client_config_with(url: &PgUrl, session: &str) -> DbResult<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url.expose().parse().map_err(|e| {
        DbError::Unavailable(format!(
            "{url} is not a PostgreSQL URL kassa can use: {}",
            describe(&e)
        ))
    })?;
    let options = match config.get_options() {
        Some(own) => format!("{session} {own}"),
        None => session.to_owned(),
    };
    config.options(options);
    if config.get_application_name().is_none() {
        config.application_name("kassa");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_keepalives_idle() == DRIVER_KEEPALIVE_IDLE {
        config.keepalives_idle(KEEPALIVE_IDLE);
    }
    if config.get_keepalives_interval().is_none() {
        config.keepalives_interval(KEEPALIVE_INTERVAL);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    Ok(config)
}

/// Waits on this thread for `future`, whose timers, connections and tasks belong to
/// the backend's runtime (`handle`). Unlike `Handle::block_on`, which panics on a
/// thread that is running a runtime, this works on any thread, as SQLite's blocking
/// calls do: what it waits for is driven by the backend's own threads (the connection
/// tasks), never by the thread it blocks.
fn wait<F: Future>(handle: &Handle, future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let _entered = handle.enter();
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        // A wake-up before this park makes it return at once; a spurious one polls again.
        std::thread::park();
    }
}

/// A driver error as kassa's: lock and serialization conflicts are `Busy` (worth a
/// retry), a unique key taken is `Conflict`, a lost connection `Unavailable`, and any
/// other refusal by the server `Refused`. None keeps the server's error itself: its
/// DETAIL may hold the row's values (see `describe`).
pub(in crate::db) fn error(e: tokio_postgres::Error) -> DbError {
    let code = e.code();
    if code == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        || code == Some(&SqlState::T_R_DEADLOCK_DETECTED)
        || code == Some(&SqlState::LOCK_NOT_AVAILABLE)
    {
        return DbError::Busy(describe(&e));
    }
    if code == Some(&SqlState::UNIQUE_VIOLATION) {
        return DbError::Conflict(describe(&e));
    }
    if e.is_closed() || code.is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P")) {
        return DbError::Unavailable(describe(&e));
    }
    if e.as_db_error().is_some() {
        return DbError::Refused(describe(&e));
    }
    DbError::Postgres(e)
}

/// What went wrong, in words: tokio-postgres' own `Display` of a server error is only
/// "db error". The server's message, its SQLSTATE and the constraint it names, never
/// a value: these messages are logged, and a DETAIL can hold the row (a NOT NULL or
/// CHECK violation's is "Failing row contains (…)", a private key or TOTP secret
/// included) or a key's value (a unique violation's "Key (token_hash)=(…) already
/// exists"). Of a DETAIL only a unique key's column names are kept.
pub(in crate::db) fn describe(e: &tokio_postgres::Error) -> String {
    use std::error::Error;
    match (e.as_db_error(), e.source()) {
        (Some(db), _) => {
            let mut text = format!("{} ({})", db.message(), db.code().code());
            if let Some(constraint) = db.constraint().filter(|c| !db.message().contains(c)) {
                text.push_str(&format!(", constraint {constraint}"));
            }
            let key = db
                .detail()
                .filter(|_| db.code() == &SqlState::UNIQUE_VIOLATION)
                .and_then(|detail| detail.split_once(")=("))
                .and_then(|(columns, _)| columns.strip_prefix("Key ("));
            if let Some(columns) = key {
                text.push_str(&format!(": key ({columns}) is taken"));
            }
            text
        }
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}
