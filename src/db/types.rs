//! How domain values are stored: statuses and kinds as their stable text, ids as
//! text, currencies as their ISO code, times as UTC epoch milliseconds.

use chrono::{DateTime, Utc};

use crate::domain::{
    Currency, EventType, OrderStatus, OutboxStatus, ProviderKind, Reason, RefundStatus, Transition,
    TransitionSource, Verdict,
};

pub(super) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// `'a','b'` for `IN (…)`: the values are the fixed texts of an enum, never input.
pub(super) fn sql_list(texts: impl IntoIterator<Item = &'static str>) -> String {
    texts
        .into_iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A value stored as fixed text: `$text` gives it as an `Arg` (`sql.rs`), and
/// `Row::parse` reads it back through its `FromStr`, any other text being `Corrupt`.
macro_rules! text_column {
    ($($ty:ty => $text:ident),+ $(,)?) => {$(
        impl<'a> From<$ty> for $crate::db::sql::Arg<'a> {
            fn from(v: $ty) -> Self {
                $crate::db::sql::Arg::Text(std::borrow::Cow::Borrowed(v.$text()))
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

#[cfg(test)]
mod tests {
    use super::super::sql::tests::{database, round_trip};
    use super::super::sql::{args, Arg};
    use super::*;
    use crate::db::DbError;
    use crate::domain::OrderId;

    #[test]
    fn every_order_status_round_trips_and_keeps_its_stored_text() {
        assert_eq!(
            round_trip(&OrderStatus::ALL),
            ["pending", "paid", "closed", "partially_refunded", "refunded"]
        );
    }

    #[test]
    fn every_provider_kind_round_trips_and_keeps_its_stored_text() {
        assert_eq!(round_trip(&ProviderKind::ALL), ["alipay", "wechat"]);
    }

    #[test]
    fn every_transition_round_trips_and_keeps_its_stored_text() {
        assert_eq!(round_trip(&Transition::ALL), ["pay", "close", "refund"]);
    }

    #[test]
    fn every_transition_source_round_trips_and_keeps_its_stored_text() {
        assert_eq!(
            round_trip(&TransitionSource::ALL),
            ["notification", "provider_query", "api", "admin", "expiry"]
        );
    }

    #[test]
    fn every_currency_round_trips_as_its_iso_code() {
        let codes = round_trip(&Currency::ALL);
        assert_eq!(codes, Currency::ALL.map(|c| c.code()));
        assert_eq!(round_trip(&[Currency::Cny, Currency::Jpy]), ["CNY", "JPY"]);
    }

    #[test]
    fn every_event_type_round_trips_and_keeps_its_stored_text() {
        assert_eq!(
            round_trip(&EventType::ALL),
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
        assert_eq!(
            round_trip(&OutboxStatus::ALL),
            ["pending", "delivering", "delivered", "failed", "skipped"]
        );
    }

    #[test]
    fn every_verdict_round_trips_and_keeps_its_stored_text() {
        assert_eq!(
            round_trip(&Verdict::ALL),
            ["applied", "duplicate", "ignored", "rejected", "error"]
        );
    }

    #[test]
    fn every_notification_reason_round_trips_as_its_code() {
        let all: Vec<Reason> = Reason::all().collect();
        assert_eq!(round_trip(&all), all.iter().map(|r| r.code()).collect::<Vec<_>>());
    }

    #[test]
    fn every_refund_status_round_trips_and_keeps_its_stored_text() {
        assert_eq!(round_trip(&RefundStatus::ALL), ["pending", "succeeded", "failed"]);
    }

    #[test]
    fn order_ids_round_trip_and_a_stored_non_id_is_an_error() {
        let (_dir, db) = database();
        for id in [OrderId::parse("ord_abc").unwrap(), OrderId::generate()] {
            let back = db.read(|tx| tx.one("SELECT ?1", &[Arg::from(&id)], |r| r.get_order_id(0)));
            assert_eq!(back.unwrap(), id);
        }
        let err = db
            .read(|tx| tx.one("SELECT 'not an id'", args![], |r| r.get_order_id(0)))
            .unwrap_err();
        assert!(matches!(err, DbError::Corrupt(_)), "{err:?}");
    }
}
