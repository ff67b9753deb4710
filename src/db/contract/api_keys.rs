//! `api_keys` on both backends.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::api_keys::*;
use crate::db::pg::testing::both_backends;
use crate::db::Database;

fn at(m: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + Duration::minutes(m)
}

fn add(db: &Database, name: &'static str, hash: &'static [u8], m: i64) -> Option<i64> {
    db.write_blocking(move |tx| insert(tx, name, "kassa_ab", hash, at(m)))
        .unwrap()
}

fn names(db: &Database) -> Vec<(String, bool)> {
    db.read_blocking(list)
        .unwrap()
        .into_iter()
        .map(|k| (k.name, k.revoked_at.is_some()))
        .collect()
}

both_backends! {
    fn a_key_is_found_by_its_hash_while_active_and_a_name_is_taken_only_by_an_active_key(db: &Database) {
        let id = add(db, "shop", b"h1", 0).unwrap();
        assert_eq!(
            db.read_blocking(|tx| find_active_by_hash(tx, b"h1")).unwrap(),
            Some(ApiKeyRecord {
                id,
                name: "shop".into(),
                prefix: "kassa_ab".into(),
                created_at: at(0),
                last_used_at: None,
                revoked_at: None,
            })
        );
        assert_eq!(db.read_blocking(|tx| find_active_by_hash(tx, b"h2")).unwrap(), None);
        // The same name, or the same hash, while the key is active: refused, nothing stored.
        assert_eq!(add(db, "shop", b"h2", 1), None);
        assert_eq!(add(db, "other", b"h1", 1), None);
        assert_eq!(names(db), [("shop".to_owned(), false)]);

        assert!(db.write_blocking(|tx| revoke(tx, "shop", at(2))).unwrap());
        assert!(!db.write_blocking(|tx| revoke(tx, "shop", at(3))).unwrap());
        assert!(!db.write_blocking(|tx| revoke(tx, "none", at(3))).unwrap());
        assert_eq!(db.read_blocking(|tx| find_active_by_hash(tx, b"h1")).unwrap(), None);
        let again = add(db, "shop", b"h2", 4).unwrap();
        assert_ne!(again, id);
        let revoked = db.read_blocking(list).unwrap().remove(1);
        assert_eq!((revoked.id, revoked.revoked_at), (id, Some(at(2))));
    }

    fn keys_are_listed_active_first_then_by_the_bytes_of_their_names_then_by_id(db: &Database) {
        add(db, "beta", b"h1", 0);
        add(db, "Zeta", b"h2", 0);
        add(db, "alpha", b"h3", 0);
        add(db, "_x", b"h4", 0);
        db.write_blocking(|tx| revoke(tx, "alpha", at(1))).unwrap();
        add(db, "alpha", b"h5", 2);
        db.write_blocking(|tx| revoke(tx, "alpha", at(3))).unwrap();
        db.write_blocking(|tx| revoke(tx, "Zeta", at(3))).unwrap();
        add(db, "alpha", b"h6", 4);
        assert_eq!(
            names(db),
            [
                ("_x".to_owned(), false),
                ("alpha".to_owned(), false),
                ("beta".to_owned(), false),
                ("Zeta".to_owned(), true),
                ("alpha".to_owned(), true),
                ("alpha".to_owned(), true),
            ]
        );
        let keys = db.read_blocking(list).unwrap();
        assert!(keys[4].id < keys[5].id, "two revoked keys of one name by id");
    }

    fn touching_a_key_records_when_it_was_last_used(db: &Database) {
        let id = add(db, "shop", b"h1", 0).unwrap();
        db.write_blocking(move |tx| touch(tx, id, at(5))).unwrap();
        db.write_blocking(move |tx| touch(tx, id + 1, at(6))).unwrap();
        let key = db.read_blocking(|tx| find_active_by_hash(tx, b"h1")).unwrap().unwrap();
        assert_eq!(key.last_used_at, Some(at(5)));
    }
}
