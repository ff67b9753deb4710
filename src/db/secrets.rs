//! Secrets kassa generates once and every process on the database must share (the
//! sandbox's keys). The first process to store a name wins; the others read its value.

use chrono::{DateTime, Utc};

use super::sql::args;
use super::types::to_millis;
use super::{DbResult, Tx};

/// Stores `value` as `name` unless a value is stored under that name already; true when
/// this call stored it. A caller re-reads with `find`: another process may have won.
pub fn insert_if_absent(tx: &Tx<'_>, name: &str, value: &[u8], now: DateTime<Utc>) -> DbResult<bool> {
    let n = tx.exec(
        "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
        args![name, value, to_millis(now)],
    )?;
    Ok(n == 1)
}

pub fn find(tx: &Tx<'_>, name: &str) -> DbResult<Option<Vec<u8>>> {
    tx.opt("SELECT value FROM secrets WHERE name = ?1", args![name], |r| {
        r.get_bytes(0)
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::super::sql::tests::database;
    use super::*;

    #[test]
    fn the_first_value_stored_under_a_name_stays_and_a_second_insert_reports_it_stored_nothing() {
        let (_dir, mut db) = database();
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 6, 0, 0).unwrap();
        assert_eq!(db.read(|tx| find(tx, "k")).unwrap(), None);
        assert!(db
            .immediate(|tx| insert_if_absent(tx, "k", b"first\0", now))
            .unwrap());
        assert!(!db
            .immediate(|tx| insert_if_absent(tx, "k", b"second", now))
            .unwrap());
        assert_eq!(db.read(|tx| find(tx, "k")).unwrap(), Some(b"first\0".to_vec()));
        assert_eq!(db.read(|tx| find(tx, "other")).unwrap(), None);
    }
}
