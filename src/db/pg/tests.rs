//! The PostgreSQL backend through `Database`, as the operations use it. Each test runs
//! in a schema of its own when `KASSA_TEST_PG_URL` is set, and is skipped otherwise.

use std::ops::ControlFlow;
use std::time::Duration;

use chrono::Utc;

use super::testing::{both_backends, HeldConnection, TestSchema, SKIPPED};
use crate::db::history::Cause;
use crate::db::sql::tests::new_order;
use crate::db::sql::{args, Arg, Value};
use crate::db::transitions::{self, Change, Outcome};
use crate::db::{orders, Database, DbError, DbTarget};
use crate::domain::{OrderStatus, TransitionSource};

/// A migrated database in a schema of its own; the pool is closed before the schema
/// is dropped (fields drop in order).
struct Pg {
    db: Database,
    schema: TestSchema,
}

fn pg() -> Option<Pg> {
    let Some(schema) = TestSchema::new() else {
        println!("{SKIPPED}");
        return None;
    };
    let db = Database::open_target(&schema.target()).unwrap();
    Some(Pg { db, schema })
}

/// A migrated database with a pool of one connection, so that each transaction is
/// known to run on the connection the one before it used.
fn pg_single() -> Option<Pg> {
    let Some(schema) = TestSchema::new() else {
        println!("{SKIPPED}");
        return None;
    };
    let db = Database::open_pg_sized(&schema.target(), 1, Duration::from_secs(5)).unwrap();
    Some(Pg { db, schema })
}

/// `pg_single()` with a scratch table `t` holding a column of each type kassa may meet.
fn scratch() -> Option<Pg> {
    let pg = pg_single()?;
    pg.db
        .write_blocking(|tx| {
            tx.exec(
                "CREATE TABLE t (id BIGINT PRIMARY KEY, i4 INTEGER, i2 SMALLINT, flag BOOLEAN, \
                 blob BYTEA, body TEXT, real DOUBLE PRECISION, money NUMERIC)",
                args![],
            )
        })
        .unwrap();
    Some(pg)
}

fn count(db: &Database) -> i64 {
    db.read_blocking(|tx| tx.one("SELECT COUNT(*) FROM t", args![], |r| r.get_i64(0)))
        .unwrap()
}

#[test]
fn opening_migrates_a_fresh_schema_and_sets_the_session_options_on_every_connection() {
    let Some(pg) = pg() else { return };
    let (schema, orders, settings) = pg
        .db
        .read_blocking(|tx| {
            let schema = tx.one("SELECT current_schema()", args![], |r| r.get_string(0))?;
            let orders = tx.one("SELECT COUNT(*) FROM orders", args![], |r| r.get_i64(0))?;
            let settings = tx.all(
                "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout', \
                 'lock_timeout', 'idle_in_transaction_session_timeout', 'application_name', \
                 'transaction_read_only', 'transaction_isolation') ORDER BY name",
                args![],
                |r| Ok(format!("{}={}", r.get_string(0)?, r.get_string(1)?)),
            )?;
            Ok((schema, orders, settings))
        })
        .unwrap();
    assert_eq!(
        schema,
        pg.schema.schema(),
        "the URL's search_path option is honoured"
    );
    assert_eq!(orders, 0);
    assert_eq!(
        settings,
        [
            "application_name=kassa",
            "idle_in_transaction_session_timeout=60000",
            "lock_timeout=10000",
            "statement_timeout=30000",
            "transaction_isolation=read committed",
            "transaction_read_only=on",
        ]
    );
    let writing = pg
        .db
        .write_blocking(|tx| {
            tx.one("SELECT current_setting('transaction_read_only')", args![], |r| {
                r.get_string(0)
            })
        })
        .unwrap();
    assert_eq!(writing, "off");
    // A second open finds the schema migrated and applies nothing.
    let recorded = |db: &Database| {
        db.read_blocking(|tx| {
            tx.all(
                "SELECT version, name, applied_at FROM schema_migrations ORDER BY version",
                args![],
                |r| Ok((r.get_i64(0)?, r.get_string(1)?, r.get_i64(2)?)),
            )
        })
        .unwrap()
    };
    let before = recorded(&pg.db);
    let again = Database::open_target(&pg.schema.target()).unwrap();
    assert_eq!(recorded(&again), before);
    drop(again);
}

#[test]
fn a_write_commits_when_its_closure_succeeds_and_leaves_nothing_when_it_fails() {
    let Some(pg) = scratch() else { return };
    pg.db
        .write_blocking(|tx| tx.exec("INSERT INTO t (id, body) VALUES (?1, ?2)", args![1_i64, "kept"]))
        .unwrap();
    let failed = pg.db.write_blocking(|tx| {
        tx.exec("INSERT INTO t (id, body) VALUES (?1, ?2)", args![2_i64, "undone"])?;
        Err::<(), _>(DbError::Abandoned("the job changed its mind".into()))
    });
    assert!(matches!(failed, Err(DbError::Abandoned(_))), "{failed:?}");
    let bodies = pg
        .db
        .read_blocking(|tx| tx.all("SELECT body FROM t ORDER BY id", args![], |r| r.get_string(0)))
        .unwrap();
    assert_eq!(bodies, ["kept"]);
}

#[test]
fn a_write_whose_statement_failed_is_not_committed_even_when_its_closure_ignores_the_error() {
    let Some(pg) = scratch() else { return };
    let result = pg.db.write_blocking(|tx| {
        tx.exec("INSERT INTO t (id) VALUES (?1)", args![1_i64])?;
        // A duplicate key aborts the whole transaction on PostgreSQL.
        let duplicate = tx.exec("INSERT INTO t (id) VALUES (?1)", args![1_i64]);
        assert!(matches!(duplicate, Err(DbError::Conflict(_))), "{duplicate:?}");
        Ok(())
    });
    // What aborted the transaction, not only that something did.
    match &result {
        Err(DbError::Commit(message)) => {
            assert!(message.contains("(23505)"), "{message}");
            assert!(message.contains("key (id) is taken"), "{message}");
        }
        other => panic!("not Commit: {other:?}"),
    }
    assert_eq!(count(&pg.db), 0);
}

/// `pg_backend_pid()` and whether the transaction has written, in a write of its own.
fn session(db: &Database) -> (i32, bool) {
    db.write_blocking(|tx| {
        tx.one(
            "SELECT pg_backend_pid(), txid_current_if_assigned() IS NULL",
            args![],
            |r| Ok((i32::try_from(r.get_i64(0)?).unwrap(), r.get_bool(1)?)),
        )
    })
    .unwrap()
}

#[test]
fn a_write_whose_closure_panics_midway_leaves_nothing_and_its_connection_starts_clean() {
    let Some(pg) = scratch() else { return };
    let (pid, _) = session(&pg.db);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pg.db.write_blocking(|tx| -> crate::db::DbResult<()> {
            tx.exec("INSERT INTO t (id) VALUES (1)", args![])?;
            panic!("the job failed midway")
        })
    }));
    assert!(panicked.is_err());
    // The same (only) connection, in a transaction of its own that has written nothing:
    // not the panicked one going on.
    assert_eq!(session(&pg.db), (pid, true));
    assert_eq!(count(&pg.db), 0);
    pg.db
        .write_blocking(|tx| tx.exec("INSERT INTO t (id) VALUES (1)", args![]))
        .unwrap();
    assert_eq!(count(&pg.db), 1);
}

#[test]
fn a_session_the_server_ends_midway_is_unavailable_and_the_next_transaction_gets_a_new_one() {
    let Some(pg) = scratch() else { return };
    let (pid, _) = session(&pg.db);
    let ended = pg.db.write_blocking(|tx| {
        tx.exec("INSERT INTO t (id) VALUES (1)", args![])?;
        tx.exec("SELECT pg_terminate_backend(pg_backend_pid())", args![])
    });
    assert!(matches!(ended, Err(DbError::Unavailable(_))), "{ended:?}");
    let (again, fresh) = session(&pg.db);
    assert_ne!(again, pid, "the ended session was given out again");
    assert!(fresh);
    assert_eq!(count(&pg.db), 0, "the ended session's write was kept");
    pg.db
        .write_blocking(|tx| tx.exec("INSERT INTO t (id) VALUES (2)", args![]))
        .unwrap();
    assert_eq!(count(&pg.db), 1);
}

/// The error as a log line shows it: Display, every source, and Debug.
fn logged(e: &DbError) -> String {
    let mut text = format!("{e} {e:?}");
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(" {c} {c:?}"));
        cause = c.source();
    }
    text
}

#[test]
fn a_refused_row_s_values_never_reach_the_error_and_a_taken_key_is_named_by_its_columns_only() {
    let Some(pg) = pg_single() else { return };
    let key: &[u8] = b"PRIVATE-KEY-7f3a9c";
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    // NOT NULL: PostgreSQL's DETAIL is the whole row, the key's bytes included.
    let err = pg
        .db
        .write_blocking(move |tx| {
            tx.exec(
                "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, NULL)",
                args!["signing-name-31337", key],
            )
        })
        .unwrap_err();
    let text = logged(&err);
    assert!(matches!(err, DbError::Refused(_)), "{text}");
    assert!(text.contains("(23502)") && text.contains("created_at"), "{text}");
    for value in ["signing-name-31337", hex.as_str(), "Failing row"] {
        assert!(!text.contains(value), "{value} in {text}");
    }
    // CHECK: the same, with a TOTP secret in the row.
    let err = pg
        .db
        .write_blocking(|tx| {
            tx.exec(
                "INSERT INTO admin_users (username, password_hash, role, created_at, password_changed_at, totp_secret) \
                 VALUES ('ada', 'hash-5eb63bbbe0', 'nobody', 0, 0, 'TOTP-SECRET-JBSWY3DP')",
                args![],
            )
        })
        .unwrap_err();
    let text = logged(&err);
    assert!(matches!(err, DbError::Refused(_)), "{text}");
    assert!(
        text.contains("(23514)") && text.contains("admin_users_role_check"),
        "{text}"
    );
    for value in ["TOTP-SECRET-JBSWY3DP", "hash-5eb63bbbe0", "Failing row"] {
        assert!(!text.contains(value), "{value} in {text}");
    }
    // A unique key taken: which key, not its value.
    let insert = |tx: &crate::db::Tx<'_>| {
        tx.exec(
            "INSERT INTO secrets (name, value, created_at) VALUES ('signing-name-31337', ?1, 0)",
            args![&b"x"[..]],
        )
    };
    pg.db.write_blocking(insert).unwrap();
    let err = pg.db.write_blocking(insert).unwrap_err();
    let text = logged(&err);
    assert!(matches!(err, DbError::Conflict(_)), "{text}");
    assert!(
        text.contains("key (name) is taken") && text.contains("secrets_pkey"),
        "{text}"
    );
    assert!(!text.contains("signing-name-31337"), "{text}");
}

#[test]
fn a_url_without_keepalive_settings_gets_kassa_s_bound_and_one_with_them_keeps_its_own() {
    let config = |url: &str| match DbTarget::parse(url).unwrap() {
        DbTarget::Postgres(url) => super::client_config(&url).unwrap(),
        DbTarget::Sqlite(_) => unreachable!(),
    };
    let plain = config("postgresql://kassa@db.example/kassa");
    assert!(plain.get_keepalives());
    assert_eq!(plain.get_keepalives_idle(), Duration::from_secs(30));
    assert_eq!(plain.get_keepalives_interval(), Some(Duration::from_secs(10)));
    assert_eq!(plain.get_tcp_user_timeout(), Some(&Duration::from_secs(60)));
    let own = config(
        "postgresql://kassa@db.example/kassa?keepalives_idle=7&keepalives_interval=3&tcp_user_timeout=9",
    );
    assert_eq!(own.get_keepalives_idle(), Duration::from_secs(7));
    assert_eq!(own.get_keepalives_interval(), Some(Duration::from_secs(3)));
    assert_eq!(own.get_tcp_user_timeout(), Some(&Duration::from_secs(9)));
}

both_backends! {
    async fn a_blocking_read_works_from_inside_an_async_task_on_both_backends(db: &Database) {
        // Blocks this test's (single) runtime thread, which nothing here needs meanwhile.
        let read = db.read_blocking(|tx| tx.one("SELECT COUNT(*) FROM orders", args![], |r| r.get_i64(0)));
        assert_eq!(read.unwrap(), 0);
        // And the async calls go on working on the same thread.
        assert_eq!(db.read(|tx| tx.one("SELECT 2", args![], |r| r.get_i64(0))).await.unwrap(), 2);
    }
}

// SQLite's `write_blocking` still panics here (tokio's `blocking_recv` in the writer).
#[tokio::test]
async fn a_blocking_write_and_read_work_from_inside_an_async_task_on_postgresql() {
    let Some(pg) = scratch() else { return };
    let written = pg
        .db
        .write_blocking(|tx| tx.exec("INSERT INTO t (id) VALUES (1)", args![]));
    assert_eq!(written.unwrap(), 1);
    assert_eq!(count(&pg.db), 1);
    let read = pg
        .db
        .read(|tx| tx.one("SELECT COUNT(*) FROM t", args![], |r| r.get_i64(0)));
    assert_eq!(read.await.unwrap(), 1);
}

#[test]
fn a_savepoint_that_fails_undoes_only_its_own_writes_even_after_a_statement_error() {
    let Some(pg) = scratch() else { return };
    pg.db
        .write_blocking(|tx| {
            tx.exec("INSERT INTO t (id) VALUES (1)", args![])?;
            let inner = tx.savepoint(|tx| {
                tx.exec("INSERT INTO t (id) VALUES (2)", args![])?;
                tx.exec("INSERT INTO t (id) VALUES (1)", args![])
            });
            assert!(matches!(inner, Err(DbError::Conflict(_))), "{inner:?}");
            let swallowed = tx.savepoint(|tx| {
                tx.exec("INSERT INTO t (id) VALUES (3)", args![])?;
                let _ = tx.exec("INSERT INTO t (id) VALUES (1)", args![]);
                Ok(())
            });
            assert!(matches!(swallowed, Err(DbError::Abandoned(_))), "{swallowed:?}");
            tx.savepoint(|tx| tx.exec("INSERT INTO t (id) VALUES (4)", args![]))?;
            Ok(())
        })
        .unwrap();
    let ids = pg
        .db
        .read_blocking(|tx| tx.all("SELECT id FROM t ORDER BY id", args![], |r| r.get_i64(0)))
        .unwrap();
    assert_eq!(ids, [1, 4]);
}

#[test]
fn every_getter_reads_the_types_postgresql_answers_with() {
    let Some(pg) = scratch() else { return };
    let bytes: &[u8] = &[0, 0xff, b'a', 0xc3, 0x28];
    pg.db
        .write_blocking(move |tx| {
            tx.exec(
                "INSERT INTO t (id, i4, i2, flag, blob, body, real) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                &[
                    Arg::Int(1),
                    Arg::Int(-7),
                    Arg::Int(300),
                    Arg::from(true),
                    Arg::from(bytes),
                    Arg::from("text"),
                    Arg::Null,
                ],
            )
        })
        .unwrap();
    pg.db
        .read_blocking(|tx| {
            tx.one(
                "SELECT id, i4, i2, flag, blob, body, real, CASE WHEN id = 1 THEN 1 ELSE 0 END AS one, \
                 i4 AS again, 1.5::float8 AS half FROM t",
                args![],
                |r| {
                    assert_eq!(r.get_i64(0)?, 1);
                    assert_eq!(r.get_i64(1)?, -7, "int4");
                    assert_eq!(r.get_opt_i64(1)?, Some(-7));
                    assert_eq!(r.get_i64(2)?, 300, "int2");
                    assert!(r.get_bool(3)?, "bool");
                    assert!(r.get_bool(7)?, "an int4 flag");
                    assert!(r.get_bool(1)?, "a nonzero integer");
                    assert_eq!(r.get_bytes(4)?, bytes);
                    assert_eq!(r.get_blob_lossy(4)?, String::from_utf8_lossy(bytes));
                    assert_eq!(r.get_blob_lossy(5)?, "text");
                    assert_eq!(r.get_string(5)?, "text");
                    assert_eq!(r.get_opt_i64(6)?, None, "null");
                    assert_eq!(r.get_opt_string(6)?, None, "null, whatever the column's type");
                    assert!(r.get_opt_string(9).is_err(), "a float is no text");
                    assert_eq!(r.value(0)?, Value::Int(1));
                    assert_eq!(r.value(3)?, Value::Int(1));
                    assert_eq!(r.value(4)?, Value::Text(bytes));
                    assert_eq!(r.value(5)?, Value::Text(b"text"));
                    assert_eq!(r.value(6)?, Value::Null);
                    assert_eq!(r.value(9)?, Value::Real(1.5));
                    assert_eq!(r.column_count(), 10);
                    assert_eq!(r.column_name(7)?, "one");
                    Ok(())
                },
            )
        })
        .unwrap();
}

#[test]
fn a_value_of_another_type_or_null_is_corrupt_and_names_its_column() {
    let Some(pg) = scratch() else { return };
    pg.db
        .write_blocking(|tx| tx.exec("INSERT INTO t (id, body, money) VALUES (1, 'x', 5)", args![]))
        .unwrap();
    let corrupt = |sql: &'static str, read: fn(&crate::db::sql::Row<'_>) -> crate::db::DbResult<()>| match pg
        .db
        .read_blocking(|tx| tx.one(sql, args![], read))
    {
        Err(DbError::Corrupt(message)) => message,
        other => panic!("{sql}: not Corrupt: {other:?}"),
    };
    type Read = fn(&crate::db::sql::Row<'_>) -> crate::db::DbResult<()>;
    // (query, reader of its one column, message), one case a line: rustfmt would spread
    // each over five and bury the table.
    #[rustfmt::skip]
    let cases: [(&'static str, Read, &str); 6] = [
        ("SELECT body FROM t", |r| r.get_i64(0).map(drop), "body: expected an integer, found text"),
        ("SELECT money FROM t", |r| r.get_i64(0).map(drop), "money: expected an integer, found numeric"),
        ("SELECT i4 FROM t", |r| r.get_i64(0).map(drop), "i4: expected an integer, found Null"),
        ("SELECT id AS n FROM t", |r| r.get_string(0).map(drop), "n: expected text, found int8"),
        ("SELECT body FROM t", |r| r.get_bytes(0).map(drop), "body: expected a blob, found text"),
        ("SELECT flag FROM t", |r| r.get_bool(0).map(drop), "flag: expected an integer flag, found Null"),
    ];
    for (sql, read, message) in cases {
        assert_eq!(corrupt(sql, read), message);
    }
    assert!(corrupt("SELECT body AS status FROM t", |r| r
        .parse::<OrderStatus>(0)
        .map(drop))
    .starts_with("status: "));
    assert_eq!(
        corrupt("SELECT money FROM t", |r| r.value(0).map(drop)),
        "money: expected an integer, a number, text or bytes, found numeric"
    );
}

#[test]
fn an_integer_argument_is_narrowed_to_the_parameter_type_and_refused_when_it_does_not_fit() {
    let Some(pg) = scratch() else { return };
    let insert = |id: i64, column: &'static str, v: i64| {
        let sql = match column {
            "i4" => "INSERT INTO t (id, i4) VALUES (?1, ?2)",
            "i2" => "INSERT INTO t (id, i2) VALUES (?1, ?2)",
            _ => "INSERT INTO t (id, flag) VALUES (?1, ?2)",
        };
        pg.db.write_blocking(move |tx| tx.exec(sql, args![id, v]))
    };
    assert_eq!(insert(1, "i4", i64::from(i32::MAX)).unwrap(), 1);
    assert_eq!(insert(2, "i2", -300).unwrap(), 1);
    assert_eq!(insert(3, "flag", 0).unwrap(), 1);
    for (id, column, v) in [
        (4, "i4", i64::from(i32::MAX) + 1),
        (5, "i4", i64::from(i32::MIN) - 1),
        (6, "i2", 40_000),
        (7, "flag", 2),
    ] {
        let err = insert(id, column, v).unwrap_err();
        let text = format!("{err} {:?}", std::error::Error::source(&err));
        assert!(matches!(err, DbError::Postgres(_)), "{column} {v}: {err:?}");
        assert!(text.contains(&v.to_string()), "{column} {v}: {text}");
    }
    assert_eq!(
        count(&pg.db),
        3,
        "nothing out of range was stored, wrapped or not"
    );
    // A LIMIT takes an int8, the width kassa always binds.
    let limited = pg
        .db
        .read_blocking(|tx| {
            tx.all("SELECT id FROM t ORDER BY id LIMIT ?1", args![2_i64], |r| {
                r.get_i64(0)
            })
        })
        .unwrap();
    assert_eq!(limited, [1, 2]);
}

#[test]
fn each_streams_rows_until_the_reader_breaks_and_the_transaction_goes_on_after() {
    let Some(pg) = scratch() else { return };
    pg.db
        .write_blocking(|tx| {
            tx.exec(
                "INSERT INTO t (id, body) SELECT g, 'row ' || g FROM generate_series(1, 5000) g",
                args![],
            )
        })
        .unwrap();
    let (seen, after) = pg
        .db
        .read_blocking(|tx| {
            let mut seen = Vec::new();
            tx.each("SELECT id FROM t WHERE id >= ?1 ORDER BY id", args![2_i64], |r| {
                seen.push(r.get_i64(0)?);
                Ok(if seen.len() == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            })?;
            let after = tx.one("SELECT COUNT(*) FROM t", args![], |r| r.get_i64(0))?;
            Ok((seen, after))
        })
        .unwrap();
    assert_eq!(seen, [2, 3, 4], "nothing after the break");
    assert_eq!(after, 5000);
    let err = pg
        .db
        .read_blocking(|tx| {
            tx.each("SELECT body FROM t", args![], |r| {
                r.get_i64(0).map(|_| ControlFlow::Continue(()))
            })
        })
        .unwrap_err();
    assert!(matches!(err, DbError::Corrupt(_)), "{err:?}");
}

#[test]
fn a_server_that_is_not_there_is_unavailable_at_open_and_the_message_hides_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let socket_dir = dir.path().to_str().unwrap().replace('/', "%2F");
    let url = format!("postgresql://kassa:s3cret-pw@{socket_dir}/kassa");
    let target = DbTarget::parse(&url).unwrap();
    match Database::open_target(&target) {
        Err(DbError::Unavailable(message)) => {
            assert!(
                message.starts_with("cannot connect to postgresql://kassa:***@"),
                "{message}"
            );
            assert!(!message.contains("s3cret"), "{message}");
        }
        Err(other) => panic!("not Unavailable: {other:?}"),
        Ok(_) => panic!("opened a server that is not there"),
    }
}

#[test]
fn a_transaction_or_ping_that_finds_no_free_connection_in_time_is_unavailable_and_the_pool_recovers() {
    let Some(schema) = TestSchema::new() else {
        println!("{SKIPPED}");
        return;
    };
    let db = Database::open_pg_sized(&schema.target(), 1, Duration::from_millis(200)).unwrap();
    let holder = HeldConnection::take(&db);
    let waited = db.read_blocking(|tx| tx.one("SELECT 1", args![], |r| r.get_i64(0)));
    match waited {
        Err(DbError::Unavailable(message)) => assert!(message.contains("no connection"), "{message}"),
        other => panic!("not Unavailable: {other:?}"),
    }
    // What `/healthz` asks: the same answer, not a wait for the holder.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(db.ping()) {
        Err(DbError::Unavailable(message)) => assert!(message.contains("no connection"), "{message}"),
        other => panic!("ping not Unavailable: {other:?}"),
    }
    holder.release();
    assert_eq!(
        db.read_blocking(|tx| tx.one("SELECT 1", args![], |r| r.get_i64(0)))
            .unwrap(),
        1
    );
    drop(db);
}

#[tokio::test]
async fn ping_answers_and_the_pool_is_watched_until_the_last_handle_goes() {
    let Some(schema) = TestSchema::new() else {
        println!("{SKIPPED}");
        return;
    };
    // Opened inside the test's runtime, as the server's start-up opens it.
    let db = Database::open_target(&schema.target()).unwrap();
    db.ping().await.unwrap();
    let counted = db
        .write(|tx| tx.one("SELECT COUNT(*) FROM orders", args![], |r| r.get_i64(0)))
        .await
        .unwrap();
    assert_eq!(counted, 0);
    let threads = db.threads();
    assert!(threads.running());
    drop(db);
    assert!(!threads.running());
}

#[test]
fn an_order_is_inserted_found_and_paid_through_the_operations_on_postgresql() {
    let Some(pg) = pg() else { return };
    let order = new_order(1, 1000);
    let id = order.id.clone();
    let inserted = pg
        .db
        .write_blocking({
            let order = order.clone();
            move |tx| orders::insert(tx, &order, Some("qr"))
        })
        .unwrap();
    assert_eq!(inserted, orders::Inserted::Yes);
    let again = pg
        .db
        .write_blocking(move |tx| orders::insert(tx, &order, None))
        .unwrap();
    assert_eq!(again, orders::Inserted::OutTradeNoTaken);

    let found = pg
        .db
        .read_blocking(|tx| orders::find_by_id(tx, &id))
        .unwrap()
        .expect("the order");
    assert_eq!(found.status, OrderStatus::Pending);
    assert_eq!(found.amount.minor(), 1000);

    let paid_at = found.created_at + chrono::Duration::minutes(1);
    let pay = Change::Pay {
        provider_trade_no: Some("T1".into()),
        paid_at,
    };
    let cause = Cause::system(TransitionSource::Notification);
    let outcome = {
        let (id, pay, cause) = (id.clone(), pay.clone(), cause.clone());
        pg.db
            .write_blocking(move |tx| transitions::apply(tx, &id, &pay, &cause, Utc::now()))
            .unwrap()
    };
    match outcome {
        Outcome::Applied { from, order } => {
            assert_eq!(from, OrderStatus::Pending);
            assert_eq!(order.status, OrderStatus::Paid);
        }
        other => panic!("not applied: {other:?}"),
    }
    let repeated = {
        let id = id.clone();
        pg.db
            .write_blocking(move |tx| transitions::apply(tx, &id, &pay, &cause, Utc::now()))
            .unwrap()
    };
    assert!(matches!(repeated, Outcome::Duplicate { .. }), "{repeated:?}");
    let stored = pg
        .db
        .read_blocking(|tx| orders::find_by_id(tx, &id))
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, OrderStatus::Paid);
    assert_eq!(stored.paid_at, Some(paid_at));
    assert_eq!(stored.provider_trade_no.as_deref(), Some("T1"));
}
