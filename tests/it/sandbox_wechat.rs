//! WeChat Pay end to end against the built-in sandbox over real HTTP: kassa's WeChat
//! client signs its calls to the simulated API v3, the wallet pays, the simulated
//! notifier delivers encrypted, signed notifications to `/notify/wechat`.

use chrono::{DateTime, Duration, Utc};
use kassa::db::sandbox as store;
use kassa::sandbox::wechat::notifier::RETRY_SCHEDULE;
use serde_json::{json, Value};

use crate::helpers::TestApp;

pub const SCALE: &[(&str, &str)] = &[("KASSA_SANDBOX_TIME_SCALE", "600")];

pub fn wechat_order(out_trade_no: &str, amount: i64) -> Value {
    json!({
        "out_trade_no": out_trade_no,
        "amount": amount,
        "subject": "Jasmine tea 茉莉花茶",
        "provider": "wechat",
    })
}

pub async fn create_wechat_order(app: &TestApp, out_trade_no: &str, amount: i64) -> Value {
    let response = app.post_order(&wechat_order(out_trade_no, amount)).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "creating {out_trade_no}: {body}");
    body
}

async fn deliveries(app: &TestApp, order_id: &str) -> Vec<store::Delivery> {
    let id = order_id.to_owned();
    app.core
        .db
        .read(move |c| store::list_deliveries(c, &id))
        .await
        .unwrap()
}

async fn trade(app: &TestApp, order_id: &str) -> store::SandboxTrade {
    let id = order_id.to_owned();
    app.core
        .db
        .read(move |c| store::find_trade(c, &id))
        .await
        .unwrap()
        .expect("the sandbox has the trade")
}

async fn set_faults(app: &TestApp, path: &str, faults: Value) {
    let r = app.client.post(app.url(path)).json(&faults).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

async fn refund(app: &TestApp, id: &str, amount: i64) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": amount, "reason": "one cup was cold"}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_wechat_order_is_created_at_the_sandbox_paid_in_the_wallet_and_notified_once() {
    let app = TestApp::spawn_sandbox(SCALE).await;

    let order = create_wechat_order(&app, "wx-flow-1", 1234).await;
    let id = order["id"].as_str().unwrap();
    let qr = order["qr_code"].as_str().unwrap();
    assert_eq!(order["provider"], "wechat");
    assert!(qr.starts_with(&app.url("/sandbox/wallet/")), "{qr}");
    let created = trade(&app, id).await;
    assert_eq!(
        created.notify_url.as_deref(),
        Some(app.url("/notify/wechat").as_str())
    );
    let expires_at: DateTime<Utc> = order["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        created.deadline <= expires_at,
        "time_expire {} is no later than expires_at {expires_at}",
        created.deadline
    );
    let wallet = app.client.get(qr).send().await.unwrap().text().await.unwrap();
    assert!(
        wallet.contains("WeChat Pay") && wallet.contains("class=\"wechat\"") && wallet.contains("¥12.34"),
        "{wallet}"
    );

    app.pay_in_wallet(qr).await;
    assert_eq!(app.drive_sandbox().await, 1);

    let paid = app.order(id).await;
    assert_eq!(paid["status"], "paid");
    assert!(paid["provider_trade_no"]
        .as_str()
        .is_some_and(|t| t.starts_with("42")));
    let outbox = app.outbox(id).await;
    assert_eq!(
        outbox.iter().map(|o| o.event_type.as_str()).collect::<Vec<_>>(),
        ["order.paid"]
    );
    let notes = app.notifications().await;
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (notes[0].verdict.as_str(), notes[0].reason_code.map(|r| r.code())),
        ("applied", Some("paid"))
    );
    // What arrived is WeChat's v3 shape: JSON with an encrypted resource, signed headers.
    let body: Value = serde_json::from_str(&notes[0].body).unwrap();
    assert_eq!(body["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(body["resource"]["algorithm"], "AEAD_AES_256_GCM");
    assert_eq!(body["resource"]["nonce"].as_str().map(str::len), Some(12));
    let headers: Value = serde_json::from_str(&notes[0].headers).unwrap();
    assert!(headers["wechatpay-serial"]
        .as_str()
        .is_some_and(|s| s.starts_with("PUB_KEY_ID_")));
    assert_eq!(deliveries(&app, id).await[0].status.as_str(), "delivered");
}

#[tokio::test]
async fn a_partial_refund_stays_pending_until_the_refund_success_notice_settles_it() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = create_wechat_order(&app, "wx-refund-1", 1000).await;
    let id = order["id"].as_str().unwrap();
    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    assert_eq!(app.drive_sandbox().await, 1);

    let (status, created) = refund(&app, id, 300).await;

    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["status"], "pending",
        "WeChat answered PROCESSING: {created}"
    );
    let before = app.order(id).await;
    assert_eq!(
        (before["status"].as_str(), before["refunded_amount"].as_i64()),
        (Some("paid"), Some(0))
    );
    assert_eq!(app.outbox(id).await.len(), 1, "no refund webhook yet");

    assert_eq!(app.drive_sandbox().await, 1, "the REFUND.SUCCESS notice");

    let after = app.order(id).await;
    assert_eq!(
        (after["status"].as_str(), after["refunded_amount"].as_i64()),
        (Some("partially_refunded"), Some(300))
    );
    let refunds: Value = app
        .get(&format!("/api/v1/orders/{id}/refunds"))
        .await
        .json()
        .await
        .unwrap();
    let row = &refunds["data"][0];
    assert_eq!(
        (row["status"].as_str(), row["id"].as_str()),
        (Some("succeeded"), created["id"].as_str())
    );
    assert!(row["provider_refund_id"]
        .as_str()
        .is_some_and(|r| r.starts_with("50300")));
    let notes = app.notifications().await;
    assert_eq!(notes[0].reason_code.map(|r| r.code()), Some("refund_succeeded"));
    let events = app.events(id).await;
    let last = events.last().unwrap();
    assert_eq!(
        (last["to"].as_str(), last["source"].as_str()),
        (Some("partially_refunded"), Some("notification")),
        "{events:?}"
    );
    assert_eq!(
        app.outbox(id)
            .await
            .iter()
            .map(|o| o.event_type.as_str())
            .collect::<Vec<_>>(),
        ["order.paid", "order.partially_refunded"]
    );
    // The platform's resend of the same notice changes nothing.
    let refunded = app.order(id).await;
    let resend = app.sandbox.as_ref().unwrap();
    let again = deliveries(&app, id).await;
    let notice = again.last().unwrap();
    let event = kassa::sandbox::wechat::notifier::event_of(&notice.params).unwrap();
    let faults = kassa::sandbox::faults::Faults::default();
    let (body, headers) =
        kassa::sandbox::wechat::notifier::signed_request(resend, &event, &faults, app.now()).unwrap();
    let mut request = app.client.post(app.url("/notify/wechat")).body(body);
    for (k, v) in headers {
        request = request.header(k, v);
    }
    assert_eq!(request.send().await.unwrap().status(), 204);
    assert_eq!(app.order(id).await, refunded);
    assert_eq!(
        app.notifications().await[0].reason_code.map(|r| r.code()),
        Some("refund_already_settled")
    );
}

#[tokio::test]
async fn a_dropped_notice_is_resent_on_wechats_schedule_until_acknowledged() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = create_wechat_order(&app, "wx-drop-1", 500).await;
    let id = order["id"].as_str().unwrap();
    set_faults(
        &app,
        &format!("/sandbox/wechat/faults/{id}"),
        json!({"drop_first": 3}),
    )
    .await;
    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;

    // 600× faster: 15 s, 15 s and 30 s become 25, 25 and 50 ms.
    let mut attempts = app.drive_sandbox().await;
    for step in &RETRY_SCHEDULE[..3] {
        assert_eq!(app.order(id).await["status"], "pending");
        app.clock.advance(*step / 600);
        attempts += app.drive_sandbox().await;
    }

    assert_eq!(attempts, 4);
    assert_eq!(app.order(id).await["status"], "paid");
    assert_eq!(deliveries(&app, id).await[0].attempts, 4);
}

#[tokio::test]
async fn a_notice_that_never_verifies_is_retried_sixteen_times_and_never_pays() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = create_wechat_order(&app, "wx-bad-1", 500).await;
    let id = order["id"].as_str().unwrap();
    set_faults(&app, "/sandbox/wechat/faults", json!({"bad_signature": true})).await;
    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;

    let mut attempts = app.drive_sandbox().await;
    for _ in 0..200 {
        app.clock.advance(Duration::minutes(1));
        attempts += app.drive_sandbox().await;
    }

    assert_eq!(attempts, 16, "one delivery and WeChat's fifteen resends");
    assert_eq!(app.order(id).await["status"], "pending");
    let d = &deliveries(&app, id).await[0];
    assert_eq!((d.status.as_str(), d.attempts), ("failed", 16));
    assert!(d.last_response.as_deref().unwrap().contains("HTTP 401"), "{d:?}");
    let notes = app.notifications().await;
    assert!(notes
        .iter()
        .all(|n| n.reason_code.map(|r| r.code()) == Some("bad_signature")));
}

#[tokio::test]
async fn each_wechat_fault_switch_is_refused_with_its_reason_and_duplicates_apply_once() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    for (faults, reason) in [
        (json!({"stale_timestamp": true}), "stale_timestamp"),
        (json!({"tamper_amount": true}), "amount_mismatch"),
    ] {
        let order = create_wechat_order(&app, &format!("wx-fault-{reason}"), 700).await;
        let id = order["id"].as_str().unwrap();
        set_faults(&app, &format!("/sandbox/wechat/faults/{id}"), faults).await;
        app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
        assert_eq!(app.drive_sandbox().await, 1);
        assert_eq!(app.order(id).await["status"], "pending", "{reason}");
        assert_eq!(app.events(id).await.len(), 0, "{reason}");
        assert!(app.outbox(id).await.is_empty(), "{reason}");
        assert_eq!(
            app.notifications().await[0].reason_code.map(|r| r.code()),
            Some(reason)
        );
    }
    // Certificate mode: the sandbox signs with its platform certificate, which kassa
    // also holds (both modes, as during WeChat's switch): accepted. Twenty copies at
    // once still make one payment.
    let order = create_wechat_order(&app, "wx-fault-cert", 700).await;
    let id = order["id"].as_str().unwrap();
    set_faults(
        &app,
        &format!("/sandbox/wechat/faults/{id}"),
        json!({"certificate_mode": true, "duplicates": 20}),
    )
    .await;
    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    assert_eq!(app.drive_sandbox().await, 1);
    assert_eq!(app.order(id).await["status"], "paid");
    assert_eq!((app.events(id).await.len(), app.outbox(id).await.len()), (1, 1));
    let mine: Vec<_> = app
        .notifications()
        .await
        .into_iter()
        .filter(|n| n.order_id.as_ref().map(|o| o.as_str()) == Some(id))
        .collect();
    assert_eq!(mine.len(), 21);
    assert!(mine.iter().all(
        |n| serde_json::from_str::<Value>(&n.headers).unwrap()["wechatpay-serial"]
            == "5157F09EFDC096DE15EBE81A47057A7232FE1F5B"
    ));
    assert_eq!(mine.iter().filter(|n| n.verdict.as_str() == "applied").count(), 1);
}

#[tokio::test]
async fn an_unpaid_wechat_order_expires_closed_at_the_sandbox_and_then_locally() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = create_wechat_order(&app, "wx-expire-1", 800).await;
    let id = order["id"].as_str().unwrap();

    app.clock.advance(Duration::minutes(16));
    app.expiry().try_run_once(app.now()).await.unwrap();

    assert_eq!(app.order(id).await["status"], "closed");
    assert_eq!(trade(&app, id).await.status.as_str(), "TRADE_CLOSED");
    let wallet = app
        .client
        .get(order["qr_code"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!wallet.contains("/pay\""), "no Pay button once closed: {wallet}");
    assert!(
        deliveries(&app, id).await.is_empty(),
        "WeChat sends no close notice"
    );
}
