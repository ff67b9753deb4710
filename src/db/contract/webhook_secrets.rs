//! `webhook_secrets`: the first secret, rotation, which secrets sign; and, on
//! PostgreSQL, two instances storing a first secret at once.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::pg::testing::both_backends;
use crate::db::sql::args;
use crate::db::webhook_secrets;
use crate::db::{Database, DbResult, Tx};

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn write<R: Send + 'static>(db: &Database, f: impl FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static) -> R {
    db.write_blocking(f).unwrap()
}

fn signing(db: &Database, now: DateTime<Utc>) -> Vec<String> {
    db.read_blocking(move |tx| webhook_secrets::signing(tx, now))
        .unwrap()
}

fn stored(db: &Database) -> Vec<String> {
    db.read_blocking(|tx| {
        tx.all("SELECT secret FROM webhook_secrets ORDER BY id", args![], |r| {
            r.get_string(0)
        })
    })
    .unwrap()
}

both_backends! {
    fn the_first_secret_is_stored_once_and_every_later_ensure_returns_it(db: &Database) {
        assert!(signing(db, t(0)).is_empty());
        assert_eq!(
            write(db, |tx| webhook_secrets::ensure(tx, "whsec_one", t(0))),
            "whsec_one"
        );
        assert_eq!(
            write(db, |tx| webhook_secrets::ensure(tx, "whsec_two", t(1))),
            "whsec_one"
        );
        assert_eq!(stored(db), ["whsec_one"]);
        assert_eq!(signing(db, t(1)), ["whsec_one"]);
    }

    fn a_rotated_out_secret_keeps_signing_beside_the_new_one_until_it_retires(db: &Database) {
        write(db, |tx| webhook_secrets::ensure(tx, "whsec_one", t(0)));
        write(db, |tx| webhook_secrets::rotate(tx, "whsec_two", t(10), t(100)));

        assert_eq!(signing(db, t(99)), ["whsec_two", "whsec_one"], "newest first");
        assert_eq!(signing(db, t(100)), ["whsec_two"], "retired at its retire_at");
        assert_eq!(
            write(db, |tx| webhook_secrets::ensure(tx, "whsec_x", t(101))),
            "whsec_two",
            "the newest"
        );

        // A second rotation before the first retirement brings that one forward, never back.
        write(db, |tx| webhook_secrets::rotate(tx, "whsec_three", t(20), t(50)));
        assert_eq!(signing(db, t(49)), ["whsec_three", "whsec_two", "whsec_one"]);
        assert_eq!(signing(db, t(50)), ["whsec_three"]);
        write(db, |tx| webhook_secrets::rotate(tx, "whsec_four", t(60), t(200)));
        assert_eq!(
            signing(db, t(199)),
            ["whsec_four", "whsec_three"],
            "a retired one stays retired"
        );
    }
}

/// Two instances at once, on PostgreSQL only.
mod concurrent {
    use super::*;
    use crate::db::contract::race::race;
    use crate::db::pg::testing::{TestSchema, SKIPPED};

    #[test]
    fn two_instances_storing_a_first_secret_at_once_end_with_one_secret_that_both_sign_with() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let db = Database::open_target(&schema.target()).unwrap();

        let (a, b) = race(
            &db,
            |tx| webhook_secrets::ensure(tx, "whsec_a", t(0)),
            |tx| webhook_secrets::ensure(tx, "whsec_b", t(0)),
        );

        assert_eq!(stored(&db), ["whsec_a"]);
        assert_eq!(a, "whsec_a");
        assert_eq!(
            b.unwrap(),
            "whsec_a",
            "the second instance signs with the first's secret"
        );
    }
}
