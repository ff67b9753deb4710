//! Two kassa instances on one PostgreSQL database, as a load balancer would put them: a
//! change one of them applies reaches the other's open checkout page, and the API's
//! rate limits count both instances' requests together; Alipay's notifications for the
//! same orders sent to both at once pay each order once and send one webhook each; and
//! an instance that dies mid-flood leaves its claimed deliveries and job lease to the
//! other once their leases run out. PostgreSQL only (SQLite is one process by design):
//! without `KASSA_TEST_PG_URL` each test prints SKIPPED and passes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kassa::db::history::Cause;
use kassa::db::transitions::{Change, Outcome};
use kassa::domain::{OrderId, TransitionSource};
use kassa::webhooks::dispatcher::{Dispatcher, LEASE};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::gateway_standin::GatewayStandin;
use crate::helpers::{error_code, trade_success, DbRow, TestApp, ALIPAY_APP_ID, ALIPAY_SELLER_ID};
use crate::oracle::signed_notifications;
use crate::pg_schema::{PgSchema, SKIPPED};
use crate::receiver::{Answer, Receiver};

const ATTACKER: &str = "203.0.113.66";
const SHOP: &str = "198.51.100.7";

/// Two instances on one fresh schema, or None (SKIPPED printed) without PostgreSQL.
async fn two_instances(env: &[(&str, &str)]) -> Option<(TestApp, TestApp)> {
    let Some(schema) = PgSchema::new() else {
        println!("{SKIPPED}");
        return None;
    };
    let schema = Arc::new(schema);
    let url = schema.url();
    let mut all = vec![("KASSA_SANDBOX_ENABLED", "false")];
    all.extend_from_slice(env);
    let a = TestApp::spawn_with_settings_on(schema.clone(), &url, &all).await;
    let b = TestApp::spawn_with_settings_on(schema, &url, &all).await;
    Some((a, b))
}

/// The stream's next chunk (`checkout::next_chunk`), failing the test when the stream
/// ends instead.
async fn next_chunk(stream: &mut reqwest::Response, within: Duration, waiting_for: &str) -> String {
    crate::checkout::next_chunk(stream, within, waiting_for)
        .await
        .unwrap_or_else(|| panic!("the event stream ended before {waiting_for}"))
}

#[tokio::test]
async fn a_checkout_page_open_on_one_instance_turns_paid_when_the_other_applies_the_payment() {
    let Some((a, b)) = two_instances(&[]).await else {
        return;
    };
    let id = a.insert_order("scale-1", 100).await;
    let mut stream = a
        .client
        .get(a.url(&format!("/pay/{id}/events")))
        .send()
        .await
        .unwrap();
    let first = next_chunk(&mut stream, Duration::from_secs(5), "first status").await;
    assert!(first.contains("\"status\":\"pending\""), "{first}");
    // The stream reads the order again right after its first event and then waits for
    // a signal: paying only once it waits, the paid event can come from nothing else
    // than the signal (or the heartbeat, three times later than the wait below).
    tokio::time::sleep(Duration::from_secs(1)).await;

    let order = OrderId::parse(&id).unwrap();
    let paid = Change::Pay {
        provider_trade_no: Some("2026120122001400000001".into()),
        paid_at: b.now(),
    };
    let cause = Cause::system(TransitionSource::Notification);
    let outcome = kassa::service::changes::apply(&b.core, &order, paid, cause, b.now())
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");

    // A third of the stream's 15 s heartbeat, after which A would re-read the order
    // anyway: arriving within it shows B's change woke A's stream.
    let next = next_chunk(&mut stream, Duration::from_secs(5), "paid status").await;
    assert!(
        next.starts_with("event: status\n") && next.contains("\"status\":\"paid\""),
        "{next}"
    );
}

/// `GET /api/v1/orders` on `app` from `from` with `key`.
async fn list_from(app: &TestApp, from: &str, key: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/v1/orders"))
        .header("x-forwarded-for", from)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn status_code(response: reqwest::Response) -> (u16, String) {
    let (status, code, _) = error_code(response).await;
    (status, code)
}

#[tokio::test]
async fn the_api_limits_count_the_requests_of_both_instances_together() {
    let env = [
        ("KASSA_SERVER_TRUSTED_PROXIES", "127.0.0.1"),
        ("KASSA_SERVER_API_RATE_LIMIT", "3/min"),
    ];
    let Some((a, b)) = two_instances(&env).await else {
        return;
    };
    let unauthorized = (401, "unauthorized".to_owned());
    let limited = (429, "rate_limited".to_owned());

    // 20 wrong keys a minute per address, half sent to each instance.
    for i in 0..20 {
        let app = if i % 2 == 0 { &a } else { &b };
        let response = list_from(app, ATTACKER, &format!("kassa_wrong{i}")).await;
        assert_eq!(status_code(response).await, unauthorized, "wrong key {i}");
    }
    for app in [&a, &b] {
        let response = list_from(app, ATTACKER, "kassa_wrong_more").await;
        assert_eq!(
            status_code(response).await,
            limited,
            "the 21st on {}",
            app.address
        );
    }

    // Three calls a minute per key, wherever they land.
    for app in [&a, &b, &a] {
        assert_eq!(list_from(app, SHOP, &a.api_key).await.status(), 200);
    }
    let response = list_from(&b, SHOP, &a.api_key).await;
    let retry_after = response.headers().get("retry-after").cloned();
    assert_eq!(status_code(response).await, limited, "the 4th call");
    assert!(retry_after.is_some(), "a 429 says when to come back");
    // B's own key has its own window.
    assert_eq!(list_from(&b, SHOP, &b.api_key).await.status(), 200);
}

/// Webhook loops per instance, as `kassa serve` runs them (`startup::WEBHOOK_LOOPS`).
const LOOPS: usize = 4;

/// Two instances configured for the test vectors' Alipay account (notifications signed
/// with the platform key verify), sending webhooks to `receiver`, on one clock instant:
/// a row one of them queues is due for the other's dispatchers too.
async fn two_alipay_instances(gateway: &GatewayStandin, receiver: &Receiver) -> Option<(TestApp, TestApp)> {
    let keys = format!("{}/tests/vectors/keys", env!("CARGO_MANIFEST_DIR"));
    let app_key = format!("{keys}/alipay_app_private_pkcs1.pem");
    let ali_key = format!("{keys}/alipay_platform_public.pem");
    let env = [
        ("KASSA_ALIPAY_APP_ID", ALIPAY_APP_ID),
        ("KASSA_ALIPAY_APP_PRIVATE_KEY_FILE", app_key.as_str()),
        ("KASSA_ALIPAY_ALIPAY_PUBLIC_KEY_FILE", ali_key.as_str()),
        ("KASSA_ALIPAY_GATEWAY", gateway.url.as_str()),
        ("KASSA_ALIPAY_SELLER_ID", ALIPAY_SELLER_ID),
        ("KASSA_WEBHOOKS_URL", receiver.url.as_str()),
        ("KASSA_DATABASE_POOL_SIZE", "8"),
    ];
    let (a, b) = two_instances(&env).await?;
    let now = a.now().max(b.now());
    a.clock.set(now);
    b.clock.set(now);
    Some((a, b))
}

/// `count` pending orders stored through `app`, and Alipay's signed TRADE_SUCCESS
/// notification for each (its own trade number), in order.
async fn orders_with_notifications(app: &TestApp, prefix: &str, count: usize) -> (Vec<String>, Vec<String>) {
    let ids = futures_util::future::join_all((0..count).map(|i| app.insert_order_named(prefix, i))).await;
    let params: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut p = trade_success(id, "12.34");
            p["trade_no"] = Value::String(format!("2026120122001446880{i:09}"));
            p
        })
        .collect();
    (ids, signed_notifications(&params))
}

impl TestApp {
    async fn insert_order_named(&self, prefix: &str, i: usize) -> String {
        self.insert_order(&format!("{prefix}-{i}"), 1234).await
    }
}

/// `POST /notify/alipay` to `address`: the HTTP status and reply, or the connection's
/// error (an instance that is gone).
async fn notify(client: reqwest::Client, address: String, body: String) -> Result<(u16, String), String> {
    let response = client
        .post(format!("{address}/notify/alipay"))
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.map_err(|e| e.to_string())?))
}

/// Sends each of `bodies` to `first(i)` and a copy to the other instance, both copies
/// in flight together and up to `in_flight` requests at once: every reply, per body.
async fn flood(
    apps: [&TestApp; 2],
    bodies: &[String],
    in_flight: usize,
) -> Vec<[Result<(u16, String), String>; 2]> {
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let app = apps[which];
            let (client, address, body) = (app.client.clone(), app.address.clone(), body.clone());
            let permits = permits.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.unwrap();
                notify(client, address, body).await
            }));
        }
    }
    let mut replies = Vec::new();
    let mut done = futures_util::future::join_all(tasks).await.into_iter();
    while let (Some(first), Some(second)) = (done.next(), done.next()) {
        replies.push([first.unwrap(), second.unwrap()]);
    }
    replies
}

/// `LOOPS` webhook dispatchers on `app`, as its supervisor would run them.
fn dispatchers(app: &TestApp) -> Vec<JoinHandle<()>> {
    (0..LOOPS)
        .map(|_| tokio::spawn(Dispatcher::new(app.core.clone()).unwrap().run()))
        .collect()
}

/// Polls `done` until it holds, failing the test with `what` after `within`.
async fn until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(column 0, column 1 as a number)` of each row, for the GROUP BY queries below.
fn counts(rows: Vec<DbRow>) -> Vec<(String, i64)> {
    rows.iter().map(|r| (r.at(0), r.at(1))).collect()
}

/// `kassa_webhook_attempts_total{outcome="delivered"}` of `app`, 0 before the first.
async fn delivered_by(app: &TestApp) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("kassa_webhook_attempts_total{outcome=\"delivered\"} "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// What the receiver got: the number of requests for each webhook id, and the
/// `(type, order id)` each id carried.
fn received_by_id(receiver: &Receiver) -> (BTreeMap<String, usize>, BTreeMap<String, (String, String)>) {
    let mut times = BTreeMap::new();
    let mut what = BTreeMap::new();
    for r in receiver.received() {
        let id = r.headers["webhook-id"].as_str().unwrap().to_owned();
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let kind = body["type"].as_str().unwrap().to_owned();
        let order = body["data"]["id"].as_str().unwrap().to_owned();
        *times.entry(id.clone()).or_insert(0) += 1;
        what.insert(id, (kind, order));
    }
    (times, what)
}

#[tokio::test]
async fn the_same_500_orders_notified_alternately_and_in_duplicate_to_two_instances_at_once_are_each_paid_once_with_one_history_row_and_one_order_paid_webhook(
) {
    const ORDERS: usize = 500;
    let started = Instant::now();
    let gateway = GatewayStandin::start().await;
    let receiver = Receiver::start().await;
    let Some((a, b)) = two_alipay_instances(&gateway, &receiver).await else {
        return;
    };
    let (ids, bodies) = orders_with_notifications(&a, "twice", ORDERS).await;
    let mut loops = dispatchers(&a);
    loops.extend(dispatchers(&b));
    let flooding = Instant::now();

    let replies = flood([&a, &b], &bodies, 64).await;

    let flooded = flooding.elapsed();
    for (i, pair) in replies.iter().enumerate() {
        for reply in pair {
            assert_eq!(reply.as_ref(), Ok(&(200, "success".to_owned())), "order {i}");
        }
    }
    let db = a.db().clone();
    let undelivered = "SELECT COUNT(*) FROM webhook_outbox WHERE status <> 'delivered'";
    until(Duration::from_secs(40), "every webhook delivered", || {
        db.one::<i64>(undelivered, crate::vals![]) == 0
    })
    .await;
    for task in &loops {
        task.abort();
    }

    assert_eq!(
        counts(db.rows(
            "SELECT status, COUNT(*) FROM orders GROUP BY status",
            crate::vals![]
        )),
        vec![("paid".to_owned(), ORDERS as i64)]
    );
    let history = db.rows(
        "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM order_events WHERE outcome = 'applied'",
        crate::vals![],
    );
    assert_eq!(
        (history[0].at::<i64>(0), history[0].at::<i64>(1)),
        (ORDERS as i64, ORDERS as i64),
        "one applied history row per order"
    );
    assert_eq!(
        counts(db.rows(
            "SELECT verdict, COUNT(*) FROM notifications GROUP BY verdict ORDER BY verdict COLLATE \"C\"",
            crate::vals![]
        )),
        vec![
            ("applied".to_owned(), ORDERS as i64),
            ("duplicate".to_owned(), ORDERS as i64)
        ],
        "each order's first copy applied, the other a duplicate"
    );
    let outbox = db.rows(
        "SELECT event_id, order_id, event_type, status FROM webhook_outbox ORDER BY id",
        crate::vals![],
    );
    assert_eq!(outbox.len(), ORDERS, "one webhook queued per order");
    let queued: BTreeMap<String, (String, String)> = outbox
        .iter()
        .map(|r| {
            assert_eq!(r.at::<String>(3), "delivered");
            (r.at(0), (r.at(2), r.at(1)))
        })
        .collect();

    let (times, what) = received_by_id(&receiver);
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(what, queued, "exactly the queued webhooks, each to its order");
    let paid: BTreeSet<&String> = what
        .values()
        .map(|(kind, order)| {
            assert_eq!(kind, "order.paid");
            order
        })
        .collect();
    assert_eq!(paid, ids.iter().collect(), "one order.paid for every order");
    let (by_a, by_b) = (delivered_by(&a).await, delivered_by(&b).await);
    assert_eq!(
        by_a + by_b,
        ORDERS as f64,
        "attempts counted by the two instances"
    );
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "both instances delivered: {by_a} and {by_b}"
    );
    println!(
        "{ORDERS} orders, {} notifications in {flooded:?}; A delivered {by_a}, B {by_b}; {:?} in all",
        2 * ORDERS,
        started.elapsed()
    );
}

/// The rows `owner` holds claimed: `(id, event_id)`.
fn claimed_by(db: &crate::helpers::TestDb, owner: &str) -> Vec<(i64, String)> {
    db.rows(
        "SELECT id, event_id FROM webhook_outbox WHERE status = 'delivering' AND lease_owner = ?1 ORDER BY id",
        [owner],
    )
    .iter()
    .map(|r| (r.at(0), r.at(1)))
    .collect()
}

#[tokio::test]
async fn an_instance_killed_mid_flood_leaves_its_claimed_webhooks_and_its_job_lease_to_the_other_which_finishes_them_once_the_leases_run_out(
) {
    const ORDERS: usize = 40;
    let gateway = GatewayStandin::start().await;
    let receiver = Receiver::start().await;
    // A slow shop: every delivery takes a while, so A dies in the middle of some.
    receiver.script(std::iter::repeat_n(
        Answer::status(200).after(Duration::from_secs(2)),
        1000,
    ));
    let Some((a, b)) = two_alipay_instances(&gateway, &receiver).await else {
        return;
    };
    let db = a.db().clone();
    let (ids, bodies) = orders_with_notifications(&a, "crash", ORDERS).await;
    let a_name = a.core.instance.as_str().to_owned();
    let b_name = b.core.instance.as_str().to_owned();
    let lease_holder = || db.one::<String>("SELECT holder FROM leases WHERE name = 'expiry'", crate::vals![]);
    // A runs the expiry sweep, and so holds its lease; B's pass is skipped.
    assert!(a.expiry().pass(a.now()).await.unwrap().is_some());
    assert!(b.expiry().pass(b.now()).await.unwrap().is_none());
    assert_eq!(lease_holder(), a_name);

    let a_loops = dispatchers(&a);
    let b_loops = dispatchers(&b);
    let (first, second) = bodies.split_at(ORDERS / 2);
    for (i, pair) in flood([&a, &b], first, 64).await.iter().enumerate() {
        for reply in pair {
            assert_eq!(reply.as_ref(), Ok(&(200, "success".to_owned())), "order {i}");
        }
    }
    until(
        Duration::from_secs(10),
        "A's every loop holding a delivery",
        || claimed_by(&db, &a_name).len() == LOOPS,
    )
    .await;

    // The crash: A's loops stop mid-attempt and nothing A holds is given back.
    for task in &a_loops {
        task.abort();
    }
    let held = claimed_by(&db, &a_name);
    let a_address = a.address.clone();
    a.crash().await;
    receiver.heal();
    // The rest of the flood: what A no longer answers, Alipay sends again (to B).
    for (i, body) in second.iter().enumerate() {
        let gone = notify(b.client.clone(), a_address.clone(), body.clone()).await;
        assert!(
            gone.is_err(),
            "order {}: the killed instance answered {gone:?}",
            ORDERS / 2 + i
        );
        let reply = notify(b.client.clone(), b.address.clone(), body.clone()).await;
        assert_eq!(reply, Ok((200, "success".to_owned())), "order {}", ORDERS / 2 + i);
    }
    let undelivered = || {
        db.rows(
            "SELECT id, event_id FROM webhook_outbox WHERE status <> 'delivered' ORDER BY id",
            crate::vals![],
        )
        .iter()
        .map(|r| (r.at(0), r.at(1)))
        .collect::<Vec<(i64, String)>>()
    };
    until(Duration::from_secs(30), "B delivering all but A's claims", || {
        undelivered() == held
    })
    .await;
    // B's loops look again (each at least once a second) and leave A's claims alone,
    // the job lease too, while their leases hold.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(claimed_by(&db, &a_name), held, "A's claims wait for their lease");
    assert!(b.expiry().pass(b.now()).await.unwrap().is_none());

    // Past the job lease's TTL, B takes the sweep over.
    b.clock
        .advance(kassa::jobs::lease::TTL + chrono::Duration::seconds(1));
    assert!(b.expiry().pass(b.now()).await.unwrap().is_some());
    assert_eq!(lease_holder(), b_name);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(claimed_by(&db, &a_name), held, "the deliveries' lease is longer");

    // Past the deliveries' lease, B delivers what A had claimed.
    b.clock.advance(LEASE - kassa::jobs::lease::TTL);
    until(Duration::from_secs(20), "every webhook delivered", || {
        undelivered().is_empty()
    })
    .await;
    for task in &b_loops {
        task.abort();
    }

    assert_eq!(
        counts(db.rows(
            "SELECT status, COUNT(*) FROM orders GROUP BY status",
            crate::vals![]
        )),
        vec![("paid".to_owned(), ORDERS as i64)]
    );
    assert_eq!(
        db.one::<i64>(
            "SELECT COUNT(DISTINCT order_id) FROM order_events WHERE outcome = 'applied'",
            crate::vals![]
        ),
        ORDERS as i64
    );
    let queued: BTreeMap<String, String> = db
        .rows("SELECT event_id, order_id FROM webhook_outbox", crate::vals![])
        .iter()
        .map(|r| (r.at(0), r.at(1)))
        .collect();
    assert_eq!(queued.len(), ORDERS, "one webhook per order");
    let (times, what) = received_by_id(&receiver);
    for (event, order) in &queued {
        assert_eq!(
            what.get(event).map(|(kind, order)| (kind.as_str(), order)),
            Some(("order.paid", order)),
            "{event} delivered"
        );
    }
    assert_eq!(what.len(), ORDERS, "nothing else delivered");
    let retried: Vec<&String> = times.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
    assert!(
        retried.iter().all(|id| held.iter().any(|(_, e)| e == *id)),
        "only what A was sending when it died went out twice: {retried:?}"
    );
    let ids: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(queued.values().collect::<BTreeSet<_>>(), ids);
}
