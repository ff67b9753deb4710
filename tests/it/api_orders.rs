//! The merchant JSON API through HTTP.

use std::sync::atomic::Ordering;

use chrono::DateTime;
use kassa::domain::ProviderKind;
use kassa::providers::{PaymentFacts, ProviderError, TradeState};
use serde_json::{json, Value};

use crate::helpers::{error_code, order_body, TestApp};

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
    let listed: Value = app.get("/api/v1/orders").await.json().await.unwrap();
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        0,
        "nothing stored by invalid requests"
    );
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
async fn requests_without_a_valid_key_are_401() {
    let app = TestApp::spawn().await;
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
    assert_eq!(no_key_post.status(), 401);

    let revoked = TestApp::create_api_key(&app.state, "soon-revoked").await;
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
    app.state
        .db
        .write(|c| kassa::db::api_keys::revoke(c, "soon-revoked", chrono::Utc::now()))
        .await
        .unwrap();
    let response = app
        .client
        .get(app.url("/api/v1/orders"))
        .bearer_auth(&revoked)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
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
async fn the_same_idempotency_key_with_another_body_is_409() {
    let app = TestApp::spawn().await;
    app.post_order_with_key(&order_body("idem-2", 500), "key-2").await;

    let (status, code, _) =
        error_code(app.post_order_with_key(&order_body("idem-2", 501), "key-2").await).await;

    assert_eq!((status, code.as_str()), (409, "idempotency_key_conflict"));
}

#[tokio::test]
async fn concurrent_requests_with_one_idempotency_key_create_one_order() {
    let app = TestApp::spawn().await;
    let body = order_body("idem-3", 700);
    let handles: Vec<_> = (0..8)
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
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let listed: Value = app
        .get("/api/v1/orders?out_trade_no=idem-3")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_duplicate_out_trade_no_is_409() {
    let app = TestApp::spawn().await;
    app.create_order("dup-1", 100).await;

    let (status, code, _) = error_code(app.post_order(&order_body("dup-1", 100)).await).await;

    assert_eq!((status, code.as_str()), (409, "out_trade_no_taken"));
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

#[tokio::test]
async fn listing_filters_by_status_and_out_trade_no_and_rejects_bad_parameters() {
    let app = TestApp::spawn().await;
    let a = app.create_order("f-a", 100).await;
    app.create_order("f-b", 100).await;
    let id = a["id"].as_str().unwrap();
    assert_eq!(
        app.post(&format!("/api/v1/orders/{id}/close")).await.status(),
        200
    );

    let closed: Value = app
        .get("/api/v1/orders?status=closed")
        .await
        .json()
        .await
        .unwrap();
    let closed = closed["data"].as_array().unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0]["id"], id);
    let pending: Value = app
        .get("/api/v1/orders?status=pending&provider=alipay")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(pending["data"][0]["out_trade_no"], "f-b");
    let by_no: Value = app
        .get("/api/v1/orders?out_trade_no=f-a")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_no["data"][0]["id"], id);

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
async fn healthz_reports_the_database() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn the_openapi_document_describes_the_api() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/orders",
        "/orders/{id}",
        "/orders/{id}/close",
        "/orders/{id}/events",
        "/orders/{id}/refunds",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}
