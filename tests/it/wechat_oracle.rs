//! kassa and its sandbox checked against an independent WeChat Pay implementation:
//! PyPI `wechatpayv3` (public-key mode) and `cryptography` following WeChat's documented
//! algorithm (certificate mode), in `tests/python/wechat_oracle.py`.

use kassa::domain::Currency;
use kassa::sandbox::keys::{WECHAT_APPID, WECHAT_MCHID, WECHAT_PUBLIC_KEY_ID};
use serde_json::{json, Value};

use crate::helpers::{TestApp, WECHAT_APIV3_KEY};
use crate::notify_wechat::{insert_wechat_order, post, spawn_wechat, transaction, PUBLIC_KEY_ID};
use crate::oracle::{key, wechat_oracle};
use crate::sandbox_wechat::{create_wechat_order, SCALE};

/// The oracle blocks while Python runs: off the test's runtime, which serves kassa's
/// client connections.
async fn ask(command: Value) -> Value {
    tokio::task::spawn_blocking(move || wechat_oracle(command))
        .await
        .unwrap()
}

fn headers_of(answer: &Value) -> Vec<(String, String)> {
    answer["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn notices_built_by_wechatpayv3_and_by_cryptography_pay_orders_in_both_key_modes() {
    let app = spawn_wechat(&[]).await;
    let by_key = insert_wechat_order(&app, 1234, Currency::Cny).await;
    let by_cert = insert_wechat_order(&app, 4321, Currency::Cny).await;
    let common = json!({
        "op": "sign_notification", "apiv3_key": WECHAT_APIV3_KEY, "event_type": "TRANSACTION.SUCCESS",
        "timestamp": app.now().timestamp(), "merchant_private_key": key("wechat_merchant_private_pkcs8.pem"),
        "public_key": key("wechat_platform_public.pem"), "public_key_id": PUBLIC_KEY_ID,
    });
    let mut public_mode = common.clone();
    public_mode["mode"] = json!("public_key");
    public_mode["resource"] = transaction(&by_key, 1234);
    public_mode["private_key"] = json!(key("wechat_platform_private_pkcs8.pem"));
    let mut cert_mode = common;
    cert_mode["mode"] = json!("certificate");
    cert_mode["resource"] = transaction(&by_cert, 4321);
    cert_mode["private_key"] = json!(key("wechat_platform_cert_private_pkcs8.pem"));
    cert_mode["certificate"] = json!(key("wechat_platform_cert.pem"));
    let public_signed = ask(public_mode).await;
    let cert_signed = ask(cert_mode).await;
    assert_eq!(public_signed["wechatpayv3_accepts"], true, "{public_signed}");

    let public_reply = post(
        &app,
        public_signed["body"].as_str().unwrap(),
        &headers_of(&public_signed),
    )
    .await;
    let cert_reply = post(
        &app,
        cert_signed["body"].as_str().unwrap(),
        &headers_of(&cert_signed),
    )
    .await;

    assert_eq!(public_reply.0, 204, "{public_reply:?}");
    assert_eq!(cert_reply.0, 204, "{cert_reply:?}");
    assert_eq!(app.order(&by_key).await["status"], "paid");
    assert_eq!(app.order(&by_cert).await["status"], "paid");
    let serials: Vec<String> = app
        .notifications()
        .await
        .iter()
        .map(|n| serde_json::from_str::<Value>(&n.headers).unwrap()["wechatpay-serial"].to_string())
        .collect();
    assert_eq!(
        serials,
        [
            "\"5157F09EFDC096DE15EBE81A47057A7232FE1F5B\"".to_owned(),
            format!("\"{PUBLIC_KEY_ID}\"")
        ]
    );
}

#[tokio::test]
async fn wechatpayv3_verifies_and_decrypts_the_notification_the_sandbox_sent() {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = create_wechat_order(&app, "wx-oracle-1", 2468).await;
    let id = order["id"].as_str().unwrap();
    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    assert_eq!(app.drive_sandbox().await, 1);
    let stored = app.notifications().await.remove(0);
    let headers: serde_json::Map<String, Value> = serde_json::from_str(&stored.headers).unwrap();
    // wechatpayv3 looks headers up in WeChat's own spelling.
    let spelled: serde_json::Map<String, Value> = headers
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .split('-')
                .map(|p| {
                    let mut c = p.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("-");
            (k, v)
        })
        .collect();

    let answer = ask(json!({
        "op": "verify_notification", "headers": spelled, "body": stored.body,
        "apiv3_key": WECHAT_APIV3_KEY, "merchant_private_key": key("wechat_merchant_private_pkcs8.pem"),
        "public_key": key("wechat_platform_public.pem"), "public_key_id": WECHAT_PUBLIC_KEY_ID,
        "mchid": WECHAT_MCHID, "appid": WECHAT_APPID,
    }))
    .await;

    let resource = &answer["result"]["resource"];
    assert_eq!(resource["trade_state"], "SUCCESS", "{answer}");
    assert_eq!(resource["out_trade_no"], id);
    assert_eq!(resource["amount"]["total"], 2468);
    assert_eq!(
        (resource["mchid"].as_str(), resource["appid"].as_str()),
        (Some(WECHAT_MCHID), Some(WECHAT_APPID))
    );
}

#[tokio::test]
async fn wechatpayv3_as_a_client_orders_queries_and_closes_at_the_sandbox_and_verifies_every_answer() {
    let app = TestApp::spawn_sandbox(SCALE).await;

    let answer = ask(json!({
        "op": "client_calls", "gateway": app.url("/sandbox/wechat"), "out_trade_no": "wxv3_client_0001",
        "total": 990, "notify_url": app.url("/notify/wechat"), "apiv3_key": WECHAT_APIV3_KEY,
        "merchant_private_key": key("wechat_merchant_private_pkcs8.pem"),
        "public_key": key("wechat_platform_public.pem"), "public_key_id": WECHAT_PUBLIC_KEY_ID,
        "mchid": WECHAT_MCHID, "appid": WECHAT_APPID,
    }))
    .await;

    assert_eq!(answer["pay"][0], 200, "{answer}");
    assert!(answer["pay"][1]["code_url"]
        .as_str()
        .is_some_and(|u| u.starts_with(&app.url("/sandbox/wallet/"))));
    assert_eq!(answer["query"][0], 200);
    assert_eq!(answer["query"][1]["trade_state"], "NOTPAY");
    assert_eq!(
        answer["close"],
        json!([204, ""]),
        "a signed 204 with an empty body"
    );
    assert_eq!(answer["query_after_close"][1]["trade_state"], "CLOSED");
}
