//! `kassa migrate --to postgres://…`: every row of a SQLite database copied into an empty
//! PostgreSQL one in one transaction, ids kept, and checked before it commits: each
//! table's row count and a sha256 over its rows in key order, rendered the same way from
//! both sides and read back from the target inside the copying transaction, so a copy
//! that differs is never committed.
//!
//! The tables are named here, not discovered, because their order matters (parents
//! before the rows whose foreign keys name them); a test holds the list to the schema,
//! so a table a migration adds cannot be left behind.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::ControlFlow;

use ring::digest;

use super::sql::{args, Arg, Field, Row};
use super::{DbError, DbResult, Offline, Tx};

/// Every table kassa keeps rows in, parents before children. Not here: each backend's
/// own migration bookkeeping (SQLite's is `PRAGMA user_version`, PostgreSQL's
/// `schema_migrations`, written by migrating the target), and `rate_limits`, whose
/// counters only last a minute's window (UNLOGGED on PostgreSQL: a crash empties it too).
pub const TABLES: &[&str] = &[
    "orders",
    "notifications",
    "order_events",
    "webhook_outbox",
    "webhook_attempts",
    "api_keys",
    "idempotency_keys",
    "refunds",
    "sandbox_trades",
    "sandbox_refunds",
    "sandbox_deliveries",
    "sandbox_faults",
    "webhook_secrets",
    "webhook_endpoints",
    "admin_users",
    "admin_sessions",
    "admin_recovery_codes",
    "admin_pending_logins",
    "admin_settings",
    "login_attempts",
    "audit_log",
    "provider_calls",
    "late_payment_acks",
    "leases",
    "secrets",
];

/// Bound arguments per INSERT: under SQLite's limit (32766) and PostgreSQL's (65535).
const MAX_ARGS: usize = 30_000;
/// Rows per INSERT, whatever the width: enough that round trips do not dominate.
const MAX_ROWS: usize = 500;

/// One table's row count and checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSum {
    pub table: &'static str,
    pub rows: u64,
    /// Lowercase hex.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the target database is not empty: {table} has {rows} row(s). kassa migrate --to copies into an empty database only; nothing was written")]
    NotEmpty { table: &'static str, rows: i64 },
    #[error("{table}: the two databases' columns differ ({detail}); nothing was written")]
    Columns { table: &'static str, detail: String },
    /// A row the target refused (text PostgreSQL cannot hold, a constraint the source
    /// did not enforce), or a statement that failed, while copying this table.
    #[error("{table}: {error}; the transaction was rolled back, nothing was written")]
    Failed { table: &'static str, error: DbError },
    #[error("{table}: the source has no primary key to order its rows by; nothing was written")]
    NoKey { table: &'static str },
    #[error("{table}: the copy does not match the source (source {} rows, sha256 {}; copy {} rows, sha256 {}); the transaction was rolled back, nothing was written", .original.rows, .original.sha256, .copy.rows, .copy.sha256)]
    Mismatch {
        table: &'static str,
        original: TableSum,
        copy: TableSum,
    },
}

/// Copies every table of `from` (SQLite, migrated to this binary's version) into `to`
/// (migrated, every table empty) in one transaction on each side, and commits only when
/// every table's count and checksum match. The source is read inside a write
/// transaction, so no other process (a command-line tool) changes it meanwhile.
pub fn copy(from: &mut Offline, to: &mut Offline) -> Result<Vec<TableSum>, CopyError> {
    copy_checked(from, to, |_, _| Ok(()))
}

/// `copy`, with `before_verify` run on the target's transaction before each table is
/// checked: the tests change a row there to see a difference roll everything back.
fn copy_checked(
    from: &mut Offline,
    to: &mut Offline,
    mut before_verify: impl FnMut(&Tx<'_>, &'static str) -> DbResult<()>,
) -> Result<Vec<TableSum>, CopyError> {
    // A refusal must roll back both transactions, which only an error does; the
    // refusal itself is kept here to be returned as it is.
    let mut refused = None;
    let result = from.immediate(|src| {
        to.immediate(|dst| {
            copy_all(src, dst, &mut before_verify).map_err(|e| match e {
                CopyError::Db(e) => e,
                other => {
                    let said = DbError::Abandoned(other.to_string());
                    refused = Some(other);
                    said
                }
            })
        })
    });
    match (result, refused) {
        (_, Some(refusal)) => Err(refusal),
        (Ok(sums), None) => Ok(sums),
        (Err(e), None) => Err(e.into()),
    }
}

/// How one table is copied: the source's columns and key, the target's identities.
struct Plan {
    table: &'static str,
    columns: Vec<String>,
    key: Vec<String>,
    identities: Vec<String>,
}

impl Plan {
    fn select(&self) -> String {
        format!(
            "SELECT {} FROM {} ORDER BY {}",
            quoted(&self.columns),
            ident(self.table),
            quoted(&self.key)
        )
    }
}

fn copy_all(
    src: &Tx<'_>,
    dst: &Tx<'_>,
    before_verify: &mut impl FnMut(&Tx<'_>, &'static str) -> DbResult<()>,
) -> Result<Vec<TableSum>, CopyError> {
    if dst.is_postgres() {
        // One long transaction on purpose: no per-statement bound, and the source is
        // read between the statements.
        dst.one(
            "SELECT set_config('statement_timeout', '0', true), \
             set_config('idle_in_transaction_session_timeout', '0', true)",
            args![],
            |_| Ok(()),
        )?;
        // No other client (a server started too early) writes these tables before
        // this commits: its rows would take ids the copy keeps.
        let tables: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
        dst.exec(
            &format!("LOCK TABLE {} IN EXCLUSIVE MODE", quoted(&tables)),
            args![],
        )?;
    }
    let mut plans = Vec::with_capacity(TABLES.len());
    for &table in TABLES {
        plans.push(plan(src, dst, table)?);
    }
    for &table in TABLES {
        let rows = dst.one(&format!("SELECT COUNT(*) FROM {}", ident(table)), args![], |r| {
            r.get_i64(0)
        })?;
        if rows > 0 {
            return Err(CopyError::NotEmpty { table, rows });
        }
    }
    let failed = |table| move |error| CopyError::Failed { table, error };
    for plan in &plans {
        copy_table(src, dst, plan).map_err(failed(plan.table))?;
    }
    for plan in &plans {
        follow_identities(dst, plan).map_err(failed(plan.table))?;
    }
    let mut sums = Vec::with_capacity(plans.len());
    for plan in &plans {
        before_verify(dst, plan.table)?;
        sums.push(verify(src, dst, plan)?);
    }
    Ok(sums)
}

/// A table's columns (in the table's order), its primary key (in the key's order) and
/// its identity columns (PostgreSQL; SQLite's INTEGER PRIMARY KEY needs no sequence).
struct Columns {
    names: Vec<String>,
    key: Vec<String>,
    identities: Vec<String>,
}

fn columns(tx: &Tx<'_>, table: &str) -> DbResult<Columns> {
    if tx.is_postgres() {
        let rows = tx.all(
            "SELECT a.attname::text, a.attidentity <> '' FROM pg_attribute a \
             WHERE a.attrelid = to_regclass(?1) AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            args![table],
            |r| Ok((r.get_string(0)?, r.get_bool(1)?)),
        )?;
        return Ok(Columns {
            identities: rows.iter().filter(|c| c.1).map(|c| c.0.clone()).collect(),
            names: rows.into_iter().map(|c| c.0).collect(),
            key: Vec::new(),
        });
    }
    let rows = tx.all(
        "SELECT name, pk FROM pragma_table_info(?1) ORDER BY cid",
        args![table],
        |r| Ok((r.get_string(0)?, r.get_i64(1)?)),
    )?;
    let mut key: Vec<&(String, i64)> = rows.iter().filter(|c| c.1 > 0).collect();
    key.sort_by_key(|c| c.1);
    Ok(Columns {
        key: key.into_iter().map(|c| c.0.clone()).collect(),
        names: rows.iter().map(|c| c.0.clone()).collect(),
        identities: Vec::new(),
    })
}

/// The source's columns, which the target must have by the same names, no more.
fn plan(src: &Tx<'_>, dst: &Tx<'_>, table: &'static str) -> Result<Plan, CopyError> {
    let from = columns(src, table)?;
    let to = columns(dst, table)?;
    let missing: Vec<&str> = from
        .names
        .iter()
        .filter(|c| !to.names.contains(c))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = to
        .names
        .iter()
        .filter(|c| !from.names.contains(c))
        .map(String::as_str)
        .collect();
    if from.names.is_empty() || !missing.is_empty() || !extra.is_empty() {
        let mut detail = Vec::new();
        if from.names.is_empty() {
            detail.push("the source has no such table".to_owned());
        }
        if !missing.is_empty() {
            detail.push(format!("only in the source: {}", missing.join(", ")));
        }
        if !extra.is_empty() {
            detail.push(format!("only in the target: {}", extra.join(", ")));
        }
        return Err(CopyError::Columns {
            table,
            detail: detail.join("; "),
        });
    }
    if from.key.is_empty() {
        return Err(CopyError::NoKey { table });
    }
    Ok(Plan {
        table,
        columns: from.names,
        key: from.key,
        identities: to.identities,
    })
}

/// Streams the source's rows into multi-row INSERTs, ids and all.
fn copy_table(src: &Tx<'_>, dst: &Tx<'_>, plan: &Plan) -> DbResult<()> {
    let width = plan.columns.len();
    let per_insert = (MAX_ARGS / width).clamp(1, MAX_ROWS);
    let mut batch: Vec<Arg<'static>> = Vec::with_capacity(per_insert * width);
    src.each(&plan.select(), args![], |row| {
        for i in 0..width {
            batch.push(owned(row.field(i)?));
        }
        if batch.len() == per_insert * width {
            insert(dst, plan, &batch)?;
            batch.clear();
        }
        Ok(ControlFlow::Continue(()))
    })?;
    if !batch.is_empty() {
        insert(dst, plan, &batch)?;
    }
    Ok(())
}

fn owned(field: Field<'_>) -> Arg<'static> {
    match field {
        Field::Null => Arg::Null,
        Field::Int(v) => Arg::Int(v),
        Field::Text(t) => Arg::Text(Cow::Owned(t.to_owned())),
        Field::Bytes(b) => Arg::Bytes(Cow::Owned(b.to_vec())),
    }
}

/// One INSERT of `values.len() / width` rows.
fn insert(dst: &Tx<'_>, plan: &Plan, values: &[Arg<'_>]) -> DbResult<()> {
    let width = plan.columns.len();
    let rows = values.len() / width;
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        ident(plan.table),
        quoted(&plan.columns)
    );
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..width {
            if column > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "?{}", row * width + column + 1);
        }
        sql.push(')');
    }
    let inserted = dst.exec(&sql, values)?;
    if inserted != rows {
        return Err(DbError::Corrupt(format!(
            "{}: {inserted} of {rows} rows were inserted",
            plan.table
        )));
    }
    Ok(())
}

/// Moves each identity's sequence past the largest id copied: the rows came with their
/// ids, which a sequence does not see, and the next insert would otherwise take id 1.
fn follow_identities(dst: &Tx<'_>, plan: &Plan) -> DbResult<()> {
    for column in &plan.identities {
        dst.one(
            &format!(
                "SELECT setval(pg_get_serial_sequence(?1, ?2), \
                 COALESCE((SELECT MAX({}) FROM {}), 0) + 1, false)",
                ident(column),
                ident(plan.table)
            ),
            args![plan.table, column.as_str()],
            |_| Ok(()),
        )?;
    }
    Ok(())
}

/// Both sides' count and checksum of one table; a difference is a `Mismatch`.
fn verify(src: &Tx<'_>, dst: &Tx<'_>, plan: &Plan) -> Result<TableSum, CopyError> {
    let original = checksum(src, plan)?;
    let copy = checksum(dst, plan)?;
    if original != copy {
        return Err(CopyError::Mismatch {
            table: plan.table,
            original,
            copy,
        });
    }
    Ok(copy)
}

fn checksum(tx: &Tx<'_>, plan: &Plan) -> DbResult<TableSum> {
    let mut sha = digest::Context::new(&digest::SHA256);
    let mut rows = 0_u64;
    let mut line = String::new();
    tx.each(&plan.select(), args![], |row| {
        render_row(&mut line, row, plan.columns.len())?;
        sha.update(line.as_bytes());
        rows += 1;
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(TableSum {
        table: plan.table,
        rows,
        sha256: hex(sha.finish().as_ref()),
    })
}

fn render_row(line: &mut String, row: &Row<'_>, width: usize) -> DbResult<()> {
    line.clear();
    for i in 0..width {
        render(line, row.field(i)?);
    }
    line.push('\n');
    Ok(())
}

/// One value as the checksum sees it. Tagged, and text and bytes length-prefixed, so
/// that no two different rows render alike: NULL is not '', 1 is not '1', the text
/// "ab" is not the bytes 0x6162, and ("a", "b") is not ("ab", "").
fn render(line: &mut String, field: Field<'_>) {
    // Writing to a String cannot fail.
    let _ = match field {
        Field::Null => write!(line, "N;"),
        Field::Int(v) => write!(line, "I{v};"),
        Field::Text(t) => write!(line, "T{}:{t};", t.len()),
        Field::Bytes(b) => write!(line, "B{}:{};", b.len(), hex(b)),
    };
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A double-quoted identifier (kassa's names are plain; quoting keeps them so).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| ident(n)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::pg::testing::{TestSchema, SKIPPED};
    use crate::db::sql::tests::database;

    /// Rows of several kinds: text with non-ASCII, NULLs, bytes with a zero byte, ids
    /// with gaps, composite keys, children after parents.
    const FILL: &[&str] = &[
        "INSERT INTO orders (id, out_trade_no, amount, currency, subject, provider, status, qr_code, \
         created_at, expires_at, updated_at) VALUES \
         ('ord_b', 'p-2', 250, 'CNY', 'Tee \u{2615}', 'alipay', 'paid', NULL, 2, 900, 3), \
         ('ord_a', 'p-1', 100, 'CNY', 'Tea', 'wechat', 'pending', 'weixin://x', 1, 900, 1), \
         ('ord_c', 'p-3', 7, 'JPY', '', 'alipay', 'closed', NULL, 3, 900, 4)",
        "INSERT INTO notifications (id, provider, received_at, headers, body, order_id, verdict) VALUES \
         (5, 'alipay', 10, '{}', x'610062', 'ord_b', 'applied'), (12, 'wechat', 11, '{}', x'', NULL, 'rejected')",
        "INSERT INTO order_events (id, order_id, at, transition, outcome, from_status, to_status, source, actor, \
         notification_id) VALUES (3, 'ord_b', 10, 'pay', 'applied', 'pending', 'paid', 'notify', 'alipay', 5)",
        "INSERT INTO api_keys (id, name, prefix, key_hash, created_at, revoked_at) VALUES \
         (7, 'shop', 'kk_a', x'00ff10', 1, NULL), (9, 'old', 'kk_b', x'01', 2, 5)",
        "INSERT INTO idempotency_keys (api_key_id, key, request_hash, order_id, created_at) VALUES \
         (7, 'k2', x'aa', 'ord_a', 1), (7, 'k1', x'bb', NULL, 2)",
        "INSERT INTO secrets (name, value, created_at) VALUES ('sandbox.key', x'000102', 1)",
        "INSERT INTO leases (name, holder, expires_at) VALUES ('expiry', 'host-1', 99)",
    ];

    fn filled() -> (tempfile::TempDir, Offline) {
        let (dir, mut db) = database();
        db.immediate(|tx| {
            for sql in FILL {
                tx.exec(sql, args![])?;
            }
            Ok(())
        })
        .unwrap();
        (dir, db)
    }

    fn count(db: &Offline, table: &str) -> i64 {
        db.read(|tx| {
            tx.one(&format!("SELECT COUNT(*) FROM {table}"), args![], |r| {
                r.get_i64(0)
            })
        })
        .unwrap()
    }

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn sum<'a>(sums: &'a [TableSum], table: &str) -> &'a TableSum {
        sums.iter().find(|s| s.table == table).unwrap()
    }

    fn check_copied(sums: &[TableSum], to: &Offline) {
        assert_eq!(sums.iter().map(|s| s.table).collect::<Vec<_>>(), TABLES);
        for (table, rows) in [
            ("orders", 3),
            ("notifications", 2),
            ("api_keys", 2),
            ("idempotency_keys", 2),
        ] {
            assert_eq!(sum(sums, table).rows, rows as u64, "{table}");
            assert_ne!(sum(sums, table).sha256, EMPTY_SHA256, "{table}");
            assert_eq!(count(to, table), rows, "{table}");
        }
        assert_eq!(sum(sums, "refunds").rows, 0);
        assert_eq!(sum(sums, "refunds").sha256, EMPTY_SHA256);
        let keys = to
            .read(|tx| {
                tx.all(
                    "SELECT id, key_hash, revoked_at FROM api_keys ORDER BY id",
                    args![],
                    |r| Ok((r.get_i64(0)?, r.get_bytes(1)?, r.get_opt_i64(2)?)),
                )
            })
            .unwrap();
        assert_eq!(keys, [(7, vec![0, 0xff, 0x10], None), (9, vec![1], Some(5))]);
        let subject = to.read(|tx| {
            tx.one(
                "SELECT subject, qr_code FROM orders WHERE id = 'ord_b'",
                args![],
                |r| Ok((r.get_string(0)?, r.get_opt_string(1)?)),
            )
        });
        assert_eq!(subject.unwrap(), ("Tee \u{2615}".to_owned(), None));
    }

    #[test]
    fn a_copy_keeps_every_row_and_id_and_reports_each_tables_count_and_sum() {
        let (_a, mut from) = filled();
        let (_b, mut to) = database();
        let sums = copy(&mut from, &mut to).unwrap();
        check_copied(&sums, &to);
        // Another copy of the same source gives the same sums.
        let (_c, mut other) = database();
        assert_eq!(copy(&mut from, &mut other).unwrap(), sums);
    }

    #[test]
    fn a_second_copy_is_refused_naming_a_table_with_rows_and_writes_nothing() {
        let (_a, mut from) = filled();
        let (_b, mut to) = database();
        copy(&mut from, &mut to).unwrap();
        match copy(&mut from, &mut to) {
            Err(CopyError::NotEmpty {
                table: "orders",
                rows: 3,
            }) => {}
            other => panic!("not refused for orders: {other:?}"),
        }
        assert_eq!(count(&to, "orders"), 3);
        assert_eq!(count(&to, "api_keys"), 2);
    }

    #[test]
    fn a_row_that_differs_at_the_check_rolls_back_the_whole_copy_and_names_its_table() {
        let (_a, mut from) = filled();
        let (_b, mut to) = database();
        let err = copy_checked(&mut from, &mut to, |tx, table| {
            if table == "api_keys" {
                tx.exec("UPDATE api_keys SET name = 'other' WHERE id = 9", args![])?;
            }
            Ok(())
        })
        .unwrap_err();
        match &err {
            CopyError::Mismatch {
                table: "api_keys",
                original,
                copy,
            } => {
                assert_eq!((original.rows, copy.rows), (2, 2));
                assert_ne!(original.sha256, copy.sha256);
            }
            other => panic!("not a mismatch of api_keys: {other:?}"),
        }
        assert!(err.to_string().contains("rolled back"), "{err}");
        for table in TABLES {
            assert_eq!(count(&to, table), 0, "{table} kept rows");
        }
        // The source is as it was.
        assert_eq!(count(&from, "orders"), 3);
        // A row missing at the check is a mismatch too.
        let err = copy_checked(&mut from, &mut to, |tx, table| {
            if table == "idempotency_keys" {
                tx.exec("DELETE FROM idempotency_keys WHERE key = 'k1'", args![])?;
            }
            Ok(())
        })
        .unwrap_err();
        assert!(
            matches!(&err, CopyError::Mismatch { table: "idempotency_keys", copy, .. } if copy.rows == 1),
            "{err:?}"
        );
        assert_eq!(count(&to, "orders"), 0);
    }

    #[test]
    fn columns_that_differ_are_named_and_nothing_is_written() {
        let (_a, mut from) = filled();
        let (_b, mut to) = database();
        to.immediate(|tx| tx.exec("ALTER TABLE leases ADD COLUMN extra TEXT", args![]))
            .unwrap();
        let err = copy(&mut from, &mut to).unwrap_err();
        match &err {
            CopyError::Columns {
                table: "leases",
                detail,
            } => assert_eq!(detail, "only in the target: extra"),
            other => panic!("not a column difference: {other:?}"),
        }
        assert_eq!(count(&to, "orders"), 0);
    }

    #[test]
    fn values_that_differ_never_render_alike() {
        let rendered = |fields: &[Field<'_>]| {
            let mut line = String::new();
            for f in fields {
                render(&mut line, *f);
            }
            line
        };
        let rows: &[&[Field<'_>]] = &[
            &[Field::Null],
            &[Field::Text("")],
            &[Field::Bytes(b"")],
            &[Field::Int(1)],
            &[Field::Text("1")],
            &[Field::Text("ab")],
            &[Field::Bytes(b"ab")],
            &[Field::Text("6162")],
            &[Field::Text("a"), Field::Text("b")],
            &[Field::Text("ab"), Field::Text("")],
            &[Field::Text("a;T1:b")],
            &[Field::Int(-1)],
        ];
        let all: Vec<String> = rows.iter().map(|r| rendered(r)).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(rendered(&[Field::Bytes(&[0, 0xff])]), "B2:00ff;");
        assert_eq!(
            rendered(&[Field::Text("\u{2615}"), Field::Int(-5)]),
            "T3:\u{2615};I-5;"
        );
    }

    #[test]
    fn the_list_names_every_table_of_the_schema_once_each_after_the_tables_it_references() {
        let (_dir, db) = database();
        let mut tables = db
            .read(|tx| {
                tx.all(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                    args![],
                    |r| r.get_string(0),
                )
            })
            .unwrap();
        tables.retain(|t| t != "rate_limits");
        tables.sort();
        let mut listed: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
        listed.sort();
        assert_eq!(listed, tables);
        for (i, table) in TABLES.iter().enumerate() {
            let parents = db
                .read(|tx| {
                    tx.all(
                        "SELECT \"table\" FROM pragma_foreign_key_list(?1)",
                        args![*table],
                        |r| r.get_string(0),
                    )
                })
                .unwrap();
            for parent in parents {
                let at = TABLES.iter().position(|t| *t == parent);
                assert!(
                    at.is_some_and(|at| at < i),
                    "{table} references {parent}, listed after it"
                );
            }
        }
    }

    #[test]
    fn a_row_postgresql_refuses_names_its_table_and_nothing_is_written() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let mut to = Offline::open_target(&schema.target()).unwrap();
        to.migrate().unwrap();
        let (_a, mut from) = filled();
        // SQLite text may hold a NUL character; PostgreSQL text cannot.
        from.immediate(|tx| {
            tx.exec(
                "INSERT INTO audit_log (id, at, actor, action, outcome, detail) \
                 VALUES (4, 1, 'a', 'b', 'ok', CAST(x'610062' AS TEXT))",
                args![],
            )
        })
        .unwrap();
        let err = copy(&mut from, &mut to).unwrap_err();
        assert!(
            matches!(
                &err,
                CopyError::Failed {
                    table: "audit_log",
                    ..
                }
            ),
            "{err:?}"
        );
        for table in TABLES {
            assert_eq!(count(&to, table), 0, "{table} kept rows");
        }
        drop(to);
    }

    #[test]
    fn on_postgresql_the_list_is_the_schema_and_a_copy_keeps_ids_and_moves_every_sequence_past_them() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let mut to = Offline::open_target(&schema.target()).unwrap();
        to.migrate().unwrap();
        let mut tables = to
            .read(|tx| {
                tx.all(
                    "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
                    args![],
                    |r| r.get_string(0),
                )
            })
            .unwrap();
        tables.retain(|t| t != "rate_limits" && t != "schema_migrations");
        tables.sort();
        let mut listed: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
        listed.sort();
        assert_eq!(listed, tables);

        let (_a, mut from) = filled();
        // A difference at the check rolls back on PostgreSQL too.
        let err = copy_checked(&mut from, &mut to, |tx, table| {
            if table == "orders" {
                tx.exec("UPDATE orders SET subject = 'x' WHERE id = 'ord_c'", args![])?;
            }
            Ok(())
        })
        .unwrap_err();
        assert!(
            matches!(err, CopyError::Mismatch { table: "orders", .. }),
            "{err:?}"
        );
        for table in TABLES {
            assert_eq!(count(&to, table), 0, "{table} kept rows");
        }

        let sums = copy(&mut from, &mut to).unwrap();
        check_copied(&sums, &to);
        // The same sums as a copy into SQLite: both sides render alike.
        let (_b, mut sqlite) = database();
        assert_eq!(copy(&mut from, &mut sqlite).unwrap(), sums);
        // New rows take ids after the copied ones, in every table with an identity.
        let ids = to
            .immediate(|tx| {
                let key = tx.one(
                    "INSERT INTO api_keys (name, prefix, key_hash, created_at) \
                     VALUES ('new', 'kk_c', ?1, 3) RETURNING id",
                    args![&b"new"[..]],
                    |r| r.get_i64(0),
                )?;
                let notification = tx.one(
                    "INSERT INTO notifications (provider, received_at, headers, body, verdict) \
                     VALUES ('alipay', 12, '{}', ?1, 'applied') RETURNING id",
                    args![&b""[..]],
                    |r| r.get_i64(0),
                )?;
                let audit = tx.one(
                    "INSERT INTO audit_log (at, actor, action, outcome) VALUES (1, 'a', 'b', 'ok') RETURNING id",
                    args![],
                    |r| r.get_i64(0),
                )?;
                Ok((key, notification, audit))
            })
            .unwrap();
        assert_eq!(ids, (10, 13, 1));
        match copy(&mut from, &mut to) {
            Err(CopyError::NotEmpty {
                table: "orders",
                rows: 3,
            }) => {}
            other => panic!("not refused: {other:?}"),
        }
        // The pool goes before its schema.
        drop(to);
    }
}
