//! How domain values are stored: statuses and kinds as their stable text, ids as
//! text, currencies as their ISO code, times as UTC epoch milliseconds.

use chrono::{DateTime, Utc};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use super::DbError;
use crate::domain::{
    Currency, EventType, OrderId, OrderStatus, OutboxStatus, ProviderKind, Reason, RefundStatus, Transition,
    TransitionSource, Verdict,
};

pub(super) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn from_millis(ms: i64) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(format!("time {ms} out of range")))
}

pub(super) fn opt_from_millis(ms: Option<i64>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    ms.map(from_millis).transpose()
}

pub(super) fn corrupt(message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        Box::new(DbError::Corrupt(message)),
    )
}

/// `'a','b'` for `IN (…)`: the values are the fixed texts of an enum, never input.
pub(super) fn sql_list(texts: impl IntoIterator<Item = &'static str>) -> String {
    texts
        .into_iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A value stored as fixed text: `$text` gives it, `FromStr` reads it back, and any
/// other text is a clean `FromSqlError` naming what it is not.
macro_rules! text_column {
    ($($ty:ty => $text:ident),+ $(,)?) => {$(
        impl rusqlite::types::ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.$text()))
            }
        }

        impl rusqlite::types::FromSql for $ty {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                value.as_str()?.parse::<$ty>().map_err(|e| {
                    rusqlite::types::FromSqlError::Other(Box::new($crate::db::DbError::Corrupt(e.to_string())))
                })
            }
        }
    )+};
}
pub(super) use text_column;

text_column!(
    OrderStatus => as_str,
    ProviderKind => as_str,
    Transition => as_str,
    TransitionSource => as_str,
    Currency => code,
    EventType => as_str,
    OutboxStatus => as_str,
    Verdict => as_str,
    Reason => code,
    RefundStatus => as_str,
);

impl ToSql for OrderId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for OrderId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        OrderId::parse(value.as_str()?).map_err(|e| FromSqlError::Other(Box::new(e)))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::fmt::Debug;

    use rusqlite::Connection;

    use super::*;

    /// Writes every value through `ToSql`, reads each back through `FromSql`.
    pub(in crate::db) fn round_trip<T: ToSql + FromSql + PartialEq + Debug>(values: &[T]) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL) STRICT")
            .unwrap();
        for (i, v) in (0_i64..).zip(values) {
            conn.execute("INSERT INTO t (id, v) VALUES (?1, ?2)", rusqlite::params![i, v])
                .unwrap();
        }
        for (i, v) in (0_i64..).zip(values) {
            let back: T = conn
                .query_row("SELECT v FROM t WHERE id = ?1", [i], |r| r.get(0))
                .unwrap();
            assert_eq!(&back, v);
        }
        let unknown = conn.query_row("SELECT 'no such value'", [], |r| r.get::<_, T>(0));
        assert!(
            matches!(unknown, Err(rusqlite::Error::FromSqlConversionFailure(..))),
            "{unknown:?}"
        );
        let number = conn.query_row("SELECT 7", [], |r| r.get::<_, T>(0));
        assert!(
            matches!(number, Err(rusqlite::Error::InvalidColumnType(..))),
            "{number:?}"
        );
    }

    /// The text each value is stored as, so a renamed variant cannot silently change
    /// what is on disk.
    pub(in crate::db) fn stored<T: ToSql>(value: &T) -> String {
        match value.to_sql().unwrap() {
            ToSqlOutput::Borrowed(ValueRef::Text(t)) => String::from_utf8(t.to_vec()).unwrap(),
            ToSqlOutput::Owned(rusqlite::types::Value::Text(t)) => t,
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn every_order_status_round_trips_and_keeps_its_stored_text() {
        round_trip(&OrderStatus::ALL);
        let texts: Vec<String> = OrderStatus::ALL.iter().map(stored).collect();
        assert_eq!(
            texts,
            ["pending", "paid", "closed", "partially_refunded", "refunded"]
        );
    }

    #[test]
    fn every_provider_kind_round_trips_and_keeps_its_stored_text() {
        round_trip(&ProviderKind::ALL);
        let texts: Vec<String> = ProviderKind::ALL.iter().map(stored).collect();
        assert_eq!(texts, ["alipay", "wechat"]);
    }

    #[test]
    fn every_transition_round_trips_and_keeps_its_stored_text() {
        round_trip(&Transition::ALL);
        let texts: Vec<String> = Transition::ALL.iter().map(stored).collect();
        assert_eq!(texts, ["pay", "close", "refund"]);
    }

    #[test]
    fn every_transition_source_round_trips_and_keeps_its_stored_text() {
        round_trip(&TransitionSource::ALL);
        let texts: Vec<String> = TransitionSource::ALL.iter().map(stored).collect();
        assert_eq!(
            texts,
            ["notification", "provider_query", "api", "admin", "expiry"]
        );
    }

    #[test]
    fn every_currency_round_trips_as_its_iso_code() {
        round_trip(&Currency::ALL);
        assert_eq!(stored(&Currency::Cny), "CNY");
        assert_eq!(stored(&Currency::Jpy), "JPY");
    }

    #[test]
    fn every_event_type_round_trips_and_keeps_its_stored_text() {
        round_trip(&EventType::ALL);
        let texts: Vec<String> = EventType::ALL.iter().map(stored).collect();
        assert_eq!(
            texts,
            [
                "order.paid",
                "order.closed",
                "order.partially_refunded",
                "order.refunded"
            ]
        );
    }

    #[test]
    fn every_outbox_status_round_trips_and_keeps_its_stored_text() {
        round_trip(&OutboxStatus::ALL);
        let texts: Vec<String> = OutboxStatus::ALL.iter().map(stored).collect();
        assert_eq!(texts, ["pending", "delivering", "delivered", "failed", "skipped"]);
    }

    #[test]
    fn every_verdict_round_trips_and_keeps_its_stored_text() {
        round_trip(&Verdict::ALL);
        let texts: Vec<String> = Verdict::ALL.iter().map(stored).collect();
        assert_eq!(texts, ["applied", "duplicate", "ignored", "rejected", "error"]);
    }

    #[test]
    fn every_notification_reason_round_trips_as_its_code() {
        let all: Vec<Reason> = Reason::all().collect();
        round_trip(&all);
        let texts: Vec<String> = all.iter().map(stored).collect();
        assert_eq!(texts, all.iter().map(|r| r.code()).collect::<Vec<_>>());
    }

    #[test]
    fn every_refund_status_round_trips_and_keeps_its_stored_text() {
        round_trip(&RefundStatus::ALL);
        let texts: Vec<String> = RefundStatus::ALL.iter().map(stored).collect();
        assert_eq!(texts, ["pending", "succeeded", "failed"]);
    }

    #[test]
    fn order_ids_round_trip_and_a_stored_non_id_is_an_error() {
        round_trip(&[OrderId::parse("ord_abc").unwrap(), OrderId::generate()]);
    }
}
