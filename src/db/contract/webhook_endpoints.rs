//! `webhook_endpoints`: failing streaks, disabling, re-enabling.

use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::db::pg::testing::both_backends;
use crate::db::sql::args;
use crate::db::webhook_endpoints::{self, EndpointHealth};
use crate::db::{Database, DbResult, Tx};

const DISABLE_AFTER: Duration = Duration::seconds(100);
const QUIET_GAP: Duration = Duration::seconds(30);

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + Duration::seconds(seconds)
}

fn write<R: Send + 'static>(db: &Database, f: impl FnOnce(&Tx<'_>) -> DbResult<R> + Send + 'static) -> R {
    db.write_blocking(f).unwrap()
}

fn fail(db: &Database, url: &'static str, s: i64) -> bool {
    write(db, move |tx| {
        webhook_endpoints::failed(tx, url, t(s), DISABLE_AFTER, QUIET_GAP)
    })
}

/// `url`'s health when it is enabled and has no failing streak.
fn enabled(url: &str) -> Option<EndpointHealth> {
    Some(EndpointHealth {
        url: url.into(),
        failing_since: None,
        disabled_at: None,
    })
}

fn find(db: &Database, url: &'static str) -> Option<EndpointHealth> {
    db.read_blocking(move |tx| webhook_endpoints::find(tx, url))
        .unwrap()
}

/// Endpoints neither failing nor disabled.
fn healthy(db: &Database) -> Vec<String> {
    db.read_blocking(webhook_endpoints::list)
        .unwrap()
        .into_iter()
        .filter(|h| h.disabled_at.is_none() && h.failing_since.is_none())
        .map(|h| h.url)
        .collect()
}

both_backends! {
    fn a_failing_streak_starts_at_its_first_failure_restarts_after_a_quiet_gap_and_disables_the_endpoint_once_long_enough(db: &Database) {
        let url = "https://a.example/hook";
        assert_eq!(find(db, url), None);
        assert!(!fail(db, url, 0));
        assert!(!fail(db, url, 20));
        // 40 s after the last failure: a new streak.
        for s in [60, 80, 100, 120, 140] {
            assert!(!fail(db, url, s), "at {s}");
        }
        assert!(fail(db, url, 160), "100 s into the streak");
        assert!(!fail(db, url, 170), "already disabled");
        assert_eq!(
            find(db, url),
            Some(EndpointHealth {
                url: url.into(),
                failing_since: Some(t(60)),
                disabled_at: Some(t(160))
            })
        );
    }

    fn a_success_ends_the_streak_and_re_enables_the_endpoint(db: &Database) {
        let url = "https://a.example/hook";
        write(db, move |tx| webhook_endpoints::succeeded(tx, url, t(0)));
        assert_eq!(find(db, url), enabled(url));
        let disabled: Vec<bool> = (0..6).map(|i| fail(db, url, 10 + 20 * i)).collect();
        assert_eq!(disabled, [false, false, false, false, false, true]);
        assert!(find(db, url).unwrap().disabled_at.is_some());
        write(db, move |tx| webhook_endpoints::succeeded(tx, url, t(120)));
        assert_eq!(find(db, url), enabled(url));
        let last_success = db
            .read_blocking(move |tx| {
                tx.one(
                    "SELECT last_success_at FROM webhook_endpoints WHERE url = ?1",
                    args![url],
                    |r| r.get_opt_time(0),
                )
            })
            .unwrap();
        assert_eq!(last_success, Some(t(120)));
        assert!(!fail(db, url, 130), "a new streak");
        assert_eq!(find(db, url).unwrap().failing_since, Some(t(130)));
    }

    fn endpoints_are_listed_by_url_in_byte_order(db: &Database) {
        for url in [
            "https://b.example",
            "https://B.example",
            "https://a.example",
            "https://_.example",
        ] {
            write(db, move |tx| webhook_endpoints::succeeded(tx, url, t(0)));
        }
        assert_eq!(
            healthy(db),
            [
                "https://B.example",
                "https://_.example",
                "https://a.example",
                "https://b.example"
            ]
        );
    }

    fn a_requeue_re_enables_only_its_rows_endpoint_and_a_requeue_since_only_those_of_rows_failed_since(db: &Database) {
        write(db, webhook_endpoints::tests::requeue_rows);

        write(db, |tx| webhook_endpoints::reenable_for_requeue(tx, "e-done"));
        assert_eq!(healthy(db), ["https://done.example"]);
        write(db, |tx| webhook_endpoints::reenable_for_requeue(tx, "e-none"));
        assert_eq!(
            healthy(db),
            ["https://done.example"],
            "a row without a url re-enables nothing"
        );

        write(db, |tx| webhook_endpoints::reenable_failed_since(tx, t(100)));
        assert_eq!(healthy(db), ["https://done.example", "https://new.example"]);
    }
}
