//! `idempotency`: claiming a key, taking over an abandoned claim, completing and
//! releasing; and, on PostgreSQL, two requests with one key at once.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::idempotency::{self, IdempotencyRecord};
use crate::db::pg::testing::both_backends;
use crate::db::sql::tests::new_order;
use crate::db::{api_keys, orders, Database, DbResult, Tx};
use crate::domain::OrderId;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn write<R: Send + 'static>(db: &Database, f: impl FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static) -> R {
    db.write_blocking(f).unwrap()
}

/// Two API keys' ids.
fn api_keys(db: &Database) -> (i64, i64) {
    write(db, |tx| {
        let a = api_keys::insert(tx, "shop-a", "kas_a", b"hash-a", t(0))?.unwrap();
        let b = api_keys::insert(tx, "shop-b", "kas_b", b"hash-b", t(0))?.unwrap();
        Ok((a, b))
    })
}

fn order(db: &Database) -> OrderId {
    let order = new_order(1, 100);
    let id = order.id.clone();
    write(db, move |tx| orders::insert(tx, &order, None).map(|_| ()));
    id
}

fn claim(db: &Database, key_id: i64, hash: &'static [u8], now: DateTime<Utc>) -> bool {
    write(db, move |tx| idempotency::claim(tx, key_id, "idem-1", hash, now))
}

fn find(db: &Database, key_id: i64) -> Option<IdempotencyRecord> {
    db.read_blocking(move |tx| idempotency::find(tx, key_id, "idem-1"))
        .unwrap()
}

fn take_over(db: &Database, key_id: i64, claimed: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    write(db, move |tx| {
        idempotency::take_over(tx, key_id, "idem-1", claimed, now)
    })
}

fn in_flight(hash: &[u8], at: DateTime<Utc>) -> Option<IdempotencyRecord> {
    Some(IdempotencyRecord {
        request_hash: hash.to_vec(),
        order_id: None,
        created_at: at,
    })
}

both_backends! {
    fn a_key_is_claimed_once_per_api_key_and_a_second_claim_changes_nothing(db: &Database) {
        let (a, b) = api_keys(db);
        assert_eq!(find(db, a), None);
        assert!(claim(db, a, b"req-1", t(0)));
        assert!(!claim(db, a, b"req-2", t(5)), "taken");
        assert_eq!(
            find(db, a),
            in_flight(b"req-1", t(0)),
            "the first claim, unchanged"
        );
        assert!(
            claim(db, b, b"req-2", t(5)),
            "another API key's key of the same name is its own"
        );
        assert_eq!(find(db, b), in_flight(b"req-2", t(5)));
    }

    fn an_abandoned_claim_is_taken_over_only_as_it_was_and_never_once_completed(db: &Database) {
        let (a, _) = api_keys(db);
        assert!(claim(db, a, b"req-1", t(0)));
        assert!(!take_over(db, a, t(1), t(60)), "not the claim made at t(1)");
        assert_eq!(find(db, a), in_flight(b"req-1", t(0)));

        assert!(take_over(db, a, t(0), t(60)));
        assert_eq!(find(db, a), in_flight(b"req-1", t(60)));
        assert!(!take_over(db, a, t(0), t(61)), "already taken over since");

        let id = order(db);
        let done = id.clone();
        write(db, move |tx| idempotency::complete(tx, a, "idem-1", &done));
        assert_eq!(find(db, a).unwrap().order_id, Some(id.clone()));
        assert!(!take_over(db, a, t(60), t(120)), "completed");
        assert_eq!(find(db, a).unwrap().created_at, t(60));
    }

    fn a_release_frees_only_the_claim_as_it_was_and_never_a_completed_key(db: &Database) {
        let (a, b) = api_keys(db);
        assert!(claim(db, a, b"req-1", t(0)));
        write(db, move |tx| idempotency::release(tx, a, "idem-1", t(1)));
        assert_eq!(
            find(db, a),
            in_flight(b"req-1", t(0)),
            "a claim taken over since is kept"
        );
        write(db, move |tx| idempotency::release(tx, a, "idem-1", t(0)));
        assert_eq!(find(db, a), None);
        assert!(claim(db, a, b"req-2", t(2)), "free again");

        assert!(claim(db, b, b"req-3", t(3)));
        let id = order(db);
        let done = id.clone();
        write(db, move |tx| idempotency::complete(tx, b, "idem-1", &done));
        write(db, move |tx| idempotency::release(tx, b, "idem-1", t(3)));
        assert_eq!(
            find(db, b),
            Some(IdempotencyRecord {
                request_hash: b"req-3".to_vec(),
                order_id: Some(id),
                created_at: t(3)
            })
        );
    }
}

/// Two requests with one key at once, on PostgreSQL only.
mod concurrent {
    use super::*;
    use crate::db::contract::race::race;
    use crate::db::pg::testing::{TestSchema, SKIPPED};

    #[test]
    fn two_requests_claiming_or_taking_over_one_key_at_once_get_it_one_only() {
        let Some(schema) = TestSchema::new() else {
            println!("{SKIPPED}");
            return;
        };
        let db = Database::open_target(&schema.target()).unwrap();
        let (a, _) = api_keys(&db);

        let claimer =
            |hash: &'static [u8]| move |tx: &Tx<'_>| idempotency::claim(tx, a, "idem-1", hash, t(0));
        let (first, second) = race(&db, claimer(b"req-1"), claimer(b"req-2"));
        assert!(first);
        assert!(
            !second.unwrap(),
            "the second waits for the first's row and finds it taken"
        );
        assert_eq!(find(&db, a), in_flight(b"req-1", t(0)));

        let taker = |now| move |tx: &Tx<'_>| idempotency::take_over(tx, a, "idem-1", t(0), now);
        let (first, second) = race(&db, taker(t(60)), taker(t(61)));
        assert!(first);
        assert!(!second.unwrap(), "the second finds the claim already taken over");
        assert_eq!(find(&db, a), in_flight(b"req-1", t(60)));
    }
}
