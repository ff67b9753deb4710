//! Orders as CSV, the one format `kassa export orders` and the dashboard's "Export
//! CSV" share: a header row, amounts as decimal strings, every time in the merchant's
//! zone and in UTC, formula-like text defused.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use tokio::sync::mpsc;

use crate::core::Core;
use crate::db::orders::{self, OrderQuery, PageKey, Seek};
use crate::db::DbError;
use crate::domain::{Amount, Order};

pub const HEADER: [&str; 18] = [
    "id",
    "out_trade_no",
    "provider",
    "status",
    "amount",
    "currency",
    "refunded_amount",
    "subject",
    "provider_trade_no",
    "late_payment",
    "created_at",
    "created_at_utc",
    "expires_at",
    "expires_at_utc",
    "paid_at",
    "paid_at_utc",
    "closed_at",
    "closed_at_utc",
];

/// Start of a day in the merchant's zone, as UTC. A day that starts in a DST gap
/// starts at the first instant that exists.
pub fn day_start(date: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    tz.from_local_datetime(&midnight)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundError {
    NotADate,
    OutOfRange,
}

/// A date in the merchant's zone or an RFC 3339 instant. `end` turns a date into the
/// start of the following day, so a range "to 2026-11-30" includes the 30th.
pub fn parse_bound(text: &str, tz: Tz, end: bool) -> Result<DateTime<Utc>, BoundError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| BoundError::NotADate)?;
    let date = if end {
        date.succ_opt().ok_or(BoundError::OutOfRange)?
    } else {
        date
    };
    day_start(date, tz).ok_or(BoundError::OutOfRange)
}

fn local(t: Option<DateTime<Utc>>, tz: Tz) -> String {
    t.map(|t| {
        t.with_timezone(&tz)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    })
    .unwrap_or_default()
}

fn utc(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Spreadsheet programs run cells that start with these as formulas; a leading `'`
/// keeps a customer-chosen subject from becoming one.
pub fn defuse_formula(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

/// One order as a CSV record, in `HEADER`'s order.
pub fn record(order: &Order, tz: Tz) -> [String; 18] {
    let refunded = Amount::from_minor(order.refunded_amount, order.amount.currency())
        .map(|a| a.to_decimal_string())
        .unwrap_or_default();
    [
        order.id.to_string(),
        order.out_trade_no.clone(),
        order.provider.to_string(),
        order.status.to_string(),
        order.amount.to_decimal_string(),
        order.amount.currency().to_string(),
        refunded,
        defuse_formula(&order.subject),
        order.provider_trade_no.clone().unwrap_or_default(),
        order.late_payment.to_string(),
        local(Some(order.created_at), tz),
        utc(Some(order.created_at)),
        local(Some(order.expires_at), tz),
        utc(Some(order.expires_at)),
        local(order.paid_at, tz),
        utc(order.paid_at),
        local(order.closed_at, tz),
        utc(order.closed_at),
    ]
}

/// Rows read per page of an export: each page is one index seek, as in the list.
const EXPORT_PAGE: u32 = 1000;
/// Bytes gathered before a chunk goes to the client.
const CHUNK: usize = 64 * 1024;

/// Why an export stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Streams every order `query` matches, in its list order, as CSV chunks. The rows are
/// read page by page through the same keyset query as the dashboard's list, so the
/// file is exactly the list, with no row limit and in constant memory. Reading stops
/// when the receiver is dropped (the client went away).
pub fn orders_csv(core: &Core, query: OrderQuery, tz: Tz) -> mpsc::Receiver<Result<Vec<u8>, ExportError>> {
    let (sender, receiver) = mpsc::channel(4);
    let db = core.db.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK * 2);
        let result = db.read_blocking(|tx| {
            let csv_error = |e: csv::Error| DbError::Abandoned(e.to_string());
            let mut header = true;
            let mut seek = Seek::First;
            loop {
                let page = orders::page(tx, &query, &seek, EXPORT_PAGE)?;
                {
                    let mut writer = csv::Writer::from_writer(&mut buffer);
                    if std::mem::take(&mut header) {
                        writer.write_record(HEADER).map_err(csv_error)?;
                    }
                    for order in &page.rows {
                        writer.write_record(record(order, tz)).map_err(csv_error)?;
                    }
                    writer.flush().map_err(|e| DbError::Abandoned(e.to_string()))?;
                }
                if (buffer.len() >= CHUNK || !page.more)
                    && sender.blocking_send(Ok(std::mem::take(&mut buffer))).is_err()
                {
                    // The client went away.
                    return Ok(());
                }
                match page.rows.last() {
                    Some(last) if page.more => seek = Seek::After(PageKey::of(last, query.sort)),
                    _ => return Ok(()),
                }
            }
        });
        if let Err(e) = result {
            tracing::error!(error = %e, "CSV export failed");
            let _ = sender.blocking_send(Err(e.into()));
        }
    });
    receiver
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_days_in_the_merchant_zone() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let from = parse_bound("2026-11-01", tz, false).unwrap();
        assert_eq!(from.to_rfc3339(), "2026-10-31T16:00:00+00:00");
        let to = parse_bound("2026-11-01", tz, true).unwrap();
        assert_eq!(to.to_rfc3339(), "2026-11-01T16:00:00+00:00");
        let instant = parse_bound("2026-11-01T10:00:00Z", tz, true).unwrap();
        assert_eq!(instant.to_rfc3339(), "2026-11-01T10:00:00+00:00");
        assert_eq!(parse_bound("yesterday", tz, false), Err(BoundError::NotADate));
    }

    #[test]
    fn formula_like_subjects_are_defused() {
        assert_eq!(defuse_formula("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(defuse_formula("Tea"), "Tea");
    }
}
