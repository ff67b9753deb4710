//! `POST /notify/alipay` against kassa configured for a real Alipay account, with
//! notifications signed by an independent implementation (python-alipay-sdk).

use serde_json::{json, Value};

use crate::helpers::{trade_success, TestApp, ALIPAY_APP_ID};
use crate::oracle::{key, oracle, signed_notification};

fn with(params: &Value, changes: &[(&str, &str)]) -> Value {
    let mut p = params.clone();
    for (k, v) in changes {
        p[*k] = json!(v);
    }
    p
}

#[tokio::test]
async fn a_notification_signed_by_python_alipay_sdk_pays_the_order_once() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("shop-1", 1234).await;
    let body = signed_notification(&trade_success(&id, "12.34"));

    let (status, reply) = app.post_alipay_notify(body.clone()).await;

    assert_eq!((status, reply.as_str()), (200, "success"));
    let order = app.order(&id).await;
    assert_eq!(order["status"], "paid");
    assert_eq!(order["provider_trade_no"], "2026112422001446880501234567");
    assert_eq!(
        order["paid_at"], "2026-11-24T03:30:06.000Z",
        "gmt_payment is Beijing time"
    );
    let events = app.events(&id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0]["source"].as_str(), events[0]["outcome"].as_str()),
        (Some("notification"), Some("applied"))
    );
    let notifications = app.notifications().await;
    assert_eq!(notifications.len(), 1);
    assert_eq!(
        events[0]["notification_id"], notifications[0].id,
        "history names its notification"
    );
    assert_eq!(notifications[0].verdict, "applied");
    assert_eq!(notifications[0].body, body, "stored raw");
    assert!(notifications[0]
        .headers
        .contains("application/x-www-form-urlencoded"));
    assert!(notifications[0]
        .remote_addr
        .as_deref()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    let outbox = app.outbox(&id).await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].event_type, "order.paid");

    // Alipay resends (new notify_time and sign, same notify_id): answered success, no change.
    let resend = signed_notification(&with(
        &trade_success(&id, "12.34"),
        &[("notify_time", "2026-11-24 11:34:06")],
    ));
    assert_eq!(app.post_alipay_notify(resend).await, (200, "success".into()));
    assert_eq!(app.events(&id).await.len(), 1);
    assert_eq!(app.outbox(&id).await.len(), 1);
    assert_eq!(app.notifications().await[0].verdict, "duplicate");
}

#[tokio::test]
async fn the_vector_notification_from_the_shared_test_vectors_is_accepted() {
    // The vector's order id is fixed; create that order and replay the vector's body byte for byte.
    let app = TestApp::spawn_alipay(&[]).await;
    let vector: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/vectors/alipay_notify.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let order = kassa::domain::NewOrder {
        id: kassa::domain::OrderId::parse("k_01JD3QX5W8").unwrap(),
        out_trade_no: kassa::domain::OutTradeNo::parse("vector-1").unwrap(),
        amount: kassa::domain::Amount::from_minor(1234, kassa::domain::Currency::Cny).unwrap(),
        subject: "2 杯咖啡 & 1 cake".into(),
        provider: kassa::domain::ProviderKind::Alipay,
        notify_url: None,
        return_url: None,
        metadata: Default::default(),
        created_at: app.now(),
        expires_at: app.now() + chrono::Duration::minutes(15),
    };
    app.state
        .db
        .write(move |c| kassa::db::orders::insert(c, &order, None))
        .await
        .unwrap();

    let tampered = app
        .post_alipay_notify(vector["tampered_body"].as_str().unwrap().to_owned())
        .await;
    let good = app
        .post_alipay_notify(vector["body"].as_str().unwrap().to_owned())
        .await;

    assert_eq!(tampered, (200, "failure".into()));
    assert_eq!(good, (200, "success".into()));
    assert_eq!(app.order("k_01JD3QX5W8").await["status"], "paid");
}

#[tokio::test]
async fn every_rejection_leaves_the_order_untouched_and_records_why() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("shop-2", 1234).await;
    let good = trade_success(&id, "12.34");
    let signed_good = signed_notification(&good);
    let mut cases: Vec<(&str, String, &str)> = vec![
        (
            "amount mismatch",
            signed_notification(&with(&good, &[("total_amount", "12.35")])),
            "amount mismatch",
        ),
        (
            "amount written differently",
            signed_notification(&with(&good, &[("total_amount", "12.340")])),
            "amount mismatch",
        ),
        (
            "another app_id",
            signed_notification(&with(&good, &[("app_id", "2021000000009999")])),
            "app_id",
        ),
        (
            "another seller_id",
            signed_notification(&with(&good, &[("seller_id", "2088000000000099")])),
            "seller_id",
        ),
        (
            "unknown order",
            signed_notification(&with(&good, &[("out_trade_no", "ord_unknown")])),
            "unknown out_trade_no",
        ),
        (
            "missing sign",
            signed_good
                .split('&')
                .filter(|p| !p.starts_with("sign="))
                .collect::<Vec<_>>()
                .join("&"),
            "missing sign",
        ),
        (
            "sign_type RSA",
            signed_good.replace("sign_type=RSA2", "sign_type=RSA"),
            "sign_type",
        ),
        (
            "truncated",
            signed_good[..signed_good.len() - 20].to_owned(),
            "bad signature",
        ),
        (
            "not a form",
            "{\"trade_status\":\"TRADE_SUCCESS\"}".to_owned(),
            "missing sign",
        ),
        ("empty", String::new(), "empty body"),
        (
            "oversized",
            format!("{signed_good}&pad={}", "x".repeat(40 * 1024)),
            "larger than",
        ),
        (
            "unknown trade_status",
            signed_notification(&with(&good, &[("trade_status", "TRADE_PAID")])),
            "unknown trade_status",
        ),
    ];
    // Any single byte of a signed notification changed: rejected.
    for (field, value) in [
        ("total_amount", "99.99"),
        ("out_trade_no", "ord_XXXXXXXXXXXXXXXXXXXXXXXX"),
        ("trade_status", "TRADE_FINISHED"),
    ] {
        let original = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(field, good[field].as_str().unwrap())
            .finish();
        let forged = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(field, value)
            .finish();
        cases.push((
            "tampered field",
            signed_good.replacen(&original, &forged, 1),
            "bad signature",
        ));
    }
    let flipped = {
        let at = signed_good.find("subject=").unwrap() + "subject=".len();
        let mut bytes = signed_good.clone().into_bytes();
        bytes[at] = if bytes[at] == b'2' { b'3' } else { b'2' };
        String::from_utf8(bytes).unwrap()
    };
    cases.push(("one byte of the subject", flipped, "bad signature"));

    for (what, body, reason) in cases {
        let before = app.notifications().await.len();
        let (status, reply) = app.post_alipay_notify(body).await;
        assert_eq!((status, reply.as_str()), (200, "failure"), "{what}");
        let recorded = app.notifications().await;
        assert_eq!(recorded.len(), before + 1, "{what}: stored");
        assert_eq!(recorded[0].verdict, "rejected", "{what}");
        let why = recorded[0].reason.clone().unwrap_or_default();
        assert!(
            why.contains(reason),
            "{what}: reason {why:?} should mention {reason:?}"
        );
    }
    let order = app.order(&id).await;
    assert_eq!(order["status"], "pending");
    assert!(app.events(&id).await.is_empty());
    assert!(app.outbox(&id).await.is_empty());
    // After all that, the genuine one still pays.
    assert_eq!(app.post_alipay_notify(signed_good).await, (200, "success".into()));
    assert_eq!(app.order(&id).await["status"], "paid");
}

#[tokio::test]
async fn a_hundred_concurrent_copies_apply_once_and_all_hear_success() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("shop-3", 1234).await;
    let body = signed_notification(&trade_success(&id, "12.34"));

    let sends: Vec<_> = (0..100)
        .map(|_| {
            let request = app
                .client
                .post(app.url("/notify/alipay"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.clone());
            tokio::spawn(async move {
                let r = request.send().await.unwrap();
                r.text().await.unwrap()
            })
        })
        .collect();
    let mut replies = Vec::new();
    for s in sends {
        replies.push(s.await.unwrap());
    }

    assert!(replies.iter().all(|r| r == "success"), "{replies:?}");
    assert_eq!(app.events(&id).await.len(), 1);
    assert_eq!(app.outbox(&id).await.len(), 1);
    let verdicts: Vec<String> = app.notifications().await.into_iter().map(|n| n.verdict).collect();
    assert_eq!(verdicts.len(), 100);
    assert_eq!(verdicts.iter().filter(|v| *v == "applied").count(), 1);
    assert_eq!(verdicts.iter().filter(|v| *v == "duplicate").count(), 99);
}

#[tokio::test]
async fn a_late_payment_for_a_closed_order_is_recorded_and_flagged() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("late-1", 1234).await;
    app.close_locally(&id).await;

    let reply = app
        .post_alipay_notify(signed_notification(&trade_success(&id, "12.34")))
        .await;

    assert_eq!(reply, (200, "success".into()));
    let order = app.order(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["late_payment"].as_bool()),
        (Some("paid"), Some(true))
    );
    let events = app.events(&id).await;
    assert_eq!(
        (events[1]["from"].as_str(), events[1]["to"].as_str()),
        (Some("closed"), Some("paid"))
    );
}

#[tokio::test]
async fn trade_closed_closes_a_pending_order_but_never_a_paid_one() {
    let app = TestApp::spawn_alipay(&[]).await;
    let pending = app.insert_order("tc-1", 1234).await;
    let paid = app.insert_order("tc-2", 1234).await;
    app.post_alipay_notify(signed_notification(&trade_success(&paid, "12.34")))
        .await;

    let closing = |id: &str| {
        with(
            &trade_success(id, "12.34"),
            &[("trade_status", "TRADE_CLOSED"), ("gmt_payment", "")],
        )
    };
    assert_eq!(
        app.post_alipay_notify(signed_notification(&closing(&pending)))
            .await
            .1,
        "success"
    );
    assert_eq!(
        app.post_alipay_notify(signed_notification(&closing(&paid)))
            .await
            .1,
        "success"
    );
    let refund_notice = with(
        &trade_success(&paid, "12.34"),
        &[("refund_fee", "1.00"), ("out_biz_no", "rf_1")],
    );
    assert_eq!(
        app.post_alipay_notify(signed_notification(&refund_notice))
            .await
            .1,
        "success"
    );

    assert_eq!(app.order(&pending).await["status"], "closed");
    let still = app.order(&paid).await;
    assert_eq!(
        (still["status"].as_str(), still["refunded_amount"].as_i64()),
        (Some("paid"), Some(0))
    );
    assert_eq!(app.events(&paid).await.len(), 1, "only the payment");
}

#[tokio::test]
async fn a_database_failure_answers_failure_so_alipay_resends() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("dbfail-1", 1234).await;
    let path = app.data_dir.join("kassa.db");
    let breaker = kassa::db::connect(&path).unwrap();
    breaker
        .execute_batch("ALTER TABLE notifications RENAME TO notifications_away")
        .unwrap();

    let body = signed_notification(&trade_success(&id, "12.34"));
    let (status, reply) = app.post_alipay_notify(body.clone()).await;

    assert_eq!((status, reply.as_str()), (200, "failure"));
    breaker
        .execute_batch("ALTER TABLE notifications_away RENAME TO notifications")
        .unwrap();
    assert_eq!(app.order(&id).await["status"], "pending", "nothing half-applied");
    assert_eq!(
        app.post_alipay_notify(body).await.1,
        "success",
        "the resend succeeds"
    );
    assert_eq!(app.order(&id).await["status"], "paid");
}

#[tokio::test]
async fn kassa_request_signatures_verify_with_python_alipay_sdk() {
    use kassa::providers::alipay::client::AlipayClient;
    use kassa::providers::keys::{SigningKey, VerifyingKey};
    for private in ["alipay_app_private_pkcs1.pem", "alipay_app_private_pkcs8.pem"] {
        let client = AlipayClient::new(
            ALIPAY_APP_ID.into(),
            "http://127.0.0.1:9/gateway.do".into(),
            SigningKey::from_pem(&key(private)).unwrap(),
            VerifyingKey::from_pem(&key("alipay_platform_public.pem")).unwrap(),
        )
        .unwrap();
        let biz = json!({"out_trade_no": "ord_1", "total_amount": "12.34", "subject": "2 杯咖啡 & 1 cake/茶", "timeout_express": "14m"});
        let params = client.signed_params(
            "alipay.trade.precreate",
            &biz,
            Some("http://127.0.0.1:8080/notify/alipay"),
        );
        let check = |params: &std::collections::BTreeMap<String, String>| {
            oracle(
                json!({"op": "verify_request", "public_key": key("alipay_app_public.pem"),
                "any_private_key": key("alipay_app_private_pkcs8.pem"), "params": params}),
            )["valid"]
                .as_bool()
                .unwrap()
        };
        assert!(check(&params), "{private}");
        let mut forged = params.clone();
        forged.insert(
            "biz_content".into(),
            params["biz_content"].replace("12.34", "0.01"),
        );
        assert!(!check(&forged), "{private}: a changed parameter must fail");
    }
}
