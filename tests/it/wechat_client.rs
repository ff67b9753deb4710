//! kassa's WeChat Pay client against a stand-in for the real API, owned by one test: it
//! records every request as received and answers what the test sets, signed with the
//! test vectors' platform key (or unsigned, forged, stale, a 5xx). Answers whose outcome
//! cannot be known must never change an order; requests must be signed so that an
//! independent implementation (PyPI `wechatpayv3`) computes the same signature.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use kassa::domain::Clock;
use kassa::providers::keys::{SigningKey, VerifyingKey};
use kassa::providers::wechat::Authorization;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::TestApp;
use crate::notify_wechat::{
    insert_wechat_order, spawn_wechat_timing_out_after, APPID, MCHID, MERCHANT_SERIAL, PUBLIC_KEY_ID,
};
use crate::oracle::{key, wechat_oracle};
use crate::sandbox_wechat::wechat_order;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the stand-in answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Signed with the platform public key's private half, at the app clock's `now`.
    Signed(u16, String),
    Unsigned(u16, String),
    /// Signed, then the body changed.
    Forged(u16, String),
    /// Signed with a timestamp ten minutes old.
    Stale(u16, String),
    /// Reads the request and never answers; the connection stays open until the client
    /// closes it.
    Silence,
}

#[derive(Clone)]
struct Standin {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
    answer: Arc<Mutex<Answer>>,
    /// Answers of their own for requests whose method and target end match, first match
    /// first.
    routes: Arc<Mutex<Vec<(String, String, Answer)>>>,
    /// Requests whose client hung up while waiting for an answer.
    given_up: Arc<tokio::sync::watch::Sender<usize>>,
    /// kassa's clock, once kassa runs: answers are signed at its `now`.
    clock: Arc<Mutex<Option<Arc<kassa::domain::FixedClock>>>>,
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

impl Standin {
    async fn start() -> Standin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let standin = Standin {
            url: format!("http://127.0.0.1:{port}"),
            requests: Arc::default(),
            answer: Arc::new(Mutex::new(Answer::Unsigned(503, String::new()))),
            routes: Arc::default(),
            given_up: Arc::new(tokio::sync::watch::Sender::new(0)),
            clock: Arc::default(),
        };
        let server = standin.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(server.clone().serve(stream));
            }
        });
        standin
    }

    /// The answer to every request without one of its own.
    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
        self.routes.lock().unwrap().clear();
    }

    /// The answer to requests with this method whose target (without the query) ends
    /// with `path_end`.
    fn set_for(&self, method: &str, path_end: &str, answer: Answer) {
        self.routes
            .lock()
            .unwrap()
            .push((method.to_owned(), path_end.to_owned(), answer));
    }

    /// The requests' method and target, in order.
    fn calls(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.target))
            .collect()
    }

    /// Waits until the client has abandoned `n` unanswered requests (its timeout) and
    /// returns how many it abandoned. The client's error may reach the test before the
    /// stand-in sees the connection close, hence the wait; a minute means it never will.
    async fn given_up(&self, n: usize) -> usize {
        let mut seen = self.given_up.subscribe();
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(60), seen.wait_for(|k| *k >= n)).await;
        assert!(waited.is_ok(), "the client never gave up on {n} requests");
        let count = *self.given_up.borrow();
        count
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    async fn serve(self, mut stream: TcpStream) {
        let Some(request) = read_request(&mut stream).await else {
            return;
        };
        let path = request.target.split('?').next().unwrap_or_default().to_owned();
        let answer = self
            .routes
            .lock()
            .unwrap()
            .iter()
            .find(|(m, end, _)| *m == request.method && path.ends_with(end.as_str()))
            .map(|(_, _, a)| a.clone())
            .unwrap_or_else(|| self.answer.lock().unwrap().clone());
        self.requests.lock().unwrap().push(request);
        let now = self
            .clock
            .lock()
            .unwrap()
            .as_ref()
            .map_or_else(Utc::now, |c| c.now());
        let sign = |at: DateTime<Utc>, body: &str| {
            let signer = SigningKey::from_pem(&key("wechat_platform_private_pkcs8.pem")).unwrap();
            let nonce = "STANDINNONCE0000";
            let message = format!("{}\n{nonce}\n{body}\n", at.timestamp());
            format!(
                "wechatpay-timestamp: {}\r\nwechatpay-nonce: {nonce}\r\nwechatpay-serial: {PUBLIC_KEY_ID}\r\nwechatpay-signature-type: WECHATPAY2-SHA256-RSA2048\r\nwechatpay-signature: {}\r\n",
                at.timestamp(),
                signer.sign_base64(message.as_bytes())
            )
        };
        let (status, headers, body) = match answer {
            Answer::Signed(s, b) => (s, sign(now, &b), b),
            Answer::Unsigned(s, b) => (s, String::new(), b),
            Answer::Forged(s, b) => (s, sign(now, &b), b.replacen('1', "2", 1)),
            Answer::Stale(s, b) => (s, sign(now - Duration::minutes(10), &b), b),
            Answer::Silence => {
                // The client sends nothing more: the read ends in EOF when it gives up
                // and closes the connection.
                let mut rest = [0u8; 64];
                while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
                self.given_up.send_modify(|n| *n += 1);
                return;
            }
        };
        let response = format!(
            "HTTP/1.1 {status} Stand-in\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

/// kassa for the vectors' merchant, its API base the stand-in.
async fn spawn_against_standin() -> (TestApp, Standin) {
    spawn_against_standin_timing_out_after(None).await
}

/// As `spawn_against_standin`; with a `timeout`, kassa gives up on a WeChat call after
/// it instead of 15 s.
async fn spawn_against_standin_timing_out_after(timeout: Option<std::time::Duration>) -> (TestApp, Standin) {
    let standin = Standin::start().await;
    let app = spawn_wechat_timing_out_after(&[("KASSA_WECHAT_API_BASE", &standin.url)], timeout).await;
    *standin.clock.lock().unwrap() = Some(app.clock.clone());
    (app, standin)
}

/// kassa against a stand-in, giving up on a WeChat call after one second.
async fn spawn_against_standin_with_short_timeout() -> (TestApp, Standin) {
    spawn_against_standin_timing_out_after(Some(std::time::Duration::from_secs(1))).await
}

#[tokio::test]
async fn a_native_order_is_a_signed_request_and_code_url_becomes_the_qr_code() {
    let (app, standin) = spawn_against_standin().await;
    standin.set(Answer::Signed(
        200,
        r#"{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz1"}"#.into(),
    ));

    let response = app.post_order(&wechat_order("wx-native-1", 1234)).await;

    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    assert_eq!(order["qr_code"], "weixin://wxpay/bizpayurl?pr=JyC91EIz1");
    let requests = standin.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.target.as_str()),
        ("POST", "/v3/pay/transactions/native")
    );
    assert_eq!(r.header("wechatpay-serial"), Some(PUBLIC_KEY_ID));
    assert_eq!(r.header("accept"), Some("application/json"));
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["mchid"], MCHID);
    assert_eq!(body["out_trade_no"], order["id"]);
    assert_eq!(body["notify_url"], app.url("/notify/wechat"));
    assert_eq!(body["amount"], json!({"total": 1234, "currency": "CNY"}));
    let expire = body["time_expire"].as_str().unwrap();
    assert!(expire.ends_with("+08:00"), "{expire}");
    let expire: DateTime<Utc> = DateTime::parse_from_rfc3339(expire).unwrap().into();
    let expires_at: DateTime<Utc> = order["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expire <= expires_at && expires_at - expire < Duration::seconds(1));
    let auth = Authorization::parse(r.header("authorization").unwrap()).unwrap();
    assert_eq!(
        (auth.mchid.as_str(), auth.serial_no.as_str()),
        (MCHID, MERCHANT_SERIAL)
    );
    assert_eq!(auth.timestamp, app.now().timestamp().to_string(), "the app clock");
    let merchant = VerifyingKey::from_pem(&key("wechat_merchant_public.pem")).unwrap();
    assert!(auth.verify(&merchant, "POST", &r.target, r.body.as_bytes()));
    // wechatpayv3 signs the same request to the same signature (PKCS#1 v1.5 is
    // deterministic), and checks kassa's with the merchant public key.
    let checked = wechat_oracle(json!({
        "op": "check_request", "method": r.method, "path": r.target, "body": r.body,
        "authorization": r.header("authorization"),
        "merchant_private_key": key("wechat_merchant_private_pkcs8.pem"),
        "merchant_public_key": key("wechat_merchant_public.pem"),
    }));
    assert_eq!(checked["verifies"], true, "{checked}");
    assert_eq!(checked["same_signature"], true, "{checked}");
}

#[tokio::test]
async fn answers_whose_outcome_is_unknown_never_change_an_order() {
    let (app, standin) = spawn_against_standin().await;
    let id = insert_wechat_order(&app, 900, kassa::domain::Currency::Cny).await;
    let paid = || {
        json!({"mchid": MCHID, "out_trade_no": id, "trade_state": "SUCCESS", "transaction_id": "4200000001",
            "success_time": "2026-11-24T11:30:06+08:00", "amount": {"total": 900, "currency": "CNY"}})
        .to_string()
    };
    let unknown = [
        (
            "a signed SYSTEM_ERROR",
            Answer::Signed(500, r#"{"code":"SYSTEM_ERROR","message":"系统错误"}"#.into()),
        ),
        (
            "a 400 SYSTEM_ERROR",
            Answer::Signed(400, r#"{"code":"SYSTEM_ERROR","message":"系统错误"}"#.into()),
        ),
        ("a bare 502", Answer::Unsigned(502, "<html>502</html>".into())),
        ("an unsigned success", Answer::Unsigned(200, paid())),
        ("a success whose body was changed", Answer::Forged(200, paid())),
        ("a success signed ten minutes ago", Answer::Stale(200, paid())),
    ];
    app.clock.advance(Duration::minutes(16));
    let before = (app.order(&id).await, app.events(&id).await.len());
    for (what, answer) in unknown {
        standin.set(answer);
        let calls = standin.requests().len();

        let report = app.expiry().try_run_once(app.now()).await.unwrap();

        assert!(standin.requests().len() > calls, "{what}: the platform was asked");
        assert_eq!(
            (app.order(&id).await, app.events(&id).await.len()),
            before,
            "{what}: {report:?}"
        );
    }
    // Once the platform's signed answer says paid, the order is paid.
    standin.set(Answer::Signed(200, paid()));
    app.expiry().try_run_once(app.now()).await.unwrap();
    assert_eq!(app.order(&id).await["status"], "paid");
    let query = standin.requests().last().unwrap().clone();
    assert_eq!(
        query.target,
        format!("/v3/pay/transactions/out-trade-no/{id}?mchid={MCHID}")
    );
    assert_eq!(query.body, "", "a GET signs an empty body");
}

#[tokio::test]
async fn a_refund_answered_processing_stays_pending_and_a_refusal_fails_it() {
    let (app, standin) = spawn_against_standin().await;
    let id = insert_wechat_order(&app, 1000, kassa::domain::Currency::Cny).await;
    app.core
        .db
        .write({
            let id = kassa::domain::OrderId::parse(&id).unwrap();
            move |c| {
                let cause = kassa::db::history::Cause::system(kassa::domain::TransitionSource::Api);
                kassa::db::transitions::apply(
                    c,
                    &id,
                    &kassa::db::transitions::Change::Pay {
                        provider_trade_no: None,
                        paid_at: Utc::now(),
                    },
                    &cause,
                    Utc::now(),
                )
                .map(|_| ())
            }
        })
        .await
        .unwrap();
    standin.set(Answer::Signed(
        200,
        json!({"refund_id": "503001", "out_refund_no": "x", "status": "PROCESSING",
            "amount": {"total": 1000, "refund": 300, "currency": "CNY"}})
        .to_string(),
    ));

    let r = app
        .client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 300, "reason": "cold tea"}))
        .send()
        .await
        .unwrap();
    let refund: Value = r.json().await.unwrap();

    assert_eq!(refund["status"], "pending", "{refund}");
    let requests = standin.requests();
    let call: Value = serde_json::from_str(&requests[0].body).unwrap();
    assert_eq!(requests[0].target, "/v3/refund/domestic/refunds");
    assert_eq!(call["out_refund_no"], refund["id"], "the stored refund row's id");
    assert_eq!(call["out_trade_no"], json!(id));
    assert_eq!(
        call["amount"],
        json!({"refund": 300, "total": 1000, "currency": "CNY"})
    );
    assert_eq!(call["notify_url"], app.url("/notify/wechat"));
    assert_eq!(
        requests[1].target,
        format!("/v3/refund/domestic/refunds/{}", refund["id"].as_str().unwrap()),
        "PROCESSING is followed by a refund query"
    );
    assert_eq!(app.order(&id).await["refunded_amount"], 0);

    standin.set(Answer::Signed(
        403,
        r#"{"code":"NOT_ENOUGH","message":"余额不足"}"#.into(),
    ));
    let r = app
        .client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 100, "reason": "cold tea"}))
        .send()
        .await
        .unwrap();
    let refused: Value = r.json().await.unwrap();
    assert_eq!(
        (refused["status"].as_str(), refused["failure_code"].as_str()),
        (Some("failed"), Some("NOT_ENOUGH"))
    );
    assert_eq!(app.order(&id).await["refunded_amount"], 0);
}

#[tokio::test]
async fn the_checkout_page_of_a_wechat_order_says_scan_with_wechat_and_explains_scanning_on_a_phone() {
    let (app, standin) = spawn_against_standin().await;
    standin.set(Answer::Signed(
        200,
        r#"{"code_url":"weixin://wxpay/bizpayurl?pr=JyC91EIz1"}"#.into(),
    ));
    let order: Value = app
        .post_order(&wechat_order("wx-checkout-1", 1234))
        .await
        .json()
        .await
        .unwrap();

    let page = app
        .client
        .get(app.url(&format!("/pay/{}?lang=en", order["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    assert!(page.contains("class=\"panel wechat\""), "{page}");
    assert!(page.contains("Scan with WeChat to pay"), "{page}");
    assert!(
        page.contains("class=\"phone-note\"") && page.contains("from another device"),
        "{page}"
    );
    assert!(
        !page.contains("href=\"weixin://"),
        "no link a phone browser cannot open: {page}"
    );
}

#[tokio::test]
async fn start_up_logs_the_key_mode_the_key_id_each_certificate_and_warns_about_an_http_public_url_with_a_query_string(
) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let keys = format!("{}/tests/vectors/keys", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_kassa"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--public-url",
            "http://shop.example.com/kassa?shop=1",
        ])
        .envs([
            ("KASSA_LOG_FORMAT", "json".to_owned()),
            ("KASSA_WECHAT_MCHID", MCHID.to_owned()),
            ("KASSA_WECHAT_APPID", "wxd678efh567hg6787".to_owned()),
            (
                "KASSA_WECHAT_APIV3_KEY",
                crate::helpers::WECHAT_APIV3_KEY.to_owned(),
            ),
            ("KASSA_WECHAT_MERCHANT_SERIAL_NO", MERCHANT_SERIAL.to_owned()),
            (
                "KASSA_WECHAT_MERCHANT_PRIVATE_KEY_FILE",
                format!("{keys}/wechat_merchant_private_pkcs8.pem"),
            ),
            (
                "KASSA_WECHAT_PLATFORM_PUBLIC_KEY_FILE",
                format!("{keys}/wechat_platform_public.pem"),
            ),
            // The older name still works.
            ("KASSA_WECHAT_PLATFORM_SERIAL", PUBLIC_KEY_ID.to_owned()),
            (
                "KASSA_WECHAT_PLATFORM_CERTIFICATE_FILES",
                format!("{keys}/wechat_platform_cert.pem"),
            ),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The start-up lines, read on a thread of their own: the server keeps running and
    // its stderr stays open, so the reader stops once both lines are in (or gives up).
    let stderr = child.stderr.take().unwrap();
    let (sent, lines) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let parsed = serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line));
            if sent.send(parsed).is_err() {
                break;
            }
        }
    });
    let mut logged = Vec::new();
    let warned = |logged: &[Value], about: &str| {
        logged
            .iter()
            .any(|l| l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.contains(about)))
    };
    let wanted = |logged: &[Value]| {
        logged.iter().any(|l| l["message"] == "WeChat Pay platform keys")
            && warned(logged, "HTTPS")
            && warned(logged, "query string")
    };
    while !wanted(&logged) {
        match lines.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(line) => logged.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();

    let keys_line = logged
        .iter()
        .find(|l| l["message"] == "WeChat Pay platform keys")
        .unwrap_or_else(|| panic!("{logged:#?}"));
    assert_eq!(
        keys_line["keys"],
        format!(
            "mode: platform public key and certificates; public key id {PUBLIC_KEY_ID}; \
             certificate 5157F09EFDC096DE15EBE81A47057A7232FE1F5B valid until 2031-01-01T00:00:00Z"
        )
    );
    assert!(warned(&logged, "HTTPS"), "{logged:#?}");
    let query = logged
        .iter()
        .find(|l| l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.contains("query string")))
        .unwrap_or_else(|| panic!("{logged:#?}"));
    assert_eq!(
        query["public_url"], "http://shop.example.com/kassa?shop=1",
        "{query}"
    );
}

#[tokio::test]
async fn a_native_order_answered_system_error_or_unsigned_is_503_and_stores_nothing() {
    let (app, standin) = spawn_against_standin().await;
    let before = crate::stored::rows(&app).await;
    for answer in [
        Answer::Signed(500, r#"{"code":"SYSTEM_ERROR","message":"系统错误"}"#.into()),
        Answer::Unsigned(200, r#"{"code_url":"weixin://wxpay/bizpayurl?pr=forged"}"#.into()),
    ] {
        standin.set(answer.clone());

        let (status, code, _) = crate::helpers::error_code(
            app.post_order_with_key(&wechat_order("wx-unknown-1", 100), "k-wx-unknown")
                .await,
        )
        .await;

        assert_eq!(
            (status, code.as_str()),
            (503, "provider_unavailable"),
            "{answer:?}"
        );
        assert_eq!(crate::stored::rows(&app).await, before, "{answer:?}");
    }
    standin.set(Answer::Signed(
        200,
        r#"{"code_url":"weixin://wxpay/bizpayurl?pr=ok"}"#.into(),
    ));
    let created = app
        .post_order_with_key(&wechat_order("wx-unknown-1", 100), "k-wx-unknown")
        .await;
    assert_eq!(
        created.status(),
        201,
        "nothing was kept, so the same request goes through"
    );
}

/// Marks a stored order paid, as a notification would, without any WeChat call.
async fn mark_paid(app: &TestApp, id: &str) {
    let id = kassa::domain::OrderId::parse(id).unwrap();
    let now = app.now();
    app.core
        .db
        .write(move |c| {
            let cause = kassa::db::history::Cause::system(kassa::domain::TransitionSource::Api);
            kassa::db::transitions::apply(
                c,
                &id,
                &kassa::db::transitions::Change::Pay {
                    provider_trade_no: Some("4200000001".into()),
                    paid_at: now,
                },
                &cause,
                now,
            )
            .map(|_| ())
        })
        .await
        .unwrap();
}

/// WeChat's signed answer to a query for an order nobody has paid.
fn not_paid(id: &str, total: i64) -> Answer {
    Answer::Signed(
        200,
        json!({"appid": APPID, "mchid": MCHID, "out_trade_no": id, "trade_state": "NOTPAY",
            "trade_state_desc": "订单未支付", "amount": {"total": total, "currency": "CNY"}})
        .to_string(),
    )
}

#[tokio::test]
async fn a_native_order_never_answered_times_out_as_503_provider_unavailable_and_stores_nothing() {
    let (app, standin) = spawn_against_standin_with_short_timeout().await;
    standin.set(Answer::Silence);
    let before = crate::stored::rows(&app).await;

    let (status, code, _) = crate::helpers::error_code(
        app.post_order_with_key(&wechat_order("wx-timeout-1", 100), "k-wx-timeout")
            .await,
    )
    .await;

    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    assert_eq!(standin.calls(), ["POST /v3/pay/transactions/native"]);
    assert_eq!(
        standin.given_up(1).await,
        1,
        "kassa gave up waiting: a real timeout"
    );
    assert_eq!(crate::stored::rows(&app).await, before);
    // Nothing was kept, so the same request goes through once WeChat answers.
    standin.set(Answer::Signed(
        200,
        r#"{"code_url":"weixin://wxpay/bizpayurl?pr=late"}"#.into(),
    ));
    let created = app
        .post_order_with_key(&wechat_order("wx-timeout-1", 100), "k-wx-timeout")
        .await;
    assert_eq!(created.status(), 201);
}

#[tokio::test]
async fn close_and_expiry_with_a_platform_that_never_answers_the_close_leave_the_order_pending() {
    let (app, standin) = spawn_against_standin_with_short_timeout().await;
    let id = insert_wechat_order(&app, 100, kassa::domain::Currency::Cny).await;
    standin.set(Answer::Silence);
    standin.set_for("GET", &id, not_paid(&id, 100));
    let before = crate::stored::rows(&app).await;

    let (status, code, _) =
        crate::helpers::error_code(app.post(&format!("/api/v1/orders/{id}/close")).await).await;

    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    assert_eq!(app.order(&id).await["status"], "pending");
    assert_eq!(
        crate::stored::rows(&app).await,
        before,
        "the close changed nothing"
    );

    app.clock.advance(Duration::minutes(16));
    let report = app.expiry().try_run_once(app.now()).await.unwrap();

    assert_eq!((report.closed, report.deferred), (0, 1));
    assert_eq!(app.order(&id).await["status"], "pending");
    assert!(app.events(&id).await.is_empty());
    assert!(app.outbox(&id).await.is_empty());
    assert_eq!(
        crate::stored::rows(&app).await,
        before,
        "the expiry changed nothing"
    );
    let query = format!("GET /v3/pay/transactions/out-trade-no/{id}?mchid={MCHID}");
    let close = format!("POST /v3/pay/transactions/out-trade-no/{id}/close");
    assert_eq!(standin.calls(), [&*query, &*close, &*query, &*close]);
    assert_eq!(standin.given_up(2).await, 2, "both closes timed out");
}

#[tokio::test]
async fn a_refund_the_platform_never_answers_stays_pending_and_changes_nothing_else() {
    let (app, standin) = spawn_against_standin_with_short_timeout().await;
    let id = insert_wechat_order(&app, 1000, kassa::domain::Currency::Cny).await;
    mark_paid(&app, &id).await;
    standin.set(Answer::Silence);
    let before = crate::stored::rows(&app).await;

    let response = app
        .client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 300, "reason": "cold tea"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 201);
    let refund: Value = response.json().await.unwrap();
    assert_eq!(refund["status"], "pending", "{refund}");
    let refund_id = refund["id"].as_str().unwrap();
    assert_eq!(
        standin.calls(),
        [
            "POST /v3/refund/domestic/refunds".to_owned(),
            format!("GET /v3/refund/domestic/refunds/{refund_id}"),
        ],
        "the refund, then a query about it"
    );
    assert_eq!(standin.given_up(2).await, 2, "the refund and its query timed out");
    let order = app.order(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("paid"), Some(0))
    );
    let mut after = crate::stored::rows(&app).await;
    assert_eq!(after.remove("refunds").unwrap().len(), 1);
    let stored: (String, String, i64, Option<String>) = app
        .db()
        .clone()
        .query_row(
            "SELECT id, status, amount, provider_refund_id FROM refunds",
            crate::vals![],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(stored, (refund_id.to_owned(), "pending".to_owned(), 300, None));
    let mut unchanged = before.clone();
    unchanged.remove("refunds");
    assert_eq!(after, unchanged, "only the pending refund was stored");
    // The pending refund holds its amount against the balance.
    let (status, code, _) = crate::helpers::error_code(
        app.client
            .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
            .bearer_auth(&app.api_key)
            .json(&json!({"amount": 701, "reason": "too much"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "refund_exceeds_balance"));
    assert_eq!(standin.requests().len(), 2, "refused without asking WeChat");
}

const ORDER_NOT_EXIST: &str = r#"{"code":"ORDER_NOT_EXIST","message":"订单不存在"}"#;

#[tokio::test]
async fn an_unsigned_order_not_exist_to_the_query_or_the_close_is_an_unknown_outcome_and_never_closes_the_order(
) {
    let (app, standin) = spawn_against_standin().await;
    let id = insert_wechat_order(&app, 100, kassa::domain::Currency::Cny).await;
    app.clock.advance(Duration::minutes(16));
    let before = crate::stored::rows(&app).await;
    let query = format!("GET /v3/pay/transactions/out-trade-no/{id}?mchid={MCHID}");
    let close = format!("POST /v3/pay/transactions/out-trade-no/{id}/close");

    // The query answered by an unsigned refusal: nothing is known, so no close either.
    standin.set(Answer::Unsigned(404, ORDER_NOT_EXIST.into()));
    let report = app.expiry().try_run_once(app.now()).await.unwrap();

    assert_eq!((report.closed, report.deferred), (0, 1), "{report:?}");
    assert_eq!(standin.calls(), [&*query]);
    assert_eq!(
        crate::stored::rows(&app).await,
        before,
        "the expiry changed nothing"
    );

    // The query signed NOTPAY, the close answered by an unsigned refusal.
    standin.set(Answer::Unsigned(404, ORDER_NOT_EXIST.into()));
    standin.set_for("GET", &id, not_paid(&id, 100));
    let report = app.expiry().try_run_once(app.now()).await.unwrap();

    assert_eq!((report.closed, report.deferred), (0, 1), "{report:?}");
    assert_eq!(standin.calls(), [&*query, &*query, &*close]);
    assert_eq!(
        crate::stored::rows(&app).await,
        before,
        "the expiry changed nothing"
    );

    let (status, code, _) =
        crate::helpers::error_code(app.post(&format!("/api/v1/orders/{id}/close")).await).await;

    assert_eq!((status, code.as_str()), (503, "provider_unavailable"));
    assert_eq!(app.order(&id).await["status"], "pending");
    assert_eq!(
        crate::stored::rows(&app).await,
        before,
        "the close changed nothing"
    );

    // WeChat's own, signed, refusal means there is nothing to close at the platform.
    standin.set(Answer::Signed(404, ORDER_NOT_EXIST.into()));
    standin.set_for("GET", &id, not_paid(&id, 100));
    let report = app.expiry().try_run_once(app.now()).await.unwrap();
    assert_eq!(report.closed, 1, "{report:?}");
    assert_eq!(app.order(&id).await["status"], "closed");
}

#[tokio::test]
async fn an_unsigned_refusal_of_a_refund_leaves_it_pending_holding_its_amount() {
    let (app, standin) = spawn_against_standin().await;
    let id = insert_wechat_order(&app, 1000, kassa::domain::Currency::Cny).await;
    mark_paid(&app, &id).await;
    standin.set(Answer::Unsigned(
        403,
        r#"{"code":"NOT_ENOUGH","message":"余额不足"}"#.into(),
    ));

    let response = app
        .client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 300, "reason": "cold tea"}))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 201);
    let refund: Value = response.json().await.unwrap();
    assert_eq!(
        (refund["status"].as_str(), refund["failure_code"].as_str()),
        (Some("pending"), None),
        "{refund}"
    );
    let order = app.order(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("paid"), Some(0))
    );
    let (status, code, _) = crate::helpers::error_code(
        app.client
            .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
            .bearer_auth(&app.api_key)
            .json(&json!({"amount": 701, "reason": "too much"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (409, "refund_exceeds_balance"),
        "the pending refund holds its amount"
    );
}

/// A paid 1000 order with a refund of 300 WeChat answered PROCESSING (and then did not
/// answer the follow-up query); returns the order and refund ids.
async fn processing_refund(app: &TestApp, standin: &Standin) -> (String, String) {
    let id = insert_wechat_order(app, 1000, kassa::domain::Currency::Cny).await;
    mark_paid(app, &id).await;
    standin.set(Answer::Unsigned(503, String::new()));
    standin.set_for(
        "POST",
        "/v3/refund/domestic/refunds",
        Answer::Signed(
            200,
            json!({"refund_id": "503001", "out_refund_no": "x", "status": "PROCESSING",
                "amount": {"total": 1000, "refund": 300, "currency": "CNY"}})
            .to_string(),
        ),
    );
    let refund: Value = app
        .client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 300, "reason": "cold tea"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(refund["status"], "pending", "{refund}");
    (id, refund["id"].as_str().unwrap().to_owned())
}

fn refund_query_answer(refund_id: &str, status: &str) -> Answer {
    Answer::Signed(
        200,
        json!({"refund_id": "503001", "out_refund_no": refund_id, "out_trade_no": "x",
            "status": status, "success_time": "2026-11-24T12:00:00+08:00",
            "amount": {"total": 1000, "refund": 300, "currency": "CNY"}})
        .to_string(),
    )
}

fn stored_refund(app: &TestApp, refund_id: &str) -> String {
    app.db()
        .clone()
        .query_row("SELECT status FROM refunds WHERE id = ?1", [refund_id], |r| {
            r.get(0)
        })
        .unwrap()
}

#[tokio::test]
async fn a_pending_refund_the_refund_query_reports_success_is_settled_once_with_its_transition_history_and_webhook(
) {
    let (app, standin) = spawn_against_standin().await;
    let (id, refund_id) = processing_refund(&app, &standin).await;
    let (events, outbox) = (app.events(&id).await.len(), app.outbox(&id).await.len());
    standin.set(Answer::Unsigned(503, String::new()));
    standin.set_for("GET", &refund_id, refund_query_answer(&refund_id, "SUCCESS"));
    app.clock.advance(Duration::seconds(61));

    let settled = kassa::jobs::refund_settlement::try_run_once(&app.core, app.now())
        .await
        .unwrap();

    assert_eq!(settled, 1);
    assert_eq!(
        standin.calls().last().map(String::as_str),
        Some(&*format!("GET /v3/refund/domestic/refunds/{refund_id}"))
    );
    assert_eq!(stored_refund(&app, &refund_id), "succeeded");
    let order = app.order(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("partially_refunded"), Some(300))
    );
    assert_eq!(
        (app.events(&id).await.len(), app.outbox(&id).await.len()),
        (events + 1, outbox + 1),
        "one history row and one webhook"
    );

    // A later pass finds nothing pending and asks nothing.
    let calls = standin.calls().len();
    app.clock.advance(Duration::seconds(61));
    let again = kassa::jobs::refund_settlement::try_run_once(&app.core, app.now())
        .await
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(standin.calls().len(), calls);
    assert_eq!(
        (app.events(&id).await.len(), app.outbox(&id).await.len()),
        (events + 1, outbox + 1),
        "settled exactly once"
    );
    assert_eq!(app.order(&id).await["refunded_amount"], 300);
}

#[tokio::test]
async fn a_pending_refund_the_refund_query_reports_closed_fails_and_frees_its_amount_with_the_order_unchanged(
) {
    let (app, standin) = spawn_against_standin().await;
    let (id, refund_id) = processing_refund(&app, &standin).await;
    let before = (
        app.order(&id).await,
        app.events(&id).await.len(),
        app.outbox(&id).await.len(),
    );
    standin.set(Answer::Unsigned(503, String::new()));
    standin.set_for("GET", &refund_id, refund_query_answer(&refund_id, "CLOSED"));
    app.clock.advance(Duration::seconds(61));

    let settled = kassa::jobs::refund_settlement::try_run_once(&app.core, app.now())
        .await
        .unwrap();

    assert_eq!(settled, 1);
    assert_eq!(stored_refund(&app, &refund_id), "failed");
    assert_eq!(
        (
            app.order(&id).await,
            app.events(&id).await.len(),
            app.outbox(&id).await.len()
        ),
        before,
        "the order is unchanged"
    );
    app.clock.advance(Duration::seconds(61));
    let again = kassa::jobs::refund_settlement::try_run_once(&app.core, app.now())
        .await
        .unwrap();
    assert_eq!(again, 0, "settled exactly once");
    // The whole amount is refundable again.
    standin.set(Answer::Signed(
        200,
        json!({"refund_id": "503002", "out_refund_no": "y", "status": "SUCCESS",
            "amount": {"total": 1000, "refund": 1000, "currency": "CNY"}})
        .to_string(),
    ));
    let full = app
        .client
        .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 1000, "reason": "all of it"}))
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 201);
}

#[tokio::test]
async fn a_pending_refund_the_refund_query_reports_abnormal_stays_pending() {
    let (app, standin) = spawn_against_standin().await;
    let (id, refund_id) = processing_refund(&app, &standin).await;
    standin.set(Answer::Unsigned(503, String::new()));
    standin.set_for("GET", &refund_id, refund_query_answer(&refund_id, "ABNORMAL"));
    app.clock.advance(Duration::seconds(61));

    let settled = kassa::jobs::refund_settlement::try_run_once(&app.core, app.now())
        .await
        .unwrap();

    assert_eq!(settled, 0);
    assert_eq!(stored_refund(&app, &refund_id), "pending");
    assert_eq!(app.order(&id).await["refunded_amount"], 0);
}
