//! The merchant JSON API through HTTP.

use std::sync::atomic::Ordering;

use chrono::DateTime;
use kassa::domain::ProviderKind;
use kassa::providers::{PaymentFacts, ProviderError, TradeState};
use serde_json::{json, Value};

use crate::helpers::{error_code, order_body, TestApp};
use crate::stored;

#[tokio::test]
async fn creating_an_order_returns_it_with_the_providers_qr_code_and_stores_it() {
    let app = TestApp::spawn().await;

    let response = app.post_order(&order_body("shop-1", 1234)).await;

    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let order: Value = response.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    assert!(id.starts_with("ord_") && id.len() <= 32, "{id}");
    assert_eq!(location, format!("/api/v1/orders/{id}"));
    assert_eq!(order["status"], "pending");
    assert_eq!(order["amount"], 1234);
    assert_eq!(order["currency"], "CNY");
    assert_eq!(order["provider"], "alipay");
    assert_eq!(order["qr_code"], format!("https://qr.fake.test/{id}"));
    assert_eq!(order["checkout_url"], app.url(&format!("/pay/{id}")));
    assert_eq!(order["refunded_amount"], 0);
    assert_eq!(order["late_payment"], false);
    assert_eq!(order["metadata"], json!({}));
    let created = DateTime::parse_from_rfc3339(order["created_at"].as_str().unwrap()).unwrap();
    let expires = DateTime::parse_from_rfc3339(order["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 15 * 60);
    assert!(order["created_at"].as_str().unwrap().ends_with('Z'));

    let fetched: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(fetched, order);

    let sent = app.provider.created.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].order_id.as_str(), id);
    assert_eq!(
        sent[0].expires_at.timestamp(),
        expires.timestamp(),
        "provider deadline = order expiry"
    );
    assert_eq!(sent[0].notify_url, app.url("/notify/alipay"));
}

#[tokio::test]
async fn optional_fields_are_kept() {
    let app = TestApp::spawn().await;
    let body = json!({
        "out_trade_no": "shop-2", "amount": 1500, "currency": "JPY", "subject": "Matcha",
        "provider": "alipay", "notify_url": "https://shop.example/hooks", "return_url": "https://shop.example/done?x=1",
        "expires_in": 600, "metadata": {"cart": [1, 2], "customer": "c-9"}
    });
    let response = app.post_order(&body).await;
    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["currency"], "JPY");
    assert_eq!(order["notify_url"], "https://shop.example/hooks");
    assert_eq!(order["return_url"], "https://shop.example/done?x=1");
    assert_eq!(order["metadata"], json!({"cart": [1, 2], "customer": "c-9"}));
    let created = DateTime::parse_from_rfc3339(order["created_at"].as_str().unwrap()).unwrap();
    let expires = DateTime::parse_from_rfc3339(order["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 600);
}

#[tokio::test]
async fn every_field_rule_is_enforced_with_a_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let base = order_body("shop-x", 100);
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(field);
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "empty out_trade_no",
            with("out_trade_no", json!("")),
            "out_trade_no",
        ),
        (
            "65-char out_trade_no",
            with("out_trade_no", json!("a".repeat(65))),
            "out_trade_no",
        ),
        (
            "out_trade_no with a space",
            with("out_trade_no", json!("a b")),
            "out_trade_no",
        ),
        (
            "out_trade_no as a number",
            with("out_trade_no", json!(12)),
            "out_trade_no",
        ),
        ("zero amount", with("amount", json!(0)), "amount"),
        ("negative amount", with("amount", json!(-1)), "amount"),
        (
            "amount over Alipay's limit",
            with("amount", json!(10_000_000_001_i64)),
            "amount",
        ),
        ("decimal string amount", with("amount", json!("12.34")), "amount"),
        ("fractional amount", with("amount", json!(1.5)), "amount"),
        ("missing amount", without("amount"), "amount"),
        ("unknown currency", with("currency", json!("XXX")), "currency"),
        ("lower-case currency", with("currency", json!("cny")), "currency"),
        ("empty subject", with("subject", json!("")), "subject"),
        ("blank subject", with("subject", json!("   ")), "subject"),
        (
            "257-char subject",
            with("subject", json!("字".repeat(257))),
            "subject",
        ),
        (
            "subject with a newline",
            with("subject", json!("a\nb")),
            "subject",
        ),
        ("unknown provider", with("provider", json!("paypal")), "provider"),
        (
            "provider not enabled",
            with("provider", json!("wechat")),
            "provider",
        ),
        (
            "ftp notify_url",
            with("notify_url", json!("ftp://shop.example/x")),
            "notify_url",
        ),
        (
            "relative return_url",
            with("return_url", json!("/done")),
            "return_url",
        ),
        (
            "javascript return_url",
            with("return_url", json!("javascript:alert(1)")),
            "return_url",
        ),
        (
            "expires_in too short",
            with("expires_in", json!(59)),
            "expires_in",
        ),
        (
            "expires_in too long",
            with("expires_in", json!(86_401)),
            "expires_in",
        ),
        (
            "metadata not an object",
            with("metadata", json!([1, 2])),
            "metadata",
        ),
        (
            "metadata over 4 KB",
            with("metadata", json!({"blob": "x".repeat(4100)})),
            "metadata",
        ),
        ("unknown field", with("colour", json!("red")), "colour"),
    ];
    for (what, body, field) in cases {
        let (status, code, error) = error_code(app.post_order(&body).await).await;
        assert_eq!(status, 422, "{what}: {error}");
        assert_eq!(code, "invalid_field", "{what}");
        assert_eq!(error["error"]["field"], field, "{what}: {error}");
    }
    assert_eq!(
        stored::counts(&stored::rows(&app).await).values().sum::<usize>(),
        0,
        "nothing stored by invalid requests"
    );
    assert_eq!(app.provider.calls(), [0; 5], "the provider was not asked");
}

#[tokio::test]
async fn boundary_values_are_accepted() {
    let app = TestApp::spawn().await;
    let cases = vec![
        json!({"out_trade_no": "b1", "amount": 1, "subject": "s", "provider": "alipay"}),
        json!({"out_trade_no": "b2", "amount": 10_000_000_000_i64, "subject": "字".repeat(256), "provider": "alipay"}),
        json!({"out_trade_no": "a".repeat(64), "amount": 5, "subject": "s", "provider": "alipay", "expires_in": 60}),
        json!({"out_trade_no": "b4", "amount": 5, "subject": "s", "provider": "alipay", "expires_in": 86_400,
               "metadata": {"blob": "x".repeat(4000)}}),
    ];
    for body in cases {
        let response = app.post_order(&body).await;
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_and_oversized_ones_413() {
    let app = TestApp::spawn().await;
    let send = |body: Vec<u8>| {
        app.client
            .post(app.url("/api/v1/orders"))
            .bearer_auth(&app.api_key)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [&b"{\"amount\": 1"[..], b"not json", b"", b"[1,2]", b"\"text\""] {
        let (status, code, _) = error_code(send(body.to_vec()).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "malformed_json"),
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
    let mut huge = order_body("big", 1);
    huge["subject"] = json!("x".repeat(70 * 1024));
    let (status, code, _) = error_code(send(huge.to_string().into_bytes()).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
}

#[tokio::test]
async fn unknown_api_routes_and_methods_answer_json() {
    let app = TestApp::spawn().await;
    let (status, code, _) = error_code(app.get("/api/v1/nothing-here").await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, code, _) = error_code(app.get("/api/v2/orders").await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let response = app
        .client
        .delete(app.url("/api/v1/orders"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(response).await;
    assert_eq!((status, code.as_str()), (405, "method_not_allowed"));
    let (status, code, _) = error_code(app.get("/api/v1/orders/ord_doesnotexist").await).await;
    assert_eq!((status, code.as_str()), (404, "order_not_found"));
    let (status, code, _) = error_code(app.get("/api/v1/orders/bad%20id").await).await;
    assert_eq!((status, code.as_str()), (404, "order_not_found"));
}

#[tokio::test]
async fn requests_without_a_valid_key_are_401_and_change_nothing() {
    let app = TestApp::spawn().await;
    let before = stored::rows(&app).await;
    let no_key = app.client.get(app.url("/api/v1/orders")).send().await.unwrap();
    assert_eq!(no_key.headers()["www-authenticate"], "Bearer");
    let (status, code, _) = error_code(no_key).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));

    for header in [
        "Bearer kassa_sk_wrong",
        "Basic dXNlcjpwYXNz",
        "Bearer ",
        &app.api_key,
    ] {
        let response = app
            .client
            .get(app.url("/api/v1/orders"))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_code(response).await;
        assert_eq!((status, code.as_str()), (401, "unauthorized"), "{header}");
    }
    let no_key_post = app
        .client
        .post(app.url("/api/v1/orders"))
        .json(&order_body("x", 1))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(no_key_post).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    let forged_key_post = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth("kassa_sk_wrong")
        .header("Idempotency-Key", "k-401")
        .json(&order_body("y", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(forged_key_post.status(), 401);
    assert_eq!(stored::rows(&app).await, before, "nothing stored");
    assert_eq!(app.provider.calls(), [0; 5], "the provider was not asked");

    let revoked = TestApp::create_api_key(&app.core, "soon-revoked").await;
    assert_eq!(
        app.client
            .get(app.url("/api/v1/orders"))
            .bearer_auth(&revoked)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.core
        .db
        .write(|c| kassa::db::api_keys::revoke(c, "soon-revoked", chrono::Utc::now()))
        .await
        .unwrap();
    let response = app
        .client
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&revoked)
        .json(&order_body("z", 1))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(response).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    assert_eq!(stored::rows(&app).await, before, "nothing stored");
    assert_eq!(app.provider.calls(), [0; 5], "the provider was not asked");
}

#[tokio::test]
async fn the_same_idempotency_key_and_body_return_the_same_order() {
    let app = TestApp::spawn().await;
    let body = order_body("idem-1", 500);

    let first: Value = app
        .post_order_with_key(&body, "key-1")
        .await
        .json()
        .await
        .unwrap();
    // Same content, keys in another order: still the same request.
    let reordered =
        json!({"provider": "alipay", "subject": body["subject"], "amount": 500, "out_trade_no": "idem-1"});
    let second = app.post_order_with_key(&reordered, "key-1").await;

    assert_eq!(second.status(), 201);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(
        app.provider.created.lock().unwrap().len(),
        1,
        "provider asked once"
    );
}

#[tokio::test]
async fn the_same_idempotency_key_with_another_body_is_409_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let first = app.post_order_with_key(&order_body("idem-2", 500), "key-2").await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let before = stored::rows(&app).await;
    let calls = app.provider.calls();

    let (status, code, _) = error_code(
        app.post_order_with_key(&order_body("idem-2b", 501), "key-2")
            .await,
    )
    .await;

    assert_eq!((status, code.as_str()), (409, "idempotency_key_conflict"));
    assert_eq!(stored::rows(&app).await, before);
    assert_eq!(app.provider.calls(), calls, "the provider was not asked again");
    assert_eq!(calls, [1, 0, 0, 0, 0]);
    assert_eq!(app.order(first["id"].as_str().unwrap()).await, first);
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_create_one_order() {
    let app = TestApp::spawn().await;
    let body = order_body("idem-3", 700);
    // Many at once: on PostgreSQL two of them must meet between the key's lookup and
    // its claim (they did, until a lost claim was read again).
    let handles: Vec<_> = (0..24)
        .map(|_| {
            let request = app
                .client
                .post(app.url("/api/v1/orders"))
                .bearer_auth(&app.api_key)
                .header("Idempotency-Key", "key-3")
                .json(&body);
            tokio::spawn(async move { request.send().await.unwrap() })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for handle in handles {
        let r = handle.await.unwrap();
        // Each is the order, or (while the first with the key is still in flight) told so.
        if r.status() == 409 {
            let (_, code, _) = error_code(r).await;
            assert_eq!(code, "idempotency_key_in_progress");
            continue;
        }
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(
        app.provider.calls(),
        [1, 0, 0, 0, 0],
        "the provider was asked once"
    );
    let listed: Value = app
        .get("/api/v1/orders?out_trade_no=idem-3")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_duplicate_out_trade_no_is_409_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let first = app.create_order("dup-1", 100).await;
    let before = stored::rows(&app).await;

    let (status, code, _) = error_code(app.post_order(&order_body("dup-1", 250)).await).await;
    let (keyed, keyed_code, _) =
        error_code(app.post_order_with_key(&order_body("dup-1", 100), "k-dup").await).await;

    assert_eq!((status, code.as_str()), (409, "out_trade_no_taken"));
    assert_eq!((keyed, keyed_code.as_str()), (409, "out_trade_no_taken"));
    assert_eq!(stored::rows(&app).await, before, "no order, no idempotency key");
    assert_eq!(
        app.provider.calls(),
        [1, 0, 0, 0, 0],
        "the provider was asked once, for the first"
    );
    assert_eq!(app.order(first["id"].as_str().unwrap()).await, first);
}

#[tokio::test]
async fn a_provider_refusal_is_502_and_leaves_no_order() {
    let app = TestApp::spawn().await;
    *app.provider.create_error.lock().unwrap() = Some(ProviderError::Rejected {
        provider: ProviderKind::Alipay,
        code: "ACQ.TOTAL_FEE_EXCEED".into(),
        message: "订单金额超过限额".into(),
    });

    let (status, code, body) = error_code(app.post_order(&order_body("refused", 100)).await).await;

    assert_eq!((status, code.as_str()), (502, "provider_rejected"));
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ACQ.TOTAL_FEE_EXCEED"));
    let listed: Value = app.get("/api/v1/orders").await.json().await.unwrap();
    assert_eq!(listed["data"], json!([]));

    *app.provider.create_error.lock().unwrap() = Some(app.provider.unknown());
    let (status, code, _) = error_code(app.post_order(&order_body("refused", 100)).await).await;
    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    *app.provider.create_error.lock().unwrap() = None;
    assert_eq!(
        app.post_order(&order_body("refused", 100)).await.status(),
        201,
        "retry works"
    );
}

#[tokio::test]
async fn pagination_is_stable_while_orders_are_being_created() {
    let app = TestApp::spawn().await;
    for i in 0..25 {
        app.create_order(&format!("page-{i}"), 100 + i).await;
        // Several orders share a millisecond: the id breaks ties.
        if i % 3 == 0 {
            app.clock.advance(chrono::Duration::milliseconds(1));
        }
    }
    let snapshot: Value = app.get("/api/v1/orders?limit=100").await.json().await.unwrap();
    let expected: Vec<String> = snapshot["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expected.len(), 25);

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut extra = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/orders?limit=10&cursor={c}"),
            None => "/api/v1/orders?limit=10".to_owned(),
        };
        let page: Value = app.get(&path).await.json().await.unwrap();
        for o in page["data"].as_array().unwrap() {
            seen.push(o["id"].as_str().unwrap().to_owned());
        }
        // New orders arrive between pages.
        app.clock.advance(chrono::Duration::milliseconds(1));
        app.create_order(&format!("late-{extra}"), 1).await;
        extra += 1;
        if page["has_more"] == false {
            assert!(page["next_cursor"].is_null());
            break;
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, expected);
}

/// Stores a pending WeChat order directly: the test double serves Alipay only, and a
/// provider filter needs orders of another provider to leave out.
async fn insert_wechat_order(app: &TestApp, out_trade_no: &str) -> String {
    use kassa::domain::{Amount, Currency, NewOrder, OrderId, OutTradeNo};
    let order = NewOrder {
        id: OrderId::generate(),
        out_trade_no: OutTradeNo::parse(out_trade_no).unwrap(),
        amount: Amount::from_minor(100, Currency::Cny).unwrap(),
        subject: "WeChat tea".into(),
        provider: ProviderKind::Wechat,
        notify_url: None,
        return_url: None,
        metadata: Default::default(),
        created_at: app.now(),
        expires_at: app.now() + chrono::Duration::minutes(15),
    };
    let id = order.id.to_string();
    app.core
        .db
        .write(move |c| kassa::db::orders::insert(c, &order, Some("weixin://wxpay/x")))
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn listing_returns_exactly_the_orders_each_filter_and_combination_selects() {
    let app = TestApp::spawn().await;
    // A 2 x 2 grid: Alipay and WeChat, pending and closed, one millisecond apart so the
    // newest-first order is known.
    let tick = || app.clock.advance(chrono::Duration::milliseconds(1));
    let ali_closed = app.create_order("f-a", 100).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tick();
    let ali_pending = app.create_order("f-b", 100).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tick();
    let wx_pending = insert_wechat_order(&app, "f-c").await;
    tick();
    let wx_closed = insert_wechat_order(&app, "f-d").await;
    assert_eq!(
        app.post(&format!("/api/v1/orders/{ali_closed}/close"))
            .await
            .status(),
        200
    );
    app.close_locally(&wx_closed).await;

    let expectations: Vec<(&str, Vec<&String>)> = vec![
        ("", vec![&wx_closed, &wx_pending, &ali_pending, &ali_closed]),
        ("status=closed", vec![&wx_closed, &ali_closed]),
        ("status=pending", vec![&wx_pending, &ali_pending]),
        ("status=paid", vec![]),
        ("provider=alipay", vec![&ali_pending, &ali_closed]),
        ("provider=wechat", vec![&wx_closed, &wx_pending]),
        ("status=pending&provider=alipay", vec![&ali_pending]),
        ("status=closed&provider=wechat", vec![&wx_closed]),
        ("provider=alipay&status=closed", vec![&ali_closed]),
        ("out_trade_no=f-a", vec![&ali_closed]),
        ("out_trade_no=f-c", vec![&wx_pending]),
        ("out_trade_no=f-a&status=pending", vec![]),
        (
            "out_trade_no=f-c&provider=wechat&status=pending",
            vec![&wx_pending],
        ),
        ("out_trade_no=f-c&provider=alipay", vec![]),
        ("out_trade_no=nobody", vec![]),
    ];
    for (query, want) in expectations {
        let page: Value = app
            .get(&format!("/api/v1/orders?{query}"))
            .await
            .json()
            .await
            .unwrap();
        let got: Vec<&str> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = want.iter().map(|s| s.as_str()).collect();
        assert_eq!(got, want, "?{query}");
        assert_eq!(page["has_more"], false, "?{query}");
    }
}

#[tokio::test]
async fn listing_rejects_bad_parameters_with_a_422_naming_the_parameter() {
    let app = TestApp::spawn().await;
    for (query, field) in [
        ("status=lost", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=garbage!", "cursor"),
        ("sort=asc", "sort"),
        ("provider=paypal", "provider"),
    ] {
        let (status, code, body) = error_code(app.get(&format!("/api/v1/orders?{query}")).await).await;
        assert_eq!((status, code.as_str()), (422, "invalid_field"), "{query}");
        assert_eq!(body["error"]["field"], field, "{query}");
    }
}

#[tokio::test]
async fn closing_twice_closes_once_and_answers_success_both_times() {
    let app = TestApp::spawn().await;
    let order = app.create_order("close-1", 100).await;
    let id = order["id"].as_str().unwrap();

    let first = app.post(&format!("/api/v1/orders/{id}/close")).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["status"], "closed");
    assert!(first["closed_at"].is_string());

    let second = app.post(&format!("/api/v1/orders/{id}/close")).await;
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["closed_at"], first["closed_at"]);

    assert_eq!(
        app.provider.closes.load(Ordering::SeqCst),
        1,
        "provider closed once"
    );
    let events: Value = app
        .get(&format!("/api/v1/orders/{id}/events"))
        .await
        .json()
        .await
        .unwrap();
    let events = events["data"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["transition"], "close");
    assert_eq!(events[0]["outcome"], "applied");
    assert_eq!(events[0]["from"], "pending");
    assert_eq!(events[0]["to"], "closed");
    assert_eq!(events[0]["source"], "api");
    assert_eq!(events[0]["actor"], "test-shop");
}

#[tokio::test]
async fn closing_an_order_the_provider_reports_paid_records_the_payment_instead() {
    let app = TestApp::spawn().await;
    let order = app.create_order("close-paid", 100).await;
    let id = order["id"].as_str().unwrap();
    *app.provider.query_answer.lock().unwrap() = Ok(TradeState::Paid(PaymentFacts {
        provider_trade_no: Some("2026112422001".into()),
        paid_at: None,
        amount: 100,
    }));

    let (status, code, _) = error_code(app.post(&format!("/api/v1/orders/{id}/close")).await).await;

    assert_eq!((status, code.as_str()), (409, "order_paid"));
    let now: Value = app
        .get(&format!("/api/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["status"], "paid");
    assert_eq!(now["provider_trade_no"], "2026112422001");
    assert_eq!(app.provider.closes.load(Ordering::SeqCst), 0);

    // A paid order cannot be closed: refused, and the refusal is in its history.
    let (status, code, _) = error_code(app.post(&format!("/api/v1/orders/{id}/close")).await).await;
    assert_eq!((status, code.as_str()), (409, "illegal_transition"));
    let events: Value = app
        .get(&format!("/api/v1/orders/{id}/events"))
        .await
        .json()
        .await
        .unwrap();
    let outcomes: Vec<(&str, &str, &str)> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["transition"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![("pay", "applied", "provider_query"), ("close", "refused", "api")]
    );
}

#[tokio::test]
async fn a_close_whose_provider_outcome_is_unknown_changes_nothing() {
    let app = TestApp::spawn().await;
    let order = app.create_order("close-unknown", 100).await;
    let id = order["id"].as_str().unwrap();
    *app.provider.close_error.lock().unwrap() = Some(app.provider.unknown());

    let (status, code, _) = error_code(app.post(&format!("/api/v1/orders/{id}/close")).await).await;

    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    let now: Value = app
        .get(&format!("/api/v1/orders/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["status"], "pending");
    let events: Value = app
        .get(&format!("/api/v1/orders/{id}/events"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["data"], json!([]));
}

#[tokio::test]
async fn closing_or_listing_events_of_an_unknown_order_is_404() {
    let app = TestApp::spawn().await;
    let (status, code, _) = error_code(app.post("/api/v1/orders/ord_nothere/close").await).await;
    assert_eq!((status, code.as_str()), (404, "order_not_found"));
    let (status, code, _) = error_code(app.get("/api/v1/orders/ord_nothere/events").await).await;
    assert_eq!((status, code.as_str()), (404, "order_not_found"));
}

#[tokio::test]
async fn healthz_answers_200_status_ok_in_json_without_an_api_key() {
    // The 503 side (the database not answering) is not provoked here: a reader that
    // stops answering `SELECT 1` cannot be arranged from outside without breaking the
    // test's own access.
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

/// Every `$ref` in `node` that does not resolve inside `doc`.
fn dangling_refs(doc: &Value, node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                let resolved = target.strip_prefix('#').and_then(|pointer| doc.pointer(pointer));
                if resolved.is_none() {
                    out.push(target.clone());
                }
            }
            for v in map.values() {
                dangling_refs(doc, v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dangling_refs(doc, v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_is_openapi_3_1_json_listing_exactly_the_routes_the_api_serves() {
    // The routes kassa mounts under /api/v1 (src/http/api/orders.rs, refunds.rs).
    let served: &[(&str, &str)] = &[
        ("GET", "/orders"),
        ("POST", "/orders"),
        ("GET", "/orders/{id}"),
        ("POST", "/orders/{id}/close"),
        ("GET", "/orders/{id}/events"),
        ("GET", "/orders/{id}/refunds"),
        ("POST", "/orders/{id}/refunds"),
    ];
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    let doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(doc["servers"][0]["url"], "/api/v1");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if [
                "get", "post", "put", "patch", "delete", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut expected: Vec<(String, String)> = served
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected, "documented routes = served routes");
    let mut dangling = Vec::new();
    dangling_refs(&doc, &doc, &mut dangling);
    assert!(dangling.is_empty(), "unresolved $ref: {dangling:?}");

    // The server agrees: each listed route is routed, and on those paths every other
    // method is refused as not allowed.
    let id = app.create_order("doc-1", 100).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (_, path) in &expected {
        let url = app.url(&format!("/api/v1{}", path.replace("{id}", &id)));
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let response = app
                .client
                .request(method.parse().unwrap(), &url)
                .bearer_auth(&app.api_key)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            if expected.contains(&(method.to_owned(), path.clone())) {
                assert!(![404, 405].contains(&status), "{method} {path}: {status} {body}");
            } else {
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (405, Some("method_not_allowed")),
                    "{method} {path}"
                );
            }
        }
    }
}
