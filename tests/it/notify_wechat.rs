//! `POST /notify/wechat` on a kassa configured for a real WeChat Pay merchant (the test
//! vectors' keys, both a platform public key and a platform certificate, as during
//! WeChat's switch): notifications signed and encrypted as WeChat does, in both key
//! modes, and every way one can be wrong.

use base64::Engine;
use chrono::Duration;
use kassa::domain::{Amount, Currency, NewOrder, OrderId, OutTradeNo, ProviderKind};
use kassa::providers::keys::SigningKey;
use kassa::providers::wechat::ApiV3Key;
use serde_json::{json, Value};

use crate::helpers::{unique, TestApp, WECHAT_APIV3_KEY};
use crate::oracle::key;

pub const MCHID: &str = "1230000109";
pub const APPID: &str = "wxd678efh567hg6787";
pub const PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0112345678202611240000000000000001";
pub const CERT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232FE1F5B";
pub const MERCHANT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";

fn keys_dir() -> String {
    format!("{}/tests/vectors/keys", env!("CARGO_MANIFEST_DIR"))
}

/// kassa for the vectors' WeChat merchant; its API base refuses connections (no test
/// here calls it).
pub async fn spawn_wechat(extra: &[(&str, &str)]) -> TestApp {
    spawn_wechat_timing_out_after(extra, None).await
}

/// As `spawn_wechat`; with a `timeout`, every WeChat call gives up after it instead of
/// 15 s.
pub async fn spawn_wechat_timing_out_after(
    extra: &[(&str, &str)],
    timeout: Option<std::time::Duration>,
) -> TestApp {
    let dir = keys_dir();
    let merchant = format!("{dir}/wechat_merchant_private_pkcs1.pem");
    let public = format!("{dir}/wechat_platform_public.pem");
    let cert = format!("{dir}/wechat_platform_cert.pem");
    let mut env: Vec<(&str, &str)> = vec![
        ("KASSA_WECHAT_MCHID", MCHID),
        ("KASSA_WECHAT_APPID", APPID),
        ("KASSA_WECHAT_APIV3_KEY", WECHAT_APIV3_KEY),
        ("KASSA_WECHAT_MERCHANT_SERIAL_NO", MERCHANT_SERIAL),
        ("KASSA_WECHAT_MERCHANT_PRIVATE_KEY_FILE", &merchant),
        ("KASSA_WECHAT_PLATFORM_PUBLIC_KEY_FILE", &public),
        ("KASSA_WECHAT_PLATFORM_PUBLIC_KEY_ID", PUBLIC_KEY_ID),
        ("KASSA_WECHAT_PLATFORM_CERTIFICATE_FILES", &cert),
        ("KASSA_WECHAT_API_BASE", "http://127.0.0.1:9"),
    ];
    env.extend_from_slice(extra);
    match timeout {
        Some(t) => TestApp::spawn_with_settings_timing_out_after(&env, t).await,
        None => TestApp::spawn_with_settings(&env).await,
    }
}

/// Stores a pending WeChat order directly (no API call) and returns its id.
pub async fn insert_wechat_order(app: &TestApp, amount: i64, currency: Currency) -> String {
    let order = NewOrder {
        id: OrderId::generate(),
        out_trade_no: OutTradeNo::parse(&format!("wx-{}", unique())).unwrap(),
        amount: Amount::from_minor(amount, currency).unwrap(),
        subject: "Jasmine tea".into(),
        provider: ProviderKind::Wechat,
        notify_url: None,
        return_url: None,
        metadata: Default::default(),
        created_at: app.now(),
        expires_at: app.now() + Duration::minutes(15),
    };
    let id = order.id.to_string();
    app.core
        .db
        .write(move |c| kassa::db::orders::insert(c, &order, Some("weixin://wxpay/bizpayurl?pr=x")))
        .await
        .unwrap();
    id
}

/// The decrypted resource of a TRANSACTION.SUCCESS, as WeChat sends it.
pub fn transaction(order_id: &str, total: i64) -> Value {
    json!({
        "mchid": MCHID, "appid": APPID, "out_trade_no": order_id,
        "transaction_id": "4200000000202611241234567890", "trade_type": "NATIVE",
        "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": "",
        "success_time": "2026-11-24T11:30:06+08:00", "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"},
    })
}

/// A notification as WeChat builds it: the resource encrypted with `apiv3`, the body
/// signed by `signer` under `serial` at `timestamp`.
pub struct Notice {
    pub event_type: &'static str,
    pub resource: Value,
    pub apiv3: String,
    pub serial: String,
    pub signer: &'static str,
    pub timestamp: i64,
}

impl Notice {
    pub fn paying(app: &TestApp, order_id: &str, total: i64) -> Notice {
        Notice {
            event_type: "TRANSACTION.SUCCESS",
            resource: transaction(order_id, total),
            apiv3: WECHAT_APIV3_KEY.into(),
            serial: PUBLIC_KEY_ID.into(),
            signer: "wechat_platform_private_pkcs8.pem",
            timestamp: app.now().timestamp(),
        }
    }

    pub fn body(&self) -> String {
        let nonce = "fdasflkja484";
        let original = if self.event_type.starts_with("REFUND") {
            "refund"
        } else {
            "transaction"
        };
        let ciphertext = ApiV3Key::new(self.apiv3.as_bytes())
            .unwrap()
            .encrypt(nonce, original, self.resource.to_string().as_bytes())
            .unwrap();
        json!({
            "id": format!("EV-{}", unique()), "create_time": "2026-11-24T11:30:07+08:00",
            "resource_type": "encrypt-resource", "event_type": self.event_type, "summary": "支付成功",
            "resource": {"original_type": original, "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": ciphertext, "associated_data": original, "nonce": nonce},
        })
        .to_string()
    }

    pub fn headers(&self, body: &str) -> Vec<(String, String)> {
        let nonce = format!("N{:031}", unique());
        let message = format!("{}\n{nonce}\n{body}\n", self.timestamp);
        let signer = SigningKey::from_pem(&key(self.signer)).unwrap();
        vec![
            ("Wechatpay-Timestamp".into(), self.timestamp.to_string()),
            ("Wechatpay-Nonce".into(), nonce),
            ("Wechatpay-Serial".into(), self.serial.clone()),
            (
                "Wechatpay-Signature-Type".into(),
                "WECHATPAY2-SHA256-RSA2048".into(),
            ),
            (
                "Wechatpay-Signature".into(),
                signer.sign_base64(message.as_bytes()),
            ),
        ]
    }
}

pub async fn post(app: &TestApp, body: &str, headers: &[(String, String)]) -> (u16, String) {
    let mut request = app
        .client
        .post(app.url("/notify/wechat"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn send(app: &TestApp, notice: &Notice) -> (u16, String) {
    let body = notice.body();
    post(app, &body, &notice.headers(&body)).await
}

/// The order, its history and its webhooks, to show that nothing changed.
async fn snapshot(app: &TestApp, id: &str) -> (Value, usize, usize) {
    (
        app.order(id).await,
        app.events(id).await.len(),
        app.outbox(id).await.len(),
    )
}

async fn last_reason(app: &TestApp) -> String {
    app.notifications().await[0]
        .reason_code
        .map(|r| r.code().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_notice_signed_with_the_platform_public_key_pays_the_order() {
    let app = spawn_wechat(&[]).await;
    let id = insert_wechat_order(&app, 1234, Currency::Cny).await;

    let (status, body) = send(&app, &Notice::paying(&app, &id, 1234)).await;

    assert_eq!((status, body.as_str()), (204, ""));
    let order = app.order(&id).await;
    assert_eq!(order["status"], "paid");
    assert_eq!(order["provider_trade_no"], "4200000000202611241234567890");
    assert_eq!(
        order["paid_at"], "2026-11-24T03:30:06.000Z",
        "success_time is +08:00"
    );
    assert_eq!((app.events(&id).await.len(), app.outbox(&id).await.len()), (1, 1));
    let stored = &app.notifications().await[0];
    assert_eq!(
        (
            stored.provider.as_str(),
            stored.verdict.as_str(),
            last_reason(&app).await.as_str()
        ),
        ("wechat", "applied", "paid")
    );
    assert!(stored.headers.contains(PUBLIC_KEY_ID), "raw headers stored");
}

#[tokio::test]
async fn the_same_order_paid_by_a_certificate_signed_notice_is_paid_as_well() {
    let app = spawn_wechat(&[]).await;
    let id = insert_wechat_order(&app, 1234, Currency::Cny).await;
    let notice = Notice {
        // Serials compare as hex, whatever the case.
        serial: CERT_SERIAL.to_ascii_lowercase(),
        signer: "wechat_platform_cert_private_pkcs8.pem",
        ..Notice::paying(&app, &id, 1234)
    };

    let (status, _) = send(&app, &notice).await;

    assert_eq!(status, 204);
    assert_eq!(app.order(&id).await["status"], "paid");
    assert_eq!(last_reason(&app).await, "paid");
}

#[tokio::test]
async fn a_notice_signed_with_an_expired_but_configured_certificate_is_still_accepted() {
    let app = spawn_wechat(&[]).await;
    // The certificate ends on 2031-01-01: kassa's clock is well past it.
    app.clock.set("2032-06-01T00:00:00Z".parse().unwrap());
    let id = insert_wechat_order(&app, 500, Currency::Cny).await;
    let notice = Notice {
        serial: CERT_SERIAL.into(),
        signer: "wechat_platform_cert_private_pkcs8.pem",
        ..Notice::paying(&app, &id, 500)
    };

    let (status, _) = send(&app, &notice).await;

    assert_eq!(status, 204, "WeChat decides which key signs, not kassa's clock");
    assert_eq!(app.order(&id).await["status"], "paid");
}

#[tokio::test]
async fn an_expired_configured_certificate_is_warned_about_at_start_up_and_once_when_its_notices_are_accepted(
) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    // The binary runs on the machine's clock: a certificate that ended in 2025 is expired
    // by it, whatever today is.
    let made = crate::oracle::wechat_oracle(json!({
        "op": "make_certificate", "private_key": key("wechat_platform_cert_private_pkcs8.pem"),
        "serial": "1E0A7E9F3C2B1D4E5F60718293A4B5C6D7E8F901",
        "not_before": "2024-01-01T00:00:00Z", "not_after": "2025-01-01T00:00:00Z",
    }));
    let (pem, serial) = (made["pem"].as_str().unwrap(), made["serial"].as_str().unwrap());
    let cert = dir.path().join("expired_platform_cert.pem");
    std::fs::write(&cert, pem).unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    // The order, stored before kassa starts, as an earlier run would have left it.
    let db = kassa::db::Database::open(&data_dir.join("kassa.db")).unwrap();
    let now = chrono::Utc::now();
    let order = NewOrder {
        id: OrderId::generate(),
        out_trade_no: OutTradeNo::parse("wx-expired-cert").unwrap(),
        amount: Amount::from_minor(500, Currency::Cny).unwrap(),
        subject: "Jasmine tea".into(),
        provider: ProviderKind::Wechat,
        notify_url: None,
        return_url: None,
        metadata: Default::default(),
        created_at: now,
        expires_at: now + Duration::minutes(15),
    };
    let id = order.id.to_string();
    db.write(move |c| kassa::db::orders::insert(c, &order, Some("weixin://wxpay/bizpayurl?pr=x")))
        .await
        .unwrap();
    drop(db);
    let keys = keys_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kassa"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--public-url",
            "https://shop.example.com",
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .envs([
            ("KASSA_LOG_FORMAT", "json".to_owned()),
            ("KASSA_WECHAT_MCHID", MCHID.to_owned()),
            ("KASSA_WECHAT_APPID", APPID.to_owned()),
            ("KASSA_WECHAT_APIV3_KEY", WECHAT_APIV3_KEY.to_owned()),
            ("KASSA_WECHAT_MERCHANT_SERIAL_NO", MERCHANT_SERIAL.to_owned()),
            (
                "KASSA_WECHAT_MERCHANT_PRIVATE_KEY_FILE",
                format!("{keys}/wechat_merchant_private_pkcs8.pem"),
            ),
            (
                "KASSA_WECHAT_PLATFORM_PUBLIC_KEY_FILE",
                format!("{keys}/wechat_platform_public.pem"),
            ),
            ("KASSA_WECHAT_PLATFORM_PUBLIC_KEY_ID", PUBLIC_KEY_ID.to_owned()),
            (
                "KASSA_WECHAT_PLATFORM_CERTIFICATE_FILES",
                cert.display().to_string(),
            ),
            ("KASSA_WECHAT_API_BASE", "http://127.0.0.1:9".to_owned()),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Every log line until kassa is gone: its writer is synchronous, so a line logged
    // while handling a request is in the pipe before the answer leaves.
    let stderr = child.stderr.take().unwrap();
    let logged = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .map(|l| serde_json::from_str::<Value>(&l).unwrap_or(Value::String(l)))
            .collect::<Vec<Value>>()
    });
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let address = first
        .trim()
        .strip_prefix("kassa listening on ")
        .map(str::to_owned);
    let notice = crate::oracle::wechat_oracle(json!({
        "op": "sign_notification", "mode": "certificate", "certificate": pem,
        "private_key": key("wechat_platform_cert_private_pkcs8.pem"), "apiv3_key": WECHAT_APIV3_KEY,
        "event_type": "TRANSACTION.SUCCESS", "resource": transaction(&id, 500),
        "timestamp": chrono::Utc::now().timestamp(),
    }));
    let mut statuses = Vec::new();
    if let Some(address) = &address {
        // The same notice twice, as WeChat resends one (or anyone replays it).
        for _ in 0..2 {
            let mut request = crate::helpers::http_client()
                .post(format!("{address}/notify/wechat"))
                .body(notice["body"].as_str().unwrap().to_owned());
            for (name, value) in notice["headers"].as_object().unwrap() {
                request = request.header(name.as_str(), value.as_str().unwrap());
            }
            statuses.push(request.send().await.unwrap().status().as_u16());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let logged = logged.join().unwrap();

    assert!(address.is_some(), "kassa did not start: {first:?} {logged:#?}");
    assert_eq!(statuses, [204, 204], "{logged:#?}");
    let conn = crate::helpers::raw_connection(&data_dir.join("kassa.db"));
    let status: String = conn
        .query_row("SELECT status FROM orders WHERE id = ?1", [&id], |r| r.get(0))
        .unwrap();
    assert_eq!(
        status, "paid",
        "WeChat decides which key signs, not kassa's clock"
    );
    let warnings = |message: &str| {
        logged
            .iter()
            .filter(|l| {
                l["level"] == "WARN"
                    && l["serial"] == serial
                    && l["message"].as_str().is_some_and(|m| m.contains(message))
            })
            .count()
    };
    assert_eq!(
        warnings("or has expired"),
        1,
        "the start-up warning names the expired certificate: {logged:#?}"
    );
    assert_eq!(
        warnings("notification signed with an expired platform certificate; accepted"),
        1,
        "one warning for both notices, not one per notice: {logged:#?}"
    );
}

#[tokio::test]
async fn every_rejection_leaves_the_order_unchanged_and_is_stored_with_its_reason() {
    let app = spawn_wechat(&[]).await;
    let id = insert_wechat_order(&app, 1234, Currency::Cny).await;
    let usd = insert_wechat_order(&app, 1234, Currency::Usd).await;
    let good = || Notice::paying(&app, &id, 1234);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut n = good();
        f(&mut n.resource);
        n
    };
    type Case = (&'static str, String, Vec<(String, String)>, &'static str);
    let signed = |n: Notice| {
        let body = n.body();
        let headers = n.headers(&body);
        (body, headers)
    };
    let mut cases: Vec<Case> = Vec::new();
    let mut push =
        |what: &'static str, (body, headers): (String, Vec<(String, String)>), code: &'static str| {
            cases.push((what, body, headers, code));
        };
    let (body, mut headers) = signed(good());
    headers[4].1 = {
        let mut sig = base64::engine::general_purpose::STANDARD
            .decode(&headers[4].1)
            .unwrap();
        sig[10] ^= 1;
        base64::engine::general_purpose::STANDARD.encode(sig)
    };
    push("a changed signature", (body, headers), "bad_signature");
    let (body, headers) = signed(good());
    push(
        "a body changed after signing",
        (body.replace("支付成功", "x"), headers),
        "bad_signature",
    );
    push(
        "WeChat's probe signature",
        {
            let (body, mut headers) = signed(good());
            headers[4].1 = "WECHATPAY/SIGNTEST/abcdefg".into();
            (body, headers)
        },
        "bad_signature",
    );
    push(
        "an unknown serial",
        signed(Notice {
            serial: "PUB_KEY_ID_0199999999202611240000000000000001".into(),
            ..good()
        }),
        "unknown_serial",
    );
    push(
        "the public key's signature under the certificate's serial",
        signed(Notice {
            serial: CERT_SERIAL.into(),
            ..good()
        }),
        "bad_signature",
    );
    push(
        "a timestamp six minutes old",
        signed(Notice {
            timestamp: app.now().timestamp() - 360,
            ..good()
        }),
        "stale_timestamp",
    );
    push(
        "a timestamp six minutes ahead",
        signed(Notice {
            timestamp: app.now().timestamp() + 360,
            ..good()
        }),
        "stale_timestamp",
    );
    for (what, timestamp) in [
        ("a timestamp of i64::MIN", i64::MIN),
        ("a timestamp of i64::MAX", i64::MAX),
    ] {
        push(what, signed(Notice { timestamp, ..good() }), "stale_timestamp");
    }
    for (what, digits) in [
        (
            "a timestamp of more digits than an i64 holds",
            "99999999999999999999999999",
        ),
        ("a timestamp below i64::MIN", "-9223372036854775809"),
    ] {
        let (body, mut headers) = signed(good());
        headers[0].1 = digits.into();
        push(what, (body, headers), "malformed_field");
    }
    push(
        "another APIv3 key",
        signed(Notice {
            apiv3: "otherApiV3Key0123456789abcdefghi".into(),
            ..good()
        }),
        "decrypt_failed",
    );
    let tampered = {
        let n = good();
        let body: Value = serde_json::from_str(&n.body()).unwrap();
        let mut body = body;
        let ct = body["resource"]["ciphertext"].as_str().unwrap().to_owned();
        let mut bytes = base64::engine::general_purpose::STANDARD.decode(ct).unwrap();
        bytes[3] ^= 0x40;
        body["resource"]["ciphertext"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        let body = body.to_string();
        let headers = n.headers(&body);
        (body, headers)
    };
    push("a tampered ciphertext, re-signed", tampered, "decrypt_failed");
    push(
        "another amount",
        signed(with(&|r| r["amount"]["total"] = json!(1235))),
        "amount_mismatch",
    );
    push(
        "another currency",
        signed(Notice::paying(&app, &usd, 1234)),
        "currency_mismatch",
    );
    push(
        "another merchant",
        signed(with(&|r| r["mchid"] = json!("1230000999"))),
        "mchid_mismatch",
    );
    push(
        "another app",
        signed(with(&|r| r["appid"] = json!("wx0000000000000001"))),
        "app_id_mismatch",
    );
    let not_json = {
        let n = good();
        let body = "{\"id\":\"EV-1\",\"event_type\":".to_owned();
        let headers = n.headers(&body);
        (body, headers)
    };
    push("malformed JSON, validly signed", not_json, "malformed_body");
    let oversized = {
        let n = good();
        let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(40 * 1024));
        let headers = n.headers(&body);
        (body, headers)
    };
    push("a body over the limit", oversized, "body_too_large");
    for (name, what) in [
        ("Wechatpay-Timestamp", "no Wechatpay-Timestamp header"),
        ("Wechatpay-Nonce", "no Wechatpay-Nonce header"),
        ("Wechatpay-Serial", "no Wechatpay-Serial header"),
        ("Wechatpay-Signature", "no Wechatpay-Signature header"),
    ] {
        let (body, mut headers) = signed(good());
        headers.retain(|(k, _)| k != name);
        push(what, (body, headers), "missing_header");
    }
    push(
        "a signature type other than WeChat's",
        {
            let (body, mut headers) = signed(good());
            headers[3].1 = "WECHATPAY2-SM2-WITH-SM3".into();
            (body, headers)
        },
        "unsupported_sign_type",
    );

    let before = snapshot(&app, &id).await;
    let usd_before = snapshot(&app, &usd).await;
    for (what, body, headers, code) in cases {
        let (status, reply) = post(&app, &body, &headers).await;

        assert!((400..600).contains(&status), "{what}: {status}");
        let reply: Value = serde_json::from_str(&reply).unwrap_or_else(|_| panic!("{what}: {reply}"));
        assert_eq!(reply["code"], "FAIL", "{what}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}");
        assert_eq!(last_reason(&app).await, code, "{what}");
        assert_eq!(
            app.notifications().await[0].verdict.as_str(),
            "rejected",
            "{what}"
        );
        assert_eq!(snapshot(&app, &id).await, before, "{what}: nothing changed");
        assert_eq!(snapshot(&app, &usd).await, usd_before, "{what}: nothing changed");
    }
    // The genuine notice still pays.
    assert_eq!(send(&app, &good()).await.0, 204);
    assert_eq!(app.order(&id).await["status"], "paid");
}

#[tokio::test]
async fn a_hundred_concurrent_copies_make_one_transition_one_history_row_and_one_webhook() {
    let app = spawn_wechat(&[]).await;
    let id = insert_wechat_order(&app, 1234, Currency::Cny).await;
    let notice = Notice::paying(&app, &id, 1234);
    let body = notice.body();
    let headers = notice.headers(&body);

    let sends: Vec<_> = (0..100)
        .map(|_| {
            let (client, url, body, headers) = (
                app.client.clone(),
                app.url("/notify/wechat"),
                body.clone(),
                headers.clone(),
            );
            tokio::spawn(async move {
                let mut request = client.post(url).body(body);
                for (k, v) in &headers {
                    request = request.header(k.as_str(), v.as_str());
                }
                request.send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for send in sends {
        statuses.push(send.await.unwrap());
    }

    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    assert_eq!(app.order(&id).await["status"], "paid");
    assert_eq!((app.events(&id).await.len(), app.outbox(&id).await.len()), (1, 1));
    let notes = app.notifications().await;
    assert_eq!(notes.len(), 100);
    assert_eq!(
        notes.iter().filter(|n| n.verdict.as_str() == "applied").count(),
        1
    );
    assert_eq!(
        notes.iter().filter(|n| n.verdict.as_str() == "duplicate").count(),
        99
    );
}

#[tokio::test]
async fn a_closed_order_paid_by_a_late_notice_takes_the_late_payment_path() {
    let app = spawn_wechat(&[]).await;
    let id = insert_wechat_order(&app, 800, Currency::Cny).await;
    app.close_locally(&id).await;

    let (status, _) = send(&app, &Notice::paying(&app, &id, 800)).await;

    assert_eq!(status, 204);
    let order = app.order(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["late_payment"].as_bool()),
        (Some("paid"), Some(true))
    );
    assert_eq!(last_reason(&app).await, "late_payment");
}

#[tokio::test]
async fn a_refund_made_in_the_merchant_console_is_recorded_as_an_external_refund_and_applied() {
    let app = spawn_wechat(&[]).await;
    let id = insert_wechat_order(&app, 1000, Currency::Cny).await;
    assert_eq!(send(&app, &Notice::paying(&app, &id, 1000)).await.0, 204);
    let refund = |no: &str, amount: i64, event: &'static str| Notice {
        event_type: event,
        resource: json!({
            "mchid": MCHID, "out_trade_no": id, "transaction_id": "4200000000202611241234567890",
            "out_refund_no": no, "refund_id": "50300000000000000000000001",
            "refund_status": event.trim_start_matches("REFUND."), "success_time": "2026-11-24T12:00:00+08:00",
            "user_received_account": "支付用户零钱",
            "amount": {"total": 1000, "refund": amount, "payer_total": 1000, "payer_refund": amount},
        }),
        ..Notice::paying(&app, &id, 1000)
    };

    let failed = send(&app, &refund("console-1", 400, "REFUND.ABNORMAL")).await;
    let after_failed = snapshot(&app, &id).await;
    let applied = send(&app, &refund("console-2", 400, "REFUND.SUCCESS")).await;
    let again = send(&app, &refund("console-2", 400, "REFUND.SUCCESS")).await;
    let too_much = send(&app, &refund("console-3", 700, "REFUND.SUCCESS")).await;

    assert_eq!(
        failed.0, 204,
        "an unknown refund that failed is only acknowledged"
    );
    assert_eq!(after_failed.0["refunded_amount"], 0);
    assert_eq!((applied.0, again.0), (204, 204));
    let order = app.order(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("partially_refunded"), Some(400))
    );
    let refunds: Value = app
        .get(&format!("/api/v1/orders/{id}/refunds"))
        .await
        .json()
        .await
        .unwrap();
    let rows = refunds["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{refunds}");
    assert_eq!(
        (
            rows[0]["id"].as_str(),
            rows[0]["status"].as_str(),
            rows[0]["amount"].as_i64()
        ),
        (Some("console-2"), Some("succeeded"), Some(400))
    );
    assert_eq!(too_much.0, 400, "more than is left cannot be recorded");
    let notes = app.notifications().await;
    let reasons: Vec<&str> = notes[..4]
        .iter()
        .rev()
        .map(|n| n.reason_code.map(|r| r.code()).unwrap_or_default())
        .collect();
    assert_eq!(
        reasons,
        [
            "refund_notice",
            "external_refund",
            "refund_already_settled",
            "not_allowed"
        ]
    );
    assert_eq!(
        app.outbox(&id).await.len(),
        2,
        "order.paid and one refund webhook"
    );
}

#[tokio::test]
async fn wechat_enabled_without_any_platform_key_or_certificate_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let sources = kassa::config::ConfigSources {
        file: None,
        env: vec![
            ("KASSA_WECHAT_MCHID".into(), MCHID.into()),
            ("KASSA_WECHAT_APPID".into(), APPID.into()),
            ("KASSA_WECHAT_APIV3_KEY".into(), WECHAT_APIV3_KEY.into()),
            ("KASSA_WECHAT_MERCHANT_SERIAL_NO".into(), MERCHANT_SERIAL.into()),
            (
                "KASSA_WECHAT_MERCHANT_PRIVATE_KEY_FILE".into(),
                format!("{}/wechat_merchant_private_pkcs1.pem", keys_dir()),
            ),
        ],
        flags: vec![(
            kassa::config::keys::SERVER_DATA_DIR.name,
            dir.path().display().to_string(),
            "--data-dir",
        )],
    }
    .with_no_file();

    let error = kassa::config::Settings::load(&sources).unwrap_err().to_string();

    assert!(
        error.contains("wechat.platform_public_key_file") && error.contains("platform_certificate_files"),
        "{error}"
    );
}

#[test]
fn platform_certificates_are_a_toml_array_or_a_comma_separated_variable_and_platform_serial_is_an_alias() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kassa.toml");
    std::fs::write(
        &file,
        format!(
            "[wechat]\nmchid = \"{MCHID}\"\nappid = \"{APPID}\"\napiv3_key = \"{WECHAT_APIV3_KEY}\"\n\
             merchant_serial_no = \"{MERCHANT_SERIAL}\"\nmerchant_private_key_file = \"m.pem\"\n\
             platform_certificate_files = [\"/etc/a.pem\", \"/etc/b.pem\"]\n\
             platform_public_key_file = \"pub.pem\"\nplatform_serial = \"{PUBLIC_KEY_ID}\"\n"
        ),
    )
    .unwrap();
    let load = |env: Vec<(String, String)>| {
        kassa::config::Settings::load(&kassa::config::ConfigSources {
            file: Some(file.clone()),
            env,
            flags: Vec::new(),
        })
        .unwrap()
    };
    let from_file = load(Vec::new());
    let from_env = load(vec![(
        "KASSA_WECHAT_PLATFORM_CERTIFICATE_FILES".into(),
        "/etc/c.pem, /etc/d.pem".into(),
    )]);

    assert_eq!(
        from_file.wechat.platform_certificate_files,
        [std::path::PathBuf::from("/etc/a.pem"), "/etc/b.pem".into()]
    );
    assert_eq!(from_file.wechat.platform_public_key_id, PUBLIC_KEY_ID);
    assert_eq!(
        from_env.wechat.platform_certificate_files,
        [std::path::PathBuf::from("/etc/c.pem"), "/etc/d.pem".into()]
    );
}

/// A refund kassa asked for and WeChat answered PROCESSING: a pending row numbered
/// `no`, as the refund API stores it.
async fn pending_refund(app: &TestApp, order_id: &str, no: &str, amount: i64) {
    let (order_id, no, now) = (OrderId::parse(order_id).unwrap(), no.to_owned(), app.now());
    let stored = app
        .core
        .db
        .write(move |tx| {
            kassa::db::refunds::insert_within_balance(
                tx,
                &kassa::db::refunds::NewRefund {
                    id: &no,
                    order_id: &order_id,
                    merchant_refund_id: None,
                    amount,
                    reason: "cold tea",
                    now,
                },
            )
        })
        .await
        .unwrap();
    assert!(stored, "the refund fits the order");
}

/// The refund row as stored: status and amount.
fn refund_row(app: &TestApp, no: &str) -> (String, i64) {
    app.db()
        .clone()
        .query_row("SELECT status, amount FROM refunds WHERE id = ?1", [no], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
}

/// A `REFUND.*` notice for refund `no` of a 1000 order, `refund_status` as the event says.
fn refund_notice(app: &TestApp, order_id: &str, no: &str, amount: i64, event: &'static str) -> Notice {
    Notice {
        event_type: event,
        resource: json!({
            "mchid": MCHID, "out_trade_no": order_id, "transaction_id": "4200000000202611241234567890",
            "out_refund_no": no, "refund_id": "50300000000000000000000009",
            "refund_status": event.trim_start_matches("REFUND."), "success_time": "2026-11-24T12:00:00+08:00",
            "user_received_account": "支付用户零钱",
            "amount": {"total": 1000, "refund": amount, "payer_total": 1000, "payer_refund": amount},
        }),
        ..Notice::paying(app, order_id, 1000)
    }
}

async fn last_verdict(app: &TestApp) -> (String, String) {
    let n = &app.notifications().await[0];
    (
        n.verdict.as_str().to_owned(),
        n.reason_code.map(|r| r.code().to_owned()).unwrap_or_default(),
    )
}

#[tokio::test]
async fn an_abnormal_refund_stays_pending_holding_its_amount_until_a_later_refund_success_settles_it() {
    let app = spawn_wechat(&[]).await;
    let id = insert_wechat_order(&app, 1000, Currency::Cny).await;
    assert_eq!(send(&app, &Notice::paying(&app, &id, 1000)).await.0, 204);
    pending_refund(&app, &id, "r-abnormal-1", 400).await;
    let before = snapshot(&app, &id).await;

    let abnormal = send(
        &app,
        &refund_notice(&app, &id, "r-abnormal-1", 400, "REFUND.ABNORMAL"),
    )
    .await;

    assert_eq!(abnormal.0, 204, "acknowledged: WeChat need not resend");
    assert_eq!(
        last_verdict(&app).await,
        ("ignored".to_owned(), "refund_abnormal".to_owned())
    );
    assert_eq!(refund_row(&app, "r-abnormal-1"), ("pending".to_owned(), 400));
    assert_eq!(snapshot(&app, &id).await, before, "the order is unchanged");
    // Still held: only 600 is left to refund.
    let over = app
        .client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 601, "reason": "too much"}))
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), 409);

    // The merchant completes it by hand in the console; WeChat reports the success.
    let success = send(
        &app,
        &refund_notice(&app, &id, "r-abnormal-1", 400, "REFUND.SUCCESS"),
    )
    .await;

    assert_eq!(success.0, 204);
    assert_eq!(
        last_verdict(&app).await,
        ("applied".to_owned(), "refund_succeeded".to_owned())
    );
    assert_eq!(refund_row(&app, "r-abnormal-1"), ("succeeded".to_owned(), 400));
    let order = app.order(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("partially_refunded"), Some(400))
    );
    assert_eq!(
        (app.events(&id).await.len(), app.outbox(&id).await.len()),
        (before.1 + 1, before.2 + 1),
        "one history row and one webhook for the refund"
    );
}

#[tokio::test]
async fn a_closed_refund_fails_its_pending_row_and_a_later_success_for_it_is_rejected_as_a_conflict() {
    let app = spawn_wechat(&[]).await;
    let id = insert_wechat_order(&app, 1000, Currency::Cny).await;
    assert_eq!(send(&app, &Notice::paying(&app, &id, 1000)).await.0, 204);
    pending_refund(&app, &id, "r-closed-1", 300).await;
    let before = snapshot(&app, &id).await;

    let closed = send(
        &app,
        &refund_notice(&app, &id, "r-closed-1", 300, "REFUND.CLOSED"),
    )
    .await;

    assert_eq!(closed.0, 204);
    assert_eq!(
        last_verdict(&app).await,
        ("applied".to_owned(), "refund_failed".to_owned())
    );
    assert_eq!(refund_row(&app, "r-closed-1"), ("failed".to_owned(), 300));
    assert_eq!(snapshot(&app, &id).await, before, "the order is unchanged");

    let success = send(
        &app,
        &refund_notice(&app, &id, "r-closed-1", 300, "REFUND.SUCCESS"),
    )
    .await;

    assert!((400..600).contains(&success.0), "not acknowledged: {success:?}");
    assert_eq!(
        last_verdict(&app).await,
        ("rejected".to_owned(), "refund_conflict".to_owned())
    );
    assert_eq!(refund_row(&app, "r-closed-1"), ("failed".to_owned(), 300));
    assert_eq!(snapshot(&app, &id).await, before, "the order is still unchanged");
}

#[tokio::test]
async fn a_refund_notice_with_another_order_total_or_a_status_contradicting_its_event_changes_nothing() {
    let app = spawn_wechat(&[]).await;
    let id = insert_wechat_order(&app, 1000, Currency::Cny).await;
    assert_eq!(send(&app, &Notice::paying(&app, &id, 1000)).await.0, 204);
    pending_refund(&app, &id, "r-check-1", 300).await;
    let before = snapshot(&app, &id).await;
    let mut other_total = refund_notice(&app, &id, "r-check-1", 300, "REFUND.SUCCESS");
    other_total.resource["amount"]["total"] = json!(1001);
    let mut contradicting = refund_notice(&app, &id, "r-check-1", 300, "REFUND.SUCCESS");
    contradicting.resource["refund_status"] = json!("ABNORMAL");

    for (what, notice, code) in [
        (
            "amount.total 1001 for a 1000 order",
            other_total,
            "amount_mismatch",
        ),
        (
            "REFUND.SUCCESS with refund_status ABNORMAL",
            contradicting,
            "unknown_trade_status",
        ),
    ] {
        let (status, _) = send(&app, &notice).await;

        assert!((400..600).contains(&status), "{what}: {status}");
        assert_eq!(
            last_verdict(&app).await,
            ("rejected".to_owned(), code.to_owned()),
            "{what}"
        );
        assert_eq!(
            refund_row(&app, "r-check-1"),
            ("pending".to_owned(), 300),
            "{what}"
        );
        assert_eq!(snapshot(&app, &id).await, before, "{what}: nothing changed");
    }
}

#[tokio::test]
async fn a_refund_success_the_order_cannot_take_rolls_everything_back_and_asks_for_a_resend() {
    let app = spawn_wechat(&[]).await;
    let id = insert_wechat_order(&app, 1000, Currency::Cny).await;
    assert_eq!(send(&app, &Notice::paying(&app, &id, 1000)).await.0, 204);
    pending_refund(&app, &id, "r-orphan-1", 300).await;
    // The order and its refund rows disagree (a hand edit, a bug elsewhere): the order
    // no longer allows a refund.
    app.db()
        .clone()
        .execute("UPDATE orders SET status = 'closed' WHERE id = ?1", [&id])
        .unwrap();
    let before = snapshot(&app, &id).await;

    let (status, _) = send(
        &app,
        &refund_notice(&app, &id, "r-orphan-1", 300, "REFUND.SUCCESS"),
    )
    .await;

    assert!(
        (500..600).contains(&status),
        "WeChat is asked to resend: {status}"
    );
    assert_eq!(last_verdict(&app).await.0, "error");
    assert_eq!(
        refund_row(&app, "r-orphan-1"),
        ("pending".to_owned(), 300),
        "the settlement was rolled back with the refused transition"
    );
    assert_eq!(snapshot(&app, &id).await, before, "nothing changed");
}
