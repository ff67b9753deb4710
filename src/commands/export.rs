//! `kassa export orders [--from D] [--to D]`: CSV streamed row by row to stdout.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::CommandError;
use crate::db::{orders, Offline};
use crate::domain::Order;

const HEADER: [&str; 18] = [
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
fn day_start(date: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    let midnight = date.and_hms_opt(0, 0, 0)?;
    tz.from_local_datetime(&midnight)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(midnight + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
}

/// `--from`/`--to`: a date in the merchant's zone or an RFC 3339 instant. `end` turns a
/// date into the start of the following day, so `--to 2026-11-30` includes the 30th.
pub fn parse_bound(text: &str, tz: Tz, end: bool, flag: &str) -> Result<DateTime<Utc>, CommandError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
        CommandError::new(format!(
            "{flag} {text:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"
        ))
    })?;
    let date = if end {
        date.succ_opt().unwrap_or(date)
    } else {
        date
    };
    day_start(date, tz).ok_or_else(|| CommandError::new(format!("{flag} {text:?} is out of range")))
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
fn defuse_formula(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

fn record(order: &Order, tz: Tz) -> [String; 18] {
    let refunded = crate::domain::Amount::from_minor(order.refunded_amount, order.amount.currency())
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

/// Writes every order created in `[from, before)` as CSV. Returns the row count.
pub fn orders(
    db_path: &Path,
    tz: Tz,
    from: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
    out: impl Write,
) -> Result<u64, CommandError> {
    if !db_path.exists() {
        return Err(CommandError::new(format!("no database at {}", db_path.display())));
    }
    let db = Offline::open(db_path)?;
    let mut writer = csv::Writer::from_writer(out);
    let csv_error = |e: csv::Error| CommandError::new(format!("cannot write CSV: {e}"));
    writer.write_record(HEADER).map_err(csv_error)?;
    let mut rows = 0u64;
    db.read(|tx| {
        orders::for_each_created_between(tx, from, before, |order| {
            rows += 1;
            writer.write_record(record(order, tz))
        })
    })?
    .map_err(csv_error)?;
    writer
        .flush()
        .map_err(|e| CommandError::new(format!("cannot write CSV: {e}")))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_days_in_the_merchant_zone() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let from = parse_bound("2026-11-01", tz, false, "--from").unwrap();
        assert_eq!(from.to_rfc3339(), "2026-10-31T16:00:00+00:00");
        let to = parse_bound("2026-11-01", tz, true, "--to").unwrap();
        assert_eq!(to.to_rfc3339(), "2026-11-01T16:00:00+00:00");
        let instant = parse_bound("2026-11-01T10:00:00Z", tz, true, "--to").unwrap();
        assert_eq!(instant.to_rfc3339(), "2026-11-01T10:00:00+00:00");
        assert!(parse_bound("yesterday", tz, false, "--from").is_err());
    }

    #[test]
    fn formula_like_subjects_are_defused() {
        assert_eq!(defuse_formula("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(defuse_formula("Tea"), "Tea");
    }
}
