//! PostgreSQL schema migrations: compiled in, append-only, versions kept in
//! `schema_migrations`, in lockstep with the SQLite list.
//!
//! The first file is a baseline: the SQLite schema at version 10, written once for
//! PostgreSQL. It records versions 1 to 10 under their SQLite names, so both backends
//! have the same numbered, named history (`schema_migrations` lists what the SQLite
//! list names, and `kassa migrate --to` compares equal lists). Each later SQLite
//! migration has a file here of the same number and name. Never edit a shipped entry.

use tokio_postgres::Client;

use crate::db::{DbError, DbResult};

/// One file: the SQLite migrations it stands for (by name, in order) and its SQL.
pub(in crate::db) struct Step {
    pub(in crate::db) covers: &'static [&'static str],
    pub(in crate::db) sql: &'static str,
}

pub(in crate::db) const STEPS: &[Step] = &[
    Step {
        covers: &[
            "0001_init",
            "0002_refunds_checks_sandbox",
            "0003_webhooks",
            "0004_notification_reasons",
            "0005_admin",
            "0006_admin_staff",
            "0007_idempotency_claims",
            "0008_rejected_notifications",
            "0009_sandbox_trades_by_trade_no",
            "0010_leases_and_claim_owners",
        ],
        sql: include_str!("migrations/0010_baseline.sql"),
    },
    Step {
        covers: &["0011_secrets_and_refund_seq"],
        sql: include_str!("migrations/0011_secrets_and_refund_seq.sql"),
    },
    Step {
        covers: &["0012_rate_limits"],
        sql: include_str!("migrations/0012_rate_limits.sql"),
    },
];

/// Schema version this binary writes: the same number as SQLite's.
pub(in crate::db) fn latest_version() -> i64 {
    STEPS.iter().map(|s| s.covers.len() as i64).sum()
}

/// Applies every pending step in one transaction, under an advisory lock of this
/// schema (so two processes starting together on one database take turns). Returns
/// the names of the versions applied. A database written by a newer kassa is refused
/// and not touched.
pub(in crate::db) async fn run(client: &mut Client) -> DbResult<Vec<&'static str>> {
    let tx = client.transaction().await?;
    // The session's bounds are for requests. A second instance starting meanwhile waits
    // for the lock as long as the first takes, and a migration statement on a large
    // table (an index, a backfill) runs as long as it needs: one cancelled midway
    // would be cancelled on every start, and the schema could never move on.
    // `CREATE TABLE IF NOT EXISTS` below would log a NOTICE at every start and command.
    tx.batch_execute(
        "SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0; \
         SET LOCAL client_min_messages = warning",
    )
    .await?;
    let schema: Option<String> = tx.query_one("SELECT current_schema()", &[]).await?.get(0);
    if schema.is_none() {
        return Err(DbError::Migration(
            "the search path names no schema that exists: create it first".to_owned(),
        ));
    }
    // Transaction-scoped, on this key only: a session lock that another part of kassa
    // may take (plan §3's bootstrap lock) needs a key of its own, or a process taking
    // it on another connection while this waits would wait for itself.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('kassa:' || current_schema()))",
        &[],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version    BIGINT PRIMARY KEY, \
             name       TEXT NOT NULL, \
             applied_at BIGINT NOT NULL)",
    )
    .await?;
    let current = version_in(&tx).await?;
    if current > latest_version() {
        // Dropped without COMMIT: rolled back, nothing changed.
        return Err(DbError::TooNew {
            found: current,
            supported: latest_version(),
        });
    }
    let mut applied = Vec::new();
    let mut version = 0;
    for step in STEPS {
        let first = version + 1;
        version += step.covers.len() as i64;
        if version <= current {
            continue;
        }
        if current >= first {
            // Only the baseline covers several versions, and no PostgreSQL database was
            // ever at a version inside it.
            return Err(DbError::Migration(format!(
                "schema version {current} is inside {}, which is applied whole",
                step.covers[step.covers.len() - 1]
            )));
        }
        let name = step.covers[step.covers.len() - 1];
        tx.batch_execute(step.sql)
            .await
            .map_err(|e| DbError::Migration(format!("{name}: {}", super::describe(&e))))?;
        for (offset, name) in step.covers.iter().enumerate() {
            // The server's clock: only a record of when, which nothing decides on.
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) \
                 VALUES ($1, $2, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT))",
                &[&(first + offset as i64), name],
            )
            .await?;
            applied.push(*name);
        }
    }
    tx.commit().await?;
    Ok(applied)
}

/// The schema version the database is at (0 before the first migration).
pub(in crate::db) async fn current_version(client: &Client) -> DbResult<i64> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    version_in(client).await
}

async fn version_in(client: &impl tokio_postgres::GenericClient) -> DbResult<i64> {
    Ok(client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[])
        .await?
        .get(0))
}

/// The names every version carries, in order, as SQLite's list has them.
#[cfg(test)]
fn names() -> Vec<&'static str> {
    STEPS.iter().flat_map(|s| s.covers.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::db::migrations::MIGRATIONS as SQLITE;
    use crate::db::pg::testing::{both_backends, TestSchema, SKIPPED};
    use crate::db::sql::args;
    use crate::db::Database;

    #[test]
    fn every_sqlite_migration_has_a_postgresql_twin_of_the_same_number_and_name() {
        let sqlite: Vec<&str> = SQLITE.iter().map(|(name, _)| *name).collect();
        assert_eq!(names(), sqlite);
        assert_eq!(latest_version(), crate::db::migrations::latest_version());
        // The baseline is SQLite's 1 to 10; each later file is one SQLite migration.
        assert_eq!(STEPS[0].covers.len(), 10);
        assert!(STEPS[1..].iter().all(|s| s.covers.len() == 1));
        // Each version is named by its number, as SQLite's files are.
        for (index, name) in names().iter().enumerate() {
            assert!(
                name.starts_with(&format!("{:04}_", index + 1)),
                "{name} is version {}",
                index + 1
            );
        }
    }

    #[test]
    fn each_postgresql_file_is_named_after_the_sqlite_migration_it_stands_for() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/db/pg/migrations");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let mut want = vec!["0010_baseline.sql".to_owned()];
        want.extend(STEPS[1..].iter().map(|s| format!("{}.sql", s.covers[0])));
        // A file on disk that no step includes would never run.
        assert_eq!(files, want);
        for step in &STEPS[1..] {
            let text = std::fs::read_to_string(dir.join(format!("{}.sql", step.covers[0]))).unwrap();
            assert_eq!(text, step.sql, "{} includes another file", step.covers[0]);
        }
    }

    /// A column: name, SQLite storage class (INTEGER, TEXT or BLOB), NOT NULL, DEFAULT
    /// (`normalized`).
    type Column = (String, String, bool, Option<String>);

    /// What the two backends must agree on: each table's columns in order, its primary
    /// key and UNIQUE constraints (table, kind, columns), the indexes (table, name,
    /// unique, key columns with DESC, predicate `normalized`), the CHECK constraints
    /// (table, `normalized`) and the foreign keys (table, column, table, column).
    #[derive(Debug, PartialEq)]
    struct Shape {
        tables: Vec<(String, Vec<Column>)>,
        keys: BTreeSet<(String, String, String)>,
        indexes: BTreeSet<(String, String, bool, String, String)>,
        checks: BTreeSet<(String, String)>,
        foreign_keys: BTreeSet<(String, String, String, String)>,
    }

    /// An expression as both backends can be compared on: PostgreSQL gives back
    /// `(status = ANY (ARRAY['a'::text, 'b'::text]))` for SQLite's `status IN ('a','b')`.
    /// Lower case, without casts, brackets and spaces, `= ANY` read as `IN`.
    fn normalized(expression: &str) -> String {
        let mut text = expression.to_lowercase();
        for noise in ["::text", "::bigint", "::integer", "array"] {
            text = text.replace(noise, "");
        }
        text.retain(|c| !c.is_whitespace() && !"()[]".contains(c));
        text.replace("=any", "in")
    }

    /// Each `CHECK (…)` of a CREATE TABLE text, as written.
    fn checks_in(sql: &str) -> Vec<String> {
        let upper = sql.to_ascii_uppercase();
        let mut found = Vec::new();
        let mut from = 0;
        while let Some(at) = upper[from..].find("CHECK").map(|i| from + i) {
            from = at + "CHECK".len();
            let word_before = upper[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            let Some(open) = upper[from..].find(|c: char| !c.is_whitespace()).map(|i| from + i) else {
                break;
            };
            if word_before || !upper[open..].starts_with('(') {
                continue;
            }
            let mut depth = 0;
            for (i, c) in sql[open..].char_indices() {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                if depth == 0 {
                    found.push(format!("CHECK {}", &sql[open..=open + i]));
                    from = open + i;
                    break;
                }
            }
        }
        found
    }

    #[test]
    fn checks_are_found_in_a_create_table_text_and_compared_without_casts_or_brackets() {
        let sql = "CREATE TABLE t (a INTEGER CHECK (a IN (0, 1)), checked TEXT, b INTEGER NOT NULL CHECK(b > 0 AND (b < a)))";
        assert_eq!(
            checks_in(sql),
            ["CHECK (a IN (0, 1))", "CHECK (b > 0 AND (b < a))"]
        );
        assert_eq!(
            normalized("CHECK ((status = ANY (ARRAY['a'::text, 'b'::text])))"),
            normalized("CHECK (status IN ('a','b'))")
        );
        assert_ne!(normalized("amount > 0"), normalized("amount >= 0"));
    }

    fn grouped(rows: Vec<(String, Column)>) -> Vec<(String, Vec<Column>)> {
        let mut tables: Vec<(String, Vec<Column>)> = Vec::new();
        for (table, column) in rows {
            match tables.last_mut() {
                Some((t, columns)) if *t == table => columns.push(column),
                _ => tables.push((table, vec![column])),
            }
        }
        tables
    }

    /// SQLite's shape after all its migrations.
    fn sqlite_shape() -> Shape {
        let (_dir, db) = crate::db::sql::tests::database();
        db.read(|tx| {
            // A primary key column is NOT NULL whatever pragma_table_info says (a rowid
            // alias cannot be NULL, and WITHOUT ROWID keys are NOT NULL).
            let columns = tx.all(
                "SELECT m.name, p.name, p.type, p.\"notnull\" OR p.pk > 0, p.dflt_value \
                 FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type = 'table' ORDER BY m.name, p.cid",
                args![],
                |r| {
                    let default = r.get_opt_string(4)?.map(|d| normalized(&d));
                    Ok((r.get_string(0)?, (r.get_string(1)?, r.get_string(2)?, r.get_bool(3)?, default)))
                },
            )?;
            let keys = tx.all(
                "SELECT m.name, 'primary key', (SELECT group_concat(name, ',') FROM \
                     (SELECT p.name FROM pragma_table_info(m.name) p WHERE p.pk > 0 ORDER BY p.pk)) \
                 FROM sqlite_master m WHERE m.type = 'table' \
                 UNION ALL SELECT m.name, 'unique', (SELECT group_concat(x.name, ',') FROM \
                     (SELECT name FROM pragma_index_info(i.name) ORDER BY seqno) x) \
                 FROM sqlite_master m, pragma_index_list(m.name) i WHERE m.type = 'table' AND i.origin = 'u'",
                args![],
                |r| Ok((r.get_string(0)?, r.get_string(1)?, r.get_string(2)?)),
            )?;
            // Indexes written in a migration (those of UNIQUE and PRIMARY KEY constraints
            // have no SQL).
            let indexes = tx.all(
                "SELECT m.tbl_name, m.name, i.\"unique\", \
                     (SELECT group_concat(x.name || CASE WHEN x.\"desc\" THEN ' DESC' ELSE '' END, ',') FROM \
                         (SELECT * FROM pragma_index_xinfo(m.name) WHERE key ORDER BY seqno) x), \
                     CASE WHEN instr(m.sql, ' WHERE ') > 0 THEN substr(m.sql, instr(m.sql, ' WHERE ') + 7) ELSE '' END \
                 FROM sqlite_master m JOIN pragma_index_list(m.tbl_name) i ON i.name = m.name \
                 WHERE m.type = 'index' AND m.sql IS NOT NULL",
                args![],
                |r| {
                    Ok((
                        r.get_string(0)?,
                        r.get_string(1)?,
                        r.get_bool(2)?,
                        r.get_string(3)?,
                        normalized(&r.get_string(4)?),
                    ))
                },
            )?;
            let tables = tx.all(
                "SELECT name, sql FROM sqlite_master WHERE type = 'table'",
                args![],
                |r| Ok((r.get_string(0)?, r.get_string(1)?)),
            )?;
            let checks = tables
                .iter()
                .flat_map(|(table, sql)| checks_in(sql).into_iter().map(|c| (table.clone(), normalized(&c))))
                .collect();
            let foreign_keys = tx.all(
                "SELECT m.name, f.\"from\", f.\"table\", f.\"to\" \
                 FROM sqlite_master m, pragma_foreign_key_list(m.name) f WHERE m.type = 'table'",
                args![],
                |r| Ok((r.get_string(0)?, r.get_string(1)?, r.get_string(2)?, r.get_string(3)?)),
            )?;
            Ok(Shape {
                tables: grouped(columns),
                keys: keys.into_iter().collect(),
                indexes: indexes.into_iter().collect(),
                checks,
                foreign_keys: foreign_keys.into_iter().collect(),
            })
        })
        .unwrap()
    }

    /// The shape of the current schema, kassa's tables only.
    async fn pg_shape(client: &impl tokio_postgres::GenericClient) -> Shape {
        let columns = client
            .query(
                "SELECT table_name::text COLLATE \"C\" AS t, column_name::text, \
                     CASE data_type WHEN 'bigint' THEN 'INTEGER' WHEN 'integer' THEN 'INTEGER' \
                         WHEN 'text' THEN 'TEXT' WHEN 'bytea' THEN 'BLOB' ELSE data_type::text END, \
                     is_nullable = 'NO', column_default::text \
                 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name <> 'schema_migrations' \
                 ORDER BY t, ordinal_position",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let default: Option<String> = r.get(4);
                (
                    r.get(0),
                    (r.get(1), r.get(2), r.get(3), default.map(|d| normalized(&d))),
                )
            })
            .collect();
        let keys = client
            .query(
                "SELECT t.relname::text, CASE c.contype WHEN 'p' THEN 'primary key' ELSE 'unique' END, \
                     string_agg(a.attname::text, ',' ORDER BY k.ord) \
                 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
                 CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(col, ord) \
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.col \
                 WHERE c.contype IN ('p', 'u') AND c.connamespace = current_schema()::regnamespace \
                 AND t.relname <> 'schema_migrations' GROUP BY c.oid, t.relname, c.contype",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        // Less the time indexes only PostgreSQL has (`logs::first_id_since`).
        let indexes = client
            .query(
                "SELECT t.relname::text, x.relname::text, i.indisunique, \
                     (SELECT string_agg(a.attname::text || CASE WHEN i.indoption[k.ord - 1] & 1 = 1 THEN ' DESC' ELSE '' END, \
                          ',' ORDER BY k.ord) \
                      FROM unnest(i.indkey) WITH ORDINALITY AS k(col, ord) \
                      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.col), \
                     COALESCE(pg_get_expr(i.indpred, i.indrelid), '') \
                 FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
                 WHERE x.relnamespace = current_schema()::regnamespace AND t.relname <> 'schema_migrations' \
                 AND x.relname NOT IN ('notifications_by_received_at', 'webhook_outbox_by_created_at', 'webhook_attempts_by_at') \
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let predicate: String = r.get(4);
                (r.get(0), r.get(1), r.get(2), r.get(3), normalized(&predicate))
            })
            .collect();
        let checks = client
            .query(
                "SELECT t.relname::text, pg_get_constraintdef(c.oid) \
                 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
                 WHERE c.contype = 'c' AND c.connamespace = current_schema()::regnamespace",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let check: String = r.get(1);
                (r.get(0), normalized(&check))
            })
            .collect();
        let foreign_keys = client
            .query(
                "SELECT t.relname::text, a.attname::text, rt.relname::text, ra.attname::text \
                 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class rt ON rt.oid = c.confrelid \
                 CROSS JOIN LATERAL unnest(c.conkey, c.confkey) AS k(col, rcol) \
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.col \
                 JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = k.rcol \
                 WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        Shape {
            tables: grouped(columns),
            keys,
            indexes,
            checks,
            foreign_keys,
        }
    }

    /// What `Shape` reads as SQLite's storage classes: the columns that are not BIGINT,
    /// BYTEA or TEXT COLLATE "C" (an id without "C" sorts by ICU's rules; an INTEGER
    /// money or time column refuses values from 2^31), as (table, column, type, collation).
    async fn pg_unusual_columns(
        client: &impl tokio_postgres::GenericClient,
    ) -> Vec<(String, String, String, Option<String>)> {
        client
            .query(
                "SELECT table_name::text COLLATE \"C\" AS t, column_name::text COLLATE \"C\" AS c, \
                     data_type::text, collation_name::text \
                 FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name <> 'schema_migrations' \
                 AND NOT (data_type IN ('bigint', 'bytea') OR (data_type = 'text' AND collation_name = 'C')) \
                 ORDER BY t, c",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// Only the two 0/1 flags are INTEGER (as the baseline's header says).
    fn only_the_flags() -> Vec<(String, String, String, Option<String>)> {
        [("notifications", "unverified"), ("orders", "late_payment")]
            .iter()
            .map(|(t, c)| (t.to_string(), c.to_string(), "integer".to_owned(), None))
            .collect()
    }

    async fn recorded(client: &Client) -> Vec<(i64, String)> {
        client
            .query(
                "SELECT version, name FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Creates `schema_migrations` and records `names` in it as versions 1, 2, … applied at 0.
    async fn record_as_applied(client: &impl tokio_postgres::GenericClient, names: &[&str]) {
        client
            .batch_execute(
                "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .await
            .unwrap();
        for (i, name) in names.iter().enumerate() {
            client
                .execute(
                    "INSERT INTO schema_migrations VALUES ($1, $2, 0)",
                    &[&(i as i64 + 1), name],
                )
                .await
                .unwrap();
        }
    }

    /// Takes the migration lock as another instance migrating would, in a transaction
    /// left open: the lock is held until it ends.
    async fn hold_migration_lock(client: &mut Client) -> tokio_postgres::Transaction<'_> {
        let tx = client.transaction().await.unwrap();
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('kassa:' || current_schema()))",
            &[],
        )
        .await
        .unwrap();
        tx
    }

    async fn backend_pid(client: &Client) -> i32 {
        client
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Waits until session `pid` waits for a lock (true) or `task` has ended (false).
    async fn wait_for_lock_or_end<T>(
        tx: &tokio_postgres::Transaction<'_>,
        pid: i32,
        task: &tokio::task::JoinHandle<T>,
    ) -> bool {
        let mut waiting = false;
        while !waiting && !task.is_finished() {
            waiting = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock')",
                    &[&pid],
                )
                .await
                .unwrap()
                .get(0);
            tokio::task::yield_now().await;
        }
        waiting
    }

    #[tokio::test]
    async fn a_fresh_schema_gets_the_tables_columns_indexes_and_foreign_keys_sqlite_has() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let mut client = schema.connect().await;
        assert_eq!(current_version(&client).await.unwrap(), 0);

        let applied = run(&mut client).await.unwrap();

        assert_eq!(applied, names());
        assert_eq!(pg_shape(&client).await, sqlite_shape());
        assert_eq!(pg_unusual_columns(&client).await, only_the_flags());
        let want: Vec<(i64, String)> = names()
            .iter()
            .enumerate()
            .map(|(i, n)| (i as i64 + 1, n.to_string()))
            .collect();
        assert_eq!(recorded(&client).await, want);
        assert_eq!(current_version(&client).await.unwrap(), latest_version());
    }

    #[tokio::test]
    async fn the_shape_comparison_sees_a_changed_width_collation_index_predicate_check_or_default() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let mut client = schema.connect().await;
        run(&mut client).await.unwrap();
        let sqlite = sqlite_shape();
        let mut unseen = Vec::new();
        for drift in [
            "ALTER TABLE orders ALTER COLUMN amount TYPE INTEGER",
            "ALTER TABLE orders ALTER COLUMN currency TYPE TEXT COLLATE \"POSIX\"",
            "DROP INDEX orders_by_amount; CREATE INDEX orders_by_amount ON orders (amount, id DESC)",
            "DROP INDEX refunds_pending; CREATE INDEX refunds_pending ON refunds (updated_at) WHERE status = 'failed'",
            "ALTER TABLE orders DROP CONSTRAINT orders_amount_check, \
             ADD CONSTRAINT orders_amount_check CHECK (amount >= 0)",
            "ALTER TABLE orders ALTER COLUMN checks_done SET DEFAULT 1",
        ] {
            let tx = client.transaction().await.unwrap();
            tx.batch_execute(drift).await.unwrap();
            if pg_shape(&tx).await == sqlite && pg_unusual_columns(&tx).await == only_the_flags() {
                unseen.push(drift);
            }
            tx.rollback().await.unwrap();
        }
        assert_eq!(unseen, Vec::<&str>::new());
        // And without the drift, the same again.
        assert_eq!(pg_shape(&client).await, sqlite);
    }

    #[tokio::test]
    async fn running_the_migrations_again_applies_nothing_and_changes_nothing() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let mut client = schema.connect().await;
        run(&mut client).await.unwrap();
        let before = (recorded_with_times(&client).await, pg_shape(&client).await);

        assert_eq!(run(&mut client).await.unwrap(), Vec::<&str>::new());

        assert_eq!(
            (recorded_with_times(&client).await, pg_shape(&client).await),
            before
        );
    }

    async fn recorded_with_times(client: &Client) -> Vec<(i64, String, i64)> {
        client
            .query(
                "SELECT version, name, applied_at FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }

    #[tokio::test]
    async fn a_schema_written_by_a_newer_kassa_is_refused_and_left_as_it_was() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let mut client = schema.connect().await;
        client
            .batch_execute(
                "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL); \
                 INSERT INTO schema_migrations VALUES (99, '0099_from_the_future', 7)",
            )
            .await
            .unwrap();

        let refused = run(&mut client).await;

        assert!(
            matches!(refused, Err(DbError::TooNew { found: 99, supported }) if supported == latest_version()),
            "{refused:?}"
        );
        let tables: Vec<String> = client
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(tables, ["schema_migrations"]);
        assert_eq!(
            recorded_with_times(&client).await,
            [(99, "0099_from_the_future".to_owned(), 7)]
        );
        assert_eq!(current_version(&client).await.unwrap(), 99);
    }

    #[tokio::test]
    async fn a_schema_at_the_baseline_gets_only_the_later_migrations() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let mut client = schema.connect().await;
        // What a kassa of version 10 left: the baseline alone.
        client.batch_execute(STEPS[0].sql).await.unwrap();
        record_as_applied(&client, STEPS[0].covers).await;
        client
            .batch_execute(
                "INSERT INTO orders (id, out_trade_no, amount, currency, subject, provider, status, created_at, expires_at, updated_at) \
                 VALUES ('ord_a', 'p-1', 300, 'CNY', 'Tea', 'alipay', 'paid', 0, 0, 0); \
                 INSERT INTO refunds (id, order_id, amount, reason, status, created_at, updated_at) VALUES \
                 ('rf_b', 'ord_a', 100, 'x', 'succeeded', 5, 5), ('rf_a', 'ord_a', 100, 'x', 'pending', 5, 5), \
                 ('rf_0', 'ord_a', 100, 'x', 'pending', 9, 9)",
            )
            .await
            .unwrap();

        let applied = run(&mut client).await.unwrap();

        assert_eq!(applied, names()[10..]);
        let seqs: Vec<(String, i64)> = client
            .query("SELECT id, seq FROM refunds ORDER BY seq", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        // By time, then by id for the two of the same millisecond.
        assert_eq!(
            seqs,
            [
                ("rf_a".to_owned(), 1),
                ("rf_b".to_owned(), 2),
                ("rf_0".to_owned(), 3)
            ]
        );
        assert_eq!(pg_shape(&client).await, sqlite_shape());
        assert_eq!(pg_unusual_columns(&client).await, only_the_flags());
    }

    #[tokio::test]
    async fn a_second_process_migrating_at_once_waits_for_the_first_and_then_applies_nothing() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        // The first process, halfway through: lock taken, everything applied, not committed.
        let mut first = schema.connect().await;
        let tx = hold_migration_lock(&mut first).await;
        for step in STEPS {
            tx.batch_execute(step.sql).await.unwrap();
        }
        record_as_applied(&tx, &names()).await;

        let mut second = schema.connect().await;
        let pid = backend_pid(&second).await;
        let second = tokio::spawn(async move { run(&mut second).await });
        // Until the second is stuck behind the first (on the advisory lock; without it,
        // on the first's uncommitted schema_migrations), or has ended without waiting.
        let waiting = wait_for_lock_or_end(&tx, pid, &second).await;
        assert!(waiting, "the second ended without waiting: {:?}", second.await);
        tx.commit().await.unwrap();

        assert_eq!(second.await.unwrap().unwrap(), Vec::<&str>::new());
        assert_eq!(recorded(&first).await.len(), names().len());
    }

    #[tokio::test]
    async fn a_migration_waits_for_the_lock_and_runs_beyond_the_session_s_own_timeouts() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        // Another instance holds the migration lock.
        let mut first = schema.connect().await;
        let tx = hold_migration_lock(&mut first).await;
        // Bounds far shorter than the wait below, as every pooled connection has some.
        let mut second = schema.connect().await;
        second
            .batch_execute("SET lock_timeout = '50ms'; SET statement_timeout = '50ms'")
            .await
            .unwrap();
        let pid = backend_pid(&second).await;
        let migrating = tokio::spawn(async move { (run(&mut second).await, second) });
        wait_for_lock_or_end(&tx, pid, &migrating).await;
        // Ten times both bounds, still holding the lock.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        tx.commit().await.unwrap();

        let (result, second) = migrating.await.unwrap();
        assert_eq!(result.unwrap(), names());
        // Lifted for the migration only: the session keeps its own afterwards.
        let kept: String = second
            .query_one(
                "SELECT current_setting('lock_timeout') || ' ' || current_setting('statement_timeout')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(kept, "50ms 50ms");
    }

    const INSERT_ORDER: &str = "INSERT INTO orders (id, out_trade_no, amount, currency, subject, provider, status, \
         refunded_amount, created_at, expires_at, updated_at) VALUES (?1, ?2, ?3, 'CNY', 'Tea', 'alipay', 'pending', ?4, 0, 0, 0)";

    fn orders(db: &Database) -> Vec<(String, String, i64)> {
        db.read_blocking(|tx| {
            tx.all(
                "SELECT id, out_trade_no, amount FROM orders ORDER BY id",
                args![],
                |r| Ok((r.get_string(0)?, r.get_string(1)?, r.get_i64(2)?)),
            )
        })
        .unwrap()
    }

    both_backends! {
        fn ids_are_ordered_by_their_bytes_and_the_checks_and_uniques_refuse_what_sqlite_refuses(db: &Database) {
            for (n, id) in ["ord__z", "ord_1", "ord_a", "ord_B", "ord_Z"].into_iter().enumerate() {
                db.write_blocking(move |tx| tx.exec(INSERT_ORDER, args![id, format!("p-{n}"), 100, 0]))
                    .unwrap();
            }
            let stored = orders(db);
            // Bytes, as SQLite compares; an ICU collation would give ord__z ord_1 ord_a ord_B ord_Z.
            let ids: Vec<&str> = stored.iter().map(|(id, _, _)| id.as_str()).collect();
            assert_eq!(ids, ["ord_1", "ord_B", "ord_Z", "ord__z", "ord_a"]);

            // A second order with a taken out_trade_no, an amount of 0, more refunded than paid.
            for (id, out_trade_no, amount, refunded) in
                [("ord_x", "p-0", 100, 0), ("ord_y", "p-9", 0, 0), ("ord_z", "p-8", 100, 101)]
            {
                let refused =
                    db.write_blocking(move |tx| tx.exec(INSERT_ORDER, args![id, out_trade_no, amount, refunded]));
                assert!(refused.is_err(), "{id} was stored");
            }
            // A notification flag other than 0 or 1.
            let refused = db.write_blocking(|tx| {
                tx.exec(
                    "INSERT INTO notifications (provider, received_at, headers, body, verdict, unverified) \
                     VALUES ('alipay', 0, '{}', ?1, 'rejected', 2)",
                    args![&b"x"[..]],
                )
            });
            assert!(refused.is_err(), "unverified = 2 was stored");
            assert_eq!(orders(db), stored);
            let notifications = db
                .read_blocking(|tx| tx.one("SELECT COUNT(*) FROM notifications", args![], |r| r.get_i64(0)))
                .unwrap();
            assert_eq!(notifications, 0);
        }
    }
}
