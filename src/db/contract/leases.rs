//! `leases`: take, renew, take over once expired, release; and, on PostgreSQL, two
//! takers at once.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::leases;
use crate::db::pg::testing::both_backends;
use crate::db::{Database, DbResult, Tx};

const TTL: Duration = Duration::seconds(30);

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn write<R: Send + 'static>(db: &Database, f: impl FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static) -> R {
    db.write_blocking(f).unwrap()
}

fn take(db: &Database, name: &'static str, holder: &'static str, now: DateTime<Utc>) -> bool {
    write(db, move |tx| leases::take(tx, name, holder, now, TTL))
}

fn holder(db: &Database, name: &'static str) -> Option<(String, DateTime<Utc>)> {
    db.read_blocking(move |tx| leases::find(tx, name)).unwrap()
}

both_backends! {
    fn a_live_lease_is_renewed_by_its_holder_refused_to_another_and_taken_over_once_it_expires(db: &Database) {
        assert_eq!(holder(db, "expiry"), None);
        assert!(take(db, "expiry", "inst_a", t(0)), "a free lease is taken");
        assert!(!take(db, "expiry", "inst_b", t(0)), "a live lease is not taken");
        assert_eq!(holder(db, "expiry"), Some(("inst_a".into(), t(30))));

        assert!(take(db, "expiry", "inst_a", t(20)), "the holder renews");
        assert_eq!(holder(db, "expiry"), Some(("inst_a".into(), t(50))));
        assert!(
            !take(db, "expiry", "inst_b", t(31)),
            "past the first expiry, the renewal holds"
        );
        assert_eq!(holder(db, "expiry"), Some(("inst_a".into(), t(50))));

        assert!(
            take(db, "expiry", "inst_b", t(50)),
            "an expired lease is taken over"
        );
        assert_eq!(holder(db, "expiry"), Some(("inst_b".into(), t(80))));
        assert!(
            !take(db, "expiry", "inst_a", t(50)),
            "the old holder cannot renew what it lost"
        );
        assert_eq!(holder(db, "expiry"), Some(("inst_b".into(), t(80))));
        assert!(take(db, "backup", "inst_a", t(50)), "leases are separate by name");
    }

    fn a_lease_is_released_only_by_its_holder_and_release_all_frees_only_the_holders_own(db: &Database) {
        assert!(take(db, "expiry", "inst_a", t(0)));
        assert!(take(db, "backup", "inst_b", t(0)));
        assert!(take(db, "checks", "inst_b", t(0)));

        assert!(!write(db, |tx| leases::release(tx, "expiry", "inst_b")));
        assert_eq!(holder(db, "expiry"), Some(("inst_a".into(), t(30))));
        assert_eq!(write(db, |tx| leases::release_all(tx, "inst_b")), 2);
        assert_eq!(holder(db, "backup"), None);
        assert_eq!(holder(db, "checks"), None);
        assert_eq!(holder(db, "expiry"), Some(("inst_a".into(), t(30))));
        assert!(!take(db, "expiry", "inst_b", t(0)), "still inst_a's");

        assert!(write(db, |tx| leases::release(tx, "expiry", "inst_a")));
        assert_eq!(holder(db, "expiry"), None);
        assert!(
            !write(db, |tx| leases::release(tx, "expiry", "inst_a")),
            "already free"
        );
        assert!(take(db, "expiry", "inst_b", t(1)), "free again before its expiry");
    }
}

/// Two takers at once, on PostgreSQL only.
mod concurrent {
    use super::*;
    use crate::db::contract::race::race;
    use crate::db::pg::testing::{TestSchema, SKIPPED};

    fn taker(
        holder: &'static str,
        now: DateTime<Utc>,
    ) -> impl FnOnce(&Tx<'_>) -> DbResult<bool> + Send + 'static {
        move |tx| leases::take(tx, "expiry", holder, now, TTL)
    }

    #[test]
    fn two_instances_taking_a_free_or_an_expired_lease_at_once_get_it_one_only() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let db = Database::open_target(&schema.target()).unwrap();

        let (a, b) = race(&db, taker("inst_a", t(0)), taker("inst_b", t(0)));
        assert!(a);
        assert!(!b.unwrap(), "the second waits for the first and finds it live");
        assert_eq!(holder(&db, "expiry"), Some(("inst_a".into(), t(30))));

        // Expired: both take it over at once; the second finds the first's new lease.
        let (b, c) = race(&db, taker("inst_b", t(30)), taker("inst_c", t(30)));
        assert!(b);
        assert!(!c.unwrap());
        assert_eq!(holder(&db, "expiry"), Some(("inst_b".into(), t(60))));

        // A renewal at once with a take-over attempt: the holder keeps it.
        let (renewed, other) = race(&db, taker("inst_b", t(40)), taker("inst_c", t(40)));
        assert!(renewed);
        assert!(!other.unwrap());
        assert_eq!(holder(&db, "expiry"), Some(("inst_b".into(), t(70))));
    }

    /// Start-up's first admin (`admin_users::create_first`) behind the bootstrap lock:
    /// the second instance waits for the first's whole first start, then finds a user
    /// and creates none. Two names, so that no unique key can stand in for the lock.
    #[test]
    fn two_instances_creating_the_first_admin_at_once_make_one_owner_and_one_audit_row() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let db = Database::open_target(&schema.target()).unwrap();
        let first_start = |name: &'static str| {
            move |tx: &Tx<'_>| crate::db::admin_users::create_first(tx, name, "$argon2id$x", t(0))
        };

        let (a, b) = race(&db, first_start("admin"), first_start("admin2"));

        assert!(a, "the first creates its admin");
        assert!(!b.unwrap(), "the second waits for the first and finds a user");
        let users = crate::db::contract::select(&db, "SELECT username, role FROM admin_users", |r| {
            Ok((r.get_string(0)?, r.get_string(1)?))
        });
        assert_eq!(users, [("admin".to_owned(), "owner".to_owned())]);
        let audit = crate::db::contract::select(
            &db,
            "SELECT detail FROM audit_log WHERE action = 'user.create'",
            |r| r.get_opt_string(0),
        );
        assert_eq!(audit, [Some("admin".to_owned())]);
    }
}
