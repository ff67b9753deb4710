//! The expiry worker and the late-notification checks, driven by a clock the test
//! controls.

use std::sync::atomic::Ordering;

use chrono::Duration;
use kassa::jobs::expiry::ExpiryReport;
use kassa::providers::{PaymentFacts, TradeState};
use serde_json::Value;

use crate::helpers::TestApp;

async fn status(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_order_past_its_deadline_is_queried_then_closed_at_the_provider_and_locally() {
    let app = TestApp::spawn().await;
    let order = app.create_order("exp-1", 100).await;
    let id = order["id"].as_str().unwrap();
    let worker = app.expiry();

    app.clock.advance(Duration::minutes(14));
    assert_eq!(
        worker.try_run_once(app.now()).await.unwrap(),
        ExpiryReport::default(),
        "not due yet"
    );
    assert_eq!(status(&app, id).await["status"], "pending");

    app.clock.advance(Duration::minutes(1));
    let report = worker.try_run_once(app.now()).await.unwrap();

    assert_eq!(report.closed, 1);
    assert_eq!(
        app.provider.queries.load(Ordering::SeqCst),
        1,
        "asked the provider first"
    );
    assert_eq!(app.provider.closes.load(Ordering::SeqCst), 1);
    let now = status(&app, id).await;
    assert_eq!(now["status"], "closed");
    let events: Value = app
        .get(&format!("/api/v1/orders/{id}/events"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["data"][0]["source"], "expiry");
    assert_eq!(events["data"][0]["actor"], "system");
    assert_eq!(
        worker.try_run_once(app.now()).await.unwrap(),
        ExpiryReport::default(),
        "nothing left"
    );
}

#[tokio::test]
async fn an_expiring_order_found_paid_at_the_provider_becomes_paid() {
    let app = TestApp::spawn().await;
    let order = app.create_order("exp-2", 250).await;
    let id = order["id"].as_str().unwrap();
    *app.provider.query_answer.lock().unwrap() = Ok(TradeState::Paid(PaymentFacts {
        provider_trade_no: Some("2026T".into()),
        paid_at: None,
        amount: 250,
    }));
    app.clock.advance(Duration::minutes(16));

    let report = app.expiry().try_run_once(app.now()).await.unwrap();

    assert_eq!((report.paid, report.closed), (1, 0));
    assert_eq!(status(&app, id).await["status"], "paid");
    assert_eq!(app.provider.closes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_provider_that_cannot_answer_leaves_the_order_pending_and_is_retried_later() {
    let app = TestApp::spawn().await;
    let order = app.create_order("exp-3", 100).await;
    let id = order["id"].as_str().unwrap();
    *app.provider.query_answer.lock().unwrap() = Err(app.provider.unknown());
    app.clock.advance(Duration::minutes(16));
    let worker = app.expiry();

    let first = worker.try_run_once(app.now()).await.unwrap();
    let again = worker.try_run_once(app.now()).await.unwrap();

    assert_eq!(first.deferred, 1);
    assert_eq!(again.deferred, 1);
    assert_eq!(
        app.provider.queries.load(Ordering::SeqCst),
        1,
        "not hammered while waiting"
    );
    assert_eq!(status(&app, id).await["status"], "pending");

    *app.provider.query_answer.lock().unwrap() = Ok(TradeState::NotPaid);
    app.clock.advance(Duration::seconds(61));
    let later = worker.try_run_once(app.now()).await.unwrap();
    assert_eq!(later.closed, 1);
    assert_eq!(status(&app, id).await["status"], "closed");
}

#[tokio::test]
async fn a_pending_order_is_queried_at_1_5_15_and_60_minutes_and_at_no_other_time() {
    let app = TestApp::spawn().await;
    let created = chrono::DateTime::parse_from_rfc3339("2027-01-15T03:30:00.000Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    app.clock.set(created);
    let mut body = crate::helpers::order_body("late-checks", 100);
    // Open for two hours, so the +1 h check still finds it pending.
    body["expires_in"] = serde_json::json!(7200);
    assert_eq!(app.post_order(&body).await.status(), 201);
    let ms = Duration::milliseconds;
    // (time after creation, queries made by then)
    let steps = [
        (ms(0), 0),
        (ms(59_999), 0),
        (Duration::minutes(1), 1),
        (Duration::minutes(1), 1),
        (Duration::minutes(5) - ms(1), 1),
        (Duration::minutes(5), 2),
        (Duration::minutes(10), 2),
        (Duration::minutes(15) - ms(1), 2),
        (Duration::minutes(15), 3),
        (Duration::minutes(30), 3),
        (Duration::minutes(60) - ms(1), 3),
        (Duration::minutes(60), 4),
        (Duration::minutes(61), 4),
        (Duration::minutes(119), 4),
    ];
    let mut before = 0;
    for (after, queries) in steps {
        app.clock.set(created + after);
        let report = kassa::jobs::late_checks::try_run_once(&app.core, app.now())
            .await
            .unwrap();
        assert_eq!(
            app.provider.queries.load(Ordering::SeqCst),
            queries,
            "queries by +{after}"
        );
        assert_eq!(report.orders_checked, queries - before, "checked at +{after}");
        assert_eq!(report.orders_paid, 0);
        before = queries;
    }
    assert_eq!(app.provider.calls(), [1, 4, 0, 0, 0], "only queries, no close");
}
