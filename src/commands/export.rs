//! `kassa export orders [--from D] [--to D]`: CSV streamed row by row to stdout.

use std::io::Write;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::CommandError;
use crate::db::{orders, DbTarget, Offline};
use crate::service::export::{self, record, BoundError, HEADER};

/// `--from`/`--to`: a date in the merchant's zone or an RFC 3339 instant. `end` turns a
/// date into the start of the following day, so `--to 2026-11-30` includes the 30th.
pub fn parse_bound(text: &str, tz: Tz, end: bool, flag: &str) -> Result<DateTime<Utc>, CommandError> {
    export::parse_bound(text, tz, end).map_err(|e| {
        CommandError::new(match e {
            BoundError::NotADate => {
                format!("{flag} {text:?} is not a date (YYYY-MM-DD) or an RFC 3339 time")
            }
            BoundError::OutOfRange => format!("{flag} {text:?} is out of range"),
        })
    })
}

/// Writes every order created in `[from, before)` as CSV. Returns the row count.
pub fn orders(
    target: &DbTarget,
    tz: Tz,
    from: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
    out: impl Write,
) -> Result<u64, CommandError> {
    // Opening a SQLite file creates it: an export must not leave an empty database.
    if target.sqlite_path().is_some_and(|path| !path.exists()) {
        return Err(CommandError::new(format!("no database at {target}")));
    }
    let db = Offline::open_target(target)?;
    // An export only reads: a database kassa never started on (a PostgreSQL schema
    // not yet migrated) has no orders, rather than a missing table to report.
    if db.schema_version()? == 0 {
        return Err(CommandError::new(format!(
            "no kassa database at {target} yet (kassa creates it at its first start)"
        )));
    }
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
    fn a_bad_bound_names_its_flag() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let err = parse_bound("yesterday", tz, false, "--from").unwrap_err();
        assert_eq!(
            err.message,
            "--from \"yesterday\" is not a date (YYYY-MM-DD) or an RFC 3339 time"
        );
        assert!(parse_bound("2026-11-01", tz, true, "--to").is_ok());
    }
}
