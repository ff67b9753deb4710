//! `/notify/*` under a flood of forged notifications (issue 16, defect 1): what fails
//! verification is limited per client address (`[notifications] rejected_rate_limit`),
//! stored only in part (2 KiB of body, its length and SHA-256, bounded headers) and
//! deleted after `[notifications] keep_rejected`; a notification the platform signed
//! always gets through and is applied. Client addresses are set through
//! `X-Forwarded-For`, believed from the test's loopback peer because it is listed in
//! `trusted_proxies`; windows and ages move with the app's `FixedClock`.

use chrono::Duration;
use kassa::domain::Currency;
use serde_json::Value;

use crate::admin::Staff;
use crate::helpers::{raw_connection, trade_success, TestApp};
use crate::notify_wechat::{insert_wechat_order, spawn_wechat, Notice};
use crate::oracle::signed_notification;

const ATTACKER: &str = "203.0.113.66";
const SHOP: &str = "198.51.100.7";

fn proxied(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![("KASSA_SERVER_TRUSTED_PROXIES", "127.0.0.1")];
    env.extend_from_slice(extra);
    env
}

/// `POST /notify/alipay` from `from`: `(status, Retry-After, body)`.
async fn alipay_from(app: &TestApp, from: &str, body: String) -> (u16, Option<String>, String) {
    let response = app
        .client
        .post(app.url("/notify/alipay"))
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .header("x-forwarded-for", from)
        .body(body)
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        response.status().as_u16(),
        retry_after,
        response.text().await.unwrap(),
    )
}

/// `POST /notify/wechat` from `from` with WeChat's headers for `notice` (or none).
async fn wechat_from(
    app: &TestApp,
    from: &str,
    body: &str,
    notice: Option<&Notice>,
) -> (u16, Option<String>, String) {
    let mut request = app
        .client
        .post(app.url("/notify/wechat"))
        .header("content-type", "application/json")
        .header("x-forwarded-for", from)
        .body(body.to_owned());
    for (k, v) in notice.map(|n| n.headers(body)).unwrap_or_default() {
        request = request.header(k, v);
    }
    let response = request.send().await.unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        response.status().as_u16(),
        retry_after,
        response.text().await.unwrap(),
    )
}

/// What the database holds of `from`'s notifications: `(rows, body bytes, header bytes)`.
fn stored_from(app: &TestApp, from: &str) -> (i64, i64, i64) {
    app.db()
        .clone()
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(length(body)), 0), COALESCE(SUM(length(headers)), 0) \
             FROM notifications WHERE remote_addr = ?1",
            [from],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
}

/// A notification as the probe sent them: a genuine one (`signed`) padded to ~30 KB, so
/// its signature no longer holds.
fn forged(signed: &str, n: usize) -> String {
    format!("{signed}&pad{n}={}", "x".repeat(30_000))
}

/// SHA-256 of `bytes` by coreutils' `sha256sum`, not by kassa's own code.
fn sha256sum(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// `kassa_rate_limited_total{surface="notify"}`, read by prometheus_client's parser
/// (PyPI), not by kassa's own code; `None` when the series is not shown.
async fn notify_refusals(app: &TestApp) -> Option<f64> {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let families = crate::oracle::parse_metrics(&text);
    let samples: Vec<f64> = families
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap().clone())
        .filter(|s: &Value| s["name"] == "kassa_rate_limited_total" && s["labels"]["surface"] == "notify")
        .map(|s| s["value"].as_f64().unwrap())
        .collect();
    assert!(samples.len() <= 1, "{samples:?}");
    samples.first().copied()
}

#[tokio::test]
async fn a_flood_of_forged_alipay_notifications_stores_only_the_limit_then_gets_429_while_a_signed_one_from_the_same_address_pays_the_order_and_another_address_is_unaffected(
) {
    const LIMIT: i64 = 10;
    let app = TestApp::spawn_alipay(&proxied(&[("KASSA_NOTIFICATIONS_REJECTED_RATE_LIMIT", "10/min")])).await;
    let id = app.insert_order("flood-1", 1234).await;
    let genuine = signed_notification(&trade_success(&id, "12.34"));

    let mut answers = Vec::new();
    for n in 0..40 {
        answers.push(alipay_from(&app, ATTACKER, forged(&genuine, n)).await);
    }
    for (n, answer) in answers.iter().enumerate() {
        let expected = if (n as i64) < LIMIT {
            (200, None, "failure")
        } else {
            (429, Some("60"), "failure")
        };
        assert_eq!(
            (answer.0, answer.1.as_deref(), answer.2.as_str()),
            expected,
            "forged notification {n}"
        );
    }
    let (rows, body_bytes, header_bytes) = stored_from(&app, ATTACKER);
    assert_eq!(rows, LIMIT, "the 429s are not stored");
    assert!(
        body_bytes <= LIMIT * 2048 && header_bytes <= LIMIT * 2048,
        "40 bodies of 30 KB left {body_bytes} body bytes and {header_bytes} header bytes"
    );
    assert_eq!(app.order(&id).await["status"], "pending");
    assert!(app.events(&id).await.is_empty());
    assert!(app.outbox(&id).await.is_empty());

    // Alipay's own notification, sent from the flooding address (a shared proxy or NAT),
    // in the same window: verified first, so never limited.
    let answer = alipay_from(&app, ATTACKER, genuine.clone()).await;
    assert_eq!((answer.0, answer.2.as_str()), (200, "success"));
    let order = app.order(&id).await;
    assert_eq!(order["status"], "paid");
    let events = app.events(&id).await;
    assert_eq!(events.len(), 1);
    let newest = &app.notifications().await[0];
    assert_eq!(newest.verdict.as_str(), "applied");
    assert_eq!(events[0]["notification_id"], newest.id, "history names it");
    assert_eq!(newest.body, genuine, "a verified notification is stored whole");
    assert_eq!((newest.body_length, newest.unverified), (None, false));
    let outbox = app.outbox(&id).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].event_type.as_str(), "order.paid");
    assert_eq!(stored_from(&app, ATTACKER).0, LIMIT + 1);

    // The address is still refused for what fails, and that is still not stored.
    let again = alipay_from(&app, ATTACKER, forged(&genuine, 99)).await;
    assert_eq!((again.0, again.2.as_str()), (429, "failure"));
    assert_eq!(stored_from(&app, ATTACKER).0, LIMIT + 1);

    // Another address has a window of its own.
    let other = alipay_from(&app, SHOP, forged(&genuine, 100)).await;
    assert_eq!((other.0, other.1, other.2.as_str()), (200, None, "failure"));
    assert_eq!(stored_from(&app, SHOP).0, 1);

    // Once the window has passed, the address may fail again (and is stored again).
    app.clock.advance(Duration::seconds(60));
    let later = alipay_from(&app, ATTACKER, forged(&genuine, 101)).await;
    assert_eq!((later.0, later.2.as_str()), (200, "failure"));
    assert_eq!(stored_from(&app, ATTACKER).0, LIMIT + 2);
    assert_eq!(app.events(&id).await.len(), 1, "none of it touched the order");
}

#[tokio::test]
async fn wechat_and_alipay_notifications_that_fail_verification_share_one_limit_per_address_a_signed_wechat_notice_still_pays_and_every_429_is_counted(
) {
    let app = spawn_wechat(&proxied(&[("KASSA_NOTIFICATIONS_REJECTED_RATE_LIMIT", "3/min")])).await;
    let id = insert_wechat_order(&app, 1234, Currency::Cny).await;
    assert_eq!(
        notify_refusals(&app).await,
        Some(0.0),
        "the surface is shown before its first refusal"
    );

    // Signed by another key than WeChat's.
    let mut forgery = Notice::paying(&app, &id, 1234);
    forgery.signer = "alipay_platform_private_pkcs8.pem";
    let body = forgery.body();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(wechat_from(&app, ATTACKER, &body, Some(&forgery)).await.0);
    }
    assert_eq!(statuses, vec![401, 401, 401]);
    let (status, retry_after, reply) = wechat_from(&app, ATTACKER, &body, Some(&forgery)).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("60")));
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["code"], "FAIL", "WeChat's failure shape: {reply}");
    // Unsigned, and to the other endpoint (Alipay is not enabled here): the same budget.
    assert_eq!(wechat_from(&app, ATTACKER, "{}", None).await.0, 429);
    assert_eq!(alipay_from(&app, ATTACKER, "a=1".into()).await.0, 429);
    assert_eq!(stored_from(&app, ATTACKER).0, 3);
    assert_eq!(app.order(&id).await["status"], "pending");

    let genuine = Notice::paying(&app, &id, 1234);
    let body = genuine.body();
    assert_eq!(wechat_from(&app, ATTACKER, &body, Some(&genuine)).await.0, 204);
    assert_eq!(app.order(&id).await["status"], "paid");
    assert_eq!(app.events(&id).await.len(), 1);
    assert_eq!(app.outbox(&id).await.len(), 1);
    assert_eq!(
        wechat_from(&app, SHOP, "{}", None).await.0,
        401,
        "another address"
    );
    assert_eq!(stored_from(&app, SHOP).0, 1);
    assert_eq!(stored_from(&app, ATTACKER).0, 4, "three forged, one genuine");

    assert_eq!(notify_refusals(&app).await, Some(3.0), "one for each 429");
}

#[tokio::test]
async fn a_rejected_notification_keeps_its_first_2_kib_its_whole_length_and_sha256_and_bounded_headers_and_the_admin_page_says_so(
) {
    let app = TestApp::spawn_alipay(&proxied(&[])).await;
    let id = app.insert_order("flood-2", 1234).await;
    let mut body = signed_notification(&trade_success(&id, "12.34"));
    body.push_str("&pad=");
    while body.len() < 31_000 {
        body.push('y');
    }
    let mut request = app
        .client
        .post(app.url("/notify/alipay"))
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .header("x-forwarded-for", ATTACKER)
        .body(body.clone());
    for n in 0..20 {
        request = request.header(format!("x-filler-{n}"), "z".repeat(1000));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "failure");

    let row = app.notifications().await.remove(0);
    assert_eq!(row.reason_code.map(|c| c.code()), Some("bad_signature"));
    assert!(row.unverified);
    assert_eq!(row.body.len(), 2048, "the first 2 KiB");
    assert!(body.starts_with(&row.body));
    assert_eq!(row.body_length, Some(31_000));
    assert_eq!(
        row.body_sha256.as_deref(),
        Some(sha256sum(body.as_bytes()).as_str())
    );
    assert!(
        row.headers.len() <= 2048,
        "{} bytes of headers",
        row.headers.len()
    );
    let headers: serde_json::Map<String, Value> = serde_json::from_str(&row.headers).unwrap();
    assert_eq!(headers["x-forwarded-for"], ATTACKER, "the first headers are kept");
    assert!(headers["(not kept)"].as_str().unwrap().ends_with("more headers"));
    assert_eq!(app.order(&id).await["status"], "pending");

    let staff = Staff::signed_in(&app).await;
    let page = staff.get(&format!("/admin/notifications/{}", row.id)).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&format!(
            "only the first 2,048 of 31,000 bytes are kept. SHA-256 of all of it: {}",
            sha256sum(body.as_bytes())
        )),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn retention_deletes_rejected_notifications_older_than_keep_rejected_in_batches_and_keeps_verified_recent_and_referenced_ones(
) {
    let app = TestApp::spawn_alipay(&[("KASSA_NOTIFICATIONS_REJECTED_RATE_LIMIT", "")]).await;
    let paid = app.insert_order("keep-1", 1234).await;
    let other = app.insert_order("keep-2", 1234).await;
    let signed_paid = signed_notification(&trade_success(&paid, "12.34"));
    // Old rows: three forged ones, one applied, one verified but rejected (amount).
    for n in 0..3 {
        assert_eq!(app.post_alipay_notify(forged(&signed_paid, n)).await.1, "failure");
    }
    assert_eq!(app.post_alipay_notify(signed_paid.clone()).await.1, "success");
    let wrong_amount = signed_notification(&trade_success(&other, "99.99"));
    assert_eq!(app.post_alipay_notify(wrong_amount).await.1, "failure");
    let db = app.db().clone();
    // Many more old forged ones, as a flood would have left them (written directly: the
    // point is the number, not how they came).
    db.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1100) \
         INSERT INTO notifications (provider, received_at, remote_addr, headers, body, verdict, reason_code, reason, body_length, body_sha256, unverified) \
         SELECT provider, received_at, remote_addr, headers, body, verdict, reason_code, reason, body_length, body_sha256, unverified \
         FROM notifications, n WHERE id = (SELECT MIN(id) FROM notifications)",
    )
    .unwrap();
    // One forged row that history names (nothing kassa does makes one; a database edited
    // by hand might): the foreign key keeps it.
    let named: i64 = db
        .query_row(
            "SELECT id FROM notifications WHERE unverified = 1 ORDER BY id LIMIT 1 OFFSET 1",
            crate::vals![],
            |r| r.get(0),
        )
        .unwrap();
    db.execute(
        "UPDATE order_events SET notification_id = ?1 WHERE order_id = ?2",
        crate::vals![named, paid],
    )
    .unwrap();

    app.clock.advance(Duration::days(31));
    for n in 10..12 {
        assert_eq!(app.post_alipay_notify(forged(&signed_paid, n)).await.1, "failure");
    }
    let count = |sql: &str| -> i64 { db.query_row(sql, crate::vals![], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT COUNT(*) FROM notifications"), 1100 + 5 + 2);

    let report = kassa::jobs::notification_retention::try_run_once(&app.core, Duration::days(30), app.now())
        .await
        .unwrap();

    assert_eq!(
        report,
        kassa::jobs::notification_retention::RetentionReport {
            deleted: 1100 + 3 - 1,
            batches: 3
        },
        "500, 500, then 102 and done"
    );
    let left: Vec<(String, Option<String>, bool)> = app
        .notifications()
        .await
        .into_iter()
        .map(|n| {
            (
                n.verdict.as_str().to_owned(),
                n.reason_code.map(|c| c.code().to_owned()),
                n.unverified,
            )
        })
        .collect();
    let bad = || ("rejected".to_owned(), Some("bad_signature".to_owned()), true);
    assert_eq!(
        left,
        vec![
            bad(),
            bad(),
            ("rejected".to_owned(), Some("amount_mismatch".to_owned()), false),
            ("applied".to_owned(), Some("paid".to_owned()), false),
            bad(),
        ],
        "newest first: the two recent forged ones, the verified ones, the one history names"
    );
    assert_eq!(
        count(&format!("SELECT COUNT(*) FROM notifications WHERE id = {named}")),
        1
    );
    assert_eq!(app.order(&paid).await["status"], "paid");
    assert_eq!(app.events(&paid).await.len(), 1);
    assert_eq!(app.outbox(&paid).await.len(), 1);

    let again = kassa::jobs::notification_retention::try_run_once(&app.core, Duration::days(30), app.now())
        .await
        .unwrap();
    assert_eq!((again.deleted, again.batches), (0, 1));
}

/// What a start of the real binary left: the retention lines it logged and the rows kept.
struct RetentionAtStart {
    lines: Vec<String>,
    log: String,
    left: Vec<(String, i64)>,
}

/// Starts the real binary, with `env` added to a clean environment, on a new database
/// holding notifications of `(age, unverified, reason)` (ages from the wall clock, which
/// the binary runs on), waits for the retention job's first log line and stops it.
async fn retention_at_start(rows: &[(Duration, i64, &str)], env: &[(&str, &str)]) -> RetentionAtStart {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let database = data.join("kassa.db");
    kassa::db::migrate(&database).unwrap();
    let now = chrono::Utc::now();
    let millis = |age: Duration| (now - age).timestamp_millis();
    let db = raw_connection(&database);
    for (age, unverified, reason) in rows {
        db.execute(
            "INSERT INTO notifications (provider, received_at, headers, body, verdict, reason_code, unverified) \
             VALUES ('alipay', ?1, '{}', x'61', 'rejected', ?2, ?3)",
            rusqlite::params![millis(*age), reason, unverified],
        )
        .unwrap();
    }
    let log = dir.path().join("kassa.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kassa"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(["--bind", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    assert!(first.starts_with("kassa listening on "), "{first}");
    // Polls only so the answer does not depend on scheduling; gives up loudly.
    let mut logged = String::new();
    for _ in 0..300 {
        logged = std::fs::read_to_string(&log).unwrap();
        if logged.contains("deleted notifications that failed verification") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines = logged
        .lines()
        .filter(|l| l.contains("deleted notifications that failed verification"))
        .map(str::to_owned)
        .collect();
    let left = db
        .prepare("SELECT reason_code, unverified FROM notifications ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    RetentionAtStart {
        lines,
        log: logged,
        left,
    }
}

/// The real binary, with its default `keep_rejected` (`30d`), started on a database that
/// holds old notifications: the supervisor runs the retention job at once, which deletes
/// the old unverified ones only and logs how many.
#[tokio::test]
async fn the_binary_runs_retention_at_start_deleting_only_old_unverified_notifications_and_logs_how_many() {
    let RetentionAtStart { lines, log, left } = retention_at_start(
        &[
            (Duration::days(40), 1, "bad_signature"),
            (Duration::days(31), 1, "malformed_body"),
            (Duration::days(29), 1, "bad_signature"),
            (Duration::days(40), 0, "unknown_order"),
        ],
        &[],
    )
    .await;
    assert_eq!(lines.len(), 1, "one line a pass: {log}");
    assert!(lines[0].contains("deleted=2"), "{}", lines[0]);
    assert_eq!(
        left,
        vec![("bad_signature".to_owned(), 1), ("unknown_order".to_owned(), 0)],
        "the recent unverified one and the old verified one"
    );
}

/// `notifications.keep_rejected` set through its environment variable reaches the job the
/// binary runs: with `7d`, an unverified notification 8 days old (kept under the `30d`
/// default) is deleted and one 6 days old is kept.
#[tokio::test]
async fn the_binary_with_keep_rejected_set_to_7d_deletes_unverified_notifications_older_than_7_days_only() {
    let RetentionAtStart { lines, log, left } = retention_at_start(
        &[
            (Duration::days(8), 1, "bad_signature"),
            (Duration::days(6), 1, "malformed_body"),
        ],
        &[("KASSA_NOTIFICATIONS_KEEP_REJECTED", "7d")],
    )
    .await;
    assert_eq!(lines.len(), 1, "one line a pass: {log}");
    assert!(lines[0].contains("deleted=1"), "{}", lines[0]);
    assert_eq!(
        left,
        vec![("malformed_body".to_owned(), 1)],
        "the 6-day-old one is kept, the 8-day-old one deleted"
    );
}

/// Rows stored before migration 0008 stay as they were, whole; those whose reason only
/// verification gives are marked unverified (for retention), the others are not.
#[test]
fn migration_0008_keeps_earlier_notifications_whole_and_marks_unverified_exactly_the_reason_codes_the_runtime_counts_as_failed_verification(
) {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("kassa.db");
    let db = raw_connection(&database);
    for (name, sql) in &kassa::db::migrations::MIGRATIONS[..7] {
        db.execute_batch(sql).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    db.pragma_update(None, "user_version", 7).unwrap();
    let body = "x".repeat(30_000);
    for (verdict, reason) in [
        ("rejected", Some("bad_signature")),
        ("rejected", Some("unknown_order")),
        ("applied", Some("paid")),
        ("rejected", None),
        ("rejected", Some("decrypt_failed")),
    ] {
        db.execute(
            "INSERT INTO notifications (provider, received_at, headers, body, verdict, reason_code) \
             VALUES ('alipay', 0, '{}', ?1, ?2, ?3)",
            rusqlite::params![body.as_bytes(), verdict, reason],
        )
        .unwrap();
    }
    drop(db);

    assert_eq!(
        kassa::db::migrate(&database).unwrap(),
        vec![
            "0008_rejected_notifications",
            "0009_sandbox_trades_by_trade_no",
            "0010_leases_and_claim_owners",
            "0011_secrets_and_refund_seq",
            "0012_rate_limits"
        ]
    );

    let db = raw_connection(&database);
    let rows: Vec<(i64, i64, Option<i64>)> = db
        .prepare("SELECT unverified, length(body), body_length FROM notifications ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (1, 30_000, None),
            (0, 30_000, None),
            (0, 30_000, None),
            (0, 30_000, None),
            (1, 30_000, None)
        ]
    );

    // Every rejection code, as a row stored before the migration: the migration's list
    // and the runtime's test must agree on each.
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("kassa.db");
    let db = raw_connection(&database);
    for (name, sql) in &kassa::db::migrations::MIGRATIONS[..7] {
        db.execute_batch(sql).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    db.pragma_update(None, "user_version", 7).unwrap();
    for code in kassa::domain::RejectionCode::ALL {
        db.execute(
            "INSERT INTO notifications (provider, received_at, headers, body, verdict, reason_code) \
             VALUES ('alipay', 0, '{}', x'61', 'rejected', ?1)",
            [code.as_str()],
        )
        .unwrap();
    }
    drop(db);
    kassa::db::migrate(&database).unwrap();
    let marked: Vec<(String, bool)> = raw_connection(&database)
        .prepare("SELECT reason_code, unverified FROM notifications ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<(String, bool)> = kassa::domain::RejectionCode::ALL
        .iter()
        .map(|c| (c.as_str().to_owned(), c.is_verification_failure()))
        .collect();
    assert_eq!(marked, expected);
}

/// The newest notification stored from `from`: `(reason code, body, body_length, unverified)`.
fn newest_from(app: &TestApp, from: &str) -> (String, String, Option<i64>, bool) {
    app.db()
        .query_row(
            "SELECT reason_code, body, body_length, unverified FROM notifications \
             WHERE remote_addr = ?1 ORDER BY id DESC LIMIT 1",
            [from],
            |r| {
                let body: Vec<u8> = r.get(1)?;
                Ok((r.get(0)?, String::from_utf8(body).unwrap(), r.get(2)?, r.get(3)?))
            },
        )
        .unwrap()
}

/// Runs one retention pass 31 days later (`keep_rejected` of 30 days).
async fn retention_a_month_later(app: &TestApp) {
    app.clock.advance(Duration::days(31));
    kassa::jobs::notification_retention::try_run_once(&app.core, Duration::days(30), app.now())
        .await
        .unwrap();
}

#[tokio::test]
async fn signed_alipay_notices_for_an_unknown_order_or_an_inexact_amount_pass_an_address_past_its_limit_and_are_kept_whole_as_verified_through_retention(
) {
    let app = TestApp::spawn_alipay(&proxied(&[("KASSA_NOTIFICATIONS_REJECTED_RATE_LIMIT", "2/min")])).await;
    let id = app.insert_order("signed-1", 1234).await;
    let genuine = signed_notification(&trade_success(&id, "12.34"));
    for n in 0..2 {
        assert_eq!(alipay_from(&app, ATTACKER, forged(&genuine, n)).await.0, 200);
    }
    let past = alipay_from(&app, ATTACKER, forged(&genuine, 2)).await;
    assert_eq!(past.0, 429, "the address is past its limit");
    // Signed by Alipay, longer than what a notification that failed verification keeps.
    let padded = |mut params: Value| {
        params["body"] = Value::String("tea ".repeat(1000));
        signed_notification(&params)
    };
    let unknown_order = padded(trade_success("shop-order-77", "12.34"));
    let inexact_amount = padded(trade_success(&id, "12.345"));

    for (body, code) in [
        (&unknown_order, "unknown_order"),
        (&inexact_amount, "amount_mismatch"),
    ] {
        assert!(body.len() > 4096);
        let answer = alipay_from(&app, ATTACKER, body.clone()).await;
        assert_eq!(
            (answer.0, answer.1, answer.2.as_str()),
            (200, None, "failure"),
            "{code}: answered, not limited"
        );
        assert_eq!(
            newest_from(&app, ATTACKER),
            (code.to_owned(), body.clone(), None, false),
            "{code}: stored whole, as verified"
        );
    }
    assert_eq!(app.order(&id).await["status"], "pending");
    assert!(app.events(&id).await.is_empty());
    assert!(app.outbox(&id).await.is_empty());

    retention_a_month_later(&app).await;

    let left: Vec<(Option<String>, usize, bool)> = app
        .notifications()
        .await
        .into_iter()
        .map(|n| {
            (
                n.reason_code.map(|c| c.code().to_owned()),
                n.body.len(),
                n.unverified,
            )
        })
        .collect();
    assert_eq!(
        left,
        vec![
            (Some("amount_mismatch".to_owned()), inexact_amount.len(), false),
            (Some("unknown_order".to_owned()), unknown_order.len(), false),
        ],
        "the two forged ones are deleted, the signed ones kept"
    );
}

#[tokio::test]
async fn a_signed_wechat_notice_in_an_unknown_currency_passes_an_address_past_its_limit_and_is_kept_whole_as_verified_through_retention(
) {
    let app = spawn_wechat(&proxied(&[("KASSA_NOTIFICATIONS_REJECTED_RATE_LIMIT", "2/min")])).await;
    let id = insert_wechat_order(&app, 1234, Currency::Cny).await;
    for _ in 0..2 {
        assert_eq!(wechat_from(&app, ATTACKER, "{}", None).await.0, 401);
    }
    assert_eq!(
        wechat_from(&app, ATTACKER, "{}", None).await.0,
        429,
        "the address is past its limit"
    );
    let mut notice = Notice::paying(&app, &id, 1234);
    notice.resource["amount"]["currency"] = "XYZ".into();
    notice.resource["attach"] = Value::String("tea ".repeat(1000));
    let body = notice.body();
    assert!(body.len() > 4096);

    let (status, retry_after, reply) = wechat_from(&app, ATTACKER, &body, Some(&notice)).await;

    assert_eq!(
        (status, retry_after),
        (400, None),
        "answered, not limited: {reply}"
    );
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(reply["code"], "FAIL");
    assert_eq!(
        newest_from(&app, ATTACKER),
        ("currency_mismatch".to_owned(), body.clone(), None, false),
        "stored whole, as verified"
    );
    assert_eq!(app.order(&id).await["status"], "pending");
    assert!(app.events(&id).await.is_empty());
    assert!(app.outbox(&id).await.is_empty());

    retention_a_month_later(&app).await;

    let left: Vec<(Option<String>, String)> = app
        .notifications()
        .await
        .into_iter()
        .map(|n| (n.reason_code.map(|c| c.code().to_owned()), n.body))
        .collect();
    assert_eq!(
        left,
        vec![(Some("currency_mismatch".to_owned()), body)],
        "the two unsigned ones are deleted, the signed one kept"
    );
}

/// Asserts `(reason code, whether the stored detail is at most 256 characters, its
/// start)` of every notification, oldest first.
fn assert_stored_details(app: &TestApp, expected: &[(&str, bool, &str)]) {
    let details: Vec<(String, i64, String)> = app
        .db()
        .clone()
        .prepare("SELECT reason_code, length(reason), substr(reason, 1, 24) FROM notifications ORDER BY id")
        .unwrap()
        .query_map(crate::vals![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        details
            .iter()
            .map(|(code, length, start)| (code.as_str(), *length <= 256, start.as_str()))
            .collect::<Vec<_>>(),
        expected,
        "{details:?}"
    );
}

#[tokio::test]
async fn a_rejection_that_quotes_a_huge_parameter_name_or_header_value_stores_at_most_256_characters_of_detail(
) {
    let alipay = TestApp::spawn_alipay(&[("KASSA_NOTIFICATIONS_REJECTED_RATE_LIMIT", "")]).await;
    let key = "k".repeat(16_000);
    for body in [
        format!("{key}=1&{key}=2"),
        format!("sign=x&sign_type={}", "R".repeat(30_000)),
    ] {
        assert_eq!(alipay.post_alipay_notify(body).await.1, "failure");
    }
    assert_stored_details(
        &alipay,
        &[
            ("malformed_body", true, "parameter kkkkkkkkkkkkkk"),
            ("unsupported_sign_type", true, "sign_type \"RRRRRRRRRRRRR"),
        ],
    );

    let wechat = spawn_wechat(&[("KASSA_NOTIFICATIONS_REJECTED_RATE_LIMIT", "")]).await;
    let id = insert_wechat_order(&wechat, 1234, Currency::Cny).await;
    let notice = Notice::paying(&wechat, &id, 1234);
    let body = notice.body();
    let long = "Z".repeat(6_000);
    for (header, status) in [
        ("Wechatpay-Signature-Type", 401),
        ("Wechatpay-Timestamp", 400),
        ("Wechatpay-Serial", 401),
    ] {
        let headers: Vec<(String, String)> = notice
            .headers(&body)
            .into_iter()
            .map(|(k, v)| if k == header { (k, long.clone()) } else { (k, v) })
            .collect();
        let answer = crate::notify_wechat::post(&wechat, &body, &headers).await;
        assert_eq!(answer.0, status, "{header}: {}", answer.1);
        assert!(
            answer.1.len() < 1024,
            "{header}: the reply quotes the bounded detail"
        );
    }
    assert_stored_details(
        &wechat,
        &[
            ("unsupported_sign_type", true, "Wechatpay-Signature-Type"),
            ("malformed_field", true, "Wechatpay-Timestamp \"ZZZ"),
            ("unknown_serial", true, "no platform public key o"),
        ],
    );
    assert_eq!(wechat.order(&id).await["status"], "pending");
}
