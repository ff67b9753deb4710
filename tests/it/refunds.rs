//! Refunds through the API against the sandbox.

use serde_json::{json, Value};

use crate::helpers::{error_code, TestApp};
use crate::stored;

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
    let kinds: Vec<String> = app
        .outbox(&id)
        .await
        .into_iter()
        .map(|e| e.event_type.to_string())
        .collect();
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
    let refunds: Value = app
        .get(&format!("/api/v1/orders/{id}/refunds"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refunds["data"].as_array().unwrap().len(), 1);
    let before = stored::rows(&app).await;
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
    assert_eq!(
        stored::rows(&app).await,
        before,
        "no refund row, no history, no outbox row, nothing at the sandbox"
    );
}

#[tokio::test]
async fn refund_input_is_validated_and_unpaid_orders_cannot_be_refunded_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let pending = app.create_order("rf-3", 1000).await;
    let pending_id = pending["id"].as_str().unwrap();
    let before = stored::rows(&app).await;
    let calls = app.provider.calls();

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

    assert_eq!(app.order(pending_id).await, pending);
    assert_eq!(stored::rows(&app).await, before);
    assert_eq!(app.provider.calls(), calls, "the provider was not asked");
    assert!(app.provider.refund_numbers.lock().unwrap().is_empty());
}

mod unknown_outcomes {
    use kassa::domain::ProviderKind;
    use kassa::providers::{PaymentFacts, ProviderError, RefundOutcome, RefundState, TradeState};
    use serde_json::{json, Value};

    use super::refund;
    use crate::helpers::TestApp;

    /// A fake-provider order, paid through the provider-query path of close.
    async fn paid(app: &TestApp, amount: i64) -> String {
        let order = app
            .create_order(&format!("u-{}", crate::helpers::unique()), amount)
            .await;
        let id = order["id"].as_str().unwrap().to_owned();
        *app.provider.query_answer.lock().unwrap() = Ok(TradeState::Paid(PaymentFacts {
            provider_trade_no: Some("T".into()),
            paid_at: None,
            amount,
        }));
        app.post(&format!("/api/v1/orders/{id}/close")).await;
        assert_eq!(app.order(&id).await["status"], "paid");
        id
    }

    fn unknown() -> ProviderError {
        ProviderError::Unknown {
            provider: ProviderKind::Alipay,
            reason: "timeout".into(),
        }
    }

    #[tokio::test]
    async fn an_unknown_refund_outcome_stays_pending_until_a_query_settles_it() {
        let app = TestApp::spawn().await;
        let id = paid(&app, 1000).await;
        app.provider
            .refund_answers
            .lock()
            .unwrap()
            .extend([Err(unknown()), Err(unknown())]);
        *app.provider.refund_query_answer.lock().unwrap() = Err(unknown());

        let created: Value = refund(&app, &id, json!({"amount": 250, "reason": "r"}))
            .await
            .json()
            .await
            .unwrap();

        assert_eq!(created["status"], "pending");
        assert_eq!(
            app.order(&id).await["refunded_amount"],
            0,
            "unknown never changes the order"
        );
        let (status, code, _) =
            crate::helpers::error_code(refund(&app, &id, json!({"amount": 751, "reason": "r"})).await).await;
        assert_eq!(
            (status, code.as_str()),
            (409, "refund_exceeds_balance"),
            "a pending refund holds its amount"
        );

        // The provider never saw it: the settle job retries with the same refund number.
        *app.provider.refund_query_answer.lock().unwrap() = Ok(RefundState::NotFound);
        app.clock.advance(chrono::Duration::seconds(61));
        let settled = kassa::jobs::refund_settlement::try_run_once(&app.core, app.now())
            .await
            .unwrap();
        assert_eq!(settled, 0, "the retry's outcome was unknown too");
        app.clock.advance(chrono::Duration::seconds(61));
        let settled = kassa::jobs::refund_settlement::try_run_once(&app.core, app.now())
            .await
            .unwrap();
        assert_eq!(settled, 1);

        let numbers = app.provider.refund_numbers.lock().unwrap().clone();
        assert_eq!(numbers.len(), 3);
        assert!(
            numbers.iter().all(|n| *n == numbers[0]),
            "one refund number across retries: {numbers:?}"
        );
        let listed: Value = app
            .get(&format!("/api/v1/orders/{id}/refunds"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(listed["data"][0]["status"], "succeeded");
        let order = app.order(&id).await;
        assert_eq!(
            (order["status"].as_str(), order["refunded_amount"].as_i64()),
            (Some("partially_refunded"), Some(250))
        );
    }

    #[tokio::test]
    async fn a_query_that_finds_the_refund_settles_it_without_refunding_twice() {
        let app = TestApp::spawn().await;
        let id = paid(&app, 1000).await;
        app.provider.refund_answers.lock().unwrap().push(Err(unknown()));
        *app.provider.refund_query_answer.lock().unwrap() = Ok(RefundState::Succeeded {
            provider_refund_id: Some("R1".into()),
        });

        let created: Value = refund(&app, &id, json!({"amount": 1000, "reason": "all"}))
            .await
            .json()
            .await
            .unwrap();

        assert_eq!(created["status"], "succeeded");
        assert_eq!(created["provider_refund_id"], "R1");
        assert_eq!(app.provider.refund_numbers.lock().unwrap().len(), 1);
        assert_eq!(app.order(&id).await["status"], "refunded");
    }

    #[tokio::test]
    async fn a_refused_refund_is_failed_and_changes_nothing() {
        let app = TestApp::spawn().await;
        let id = paid(&app, 1000).await;
        app.provider
            .refund_answers
            .lock()
            .unwrap()
            .push(Ok(RefundOutcome::Failed {
                code: "ACQ.TRADE_HAS_FINISHED".into(),
                message: "交易已完结".into(),
            }));

        let created: Value = refund(&app, &id, json!({"amount": 100, "reason": "r"}))
            .await
            .json()
            .await
            .unwrap();

        assert_eq!(created["status"], "failed");
        assert_eq!(created["failure_code"], "ACQ.TRADE_HAS_FINISHED");
        let order = app.order(&id).await;
        assert_eq!(
            (order["status"].as_str(), order["refunded_amount"].as_i64()),
            (Some("paid"), Some(0))
        );
        assert_eq!(app.outbox(&id).await.len(), 1, "only order.paid");
    }

    #[tokio::test]
    async fn a_refund_id_reused_with_another_amount_is_409_and_nothing_changes() {
        let app = TestApp::spawn().await;
        let id = paid(&app, 1000).await;
        let first = refund(
            &app,
            &id,
            json!({"amount": 400, "reason": "r", "refund_id": "shop-rf-1"}),
        )
        .await;
        assert_eq!(first.status(), 201);
        let order = app.order(&id).await;
        let before = crate::stored::rows(&app).await;
        let calls = app.provider.calls();

        let (status, code, _) = crate::helpers::error_code(
            refund(
                &app,
                &id,
                json!({"amount": 401, "reason": "r", "refund_id": "shop-rf-1"}),
            )
            .await,
        )
        .await;
        let (over, over_code, _) = crate::helpers::error_code(
            refund(
                &app,
                &id,
                json!({"amount": 601, "reason": "r", "refund_id": "shop-rf-2"}),
            )
            .await,
        )
        .await;

        assert_eq!((status, code.as_str()), (409, "refund_id_conflict"));
        assert_eq!((over, over_code.as_str()), (409, "refund_exceeds_balance"));
        assert_eq!(app.order(&id).await, order);
        assert_eq!(crate::stored::rows(&app).await, before);
        assert_eq!(app.provider.calls(), calls, "the provider was not asked");
        assert_eq!(calls[3], 1, "one refund call, for the first request");
    }
}
