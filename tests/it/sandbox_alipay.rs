//! The whole flow against the built-in sandbox over real HTTP: kassa's Alipay client
//! talks to the simulated gateway, the wallet page pays, the simulated notifier
//! delivers signed notifications to kassa's notify endpoint.

use chrono::Duration;
use kassa::db::sandbox as store;
use kassa::jobs::expiry::ExpiryReport;
use kassa::sandbox::SANDBOX_APP_ID;
use serde_json::{json, Value};

use crate::helpers::{trade_success, TestApp};
use crate::oracle::{key, oracle, signed_notification, verify_notification};
use crate::receiver::Receiver;

const SCALE: &[(&str, &str)] = &[("KASSA_SANDBOX_TIME_SCALE", "600")];

async fn deliveries(app: &TestApp, order_id: &str) -> Vec<store::Delivery> {
    let id = order_id.to_owned();
    app.core
        .db
        .read(move |c| store::list_deliveries(c, &id))
        .await
        .unwrap()
}

async fn set_faults(app: &TestApp, path: &str, faults: Value) {
    let r = app.client.post(app.url(path)).json(&faults).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Runs the notifier, moving the clock forward a minute at a time (600× faster than
/// Alipay's schedule), until nothing more can happen.
async fn drive_until_quiet(app: &TestApp, minutes: i64) -> usize {
    let mut attempts = app.drive_sandbox().await;
    for _ in 0..minutes {
        app.clock.advance(Duration::minutes(1));
        attempts += app.drive_sandbox().await;
    }
    attempts
}

#[tokio::test]
async fn create_precreate_pay_in_the_wallet_notify_and_the_order_is_paid() {
    let app = TestApp::spawn_sandbox(SCALE).await;

    let order = app.create_order("flow-1", 1234).await;
    let id = order["id"].as_str().unwrap();
    let qr = order["qr_code"].as_str().unwrap();
    assert!(qr.starts_with(&app.url("/sandbox/wallet/")), "{qr}");
    let wallet = app.client.get(qr).send().await.unwrap().text().await.unwrap();
    assert!(
        wallet.contains("¥12.34") && wallet.contains("Jasmine tea 茉莉花茶") && wallet.contains("My Shop"),
        "{wallet}"
    );
    app.pay_in_wallet(qr).await;
    assert_eq!(app.drive_sandbox().await, 1);

    let paid = app.order(id).await;
    assert_eq!(paid["status"], "paid");
    assert!(paid["provider_trade_no"].as_str().is_some_and(|t| t.len() > 20));
    assert_eq!(app.events(id).await.len(), 1);
    let outbox = app.outbox(id).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].event_type.as_str(), "order.paid");
    assert_eq!(deliveries(&app, id).await[0].status.as_str(), "delivered");
    let notes = app.notifications().await;
    assert_eq!((notes.len(), notes[0].verdict.as_str()), (1, "applied"));
    // Like Alipay, the sandbox never sends an empty parameter.
    let sent: Vec<(String, String)> = url::form_urlencoded::parse(notes[0].body.as_bytes())
        .into_owned()
        .collect();
    assert!(sent.iter().all(|(_, v)| !v.is_empty()), "{sent:?}");
    assert!(sent.iter().any(|(k, _)| k == "notify_id") && sent.iter().any(|(k, _)| k == "sign"));
}

#[tokio::test]
async fn drop_first_three_still_ends_paid_on_alipays_retry_schedule() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = app.create_order("drop-3", 500).await;
    let id = order["id"].as_str().unwrap();
    set_faults(
        &app,
        &format!("/sandbox/alipay/faults/{id}"),
        json!({"drop_first": 3}),
    )
    .await;

    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    assert_eq!(app.drive_sandbox().await, 1, "first attempt dropped");
    assert_eq!(app.order(id).await["status"], "pending");
    // 4m, 10m, 10m at 600x: 0.4 s, 1 s, 1 s.
    app.clock.advance(Duration::milliseconds(400));
    app.drive_sandbox().await;
    app.clock.advance(Duration::seconds(1));
    app.drive_sandbox().await;
    assert_eq!(app.order(id).await["status"], "pending");
    app.clock.advance(Duration::seconds(1));
    app.drive_sandbox().await;

    assert_eq!(app.order(id).await["status"], "paid");
    let d = &deliveries(&app, id).await[0];
    assert_eq!((d.attempts, d.status.as_str()), (4, "delivered"));
}

#[tokio::test]
async fn a_tampered_amount_never_pays_and_alipay_gives_up_after_eight_attempts() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    set_faults(&app, "/sandbox/alipay/faults", json!({"tamper_amount": true})).await;
    let order = app.create_order("tamper-1", 1234).await;
    let id = order["id"].as_str().unwrap();

    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    let attempts = drive_until_quiet(&app, 10).await;

    assert_eq!(attempts, 8);
    assert_eq!(app.order(id).await["status"], "pending");
    let notes = app.notifications().await;
    assert_eq!(notes.len(), 8);
    assert!(notes.iter().all(
        |n| n.verdict.as_str() == "rejected" && n.reason.as_deref().unwrap().contains("amount mismatch")
    ));
    assert_eq!(deliveries(&app, id).await[0].status.as_str(), "failed");
    assert!(app.events(id).await.is_empty());
}

#[tokio::test]
async fn bad_signatures_are_rejected_and_duplicates_apply_once() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let forged = app.create_order("badsig-1", 100).await;
    let copied = app.create_order("dups-1", 100).await;
    let (forged_id, copied_id) = (forged["id"].as_str().unwrap(), copied["id"].as_str().unwrap());
    set_faults(
        &app,
        &format!("/sandbox/alipay/faults/{forged_id}"),
        json!({"bad_signature": true}),
    )
    .await;
    set_faults(
        &app,
        &format!("/sandbox/alipay/faults/{copied_id}"),
        json!({"duplicates": 9}),
    )
    .await;

    app.pay_in_wallet(forged["qr_code"].as_str().unwrap()).await;
    app.pay_in_wallet(copied["qr_code"].as_str().unwrap()).await;
    app.drive_sandbox().await;

    assert_eq!(app.order(forged_id).await["status"], "pending");
    assert_eq!(app.order(copied_id).await["status"], "paid");
    assert_eq!(app.events(copied_id).await.len(), 1);
    assert_eq!(app.outbox(copied_id).await.len(), 1);
    let notes = app.notifications().await;
    let of = |id: &str, verdict: &str| {
        notes
            .iter()
            .filter(|n| n.order_id.as_ref().map(|o| o.as_str()) == Some(id) && n.verdict.as_str() == verdict)
            .count()
    };
    assert_eq!((of(copied_id, "applied"), of(copied_id, "duplicate")), (1, 9));
    assert!(notes
        .iter()
        .any(|n| n.verdict.as_str() == "rejected" && n.reason.as_deref() == Some("bad signature")));
}

#[tokio::test]
async fn a_stale_trade_closed_after_payment_leaves_the_order_paid() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = app.create_order("ooo-1", 100).await;
    let id = order["id"].as_str().unwrap();
    set_faults(
        &app,
        &format!("/sandbox/alipay/faults/{id}"),
        json!({"out_of_order": true}),
    )
    .await;

    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    app.drive_sandbox().await;

    assert_eq!(deliveries(&app, id).await.len(), 2);
    assert_eq!(app.order(id).await["status"], "paid");
    assert_eq!(app.outbox(id).await.len(), 1);
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    set_faults(&app, "/sandbox/alipay/faults", json!({"delay_seconds": 600})).await;
    let order = app.create_order("restart-1", 100).await;
    let id = order["id"].as_str().unwrap().to_owned();
    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    assert_eq!(app.drive_sandbox().await, 0, "delayed");
    let later = app.now() + Duration::seconds(2);

    let app = app.restart().await;
    app.clock.set(later);
    assert_eq!(app.drive_sandbox().await, 1);

    assert_eq!(app.order(&id).await["status"], "paid");
}

#[tokio::test]
async fn an_order_nobody_scanned_expires_and_a_scanned_one_is_closed_at_the_sandbox() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let unscanned = app.create_order("exp-a", 100).await;
    let scanned = app.create_order("exp-b", 100).await;
    let scanned_id = scanned["id"].as_str().unwrap();
    app.client
        .get(scanned["qr_code"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    app.clock.advance(Duration::minutes(16));

    let report = app.expiry().try_run_once(app.now()).await.unwrap();

    assert_eq!(report.closed, 2);
    assert_eq!(
        app.order(unscanned["id"].as_str().unwrap()).await["status"],
        "closed"
    );
    assert_eq!(app.order(scanned_id).await["status"], "closed");
    let id = scanned_id.to_owned();
    let trade = app
        .core
        .db
        .read(move |c| store::find_trade(c, &id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(trade.status.as_str(), "TRADE_CLOSED");
    app.drive_sandbox().await;
    let notes = app.notifications().await;
    assert_eq!(
        notes[0].verdict.as_str(),
        "duplicate",
        "its TRADE_CLOSED notification changes nothing"
    );
    // The QR code no longer pays.
    let qr = scanned["qr_code"].as_str().unwrap();
    let csrf = crate::helpers::open_wallet(&app.client, qr).await;
    let pay = app
        .client
        .post(format!("{qr}/pay"))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(pay.status(), 303);
    assert_eq!(app.drive_sandbox().await, 0);
    assert_eq!(app.order(scanned_id).await["status"], "closed");
}

#[tokio::test]
async fn a_payment_whose_notifications_are_all_lost_is_found_by_the_late_check() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = app.create_order("lost-1", 100).await;
    let id = order["id"].as_str().unwrap();
    set_faults(
        &app,
        &format!("/sandbox/alipay/faults/{id}"),
        json!({"drop_first": 20}),
    )
    .await;
    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    app.drive_sandbox().await;
    assert_eq!(app.order(id).await["status"], "pending");

    let early = kassa::jobs::late_checks::try_run_once(&app.core, app.now())
        .await
        .unwrap();
    app.clock.advance(Duration::seconds(61));
    let due = kassa::jobs::late_checks::try_run_once(&app.core, app.now())
        .await
        .unwrap();

    assert_eq!(early.orders_checked, 0, "not before +1 min");
    assert_eq!((due.orders_checked, due.orders_paid), (1, 1));
    assert_eq!(app.order(id).await["status"], "paid");
    assert_eq!(app.events(id).await[0]["source"], "provider_query");
    let again = kassa::jobs::late_checks::try_run_once(&app.core, app.now())
        .await
        .unwrap();
    assert_eq!(again.orders_checked, 0, "paid orders are not checked again");
}

#[tokio::test]
async fn a_notification_racing_expiry_ends_as_exactly_one_payment() {
    for round in 0..4 {
        let app = TestApp::spawn_sandbox(SCALE).await;
        let order = app.create_order(&format!("race-{round}"), 1234).await;
        let id = order["id"].as_str().unwrap();
        app.clock.advance(Duration::minutes(16));
        let mut params = trade_success(id, "12.34");
        params["app_id"] = json!(SANDBOX_APP_ID);
        params["auth_app_id"] = json!(SANDBOX_APP_ID);
        let body = signed_notification(&params);
        let worker = app.expiry();

        let (reply, swept) = tokio::join!(app.post_alipay_notify(body), worker.try_run_once(app.now()));

        assert_eq!(reply, (200, "success".into()));
        let swept = swept.unwrap();
        let now = app.order(id).await;
        assert_eq!(now["status"], "paid", "round {round}");
        let events = app.events(id).await;
        let pays = events
            .iter()
            .filter(|e| e["transition"] == "pay" && e["outcome"] == "applied")
            .count();
        assert_eq!(pays, 1);
        // Either paid before the close was attempted, or closed first and paid late.
        let closed_first = events
            .iter()
            .any(|e| e["transition"] == "close" && e["outcome"] == "applied");
        assert_eq!(now["late_payment"].as_bool().unwrap(), closed_first);
        // The sweep closed the order exactly when the close won; it never found the
        // payment at the sandbox (nobody scanned) and never had to defer.
        assert_eq!(
            swept,
            ExpiryReport {
                closed: usize::from(closed_first),
                paid: 0,
                deferred: 0
            },
            "round {round}"
        );
    }
}

/// What the receiver got, as python-alipay-sdk's `verify()` reads it: every body must
/// verify with the sandbox's platform key.
fn verified_by_the_sdk(received: &[crate::receiver::Received]) -> Vec<serde_json::Map<String, Value>> {
    received
        .iter()
        .map(|r| {
            let (valid, params) = verify_notification(&r.body, "alipay_platform_public.pem");
            assert!(valid, "python-alipay-sdk rejects {}", r.body);
            assert!(
                params.values().all(|v| v.as_str().is_some_and(|v| !v.is_empty())),
                "no empty parameter: {params:?}"
            );
            params
        })
        .collect()
}

#[tokio::test]
async fn python_alipay_sdk_as_a_client_precreates_pays_refunds_and_closes_at_the_sandbox() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    // The SDK's trades notify this receiver, so their notifications reach a party
    // other than kassa.
    let shop = Receiver::start().await;
    let call = |method: &str, kwargs: Value, private: &str| {
        oracle(json!({
            "op": "call_gateway", "gateway": app.url("/sandbox/alipay/gateway.do"), "app_id": SANDBOX_APP_ID,
            "app_private_key": key(private), "alipay_public_key": key("alipay_platform_public.pem"),
            "method": method, "kwargs": kwargs,
        }))
    };
    let pkcs8 = "alipay_app_private_pkcs8.pem";

    let created = call(
        "api_alipay_trade_precreate",
        json!({"subject": "测试 tea", "out_trade_no": "py_1", "total_amount": "12.34", "timeout_express": "15m",
               "notify_url": shop.url}),
        pkcs8,
    );
    let unscanned = call(
        "api_alipay_trade_query",
        json!({"out_trade_no": "py_1"}),
        "alipay_app_private_pkcs1.pem",
    );
    let forged = call(
        "api_alipay_trade_query",
        json!({"out_trade_no": "py_1"}),
        "wechat_merchant_private_pkcs8.pem",
    );

    assert_eq!(created["result"]["code"], "10000", "{created}");
    let qr = created["result"]["qr_code"].as_str().unwrap().to_owned();
    assert!(qr.starts_with(&app.url("/sandbox/wallet/")), "{qr}");
    assert_eq!(
        unscanned["result"]["sub_code"], "ACQ.TRADE_NOT_EXIST",
        "not scanned yet: {unscanned}"
    );
    assert_eq!(forged["result"]["sub_code"], "isv.invalid-signature", "{forged}");

    app.pay_in_wallet(&qr).await;
    let queried = call("api_alipay_trade_query", json!({"out_trade_no": "py_1"}), pkcs8);
    assert_eq!(
        (
            queried["result"]["trade_status"].as_str(),
            queried["result"]["total_amount"].as_str()
        ),
        (Some("TRADE_SUCCESS"), Some("12.34")),
        "{queried}"
    );
    app.drive_sandbox().await;
    let paid = verified_by_the_sdk(&shop.received());
    assert_eq!(paid.len(), 1);
    assert_eq!(
        (
            paid[0]["out_trade_no"].as_str(),
            paid[0]["trade_status"].as_str(),
            paid[0]["total_amount"].as_str(),
            paid[0]["app_id"].as_str()
        ),
        (
            Some("py_1"),
            Some("TRADE_SUCCESS"),
            Some("12.34"),
            Some(SANDBOX_APP_ID)
        )
    );
    assert_eq!(paid[0]["trade_no"], queried["result"]["trade_no"]);

    let refunded = call(
        "api_alipay_trade_refund",
        json!({"refund_amount": "2.00", "out_trade_no": "py_1", "out_request_no": "r1"}),
        pkcs8,
    );
    assert_eq!(
        (
            refunded["result"]["code"].as_str(),
            refunded["result"]["fund_change"].as_str()
        ),
        (Some("10000"), Some("Y")),
        "{refunded}"
    );
    let found = call(
        "api_alipay_trade_fastpay_refund_query",
        json!({"out_request_no": "r1", "out_trade_no": "py_1"}),
        pkcs8,
    );
    assert_eq!(found["result"]["refund_amount"], "2.00", "{found}");
    app.drive_sandbox().await;
    let notices = verified_by_the_sdk(&shop.received());
    let refund_notice = notices
        .iter()
        .find(|p| p.contains_key("refund_fee"))
        .expect("a refund notice");
    assert_eq!(
        (
            refund_notice["refund_fee"].as_str(),
            refund_notice["out_biz_no"].as_str()
        ),
        (Some("2.00"), Some("r1"))
    );

    let second = call(
        "api_alipay_trade_precreate",
        json!({"subject": "second", "out_trade_no": "py_2", "total_amount": "1.00", "notify_url": shop.url}),
        pkcs8,
    );
    app.client
        .get(second["result"]["qr_code"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let closed = call("api_alipay_trade_close", json!({"out_trade_no": "py_2"}), pkcs8);
    assert_eq!(closed["result"]["code"], "10000", "{closed}");
    let after = call("api_alipay_trade_query", json!({"out_trade_no": "py_2"}), pkcs8);
    assert_eq!(after["result"]["trade_status"], "TRADE_CLOSED", "{after}");
    app.drive_sandbox().await;
    let all = verified_by_the_sdk(&shop.received());
    assert!(
        all.iter()
            .any(|p| p["out_trade_no"] == "py_2" && p["trade_status"] == "TRADE_CLOSED"),
        "{all:?}"
    );
}

#[tokio::test]
async fn python_alipay_sdk_verifies_the_notifications_the_sandbox_sent_to_kassa() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let sold = app.create_order("sdk-1", 1000).await;
    let sold_id = sold["id"].as_str().unwrap();
    let expiring = app.create_order("sdk-2", 100).await;
    let forged = app.create_order("sdk-3", 100).await;
    set_faults(
        &app,
        &format!("/sandbox/alipay/faults/{}", forged["id"].as_str().unwrap()),
        json!({"bad_signature": true}),
    )
    .await;
    app.pay_in_wallet(sold["qr_code"].as_str().unwrap()).await;
    app.pay_in_wallet(forged["qr_code"].as_str().unwrap()).await;
    app.client
        .get(expiring["qr_code"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    app.drive_sandbox().await;
    for amount in [300, 700] {
        let response = app
            .client
            .post(app.url(&format!("/api/v1/orders/{sold_id}/refunds")))
            .bearer_auth(&app.api_key)
            .json(&json!({"amount": amount, "reason": "r"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    app.clock.advance(Duration::minutes(16));
    app.expiry().try_run_once(app.now()).await.unwrap();
    app.drive_sandbox().await;

    // kassa stores each notification's body as received: what the sandbox sent.
    let notes = app.notifications().await;
    let mut kinds = Vec::new();
    for note in &notes {
        let (valid, params) = verify_notification(&note.body, "alipay_platform_public.pem");
        let forged_one = params["out_trade_no"] == forged["id"];
        assert_eq!(valid, !forged_one, "{}", note.body);
        assert_eq!(
            note.verdict.as_str() == "rejected",
            forged_one,
            "kassa agrees: {}",
            note.body
        );
        if valid {
            kinds.push((
                params["trade_status"].as_str().unwrap().to_owned(),
                params.contains_key("refund_fee"),
            ));
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("TRADE_CLOSED".to_owned(), false),
            ("TRADE_CLOSED".to_owned(), true),
            ("TRADE_SUCCESS".to_owned(), false),
            ("TRADE_SUCCESS".to_owned(), true),
        ],
        "a payment, a partial refund, the full refund and an expiry"
    );
}

#[tokio::test]
async fn per_order_fault_switches_replace_the_global_ones_entirely() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    set_faults(&app, "/sandbox/alipay/faults", json!({"tamper_amount": true})).await;
    let own = app.create_order("own-faults", 500).await;
    let global = app.create_order("global-faults", 500).await;
    let (own_id, global_id) = (own["id"].as_str().unwrap(), global["id"].as_str().unwrap());
    set_faults(
        &app,
        &format!("/sandbox/alipay/faults/{own_id}"),
        json!({"drop_first": 1}),
    )
    .await;

    app.pay_in_wallet(own["qr_code"].as_str().unwrap()).await;
    app.pay_in_wallet(global["qr_code"].as_str().unwrap()).await;
    app.drive_sandbox().await;
    assert_eq!(
        app.order(own_id).await["status"],
        "pending",
        "its first delivery dropped"
    );
    // Alipay's first resend comes 4 minutes later: 0.4 s at 600x.
    app.clock.advance(Duration::milliseconds(400));
    app.drive_sandbox().await;

    // The order's own switches replaced the global ones: dropped once, amount untouched.
    assert_eq!(app.order(own_id).await["status"], "paid");
    let own_delivery = &deliveries(&app, own_id).await[0];
    assert_eq!(
        (own_delivery.attempts, own_delivery.status.as_str()),
        (2, "delivered")
    );
    // The order without switches of its own got the global ones: a wrong amount.
    assert_eq!(app.order(global_id).await["status"], "pending");
    let notes = app.notifications().await;
    let verdicts = |id: &str| -> Vec<(String, String)> {
        notes
            .iter()
            .filter(|n| n.order_id.as_ref().map(|o| o.as_str()) == Some(id))
            .map(|n| (n.verdict.to_string(), n.reason.clone().unwrap_or_default()))
            .collect()
    };
    assert_eq!(verdicts(own_id), [("applied".to_owned(), String::new())]);
    let global_verdicts = verdicts(global_id);
    assert_eq!(global_verdicts.len(), 2, "{global_verdicts:?}");
    assert!(
        global_verdicts
            .iter()
            .all(|(v, why)| v == "rejected" && why.contains("amount mismatch")),
        "{global_verdicts:?}"
    );
}

#[tokio::test]
async fn cancelling_in_the_wallet_keeps_the_trade_payable_sends_nothing_and_leaves_the_order_pending() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = app.create_order("cancel-1", 100).await;
    let (id, qr) = (order["id"].as_str().unwrap(), order["qr_code"].as_str().unwrap());
    let csrf = crate::helpers::open_wallet(&app.client, qr).await;
    let before = crate::stored::rows(&app).await;

    let cancelled = app
        .client
        .post(format!("{qr}/cancel"))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();

    assert_eq!(cancelled.status(), 303);
    let location = cancelled.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.ends_with("?cancelled=1"), "{location}");
    assert_eq!(
        crate::stored::rows(&app).await,
        before,
        "no notification queued, the trade unchanged"
    );
    let page = app
        .client
        .get(app.url(&location))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Payment cancelled"), "{page}");
    assert!(page.contains("/pay\""), "still payable: {page}");
    let no = id.to_owned();
    let trade = app
        .core
        .db
        .read(move |c| store::find_trade(c, &no))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(trade.status.as_str(), "WAIT_BUYER_PAY");
    assert_eq!(app.drive_sandbox().await, 0, "nothing to deliver");
    assert!(app.notifications().await.is_empty());
    assert_eq!(app.order(id).await["status"], "pending");
    assert!(app.events(id).await.is_empty());

    // Changing one's mind after a cancel still pays.
    app.pay_in_wallet(qr).await;
    assert_eq!(app.drive_sandbox().await, 1);
    assert_eq!(app.order(id).await["status"], "paid");
}

#[tokio::test]
async fn a_gateway_refusal_is_a_502_with_the_platform_code_and_stores_nothing() {
    // App A runs the sandbox; app B is configured as a real Alipay merchant with an app
    // id the gateway does not know, pointing at A's gateway.
    let a = TestApp::spawn_sandbox(SCALE).await;
    let gateway = a.url("/sandbox/alipay/gateway.do");
    let keys = format!("{}/tests/vectors/keys", env!("CARGO_MANIFEST_DIR"));
    let (app_key, ali_key) = (
        format!("{keys}/alipay_app_private_pkcs8.pem"),
        format!("{keys}/alipay_platform_public.pem"),
    );
    let b = TestApp::spawn_with_settings(&[
        ("KASSA_ALIPAY_APP_ID", "2021000000009999"),
        ("KASSA_ALIPAY_APP_PRIVATE_KEY_FILE", &app_key),
        ("KASSA_ALIPAY_ALIPAY_PUBLIC_KEY_FILE", &ali_key),
        ("KASSA_ALIPAY_GATEWAY", &gateway),
    ])
    .await;

    let (status, code, body) =
        crate::helpers::error_code(b.post_order(&crate::helpers::order_body("gw-1", 100)).await).await;

    assert_eq!((status, code.as_str()), (502, "provider_rejected"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("isv.invalid-app-id"),
        "{body}"
    );
    let listed: Value = b.get("/api/v1/orders").await.json().await.unwrap();
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test]
async fn the_wallet_page_sets_fault_switches_and_refuses_bad_ones() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = app.create_order("form-1", 100).await;
    let (id, qr) = (order["id"].as_str().unwrap(), order["qr_code"].as_str().unwrap());
    let csrf = crate::helpers::open_wallet(&app.client, qr).await;

    let saved = app
        .client
        .post(format!("{qr}/faults"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("drop_first", "2"),
            ("duplicates", "1"),
            ("bad_signature", "on"),
        ])
        .send()
        .await
        .unwrap();
    let refused = app
        .client
        .post(format!("{qr}/faults"))
        .form(&[("csrf", csrf.as_str()), ("drop_first", "many")])
        .send()
        .await
        .unwrap();

    assert_eq!(saved.status(), 303);
    assert_eq!(refused.status(), 422);
    let faults: Value = app
        .client
        .get(app.url(&format!("/sandbox/alipay/faults/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        faults,
        json!({"delay_seconds": 0, "duplicates": 1, "drop_first": 2, "tamper_amount": false,
        "bad_signature": true, "out_of_order": false, "stale_timestamp": false, "certificate_mode": false})
    );
    let bad_json = app
        .client
        .post(app.url("/sandbox/alipay/faults"))
        .json(&json!({"duplicates": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 422);
    let unknown = app
        .client
        .post(app.url("/sandbox/alipay/faults"))
        .json(&json!({"explode": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 422);
    let missing = app
        .client
        .get(app.url("/sandbox/wallet/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn with_the_sandbox_off_its_pages_are_not_found() {
    let app = TestApp::spawn_alipay(&[]).await;
    for path in ["/sandbox/wallet/x", "/sandbox/alipay/faults"] {
        assert_eq!(
            app.client.get(app.url(path)).send().await.unwrap().status(),
            404,
            "{path}"
        );
    }
    let gateway = app
        .client
        .post(app.url("/sandbox/alipay/gateway.do"))
        .body("x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(gateway.status(), 404);
}

/// A shop whose every answer takes 40 s of the app's clock and is a refusal.
fn slow_refusing_shop(clock: std::sync::Arc<kassa::domain::clock::FixedClock>) -> String {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    let server = HttpServer::new(move || {
        let clock = clock.clone();
        App::new().default_service(web::to(move || {
            clock.advance(Duration::seconds(40));
            async { HttpResponse::ServiceUnavailable().body("busy") }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    url
}

#[tokio::test]
async fn each_notice_of_a_pass_is_claimed_and_rescheduled_at_the_time_it_is_sent_not_at_the_pass_start() {
    let app = TestApp::spawn_sandbox(&[]).await;
    let url = slow_refusing_shop(app.clock.clone());
    let start = app.now();
    let queued = url.clone();
    app.core
        .db
        .write(move |c| {
            for no in ["slow-1", "slow-2"] {
                store::enqueue_delivery(c, no, &queued, "{}", "{}", start, start)?;
            }
            Ok(())
        })
        .await
        .unwrap();

    let sandbox = app.sandbox.as_deref().unwrap();
    let report = kassa::sandbox::alipay::notifier::try_run_once(sandbox, start)
        .await
        .unwrap();

    assert_eq!(report.attempted, 2);
    let conn = app.db().clone();
    let next: Vec<(String, i64, i64)> = conn
        .prepare("SELECT out_trade_no, next_at, attempts FROM sandbox_deliveries ORDER BY id")
        .unwrap()
        .query_map(crate::vals![], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let first_retry = kassa::sandbox::alipay::notifier::RETRY_SCHEDULE[0];
    // The second notice went out after the first had taken 40 s: its retry counts from then.
    assert_eq!(
        next,
        vec![
            ("slow-1".into(), (start + first_retry).timestamp_millis(), 1),
            (
                "slow-2".into(),
                (start + Duration::seconds(40) + first_retry).timestamp_millis(),
                1
            ),
        ]
    );
}
