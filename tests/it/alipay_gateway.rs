//! kassa's Alipay client against a gateway stand-in the test owns: the bytes kassa
//! puts on the wire, and what a gateway that fails (a real HTTP 5xx, a real timeout)
//! leaves behind: nothing stored, nothing closed, nothing refunded.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use kassa::providers::alipay::client::AlipayClient;
use kassa::providers::alipay::AlipayProvider;
use kassa::providers::keys::{SigningKey, VerifyingKey};
use serde_json::{json, Value};

use crate::gateway_standin::{GatewayStandin, Reply};
use crate::helpers::{error_code, order_body, TestApp, ALIPAY_APP_ID};
use crate::oracle::{key, verify_request};
use crate::stored;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn precreated(qr: &str) -> Reply {
    Reply::Signed(json!({"code": "10000", "msg": "Success", "out_trade_no": "x", "qr_code": qr}))
}

fn waiting() -> Reply {
    Reply::Signed(
        json!({"code": "10000", "msg": "Success", "trade_status": "WAIT_BUYER_PAY",
        "total_amount": "1.00", "trade_no": "2027011522001"}),
    )
}

fn paid(total: &str) -> Reply {
    Reply::Signed(
        json!({"code": "10000", "msg": "Success", "trade_status": "TRADE_SUCCESS",
        "total_amount": total, "trade_no": "2027011522001", "send_pay_date": "2027-01-15 11:31:00"}),
    )
}

/// kassa with the test double as its provider, the double handing every call to a real
/// Alipay client for `gateway` whose calls give up after one second.
async fn spawn_with_short_timeout(gateway: &GatewayStandin) -> TestApp {
    let app = TestApp::spawn().await;
    let client = AlipayClient::new(
        ALIPAY_APP_ID.into(),
        gateway.url.clone(),
        SigningKey::from_pem(&key("alipay_app_private_pkcs8.pem")).unwrap(),
        VerifyingKey::from_pem(&key("alipay_platform_public.pem")).unwrap(),
        std::time::Duration::from_secs(1),
    )
    .unwrap();
    let real = AlipayProvider {
        client,
        clock: app.clock.clone(),
    };
    *app.provider.delegate.lock().unwrap() = Some(Arc::new(real));
    app
}

/// One request's parameters, query string and form body merged.
fn merged(call: &crate::gateway_standin::Call) -> std::collections::BTreeMap<String, String> {
    let mut all = call.query.clone();
    all.extend(call.form.clone());
    all
}

#[tokio::test]
async fn precreate_sends_the_deadline_from_the_app_clock_and_the_order_expiry() {
    let gateway = GatewayStandin::start().await;
    gateway.answer(precreated("https://qr.alipay.com/bax1"));
    let app = TestApp::spawn_alipay_via(&gateway, &[]).await;
    // Far from the real time, with milliseconds, so neither the machine's clock nor a
    // rounding up could produce the same values.
    app.clock.set(at("2027-01-15T03:30:20.250Z"));
    let mut body = order_body("wire-1", 1234);
    body["expires_in"] = json!(930);

    let response = app.post_order(&body).await;

    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["expires_at"], "2027-01-15T03:45:50.250Z");
    assert_eq!(order["qr_code"], "https://qr.alipay.com/bax1");
    let calls = gateway.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.query["method"], "alipay.trade.precreate");
    assert_eq!(call.query["app_id"], ALIPAY_APP_ID);
    assert_eq!(
        call.query["timestamp"], "2027-01-15 11:30:20",
        "the app clock in Beijing time"
    );
    assert_eq!(call.query["notify_url"], app.url("/notify/alipay"));
    assert_eq!(
        call.form.keys().collect::<Vec<_>>(),
        ["biz_content"],
        "common parameters go in the query, the business ones in the form"
    );
    let biz = call.biz();
    // 930 s is 15.5 minutes: rounded down, so Alipay never takes payment after kassa's deadline.
    assert_eq!(biz["timeout_express"], "15m");
    assert_eq!(biz["time_expire"], "2027-01-15 11:45:50");
    assert_eq!(biz["out_trade_no"], order["id"]);
    assert_eq!(biz["total_amount"], "12.34");
    assert_eq!(biz["subject"], "Jasmine tea 茉莉花茶");
    assert!(
        verify_request(&merged(call)),
        "python-alipay-sdk agrees with the signature"
    );

    // The shortest order kassa accepts still gives Alipay a whole minute, no more.
    app.clock.advance(Duration::seconds(7));
    let mut body = order_body("wire-2", 100);
    body["expires_in"] = json!(119);
    assert_eq!(app.post_order(&body).await.status(), 201);
    let biz = gateway.calls()[1].biz();
    assert_eq!(biz["timeout_express"], "1m");
    assert_eq!(biz["time_expire"], "2027-01-15 11:32:26");
}

#[tokio::test]
async fn precreate_answered_with_http_502_is_503_provider_unavailable_and_stores_nothing() {
    let gateway = GatewayStandin::start().await;
    gateway.answer(Reply::Status(502));
    let app = TestApp::spawn_alipay_via(&gateway, &[]).await;
    let before = stored::rows(&app).await;

    let (status, code, _) =
        error_code(app.post_order_with_key(&order_body("gw-502", 100), "k-502").await).await;

    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    assert_eq!(gateway.methods(), ["alipay.trade.precreate"]);
    assert_eq!(stored::rows(&app).await, before);
    // Nothing was kept, so the same request goes through once the gateway answers.
    gateway.answer(precreated("https://qr.alipay.com/bax2"));
    assert_eq!(
        app.post_order_with_key(&order_body("gw-502", 100), "k-502")
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn precreate_never_answered_times_out_as_503_provider_unavailable_and_stores_nothing() {
    let gateway = GatewayStandin::start().await;
    gateway.answer(Reply::Silence);
    let app = spawn_with_short_timeout(&gateway).await;
    let before = stored::rows(&app).await;

    let (status, code, _) = error_code(app.post_order(&order_body("gw-timeout", 100)).await).await;

    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    assert_eq!(gateway.methods(), ["alipay.trade.precreate"]);
    assert_eq!(
        gateway.given_up(1).await,
        1,
        "kassa gave up waiting: a real timeout"
    );
    assert_eq!(stored::rows(&app).await, before);
}

/// Creates an order through a gateway that answers, then has the gateway answer queries
/// "waiting for payment" and every close with `failure`; closing through the API and
/// expiring both must leave the order pending and unchanged.
async fn close_and_expiry_leave_the_order_pending(app: &TestApp, gateway: &GatewayStandin, failure: Reply) {
    gateway.answer(precreated("https://qr.alipay.com/bax3"));
    let order = app
        .create_order(&format!("gw-close-{}", crate::helpers::unique()), 100)
        .await;
    let id = order["id"].as_str().unwrap();
    gateway.answer(failure);
    gateway.answer_method("alipay.trade.query", waiting());
    let before = stored::rows(app).await;

    let (status, code, _) = error_code(app.post(&format!("/api/v1/orders/{id}/close")).await).await;

    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    assert_eq!(app.order(id).await["status"], "pending");
    assert_eq!(stored::rows(app).await, before, "the close changed nothing");

    app.clock.advance(Duration::minutes(16));
    let report = app.expiry().try_run_once(app.now()).await.unwrap();

    assert_eq!((report.closed, report.deferred), (0, 1));
    assert_eq!(app.order(id).await["status"], "pending");
    assert!(app.events(id).await.is_empty());
    assert!(app.outbox(id).await.is_empty());
    assert_eq!(
        gateway.methods(),
        [
            "alipay.trade.precreate",
            "alipay.trade.query",
            "alipay.trade.close",
            "alipay.trade.query",
            "alipay.trade.close"
        ]
    );
}

#[tokio::test]
async fn close_and_expiry_with_a_gateway_answering_http_503_leave_the_order_pending() {
    let gateway = GatewayStandin::start().await;
    let app = TestApp::spawn_alipay_via(&gateway, &[]).await;
    close_and_expiry_leave_the_order_pending(&app, &gateway, Reply::Status(503)).await;
}

#[tokio::test]
async fn close_and_expiry_with_a_gateway_that_never_answers_leave_the_order_pending() {
    let gateway = GatewayStandin::start().await;
    let app = spawn_with_short_timeout(&gateway).await;
    close_and_expiry_leave_the_order_pending(&app, &gateway, Reply::Silence).await;
    assert_eq!(gateway.given_up(2).await, 2, "both closes timed out");
}

/// Pays an order (a close finds it paid at the gateway), then has the gateway answer
/// refunds and refund queries with `failure`: the refund must stay pending, holding its
/// amount, and the order keep all its money.
async fn a_refund_stays_pending(app: &TestApp, gateway: &GatewayStandin, failure: Reply) {
    gateway.answer(precreated("https://qr.alipay.com/bax4"));
    let order = app
        .create_order(&format!("gw-refund-{}", crate::helpers::unique()), 1000)
        .await;
    let id = order["id"].as_str().unwrap();
    gateway.answer_method("alipay.trade.query", paid("10.00"));
    let (status, code, _) = error_code(app.post(&format!("/api/v1/orders/{id}/close")).await).await;
    assert_eq!((status, code.as_str()), (409, "order_paid"));
    gateway.answer(failure);

    let response = app
        .client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 300, "reason": "broken cup"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 201);
    let refund: Value = response.json().await.unwrap();
    assert_eq!(refund["status"], "pending");
    let now = app.order(id).await;
    assert_eq!(
        (now["status"].as_str(), now["refunded_amount"].as_i64()),
        (Some("paid"), Some(0))
    );
    let kinds: Vec<String> = app
        .outbox(id)
        .await
        .into_iter()
        .map(|e| e.event_type.to_string())
        .collect();
    assert_eq!(kinds, ["order.paid"], "no refund event");
    let calls = gateway.calls();
    let methods: Vec<&str> = calls.iter().map(|c| c.method()).collect();
    assert_eq!(
        methods[2..],
        ["alipay.trade.refund", "alipay.trade.fastpay.refund.query"]
    );
    assert_eq!(calls[2].biz()["out_request_no"], refund["id"]);
    assert_eq!(calls[2].biz()["refund_amount"], "3.00");
    // The pending refund holds its amount against the balance.
    let (status, code, _) = error_code(
        app.client
            .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
            .bearer_auth(&app.api_key)
            .json(&json!({"amount": 701, "reason": "too much"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "refund_exceeds_balance"));
}

#[tokio::test]
async fn a_refund_the_gateway_answers_with_http_500_stays_pending() {
    let gateway = GatewayStandin::start().await;
    let app = TestApp::spawn_alipay_via(&gateway, &[]).await;
    a_refund_stays_pending(&app, &gateway, Reply::Status(500)).await;
}

#[tokio::test]
async fn a_refund_the_gateway_never_answers_stays_pending() {
    let gateway = GatewayStandin::start().await;
    let app = spawn_with_short_timeout(&gateway).await;
    a_refund_stays_pending(&app, &gateway, Reply::Silence).await;
    assert_eq!(gateway.given_up(2).await, 2, "the refund and its query timed out");
}
