//! A PostgreSQL schema of one test's own, for tests that run kassa (the binary or the
//! App) on PostgreSQL. They run when `KASSA_TEST_PG_URL` names a server; without it
//! `PgSchema::new()` is None and the test prints `SKIPPED` and passes.

use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the server PostgreSQL tests use.
pub const URL_VAR: &str = "KASSA_TEST_PG_URL";

/// What a PostgreSQL test prints when it does not run.
pub const SKIPPED: &str = "skipped: KASSA_TEST_PG_URL not set";

/// A schema `kassa_it_<pid>_<n>` made for one test and dropped (with everything in it)
/// when this is dropped; `url()` makes it the search path of every connection, so tests
/// running at once on one server never see each other's tables.
pub struct PgSchema {
    base: String,
    schema: String,
}

impl PgSchema {
    /// A fresh, empty schema, or None when `KASSA_TEST_PG_URL` is not set. Panics when
    /// the variable is set and the server refuses: whoever set it wants the tests to run.
    pub fn new() -> Option<PgSchema> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var(URL_VAR).ok()?.trim().to_owned();
        if base.is_empty() {
            return None;
        }
        // `kassa_it_`, not the lib tests' `kassa_t_`: the two test binaries can share a
        // pid over time, never a schema name.
        let schema = format!(
            "kassa_it_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // A schema of this name can only be left by a run whose process had our pid and
        // died before dropping it: it is nobody's any more.
        if let Err(e) = batch(
            &base,
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
        ) {
            panic!("{URL_VAR} is set, but schema {schema} could not be created: {e}");
        }
        Some(PgSchema { base, schema })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The server's URL with this schema as the search path of every connection
    /// (`options=-csearch_path=<schema>`). tokio-postgres keeps the last `options` of a
    /// URL, so `KASSA_TEST_PG_URL` must not carry its own.
    pub fn url(&self) -> String {
        let separator = match self.base.find('?') {
            None => "?",
            Some(_) if self.base.ends_with(['?', '&']) => "",
            Some(_) => "&",
        };
        format!("{}{separator}options=-csearch_path%3D{}", self.base, self.schema)
    }

    /// Runs `sql` (one or more statements, no results) in this schema: to look at or
    /// change rows as another client would.
    pub fn execute(&self, sql: &str) -> Result<(), String> {
        batch(&self.url(), sql.to_owned())
    }

    /// The rows of one query in this schema, each column as text (NULL as None).
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let url = self.url();
        let text = sql.to_owned();
        on_own_runtime(move || async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let connection = tokio::spawn(connection);
            let rows = client.simple_query(&text).await.map_err(|e| error_text(&e));
            drop(client);
            let _ = connection.await;
            Ok(rows?
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                    }
                    _ => None,
                })
                .collect())
        })
        .unwrap_or_else(|e| panic!("{sql:?} failed: {e}"))
    }

    /// The single value of a query returning one row and one column.
    pub fn value(&self, sql: &str) -> Option<String> {
        let rows = self.query(sql);
        assert_eq!(rows.len(), 1, "{sql} returned {} rows", rows.len());
        rows[0][0].clone()
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Sessions still holding locks in the schema (a test that failed mid-transaction,
        // a server not yet stopped) would make the DROP wait forever: end them first.
        // Never panic here (a failing test is already unwinding); a schema left behind
        // goes with the next run that gets this pid, or with the throw-away cluster.
        let schema = &self.schema;
        if let Err(e) = batch(
            &self.base,
            format!(
                "SET lock_timeout = '10s'; \
                 SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                 WHERE l.pid <> pg_backend_pid() AND (\
                     (l.locktype = 'relation' AND l.relation IN \
                         (SELECT oid FROM pg_class WHERE relnamespace = to_regnamespace('{schema}'))) \
                     OR (l.locktype = 'object' AND l.classid = 'pg_namespace'::regclass \
                         AND l.objid = to_regnamespace('{schema}'))); \
                 DROP SCHEMA IF EXISTS {schema} CASCADE"
            ),
        ) {
            eprintln!("could not drop test schema {}: {e}", self.schema);
        }
    }
}

fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    }
}

/// Runs a future on a thread and runtime of its own, so that it works the same from a
/// plain `#[test]`, from inside a tokio test (whose runtime it must not block on), and
/// in `drop`.
fn on_own_runtime<T, F, Fut>(f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(f())
    })
    .join()
    .map_err(|_| "the thread running it panicked".to_owned())?
}

/// Runs `sql` on a connection of its own.
fn batch(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    on_own_runtime(move || async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let connection = tokio::spawn(connection);
        let done = client.batch_execute(&sql).await.map_err(|e| error_text(&e));
        drop(client);
        let _ = connection.await;
        done
    })
}

#[test]
fn each_schema_is_the_search_path_of_its_url_and_is_gone_after_drop() {
    let (Some(a), Some(b)) = (PgSchema::new(), PgSchema::new()) else {
        println!("{SKIPPED}");
        return;
    };
    assert_ne!(a.schema(), b.schema());
    assert_eq!(a.value("SELECT current_schema()").as_deref(), Some(a.schema()));
    a.execute("CREATE TABLE t (id BIGINT); INSERT INTO t VALUES (7)")
        .unwrap();
    assert_eq!(a.value("SELECT id FROM t").as_deref(), Some("7"));
    // b does not see a's table.
    assert!(b.execute("SELECT id FROM t").is_err());

    let name = a.schema().to_owned();
    drop(a);
    assert_eq!(
        b.value(&format!(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = '{name}'"
        ))
        .as_deref(),
        Some("0"),
        "{name} outlived its PgSchema"
    );
}
