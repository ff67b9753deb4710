//! Refunds through the API against the sandbox.

use serde_json::{json, Value};

use crate::helpers::{error_code, TestApp};

async fn paid_order(app: &TestApp, out_trade_no: &str, amount: i64) -> String {
    let order = app.create_order(out_trade_no, amount).await;
    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    app.drive_sandbox().await;
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(app.order(&id).await["status"], "paid");
    id
}

async fn refund(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn partial_then_partial_then_full_and_never_more_than_paid() {
    let app = TestApp::spawn_sandbox(&[("KASSA_SANDBOX_TIME_SCALE", "600")]).await;
    let id = paid_order(&app, "rf-1", 1000).await;

    let first = refund(&app, &id, json!({"amount": 300, "reason": "one cup broken"})).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        (first["status"].as_str(), first["amount"].as_i64()),
        (Some("succeeded"), Some(300))
    );
    assert!(first["id"].as_str().unwrap().starts_with("rf_"));
    let order = app.order(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("partially_refunded"), Some(300))
    );

    let second: Value = refund(&app, &id, json!({"amount": 200, "reason": "late"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["status"], "succeeded");
    assert_eq!(app.order(&id).await["refunded_amount"], 500);

    let (status, code, body) =
        error_code(refund(&app, &id, json!({"amount": 501, "reason": "too much"})).await).await;
    assert_eq!((status, code.as_str()), (409, "refund_exceeds_balance"));
    assert!(
        body["error"]["message"].as_str().unwrap().contains("5.00 CNY"),
        "{body}"
    );

    let last: Value = refund(&app, &id, json!({"amount": 500, "reason": "the rest"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(last["status"], "succeeded");
    let order = app.order(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("refunded"), Some(1000))
    );
    let (status, code, _) =
        error_code(refund(&app, &id, json!({"amount": 1, "reason": "again"})).await).await;
    assert_eq!((status, code.as_str()), (409, "illegal_transition"));

    let listed: Value = app
        .get(&format!("/api/v1/orders/{id}/refunds"))
        .await
        .json()
        .await
        .unwrap();
    let amounts: Vec<i64> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![300, 200, 500]);
    let kinds: Vec<String> = app.outbox(&id).await.into_iter().map(|e| e.event_type).collect();
    assert_eq!(
        kinds,
        [
            "order.paid",
            "order.partially_refunded",
            "order.partially_refunded",
            "order.refunded"
        ]
    );
    // The sandbox tells kassa about refunds too; those notices change nothing.
    app.drive_sandbox().await;
    assert_eq!(app.order(&id).await["refunded_amount"], 1000);
}

#[tokio::test]
async fn repeating_a_refund_id_returns_the_same_refund_and_refunds_once() {
    let app = TestApp::spawn_sandbox(&[("KASSA_SANDBOX_TIME_SCALE", "600")]).await;
    let id = paid_order(&app, "rf-2", 1000).await;
    let body = json!({"amount": 400, "reason": "return", "refund_id": "shop-rf-9"});

    let first = refund(&app, &id, body.clone()).await;
    let second = refund(&app, &id, body).await;

    assert_eq!(first.status(), 201);
    assert_eq!(second.status(), 200);
    let (first, second): (Value, Value) = (first.json().await.unwrap(), second.json().await.unwrap());
    assert_eq!(first["id"], second["id"]);
    assert_eq!(second["refund_id"], "shop-rf-9");
    assert_eq!(app.order(&id).await["refunded_amount"], 400);
    let (status, code, _) = error_code(
        refund(
            &app,
            &id,
            json!({"amount": 401, "reason": "return", "refund_id": "shop-rf-9"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "refund_id_conflict"));
}

#[tokio::test]
async fn refund_input_is_validated_and_unpaid_orders_cannot_be_refunded() {
    let app = TestApp::spawn_sandbox(&[("KASSA_SANDBOX_TIME_SCALE", "600")]).await;
    let pending = app.create_order("rf-3", 1000).await;
    let pending_id = pending["id"].as_str().unwrap();
    let (status, code, _) =
        error_code(refund(&app, pending_id, json!({"amount": 1, "reason": "x"})).await).await;
    assert_eq!((status, code.as_str()), (409, "illegal_transition"));

    for (body, field) in [
        (json!({"amount": 0, "reason": "x"}), "amount"),
        (json!({"amount": -5, "reason": "x"}), "amount"),
        (json!({"amount": "1.00", "reason": "x"}), "amount"),
        (json!({"amount": 1, "reason": ""}), "reason"),
        (json!({"amount": 1, "reason": "r".repeat(257)}), "reason"),
        (json!({"amount": 1}), "reason"),
        (
            json!({"amount": 1, "reason": "x", "refund_id": "has space"}),
            "refund_id",
        ),
        (json!({"amount": 1, "reason": "x", "extra": true}), "extra"),
    ] {
        let (status, code, error) = error_code(refund(&app, pending_id, body.clone()).await).await;
        assert_eq!((status, code.as_str()), (422, "invalid_field"), "{body}");
        assert_eq!(error["error"]["field"], field, "{body}");
    }
    let (status, code, _) =
        error_code(refund(&app, "ord_nothere", json!({"amount": 1, "reason": "x"})).await).await;
    assert_eq!((status, code.as_str()), (404, "order_not_found"));
    assert!(app.outbox(pending_id).await.is_empty());
}
