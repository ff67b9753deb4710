//! Named leases (`leases`): which process may run a singleton job's pass. One statement
//! takes a free or expired lease, or renews the caller's own; there is no read-then-write
//! for a second process to slip between. Times are passed in, never the database's.

use chrono::{DateTime, Duration, Utc};

use super::sql::args;
use super::types::to_millis;
use super::{DbResult, Tx};

/// Takes the lease `name` for `holder` until `now + ttl` when it is free, expired or
/// already `holder`'s (a renewal). True when `holder` holds it now.
pub fn take(tx: &Tx<'_>, name: &str, holder: &str, now: DateTime<Utc>, ttl: Duration) -> DbResult<bool> {
    let n = tx.exec(
        "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
         WHERE leases.expires_at <= ?4 OR leases.holder = excluded.holder",
        args![name, holder, to_millis(now + ttl), to_millis(now)],
    )?;
    Ok(n == 1)
}

/// Gives the lease `name` up, only if `holder` holds it; true when it did.
pub fn release(tx: &Tx<'_>, name: &str, holder: &str) -> DbResult<bool> {
    let n = tx.exec(
        "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
        args![name, holder],
    )?;
    Ok(n == 1)
}

/// Gives up every lease `holder` holds (at shutdown); returns how many.
pub fn release_all(tx: &Tx<'_>, holder: &str) -> DbResult<usize> {
    tx.exec("DELETE FROM leases WHERE holder = ?1", args![holder])
}

/// Makes start-up's read-then-insert steps (the first admin, and any other "create it
/// unless there is one") of concurrent instances run one after another: on PostgreSQL
/// a transaction-level advisory lock per schema, so two instances starting at once on
/// one database, at READ COMMITTED, cannot both see "none yet" and both create one;
/// it is given back at commit or rollback. SQLite's single writer already runs one
/// write transaction at a time, so there it does nothing. Call it first in the write
/// transaction, before the read it guards.
pub fn bootstrap(tx: &Tx<'_>) -> DbResult<()> {
    if tx.is_postgres() {
        // A key of its own: migrations take `kassa:` + the schema the same way.
        tx.exec(
            "SELECT pg_advisory_xact_lock(hashtext('kassa-bootstrap:' || current_schema()))",
            args![],
        )?;
    }
    Ok(())
}

/// Who holds the lease `name` and until when, expired or not.
pub fn find(tx: &Tx<'_>, name: &str) -> DbResult<Option<(String, DateTime<Utc>)>> {
    tx.opt(
        "SELECT holder, expires_at FROM leases WHERE name = ?1",
        args![name],
        |r| Ok((r.get_string(0)?, r.get_time(1)?)),
    )
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::db::Offline;

    const TTL: Duration = Duration::seconds(30);

    fn database() -> (tempfile::TempDir, Offline) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Offline::open(&dir.path().join("kassa.db")).unwrap();
        db.migrate().unwrap();
        (dir, db)
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap()
    }

    fn take_at(db: &mut Offline, holder: &str, now: DateTime<Utc>) -> bool {
        db.immediate(|tx| take(tx, "expiry", holder, now, TTL)).unwrap()
    }

    fn holder(db: &Offline) -> Option<(String, DateTime<Utc>)> {
        db.read(|tx| find(tx, "expiry")).unwrap()
    }

    #[test]
    fn a_live_lease_is_renewed_by_its_holder_refused_to_another_and_taken_over_once_it_expires() {
        let (_dir, mut db) = database();
        let now = t0();

        assert!(take_at(&mut db, "inst_a", now), "a free lease is taken");
        assert!(!take_at(&mut db, "inst_b", now), "a live lease is not taken");
        assert_eq!(holder(&db), Some(("inst_a".into(), now + TTL)));

        let later = now + Duration::seconds(20);
        assert!(take_at(&mut db, "inst_a", later), "the holder renews");
        assert_eq!(holder(&db), Some(("inst_a".into(), later + TTL)));
        // Past the first expiry, but the renewal still holds.
        assert!(!take_at(&mut db, "inst_b", now + TTL + Duration::seconds(1)));
        assert_eq!(holder(&db), Some(("inst_a".into(), later + TTL)));

        let expired = later + TTL;
        assert!(
            take_at(&mut db, "inst_b", expired),
            "an expired lease is taken over"
        );
        assert_eq!(holder(&db), Some(("inst_b".into(), expired + TTL)));
        assert!(
            !take_at(&mut db, "inst_a", expired),
            "the old holder cannot renew what it lost"
        );
        assert_eq!(holder(&db), Some(("inst_b".into(), expired + TTL)));
    }

    #[test]
    fn a_lease_is_released_only_by_its_holder() {
        let (_dir, mut db) = database();
        let now = t0();
        assert!(take_at(&mut db, "inst_a", now));
        db.immediate(|tx| take(tx, "backup", "inst_b", now, TTL)).unwrap();

        let by_other = db.immediate(|tx| release(tx, "expiry", "inst_b")).unwrap();
        let all_of_other = db.immediate(|tx| release_all(tx, "inst_b")).unwrap();

        assert!(!by_other);
        assert_eq!(all_of_other, 1, "only inst_b's own lease (backup)");
        assert_eq!(holder(&db), Some(("inst_a".into(), now + TTL)));
        assert!(!take_at(&mut db, "inst_b", now), "still inst_a's");

        assert!(db.immediate(|tx| release(tx, "expiry", "inst_a")).unwrap());
        assert_eq!(holder(&db), None);
        assert!(take_at(&mut db, "inst_b", now), "free again before its expiry");
    }
}
