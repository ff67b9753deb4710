//! `admin_sessions` on both backends: sessions and sign-ins waiting for a second
//! factor, found by the hash of their id, touched, ended and expired.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::admin_sessions::*;
use crate::db::admin_users;
use crate::db::pg::testing::both_backends;
use crate::db::sql::args;
use crate::db::{Database, DbResult, Tx};
use crate::domain::admin::Role;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

fn add_user(db: &Database, name: &'static str) -> i64 {
    db.write_blocking(move |tx| admin_users::insert(tx, name, "hash", Role::Operator, t0()))
        .unwrap()
        .unwrap()
}

/// A session `hash` of the user, opened at second `opened` and last seen then, ending
/// at second `ends`.
fn open(tx: &Tx<'_>, hash: &[u8], user_id: i64, opened: i64, ends: i64) -> DbResult<()> {
    insert(
        tx,
        &NewSession {
            id_hash: hash,
            user_id,
            csrf_token: "csrf-1",
            now: t0() + Duration::seconds(opened),
            expires_at: t0() + Duration::seconds(ends),
            remote_addr: Some("10.0.0.1"),
            user_agent: None,
        },
    )
}

fn pending(tx: &Tx<'_>, hash: &[u8], user_id: i64, now: i64, ends: i64) -> DbResult<()> {
    insert_pending(
        tx,
        &NewPending {
            id_hash: hash,
            user_id,
            csrf_token: "csrf-2",
            now: t0() + Duration::seconds(now),
            expires_at: t0() + Duration::seconds(ends),
            next: "/admin/orders?status=paid",
            remote_addr: None,
            user_agent: Some("curl/8"),
        },
    )
}

fn hashes(db: &Database, table: &'static str) -> Vec<Vec<u8>> {
    db.read_blocking(move |tx| {
        tx.all(
            &format!("SELECT id_hash FROM {table} ORDER BY id_hash"),
            args![],
            |r| r.get_bytes(0),
        )
    })
    .unwrap()
}

both_backends! {
    fn a_session_is_found_by_its_hash_with_its_user_and_touching_it_moves_only_last_seen(db: &Database) {
        let ann = add_user(db, "ann");
        db.write_blocking(move |tx| open(tx, b"\x00\xffs", ann, 0, 3600)).unwrap();
        let found = db.read_blocking(|tx| find(tx, b"\x00\xffs")).unwrap().unwrap();
        let user = db.read_blocking(|tx| admin_users::find_by_username(tx, "ann")).unwrap().unwrap();
        assert_eq!(
            found,
            Session {
                csrf_token: "csrf-1".into(),
                created_at: t0(),
                last_seen_at: t0(),
                expires_at: t0() + Duration::hours(1),
                user,
            }
        );
        assert_eq!(db.read_blocking(|tx| find(tx, b"\x00\xff")).unwrap(), None);

        db.write_blocking(|tx| touch(tx, b"\x00\xffs", t0() + Duration::minutes(5))).unwrap();
        let touched = db.read_blocking(|tx| find(tx, b"\x00\xffs")).unwrap().unwrap();
        assert_eq!(
            (touched.created_at, touched.last_seen_at, touched.expires_at),
            (t0(), t0() + Duration::minutes(5), t0() + Duration::hours(1))
        );
    }

    fn deleting_a_session_ends_only_it_and_says_whether_there_was_one(db: &Database) {
        let (ann, bob) = (add_user(db, "ann"), add_user(db, "bob"));
        db.write_blocking(move |tx| {
            open(tx, b"a1", ann, 0, 3600)?;
            open(tx, b"a2", ann, 0, 3600)?;
            open(tx, b"b1", bob, 0, 3600)
        })
        .unwrap();
        assert_eq!(db.read_blocking(|tx| count_for_user(tx, "ann")).unwrap(), 2);
        assert!(db.write_blocking(|tx| delete(tx, b"a1")).unwrap());
        assert!(!db.write_blocking(|tx| delete(tx, b"a1")).unwrap());
        assert_eq!(hashes(db, "admin_sessions"), [b"a2".to_vec(), b"b1".to_vec()]);
        assert_eq!(db.read_blocking(|tx| count_for_user(tx, "ann")).unwrap(), 1);
        assert_eq!(db.read_blocking(|tx| count_for_user(tx, "bob")).unwrap(), 1);
        assert_eq!(db.read_blocking(|tx| count_for_user(tx, "cat")).unwrap(), 0);
    }

    fn a_session_expires_at_its_end_or_after_being_idle_and_not_a_millisecond_before(db: &Database) {
        let ann = add_user(db, "ann");
        db.write_blocking(move |tx| {
            // `ends` at 100 s (seen at 50 s); `idle` since 0 s; `seen` at 90 s.
            open(tx, b"ends", ann, 0, 100)?;
            open(tx, b"idle", ann, 0, 1000)?;
            open(tx, b"seen", ann, 0, 1000)?;
            touch(tx, b"ends", t0() + Duration::seconds(50))?;
            touch(tx, b"seen", t0() + Duration::seconds(90))
        })
        .unwrap();
        let idle = Duration::seconds(60);
        let expire = |ms: i64| {
            db.write_blocking(move |tx| delete_expired(tx, t0() + Duration::milliseconds(ms), idle))
                .unwrap()
        };
        assert_eq!(expire(59_999), 0);
        assert_eq!(expire(60_000), 1);
        assert_eq!(hashes(db, "admin_sessions"), [b"ends".to_vec(), b"seen".to_vec()]);
        assert_eq!(expire(99_999), 0);
        assert_eq!(expire(100_000), 1);
        assert_eq!(hashes(db, "admin_sessions"), [b"seen".to_vec()]);
        assert_eq!(expire(149_999), 0);
        assert_eq!(expire(150_000), 1);
        assert!(hashes(db, "admin_sessions").is_empty());
    }

    fn a_pending_sign_in_is_found_with_its_user_deleted_once_and_swept_when_another_begins_after_its_end(db: &Database) {
        let ann = add_user(db, "ann");
        db.write_blocking(move |tx| {
            pending(tx, b"p1", ann, 0, 300)?;
            pending(tx, b"p2", ann, 0, 600)
        })
        .unwrap();
        let found = db.read_blocking(|tx| find_pending(tx, b"p1")).unwrap().unwrap();
        assert_eq!(
            (found.csrf_token.as_str(), found.expires_at, found.next.as_str(), found.user_agent.as_deref()),
            ("csrf-2", t0() + Duration::seconds(300), "/admin/orders?status=paid", Some("curl/8"))
        );
        assert_eq!((found.user.id, found.user.username.as_str()), (ann, "ann"));
        assert!(db.read_blocking(|tx| find_pending(tx, b"p3")).unwrap().is_none());

        // A sign-in beginning at 300 s sweeps p1 (ended at 300 s), not p2.
        db.write_blocking(move |tx| pending(tx, b"p3", ann, 300, 900)).unwrap();
        assert_eq!(hashes(db, "admin_pending_logins"), [b"p2".to_vec(), b"p3".to_vec()]);

        assert!(db.write_blocking(|tx| delete_pending(tx, b"p2")).unwrap());
        assert!(!db.write_blocking(|tx| delete_pending(tx, b"p2")).unwrap());
        assert_eq!(hashes(db, "admin_pending_logins"), [b"p3".to_vec()]);
    }
}
