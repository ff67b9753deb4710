//! Webhooks to the shop: a real receiver verifies every delivery with PyPI's
//! standardwebhooks; the dispatcher is driven by `try_dispatch_one` with a clock the
//! test controls, never with sleeps.

use chrono::{DateTime, Duration, Utc};
use kassa::db::{outbox, webhook_endpoints, webhook_secrets};
use kassa::providers::{PaymentFacts, TradeState};
use kassa::webhooks::dispatcher::{Dispatcher, Outcome, LEASE};
use serde_json::{json, Value};

use crate::helpers::{unique, TestApp};
use crate::oracle::verify_webhook;
use crate::receiver::{Answer, Receiver};

async fn secrets(app: &TestApp) -> Vec<String> {
    kassa::webhooks::signing_secrets(&app.core.db, &app.core.settings, app.now())
        .await
        .unwrap()
}

/// An order with `notify_url`, closed through the API: one `order.closed` event.
async fn closed_order(app: &TestApp, notify_url: Option<&str>) -> String {
    let mut body = crate::helpers::order_body(&format!("wh-{}", crate::helpers::unique()), 1234);
    if let Some(url) = notify_url {
        body["notify_url"] = json!(url);
    }
    let order: Value = app.post_order(&body).await.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.post(&format!("/api/v1/orders/{id}/close")).await.status(),
        200
    );
    id
}

async fn endpoint_health(app: &TestApp, url: &str) -> webhook_endpoints::EndpointHealth {
    let url = url.to_owned();
    app.core
        .db
        .read(move |c| webhook_endpoints::find(c, &url))
        .await
        .unwrap()
        .unwrap()
}

async fn dispatch(app: &TestApp) -> Vec<Outcome> {
    let d = Dispatcher::new(app.core.clone()).unwrap();
    let mut outcomes = Vec::new();
    loop {
        let o = d.try_dispatch_one(app.now()).await.unwrap();
        if o == Outcome::Empty {
            return outcomes;
        }
        outcomes.push(o);
    }
}

async fn row(app: &TestApp, order_id: &str, index: usize) -> outbox::OutboxRow {
    let event_id = app.outbox(order_id).await[index].event_id.clone();
    app.core
        .db
        .read(move |c| outbox::find_by_event_id(c, &event_id))
        .await
        .unwrap()
        .unwrap()
}

fn assert_verified(
    app_secret: &str,
    received: &crate::receiver::Received,
    now: chrono::DateTime<Utc>,
    kind: &str,
) {
    assert_eq!(
        verify_webhook(app_secret, &received.headers, &received.body, now),
        Ok(kind.to_owned()),
        "{:?}",
        received.headers
    );
}

#[tokio::test]
async fn a_delivery_is_signed_as_standard_webhooks_and_verified_by_the_reference_package() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn().await;
    let id = closed_order(&app, Some(&receiver.url)).await;

    assert_eq!(dispatch(&app).await, vec![Outcome::Delivered]);

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let outbox = app.outbox(&id).await;
    assert_eq!(got[0].headers["webhook-id"], outbox[0].event_id);
    assert_eq!(got[0].headers["content-type"], "application/json");
    assert!(got[0].headers["user-agent"]
        .as_str()
        .unwrap()
        .starts_with("kassa/"));
    assert_eq!(
        got[0].body, outbox[0].payload,
        "the stored payload is sent byte for byte"
    );
    let secret = &secrets(&app).await[0];
    assert!(secret.starts_with("whsec_"));
    assert_verified(secret, &got[0], app.now(), "order.closed");
    let payload: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(payload["data"]["id"], id.as_str());
    assert_eq!(payload["data"]["status"], "closed");
    let mut tampered = got[0].clone();
    tampered.body = tampered.body.replace("closed", "paid");
    assert!(verify_webhook(secret, &tampered.headers, &tampered.body, app.now()).is_err());
    let r = row(&app, &id, 0).await;
    assert_eq!((r.status.as_str(), r.attempts), ("delivered", 1));
    let event = r.event_id.clone();
    let attempts = app
        .core
        .db
        .read(move |c| outbox::list_attempts(c, &event))
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].http_status, Some(200));
    assert_eq!(attempts[0].response.as_deref(), Some("shop says 200"));
}

#[tokio::test]
async fn three_500s_then_200_deliver_on_the_fourth_attempt_and_each_attempt_logs_at_least_the_shop_s_delay_as_latency(
) {
    // How long the shop takes before it answers each attempt.
    let delays = [0, 250, 0, 400].map(std::time::Duration::from_millis);
    let receiver = Receiver::start().await;
    receiver.script(
        [500, 500, 500, 200]
            .into_iter()
            .zip(delays)
            .map(|(status, delay)| Answer::status(status).after(delay)),
    );
    let app = TestApp::spawn().await;
    let id = closed_order(&app, Some(&receiver.url)).await;
    let secret = secrets(&app).await[0].clone();

    let mut times = vec![app.now()];
    assert_eq!(dispatch(&app).await, vec![Outcome::Retried]);
    for (n, ladder) in [(1, 5), (2, 300), (3, 1800)] {
        let r = row(&app, &id, 0).await;
        let wait = (r.next_attempt_at - app.now()).num_milliseconds();
        let nominal = ladder * 1000;
        assert!(
            (nominal * 8 / 10..=nominal * 12 / 10).contains(&wait),
            "attempt {n}: {wait} ms for {ladder} s ±20 %"
        );
        assert_eq!(dispatch(&app).await, vec![], "not before its time");
        app.clock.set(r.next_attempt_at);
        times.push(app.now());
        let expected = if n == 3 {
            Outcome::Delivered
        } else {
            Outcome::Retried
        };
        assert_eq!(dispatch(&app).await, vec![expected]);
    }

    let got = receiver.received();
    assert_eq!(got.len(), 4);
    for (received, at) in got.iter().zip(&times) {
        assert_verified(&secret, received, *at, "order.closed");
        assert_eq!(
            received.headers["webhook-id"], got[0].headers["webhook-id"],
            "one webhook-id across retries"
        );
    }
    let event = row(&app, &id, 0).await.event_id;
    let attempts = app
        .core
        .db
        .read(move |c| outbox::list_attempts(c, &event))
        .await
        .unwrap();
    let statuses: Vec<Option<i64>> = attempts.iter().map(|a| a.http_status).collect();
    assert_eq!(statuses, vec![Some(500), Some(500), Some(500), Some(200)]);
    for (attempt, delay) in attempts.iter().zip(delays) {
        let delay = i64::try_from(delay.as_millis()).unwrap();
        assert!(
            attempt.latency_ms >= delay,
            "{} ms logged for a shop that took {delay} ms",
            attempt.latency_ms
        );
    }
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(503).with_retry_after("120")]);
    let app = TestApp::spawn().await;
    let id = closed_order(&app, Some(&receiver.url)).await;

    dispatch(&app).await;

    let due = row(&app, &id, 0).await.next_attempt_at;
    assert_eq!(
        due.timestamp_millis(),
        (app.now() + Duration::seconds(120)).timestamp_millis()
    );
}

#[tokio::test]
async fn after_the_ladder_it_fails_and_a_resend_delivers_with_the_same_id() {
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(500), Answer::status(404), Answer::status(302)]);
    let app = TestApp::spawn_with(&[("KASSA_WEBHOOKS_RETRY_SCHEDULE", "1s,2s")]).await;
    let id = closed_order(&app, Some(&receiver.url)).await;

    for _ in 0..3 {
        dispatch(&app).await;
        app.clock.advance(Duration::seconds(3));
    }

    let r = row(&app, &id, 0).await;
    assert_eq!((r.status.as_str(), r.attempts), ("failed", 3));
    assert_eq!(
        r.last_error.as_deref(),
        Some("HTTP 302"),
        "redirects are not followed"
    );
    let (event, now) = (r.event_id.clone(), app.now());
    let requeued = app
        .core
        .db
        .write(move |c| outbox::requeue(c, &event, now))
        .await
        .unwrap();
    assert!(requeued);
    assert_eq!(dispatch(&app).await, vec![Outcome::Delivered]);
    let got = receiver.received();
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].headers["webhook-id"], r.event_id.as_str());
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_its_delivery_from_the_restarted_kassa_with_the_same_id() {
    let down = Receiver::down();
    let app = TestApp::spawn().await;
    let id = closed_order(&app, Some(&down.url)).await;
    assert_eq!(dispatch(&app).await, vec![Outcome::Retried]);
    let before = row(&app, &id, 0).await;
    assert!(
        before
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("connection error")),
        "{before:?}"
    );
    let address = app.address.clone();

    // `restart` stops the old kassa and asserts that it and its writer are gone.
    let app = app.restart().await;
    let receiver = down.start().await;

    assert_eq!(app.address, address, "the same address after the restart");
    assert_eq!(row(&app, &id, 0).await, before, "the pending row as it was");
    app.clock.set(before.next_attempt_at - Duration::milliseconds(1));
    assert_eq!(dispatch(&app).await, vec![], "not before its time");
    app.clock.set(before.next_attempt_at);
    assert_eq!(dispatch(&app).await, vec![Outcome::Delivered]);
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers["webhook-id"], before.event_id.as_str());
    let secret = secrets(&app).await[0].clone();
    assert_verified(&secret, &got[0], before.next_attempt_at, "order.closed");
    let r = row(&app, &id, 0).await;
    assert_eq!((r.status.as_str(), r.attempts), ("delivered", 2));
    // The address answers with the new kassa: its clock stamps a new order.
    let order = app
        .create_order(&format!("after-restart-{}", crate::helpers::unique()), 100)
        .await;
    assert_eq!(
        order["created_at"],
        kassa::domain::order::rfc3339(before.next_attempt_at)
    );
}

#[tokio::test]
async fn events_of_one_order_arrive_in_order() {
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(500)]);
    let app = TestApp::spawn().await;
    let mut body = crate::helpers::order_body("ordered-1", 1000);
    body["notify_url"] = json!(receiver.url);
    let order: Value = app.post_order(&body).await.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    *app.provider.query_answer.lock().unwrap() = Ok(TradeState::Paid(PaymentFacts {
        provider_trade_no: None,
        paid_at: None,
        amount: 1000,
    }));
    app.post(&format!("/api/v1/orders/{id}/close")).await;
    let refund = app
        .client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 100, "reason": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refund.status(), 201);

    assert_eq!(
        dispatch(&app).await,
        vec![Outcome::Retried],
        "the refund waits for the payment"
    );
    app.clock.advance(Duration::seconds(10));
    assert_eq!(dispatch(&app).await, vec![Outcome::Delivered, Outcome::Delivered]);

    let kinds: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.body).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds, ["order.paid", "order.paid", "order.partially_refunded"]);
}

#[tokio::test]
async fn two_dispatchers_never_deliver_one_row_twice_and_a_lease_expires() {
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(200).after(std::time::Duration::from_millis(300))]);
    let app = TestApp::spawn().await;
    closed_order(&app, Some(&receiver.url)).await;
    let (a, b) = (
        Dispatcher::new(app.core.clone()).unwrap(),
        Dispatcher::new(app.core.clone()).unwrap(),
    );

    let (x, y) = tokio::join!(a.try_dispatch_one(app.now()), b.try_dispatch_one(app.now()));

    let mut outcomes = vec![x.unwrap(), y.unwrap()];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(outcomes, vec![Outcome::Delivered, Outcome::Empty]);
    assert_eq!(receiver.received().len(), 1);

    // A dispatcher that died mid-delivery: its claim blocks others until the lease ends.
    let second = closed_order(&app, Some(&receiver.url)).await;
    let now = app.now();
    let claimed = app
        .core
        .db
        .write(move |c| outbox::claim_due(c, now, LEASE, "inst_test"))
        .await
        .unwrap();
    assert!(claimed.is_some());
    assert_eq!(dispatch(&app).await, vec![]);
    app.clock.advance(LEASE + Duration::seconds(1));
    assert_eq!(dispatch(&app).await, vec![Outcome::Delivered]);
    assert_eq!(row(&app, &second, 0).await.status.as_str(), "delivered");
}

#[tokio::test]
async fn with_no_endpoint_a_delivery_is_skipped_and_the_default_url_is_used_otherwise() {
    let receiver = Receiver::start().await;
    let bare = TestApp::spawn().await;
    let id = closed_order(&bare, None).await;
    assert_eq!(dispatch(&bare).await, vec![Outcome::Skipped]);
    let r = row(&bare, &id, 0).await;
    assert_eq!(r.status.as_str(), "skipped");
    assert!(r.last_error.unwrap().contains("no endpoint"));

    let app = TestApp::spawn_with(&[("KASSA_WEBHOOKS_URL", &receiver.url)]).await;
    closed_order(&app, None).await;
    assert_eq!(dispatch(&app).await, vec![Outcome::Delivered]);
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn an_endpoint_failing_for_five_days_is_disabled_and_a_resend_that_succeeds_re_enables_it() {
    let receiver = Receiver::start().await;
    receiver.script((0..20).map(|_| Answer::status(500)));
    // One event retried about every 12 h: the endpoint fails without a break for 5 days.
    let app = TestApp::spawn_with(&[("KASSA_WEBHOOKS_RETRY_SCHEDULE", &["12h"; 12].join(","))]).await;
    let first = closed_order(&app, Some(&receiver.url)).await;
    let started = app.now();
    dispatch(&app).await;
    while app.now() - started < Duration::days(5) {
        let health = endpoint_health(&app, &receiver.url).await;
        assert!(health.disabled_at.is_none(), "not before 5 days");
        app.clock.set(row(&app, &first, 0).await.next_attempt_at);
        dispatch(&app).await;
    }
    let health = endpoint_health(&app, &receiver.url).await;
    assert!(health.disabled_at.is_some(), "disabled after 5 days of failures");
    let shown = std::process::Command::new(env!("CARGO_BIN_EXE_kassa"))
        .args(["--data-dir", app.data_dir.to_str().unwrap(), "webhooks", "status"])
        .env_clear()
        .envs(app.database_env())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.contains(&receiver.url) && shown.contains("DISABLED since"),
        "{shown}"
    );

    let blocked = closed_order(&app, Some(&receiver.url)).await;
    let sent_before = receiver.received().len();
    assert_eq!(dispatch(&app).await, vec![Outcome::Failed]);
    assert_eq!(
        receiver.received().len(),
        sent_before,
        "a disabled endpoint is not called"
    );
    assert!(row(&app, &blocked, 0)
        .await
        .last_error
        .unwrap()
        .contains("disabled"));

    receiver.heal();
    let (event, now) = (row(&app, &blocked, 0).await.event_id, app.now());
    app.core
        .db
        .write(move |c| outbox::requeue(c, &event, now))
        .await
        .unwrap();
    assert!(dispatch(&app).await.contains(&Outcome::Delivered));
    let health = endpoint_health(&app, &receiver.url).await;
    assert!(
        health.disabled_at.is_none() && health.failing_since.is_none(),
        "{health:?}"
    );
}

#[tokio::test]
async fn a_rotated_secret_signs_alongside_the_new_one_for_a_day() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn().await;
    let old = secrets(&app).await[0].clone();
    let new = kassa::webhooks::signer::generate_secret();
    let (stored, now) = (new.clone(), app.now());
    app.core
        .db
        .write(move |c| webhook_secrets::rotate(c, &stored, now, now + Duration::hours(24)))
        .await
        .unwrap();

    closed_order(&app, Some(&receiver.url)).await;
    dispatch(&app).await;
    app.clock.advance(Duration::hours(25));
    closed_order(&app, Some(&receiver.url)).await;
    dispatch(&app).await;

    let got = receiver.received();
    assert_eq!(
        got[0].headers["webhook-signature"]
            .as_str()
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    assert_verified(&old, &got[0], now, "order.closed");
    assert_verified(&new, &got[0], now, "order.closed");
    assert_eq!(
        got[1].headers["webhook-signature"]
            .as_str()
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    assert!(
        verify_webhook(&old, &got[1].headers, &got[1].body, app.now()).is_err(),
        "the old secret has retired"
    );
    assert_verified(&new, &got[1], app.now(), "order.closed");
}

#[tokio::test]
async fn a_failing_streak_that_went_quiet_starts_over() {
    let receiver = Receiver::start().await;
    receiver.script((0..2).map(|_| Answer::status(500)));
    let app = TestApp::spawn_with(&[("KASSA_WEBHOOKS_RETRY_SCHEDULE", "1s")]).await;
    closed_order(&app, Some(&receiver.url)).await;
    dispatch(&app).await;
    app.clock.advance(Duration::seconds(2));
    dispatch(&app).await;
    // A week later, after the shop was fixed with nothing to send, one failure.
    app.clock.advance(Duration::days(7));
    receiver.script([Answer::status(502)]);
    closed_order(&app, Some(&receiver.url)).await;
    dispatch(&app).await;

    let health = endpoint_health(&app, &receiver.url).await;
    assert!(health.disabled_at.is_none(), "{health:?}");
    assert_eq!(
        health.failing_since,
        Some(app.now()).map(|t| chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap())
    );
}

#[tokio::test]
async fn a_dispatcher_whose_lease_was_taken_over_does_not_overwrite_the_new_holder() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn().await;
    let id = closed_order(&app, Some(&receiver.url)).await;
    let now = app.now();
    let first = app
        .core
        .db
        .write(move |c| outbox::claim_due(c, now, LEASE, "inst_test"))
        .await
        .unwrap()
        .unwrap();
    let later = now + LEASE + Duration::seconds(1);
    let second = app
        .core
        .db
        .write(move |c| outbox::claim_due(c, later, LEASE, "inst_test"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.id, second.id, "the expired lease was re-claimed");

    let stale = outbox::Attempt {
        outbox_id: first.id,
        lease_until: first.lease_until,
        lease_owner: "inst_test",
        at: later,
        url: "http://x",
        http_status: Some(500),
        error: None,
        latency_ms: 1,
        response: None,
    };
    let recorded = app
        .core
        .db
        .write(move |c| outbox::record_attempt(c, &stale, &outbox::After::Failed))
        .await
        .unwrap();

    assert!(!recorded);
    assert_eq!(
        row(&app, &id, 0).await.status.as_str(),
        "delivering",
        "still the second holder's"
    );
}

/// The payload's `timestamp`, which must be RFC 3339.
fn payload_time(body: &str) -> DateTime<Utc> {
    let payload: Value = serde_json::from_str(body).unwrap();
    let stamp = payload["timestamp"].as_str().unwrap();
    DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("{stamp:?} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

#[tokio::test]
async fn refunds_are_delivered_as_order_partially_refunded_then_order_refunded_stamped_with_their_transition_time(
) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_sandbox(&[
        ("KASSA_SANDBOX_TIME_SCALE", "600"),
        ("KASSA_WEBHOOKS_URL", &receiver.url),
    ])
    .await;
    let order = app.create_order(&format!("rf-wh-{}", unique()), 1000).await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    app.drive_sandbox().await;
    assert_eq!(app.order(&id).await["status"], "paid");
    assert_eq!(dispatch(&app).await, vec![Outcome::Delivered], "order.paid");
    let secret = secrets(&app).await[0].clone();

    // Times with milliseconds, after the payment, that the payloads must carry exactly.
    let first = DateTime::from_timestamp_millis(app.now().timestamp_millis() + 60_123).unwrap();
    let second = first + Duration::milliseconds(61_250);
    for (at, amount, kind, status, refunded) in [
        (first, 300, "order.partially_refunded", "partially_refunded", 300),
        (second, 700, "order.refunded", "refunded", 1000),
    ] {
        app.clock.set(at);
        let refund = app
            .client
            .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
            .bearer_auth(&app.api_key)
            .json(&json!({"amount": amount, "reason": "returned"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refund.status(), 201, "{kind}");

        assert_eq!(dispatch(&app).await, vec![Outcome::Delivered], "{kind}");

        let got = receiver.received().last().unwrap().clone();
        assert_verified(&secret, &got, at, kind);
        let outbox = app.outbox(&id).await;
        let stored = outbox.last().unwrap();
        assert_eq!(got.headers["webhook-id"], stored.event_id.as_str());
        assert_eq!(got.body, stored.payload);
        let payload: Value = serde_json::from_str(&got.body).unwrap();
        assert_eq!(payload["type"], kind);
        assert_eq!(payload["data"]["id"], id.as_str());
        assert_eq!(payload["data"]["status"], status);
        assert_eq!(payload["data"]["refunded_amount"], refunded);
        assert_eq!(payload_time(&got.body), at, "{kind}: the test clock's time");
        let events = app.events(&id).await;
        let transition = events.last().unwrap();
        assert_eq!(
            (transition["transition"].as_str(), transition["to"].as_str()),
            (Some("refund"), Some(status))
        );
        assert_eq!(
            payload["timestamp"], transition["at"],
            "{kind}: the time the history shows for the refund"
        );
    }
    let kinds: Vec<Value> = receiver
        .received()
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap()["type"].clone())
        .collect();
    assert_eq!(
        kinds,
        ["order.paid", "order.partially_refunded", "order.refunded"]
    );
}

#[tokio::test]
async fn only_the_first_4096_bytes_of_a_10_kb_shop_answer_are_kept_in_the_attempt_log() {
    // Every position differs from its neighbours, so a cut one byte off shows.
    let mut answer: String = (0..2000).map(|i| format!("{i:05},")).collect();
    answer.truncate(10 * 1024);
    let receiver = Receiver::start().await;
    receiver.script([
        Answer::status(500).with_body(answer.clone()),
        Answer::status(200).with_body(answer.clone()),
    ]);
    let app = TestApp::spawn().await;
    let id = closed_order(&app, Some(&receiver.url)).await;

    assert_eq!(dispatch(&app).await, vec![Outcome::Retried]);
    app.clock.set(row(&app, &id, 0).await.next_attempt_at);
    assert_eq!(dispatch(&app).await, vec![Outcome::Delivered]);

    let event = row(&app, &id, 0).await.event_id;
    let attempts = app
        .core
        .db
        .read(move |c| outbox::list_attempts(c, &event))
        .await
        .unwrap();
    assert_eq!(attempts.len(), 2);
    for attempt in &attempts {
        let kept = attempt.response.as_deref().unwrap();
        assert_eq!(kept.len(), 4096);
        assert_eq!(kept, &answer[..4096]);
    }
}

#[tokio::test]
async fn a_delivery_the_shop_always_refuses_is_tried_on_every_step_of_the_default_ladder_then_fails() {
    // spec: webhooks.retry_schedule = 5s,5m,30m,2h,5h,10h,10h, each step ±20 %.
    let ladder = [5, 300, 1800, 7200, 18_000, 36_000, 36_000].map(Duration::seconds);
    let receiver = Receiver::start().await;
    receiver.script((0..=ladder.len()).map(|_| Answer::status(500)));
    let app = TestApp::spawn().await;
    assert_eq!(app.core.settings.webhooks.retry_schedule, ladder);
    // A whole millisecond, as the database stores times.
    app.clock
        .set(DateTime::from_timestamp_millis(app.now().timestamp_millis()).unwrap());
    let id = closed_order(&app, Some(&receiver.url)).await;
    let secret = secrets(&app).await[0].clone();

    let mut times = vec![app.now()];
    assert_eq!(dispatch(&app).await, vec![Outcome::Retried]);
    for (step, delay) in ladder.iter().enumerate() {
        let r = row(&app, &id, 0).await;
        assert_eq!((r.status.as_str(), r.attempts), ("pending", step as i64 + 1));
        let wait = r.next_attempt_at - app.now();
        assert!(
            *delay * 8 / 10 <= wait && wait <= *delay * 12 / 10,
            "step {step}: waits {wait} for {delay} ±20 %"
        );
        app.clock.set(r.next_attempt_at - Duration::milliseconds(1));
        assert_eq!(dispatch(&app).await, vec![], "step {step}: not before its time");
        app.clock.set(r.next_attempt_at);
        times.push(app.now());
        let expected = if step + 1 == ladder.len() {
            Outcome::Failed
        } else {
            Outcome::Retried
        };
        assert_eq!(dispatch(&app).await, vec![expected], "step {step}");
    }

    let r = row(&app, &id, 0).await;
    assert_eq!(
        (r.status.as_str(), r.attempts, r.last_error.as_deref()),
        ("failed", 8, Some("HTTP 500"))
    );
    app.clock.advance(Duration::days(30));
    assert_eq!(dispatch(&app).await, vec![], "nothing after the last step");
    let got = receiver.received();
    assert_eq!(got.len(), ladder.len() + 1);
    for (received, at) in got.iter().zip(&times) {
        assert_eq!(received.headers["webhook-id"], r.event_id.as_str());
        assert_verified(&secret, received, *at, "order.closed");
    }
}

/// The real `kassa` binary on the app's data directory, as an operator runs it next to
/// the server.
fn kassa_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kassa"))
        .arg("--data-dir")
        .arg(&app.data_dir)
        .args(args)
        .env_clear()
        .envs(app.database_env())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An order's `order.closed` delivery driven through the app's ladder (`1s,2s`) to
/// `failed`; returns the order id and the failed row.
async fn failed_delivery(app: &TestApp, url: &str) -> (String, outbox::OutboxRow) {
    let id = closed_order(app, Some(url)).await;
    let mut outcomes = dispatch(app).await;
    for _ in 0..2 {
        app.clock.set(row(app, &id, 0).await.next_attempt_at);
        outcomes.extend(dispatch(app).await);
    }
    assert_eq!(
        outcomes,
        vec![Outcome::Retried, Outcome::Retried, Outcome::Failed]
    );
    let failed = row(app, &id, 0).await;
    assert_eq!((failed.status.as_str(), failed.attempts), ("failed", 3));
    (id, failed)
}

#[tokio::test]
async fn kassa_webhooks_resend_by_id_queues_a_delivery_that_failed_the_ladder_and_it_arrives_with_the_same_id(
) {
    let receiver = Receiver::start().await;
    receiver.script((0..3).map(|_| Answer::status(500)));
    let app = TestApp::spawn_with(&[("KASSA_WEBHOOKS_RETRY_SCHEDULE", "1s,2s")]).await;
    let (id, failed) = failed_delivery(&app, &receiver.url).await;
    app.clock.advance(Duration::days(1));
    assert_eq!(dispatch(&app).await, vec![], "a failed delivery stays failed");

    let (ok, stdout, stderr) = kassa_cli(&app, &["webhooks", "resend", "--id", &failed.event_id]);

    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("queued {} again", failed.event_id)),
        "{stdout}"
    );
    let queued = row(&app, &id, 0).await;
    assert_eq!(
        (queued.status.as_str(), queued.attempts, queued.event_id.as_str()),
        ("pending", 0, failed.event_id.as_str())
    );
    // The command stamps the row with the system clock; the app's may be ahead of it.
    app.clock.set(app.now().max(queued.next_attempt_at));
    assert_eq!(dispatch(&app).await, vec![Outcome::Delivered]);
    let got = receiver.received();
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].headers["webhook-id"], failed.event_id.as_str());
    assert_verified(&secrets(&app).await[0], &got[3], app.now(), "order.closed");
    let r = row(&app, &id, 0).await;
    assert_eq!((r.status.as_str(), r.attempts), ("delivered", 1));
}

#[tokio::test]
async fn kassa_webhooks_resend_failed_since_queues_only_deliveries_that_failed_from_then_and_they_arrive_with_their_ids(
) {
    let receiver = Receiver::start().await;
    receiver.script((0..6).map(|_| Answer::status(500)));
    let app = TestApp::spawn_with(&[("KASSA_WEBHOOKS_RETRY_SCHEDULE", "1s,2s")]).await;
    let early_since = app.now();
    let (old_id, old) = failed_delivery(&app, &receiver.url).await;
    app.clock.advance(Duration::days(2));
    let since = app.now();
    let (new_id, new) = failed_delivery(&app, &receiver.url).await;
    let secret = secrets(&app).await[0].clone();

    let stamp = kassa::domain::order::rfc3339(since);
    let (ok, stdout, stderr) = kassa_cli(&app, &["webhooks", "resend", "--failed-since", &stamp]);

    assert!(ok, "{stderr}");
    assert!(stdout.contains("queued 1 failed webhook(s)"), "{stdout}");
    assert_eq!(row(&app, &old_id, 0).await, old, "failed before --failed-since");
    let queued = row(&app, &new_id, 0).await;
    assert_eq!(
        (queued.status.as_str(), queued.attempts, queued.event_id.as_str()),
        ("pending", 0, new.event_id.as_str())
    );
    app.clock.set(app.now().max(queued.next_attempt_at));
    assert_eq!(dispatch(&app).await, vec![Outcome::Delivered]);
    let got = receiver.received();
    assert_eq!(got.len(), 7);
    assert_eq!(got[6].headers["webhook-id"], new.event_id.as_str());
    assert_verified(&secret, &got[6], app.now(), "order.closed");

    // From before the first failure: the older one now (the newer one was delivered).
    let stamp = kassa::domain::order::rfc3339(early_since);
    let (ok, stdout, stderr) = kassa_cli(&app, &["webhooks", "resend", "--failed-since", &stamp]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("queued 1 failed webhook(s)"), "{stdout}");
    let queued = row(&app, &old_id, 0).await;
    app.clock.set(app.now().max(queued.next_attempt_at));
    assert_eq!(dispatch(&app).await, vec![Outcome::Delivered]);
    let got = receiver.received();
    assert_eq!(got.len(), 8);
    assert_eq!(got[7].headers["webhook-id"], old.event_id.as_str());
    assert_verified(&secret, &got[7], app.now(), "order.closed");
    assert_eq!(row(&app, &new_id, 0).await.status.as_str(), "delivered");
    assert_eq!(row(&app, &old_id, 0).await.status.as_str(), "delivered");
}
