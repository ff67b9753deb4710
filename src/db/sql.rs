//! How a db module runs its statements without naming the driver: arguments are
//! `Arg`s, rows are read through `Row`'s typed getters, and `Tx::exec`, `one`, `opt`,
//! `all` and `each` (streamed) run the text. Each operation's SQL and row reading is
//! then written once for every backend (issue 17 adds PostgreSQL behind the same
//! methods).
//!
//! On SQLite this is a thin shell over rusqlite: every statement comes from the
//! connection's statement cache and arguments are bound from a slice on the caller's
//! stack, so the layer adds no allocation per call.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rusqlite::types::{FromSqlError, ToSql, ToSqlOutput, ValueRef};

use super::{DbError, DbResult, PgRow, PgRowRead, Tx, TxInner};
use crate::domain::OrderId;

/// One bound argument. Integers, text and bytes are all kassa stores: times are epoch
/// milliseconds, flags 0 or 1, money minor units.
#[derive(Debug)]
pub(super) enum Arg<'a> {
    Null,
    Int(i64),
    Text(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
}

/// `&[Arg]` from a list of values that convert into `Arg`: `args![id, to_millis(now)]`.
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        &[$($crate::db::sql::Arg::from($a)),*]
    };
}
pub(super) use args;

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Arg::Int(v.into())
    }
}

impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::Int(v.into())
    }
}

impl From<u16> for Arg<'_> {
    fn from(v: u16) -> Self {
        Arg::Int(v.into())
    }
}

/// Flags are stored as 0 or 1.
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Int(v.into())
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Cow::Borrowed(v))
    }
}

impl From<String> for Arg<'_> {
    fn from(v: String) -> Self {
        Arg::Text(Cow::Owned(v))
    }
}

impl<'a> From<&'a OrderId> for Arg<'a> {
    fn from(v: &'a OrderId) -> Self {
        Arg::Text(Cow::Borrowed(v.as_str()))
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(Cow::Borrowed(v))
    }
}

impl<'a, T: Into<Arg<'a>>> From<Option<T>> for Arg<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::Null, Into::into)
    }
}

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Arg::Null => ValueRef::Null,
            Arg::Int(i) => ValueRef::Integer(*i),
            Arg::Text(t) => ValueRef::Text(t.as_bytes()),
            Arg::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

/// One result row. Every getter takes the column's index; a value of the wrong type
/// or one its type cannot read is `DbError::Corrupt` naming the column, never a
/// default.
pub(super) struct Row<'r>(RowInner<'r>);

enum RowInner<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Pg(&'r PgRow),
}

/// A column's value as stored, for pages that show whatever a table holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Value<'r> {
    Null,
    Int(i64),
    Real(f64),
    /// Text, or the bytes of a blob.
    Text(&'r [u8]),
}

/// A column's value with text and bytes kept apart, whatever the column (`copy` moves
/// and checksums rows of every table without knowing their types).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Field<'r> {
    Null,
    Int(i64),
    Text(&'r str),
    Bytes(&'r [u8]),
}

impl<'r> Row<'r> {
    /// The value as a `Field`. kassa stores no real numbers, and text that is no UTF-8
    /// could not be written elsewhere unchanged: both are `Corrupt`, naming the column.
    pub fn field(&self, i: usize) -> DbResult<Field<'_>> {
        let value = self.value(i)?;
        let bytes = match value {
            Value::Null => return Ok(Field::Null),
            Value::Int(v) => return Ok(Field::Int(v)),
            Value::Real(v) => return Err(self.corrupt(i, format!("expected no real number, found {v}"))),
            Value::Text(bytes) => bytes,
        };
        let is_text = match self.0 {
            RowInner::Sqlite(row) => matches!(row.get_ref(i)?, ValueRef::Text(_)),
            // `Value` reads text and bytea alike; only a text column reads as text.
            RowInner::Pg(row) => row.opt_text_at(i, "text").is_ok(),
        };
        if !is_text {
            return Ok(Field::Bytes(bytes));
        }
        std::str::from_utf8(bytes)
            .map(Field::Text)
            .map_err(|e| self.corrupt(i, format!("expected text, found Text: {e}")))
    }

    pub fn get_i64(&self, i: usize) -> DbResult<i64> {
        self.int(i, "an integer")
    }

    pub fn get_opt_i64(&self, i: usize) -> DbResult<Option<i64>> {
        match self.0 {
            RowInner::Sqlite(row) => self.raw(row, i, "an integer or null", ValueRef::as_i64_or_null),
            RowInner::Pg(row) => row.opt_int_at(i, "an integer or null"),
        }
    }

    pub fn get_string(&self, i: usize) -> DbResult<String> {
        self.text(i, "text").map(str::to_owned)
    }

    pub fn get_opt_string(&self, i: usize) -> DbResult<Option<String>> {
        let text = self.opt_text(i, "text or null")?;
        Ok(text.map(str::to_owned))
    }

    pub fn get_bytes(&self, i: usize) -> DbResult<Vec<u8>> {
        match self.0 {
            RowInner::Sqlite(row) => self.raw(row, i, "a blob", ValueRef::as_blob).map(<[u8]>::to_vec),
            RowInner::Pg(row) => row.bytes_at(i, "a blob").map(<[u8]>::to_vec),
        }
    }

    /// A blob as text, invalid UTF-8 replaced (a stored body is kept as received).
    pub fn get_blob_lossy(&self, i: usize) -> DbResult<String> {
        let blob = match self.0 {
            RowInner::Sqlite(row) => self.raw(row, i, "a blob", ValueRef::as_blob)?,
            RowInner::Pg(row) => row.bytes_or_text_at(i, "a blob")?,
        };
        Ok(String::from_utf8_lossy(blob).into_owned())
    }

    /// A flag: 0 is false, any other integer true (on PostgreSQL a boolean too).
    pub fn get_bool(&self, i: usize) -> DbResult<bool> {
        match self.0 {
            RowInner::Sqlite(row) => Ok(self.raw(row, i, "an integer flag", ValueRef::as_i64)? != 0),
            RowInner::Pg(row) => row.flag_at(i, "an integer flag"),
        }
    }

    /// Epoch milliseconds.
    pub fn get_time(&self, i: usize) -> DbResult<DateTime<Utc>> {
        let ms = self.get_i64(i)?;
        self.time(i, ms)
    }

    pub fn get_opt_time(&self, i: usize) -> DbResult<Option<DateTime<Utc>>> {
        self.get_opt_i64(i)?.map(|ms| self.time(i, ms)).transpose()
    }

    fn time(&self, i: usize, ms: i64) -> DbResult<DateTime<Utc>> {
        DateTime::from_timestamp_millis(ms).ok_or_else(|| self.corrupt(i, format!("time {ms} out of range")))
    }

    /// A value stored as its fixed text (a status, a kind): text that does not parse
    /// is `DbError::Corrupt`.
    pub fn parse<T: FromStr>(&self, i: usize) -> DbResult<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.text(i, "text")?;
        text.parse().map_err(|e: T::Err| self.corrupt(i, e.to_string()))
    }

    pub fn parse_opt<T: FromStr>(&self, i: usize) -> DbResult<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.opt_text(i, "text or null")?;
        text.map(|t| t.parse().map_err(|e: T::Err| self.corrupt(i, e.to_string())))
            .transpose()
    }

    pub fn get_order_id(&self, i: usize) -> DbResult<OrderId> {
        let text = self.text(i, "text")?;
        OrderId::parse(text).map_err(|e| self.corrupt(i, e.to_string()))
    }

    pub fn get_opt_order_id(&self, i: usize) -> DbResult<Option<OrderId>> {
        let text = self.opt_text(i, "text or null")?;
        text.map(|t| OrderId::parse(t).map_err(|e| self.corrupt(i, e.to_string())))
            .transpose()
    }

    pub fn value(&self, i: usize) -> DbResult<Value<'_>> {
        let row = match self.0 {
            RowInner::Sqlite(row) => row,
            RowInner::Pg(row) => return row.value_at(i),
        };
        Ok(match row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(v) => Value::Int(v),
            ValueRef::Real(v) => Value::Real(v),
            ValueRef::Text(v) | ValueRef::Blob(v) => Value::Text(v),
        })
    }

    pub fn column_count(&self) -> usize {
        match self.0 {
            RowInner::Sqlite(row) => row.as_ref().column_count(),
            RowInner::Pg(row) => row.len(),
        }
    }

    pub fn column_name(&self, i: usize) -> DbResult<&str> {
        match self.0 {
            RowInner::Sqlite(row) => Ok(row.as_ref().column_name(i)?),
            RowInner::Pg(row) => row.name_at(i),
        }
    }

    fn int(&self, i: usize, expected: &str) -> DbResult<i64> {
        match self.0 {
            RowInner::Sqlite(row) => self.raw(row, i, expected, ValueRef::as_i64),
            RowInner::Pg(row) => row.int_at(i, expected),
        }
    }

    fn text(&self, i: usize, expected: &str) -> DbResult<&str> {
        match self.0 {
            RowInner::Sqlite(row) => self.raw(row, i, expected, ValueRef::as_str),
            RowInner::Pg(row) => row.text_at(i, expected),
        }
    }

    fn opt_text(&self, i: usize, expected: &str) -> DbResult<Option<&str>> {
        match self.0 {
            RowInner::Sqlite(row) => self.raw(row, i, expected, ValueRef::as_str_or_null),
            RowInner::Pg(row) => row.opt_text_at(i, expected),
        }
    }

    /// The column's value as `read` sees it (SQLite). A value `read` refuses is
    /// `Corrupt`, naming what was expected, what was found and why it did not convert
    /// (a text that is no UTF-8 is text, but no string); an index past the row's
    /// columns is a mistake in the statement and stays the driver's error.
    fn raw<'v, T>(
        &self,
        row: &'v rusqlite::Row<'v>,
        i: usize,
        expected: &str,
        read: impl FnOnce(&ValueRef<'v>) -> rusqlite::types::FromSqlResult<T>,
    ) -> DbResult<T> {
        let value = row.get_ref(i)?;
        read(&value).map_err(|e| {
            let found = value.data_type();
            match e {
                // Its text, "Invalid type", would only repeat the message.
                FromSqlError::InvalidType => self.corrupt(i, format!("expected {expected}, found {found}")),
                e => self.corrupt(i, format!("expected {expected}, found {found}: {e}")),
            }
        })
    }

    fn corrupt(&self, i: usize, message: String) -> DbError {
        match self.0 {
            RowInner::Sqlite(row) => {
                let column = row.as_ref().column_name(i).unwrap_or("?");
                DbError::Corrupt(format!("{column}: {message}"))
            }
            RowInner::Pg(row) => row.corrupt_at(i, message),
        }
    }
}

impl Tx<'_> {
    /// Runs a statement that returns no rows; how many rows it changed.
    pub(super) fn exec(&self, sql: &str, args: &[Arg<'_>]) -> DbResult<usize> {
        match self.0 {
            TxInner::Sqlite(conn) => Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(args))?),
            TxInner::Pg(tx) => tx.exec(sql, args),
        }
    }

    /// The first row, which must exist.
    pub(super) fn one<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        read: impl FnOnce(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<T> {
        self.opt(sql, args, read)?.ok_or(DbError::NoRow)
    }

    /// The first row, if any. On PostgreSQL the server still sends every row the
    /// statement finds (the connection drops the rest): fine for kassa's, which are
    /// key lookups and aggregates; a scan that may find many rows says `LIMIT 1`.
    pub(super) fn opt<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        read: impl FnOnce(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<Option<T>> {
        let conn = match self.0 {
            TxInner::Sqlite(conn) => conn,
            TxInner::Pg(tx) => {
                let mut first = None;
                let mut read = Some(read);
                tx.each(sql, args, |row| {
                    if let Some(read) = read.take() {
                        first = Some(read(&Row(RowInner::Pg(row)))?);
                    }
                    Ok(ControlFlow::Break(()))
                })?;
                return Ok(first);
            }
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        match rows.next()? {
            Some(row) => read(&Row(RowInner::Sqlite(row))).map(Some),
            None => Ok(None),
        }
    }

    /// Every row, in the order the statement gives them.
    pub(super) fn all<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        mut read: impl FnMut(&Row<'_>) -> DbResult<T>,
    ) -> DbResult<Vec<T>> {
        let mut out = Vec::new();
        let conn = match self.0 {
            TxInner::Sqlite(conn) => conn,
            TxInner::Pg(tx) => {
                tx.each(sql, args, |row| {
                    out.push(read(&Row(RowInner::Pg(row)))?);
                    Ok(ControlFlow::Continue(()))
                })?;
                return Ok(out);
            }
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(row) = rows.next()? {
            out.push(read(&Row(RowInner::Sqlite(row)))?);
        }
        Ok(out)
    }

    /// Hands each row to `read` as the statement yields it, holding one row at a time,
    /// until the rows run out or `read` breaks. For reads of any size (the order
    /// export): nothing is collected. On SQLite the statement is prepared afresh, not
    /// taken from the cache, as the export always did: it runs rarely and long.
    pub(super) fn each(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        mut read: impl FnMut(&Row<'_>) -> DbResult<ControlFlow<()>>,
    ) -> DbResult<()> {
        let conn = match self.0 {
            TxInner::Sqlite(conn) => conn,
            TxInner::Pg(tx) => return tx.each(sql, args, |row| read(&Row(RowInner::Pg(row)))),
        };
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        while let Some(row) = rows.next()? {
            if read(&Row(RowInner::Sqlite(row)))?.is_break() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;
    use crate::db::Offline;
    use crate::domain::{Amount, Currency, NewOrder, OrderStatus, OutTradeNo, ProviderKind};

    /// A migrated database in a temporary directory.
    pub(in crate::db) fn database() -> (tempfile::TempDir, Offline) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Offline::open(&dir.path().join("kassa.db")).unwrap();
        db.migrate().unwrap();
        (dir, db)
    }

    /// A pending order `p-{n}` of `amount` fen, created `n` seconds into November.
    pub(in crate::db) fn new_order(n: i64, amount: i64) -> NewOrder {
        let created = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + Duration::seconds(n);
        pending_order(OrderId::generate(), &format!("p-{n}"), amount, created)
    }

    /// A pending Alipay order of `amount` CNY fen, due to expire 15 minutes after `created`.
    pub(in crate::db) fn pending_order(
        id: OrderId,
        out_trade_no: &str,
        amount: i64,
        created: DateTime<Utc>,
    ) -> NewOrder {
        NewOrder {
            id,
            out_trade_no: OutTradeNo::parse(out_trade_no).unwrap(),
            amount: Amount::from_minor(amount, Currency::Cny).unwrap(),
            subject: "Tea".into(),
            provider: ProviderKind::Alipay,
            notify_url: None,
            return_url: None,
            metadata: Default::default(),
            created_at: created,
            expires_at: created + Duration::minutes(15),
        }
    }

    /// A scratch table `t (id, v)` with `v` of any type, in a database of its own.
    fn scratch() -> (tempfile::TempDir, Offline) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Offline::open(&dir.path().join("scratch.db")).unwrap();
        db.immediate(|tx| tx.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v ANY) STRICT", args![]))
            .unwrap();
        (dir, db)
    }

    fn store(db: &mut Offline, v: Arg<'_>) {
        db.immediate(|tx| tx.exec("INSERT INTO t (id, v) VALUES (1, ?1)", &[v]))
            .unwrap();
    }

    /// `(typeof(v), v as text)` of the stored value.
    fn stored(db: &Offline) -> (String, Option<String>) {
        db.read(|tx| {
            tx.one(
                "SELECT typeof(v), CAST(v AS TEXT) FROM t WHERE id = 1",
                args![],
                |r| Ok((r.get_string(0)?, r.get_opt_string(1)?)),
            )
        })
        .unwrap()
    }

    fn read<T>(db: &Offline, f: impl FnOnce(&Row<'_>) -> DbResult<T>) -> DbResult<T> {
        db.read(|tx| tx.one("SELECT v FROM t WHERE id = 1", args![], f))
    }

    /// Stores each value as the db modules do (`Arg::from`) and reads it back as they
    /// do (`Row::parse`); returns the text each is stored as, so a renamed variant
    /// cannot silently change what is on disk. A text no value has, and an integer,
    /// read as `Corrupt`.
    pub(in crate::db) fn round_trip<T>(values: &[T]) -> Vec<String>
    where
        T: Copy + PartialEq + std::fmt::Debug + FromStr,
        T::Err: std::fmt::Display,
        for<'a> Arg<'a>: From<T>,
    {
        let (_dir, mut db) = scratch();
        db.immediate(|tx| {
            for (i, v) in (0_i64..).zip(values) {
                tx.exec(
                    "INSERT INTO t (id, v) VALUES (?1, ?2)",
                    &[Arg::Int(i), Arg::from(*v)],
                )?;
            }
            Ok(())
        })
        .unwrap();
        let back = db
            .read(|tx| {
                tx.all("SELECT v, typeof(v), v FROM t ORDER BY id", args![], |r| {
                    Ok((r.parse::<T>(0)?, r.get_string(1)?, r.get_string(2)?))
                })
            })
            .unwrap();
        assert_eq!(back.iter().map(|b| b.0).collect::<Vec<_>>(), values);
        assert!(back.iter().all(|b| b.1 == "text"), "{:?}", back);
        for (sql, says) in [
            ("SELECT 'no such value' AS v", "v: "),
            ("SELECT 7 AS v", "v: expected text, found Integer"),
        ] {
            match db.read(|tx| tx.one(sql, args![], |r| r.parse::<T>(0))) {
                Err(DbError::Corrupt(message)) => assert!(message.starts_with(says), "{message}"),
                other => panic!("{sql}: not Corrupt: {other:?}"),
            }
        }
        back.into_iter().map(|b| b.2).collect()
    }

    #[test]
    fn a_stored_text_that_is_no_value_of_the_enum_is_corrupt_and_names_its_column() {
        let (_dir, mut db) = scratch();
        store(&mut db, Arg::from("no such status"));
        let err = read(&db, |r| r.parse::<OrderStatus>(0)).unwrap_err();
        match err {
            DbError::Corrupt(message) => {
                assert!(message.starts_with("v: "), "{message}");
                assert!(message.contains("no such status"), "{message}");
            }
            other => panic!("not Corrupt: {other:?}"),
        }
        let err = read(&db, |r| r.parse_opt::<OrderStatus>(0)).unwrap_err();
        assert!(matches!(err, DbError::Corrupt(_)), "{err:?}");
        let err = read(&db, |r| r.get_order_id(0)).unwrap_err();
        assert!(matches!(err, DbError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn an_integer_where_text_is_expected_is_corrupt_and_says_what_was_found() {
        let (_dir, mut db) = scratch();
        store(&mut db, Arg::from(7_i64));
        let err = read(&db, |r| r.parse::<OrderStatus>(0)).unwrap_err();
        match err {
            DbError::Corrupt(message) => assert_eq!(message, "v: expected text, found Integer"),
            other => panic!("not Corrupt: {other:?}"),
        }
        let err = read(&db, |r| r.get_blob_lossy(0)).unwrap_err();
        assert!(matches!(err, DbError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn a_time_out_of_range_is_corrupt() {
        let (_dir, mut db) = scratch();
        store(&mut db, Arg::from(i64::MAX));
        let err = read(&db, |r| r.get_time(0)).unwrap_err();
        assert!(matches!(err, DbError::Corrupt(_)), "{err:?}");
        let err = read(&db, |r| r.get_opt_time(0)).unwrap_err();
        assert!(matches!(err, DbError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn null_reads_as_none_through_every_optional_getter_and_is_an_error_for_the_others() {
        let (_dir, mut db) = scratch();
        store(&mut db, Arg::from(None::<&str>));
        assert_eq!(stored(&db), ("null".to_owned(), None));
        assert_eq!(read(&db, |r| r.get_opt_i64(0)).unwrap(), None);
        assert_eq!(read(&db, |r| r.get_opt_string(0)).unwrap(), None);
        assert_eq!(read(&db, |r| r.get_opt_time(0)).unwrap(), None);
        assert_eq!(read(&db, |r| r.get_opt_order_id(0)).unwrap(), None);
        assert_eq!(read(&db, |r| r.parse_opt::<OrderStatus>(0)).unwrap(), None);
        assert!(read(&db, |r| r.value(0).map(|v| v == Value::Null)).unwrap());
        let corrupt = |err: DbError, expected: &str| match err {
            DbError::Corrupt(message) => assert_eq!(message, format!("v: expected {expected}, found Null")),
            other => panic!("not Corrupt: {other:?}"),
        };
        corrupt(read(&db, |r| r.get_i64(0)).unwrap_err(), "an integer");
        corrupt(read(&db, |r| r.get_string(0)).unwrap_err(), "text");
        corrupt(read(&db, |r| r.get_bytes(0)).unwrap_err(), "a blob");
        corrupt(read(&db, |r| r.get_bool(0)).unwrap_err(), "an integer flag");
        corrupt(read(&db, |r| r.get_time(0)).unwrap_err(), "an integer");
        corrupt(read(&db, |r| r.get_order_id(0)).unwrap_err(), "text");
        corrupt(read(&db, |r| r.parse::<OrderStatus>(0)).unwrap_err(), "text");
    }

    #[test]
    fn a_value_of_another_type_is_corrupt_through_every_getter_and_names_the_column() {
        let (_dir, mut db) = scratch();
        store(&mut db, Arg::from("text"));
        let corrupt = |err: DbError, expected: &str| match err {
            DbError::Corrupt(message) => assert_eq!(message, format!("v: expected {expected}, found Text")),
            other => panic!("not Corrupt: {other:?}"),
        };
        corrupt(read(&db, |r| r.get_i64(0)).unwrap_err(), "an integer");
        corrupt(read(&db, |r| r.get_opt_i64(0)).unwrap_err(), "an integer or null");
        corrupt(read(&db, |r| r.get_bool(0)).unwrap_err(), "an integer flag");
        corrupt(read(&db, |r| r.get_time(0)).unwrap_err(), "an integer");
        corrupt(
            read(&db, |r| r.get_opt_time(0)).unwrap_err(),
            "an integer or null",
        );
        corrupt(read(&db, |r| r.get_bytes(0)).unwrap_err(), "a blob");
        corrupt(read(&db, |r| r.get_blob_lossy(0)).unwrap_err(), "a blob");
    }

    #[test]
    fn a_stored_text_that_is_not_utf8_is_corrupt_and_says_why_through_every_text_getter() {
        let (_dir, mut db) = scratch();
        db.immediate(|tx| {
            tx.exec(
                "INSERT INTO t (id, v) VALUES (1, CAST(x'61c328' AS TEXT))",
                args![],
            )
        })
        .unwrap();
        let kind = db.read(|tx| tx.one("SELECT typeof(v) FROM t", args![], |r| r.get_string(0)));
        assert_eq!(kind.unwrap(), "text");
        let bytes = vec![b'a', 0xc3, 0x28];
        let not_utf8 = std::str::from_utf8(&bytes).unwrap_err();
        let expected = |what: &str| format!("v: expected {what}, found Text: {not_utf8}");
        let corrupt = |err: DbError, what: &str| match err {
            DbError::Corrupt(message) => assert_eq!(message, expected(what)),
            other => panic!("not Corrupt: {other:?}"),
        };
        corrupt(read(&db, |r| r.get_string(0)).unwrap_err(), "text");
        corrupt(read(&db, |r| r.get_opt_string(0)).unwrap_err(), "text or null");
        corrupt(read(&db, |r| r.parse::<OrderStatus>(0)).unwrap_err(), "text");
        corrupt(
            read(&db, |r| r.parse_opt::<OrderStatus>(0)).unwrap_err(),
            "text or null",
        );
        corrupt(read(&db, |r| r.get_order_id(0)).unwrap_err(), "text");
        corrupt(read(&db, |r| r.get_opt_order_id(0)).unwrap_err(), "text or null");
    }

    #[test]
    fn flags_are_stored_as_the_integers_0_and_1_and_read_back_as_bools() {
        for (flag, text) in [(true, "1"), (false, "0")] {
            let (_dir, mut db) = scratch();
            store(&mut db, Arg::from(flag));
            assert_eq!(stored(&db), ("integer".to_owned(), Some(text.to_owned())));
            assert_eq!(read(&db, |r| r.get_bool(0)).unwrap(), flag);
            assert_eq!(read(&db, |r| r.get_i64(0)).unwrap(), i64::from(flag));
        }
    }

    #[test]
    fn bytes_are_stored_as_a_blob_and_come_back_unchanged() {
        let bytes: &[u8] = &[0, 0xff, b'a', 0xc3, 0x28, 0];
        let (_dir, mut db) = scratch();
        store(&mut db, Arg::from(bytes));
        let kind = db.read(|tx| tx.one("SELECT typeof(v) FROM t", args![], |r| r.get_string(0)));
        assert_eq!(kind.unwrap(), "blob");
        assert_eq!(read(&db, |r| r.get_bytes(0)).unwrap(), bytes);
        assert_eq!(
            read(&db, |r| r.get_blob_lossy(0)).unwrap(),
            String::from_utf8_lossy(bytes)
        );
        assert!(read(&db, |r| r.value(0).map(|v| v == Value::Text(bytes))).unwrap());
        // A blob is not text: reading one as a status is refused.
        let err = read(&db, |r| r.parse::<OrderStatus>(0)).unwrap_err();
        assert!(matches!(err, DbError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn each_kind_of_argument_is_stored_as_its_sqlite_type_and_value() {
        let id = OrderId::parse("ord_abc").unwrap();
        let cases: Vec<(Arg<'_>, &str, Option<&str>)> = vec![
            (Arg::from(-5_i32), "integer", Some("-5")),
            (Arg::from(65_535_u16), "integer", Some("65535")),
            (Arg::from(4_000_000_000_u32), "integer", Some("4000000000")),
            (Arg::from(i64::MIN), "integer", Some("-9223372036854775808")),
            (Arg::from("borrowed"), "text", Some("borrowed")),
            (Arg::from("owned".to_owned()), "text", Some("owned")),
            (Arg::from(Some("some")), "text", Some("some")),
            (Arg::from(None::<i64>), "null", None),
            (Arg::from(&id), "text", Some("ord_abc")),
            (
                Arg::from(OrderStatus::PartiallyRefunded),
                "text",
                Some("partially_refunded"),
            ),
            (Arg::from(Some(Currency::Jpy)), "text", Some("JPY")),
        ];
        for (arg, kind, text) in cases {
            let (_dir, mut db) = scratch();
            let shown = format!("{arg:?}");
            store(&mut db, arg);
            assert_eq!(stored(&db), (kind.to_owned(), text.map(str::to_owned)), "{shown}");
        }
    }

    #[test]
    fn each_hands_over_rows_in_statement_order_until_the_reader_breaks_and_passes_on_its_error() {
        let (_dir, mut db) = scratch();
        db.immediate(|tx| {
            tx.exec(
                "INSERT INTO t (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')",
                args![],
            )
        })
        .unwrap();
        let sql = "SELECT v FROM t WHERE id >= ?1 ORDER BY id DESC";
        let seen = |stop_after: usize| {
            let mut seen = Vec::new();
            db.read(|tx| {
                tx.each(sql, args![2_i64], |r| {
                    seen.push(r.get_string(0)?);
                    Ok(if seen.len() == stop_after {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                })
            })
            .unwrap();
            seen
        };
        assert_eq!(seen(usize::MAX), ["d", "c", "b"]);
        assert_eq!(seen(2), ["d", "c"], "nothing after the break");
        let err = db
            .read(|tx| {
                tx.each(sql, args![2_i64], |r| {
                    r.get_i64(0).map(|_| ControlFlow::Continue(()))
                })
            })
            .unwrap_err();
        assert!(matches!(err, DbError::Corrupt(_)), "{err:?}");
        assert!(db
            .read(|tx| tx.each(sql, args![], |_| Ok(ControlFlow::Continue(()))))
            .is_err());
    }

    #[test]
    fn one_needs_a_row_opt_and_all_take_what_there_is_and_exec_counts_changed_rows() {
        let (_dir, mut db) = scratch();
        let changed = db
            .immediate(|tx| {
                tx.exec(
                    "INSERT INTO t (id, v) VALUES (1, 'a'), (2, 'b'), (3, 'c')",
                    args![],
                )?;
                tx.exec("UPDATE t SET v = 'x' WHERE id >= ?1", args![2_i64])
            })
            .unwrap();
        assert_eq!(changed, 2);
        db.read(|tx| {
            let none = "SELECT v FROM t WHERE id = ?1";
            assert!(matches!(
                tx.one(none, args![9_i64], |r| r.get_string(0)),
                Err(DbError::NoRow)
            ));
            assert_eq!(tx.opt(none, args![9_i64], |r| r.get_string(0))?, None);
            assert_eq!(
                tx.opt(none, args![1_i64], |r| r.get_string(0))?.as_deref(),
                Some("a")
            );
            let all = tx.all("SELECT id, v FROM t ORDER BY id DESC", args![], |r| {
                Ok((r.get_i64(0)?, r.get_string(1)?))
            })?;
            assert_eq!(all, [(3, "x".into()), (2, "x".into()), (1, "a".into())]);
            // A wrong number of arguments is refused, not bound short.
            assert!(tx.opt(none, args![], |r| r.get_string(0)).is_err());
            assert!(tx.opt(none, args![1_i64, 2_i64], |r| r.get_string(0)).is_err());
            Ok(())
        })
        .unwrap();
    }
}
