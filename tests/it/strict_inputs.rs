//! Inputs kassa used to take leniently and now refuses (or, for the `Authorization`
//! scheme, takes as the RFC says): each through the real app, each refusal shown to
//! change nothing stored and to leave the provider unasked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kassa::domain::{Currency, Order, ProviderKind};
use kassa::providers::{
    CreatedPayment, PaymentRequest, Provider, ProviderFuture, RefundOutcome, RefundRequest, RefundState,
    TradeState,
};
use serde_json::{json, Value};

use crate::fake_provider::FakeProvider;
use crate::helpers::{error_code, order_body, trade_success, TestApp, ALIPAY_APP_ID, ALIPAY_SELLER_ID};
use crate::oracle::signed_notification;
use crate::stored;

const NO_CALLS: [usize; 5] = [0, 0, 0, 0, 0];

async fn post_raw(app: &TestApp, path: &str, content_type: Option<&str>, body: String) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.api_key)
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_body_not_sent_as_application_json_is_415_and_creates_no_order_and_no_refund() {
    let app = TestApp::spawn().await;
    let order = app.create_order("ct-existing", 500).await;
    let refunds = format!("/api/v1/orders/{}/refunds", order["id"].as_str().unwrap());
    let before = stored::rows(&app).await;
    let calls = app.provider.calls();

    let order_json = order_body("ct-1", 100).to_string();
    let refund_json = json!({"amount": 100, "reason": "broken cup"}).to_string();
    for content_type in [
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonp"),
        None,
    ] {
        for (path, body) in [("/api/v1/orders", &order_json), (refunds.as_str(), &refund_json)] {
            let response = post_raw(&app, path, content_type, body.clone()).await;
            let (status, code, _) = error_code(response).await;
            assert_eq!(
                (status, code.as_str()),
                (415, "unsupported_media_type"),
                "{path} as {content_type:?}"
            );
        }
    }

    assert_eq!(stored::rows(&app).await, before, "no order, no refund, no key");
    assert_eq!(app.provider.calls(), calls, "the provider was not asked");
    assert_eq!(calls, [1, 0, 0, 0, 0]);
    // JSON with parameters and in another case is JSON.
    let accepted = post_raw(
        &app,
        "/api/v1/orders",
        Some("Application/JSON; charset=UTF-8"),
        order_json,
    )
    .await;
    assert_eq!(accepted.status(), 201);
}

#[tokio::test]
async fn a_json_body_naming_a_key_twice_at_any_depth_is_400_malformed_json_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let before = stored::rows(&app).await;
    let head = r#""out_trade_no": "dup-keys", "subject": "Tea", "provider": "alipay""#;
    let bodies = [
        format!(r#"{{{head}, "amount": 100, "amount": 1}}"#),
        // The same key written with an escape is the same key.
        format!(r#"{{{head}, "amount": 100, "\u0061mount": 1}}"#),
        format!(r#"{{{head}, "amount": 100, "metadata": {{"cart": 1, "cart": 2}}}}"#),
        format!(r#"{{{head}, "amount": 100, "metadata": {{"a": [{{"b": {{"c": 1, "c": 1}}}}]}}}}"#),
    ];
    for body in &bodies {
        let response = post_raw(&app, "/api/v1/orders", Some("application/json"), body.clone()).await;
        let (status, code, error) = error_code(response).await;
        assert_eq!((status, code.as_str()), (400, "malformed_json"), "{body}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("duplicate key"), "{body}: {message}");
    }

    assert_eq!(stored::rows(&app).await, before);
    assert_eq!(app.provider.calls(), NO_CALLS);
    // One name in two different objects is no repetition.
    let fine = format!(r#"{{{head}, "amount": 100, "metadata": {{"a": {{"x": 1}}, "b": {{"x": 1}}}}}}"#);
    let created = post_raw(&app, "/api/v1/orders", Some("application/json"), fine).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["amount"], 100);
}

#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_case_and_other_schemes_still_change_nothing() {
    let app = TestApp::spawn().await;
    let before = stored::rows(&app).await;
    for refused in [
        format!("Basic {}", app.api_key),
        format!("Bearer{}", app.api_key),
        format!("Bearers {}", app.api_key),
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/orders"))
            .header("authorization", &refused)
            .json(&order_body("scheme-refused", 100))
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_code(response).await;
        assert_eq!((status, code.as_str()), (401, "unauthorized"), "{refused}");
    }
    assert_eq!(stored::rows(&app).await, before);
    assert_eq!(app.provider.calls(), NO_CALLS);

    for (i, scheme) in ["BEARER", "bearer", "bEaReR"].into_iter().enumerate() {
        let listed = app
            .client
            .get(app.url("/api/v1/orders"))
            .header("authorization", format!("{scheme} {}", app.api_key))
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200, "{scheme}");
        let created = app
            .client
            .post(app.url("/api/v1/orders"))
            .header("authorization", format!("{scheme} {}", app.api_key))
            .json(&order_body(&format!("scheme-{i}"), 100))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201, "{scheme}");
    }
    assert_eq!(app.provider.calls(), [3, 0, 0, 0, 0]);
}

/// `metadata` nesting `levels` objects.
fn nested_metadata(levels: usize) -> String {
    format!("{}{{}}{}", r#"{"k":"#.repeat(levels - 1), "}".repeat(levels - 1))
}

fn body_with_metadata(out_trade_no: &str, metadata: &str) -> String {
    format!(
        r#"{{"out_trade_no": "{out_trade_no}", "amount": 100, "subject": "Tea", "provider": "alipay", "metadata": {metadata}}}"#
    )
}

#[tokio::test]
async fn valid_json_nested_deeper_than_the_limit_is_refused_as_too_deep_naming_the_limit() {
    let app = TestApp::spawn().await;
    let before = stored::rows(&app).await;
    for levels in [127, 64] {
        let body = body_with_metadata("deep", &nested_metadata(levels));
        let response = post_raw(&app, "/api/v1/orders", Some("application/json"), body).await;
        let (status, code, error) = error_code(response).await;
        let message = error["error"]["message"].as_str().unwrap();
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_request"),
            "{levels}: {message}"
        );
        assert!(message.contains("too deep"), "{levels}: {message}");
        assert!(message.contains("at most 64"), "{levels}: {message}");
        assert!(!message.contains("not valid JSON"), "{levels}: {message}");
    }
    assert_eq!(stored::rows(&app).await, before);
    assert_eq!(app.provider.calls(), NO_CALLS);

    // At the limit: the body is level 1, so metadata may nest 63.
    let body = body_with_metadata("deep-ok", &nested_metadata(63));
    let created = post_raw(&app, "/api/v1/orders", Some("application/json"), body).await;
    assert_eq!(created.status(), 201);
}

/// A port nothing listens on: a gateway that refuses connections.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn assert_reason_only(text: &str, gateway: &str) {
    for leak in [
        "notify_url",
        "sign=",
        "sign_type",
        "app_id",
        "biz_content",
        "http://",
        gateway,
    ] {
        assert!(!text.contains(leak), "{leak:?} in {text:?}");
    }
}

#[tokio::test]
async fn an_unreachable_alipay_gateway_is_503_giving_the_reason_without_the_gateway_url_anywhere_stored() {
    let keys = format!("{}/tests/vectors/keys", env!("CARGO_MANIFEST_DIR"));
    let app_key = format!("{keys}/alipay_app_private_pkcs1.pem");
    let ali_key = format!("{keys}/alipay_platform_public.pem");
    let gateway_address = format!("127.0.0.1:{}", closed_port());
    let gateway = format!("http://{gateway_address}/gateway.do");
    let app = TestApp::spawn_with_settings(&[
        ("KASSA_ALIPAY_APP_ID", ALIPAY_APP_ID),
        ("KASSA_ALIPAY_APP_PRIVATE_KEY_FILE", &app_key),
        ("KASSA_ALIPAY_ALIPAY_PUBLIC_KEY_FILE", &ali_key),
        ("KASSA_ALIPAY_GATEWAY", &gateway),
        ("KASSA_ALIPAY_SELLER_ID", ALIPAY_SELLER_ID),
    ])
    .await;
    let before = stored::rows(&app).await;

    let (status, code, error) = error_code(app.post_order(&order_body("unreachable", 100)).await).await;

    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot connect"), "{message}");
    assert_reason_only(message, &gateway_address);
    assert_eq!(
        stored::rows(&app).await,
        before,
        "a failed creation stores nothing"
    );

    // A close asks the gateway first; its failure is answered and logged.
    let id = app.insert_order("unreachable-close", 100).await;
    let order = app.order(&id).await;
    let before = stored::rows(&app).await;
    let (status, code, error) = error_code(app.post(&format!("/api/v1/orders/{id}/close")).await).await;
    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    assert_reason_only(error["error"]["message"].as_str().unwrap(), &gateway_address);
    assert_eq!(stored::rows(&app).await, before, "the order is untouched");
    assert_eq!(app.order(&id).await, order);
    let conn = app.db().clone();
    let details: Vec<String> = conn
        .prepare("SELECT outcome || ' ' || coalesce(detail, '') FROM provider_calls WHERE order_id = ?1")
        .unwrap()
        .query_map([&id], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(details[0].starts_with("unknown "), "{details:?}");
    assert!(details[0].contains("cannot connect"), "{details:?}");
    assert_reason_only(&details[0], &gateway_address);
}

/// A provider whose first payment stays unanswered until `open` is set; later ones are
/// answered at once. It stands behind `FakeProvider`, which counts every call.
struct FirstCallWaits {
    first: AtomicBool,
    entered: tokio::sync::Notify,
    open: tokio::sync::Semaphore,
}

impl Provider for FirstCallWaits {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Alipay
    }

    fn create_payment<'a>(&'a self, request: &'a PaymentRequest) -> ProviderFuture<'a, CreatedPayment> {
        Box::pin(async move {
            if !self.first.swap(true, Ordering::SeqCst) {
                self.entered.notify_one();
                let _permit = self.open.acquire().await.unwrap();
            }
            Ok(CreatedPayment {
                qr_code: FakeProvider::qr_for(request.order_id.as_str()),
            })
        })
    }

    fn query<'a>(&'a self, _: &'a Order) -> ProviderFuture<'a, TradeState> {
        Box::pin(async { Ok(TradeState::NotPaid) })
    }

    fn close<'a>(&'a self, _: &'a Order) -> ProviderFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn refund<'a>(&'a self, _: &'a Order, _: &'a RefundRequest) -> ProviderFuture<'a, RefundOutcome> {
        Box::pin(async { Ok(RefundOutcome::Processing) })
    }

    fn query_refund<'a>(&'a self, _: &'a Order, _: &'a str) -> ProviderFuture<'a, RefundState> {
        Box::pin(async { Ok(RefundState::NotFound) })
    }

    fn currencies(&self) -> &'static [Currency] {
        &[Currency::Cny]
    }
}

#[tokio::test]
async fn requests_with_a_key_whose_first_request_is_in_flight_are_409_in_progress_and_the_provider_is_asked_once(
) {
    let app = TestApp::spawn().await;
    let gate = Arc::new(FirstCallWaits {
        first: AtomicBool::new(false),
        entered: tokio::sync::Notify::new(),
        open: tokio::sync::Semaphore::new(0),
    });
    *app.provider.delegate.lock().unwrap() = Some(gate.clone());
    let body = order_body("in-flight", 700);
    let send = |body: &Value| {
        let request = app
            .client
            .post(app.url("/api/v1/orders"))
            .bearer_auth(&app.api_key)
            .header("Idempotency-Key", "key-in-flight")
            .json(body);
        async move { request.send().await.unwrap() }
    };
    let first = tokio::spawn(send(&body));
    gate.entered.notified().await;
    let before = stored::rows(&app).await;
    assert_eq!(before["idempotency_keys"].len(), 1, "the key is claimed");
    assert_eq!(before["orders"].len(), 0);

    let concurrent: Vec<_> = (0..6).map(|_| tokio::spawn(send(&body))).collect();
    for handle in concurrent {
        let (status, code, _) = error_code(handle.await.unwrap()).await;
        assert_eq!((status, code.as_str()), (409, "idempotency_key_in_progress"));
    }
    let (status, code, _) = error_code(send(&order_body("in-flight-other", 1)).await).await;
    assert_eq!((status, code.as_str()), (409, "idempotency_key_conflict"));
    assert_eq!(stored::rows(&app).await, before, "the refusals stored nothing");
    assert_eq!(
        app.provider.calls(),
        [1, 0, 0, 0, 0],
        "the provider was asked once"
    );

    gate.open.add_permits(1);
    let first = first.await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send(&body).await;
    assert_eq!(again.status(), 201);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"], "the same order, replayed");
    assert_eq!(app.provider.calls(), [1, 0, 0, 0, 0]);
    let rows = stored::rows(&app).await;
    assert_eq!((rows["orders"].len(), rows["idempotency_keys"].len()), (1, 1));
}

#[tokio::test]
async fn a_key_whose_request_failed_at_the_provider_is_free_again_for_the_retry() {
    let app = TestApp::spawn().await;
    *app.provider.create_error.lock().unwrap() = Some(app.provider.unknown());
    let before = stored::rows(&app).await;

    let (status, code, _) = error_code(
        app.post_order_with_key(&order_body("retry", 100), "key-retry")
            .await,
    )
    .await;

    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    assert_eq!(
        stored::rows(&app).await,
        before,
        "no order and no claim left behind"
    );
    *app.provider.create_error.lock().unwrap() = None;
    let retried = app
        .post_order_with_key(&order_body("retry", 100), "key-retry")
        .await;
    assert_eq!(retried.status(), 201);
    assert_eq!(app.provider.calls(), [2, 0, 0, 0, 0]);
}

#[tokio::test]
async fn alipay_notifications_are_read_only_as_forms_and_other_content_types_are_stored_rejected() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("notify-ct", 1234).await;
    let body = signed_notification(&trade_success(&id, "12.34"));
    let order = app.order(&id).await;
    let post = |content_type: Option<&'static str>| {
        let mut request = app.client.post(app.url("/notify/alipay")).body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    let refused = [
        Some("text/plain"),
        Some("application/json"),
        Some("multipart/form-data; boundary=x"),
        None,
    ];
    for content_type in refused {
        assert_eq!(
            post(content_type).await,
            (200, "failure".to_owned()),
            "{content_type:?}"
        );
    }

    assert_eq!(app.order(&id).await, order, "still pending");
    assert!(app.events(&id).await.is_empty());
    assert!(app.outbox(&id).await.is_empty());
    let stored = app.notifications().await;
    assert_eq!(stored.len(), refused.len());
    for n in &stored {
        assert_eq!(n.verdict.as_str(), "rejected");
        assert_eq!(
            n.reason_code.as_ref().map(|r| r.code()),
            Some("unsupported_content_type")
        );
        assert_eq!(n.body, body, "stored as received");
        assert!(
            n.reason.as_deref().is_some_and(|r| r.contains("Content-Type")),
            "{:?}",
            n.reason
        );
    }

    // What Alipay sends, with or without a charset and in any case, is read.
    assert_eq!(
        post(Some("Application/X-WWW-Form-Urlencoded")).await,
        (200, "success".to_owned())
    );
    assert_eq!(app.order(&id).await["status"], "paid");
    assert_eq!(
        post(Some("application/x-www-form-urlencoded; charset=utf-8")).await,
        (200, "success".to_owned()),
        "a resend is a duplicate, acknowledged"
    );
}

#[tokio::test]
async fn an_unreachable_wechat_api_is_503_giving_the_reason_without_the_api_url() {
    let api_address = format!("127.0.0.1:{}", closed_port());
    let api_base = format!("http://{api_address}");
    let app = crate::notify_wechat::spawn_wechat(&[("KASSA_WECHAT_API_BASE", &api_base)]).await;
    let before = stored::rows(&app).await;
    let mut body = order_body("wx-unreachable", 100);
    body["provider"] = json!("wechat");

    let (status, code, error) = error_code(app.post_order(&body).await).await;

    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("cannot connect"), "{message}");
    assert_reason_only(message, &api_address);
    assert_eq!(
        stored::rows(&app).await,
        before,
        "a failed creation stores nothing"
    );
}
