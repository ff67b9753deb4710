//! `admin_users` on both backends, and (PostgreSQL only) the last-owner check under
//! two concurrent demotions.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::admin_sessions::{self, NewPending};
use crate::db::admin_users::tests::open_sessions;
use crate::db::admin_users::*;
use crate::db::pg::testing::both_backends;
use crate::db::sql::args;
use crate::db::types::to_millis;
use crate::db::{Database, Tx};
use crate::domain::admin::Role;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

/// Adds a user; panics when the name is taken.
fn add(db: &Database, name: &'static str, role: Role) -> i64 {
    db.write_blocking(move |tx| insert(tx, name, "hash", role, t0()))
        .unwrap()
        .unwrap()
}

fn user(db: &Database, name: &'static str) -> Option<AdminUser> {
    db.read_blocking(|tx| find_by_username(tx, name)).unwrap()
}

/// Opens sessions `s1`, `s2` and a pending sign-in `p1` for the user.
fn sign_in(tx: &Tx<'_>, user_id: i64) -> crate::db::DbResult<()> {
    open_sessions(tx, user_id, &[b"s1", b"s2"], t0())?;
    pending(tx, user_id, b"p1")
}

/// A pending sign-in `id_hash` for the user, due to end 5 minutes after t0.
fn pending(tx: &Tx<'_>, user_id: i64, id_hash: &[u8]) -> crate::db::DbResult<()> {
    admin_sessions::insert_pending(
        tx,
        &NewPending {
            id_hash,
            user_id,
            csrf_token: "csrf",
            now: t0(),
            expires_at: t0() + Duration::minutes(5),
            next: "/admin",
            remote_addr: None,
            user_agent: None,
        },
    )
}

/// `(sessions, pending sign-ins, recovery codes)` of a user id, as stored.
fn owned_rows(db: &Database, user_id: i64) -> (Vec<Vec<u8>>, i64, i64) {
    db.read_blocking(move |tx| {
        let sessions = tx.all(
            "SELECT id_hash FROM admin_sessions WHERE user_id = ?1 ORDER BY id_hash",
            args![user_id],
            |r| r.get_bytes(0),
        )?;
        let count = |table: &str| {
            tx.one(
                &format!("SELECT COUNT(*) FROM {table} WHERE user_id = ?1"),
                args![user_id],
                |r| r.get_i64(0),
            )
        };
        Ok((
            sessions,
            count("admin_pending_logins")?,
            count("admin_recovery_codes")?,
        ))
    })
    .unwrap()
}

both_backends! {
    fn a_user_is_stored_as_inserted_and_a_taken_name_is_refused_without_a_second_row(db: &Database) {
        let id = add(db, "ann", Role::Operator);
        let again = db
            .write_blocking(|tx| insert(tx, "ann", "other", Role::Owner, t0() + Duration::hours(1)))
            .unwrap();
        assert_eq!(again, None);
        assert_eq!(db.read_blocking(count).unwrap(), 1);
        assert_eq!(
            user(db, "ann"),
            Some(AdminUser {
                id,
                username: "ann".into(),
                password_hash: "hash".into(),
                role: Role::Operator,
                created_at: t0(),
                password_changed_at: t0(),
                disabled_at: None,
                totp_secret: None,
                totp_pending_secret: None,
                totp_enabled_at: None,
                totp_last_step: None,
            })
        );
        assert_eq!(user(db, "bob"), None);
    }

    fn users_are_listed_by_the_bytes_of_their_names(db: &Database) {
        for name in ["ann", "Bob", "_zed", "1st"] {
            add(db, name, Role::Viewer);
        }
        let names: Vec<String> = db.read_blocking(list).unwrap().into_iter().map(|u| u.username).collect();
        assert_eq!(names, ["1st", "Bob", "_zed", "ann"]);
    }

    fn a_new_password_ends_every_session_but_the_one_kept_and_every_pending_sign_in(db: &Database) {
        let id = add(db, "ann", Role::Owner);
        db.write_blocking(move |tx| sign_in(tx, id)).unwrap();
        let later = t0() + Duration::hours(2);
        assert!(db
            .write_blocking(move |tx| set_password(tx, "ann", "new", later, Some(b"s2")))
            .unwrap());
        assert_eq!(owned_rows(db, id), (vec![b"s2".to_vec()], 0, 0));
        let ann = user(db, "ann").unwrap();
        assert_eq!((ann.password_hash.as_str(), ann.password_changed_at), ("new", later));

        assert!(db.write_blocking(move |tx| set_password(tx, "ann", "newer", later, None)).unwrap());
        assert_eq!(owned_rows(db, id), (vec![], 0, 0));
        assert!(!db.write_blocking(move |tx| set_password(tx, "bob", "x", later, None)).unwrap());
        assert_eq!(db.read_blocking(count).unwrap(), 1);
    }

    fn a_role_changes_only_for_a_user_that_exists(db: &Database) {
        add(db, "ann", Role::Owner);
        assert!(db.write_blocking(|tx| set_role(tx, "ann", Role::Viewer)).unwrap());
        assert_eq!(user(db, "ann").unwrap().role, Role::Viewer);
        assert!(!db.write_blocking(|tx| set_role(tx, "bob", Role::Owner)).unwrap());
        assert_eq!(user(db, "bob"), None);
    }

    fn only_owners_not_disabled_count_as_active_owners(db: &Database) {
        assert_eq!(db.write_blocking(count_active_owners).unwrap(), 0);
        add(db, "ann", Role::Owner);
        add(db, "bob", Role::Owner);
        add(db, "cat", Role::Operator);
        add(db, "dan", Role::Owner);
        db.write_blocking(|tx| {
            tx.exec("UPDATE admin_users SET disabled_at = ?1 WHERE username = 'dan'", args![to_millis(t0())])
        })
        .unwrap();
        assert_eq!(db.write_blocking(count_active_owners).unwrap(), 2);
        db.write_blocking(|tx| set_role(tx, "bob", Role::Viewer)).unwrap();
        assert_eq!(db.write_blocking(count_active_owners).unwrap(), 1);
    }

    fn deleting_a_user_removes_their_sessions_sign_ins_and_codes_and_leaves_other_users(db: &Database) {
        let ann = add(db, "ann", Role::Owner);
        let bob = add(db, "bob", Role::Viewer);
        db.write_blocking(move |tx| {
            sign_in(tx, ann)?;
            set_pending_totp(tx, ann, "SECRET")?;
            enable_totp(tx, ann, "SECRET", 1, &[b"c1".to_vec()], t0(), b"s1")
        })
        .unwrap();
        db.write_blocking(move |tx| open_sessions(tx, bob, &[b"b1"], t0()))
            .unwrap();
        assert_eq!(owned_rows(db, ann), (vec![b"s1".to_vec()], 0, 1));

        assert!(db.write_blocking(|tx| delete(tx, "ann")).unwrap());
        assert_eq!(owned_rows(db, ann), (vec![], 0, 0));
        assert_eq!(user(db, "ann"), None);
        assert_eq!(owned_rows(db, bob), (vec![b"b1".to_vec()], 0, 0));
        assert!(!db.write_blocking(|tx| delete(tx, "ann")).unwrap());
        assert_eq!(db.read_blocking(count).unwrap(), 1);
    }

    fn a_second_factor_is_enabled_only_with_the_pending_secret_and_disabling_forgets_it(db: &Database) {
        let id = add(db, "ann", Role::Owner);
        db.write_blocking(move |tx| sign_in(tx, id)).unwrap();
        db.write_blocking(move |tx| set_pending_totp(tx, id, "NEW")).unwrap();
        assert_eq!(user(db, "ann").unwrap().totp_pending_secret.as_deref(), Some("NEW"));
        // The pending secret changed meanwhile: nothing is enabled, nothing ends.
        let stale = db
            .write_blocking(move |tx| enable_totp(tx, id, "OLD", 5, &[b"c1".to_vec()], t0(), b"s1"))
            .unwrap();
        assert!(!stale);
        assert_eq!(user(db, "ann").unwrap().totp_secret, None);
        assert_eq!(owned_rows(db, id), (vec![b"s1".to_vec(), b"s2".to_vec()], 1, 0));

        let codes = vec![b"c1".to_vec(), b"c2".to_vec()];
        let at = t0() + Duration::minutes(1);
        assert!(db.write_blocking(move |tx| enable_totp(tx, id, "NEW", 5, &codes, at, b"s1")).unwrap());
        let ann = user(db, "ann").unwrap();
        assert_eq!(
            (ann.totp_secret.as_deref(), ann.totp_pending_secret, ann.totp_enabled_at, ann.totp_last_step),
            (Some("NEW"), None, Some(at), Some(5))
        );
        assert_eq!(owned_rows(db, id), (vec![b"s1".to_vec()], 0, 2));
        assert_eq!(db.read_blocking(move |tx| recovery_codes_left(tx, id)).unwrap(), 2);

        db.write_blocking(move |tx| sign_in_pending_only(tx, id)).unwrap();
        db.write_blocking(move |tx| disable_totp(tx, id)).unwrap();
        let ann = user(db, "ann").unwrap();
        assert_eq!(
            (ann.totp_secret, ann.totp_pending_secret, ann.totp_enabled_at, ann.totp_last_step),
            (None, None, None, None)
        );
        // Sessions stay; codes and pending sign-ins go.
        assert_eq!(owned_rows(db, id), (vec![b"s1".to_vec()], 0, 0));
    }

    fn a_code_step_is_used_only_once_and_only_after_the_last(db: &Database) {
        let id = add(db, "ann", Role::Owner);
        let step = |s: i64| db.write_blocking(move |tx| use_totp_step(tx, id, s)).unwrap();
        assert!(step(10));
        assert!(!step(10));
        assert!(!step(9));
        assert!(step(11));
        assert_eq!(user(db, "ann").unwrap().totp_last_step, Some(11));
    }

    fn a_recovery_code_is_used_once_and_only_by_its_user(db: &Database) {
        let ann = add(db, "ann", Role::Owner);
        let bob = add(db, "bob", Role::Owner);
        db.write_blocking(move |tx| {
            set_pending_totp(tx, ann, "S")?;
            enable_totp(tx, ann, "S", 1, &[b"c1".to_vec(), b"c2".to_vec()], t0(), b"-")
        })
        .unwrap();
        let use_code = |user_id: i64, code: &'static [u8]| {
            db.write_blocking(move |tx| use_recovery_code(tx, user_id, code, t0())).unwrap()
        };
        assert!(!use_code(bob, b"c1"));
        assert!(!use_code(ann, b"c9"));
        assert_eq!(db.read_blocking(move |tx| recovery_codes_left(tx, ann)).unwrap(), 2);
        assert!(use_code(ann, b"c1"));
        assert!(!use_code(ann, b"c1"));
        assert_eq!(db.read_blocking(move |tx| recovery_codes_left(tx, ann)).unwrap(), 1);
        assert_eq!(db.read_blocking(move |tx| recovery_codes_left(tx, bob)).unwrap(), 0);
    }

    fn a_setting_is_absent_until_set_and_setting_it_again_replaces_it(db: &Database) {
        assert_eq!(db.read_blocking(|tx| setting(tx, "require_totp")).unwrap(), None);
        db.write_blocking(|tx| set_setting(tx, "require_totp", "1")).unwrap();
        db.write_blocking(|tx| set_setting(tx, "require_totp", "0")).unwrap();
        db.write_blocking(|tx| set_setting(tx, "other", "x")).unwrap();
        assert_eq!(db.read_blocking(|tx| setting(tx, "require_totp")).unwrap().as_deref(), Some("0"));
        let rows = db
            .read_blocking(|tx| tx.one("SELECT COUNT(*) FROM admin_settings", args![], |r| r.get_i64(0)))
            .unwrap();
        assert_eq!(rows, 2);
    }
}

/// A pending sign-in `p2` (nothing else), for what disabling a second factor drops.
fn sign_in_pending_only(tx: &Tx<'_>, user_id: i64) -> crate::db::DbResult<()> {
    pending(tx, user_id, b"p2")
}

/// Two owners each demoting the other at once, as `service::staff::set_role` does in
/// one transaction (find, count the active owners, change the role): at READ COMMITTED
/// both would count two owners and both pass, leaving none. The second demotion is
/// made to count while the first has counted and not yet committed; it must wait for
/// the first and then see one owner.
#[test]
fn of_two_owners_demoting_each_other_at_once_exactly_one_is_refused_on_postgresql() {
    use std::sync::mpsc;

    let Some(schema) = crate::db::pg::testing::TestSchema::new() else {
        println!("{}", crate::db::pg::testing::SKIPPED);
        return;
    };
    let db = Database::open_target(&schema.target()).unwrap();
    add(&db, "ann", Role::Owner);
    add(&db, "bob", Role::Owner);

    /// The closure of `staff::set_role`: Ok(true) when the role changed, Ok(false) when
    /// refused as the last owner. `counted` is told once the count is taken.
    fn demote(tx: &Tx<'_>, name: &str, counted: impl FnOnce()) -> crate::db::DbResult<bool> {
        let user = find_by_username(tx, name)?.expect("the user exists");
        let owners = count_active_owners(tx)?;
        counted();
        if user.role == Role::Owner && owners <= 1 {
            return Ok(false);
        }
        set_role(tx, name, Role::Operator)?;
        Ok(true)
    }

    let (a_counted, a_has_counted) = mpsc::channel::<i64>();
    let (go_a, a_may_commit) = mpsc::channel::<()>();
    let (b_counting, b_is_counting) = mpsc::channel::<()>();
    let (b_counted, b_has_counted) = mpsc::channel::<()>();
    let (a, b) = (db.clone(), db.clone());
    let first = std::thread::spawn(move || {
        a.write_blocking(move |tx| {
            let pid = tx.one("SELECT pg_backend_pid()", args![], |r| r.get_i64(0))?;
            demote(tx, "ann", || {
                a_counted.send(pid).unwrap();
                a_may_commit.recv().unwrap();
            })
        })
    });
    let a_pid = a_has_counted.recv().unwrap();
    let second = std::thread::spawn(move || {
        b.write_blocking(move |tx| {
            b_counting.send(()).unwrap();
            demote(tx, "bob", || b_counted.send(()).unwrap())
        })
    });
    b_is_counting.recv().unwrap();
    // The second has counted, or is waiting for a lock the first holds: either way its
    // count is taken (or will be) before the first commits.
    let waits_for_first = || {
        db.read_blocking(move |tx| {
            tx.one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE ?1 = ANY(pg_blocking_pids(pid))",
                args![a_pid],
                |r| r.get_i64(0),
            )
        })
        .unwrap()
            > 0
    };
    let mut polls = 0;
    while b_has_counted.try_recv().is_err() && !waits_for_first() {
        polls += 1;
        assert!(polls < 3000, "the second demotion neither counted nor waited");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    go_a.send(()).unwrap();
    let outcomes = [first.join().unwrap().unwrap(), second.join().unwrap().unwrap()];

    assert_eq!(
        outcomes,
        [true, false],
        "the first demotion passes, the second is refused"
    );
    let roles: Vec<(String, Role)> = db
        .read_blocking(list)
        .unwrap()
        .into_iter()
        .map(|u| (u.username, u.role))
        .collect();
    assert_eq!(
        roles,
        [
            ("ann".to_owned(), Role::Operator),
            ("bob".to_owned(), Role::Owner)
        ]
    );
    drop(db);
}
