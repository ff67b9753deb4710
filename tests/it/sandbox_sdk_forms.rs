//! Request forms the real Alipay gateway accepts, sent to the sandbox by a client that
//! is not kassa's (PyPI python-alipay-sdk): a trade named by `trade_no` alone, and
//! amounts written as JSON numbers, which must be read exactly as written.

use kassa::db::sandbox as store;
use kassa::sandbox::SANDBOX_APP_ID;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::oracle::{key, oracle};

const SCALE: &[(&str, &str)] = &[("KASSA_SANDBOX_TIME_SCALE", "600")];

fn client_keys(app: &TestApp, command: Value) -> Value {
    let mut command = command;
    command["gateway"] = app.url("/sandbox/alipay/gateway.do").into();
    command["app_id"] = SANDBOX_APP_ID.into();
    command["app_private_key"] = key("alipay_app_private_pkcs8.pem").into();
    command["alipay_public_key"] = key("alipay_platform_public.pem").into();
    command
}

/// One of the SDK's `api_alipay_trade_*` methods; its answer's response object.
fn sdk(app: &TestApp, method: &str, kwargs: Value) -> Value {
    let answer = oracle(client_keys(
        app,
        json!({"op": "call_gateway", "method": method, "kwargs": kwargs}),
    ));
    assert!(answer.get("error").is_none(), "{answer}");
    answer["result"].clone()
}

/// The SDK's client sending `biz_content` as exactly this JSON text.
fn sdk_text(app: &TestApp, method: &str, biz_content: &str) -> Value {
    let answer = oracle(client_keys(
        app,
        json!({"op": "call_gateway_text", "method": method, "biz_content": biz_content}),
    ));
    assert!(answer.get("error").is_none(), "{answer}");
    answer["result"].clone()
}

async fn trade(app: &TestApp, out_trade_no: &str) -> Option<store::SandboxTrade> {
    let no = out_trade_no.to_owned();
    app.core
        .db
        .read(move |c| store::find_trade(c, &no))
        .await
        .unwrap()
}

/// A trade the SDK precreated and the wallet scanned (and paid, if `pay`): its trade_no.
async fn scanned_trade(app: &TestApp, out_trade_no: &str, amount: &str, pay: bool) -> String {
    let created = sdk(
        app,
        "api_alipay_trade_precreate",
        json!({"subject": "forms", "out_trade_no": out_trade_no, "total_amount": amount}),
    );
    assert_eq!(created["code"], "10000", "{created}");
    let qr = created["qr_code"].as_str().unwrap();
    if pay {
        app.pay_in_wallet(qr).await;
    } else {
        assert_eq!(app.client.get(qr).send().await.unwrap().status(), 200);
    }
    trade(app, out_trade_no).await.unwrap().trade_no.unwrap()
}

fn outcome(answer: &Value) -> (&str, &str) {
    (
        answer["code"].as_str().unwrap_or_default(),
        answer["sub_code"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn python_alipay_sdk_queries_refunds_and_closes_sandbox_trades_named_by_trade_no_alone() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let paid_no = scanned_trade(&app, "tn_paid", "12.34", true).await;
    let open_no = scanned_trade(&app, "tn_open", "1.00", false).await;

    let queried = sdk(&app, "api_alipay_trade_query", json!({"trade_no": paid_no}));
    assert_eq!(
        (
            outcome(&queried).0,
            queried["out_trade_no"].as_str(),
            queried["trade_no"].as_str(),
            queried["trade_status"].as_str(),
            queried["total_amount"].as_str()
        ),
        (
            "10000",
            Some("tn_paid"),
            Some(paid_no.as_str()),
            Some("TRADE_SUCCESS"),
            Some("12.34")
        ),
        "{queried}"
    );

    let refunded = sdk(
        &app,
        "api_alipay_trade_refund",
        json!({"refund_amount": "2.00", "trade_no": paid_no, "out_request_no": "r1"}),
    );
    assert_eq!(
        (
            outcome(&refunded).0,
            refunded["fund_change"].as_str(),
            refunded["refund_fee"].as_str()
        ),
        ("10000", Some("Y"), Some("2.00")),
        "{refunded}"
    );
    assert_eq!(trade(&app, "tn_paid").await.unwrap().refunded, 200);
    let found = sdk(
        &app,
        "api_alipay_trade_fastpay_refund_query",
        json!({"out_request_no": "r1", "trade_no": paid_no}),
    );
    assert_eq!(found["refund_amount"], "2.00", "{found}");

    let closed = sdk(&app, "api_alipay_trade_close", json!({"trade_no": open_no}));
    assert_eq!(
        (outcome(&closed).0, closed["out_trade_no"].as_str()),
        ("10000", Some("tn_open")),
        "{closed}"
    );
    assert_eq!(
        trade(&app, "tn_open").await.unwrap().status.as_str(),
        "TRADE_CLOSED"
    );

    // Given both numbers, Alipay goes by trade_no.
    let both = sdk(
        &app,
        "api_alipay_trade_query",
        json!({"out_trade_no": "tn_open", "trade_no": paid_no}),
    );
    assert_eq!(both["out_trade_no"], "tn_paid", "{both}");

    // A trade_no the sandbox never issued names no trade, and nothing moves.
    let before = crate::stored::rows(&app).await;
    let unknown = "2026113022001000000000000000";
    for (method, kwargs) in [
        ("api_alipay_trade_query", json!({"trade_no": unknown})),
        ("api_alipay_trade_close", json!({"trade_no": unknown})),
        (
            "api_alipay_trade_refund",
            json!({"refund_amount": "1.00", "trade_no": unknown, "out_request_no": "r9"}),
        ),
    ] {
        let answer = sdk(&app, method, kwargs);
        assert_eq!(
            outcome(&answer),
            ("40004", "ACQ.TRADE_NOT_EXIST"),
            "{method}: {answer}"
        );
    }
    assert_eq!(crate::stored::rows(&app).await, before);
}

#[tokio::test]
async fn amounts_the_sdk_writes_as_json_numbers_are_recorded_to_the_fen_and_odd_ones_refused() {
    let app = TestApp::spawn_sandbox(SCALE).await;

    // A Python float goes out as its shortest text: 88.88, 0.29, 1.1. Through an f64,
    // 0.29 and 1.1 times 100 are 28.999… and 110.000…01.
    let created = sdk(
        &app,
        "api_alipay_trade_precreate",
        json!({"subject": "numbers", "out_trade_no": "num_1", "total_amount": 88.88}),
    );
    assert_eq!(outcome(&created).0, "10000", "{created}");
    assert_eq!(trade(&app, "num_1").await.unwrap().total_amount, 8888);
    app.pay_in_wallet(created["qr_code"].as_str().unwrap()).await;
    for (request_no, amount) in [("r1", json!(0.29)), ("r2", json!(1.1))] {
        let refunded = sdk(
            &app,
            "api_alipay_trade_refund",
            json!({"refund_amount": amount, "out_trade_no": "num_1", "out_request_no": request_no}),
        );
        assert_eq!(outcome(&refunded).0, "10000", "{refunded}");
    }
    assert_eq!(trade(&app, "num_1").await.unwrap().refunded, 139);

    let before = crate::stored::rows(&app).await;
    for amount in [json!(88.885), json!(-1.5), json!(1e-5), json!(1e16), json!(0)] {
        let refused = sdk(
            &app,
            "api_alipay_trade_precreate",
            json!({"subject": "numbers", "out_trade_no": "num_bad", "total_amount": amount}),
        );
        assert_eq!(
            outcome(&refused),
            ("40004", "ACQ.TOTAL_FEE_EXCEED"),
            "{amount}: {refused}"
        );
    }
    for amount in [json!(0.001), json!(-0.29), json!(1e-5), json!(0)] {
        let refused = sdk(
            &app,
            "api_alipay_trade_refund",
            json!({"refund_amount": amount, "out_trade_no": "num_1", "out_request_no": "r3"}),
        );
        assert_eq!(
            outcome(&refused),
            ("40004", "ACQ.INVALID_PARAMETER"),
            "{amount}: {refused}"
        );
    }
    assert_eq!(crate::stored::rows(&app).await, before, "no trade, no refund");
}

#[tokio::test]
async fn a_json_number_amount_is_read_from_its_text_so_forms_that_equal_it_as_a_float_are_refused() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let precreate =
        |amount: &str| format!(r#"{{"out_trade_no":"txt_1","subject":"text","total_amount":{amount}}}"#);
    let refund = |amount: &str| {
        format!(r#"{{"out_trade_no":"txt_1","out_request_no":"r1","refund_amount":{amount}}}"#)
    };

    // Each of these is 88.88 once read as an f64.
    for amount in ["88.880000000000001", "8.888e1", "88.88E0", "8888e-2"] {
        let refused = sdk_text(&app, "alipay.trade.precreate", &precreate(amount));
        assert_eq!(
            outcome(&refused),
            ("40004", "ACQ.TOTAL_FEE_EXCEED"),
            "{amount}: {refused}"
        );
    }
    assert!(trade(&app, "txt_1").await.is_none());

    let created = sdk_text(&app, "alipay.trade.precreate", &precreate("88.88"));
    assert_eq!(outcome(&created).0, "10000", "{created}");
    assert_eq!(trade(&app, "txt_1").await.unwrap().total_amount, 8888);
    app.pay_in_wallet(created["qr_code"].as_str().unwrap()).await;

    let before = crate::stored::rows(&app).await;
    for amount in ["0.290000000000000001", "2.9e-1", "29E-2", "0.29e0"] {
        let refused = sdk_text(&app, "alipay.trade.refund", &refund(amount));
        assert_eq!(
            outcome(&refused),
            ("40004", "ACQ.INVALID_PARAMETER"),
            "{amount}: {refused}"
        );
    }
    assert_eq!(crate::stored::rows(&app).await, before);

    let refunded = sdk_text(&app, "alipay.trade.refund", &refund("0.29"));
    assert_eq!(
        (outcome(&refunded).0, refunded["refund_fee"].as_str()),
        ("10000", Some("0.29")),
        "{refunded}"
    );
    assert_eq!(trade(&app, "txt_1").await.unwrap().refunded, 29);
}
