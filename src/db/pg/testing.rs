//! Tests on PostgreSQL: a schema of their own per test, and `both_backends!` to write a
//! test once and run it on SQLite and on PostgreSQL.
//!
//! PostgreSQL tests run when `KASSA_TEST_PG_URL` names a server (`.ci/run` starts a
//! throw-away cluster and sets it); without it they print
//! `skipped: KASSA_TEST_PG_URL not set` and pass, so `cargo test` needs no server.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::db::DbTarget;

/// The variable naming the server PostgreSQL tests use.
pub(in crate::db) const URL_VAR: &str = "KASSA_TEST_PG_URL";

/// What a PostgreSQL test prints when it does not run.
pub(in crate::db) const SKIPPED: &str = "skipped: KASSA_TEST_PG_URL not set";

/// A schema `kassa_t_<pid>_<n>` made for one test and dropped (with everything in it)
/// when this is dropped. Tests running at once on one server never see each other's
/// tables, and `url()` puts the schema first on the search path of every connection.
pub(in crate::db) struct TestSchema {
    base: String,
    schema: String,
}

impl TestSchema {
    /// A fresh schema, or None when `KASSA_TEST_PG_URL` is not set (the caller prints
    /// `SKIPPED` and returns). Panics when the variable is set and the server refuses:
    /// whoever set it wants the tests to run.
    pub(in crate::db) fn new() -> Option<TestSchema> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::var(URL_VAR).ok()?.trim().to_owned();
        if base.is_empty() {
            return None;
        }
        let schema = format!(
            "kassa_t_{}_{}",
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
        Some(TestSchema { base, schema })
    }

    pub(in crate::db) fn schema(&self) -> &str {
        &self.schema
    }

    /// The server's URL with this schema as the search path of every connection
    /// (`options=-csearch_path=<schema>`, which tokio-postgres passes to the server).
    /// tokio-postgres keeps the last `options` of a URL, so `KASSA_TEST_PG_URL` must
    /// not carry its own: they would be replaced by this one.
    pub(in crate::db) fn url(&self) -> String {
        let separator = match self.base.find('?') {
            None => "?",
            Some(_) if self.base.ends_with(['?', '&']) => "",
            Some(_) => "&",
        };
        format!("{}{separator}options=-csearch_path%3D{}", self.base, self.schema)
    }

    pub(in crate::db) fn target(&self) -> DbTarget {
        match DbTarget::parse(&self.url()) {
            Ok(target @ DbTarget::Postgres(_)) => target,
            _ => panic!("{URL_VAR} is not a postgres:// URL"),
        }
    }

    /// A plain client on this schema, its connection driven by the current runtime.
    pub(in crate::db) async fn connect(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}: {e}"));
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // A test that failed inside a transaction leaves its session holding locks in
        // the schema (its connection task cannot even send the ROLLBACK while this
        // blocks the test's runtime): end such sessions, or the DROP would wait for
        // them forever and a failing test would hang instead of failing. Never panic
        // here (a failing test is already unwinding): a schema left behind is dropped
        // by the next run that gets this pid, or with the throw-away cluster.
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

/// Runs `sql` on a connection of its own, on a thread and runtime of its own, so that
/// it works the same from a plain `#[test]`, from inside a tokio test, and in `drop`.
fn batch(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            let connection = tokio::spawn(connection);
            // The server's message, not only the driver's "db error".
            let done = client
                .batch_execute(&sql)
                .await
                .map_err(|e| match e.as_db_error() {
                    Some(db) => db.message().to_owned(),
                    None => e.to_string(),
                });
            drop(client);
            let _ = connection.await;
            done
        })
    })
    .join()
    .map_err(|_| "the thread running it panicked".to_owned())?
}

/// A migrated SQLite database in a temporary directory, as `both_backends!` gives it.
pub(in crate::db) fn sqlite_database() -> (tempfile::TempDir, crate::db::Database) {
    let dir = tempfile::tempdir().unwrap();
    let target = DbTarget::Sqlite(dir.path().join("kassa.db"));
    let db = crate::db::Database::open_target(&target).unwrap();
    (dir, db)
}

/// Writes each test once for both backends. For
/// `both_backends! { fn name(db: &Database) { … } }` it makes a module `name` with
/// `name::sqlite` (always run, on a migrated SQLite file in a temp dir) and `name::pg`
/// (a migrated schema of its own; prints `skipped: KASSA_TEST_PG_URL not set` and
/// passes when the variable is unset). `async fn` makes `#[tokio::test]`s. The body sees
/// the items of the module the macro is called in (`use super::*`).
macro_rules! both_backends {
    () => {};
    ($(#[$meta:meta])* fn $name:ident($db:ident: &Database $(,)?) $body:block $($rest:tt)*) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($db: &$crate::db::Database) $body

            #[test]
            fn sqlite() {
                let (_dir, db) = $crate::db::pg::testing::sqlite_database();
                body(&db);
            }

            #[test]
            fn pg() {
                let Some(schema) = $crate::db::pg::testing::TestSchema::new() else {
                    println!("{}", $crate::db::pg::testing::SKIPPED);
                    return;
                };
                let db = $crate::db::Database::open_target(&schema.target()).unwrap();
                body(&db);
                // The pool goes before its schema is dropped.
                drop(db);
            }
        }
        $crate::db::pg::testing::both_backends! { $($rest)* }
    };
    ($(#[$meta:meta])* async fn $name:ident($db:ident: &Database $(,)?) $body:block $($rest:tt)*) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($db: &$crate::db::Database) $body

            #[tokio::test]
            async fn sqlite() {
                let (_dir, db) = $crate::db::pg::testing::sqlite_database();
                body(&db).await;
            }

            #[tokio::test]
            async fn pg() {
                let Some(schema) = $crate::db::pg::testing::TestSchema::new() else {
                    println!("{}", $crate::db::pg::testing::SKIPPED);
                    return;
                };
                // Opened and dropped off the test's runtime: the PostgreSQL backend
                // has a runtime of its own, which cannot start or stop inside another.
                let target = schema.target();
                let db = tokio::task::spawn_blocking(move || $crate::db::Database::open_target(&target))
                    .await
                    .unwrap()
                    .unwrap();
                body(&db).await;
                tokio::task::spawn_blocking(move || drop(db)).await.unwrap();
            }
        }
        $crate::db::pg::testing::both_backends! { $($rest)* }
    };
}

pub(in crate::db) use both_backends;

/// A write transaction on another thread holding one of the pool's connections until
/// `release`: what a busy pool looks like to the next transaction.
pub(in crate::db) struct HeldConnection {
    release: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<crate::db::DbResult<()>>,
}

impl HeldConnection {
    /// Returns once the transaction has its connection (its first statement ran).
    pub(in crate::db) fn take(db: &crate::db::Database) -> HeldConnection {
        let (holding, held) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let db = db.clone();
        let thread = std::thread::spawn(move || {
            db.write_blocking(move |tx| {
                tx.one("SELECT 1", crate::db::sql::args![], |_| Ok(()))?;
                holding.send(()).unwrap();
                released.recv().unwrap();
                Ok(())
            })
        });
        held.recv().unwrap();
        HeldConnection { release, thread }
    }

    /// Ends the transaction (committing it) and waits for its thread.
    pub(in crate::db) fn release(self) {
        self.release.send(()).unwrap();
        self.thread.join().unwrap().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_on(base: &str) -> TestSchema {
        TestSchema {
            base: base.to_owned(),
            schema: "kassa_t_1_2".to_owned(),
        }
    }

    #[test]
    fn the_search_path_option_starts_the_query_or_joins_the_one_the_url_has() {
        let dont_drop = |s: TestSchema| {
            let url = s.url();
            std::mem::forget(s);
            url
        };
        assert_eq!(
            dont_drop(schema_on("postgresql://postgres@%2Ftmp%2Fpg/postgres")),
            "postgresql://postgres@%2Ftmp%2Fpg/postgres?options=-csearch_path%3Dkassa_t_1_2"
        );
        assert_eq!(
            dont_drop(schema_on("postgres://u@h/db?sslmode=disable")),
            "postgres://u@h/db?sslmode=disable&options=-csearch_path%3Dkassa_t_1_2"
        );
        assert_eq!(
            dont_drop(schema_on("postgres://u@h/db?")),
            "postgres://u@h/db?options=-csearch_path%3Dkassa_t_1_2"
        );
    }

    #[tokio::test]
    async fn each_test_schema_is_the_current_schema_of_its_connections_and_is_gone_after_drop() {
        let (Some(a), Some(b)) = (TestSchema::new(), TestSchema::new()) else {
            println!("{SKIPPED}");
            return;
        };
        assert_ne!(a.schema(), b.schema());
        let client = a.connect().await;
        let current: String = client
            .query_one("SELECT current_schema()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(current, a.schema());
        client.batch_execute("CREATE TABLE t (id BIGINT)").await.unwrap();
        drop(client);

        let name = a.schema().to_owned();
        drop(a);
        assert_eq!(
            schemas_named(&b, &name).await,
            0,
            "{name} outlived its TestSchema"
        );
    }

    /// How many schemas are called `name`, seen from a session of `from`.
    async fn schemas_named(from: &TestSchema, name: &str) -> i64 {
        from.connect()
            .await
            .query_one(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test]
    async fn a_schema_is_dropped_even_while_a_failed_test_still_holds_a_transaction_in_it() {
        let (Some(schema), Some(other)) = (TestSchema::new(), TestSchema::new()) else {
            println!("{SKIPPED}");
            return;
        };
        let mut client = schema.connect().await;
        client.batch_execute("CREATE TABLE t (id BIGINT)").await.unwrap();
        // As a test that panicked mid-transaction leaves it: open, holding its lock.
        let tx = client.transaction().await.unwrap();
        tx.batch_execute("LOCK TABLE t").await.unwrap();

        let name = schema.schema().to_owned();
        drop(schema);

        assert_eq!(
            schemas_named(&other, &name).await,
            0,
            "{name} outlived its TestSchema"
        );
        // The session holding the lock was ended.
        assert!(tx.commit().await.is_err());
    }
}
