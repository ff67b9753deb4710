//! `login_attempts` on both backends: the failure upsert, lockouts, clearing, pruning.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::login_attempts::*;
use crate::db::pg::testing::both_backends;
use crate::db::sql::args;
use crate::db::types::to_millis;
use crate::db::Database;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

fn s(n: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(n)
}

const POLICY: Policy = Policy {
    max_failures: 3,
    window: Duration::seconds(60),
    lockout: Duration::seconds(10),
    max_lockout: Duration::seconds(25),
    forget_after: Duration::seconds(500),
};

fn fail(db: &Database, scope: Scope, key: &'static str, n: i64) -> Option<DateTime<Utc>> {
    db.write_blocking(move |tx| record_failure(tx, scope, key, s(n), &POLICY))
        .unwrap()
}

fn locked(db: &Database, scope: Scope, key: &'static str, n: i64) -> Option<DateTime<Utc>> {
    db.read_blocking(move |tx| locked_until(tx, scope, key, s(n)))
        .unwrap()
}

/// Every stored key: `(scope, key, failures, window_start s, lockouts, locked_until s,
/// updated_at s)`.
type Stored = (String, String, i64, i64, i64, Option<i64>, i64);

fn stored(db: &Database) -> Vec<Stored> {
    let secs = |ms: i64| (ms - to_millis(t0())) / 1000;
    db.read_blocking(move |tx| {
        tx.all(
            "SELECT scope, key, failures, window_start, lockouts, locked_until, updated_at \
             FROM login_attempts ORDER BY scope, key",
            args![],
            |r| {
                Ok((
                    r.get_string(0)?,
                    r.get_string(1)?,
                    r.get_i64(2)?,
                    secs(r.get_i64(3)?),
                    r.get_i64(4)?,
                    r.get_opt_i64(5)?.map(secs),
                    secs(r.get_i64(6)?),
                ))
            },
        )
    })
    .unwrap()
}

both_backends! {
    fn failures_count_within_the_window_lock_with_doubling_lockouts_capped_and_a_quiet_key_starts_over(db: &Database) {
        let (user, ann) = (Scope::Username, "ann");
        assert_eq!(fail(db, user, ann, 0), None);
        assert_eq!(fail(db, user, ann, 30), None);
        // Past the window: counting starts again from this failure.
        assert_eq!(fail(db, user, ann, 70), None);
        assert_eq!(stored(db), [("username".into(), "ann".into(), 1, 70, 0, None, 70)]);
        assert_eq!(fail(db, user, ann, 80), None);
        assert_eq!(locked(db, user, ann, 85), None);
        assert_eq!(fail(db, user, ann, 90), Some(s(100)));
        assert_eq!(locked(db, user, ann, 95), Some(s(100)));
        assert_eq!(locked(db, user, ann, 100), None);
        assert_eq!(stored(db), [("username".into(), "ann".into(), 0, 90, 1, Some(100), 90)]);
        // The second lockout is twice as long, the third capped at `max_lockout`.
        fail(db, user, ann, 100);
        fail(db, user, ann, 101);
        assert_eq!(fail(db, user, ann, 102), Some(s(122)));
        fail(db, user, ann, 130);
        fail(db, user, ann, 131);
        assert_eq!(fail(db, user, ann, 132), Some(s(157)));
        assert_eq!(stored(db), [("username".into(), "ann".into(), 0, 132, 3, Some(157), 132)]);
        // Quiet for `forget_after`: the next lockout is the first one again.
        assert_eq!(fail(db, user, ann, 632), None);
        assert_eq!(stored(db), [("username".into(), "ann".into(), 1, 632, 0, Some(157), 632)]);
        fail(db, user, ann, 633);
        assert_eq!(fail(db, user, ann, 634), Some(s(644)));
    }

    fn each_scope_and_key_counts_apart_and_clearing_forgets_only_its_own(db: &Database) {
        for n in 0..3 {
            fail(db, Scope::Address, "10.0.0.1", n);
        }
        fail(db, Scope::Username, "10.0.0.1", 0);
        fail(db, Scope::Username, "ann", 0);
        assert_eq!(locked(db, Scope::Address, "10.0.0.1", 5), Some(s(12)));
        assert_eq!(locked(db, Scope::Username, "10.0.0.1", 5), None);
        let keys = |db: &Database| -> Vec<(String, String, i64)> {
            stored(db).into_iter().map(|r| (r.0, r.1, r.2)).collect()
        };
        assert_eq!(
            keys(db),
            [
                ("address".into(), "10.0.0.1".into(), 0),
                ("username".into(), "10.0.0.1".into(), 1),
                ("username".into(), "ann".into(), 1),
            ]
        );
        db.write_blocking(|tx| clear(tx, Scope::Username, "10.0.0.1")).unwrap();
        db.write_blocking(|tx| clear(tx, Scope::Username, "nobody")).unwrap();
        assert_eq!(
            keys(db),
            [("address".into(), "10.0.0.1".into(), 0), ("username".into(), "ann".into(), 1)]
        );
    }

    fn pruning_deletes_keys_quiet_for_long_enough_unless_still_locked(db: &Database) {
        // `quiet`: one failure at 0 s. `locked`: locked at 2 s, its lockout then moved
        // to 10 000 s. `recent`: one failure at 400 s.
        fail(db, Scope::Username, "quiet", 0);
        for n in 0..3 {
            fail(db, Scope::Username, "locked", n);
        }
        fail(db, Scope::Username, "recent", 400);
        db.write_blocking(|tx| {
            tx.exec(
                "UPDATE login_attempts SET locked_until = ?1 WHERE key = 'locked'",
                args![to_millis(s(10_000))],
            )
        })
        .unwrap();
        let prune_at = |n: i64| {
            db.write_blocking(move |tx| prune(tx, s(n), Duration::seconds(500))).unwrap()
        };
        assert_eq!(prune_at(499), 0);
        assert_eq!(prune_at(500), 1);
        let keys: Vec<String> = stored(db).into_iter().map(|r| r.1).collect();
        assert_eq!(keys, ["locked", "recent"]);
        assert_eq!(prune_at(900), 1);
        assert_eq!(prune_at(10_000), 1);
        assert!(stored(db).is_empty());
    }
}
