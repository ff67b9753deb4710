//! `db::secrets` on both backends: the first value stored under a name stays.

use chrono::Duration;

use super::orders::t0;
use crate::db::pg::testing::both_backends;
use crate::db::secrets;

both_backends! {
    fn the_first_secret_stored_under_a_name_stays_byte_for_byte_and_a_second_store_reports_it_stored_nothing(
        db: &Database,
    ) {
        let value: Vec<u8> = (0..=255).collect();
        assert_eq!(db.read_blocking(|tx| secrets::find(tx, "k")).unwrap(), None);
        let first = value.clone();
        assert!(db
            .write_blocking(move |tx| secrets::insert_if_absent(tx, "k", &first, t0()))
            .unwrap());
        let stored = db
            .write_blocking(|tx| {
                let again = secrets::insert_if_absent(tx, "k", b"second", t0() + Duration::seconds(1))?;
                let other = secrets::insert_if_absent(tx, "other", b"", t0())?;
                Ok((again, other))
            })
            .unwrap();
        assert_eq!(stored, (false, true));
        assert_eq!(
            db.read_blocking(|tx| secrets::find(tx, "k")).unwrap(),
            Some(value)
        );
        assert_eq!(
            db.read_blocking(|tx| secrets::find(tx, "other")).unwrap(),
            Some(Vec::new())
        );
        assert_eq!(db.read_blocking(|tx| secrets::find(tx, "K")).unwrap(), None);
    }
}

/// Instances starting together on one PostgreSQL database each generate a key and try
/// to store it: one is stored, the others are told so (no error) and read the winner's.
#[test]
fn instances_storing_a_secret_at_once_on_postgresql_all_end_up_with_the_one_stored() {
    use std::sync::Barrier;

    use crate::db::pg::testing::{TestSchema, SKIPPED};
    use crate::db::Database;

    let Some(schema) = TestSchema::new() else {
        println!("{SKIPPED}");
        return;
    };
    let db = Database::open_target(&schema.target()).unwrap();
    const AT_ONCE: usize = 8;
    let barrier = Barrier::new(AT_ONCE);
    let outcomes: Vec<(bool, Vec<u8>, Option<Vec<u8>>)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..AT_ONCE)
            .map(|i| {
                let (db, barrier) = (db.clone(), &barrier);
                s.spawn(move || {
                    let mine = format!("key of instance {i}").into_bytes();
                    barrier.wait();
                    let value = mine.clone();
                    let stored = db
                        .write_blocking(move |tx| secrets::insert_if_absent(tx, "sandbox", &value, t0()))
                        .unwrap();
                    let found = db.read_blocking(|tx| secrets::find(tx, "sandbox")).unwrap();
                    (stored, mine, found)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let winners: Vec<&Vec<u8>> = outcomes.iter().filter(|o| o.0).map(|o| &o.1).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    for (_, _, found) in &outcomes {
        assert_eq!(found.as_ref(), Some(winners[0]));
    }
    drop(db);
}
