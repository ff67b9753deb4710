//! `Arg` and `Row` on PostgreSQL. kassa stores integers, text and bytes; PostgreSQL
//! types every parameter and column, so an `Arg::Int` is converted to whatever integer
//! type (or boolean) the server inferred, refusing a value that does not fit rather than
//! wrapping it, and the getters accept each integer width the server can answer with
//! (`CASE … THEN 1` is an int4, `COUNT(*)` an int8).

use std::error::Error;

use postgres_types::private::BytesMut;
use postgres_types::{IsNull, ToSql, Type};
use tokio_postgres::Row;

use crate::db::sql::{Arg, Value};
use crate::db::{DbError, DbResult};

type BoxError = Box<dyn Error + Sync + Send>;

impl ToSql for Arg<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => narrow::<i32>(*v, ty)?.to_sql(ty, out),
                Type::INT2 => narrow::<i16>(*v, ty)?.to_sql(ty, out),
                // Flags are 0 or 1 in kassa; anything else is a mistake, not `true`.
                Type::BOOL => match v {
                    0 => false.to_sql(ty, out),
                    1 => true.to_sql(ty, out),
                    _ => Err(format!("{v} is no flag (0 or 1) for a {ty} parameter").into()),
                },
                _ => Err(wrong("an integer", ty)),
            },
            Arg::Text(t) if <&str as ToSql>::accepts(ty) => t.as_ref().to_sql(ty, out),
            Arg::Bytes(b) if *ty == Type::BYTEA => b.as_ref().to_sql(ty, out),
            Arg::Text(_) => Err(wrong("text", ty)),
            Arg::Bytes(_) => Err(wrong("bytes", ty)),
        }
    }

    /// Every variant checks its own type in `to_sql` (Null fits any).
    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        self.to_sql(ty, out)
    }
}

fn narrow<T: TryFrom<i64>>(v: i64, ty: &Type) -> Result<T, BoxError> {
    T::try_from(v).map_err(|_| format!("{v} is out of range for a {ty} parameter").into())
}

fn wrong(what: &str, ty: &Type) -> BoxError {
    format!("{what} cannot be bound to a {ty} parameter").into()
}

fn is_text(ty: &Type) -> bool {
    matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME)
}

/// The column's type name, or `Null` for a null value, as a `Corrupt` message says
/// what was found.
fn found(row: &Row, i: usize) -> String {
    match row.columns().get(i) {
        None => "no column".to_owned(),
        Some(_) if is_null(row, i) => "Null".to_owned(),
        Some(c) => c.type_().name().to_owned(),
    }
}

/// A raw-bytes read, which accepts every type: null is `None`.
struct Raw<'a>(Option<&'a [u8]>);

impl<'a> postgres_types::FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(Raw(Some(raw)))
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Raw(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

fn is_null(row: &Row, i: usize) -> bool {
    matches!(row.try_get::<_, Raw<'_>>(i), Ok(Raw(None)))
}

fn mismatch(row: &Row, i: usize, expected: &str) -> DbError {
    row.corrupt_at(i, format!("expected {expected}, found {}", found(row, i)))
}

/// The type of column `i`; an index past the row is a mistake in the statement.
fn column_type(row: &Row, i: usize) -> DbResult<&Type> {
    row.columns()
        .get(i)
        .map(|c| c.type_())
        .ok_or_else(|| DbError::Corrupt(format!("no column {i} in a row of {}", row.len())))
}

fn get<'a, T: postgres_types::FromSql<'a>>(row: &'a Row, i: usize, expected: &str) -> DbResult<T> {
    row.try_get(i).map_err(|e| {
        let why = e.source().map_or_else(|| e.to_string(), ToString::to_string);
        row.corrupt_at(i, format!("expected {expected}, found {}: {why}", found(row, i)))
    })
}

/// `Row`'s getters on a PostgreSQL row, each refusing what its SQLite twin refuses
/// (`db::sql` reaches them through `db`, so that it names no driver).
pub(in crate::db) trait PgRowRead {
    /// An integer of any width, or None for null.
    fn opt_int_at(&self, i: usize, expected: &str) -> DbResult<Option<i64>>;
    fn int_at(&self, i: usize, expected: &str) -> DbResult<i64>;
    /// A boolean, or an integer (0 is false).
    fn flag_at(&self, i: usize, expected: &str) -> DbResult<bool>;
    /// Text, or None for null whatever the column's type (as SQLite, which has none).
    fn opt_text_at(&self, i: usize, expected: &str) -> DbResult<Option<&str>>;
    fn text_at(&self, i: usize, expected: &str) -> DbResult<&str>;
    fn bytes_at(&self, i: usize, expected: &str) -> DbResult<&[u8]>;
    /// Bytes, or text as its bytes: a stored body may be either.
    fn bytes_or_text_at(&self, i: usize, expected: &str) -> DbResult<&[u8]>;
    /// The value as `SELECT *` pages show it: by the column's type.
    fn value_at(&self, i: usize) -> DbResult<Value<'_>>;
    fn name_at(&self, i: usize) -> DbResult<&str>;
    fn corrupt_at(&self, i: usize, message: String) -> DbError;
}

impl PgRowRead for Row {
    fn opt_int_at(&self, i: usize, expected: &str) -> DbResult<Option<i64>> {
        Ok(match *column_type(self, i)? {
            Type::INT8 => get::<Option<i64>>(self, i, expected)?,
            Type::INT4 => get::<Option<i32>>(self, i, expected)?.map(i64::from),
            Type::INT2 => get::<Option<i16>>(self, i, expected)?.map(i64::from),
            _ if is_null(self, i) => None,
            _ => return Err(mismatch(self, i, expected)),
        })
    }

    fn int_at(&self, i: usize, expected: &str) -> DbResult<i64> {
        self.opt_int_at(i, expected)?
            .ok_or_else(|| mismatch(self, i, expected))
    }

    fn flag_at(&self, i: usize, expected: &str) -> DbResult<bool> {
        if *column_type(self, i)? == Type::BOOL {
            return get::<Option<bool>>(self, i, expected)?.ok_or_else(|| mismatch(self, i, expected));
        }
        Ok(self.int_at(i, expected)? != 0)
    }

    fn opt_text_at(&self, i: usize, expected: &str) -> DbResult<Option<&str>> {
        if is_text(column_type(self, i)?) {
            return get::<Option<&str>>(self, i, expected);
        }
        match is_null(self, i) {
            true => Ok(None),
            false => Err(mismatch(self, i, expected)),
        }
    }

    fn text_at(&self, i: usize, expected: &str) -> DbResult<&str> {
        self.opt_text_at(i, expected)?
            .ok_or_else(|| mismatch(self, i, expected))
    }

    fn bytes_at(&self, i: usize, expected: &str) -> DbResult<&[u8]> {
        if *column_type(self, i)? == Type::BYTEA {
            if let Some(b) = get::<Option<&[u8]>>(self, i, expected)? {
                return Ok(b);
            }
        }
        Err(mismatch(self, i, expected))
    }

    fn bytes_or_text_at(&self, i: usize, expected: &str) -> DbResult<&[u8]> {
        if is_text(column_type(self, i)?) {
            return self.text_at(i, expected).map(str::as_bytes);
        }
        self.bytes_at(i, expected)
    }

    fn value_at(&self, i: usize) -> DbResult<Value<'_>> {
        let ty = column_type(self, i)?;
        if is_null(self, i) {
            return Ok(Value::Null);
        }
        Ok(match *ty {
            Type::INT8 | Type::INT4 | Type::INT2 => Value::Int(self.int_at(i, "an integer")?),
            Type::BOOL => Value::Int(self.flag_at(i, "a flag")?.into()),
            Type::FLOAT8 => Value::Real(get::<f64>(self, i, "a number")?),
            Type::FLOAT4 => Value::Real(get::<f32>(self, i, "a number")?.into()),
            Type::BYTEA => Value::Text(self.bytes_at(i, "bytes")?),
            _ if is_text(ty) => Value::Text(self.text_at(i, "text")?.as_bytes()),
            _ => return Err(mismatch(self, i, "an integer, a number, text or bytes")),
        })
    }

    fn name_at(&self, i: usize) -> DbResult<&str> {
        column_type(self, i)?;
        Ok(self.columns()[i].name())
    }

    fn corrupt_at(&self, i: usize, message: String) -> DbError {
        let column = self.columns().get(i).map_or("?", |c| c.name());
        DbError::Corrupt(format!("{column}: {message}"))
    }
}
