//! `POST /notify/alipay` against kassa configured for a real Alipay account, with
//! notifications signed by an independent implementation (python-alipay-sdk).

use serde_json::{json, Value};

use crate::helpers::{trade_success, TestApp, ALIPAY_APP_ID};
use crate::oracle::{key, sign_notification, signed_notification, verify_request};

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
    assert_eq!(notifications[0].verdict.as_str(), "applied");
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
    assert_eq!(outbox[0].event_type.as_str(), "order.paid");

    // Alipay resends (new notify_time and sign, same notify_id): answered success, no change.
    let resend = signed_notification(&with(
        &trade_success(&id, "12.34"),
        &[("notify_time", "2026-11-24 11:34:06")],
    ));
    assert_eq!(app.post_alipay_notify(resend).await, (200, "success".into()));
    assert_eq!(app.events(&id).await.len(), 1);
    assert_eq!(app.outbox(&id).await.len(), 1);
    assert_eq!(app.notifications().await[0].verdict.as_str(), "duplicate");
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
    app.core
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
    let mut cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "amount mismatch",
            signed_notification(&with(&good, &[("total_amount", "12.35")])),
            "amount mismatch",
            "amount_mismatch",
        ),
        (
            "amount written differently",
            signed_notification(&with(&good, &[("total_amount", "12.340")])),
            "amount mismatch",
            "amount_mismatch",
        ),
        (
            "another app_id",
            signed_notification(&with(&good, &[("app_id", "2021000000009999")])),
            "app_id",
            "app_id_mismatch",
        ),
        (
            "another seller_id",
            signed_notification(&with(&good, &[("seller_id", "2088000000000099")])),
            "seller_id",
            "seller_id_mismatch",
        ),
        (
            "unknown order",
            signed_notification(&with(&good, &[("out_trade_no", "ord_unknown")])),
            "unknown out_trade_no",
            "unknown_order",
        ),
        (
            "missing sign",
            signed_good
                .split('&')
                .filter(|p| !p.starts_with("sign="))
                .collect::<Vec<_>>()
                .join("&"),
            "missing sign",
            "missing_signature",
        ),
        (
            "sign_type RSA",
            signed_good.replace("sign_type=RSA2", "sign_type=RSA"),
            "sign_type",
            "unsupported_sign_type",
        ),
        (
            "truncated",
            signed_good[..signed_good.len() - 20].to_owned(),
            "bad signature",
            "bad_signature",
        ),
        (
            "not a form",
            "{\"trade_status\":\"TRADE_SUCCESS\"}".to_owned(),
            "missing sign",
            "missing_signature",
        ),
        ("empty", String::new(), "empty body", "malformed_body"),
        (
            "oversized",
            format!("{signed_good}&pad={}", "x".repeat(40 * 1024)),
            "larger than",
            "body_too_large",
        ),
        (
            "unknown trade_status",
            signed_notification(&with(&good, &[("trade_status", "TRADE_PAID")])),
            "unknown trade_status",
            "unknown_trade_status",
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
            "bad_signature",
        ));
    }
    let flipped = {
        let at = signed_good.find("subject=").unwrap() + "subject=".len();
        let mut bytes = signed_good.clone().into_bytes();
        bytes[at] = if bytes[at] == b'2' { b'3' } else { b'2' };
        String::from_utf8(bytes).unwrap()
    };
    cases.push((
        "one byte of the subject",
        flipped,
        "bad signature",
        "bad_signature",
    ));

    for (what, body, reason, code) in cases {
        let before = app.notifications().await.len();
        let (status, reply) = app.post_alipay_notify(body).await;
        assert_eq!((status, reply.as_str()), (200, "failure"), "{what}");
        let recorded = app.notifications().await;
        assert_eq!(recorded.len(), before + 1, "{what}: stored");
        assert_eq!(recorded[0].verdict.as_str(), "rejected", "{what}");
        assert_eq!(recorded[0].reason_code.map(|c| c.code()), Some(code), "{what}");
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
    let verdicts: Vec<String> = app
        .notifications()
        .await
        .into_iter()
        .map(|n| n.verdict.to_string())
        .collect();
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

/// The stored notifications in arrival order: (order id, verdict, reason).
async fn verdicts(app: &TestApp) -> Vec<(Option<String>, String, String)> {
    let mut all: Vec<_> = app
        .notifications()
        .await
        .into_iter()
        .map(|n| {
            (
                n.order_id.map(|o| o.to_string()),
                n.verdict.as_str().to_owned(),
                n.reason.unwrap_or_default(),
            )
        })
        .collect();
    all.reverse();
    all
}

#[tokio::test]
async fn trade_closed_closes_a_pending_order_but_never_a_paid_one() {
    // Alipay's trade query shows the paid trade still TRADE_SUCCESS: the close is not a
    // full refund either (a confirmed one is in alipay_external_refunds).
    let gateway = crate::gateway_standin::GatewayStandin::start().await;
    gateway.answer_method(
        "alipay.trade.query",
        crate::gateway_standin::Reply::Signed(json!({"code": "10000", "msg": "Success",
            "trade_status": "TRADE_SUCCESS", "total_amount": "12.34", "trade_no": "2026112422001446880501234567",
            "send_pay_date": "2026-11-24 11:30:06"})),
    );
    let app = TestApp::spawn_alipay_via(&gateway, &[]).await;
    let pending = app.insert_order("tc-1", 1234).await;
    let paid = app.insert_order("tc-2", 1234).await;
    assert_eq!(
        app.post_alipay_notify(signed_notification(&trade_success(&paid, "12.34")))
            .await,
        (200, "success".into())
    );
    // A TRADE_CLOSED has no payment time; here it is sent empty (and, as the rule
    // says, left out of the signature).
    let closing = |id: &str| {
        with(
            &trade_success(id, "12.34"),
            &[("trade_status", "TRADE_CLOSED"), ("gmt_payment", "")],
        )
    };
    for (what, params) in [
        ("TRADE_CLOSED, pending order", closing(&pending)),
        ("TRADE_CLOSED, paid order", closing(&paid)),
    ] {
        let reply = app.post_alipay_notify(signed_notification(&params)).await;
        assert_eq!(reply, (200, "success".into()), "{what}");
    }

    let stored = verdicts(&app).await;
    let (p, q) = (Some(paid.clone()), Some(pending.clone()));
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert_eq!((&stored[0].0, stored[0].1.as_str()), (&p, "applied"));
    assert_eq!((&stored[1].0, stored[1].1.as_str()), (&q, "applied"));
    assert_eq!((&stored[2].0, stored[2].1.as_str()), (&p, "ignored"));
    assert!(stored[2].2.contains("not a close"), "{stored:?}");
    assert_eq!(
        gateway.methods(),
        ["alipay.trade.query"],
        "the close on the paid order was checked with Alipay"
    );

    assert_eq!(app.order(&pending).await["status"], "closed");
    let closed = app.events(&pending).await;
    assert_eq!(closed.len(), 1);
    assert_eq!(
        (
            closed[0]["transition"].as_str(),
            closed[0]["outcome"].as_str(),
            closed[0]["from"].as_str(),
            closed[0]["to"].as_str(),
            closed[0]["source"].as_str()
        ),
        (
            Some("close"),
            Some("applied"),
            Some("pending"),
            Some("closed"),
            Some("notification")
        )
    );
    let kinds = |entries: Vec<kassa::db::outbox::OutboxRow>| -> Vec<String> {
        entries.into_iter().map(|e| e.event_type.to_string()).collect()
    };
    assert_eq!(kinds(app.outbox(&pending).await), ["order.closed"]);

    let still = app.order(&paid).await;
    assert_eq!(
        (still["status"].as_str(), still["refunded_amount"].as_i64()),
        (Some("paid"), Some(0))
    );
    let history = app.events(&paid).await;
    assert_eq!(history.len(), 1, "only the payment: {history:?}");
    assert_eq!(history[0]["transition"], "pay");
    assert_eq!(kinds(app.outbox(&paid).await), ["order.paid"]);
}

#[tokio::test]
async fn trade_finished_pays_a_pending_order() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("tf-1", 1234).await;
    let params = with(
        &trade_success(&id, "12.34"),
        &[("trade_status", "TRADE_FINISHED")],
    );

    let reply = app.post_alipay_notify(signed_notification(&params)).await;

    assert_eq!(reply, (200, "success".into()));
    let order = app.order(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["provider_trade_no"].as_str()),
        (Some("paid"), Some("2026112422001446880501234567"))
    );
    let events = app.events(&id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0]["transition"].as_str(), events[0]["outcome"].as_str()),
        (Some("pay"), Some("applied"))
    );
    assert!(events[0]["detail"]
        .as_str()
        .is_some_and(|d| d.contains("trade_status=TRADE_FINISHED")));
    assert_eq!(
        verdicts(&app).await,
        [(Some(id.clone()), "applied".to_owned(), String::new())]
    );
    assert_eq!(app.outbox(&id).await.len(), 1);
}

#[tokio::test]
async fn an_empty_parameter_is_sent_and_left_out_of_the_signature() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("empty-1", 1234).await;
    let params = with(&trade_success(&id, "12.34"), &[("passback_params", "")]);

    let signed = sign_notification(&params);
    let body = signed["body"].as_str().unwrap().to_owned();
    let reply = app.post_alipay_notify(body.clone()).await;

    assert!(
        body.contains("&passback_params=&") || body.ends_with("&passback_params="),
        "{body}"
    );
    assert_eq!(
        signed["verifies_as_sent"], false,
        "python-alipay-sdk's verify() counts the empty value, so it is really on the wire"
    );
    assert_eq!(signed["verifies_without_empty"], true);
    assert_eq!(reply, (200, "success".into()));
    assert_eq!(app.order(&id).await["status"], "paid");
}

#[tokio::test]
async fn a_database_failure_answers_failure_stores_an_error_verdict_and_a_resend_applies() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("dberr-1", 1234).await;
    let other = app.insert_order("dberr-2", 1234).await;
    // A separate connection makes writing this one order's history fail.
    let breaker = app.db().clone();
    let trigger = if breaker.is_postgres() {
        format!(
            "CREATE FUNCTION break_history() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
             CREATE TRIGGER break_history BEFORE INSERT ON order_events FOR EACH ROW \
             WHEN (NEW.order_id = '{id}') EXECUTE FUNCTION break_history();"
        )
    } else {
        format!(
            "CREATE TRIGGER break_history BEFORE INSERT ON order_events WHEN NEW.order_id = '{id}' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        )
    };
    breaker.execute_batch(&trigger).unwrap();
    let body = signed_notification(&trade_success(&id, "12.34"));
    let order_before = app.order(&id).await;

    let (status, reply) = app.post_alipay_notify(body.clone()).await;

    assert_eq!((status, reply.as_str()), (200, "failure"));
    let stored = app.notifications().await;
    assert_eq!(stored.len(), 1, "the request is kept");
    assert_eq!(stored[0].verdict.as_str(), "error");
    assert!(
        stored[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("injected failure")),
        "{:?}",
        stored[0].reason
    );
    assert_eq!(stored[0].body, body, "stored raw");
    assert_eq!(app.order(&id).await, order_before, "nothing half-applied");
    assert!(app.events(&id).await.is_empty());
    assert!(app.outbox(&id).await.is_empty());
    // Other orders are not affected.
    let (_, reply) = app
        .post_alipay_notify(signed_notification(&trade_success(&other, "12.34")))
        .await;
    assert_eq!(reply, "success");

    let untrigger = if breaker.is_postgres() {
        "DROP TRIGGER break_history ON order_events"
    } else {
        "DROP TRIGGER break_history"
    };
    breaker.execute_batch(untrigger).unwrap();
    assert_eq!(
        app.post_alipay_notify(body).await,
        (200, "success".into()),
        "Alipay's resend applies"
    );
    assert_eq!(app.order(&id).await["status"], "paid");
    assert_eq!(app.events(&id).await.len(), 1);
    assert_eq!(
        verdicts(&app)
            .await
            .into_iter()
            .map(|(_, v, _)| v)
            .collect::<Vec<_>>(),
        ["error", "applied", "applied"]
    );
}

#[tokio::test]
async fn a_notification_that_cannot_be_stored_at_all_answers_failure_and_changes_nothing() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("dbfail-1", 1234).await;
    let breaker = app.db().clone();
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
    assert!(app.events(&id).await.is_empty());
    assert!(app.outbox(&id).await.is_empty());
    assert!(app.notifications().await.is_empty(), "nowhere to keep it");
    assert_eq!(
        app.post_alipay_notify(body).await.1,
        "success",
        "the resend succeeds"
    );
    assert_eq!(app.order(&id).await["status"], "paid");
}

#[tokio::test]
async fn kassa_request_signatures_verify_with_python_alipay_sdk() {
    use kassa::providers::alipay::client::{AlipayClient, TIMEOUT};
    use kassa::providers::keys::{SigningKey, VerifyingKey};
    for private in ["alipay_app_private_pkcs1.pem", "alipay_app_private_pkcs8.pem"] {
        let client = AlipayClient::new(
            ALIPAY_APP_ID.into(),
            // Never called: only the signed parameters are used.
            "http://alipay.invalid/gateway.do".into(),
            SigningKey::from_pem(&key(private)).unwrap(),
            VerifyingKey::from_pem(&key("alipay_platform_public.pem")).unwrap(),
            TIMEOUT,
        )
        .unwrap();
        let biz = json!({"out_trade_no": "ord_1", "total_amount": "12.34", "subject": "2 杯咖啡 & 1 cake/茶", "timeout_express": "14m"});
        let params = client.signed_params(
            "alipay.trade.precreate",
            &biz,
            Some("http://127.0.0.1:8080/notify/alipay"),
            chrono::Utc::now(),
        );
        assert!(verify_request(&params), "{private}");
        let mut forged = params.clone();
        forged.insert(
            "biz_content".into(),
            params["biz_content"].replace("12.34", "0.01"),
        );
        assert!(
            !verify_request(&forged),
            "{private}: a changed parameter must fail"
        );
    }
}
