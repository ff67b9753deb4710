//! The dashboard's second part through the real app: the overview's numbers against a
//! seeded database whose answers are worked out by hand (across a time-zone day
//! boundary), the notification and webhook logs and their filters, re-sending every
//! failed delivery a filter matches, the role × action matrix, two-factor sign-in with
//! a controlled clock (codes computed here with ring's HMAC, not kassa's), recovery
//! codes, the secret reveal, API keys and the audit log. Every refusal is shown to
//! change no stored row.

use std::collections::BTreeMap;

use crate::vals as params;
use chrono::{DateTime, Duration, TimeZone, Utc};
use kassa::db::admin_users;
use kassa::domain::admin::{hash_password, Role};
use kassa::domain::OrderId;

use crate::admin::{csrf_of, Page, Staff};
use crate::helpers::{TestApp, TestDb, ADMIN_PASSWORD};

const OPERATOR_PASSWORD: &str = "operator password 1";
const VIEWER_PASSWORD: &str = "viewer password 1";

pub fn db(app: &TestApp) -> TestDb {
    app.db().clone()
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// An order row as kassa stores it; returns its id.
pub fn seed_order(
    app: &TestApp,
    number: &str,
    amount: i64,
    status: &str,
    refunded: i64,
    late: bool,
    created: DateTime<Utc>,
) -> String {
    let id = OrderId::generate().to_string();
    let paid = matches!(status, "paid" | "partially_refunded" | "refunded");
    db(app)
        .execute(
            "INSERT INTO orders (id, out_trade_no, amount, currency, subject, provider, status, qr_code, metadata, \
             provider_trade_no, refunded_amount, late_payment, created_at, expires_at, paid_at, closed_at, updated_at) \
             VALUES (?1, ?2, ?3, 'CNY', 'Tea', 'alipay', ?4, 'qr', '{}', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?8)",
            params![
                id,
                number,
                amount,
                status,
                paid.then(|| format!("T{number}")),
                refunded,
                late,
                ms(created),
                ms(created + Duration::minutes(15)),
                paid.then(|| ms(created + Duration::minutes(1))),
                (status == "closed").then(|| ms(created + Duration::minutes(15))),
            ],
        )
        .unwrap();
    id
}

pub fn seed_notification(
    app: &TestApp,
    at: DateTime<Utc>,
    provider: &str,
    verdict: &str,
    code: &str,
    order: Option<&str>,
    body: &str,
) -> i64 {
    db(app)
        .query_row(
            "INSERT INTO notifications (provider, received_at, remote_addr, headers, body, order_id, verdict, reason_code, reason) \
             VALUES (?1, ?2, '203.0.113.9', '{\"content-type\":\"application/x-www-form-urlencoded\"}', ?3, ?4, ?5, ?6, 'detail') RETURNING id",
            params![provider, ms(at), body.as_bytes(), order, verdict, code],
            |r| r.get(0),
        )
        .unwrap()
}

/// An outbox row with `attempts` (HTTP statuses, or none for a connection error).
pub fn seed_delivery(
    app: &TestApp,
    order: &str,
    status: &str,
    url: &str,
    at: DateTime<Utc>,
    attempts: &[Option<i64>],
) -> String {
    let conn = db(app);
    let event_id = kassa::domain::ids::new_event_id();
    let outbox: i64 = conn
        .query_row(
            "INSERT INTO webhook_outbox (event_id, order_id, event_type, payload, status, attempts, next_attempt_at, created_at, updated_at, url, last_error) \
             VALUES (?1, ?2, 'order.paid', '{}', ?3, ?4, ?5, ?5, ?5, ?6, ?7) RETURNING id",
            params![
                event_id,
                order,
                status,
                attempts.len() as i64,
                ms(at),
                url,
                (status == "failed").then_some("HTTP 500")
            ],
            |r| r.get(0),
        )
        .unwrap();
    for (i, status) in attempts.iter().enumerate() {
        conn.execute(
            "INSERT INTO webhook_attempts (outbox_id, at, url, http_status, error, latency_ms) VALUES (?1, ?2, ?3, ?4, ?5, 12)",
            params![
                outbox,
                ms(at + Duration::seconds(i as i64)),
                url,
                status,
                status.is_none().then_some("connection refused")
            ],
        )
        .unwrap();
    }
    event_id
}

fn add_user(app: &TestApp, name: &str, password: &str, role: Role) {
    let hash = hash_password(password).unwrap();
    let now = app.now();
    let (name, role_) = (name.to_owned(), role);
    // On a thread of its own: the app's runtime must not block on the write.
    let db = app.core.db.clone();
    std::thread::spawn(move || {
        db.write_blocking(move |tx| admin_users::insert(tx, &name, &hash, role_, now))
    })
    .join()
    .unwrap()
    .unwrap()
    .unwrap();
}

/// Every row of the tables an admin action could change, as text.
fn rows(app: &TestApp, skip: &[&str]) -> BTreeMap<String, Vec<String>> {
    let conn = db(app);
    let mut out = BTreeMap::new();
    for table in conn.tables().into_iter().filter(|t| !skip.contains(&t.as_str())) {
        let mut found: Vec<String> = conn
            .rows(&format!("SELECT * FROM {table}"), params![])
            .into_iter()
            .map(|row| crate::stored::text_row(row).join("|"))
            .collect();
        found.sort();
        out.insert(table, found);
    }
    out
}

/// The cells of the rows of the `n`-th table with class `chart-table`'s data.
fn chart_table(html: &str, n: usize) -> BTreeMap<String, Vec<String>> {
    let table = html.split("<details class=\"chart-table\">").nth(n + 1).unwrap();
    let body = table
        .split("<tbody>")
        .nth(1)
        .unwrap()
        .split("</tbody>")
        .next()
        .unwrap();
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            let cells: Vec<String> = row
                .split('<')
                .filter_map(|piece| piece.split_once('>').map(|(_, text)| text.trim().to_owned()))
                .filter(|text| !text.is_empty())
                .collect();
            (cells[0].clone(), cells[1..].to_vec())
        })
        .collect()
}

/// The tile with this label: `(value, href)`.
fn tile(html: &str, label: &str) -> (String, String) {
    let at = html
        .find(&format!("<span class=\"tile-label\">{label}</span>"))
        .unwrap();
    let before = &html[..at];
    let href = before[before.rfind("href=\"").unwrap() + 6..]
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    let value = html[at..]
        .split("<span class=\"tile-value\">")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    (value, href)
}

/// The merchant order numbers a list page shows, top to bottom.
fn listed(html: &str) -> Vec<String> {
    html.split("class=\"strong\">")
        .skip(1)
        .map(|rest| rest.split("</a>").next().unwrap().to_owned())
        .collect()
}

mod overview {
    use super::*;

    /// Shanghai is UTC+8: 2026-11-29T16:00Z is midnight starting 30 November there.
    #[tokio::test]
    async fn the_overview_counts_each_merchant_day_across_the_zone_boundary_and_its_tiles_open_the_same_orders(
    ) {
        let app = TestApp::spawn_with(&[("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai")]).await;
        app.clock.set(utc("2026-11-30T10:00:00Z"));
        // 29 Nov 23:30 local, paid ¥50.00.
        seed_order(
            &app,
            "A-late-evening",
            5000,
            "paid",
            0,
            false,
            utc("2026-11-29T15:30:00Z"),
        );
        // 30 Nov 00:30 local, paid ¥70.00: today, although still the 29th in UTC.
        seed_order(
            &app,
            "B-after-midnight",
            7000,
            "paid",
            0,
            false,
            utc("2026-11-29T16:30:00Z"),
        );
        // 30 Nov 09:00 local, closed unpaid.
        seed_order(
            &app,
            "C-closed",
            3000,
            "closed",
            0,
            false,
            utc("2026-11-30T01:00:00Z"),
        );
        // 29 Nov 00:00 local exactly, paid ¥20.00 then refunded in full.
        seed_order(
            &app,
            "D-refunded",
            2000,
            "refunded",
            2000,
            false,
            utc("2026-11-28T16:00:00Z"),
        );
        // 31 Oct 23:59 local: a day before the 30 days.
        seed_order(
            &app,
            "E-too-old",
            9900,
            "paid",
            0,
            false,
            utc("2026-10-31T15:59:00Z"),
        );
        // 1 Nov 00:00 local: the first of the 30 days.
        seed_order(
            &app,
            "F-first-day",
            100,
            "paid",
            0,
            false,
            utc("2026-10-31T16:00:00Z"),
        );
        // A late payment (paid after it was closed), not yet looked at.
        let late = seed_order(&app, "G-late", 4400, "paid", 0, true, utc("2026-11-30T02:00:00Z"));
        // Notifications: 29 Nov 23:59 local (applied), 30 Nov 00:01 local (duplicate,
        // rejected for a bad signature, rejected for an amount mismatch).
        seed_notification(
            &app,
            utc("2026-11-29T15:59:00Z"),
            "alipay",
            "applied",
            "paid",
            None,
            "a=1",
        );
        seed_notification(
            &app,
            utc("2026-11-29T16:01:00Z"),
            "alipay",
            "duplicate",
            "already_paid",
            None,
            "a=2",
        );
        seed_notification(
            &app,
            utc("2026-11-29T16:02:00Z"),
            "alipay",
            "rejected",
            "bad_signature",
            None,
            "a=3",
        );
        seed_notification(
            &app,
            utc("2026-11-29T16:03:00Z"),
            "wechat",
            "rejected",
            "amount_mismatch",
            None,
            "{}",
        );
        // A WeChat notice whose resource did not open with the APIv3 key: it failed
        // verification, like the bad signature.
        seed_notification(
            &app,
            utc("2026-11-29T16:04:00Z"),
            "wechat",
            "rejected",
            "decrypt_failed",
            None,
            "{}",
        );
        // Webhooks: on the 29th one delivered at once; today one delivered after a 500 (2
        // attempts, 1 answered 2xx) and one failed with a connection error. Stored in
        // time order, as kassa stores them: on PostgreSQL the overview finds a day's
        // first row by id within minutes of its time (`logs::first_id_since`).
        let shop = "http://127.0.0.1:9/hook";
        seed_delivery(
            &app,
            &late,
            "delivered",
            shop,
            utc("2026-11-29T03:00:00Z"),
            &[Some(200)],
        );
        seed_delivery(
            &app,
            &late,
            "delivered",
            shop,
            utc("2026-11-30T03:00:00Z"),
            &[Some(500), Some(204)],
        );
        seed_delivery(&app, &late, "failed", shop, utc("2026-11-30T04:00:00Z"), &[None]);
        // An event kept with no endpoint configured: never meant to reach a shop, so not
        // among the events P_c counts.
        seed_delivery(&app, &late, "skipped", "", utc("2026-11-30T05:00:00Z"), &[]);

        // A refresh that keeps the settled days (ended 48 h ago) and reads the rest
        // gives what reading every day gives.
        let (now, tz) = (app.now(), chrono_tz::Asia::Shanghai);
        let full = app
            .core
            .db
            .read(move |tx| kassa::service::overview::compute(tx, now, tz))
            .await
            .unwrap();
        let settled = kassa::service::overview::settled_days(&full, now, tz);
        assert_eq!(settled.len(), 27, "all but the last three days");
        let refreshed = app
            .core
            .db
            .read(move |tx| kassa::service::overview::compute_with(tx, now, tz, &settled))
            .await
            .unwrap();
        assert_eq!(refreshed, full);

        let staff = Staff::signed_in(&app).await;
        let page = staff.get("/admin?lang=en").await;
        assert_eq!(page.status, 200, "{}", page.body);

        // Paid amount per day: created, paid, amount.
        let paid = chart_table(&page.body, 0);
        assert_eq!(paid.len(), 30);
        assert_eq!(paid["2026-11-30"], ["3", "2", "¥114.00"], "B, C, G; B and G paid");
        assert_eq!(paid["2026-11-29"], ["2", "2", "¥70.00"], "A and D");
        assert_eq!(paid["2026-11-01"], ["1", "1", "¥1.00"], "F");
        assert!(!paid.contains_key("2026-10-31"));
        assert_eq!(paid["2026-11-15"], ["0", "0", "¥0.00"]);
        // Notifications per day by verdict: applied, duplicate, ignored, rejected, error.
        let verdicts = chart_table(&page.body, 1);
        assert_eq!(verdicts["2026-11-29"], ["1", "0", "0", "0", "0"]);
        assert_eq!(verdicts["2026-11-30"], ["0", "1", "0", "3", "0"]);
        // The four rates, each with its parts.
        let rates = chart_table(&page.body, 2);
        assert_eq!(
            rates["2026-11-30"],
            ["33.3 % (1/3)", "50.0 % (2/4)", "50.0 % (1/2)", "50.0 % (1/2)"],
            "P_s 1 of 3 attempts; P_r 2 of 4 verified (neither the bad signature nor the failed decryption is); P_h the duplicate of those 2; P_c 1 of 2 events (the skipped one is not queued)"
        );
        assert_eq!(
            rates["2026-11-29"],
            ["100.0 % (1/1)", "100.0 % (1/1)", "100.0 % (1/1)", "100.0 % (1/1)"]
        );
        assert_eq!(rates["2026-11-28"], ["– (0/0)", "– (0/0)", "– (0/0)", "– (0/0)"]);
        // The charts are there, named, with axes' labels.
        for id in ["chart-paid", "chart-notifications", "chart-rates"] {
            assert!(page.body.contains(&format!("<title id=\"{id}-t\">")), "{id}");
        }
        assert_eq!(page.body.matches("<svg class=\"chart\"").count(), 3);

        // Tiles, and the orders each opens.
        let (today, href) = tile(&page.body, "Paid today");
        assert_eq!(today, "¥114.00");
        let mut shown = listed(&staff.get(&href).await.body);
        shown.sort();
        assert_eq!(shown, ["B-after-midnight", "G-late"], "{href}");
        let (month, href) = tile(&page.body, "Paid, last 30 days");
        assert_eq!(month, "¥185.00");
        let mut shown = listed(&staff.get(&href).await.body);
        shown.sort();
        assert_eq!(
            shown,
            [
                "A-late-evening",
                "B-after-midnight",
                "D-refunded",
                "F-first-day",
                "G-late"
            ]
        );
        let (conversion, _) = tile(&page.body, "Conversion, created → paid");
        assert_eq!(conversion, "83.3 %", "5 of 6 created in the 30 days");
        let (refunds, href) = tile(&page.body, "Refunds, last 30 days");
        assert_eq!(refunds, "¥20.00");
        assert_eq!(listed(&staff.get(&href).await.body), ["D-refunded"]);

        // Needs attention: the late payment, the rejections (amount mismatch first),
        // the failed delivery.
        let attention = page.body.split("id=\"attention\"").nth(1).unwrap();
        assert!(attention.contains(&format!("/admin/orders/{late}")));
        let mismatch = attention.find("reason=amount_mismatch").unwrap();
        let signature = attention.find("reason=bad_signature").unwrap();
        assert!(mismatch < signature);
        assert!(attention.contains("<strong>1</strong> Failed webhook deliveries"));
        let (problems, _) = tile(&page.body, "Open problems");
        assert_eq!(problems, "5", "1 late + 3 rejected + 1 failed delivery");

        // Acknowledging the late payment takes it off the list.
        let ack = staff
            .post(
                &format!("/admin/orders/{late}/acknowledge"),
                &[
                    ("csrf", &csrf_of(&page.body)),
                    ("reason", "customer kept the goods"),
                ],
            )
            .await;
        assert_eq!(ack.status, 303);
        let after = staff.get("/admin?lang=en").await;
        let (problems, _) = tile(&after.body, "Open problems");
        assert_eq!(problems, "4");
        let acks: i64 = db(&app)
            .query_row(
                "SELECT COUNT(*) FROM late_payment_acks WHERE order_id = ?1",
                [&late],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(acks, 1);
    }
}

mod logs {
    use super::*;

    fn ids(html: &str) -> Vec<i64> {
        html.split("<a href=\"/admin/notifications/")
            .skip(1)
            .map(|s| s.split('"').next().unwrap().parse().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn each_notification_filter_narrows_the_log_to_what_it_names_and_a_notification_shows_escaped_and_laid_out(
    ) {
        let app = TestApp::spawn_with(&[("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai")]).await;
        app.clock.set(utc("2026-11-30T10:00:00Z"));
        let order = seed_order(&app, "N-1", 100, "paid", 0, false, utc("2026-11-28T00:00:00Z"));
        let a = seed_notification(
            &app,
            utc("2026-11-28T01:00:00Z"),
            "alipay",
            "applied",
            "paid",
            Some(&order),
            "trade_status=TRADE_SUCCESS&subject=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        );
        let b = seed_notification(
            &app,
            utc("2026-11-29T15:59:00Z"),
            "alipay",
            "rejected",
            "bad_signature",
            None,
            "x=1",
        );
        let c = seed_notification(
            &app,
            utc("2026-11-29T16:00:00Z"),
            "wechat",
            "rejected",
            "amount_mismatch",
            Some(&order),
            "{\"id\":\"<b>\"}",
        );
        let d = seed_notification(
            &app,
            utc("2026-11-30T02:00:00Z"),
            "wechat",
            "duplicate",
            "already_paid",
            Some(&order),
            "{}",
        );
        let staff = Staff::signed_in(&app).await;
        for (query, expected) in [
            ("", vec![d, c, b, a]),
            ("provider=wechat", vec![d, c]),
            ("verdict=rejected", vec![c, b]),
            ("reason=amount_mismatch", vec![c]),
            ("verdict=rejected&provider=alipay", vec![b]),
            (&format!("order={order}") as &str, vec![d, c, a]),
            // Local days: the 29th ends at 16:00 UTC.
            ("from=2026-11-30", vec![d, c]),
            ("to=2026-11-29", vec![b, a]),
            ("from=2026-11-29&to=2026-11-29", vec![b]),
        ] {
            let page = staff.get(&format!("/admin/notifications?{query}")).await;
            assert_eq!(page.status, 200, "{query}: {}", page.body);
            assert_eq!(ids(&page.body), expected, "{query}");
        }
        let bad = staff
            .get("/admin/notifications?verdict=maybe&from=yesterday")
            .await;
        assert_eq!(bad.status, 422);
        assert!(bad.body.contains("maybe") && bad.body.contains("yesterday"));
        assert!(ids(&bad.body).is_empty());

        let detail = staff.get(&format!("/admin/notifications/{a}")).await;
        assert_eq!(detail.status, 200);
        assert!(
            detail.body.contains(
                "trade_status = TRADE_SUCCESS\nsubject = &#60;script&#62;alert(1)&#60;/script&#62;"
            ),
            "{}",
            detail.body
        );
        assert!(!detail.body.contains("<script>alert"));
        assert!(detail
            .body
            .contains("content-type: application/x-www-form-urlencoded"));
        assert!(detail.body.contains("203.0.113.9"));
        let json = staff.get(&format!("/admin/notifications/{c}")).await;
        assert!(
            json.body.contains("{\n  &#34;id&#34;: &#34;&#60;b&#62;&#34;\n}"),
            "{}",
            json.body
        );
        assert_eq!(staff.get("/admin/notifications/999999").await.status, 404);
    }

    #[tokio::test]
    async fn the_webhook_log_filters_deliveries_and_resending_every_failed_one_a_filter_matches_queues_exactly_those(
    ) {
        let app = TestApp::spawn().await;
        // Midday, so that every row below is of the same day.
        app.clock.set(utc("2026-11-30T12:00:00Z"));
        let now = app.now();
        let (x, y) = (
            seed_order(&app, "W-x", 100, "paid", 0, false, now - Duration::hours(3)),
            seed_order(&app, "W-y", 100, "paid", 0, false, now - Duration::hours(3)),
        );
        let (shop, other) = ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b");
        let x1 = seed_delivery(&app, &x, "failed", shop, now - Duration::hours(2), &[Some(500)]);
        let x2 = seed_delivery(&app, &x, "failed", other, now - Duration::hours(2), &[None]);
        let x3 = seed_delivery(
            &app,
            &x,
            "delivered",
            shop,
            now - Duration::hours(2),
            &[Some(200)],
        );
        let y1 = seed_delivery(&app, &y, "failed", shop, now - Duration::hours(1), &[Some(503)]);
        db(&app)
            .execute("INSERT INTO webhook_endpoints (url, failing_since, last_failure_at, disabled_at) VALUES (?1, 1, 2, 3)", [other])
            .unwrap();
        let staff = Staff::signed_in(&app).await;
        let events = |html: &str| -> Vec<String> {
            html.split("<span class=\"mono small\">msg_")
                .skip(1)
                .map(|s| format!("msg_{}", s.split('<').next().unwrap()))
                .collect()
        };
        let all = staff.get("/admin/webhooks").await;
        assert_eq!(events(&all.body), [y1.as_str(), &x3, &x2, &x1]);
        assert!(all.body.contains("HTTP 503") && all.body.contains("connection refused"));
        assert_eq!(
            events(&staff.get("/admin/webhooks?status=failed").await.body),
            [y1.as_str(), &x2, &x1]
        );
        assert_eq!(
            events(&staff.get(&format!("/admin/webhooks?order={x}")).await.body),
            [x3.as_str(), &x2, &x1]
        );
        assert_eq!(
            events(
                &staff
                    .get(&format!("/admin/webhooks?url={shop}&status=failed"))
                    .await
                    .body
            ),
            [y1.as_str(), &x1]
        );
        db(&app)
            .execute(
                "UPDATE webhook_outbox SET event_type = 'order.closed' WHERE event_id = ?1",
                [&x3],
            )
            .unwrap();
        assert_eq!(
            events(&staff.get("/admin/webhooks?event=order.closed").await.body),
            [x3.as_str()]
        );
        let day = |d: i64| (now + Duration::days(d)).format("%Y-%m-%d").to_string();
        assert_eq!(
            events(
                &staff
                    .get(&format!("/admin/webhooks?from={}&to={}", day(0), day(0)))
                    .await
                    .body
            )
            .len(),
            4
        );
        assert!(events(&staff.get(&format!("/admin/webhooks?from={}", day(1))).await.body).is_empty());
        assert!(events(&staff.get(&format!("/admin/webhooks?to={}", day(-1))).await.body).is_empty());
        let bad = staff.get("/admin/webhooks?status=lost&event=order.eaten").await;
        assert_eq!(bad.status, 422);
        assert!(bad.body.contains("lost") && bad.body.contains("order.eaten"));

        // Re-send every failed delivery of order x: x1 and x2, not the delivered x3,
        // not y's.
        let before = rows(&app, &["audit_log", "admin_sessions"]);
        let page = staff
            .get(&format!("/admin/webhooks?order={x}&status=failed"))
            .await;
        let answer = staff
            .post(
                "/admin/webhooks/resend-matching",
                &[("csrf", &csrf_of(&page.body)), ("order", &x)],
            )
            .await;
        assert_eq!(answer.status, 303, "{}", answer.body);
        assert!(
            answer.location().contains("done=matching-2"),
            "{}",
            answer.location()
        );
        let status = |event: &str| -> (String, i64) {
            db(&app)
                .query_row(
                    "SELECT status, attempts FROM webhook_outbox WHERE event_id = ?1",
                    [event],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap()
        };
        assert_eq!(status(&x1), ("pending".into(), 0));
        assert_eq!(status(&x2), ("pending".into(), 0));
        assert_eq!(status(&x3), ("delivered".into(), 1));
        assert_eq!(status(&y1), ("failed".into(), 1));
        let disabled: Option<i64> = db(&app)
            .query_row(
                "SELECT disabled_at FROM webhook_endpoints WHERE url = ?1",
                [other],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(disabled, None, "re-sending re-enables the endpoint");
        let after = rows(&app, &["audit_log", "admin_sessions"]);
        let changed: Vec<&String> = after.keys().filter(|t| before[*t] != after[*t]).collect();
        assert_eq!(changed, ["webhook_endpoints", "webhook_outbox"]);
        let audit: String = db(&app)
            .query_row(
                "SELECT detail FROM audit_log WHERE action = 'webhook.resend_matching'",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            audit,
            format!("2 queued again: failed deliveries matching order={x}")
        );
        // The page after shows the count; an address with anything but a count after
        // `matching-` shows no notice and none of its text.
        let shown = staff.get("/admin/webhooks?done=matching-2&lang=en").await;
        assert!(shown.body.contains("2 failed deliveries queued again."));
        for crafted in ["matching-Call%20us%20at%20555", "matching-", "matching--1"] {
            let page = staff
                .get(&format!("/admin/webhooks?done={crafted}&lang=en"))
                .await;
            assert_eq!(page.status, 200);
            assert!(!page.body.contains("failed deliveries queued again"), "{crafted}");
            assert!(!page.body.contains("Call us"), "{crafted}");
        }
    }
}

/// RFC 6238 with ring's HMAC-SHA-1 and a base32 decoder of this test's own.
pub fn totp_code(secret: &str, unix: i64) -> String {
    let mut key = Vec::new();
    let (mut buffer, mut bits) = (0u64, 0);
    for c in secret.bytes() {
        let v = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
            .iter()
            .position(|a| *a == c)
            .unwrap() as u64;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            key.push((buffer >> bits) as u8);
        }
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key);
    let mac = ring::hmac::sign(&key, &((unix / 30) as u64).to_be_bytes());
    let mac = mac.as_ref();
    let offset = (mac[19] & 0x0f) as usize;
    let n = u32::from_be_bytes(mac[offset..offset + 4].try_into().unwrap()) & 0x7fff_ffff;
    format!("{:06}", n % 1_000_000)
}

fn between<'h>(html: &'h str, start: &str, end: &str) -> &'h str {
    html.split(start).nth(1).unwrap().split(end).next().unwrap()
}

/// Enrols the signed-in user from their profile page; returns the secret and the
/// recovery codes.
pub async fn enrol(app: &TestApp, staff: &Staff<'_>) -> (String, Vec<String>) {
    let profile = staff.get("/admin/profile?lang=en").await;
    assert_eq!(profile.status, 200, "{}", profile.body);
    let csrf = csrf_of(&profile.body);
    let begun = staff
        .post(
            "/admin/profile/totp?lang=en",
            &[("csrf", &csrf), ("step", "begin")],
        )
        .await;
    assert_eq!(begun.status, 200, "{}", begun.body);
    let secret = between(&begun.body, "<code class=\"totp-secret\">", "</code>").to_owned();
    let svg = between(&begun.body, "<div class=\"qr totp-qr\">", "</div>");
    let decoded = crate::qr_decode::decode_svg(svg, 6);
    assert_eq!(decoded.len(), 1, "one QR code");
    assert!(
        decoded[0].starts_with("otpauth://totp/kassa%20"),
        "{}",
        decoded[0]
    );
    assert!(
        decoded[0].contains(&format!("?secret={secret}&")),
        "{}",
        decoded[0]
    );
    // A wrong code does not turn it on.
    let wrong = staff
        .post(
            "/admin/profile/totp?lang=en",
            &[
                ("csrf", &csrf),
                ("step", "confirm"),
                ("code", &totp_code(&secret, app.now().timestamp() + 300)),
            ],
        )
        .await;
    assert_eq!(wrong.status, 422);
    let done = staff
        .post(
            "/admin/profile/totp?lang=en",
            &[
                ("csrf", &csrf),
                ("step", "confirm"),
                ("code", &totp_code(&secret, app.now().timestamp())),
            ],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let codes: Vec<String> = between(&done.body, "<ul class=\"recovery-codes\">", "</ul>")
        .split("<code>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    // Shown once: the profile now only counts them.
    let again = staff.get("/admin/profile?lang=en").await;
    assert!(!again.body.contains(&codes[0]) && again.body.contains("Recovery codes left: 10"));
    (secret, codes)
}

/// Password, then code: the second step's answer.
pub async fn sign_in_with_code(staff: &Staff<'_>, user: &str, password: &str, code: &str) -> Page {
    let first = staff.try_sign_in(user, password).await;
    assert_eq!(
        (first.status, first.location()),
        (303, "/admin/login/code"),
        "{}",
        first.body
    );
    assert!(
        staff.cookie("kassa_admin").is_none(),
        "no session before the code"
    );
    let form = staff.get("/admin/login/code").await;
    assert_eq!(form.status, 200, "{}", form.body);
    staff
        .post(
            "/admin/login/code",
            &[("csrf", &csrf_of(&form.body)), ("code", code)],
        )
        .await
}

mod two_factor {
    use super::*;

    #[tokio::test]
    async fn a_code_from_the_step_before_or_after_signs_in_once_and_codes_further_off_do_not() {
        let app = TestApp::spawn().await;
        // The middle of a 30-second step.
        app.clock.set(Utc.timestamp_opt(1_796_000_015, 0).unwrap());
        let owner = Staff::signed_in(&app).await;
        let (secret, _) = enrol(&app, &owner).await;
        // Enrolling used the code of its step; five minutes on, every code tried here is
        // later than that one and refused or taken for its window alone.
        app.clock.advance(Duration::minutes(5));
        let t = app.now().timestamp();
        let sessions = || -> i64 {
            db(&app)
                .query_row("SELECT COUNT(*) FROM admin_sessions", params![], |r| r.get(0))
                .unwrap()
        };
        let before = sessions();
        for off in [-60, 60, 90] {
            let browser = Staff::new(&app);
            let refused =
                sign_in_with_code(&browser, "admin", ADMIN_PASSWORD, &totp_code(&secret, t + off)).await;
            assert_eq!(refused.status, 200, "{off}: the form again");
            assert!(refused.body.contains("wrong"), "{off}");
            assert!(browser.cookie("kassa_admin").is_none(), "{off}");
            assert_eq!(browser.get("/admin/orders").await.status, 303, "{off}");
        }
        assert_eq!(sessions(), before, "no session for a code two steps off");
        // The step before: accepted.
        let browser = Staff::new(&app);
        let ok = sign_in_with_code(&browser, "admin", ADMIN_PASSWORD, &totp_code(&secret, t - 30)).await;
        assert_eq!((ok.status, ok.location()), (303, "/admin"), "to the overview");
        assert_eq!(browser.get("/admin/orders").await.status, 200);
        // The same code again: refused (each code signs in once).
        let replay = sign_in_with_code(
            &Staff::new(&app),
            "admin",
            ADMIN_PASSWORD,
            &totp_code(&secret, t - 30),
        )
        .await;
        assert_eq!(replay.status, 200);
        // The step after: accepted.
        let next = Staff::new(&app);
        let ok = sign_in_with_code(&next, "admin", ADMIN_PASSWORD, &totp_code(&secret, t + 30)).await;
        assert_eq!(ok.status, 303);
        assert_eq!(next.get("/admin/orders").await.status, 200);
        let audit: Vec<(String, String)> = {
            let conn = db(&app);
            let stmt = conn.prepare("SELECT outcome, COALESCE(detail, '') FROM audit_log WHERE action = 'sign_in' ORDER BY id").unwrap();
            stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let refused = audit
            .iter()
            .filter(|(o, d)| o == "refused" && d == "wrong second-factor code")
            .count();
        assert_eq!(refused, 4);
        assert_eq!(audit.iter().filter(|(_, d)| d == "password and code").count(), 2);
    }

    #[tokio::test]
    async fn codes_are_rate_limited_like_passwords() {
        let app = TestApp::spawn().await;
        let owner = Staff::signed_in(&app).await;
        let (secret, _) = enrol(&app, &owner).await;
        let browser = Staff::new(&app);
        let first = browser.try_sign_in("admin", ADMIN_PASSWORD).await;
        assert_eq!(first.status, 303);
        let form = browser.get("/admin/login/code").await;
        let csrf = csrf_of(&form.body);
        for _ in 0..5 {
            let wrong = browser
                .post("/admin/login/code", &[("csrf", &csrf), ("code", "000000")])
                .await;
            assert_eq!(wrong.status, 200);
        }
        let right = totp_code(&secret, app.now().timestamp());
        let locked = browser
            .post("/admin/login/code", &[("csrf", &csrf), ("code", &right)])
            .await;
        assert_eq!(locked.status, 429, "locked even with the right code");
        assert!(locked.headers.contains_key("retry-after"));
        assert!(browser.cookie("kassa_admin").is_none());
        app.clock.advance(Duration::minutes(2));
        let later = browser
            .post(
                "/admin/login/code",
                &[
                    ("csrf", &csrf),
                    ("code", &totp_code(&secret, app.now().timestamp())),
                ],
            )
            .await;
        // The pending sign-in waited past its five minutes? No: two minutes.
        assert_eq!(later.status, 303, "{}", later.body);
    }

    fn audited_code_refusals(app: &TestApp) -> i64 {
        db(app)
            .query_row(
                "SELECT COUNT(*) FROM audit_log WHERE action = 'sign_in' AND detail = 'wrong second-factor code'",
                params![],
                |r| r.get(0),
            )
            .unwrap()
    }

    #[tokio::test]
    async fn forty_wrong_codes_sent_at_once_have_at_most_five_evaluated_and_the_rest_refused_as_locked() {
        let app = TestApp::spawn().await;
        let owner = Staff::signed_in(&app).await;
        enrol(&app, &owner).await;
        let browser = Staff::new(&app);
        assert_eq!(browser.try_sign_in("admin", ADMIN_PASSWORD).await.status, 303);
        let form = browser.get("/admin/login/code").await;
        let csrf = csrf_of(&form.body);
        let fields = [("csrf", csrf.as_str()), ("code", "000000")];
        let answers =
            futures_util::future::join_all((0..40).map(|_| browser.post("/admin/login/code", &fields))).await;
        let evaluated = answers.iter().filter(|a| a.status == 200).count() as i64;
        let locked = answers.iter().filter(|a| a.status == 429).count() as i64;
        assert_eq!(evaluated + locked, 40, "each is one or the other");
        assert!((1..=5).contains(&evaluated), "{evaluated} codes evaluated");
        assert_eq!(audited_code_refusals(&app), evaluated);
        assert!(browser.cookie("kassa_admin").is_none());
    }

    #[tokio::test]
    async fn a_code_and_a_recovery_code_sent_at_once_for_one_pending_sign_in_give_exactly_one_session() {
        let app = TestApp::spawn().await;
        app.clock.set(Utc.timestamp_opt(1_796_000_015, 0).unwrap());
        let owner = Staff::signed_in(&app).await;
        let (secret, codes) = enrol(&app, &owner).await;
        // Past the step enrolling used.
        app.clock.advance(Duration::minutes(5));
        let sessions = || -> i64 {
            db(&app)
                .query_row("SELECT COUNT(*) FROM admin_sessions", params![], |r| r.get(0))
                .unwrap()
        };
        let before = sessions();
        let browser = Staff::new(&app);
        assert_eq!(browser.try_sign_in("admin", ADMIN_PASSWORD).await.status, 303);
        let form = browser.get("/admin/login/code").await;
        let csrf = csrf_of(&form.body);
        let code = totp_code(&secret, app.now().timestamp());
        let by_code = [("csrf", csrf.as_str()), ("code", code.as_str())];
        let by_recovery = [("csrf", csrf.as_str()), ("code", codes[0].as_str())];
        let (a, b) = tokio::join!(
            browser.post("/admin/login/code", &by_code),
            browser.post("/admin/login/code", &by_recovery)
        );
        let started = [&a, &b]
            .iter()
            .filter(|p| p.status == 303 && p.location() == "/admin")
            .count();
        assert_eq!(
            started,
            1,
            "{} {:?} / {} {:?}",
            a.status,
            a.location(),
            b.status,
            b.location()
        );
        assert_eq!(sessions(), before + 1, "one session");
        let done: i64 = db(&app)
            .query_row(
                "SELECT COUNT(*) FROM audit_log WHERE action = 'sign_in' AND outcome = 'done' AND detail LIKE 'password and %'",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(done, 1);
        let pending: i64 = db(&app)
            .query_row("SELECT COUNT(*) FROM admin_pending_logins", params![], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(pending, 0);
    }

    fn pending_sign_ins(app: &TestApp) -> i64 {
        db(app)
            .query_row("SELECT COUNT(*) FROM admin_pending_logins", params![], |r| {
                r.get(0)
            })
            .unwrap()
    }

    /// Sends `code` for the browser's pending sign-in: true when it got a session.
    async fn code_signs_in(browser: &Staff<'_>, csrf: &str, code: &str) -> bool {
        let answer = browser
            .post("/admin/login/code", &[("csrf", csrf), ("code", code)])
            .await;
        answer.status == 303 && answer.location() == "/admin" && browser.cookie("kassa_admin").is_some()
    }

    #[tokio::test]
    async fn a_new_password_from_the_command_line_drops_the_users_sign_ins_waiting_for_a_code() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let app = TestApp::spawn().await;
        app.clock.set(Utc.timestamp_opt(1_796_000_015, 0).unwrap());
        let owner = Staff::signed_in(&app).await;
        let (secret, _) = enrol(&app, &owner).await;
        app.clock.advance(Duration::minutes(5));
        let browser = Staff::new(&app);
        assert_eq!(browser.try_sign_in("admin", ADMIN_PASSWORD).await.status, 303);
        let csrf = csrf_of(&browser.get("/admin/login/code").await.body);
        assert_eq!(pending_sign_ins(&app), 1);
        let mut child = Command::new(env!("CARGO_BIN_EXE_kassa"))
            .env_clear()
            .envs(app.database_env())
            .args([
                "--data-dir",
                app.data_dir.to_str().unwrap(),
                "admin",
                "passwd",
                "admin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"a brand new password\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(pending_sign_ins(&app), 0);
        let sessions_before: i64 = db(&app)
            .query_row("SELECT COUNT(*) FROM admin_sessions", params![], |r| r.get(0))
            .unwrap();
        assert!(
            !code_signs_in(&browser, &csrf, &totp_code(&secret, app.now().timestamp())).await,
            "the old password's sign-in is gone"
        );
        let sessions_after: i64 = db(&app)
            .query_row("SELECT COUNT(*) FROM admin_sessions", params![], |r| r.get(0))
            .unwrap();
        assert_eq!(sessions_after, sessions_before);
    }

    #[tokio::test]
    async fn an_owners_reset_of_a_users_second_factor_drops_their_sign_ins_waiting_for_a_code() {
        let app = TestApp::spawn().await;
        app.clock.set(Utc.timestamp_opt(1_796_000_015, 0).unwrap());
        add_user(&app, "op", OPERATOR_PASSWORD, Role::Operator);
        let operator = Staff::signed_in_as(&app, "op", OPERATOR_PASSWORD).await;
        let (secret, _) = enrol(&app, &operator).await;
        app.clock.advance(Duration::minutes(5));
        let browser = Staff::new(&app);
        assert_eq!(browser.try_sign_in("op", OPERATOR_PASSWORD).await.status, 303);
        let csrf = csrf_of(&browser.get("/admin/login/code").await.body);
        assert_eq!(pending_sign_ins(&app), 1);
        let owner = Staff::signed_in(&app).await;
        let users = owner.get("/admin/users?lang=en").await;
        let reset = owner
            .post(
                "/admin/users/reset-totp",
                &[("csrf", &csrf_of(&users.body)), ("username", "op")],
            )
            .await;
        assert_eq!(reset.status, 303, "{}", reset.body);
        assert_eq!(pending_sign_ins(&app), 0);
        assert!(!code_signs_in(&browser, &csrf, &totp_code(&secret, app.now().timestamp())).await);
    }

    #[tokio::test]
    async fn turning_the_second_factor_on_ends_the_users_other_sessions_and_keeps_this_one() {
        let app = TestApp::spawn().await;
        let elsewhere = Staff::signed_in(&app).await;
        let here = Staff::signed_in(&app).await;
        add_user(&app, "op", OPERATOR_PASSWORD, Role::Operator);
        let someone_else = Staff::signed_in_as(&app, "op", OPERATOR_PASSWORD).await;
        assert_eq!(elsewhere.get("/admin/orders").await.status, 200);
        enrol(&app, &here).await;
        assert_eq!(here.get("/admin/orders").await.status, 200, "this one stays");
        assert_eq!(
            elsewhere.get("/admin/orders").await.status,
            303,
            "the session opened by the password alone ended"
        );
        assert_eq!(
            someone_else.get("/admin/orders").await.status,
            200,
            "other users' stay"
        );
        let admins: i64 = db(&app)
            .query_row(
                "SELECT COUNT(*) FROM admin_sessions s JOIN admin_users u ON u.id = s.user_id WHERE u.username = 'admin'",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(admins, 1);
    }

    #[tokio::test]
    async fn a_recovery_code_signs_in_once_only() {
        let app = TestApp::spawn().await;
        let owner = Staff::signed_in(&app).await;
        let (_, codes) = enrol(&app, &owner).await;
        let browser = Staff::new(&app);
        let ok = sign_in_with_code(&browser, "admin", ADMIN_PASSWORD, &codes[3].to_uppercase()).await;
        assert_eq!(ok.status, 303, "{}", ok.body);
        assert_eq!(browser.get("/admin/orders").await.status, 200);
        let again = Staff::new(&app);
        let refused = sign_in_with_code(&again, "admin", ADMIN_PASSWORD, &codes[3]).await;
        assert_eq!(refused.status, 200);
        assert!(again.cookie("kassa_admin").is_none());
        let left: i64 = db(&app)
            .query_row(
                "SELECT COUNT(*) FROM admin_recovery_codes WHERE used_at IS NULL",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 9);
        let other = Staff::new(&app);
        assert_eq!(
            sign_in_with_code(&other, "admin", ADMIN_PASSWORD, &codes[4])
                .await
                .status,
            303
        );
    }

    #[tokio::test]
    async fn when_owners_require_it_a_user_without_a_second_factor_can_only_enrol() {
        let app = TestApp::spawn().await;
        add_user(&app, "olga", OPERATOR_PASSWORD, Role::Operator);
        let owner = Staff::signed_in(&app).await;
        let users = owner.get("/admin/users").await;
        let on = owner
            .post(
                "/admin/users/require-totp",
                &[("csrf", &csrf_of(&users.body)), ("required", "1")],
            )
            .await;
        assert_eq!(on.status, 303);
        let olga = Staff::signed_in_as(&app, "olga", OPERATOR_PASSWORD).await;
        for path in ["/admin", "/admin/orders", "/admin/webhooks"] {
            let page = olga.get(path).await;
            assert_eq!(
                (page.status, page.location()),
                (303, "/admin/profile?enrol=1"),
                "{path}"
            );
        }
        let profile = olga.get("/admin/profile?lang=en").await;
        assert!(profile.body.contains("Two-factor sign-in is required"));
        enrol(&app, &olga).await;
        assert_eq!(olga.get("/admin/orders").await.status, 200);
    }
}

mod roles {
    use super::*;

    /// A POST: its path, its fields, whether the role may, and the action its audit
    /// line names.
    type Attempt = (String, Vec<(&'static str, String)>, bool, &'static str);

    fn audit_lines(app: &TestApp) -> Vec<[String; 6]> {
        let conn = db(app);
        let stmt = conn
            .prepare(
                "SELECT actor, action, COALESCE(order_id, ''), COALESCE(remote_addr, ''), outcome, COALESCE(detail, '') \
                 FROM audit_log ORDER BY id",
            )
            .unwrap();
        stmt.query_map(params![], |r| {
            Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?])
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// What each role gets from each page: 200, or 403; a refused action leaves one
    /// audit line (who, from where, what), a refused page view none.
    #[tokio::test]
    async fn every_page_and_action_answers_each_role_as_its_rights_say_and_a_refusal_changes_nothing() {
        let app = TestApp::spawn().await;
        add_user(&app, "olga", OPERATOR_PASSWORD, Role::Operator);
        add_user(&app, "vik", VIEWER_PASSWORD, Role::Viewer);
        let now = app.now();
        let shown = seed_order(&app, "R-shown", 900, "paid", 0, false, now);
        let note = seed_notification(&app, now, "alipay", "applied", "paid", Some(&shown), "a=1");
        for (role, user, password) in [
            ("owner", "admin", ADMIN_PASSWORD),
            ("operator", "olga", OPERATOR_PASSWORD),
            ("viewer", "vik", VIEWER_PASSWORD),
        ] {
            let staff = Staff::signed_in_as(&app, user, password).await;
            let owner = role == "owner";
            let operates = role != "viewer";
            for (path, allowed) in [
                ("/admin".to_owned(), true),
                ("/admin/orders".to_owned(), true),
                (format!("/admin/orders/{shown}"), true),
                ("/admin/orders.csv".to_owned(), true),
                ("/admin/notifications".to_owned(), true),
                (format!("/admin/notifications/{note}"), true),
                ("/admin/webhooks".to_owned(), true),
                ("/admin/profile".to_owned(), true),
                ("/admin/users".to_owned(), owner),
                ("/admin/api-keys".to_owned(), owner),
                ("/admin/audit".to_owned(), owner),
            ] {
                let before = audit_lines(&app);
                let page = staff.get(&path).await;
                assert_eq!(page.status, if allowed { 200 } else { 403 }, "{role} GET {path}");
                if !allowed {
                    assert_eq!(audit_lines(&app), before, "{role} GET {path}: no audit line");
                }
            }
            let csrf = csrf_of(&staff.get("/admin/profile").await.body);
            // What each action needs, made fresh for this role.
            let pending = app.create_order(&format!("R-{role}-close"), 500).await["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let late = seed_order(&app, &format!("R-{role}-late"), 700, "paid", 0, true, now);
            let failed = seed_delivery(
                &app,
                &late,
                "failed",
                &format!("http://127.0.0.1:9/{role}"),
                now,
                &[Some(500)],
            );
            // A second failed one, for the re-send of everything matching.
            seed_delivery(
                &app,
                &late,
                "failed",
                &format!("http://127.0.0.1:9/{role}"),
                now,
                &[Some(500)],
            );
            let disabled = format!("http://127.0.0.1:9/disabled-{role}");
            db(&app)
                .execute("INSERT INTO webhook_endpoints (url, failing_since, last_failure_at, disabled_at) VALUES (?1, 1, 2, 3)", [&disabled])
                .unwrap();
            // A paid order with a failed delivery, to refund and re-send from its page,
            // and a pending one to ask the provider about.
            let sold = seed_order(&app, &format!("R-{role}-sold"), 900, "paid", 0, false, now);
            let sold_event = seed_delivery(
                &app,
                &sold,
                "failed",
                &format!("http://127.0.0.1:9/sold-{role}"),
                now,
                &[Some(500)],
            );
            let queried = app.create_order(&format!("R-{role}-query"), 500).await["id"]
                .as_str()
                .unwrap()
                .to_owned();
            add_user(&app, &format!("temp-{role}"), "temporary password", Role::Viewer);
            let key_name = format!("key-{role}");
            TestApp::create_api_key(&app.core, &key_name).await;
            let actions: Vec<Attempt> = vec![
                (
                    format!("/admin/orders/{pending}/close"),
                    vec![("reason", "test".into())],
                    operates,
                    "order.close",
                ),
                (
                    format!("/admin/orders/{late}/acknowledge"),
                    vec![("reason", "kept".into())],
                    operates,
                    "order.acknowledge_late",
                ),
                (
                    format!("/admin/orders/{sold}/refund"),
                    vec![("reason", "spilled".into()), ("amount", "1.00".into())],
                    operates,
                    "order.refund",
                ),
                (
                    format!("/admin/orders/{queried}/query"),
                    vec![("reason", "did they pay".into())],
                    operates,
                    "order.query",
                ),
                (
                    format!("/admin/orders/{sold}/resend"),
                    vec![
                        ("reason", "shop was down".into()),
                        ("webhook_id", sold_event.clone()),
                    ],
                    operates,
                    "webhook.resend",
                ),
                (
                    "/admin/webhooks/resend".into(),
                    vec![("event_id", failed.clone())],
                    operates,
                    "webhook.resend",
                ),
                (
                    "/admin/webhooks/resend-matching".into(),
                    vec![("order", late.clone())],
                    operates,
                    "webhook.resend_matching",
                ),
                (
                    "/admin/webhooks/reenable".into(),
                    vec![("url", disabled.clone())],
                    owner,
                    "webhook.reenable",
                ),
                (
                    "/admin/webhooks/ping".into(),
                    vec![("url", disabled.clone())],
                    owner,
                    "webhook.ping",
                ),
                (
                    "/admin/webhooks/secret".into(),
                    vec![("password", password.into())],
                    owner,
                    "webhook.secret_reveal",
                ),
                (
                    "/admin/webhooks/rotate".into(),
                    vec![],
                    owner,
                    "webhook.rotate_secret",
                ),
                (
                    "/admin/users/add".into(),
                    vec![
                        ("username", format!("new-{role}")),
                        ("password", "a new password".into()),
                        ("role", "viewer".into()),
                    ],
                    owner,
                    "user.create",
                ),
                (
                    "/admin/users/role".into(),
                    vec![("username", format!("temp-{role}")), ("role", "operator".into())],
                    owner,
                    "user.role",
                ),
                (
                    "/admin/users/reset-totp".into(),
                    vec![("username", format!("temp-{role}"))],
                    owner,
                    "user.totp_reset",
                ),
                (
                    "/admin/users/remove".into(),
                    vec![("username", format!("temp-{role}"))],
                    owner,
                    "user.remove",
                ),
                (
                    "/admin/users/require-totp".into(),
                    vec![("required", "0".into())],
                    owner,
                    "user.require_totp",
                ),
                (
                    "/admin/api-keys/create".into(),
                    vec![("name", format!("made-by-{role}"))],
                    owner,
                    "apikey.create",
                ),
                (
                    "/admin/api-keys/revoke".into(),
                    vec![("name", key_name.clone())],
                    owner,
                    "apikey.revoke",
                ),
            ];
            for (path, fields, allowed, name) in actions {
                let lines = audit_lines(&app);
                let before = rows(&app, &["admin_sessions"]);
                let mut form: Vec<(&str, &str)> = vec![("csrf", &csrf)];
                form.extend(fields.iter().map(|(k, v)| (*k, v.as_str())));
                let answer = staff.post(&path, &form).await;
                let after = rows(&app, &["admin_sessions"]);
                if allowed {
                    assert!(
                        matches!(answer.status, 200 | 303),
                        "{role} POST {path}: {} {}",
                        answer.status,
                        answer.body
                    );
                    assert_ne!(before, after, "{role} POST {path} did something");
                } else {
                    assert_eq!(answer.status, 403, "{role} POST {path}");
                    // Only the audit log grew, by the refusal's line; nothing else.
                    let mut b = before.clone();
                    let mut a = after.clone();
                    b.remove("audit_log");
                    a.remove("audit_log");
                    assert_eq!(b, a, "{role} POST {path} changed nothing");
                    let now_lines = audit_lines(&app);
                    assert_eq!(
                        now_lines[..lines.len()],
                        lines[..],
                        "{role} POST {path}: the log only grows"
                    );
                    // Actions on an order's page name the order and need the right to
                    // act on orders, the re-send there included.
                    let on_order = path.starts_with("/admin/orders/");
                    let order = if on_order {
                        path.split('/').nth(3).unwrap().to_owned()
                    } else {
                        String::new()
                    };
                    let needed = if on_order {
                        "act on orders"
                    } else if name.starts_with("webhook.resend") {
                        "re-send webhooks"
                    } else if name.starts_with("webhook.") {
                        "manage webhooks"
                    } else if name.starts_with("apikey.") {
                        "manage API keys"
                    } else {
                        "manage users"
                    };
                    assert_eq!(
                        now_lines[lines.len()..],
                        [[
                            user.to_owned(),
                            name.to_owned(),
                            order,
                            "127.0.0.1".to_owned(),
                            "refused".to_owned(),
                            format!("role {role} may not {needed}"),
                        ]],
                        "{role} POST {path}: one audit line for the refusal"
                    );
                }
            }
        }
    }
}

mod security {
    use super::*;

    /// The last audit row of `action`: its reason and detail.
    fn last_audit(app: &TestApp, action: &str) -> (String, Option<String>, Option<String>) {
        db(app)
            .query_row(
                "SELECT outcome, reason, detail FROM audit_log WHERE action = ?1 ORDER BY id DESC LIMIT 1",
                [action],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap()
    }

    #[tokio::test]
    async fn a_100_kb_reason_or_address_is_refused_clearly_and_its_audit_row_keeps_only_the_first_characters()
    {
        let app = TestApp::spawn().await;
        let late = seed_order(&app, "L-1", 4400, "paid", 0, true, app.now() - Duration::hours(1));
        let staff = Staff::signed_in(&app).await;
        let csrf = csrf_of(&staff.get("/admin?lang=en").await.body);
        // 100 KB, starting with two-byte characters: the cut must fall between them.
        let huge = format!("{}{}", "é".repeat(300), "x".repeat(100 * 1024));
        let before = rows(&app, &["audit_log", "admin_sessions"]);
        let ack = staff
            .post(
                &format!("/admin/orders/{late}/acknowledge"),
                &[("csrf", &csrf), ("reason", &huge)],
            )
            .await;
        assert_eq!(ack.location(), "/admin?done=refused#attention");
        let shown = staff
            .get(&format!("{}&lang=en", ack.location().replace("#attention", "")))
            .await;
        assert!(
            shown.body.contains("Not acknowledged: give a reason"),
            "{}",
            shown.body
        );
        let (outcome, reason, _) = last_audit(&app, "order.acknowledge_late");
        assert_eq!(outcome, "refused");
        assert_eq!(reason.unwrap(), "é".repeat(256));

        let url = format!("http://127.0.0.1:9/{}", "x".repeat(100 * 1024));
        let ping = staff
            .post("/admin/webhooks/ping?lang=en", &[("csrf", &csrf), ("url", &url)])
            .await;
        assert_eq!(ping.status, 422);
        assert!(ping.body.contains("Not an endpoint kassa delivers to."));
        let (outcome, _, detail) = last_audit(&app, "webhook.ping");
        assert_eq!(outcome, "refused");
        let detail = detail.unwrap();
        assert_eq!(detail.chars().count(), 500);
        assert!(format!("unknown endpoint {url}").starts_with(&detail));
        assert_eq!(
            rows(&app, &["audit_log", "admin_sessions"]),
            before,
            "nothing else changed"
        );
    }

    #[tokio::test]
    async fn the_webhook_secret_is_shown_masked_and_revealed_only_after_the_password_is_typed_again() {
        let app = TestApp::spawn().await;
        let secret: String = db(&app)
            .query_row(
                "SELECT secret FROM webhook_secrets ORDER BY id DESC LIMIT 1",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        let staff = Staff::signed_in(&app).await;
        let page = staff.get("/admin/webhooks").await;
        assert!(!page.body.contains(&secret), "masked");
        assert!(
            !page.body.contains(&secret[..10]),
            "no character of the key after the prefix"
        );
        assert!(page
            .body
            .contains(&format!("whsec_••••••••{}", &secret[secret.len() - 4..])));
        let csrf = csrf_of(&page.body);
        let wrong = staff
            .post(
                "/admin/webhooks/secret",
                &[("csrf", &csrf), ("password", "not my password")],
            )
            .await;
        assert_eq!(wrong.status, 403);
        assert!(!wrong.body.contains(&secret));
        let no_token = staff
            .post("/admin/webhooks/secret", &[("password", ADMIN_PASSWORD)])
            .await;
        assert_eq!(no_token.status, 403);
        assert!(!no_token.body.contains(&secret));
        let right = staff
            .post(
                "/admin/webhooks/secret",
                &[("csrf", &csrf), ("password", ADMIN_PASSWORD)],
            )
            .await;
        assert_eq!(right.status, 200);
        assert!(right.body.contains(&secret));
        let outcomes: Vec<String> = {
            let conn = db(&app);
            let stmt = conn
                .prepare("SELECT outcome FROM audit_log WHERE action = 'webhook.secret_reveal' ORDER BY id")
                .unwrap();
            stmt.query_map(params![], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(outcomes, ["refused", "done"]);

        // Rotating keeps the old one signing for 24 hours beside the new one.
        let rotated = staff.post("/admin/webhooks/rotate", &[("csrf", &csrf)]).await;
        assert_eq!(rotated.status, 303);
        let signing = kassa::webhooks::signing_secrets(&app.core.db, &app.core.settings, app.now())
            .await
            .unwrap();
        assert_eq!(signing.len(), 2);
        assert_eq!(signing[1], secret);
        let later = kassa::webhooks::signing_secrets(
            &app.core.db,
            &app.core.settings,
            app.now() + Duration::hours(25),
        )
        .await
        .unwrap();
        assert_eq!(later.len(), 1);
        assert_ne!(later[0], secret);
    }

    #[tokio::test]
    async fn after_five_wrong_passwords_the_reveal_refuses_even_the_right_one_for_a_while_and_every_attempt_is_audited(
    ) {
        let app = TestApp::spawn().await;
        let secret: String = db(&app)
            .query_row(
                "SELECT secret FROM webhook_secrets ORDER BY id DESC LIMIT 1",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        // A session in the wrong hands, guessing.
        let staff = Staff::signed_in(&app).await;
        let csrf = csrf_of(&staff.get("/admin/webhooks").await.body);
        for guess in 0..5 {
            let wrong = staff
                .post(
                    "/admin/webhooks/secret?lang=en",
                    &[("csrf", &csrf), ("password", &format!("guess number {guess}"))],
                )
                .await;
            assert_eq!(wrong.status, 403, "guess {guess}");
            assert!(wrong.body.contains("Wrong password"), "{}", wrong.body);
            assert!(!wrong.body.contains(&secret));
        }
        let signing_before = rows(&app, &["admin_sessions", "audit_log", "login_attempts"]);
        let locked = staff
            .post(
                "/admin/webhooks/secret?lang=en",
                &[("csrf", &csrf), ("password", ADMIN_PASSWORD)],
            )
            .await;
        assert_eq!(locked.status, 429, "{}", locked.body);
        assert!(locked.headers.contains_key("retry-after"));
        assert!(
            locked.body.contains("Too many wrong passwords"),
            "{}",
            locked.body
        );
        assert!(
            !locked.body.contains(&secret),
            "the right password shows nothing now"
        );
        assert_eq!(
            rows(&app, &["admin_sessions", "audit_log", "login_attempts"]),
            signing_before,
            "nothing else changed"
        );
        // The guesses do not lock the user out of signing in.
        let other = Staff::signed_in(&app).await;
        let other_csrf = csrf_of(&other.get("/admin/webhooks").await.body);
        let also_locked = other
            .post(
                "/admin/webhooks/secret",
                &[("csrf", &other_csrf), ("password", ADMIN_PASSWORD)],
            )
            .await;
        assert_eq!(
            also_locked.status, 429,
            "a new session of the same user is locked too"
        );
        assert!(!also_locked.body.contains(&secret));
        let audit: Vec<(String, String, String, String)> = {
            let conn = db(&app);
            let stmt = conn
                .prepare(
                    "SELECT actor, COALESCE(remote_addr, ''), outcome, COALESCE(detail, '') FROM audit_log \
                     WHERE action = 'webhook.secret_reveal' ORDER BY id",
                )
                .unwrap();
            stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let line = |detail: &str| {
            (
                "admin".to_owned(),
                "127.0.0.1".to_owned(),
                "refused".to_owned(),
                detail.to_owned(),
            )
        };
        let mut expected = vec![line("wrong password"); 5];
        expected.extend([line("too many wrong passwords"), line("too many wrong passwords")]);
        assert_eq!(audit, expected);
        // Once the lockout has run out, the right password shows it.
        app.clock.advance(Duration::minutes(2));
        let later = staff
            .post(
                "/admin/webhooks/secret",
                &[("csrf", &csrf), ("password", ADMIN_PASSWORD)],
            )
            .await;
        assert_eq!(later.status, 200, "{}", later.body);
        assert!(later.body.contains(&secret));
    }

    #[tokio::test]
    async fn an_api_key_made_on_the_page_is_shown_once_works_shows_its_last_use_and_stops_when_revoked() {
        let app = TestApp::spawn().await;
        let staff = Staff::signed_in(&app).await;
        let page = staff.get("/admin/api-keys?lang=en").await;
        let created = staff
            .post(
                "/admin/api-keys/create?lang=en",
                &[("csrf", &csrf_of(&page.body)), ("name", "shop-2")],
            )
            .await;
        assert_eq!(created.status, 200);
        let key = between(&created.body, "<code class=\"new-key\">", "</code>").to_owned();
        assert!(key.starts_with("kassa_sk_"));
        let listing = staff.get("/admin/api-keys?lang=en").await;
        assert!(!listing.body.contains(&key), "shown once");
        assert!(listing.body.contains("shop-2") && listing.body.contains("never"));
        let orders = |key: String| {
            let client = crate::helpers::http_client();
            let url = app.url("/api/v1/orders");
            async move {
                client
                    .get(url)
                    .bearer_auth(key)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(orders(key.clone()).await, 200);
        // The use is written beside the request, not in it: wait for it.
        let mut row = String::new();
        for _ in 0..100 {
            let listing = staff.get("/admin/api-keys?lang=en").await;
            row = between(&listing.body, "<div class=\"v strong\">shop-2</div>", "</tr>").to_owned();
            if !row.contains("never") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            row.contains(&app.now().format("%Y-%m-%d %H:%M:%S").to_string()),
            "last use shown: {row}"
        );
        let taken = staff
            .post(
                "/admin/api-keys/create?lang=en",
                &[("csrf", &csrf_of(&page.body)), ("name", "shop-2")],
            )
            .await;
        assert_eq!(taken.status, 422);
        let revoked = staff
            .post(
                "/admin/api-keys/revoke",
                &[("csrf", &csrf_of(&page.body)), ("name", "shop-2")],
            )
            .await;
        assert_eq!(revoked.status, 303);
        assert_eq!(orders(key).await, 401);
    }

    #[tokio::test]
    async fn the_audit_log_lists_sign_ins_and_actions_with_who_where_and_why_and_filters_them() {
        let app = TestApp::spawn().await;
        let wrong = Staff::new(&app);
        assert_eq!(wrong.try_sign_in("admin", "wrong password!").await.status, 200);
        let staff = Staff::signed_in(&app).await;
        let late = seed_order(&app, "AU-1", 100, "paid", 0, true, app.now());
        let csrf = csrf_of(&staff.get("/admin/profile").await.body);
        staff
            .post(
                &format!("/admin/orders/{late}/acknowledge"),
                &[("csrf", &csrf), ("reason", "goods kept")],
            )
            .await;
        let all = staff.get("/admin/audit?lang=en").await;
        assert_eq!(all.status, 200);
        // The first admin's creation, the refused and the right sign-in, the action.
        assert_eq!(all.body.matches("class=\"audit-row\"").count(), 4, "{}", all.body);
        assert!(
            all.body.contains("127.0.0.1")
                && all.body.contains("goods kept")
                && all.body.contains("order.acknowledge_late")
        );
        let refused = staff.get("/admin/audit?action=sign_in&outcome=refused").await;
        assert_eq!(refused.body.matches("class=\"audit-row\"").count(), 1);
        assert!(refused.body.contains("wrong user name or password"));
        let mine = staff
            .get("/admin/audit?actor=admin&action=order.acknowledge_late")
            .await;
        assert_eq!(mine.body.matches("class=\"audit-row\"").count(), 1);
        let tomorrow = (app.now() + Duration::days(2)).format("%Y-%m-%d").to_string();
        let none = staff.get(&format!("/admin/audit?from={tomorrow}")).await;
        assert_eq!(none.body.matches("class=\"audit-row\"").count(), 0);
    }

    #[tokio::test]
    async fn owners_add_change_and_remove_users_and_the_last_owner_stays() {
        let app = TestApp::spawn().await;
        let staff = Staff::signed_in(&app).await;
        let csrf = csrf_of(&staff.get("/admin/users").await.body);
        let added = staff
            .post(
                "/admin/users/add",
                &[
                    ("csrf", &csrf),
                    ("username", "li.na"),
                    ("password", "li na password"),
                    ("role", "operator"),
                ],
            )
            .await;
        assert_eq!(added.status, 303);
        let li = Staff::signed_in_as(&app, "li.na", "li na password").await;
        assert!(li.get("/admin/orders").await.body.contains("operator"));
        let before = rows(&app, &["admin_sessions", "audit_log"]);
        let last = staff
            .post(
                "/admin/users/role",
                &[("csrf", &csrf), ("username", "admin"), ("role", "viewer")],
            )
            .await;
        assert_eq!(last.status, 422);
        assert!(last.body.contains("last owner"));
        let gone = staff
            .post("/admin/users/remove", &[("csrf", &csrf), ("username", "admin")])
            .await;
        assert_eq!(gone.status, 422);
        assert_eq!(
            before,
            rows(&app, &["admin_sessions", "audit_log"]),
            "refusals change nothing"
        );
        let removed = staff
            .post("/admin/users/remove", &[("csrf", &csrf), ("username", "li.na")])
            .await;
        assert_eq!(removed.status, 303);
        assert_eq!(li.get("/admin/orders").await.status, 303, "their session ended");
    }
}

mod command_line {
    use std::io::Write;
    use std::process::{Command, Stdio};

    use super::*;

    #[tokio::test]
    async fn kassa_admin_add_makes_a_user_with_a_role_and_remove_ends_them_but_never_the_last_owner() {
        let app = TestApp::spawn().await;
        let kassa = |args: &[&str], input: &str| {
            let mut child = Command::new(env!("CARGO_BIN_EXE_kassa"))
                .env_clear()
                .envs(app.database_env())
                .args(["--data-dir", app.data_dir.to_str().unwrap(), "admin"])
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        };
        let bad_role = kassa(&["add", "li", "--role", "root"], "li password 12\n");
        assert!(!bad_role.status.success());
        let added = kassa(&["add", "li", "--role", "operator"], "li password 12\n");
        assert!(added.status.success(), "{added:?}");
        assert!(String::from_utf8_lossy(&added.stdout).contains("added \"li\" as operator"));
        let again = kassa(&["add", "li", "--role", "viewer"], "li password 12\n");
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
        let li = Staff::signed_in_as(&app, "li", "li password 12").await;
        assert!(li
            .get("/admin/orders")
            .await
            .body
            .contains("<span class=\"role\">operator</span>"));
        let last = kassa(&["remove", "admin"], "");
        assert!(!last.status.success());
        assert!(String::from_utf8_lossy(&last.stderr).contains("last owner"));
        let removed = kassa(&["remove", "li"], "");
        assert!(removed.status.success(), "{removed:?}");
        assert_eq!(li.get("/admin/orders").await.status, 303, "their session ended");
        assert_eq!(
            Staff::new(&app).try_sign_in("li", "li password 12").await.status,
            200,
            "refused"
        );
        let audit: Vec<(String, String)> = {
            let conn = db(&app);
            let stmt = conn
                .prepare("SELECT action, outcome FROM audit_log WHERE actor = 'cli' ORDER BY id")
                .unwrap();
            stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(
            audit,
            [
                ("user.create".into(), "done".into()),
                ("user.remove".into(), "done".into())
            ]
        );
    }
}

/// A month of a tea shop's business, for the overview's screenshots: orders every day
/// (more at weekends), most paid; notifications for each payment with some duplicates
/// and a few rejections; a webhook per payment, a few retried.
pub fn seed_month(app: &TestApp) {
    let now = app.now();
    let mut seed = 0x2545_F491_u64;
    let mut next = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let shop = "https://shop.example/kassa-webhook";
    for day in (0..30).rev() {
        let start = now - Duration::days(day);
        let orders = 6 + next(10) + if day % 7 < 2 { 6 } else { 0 };
        for i in 0..orders {
            let at = start - Duration::minutes((i * 37 + next(30)) as i64 % 600);
            let amount = 800 + next(12_000) as i64;
            let roll = next(100);
            let status = match roll {
                0..=74 => "paid",
                75..=86 => "closed",
                87..=90 => "refunded",
                _ if day == 0 => "pending",
                _ => "closed",
            };
            let refunded = if status == "refunded" { amount } else { 0 };
            let id = seed_order(
                app,
                &format!("M-{day:02}-{i:02}"),
                amount,
                status,
                refunded,
                false,
                at,
            );
            if matches!(status, "paid" | "refunded") {
                let verdict = if next(12) == 0 { "duplicate" } else { "applied" };
                let code = if verdict == "applied" {
                    "paid"
                } else {
                    "already_paid"
                };
                seed_notification(
                    app,
                    at + Duration::seconds(40),
                    "alipay",
                    verdict,
                    code,
                    Some(&id),
                    "trade_status=TRADE_SUCCESS",
                );
                let attempts: &[Option<i64>] = match next(20) {
                    0 => &[Some(500), Some(200)],
                    1 => &[None, Some(204)],
                    _ => &[Some(200)],
                };
                seed_delivery(app, &id, "delivered", shop, at + Duration::seconds(41), attempts);
            }
        }
        if next(4) == 0 {
            seed_notification(
                app,
                start - Duration::hours(2),
                "alipay",
                "rejected",
                "bad_signature",
                None,
                "sign=forged",
            );
        }
    }
    let mismatch = seed_order(
        app,
        "M-mismatch",
        5000,
        "pending",
        0,
        false,
        now - Duration::hours(3),
    );
    seed_notification(
        app,
        now - Duration::hours(2),
        "wechat",
        "rejected",
        "amount_mismatch",
        Some(&mismatch),
        "{}",
    );
    let late = seed_order(app, "M-late", 3900, "paid", 0, true, now - Duration::hours(5));
    seed_delivery(
        app,
        &late,
        "failed",
        shop,
        now - Duration::hours(4),
        &[Some(502), Some(502), Some(502)],
    );
}

mod ping {
    use super::*;
    use crate::receiver::Receiver;

    #[tokio::test]
    async fn a_ping_from_the_webhooks_page_reaches_the_shop_signed_and_an_unknown_address_gets_none() {
        let shop = Receiver::start().await;
        let app = TestApp::spawn_with(&[("KASSA_WEBHOOKS_URL", &shop.url)]).await;
        let secret: String = db(&app)
            .query_row(
                "SELECT secret FROM webhook_secrets ORDER BY id DESC LIMIT 1",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        let staff = Staff::signed_in(&app).await;
        let csrf = csrf_of(&staff.get("/admin/webhooks").await.body);
        let elsewhere = staff
            .post(
                "/admin/webhooks/ping",
                &[("csrf", &csrf), ("url", "http://127.0.0.1:9/not-ours")],
            )
            .await;
        assert_eq!(elsewhere.status, 422);
        assert!(shop.received().is_empty());
        let answer = staff
            .post(
                "/admin/webhooks/ping?lang=en",
                &[("csrf", &csrf), ("url", &shop.url)],
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.body.contains("HTTP 200"), "{}", answer.body);
        let got = shop.received();
        assert_eq!(got.len(), 1);
        assert_eq!(
            crate::oracle::verify_webhook(&secret, &got[0].headers, &got[0].body, app.now()),
            Ok("ping".to_owned()),
            "standardwebhooks accepts it"
        );
        let audit: Vec<(String, String)> = {
            let conn = db(&app);
            let stmt = conn
                .prepare("SELECT outcome, detail FROM audit_log WHERE action = 'webhook.ping' ORDER BY id")
                .unwrap();
            stmt.query_map(params![], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(audit[0].0, "refused");
        assert_eq!(audit[1].0, "done");
        assert!(audit[1].1.starts_with(&format!("{}: HTTP 200", shop.url)));
    }
}
