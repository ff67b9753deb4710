//! Clients that would hold the server without finishing a request: bodies sent a byte a
//! second, request heads sent slower than `server.header_timeout`, more connections
//! from one address than `server.max_connections_per_address`. Raw TCP clients, so the
//! test decides exactly what goes on the wire and when.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::gateway_standin::{GatewayStandin, Reply};
use crate::helpers::{order_body, trade_success, TestApp};
use crate::oracle::signed_notification;

/// How long a slow client waits to be cut off before the test calls it never cut off.
const GIVE_UP: Duration = Duration::from_secs(40);

/// What became of a slow client.
#[derive(Debug)]
enum Fate {
    /// The server answered (the text of everything it sent) and closed.
    Answered { text: String, at: Instant },
    /// Closed, or reset, without a byte of answer.
    ClosedUnanswered,
    /// Still open when the test gave up.
    NeverCutOff,
}

/// Reads everything the server sends until it closes (or resets) the connection, or
/// until `GIVE_UP`. `at` is when the first byte came.
async fn outcome(mut reader: tokio::net::tcp::OwnedReadHalf) -> Fate {
    let mut received = Vec::new();
    let mut first_byte = None;
    let read_all = async {
        let mut chunk = [0u8; 4096];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    first_byte.get_or_insert_with(Instant::now);
                    received.extend_from_slice(&chunk[..n]);
                }
            }
        }
    };
    if tokio::time::timeout(GIVE_UP, read_all).await.is_err() {
        return Fate::NeverCutOff;
    }
    match first_byte {
        None => Fate::ClosedUnanswered,
        Some(at) => Fate::Answered {
            text: String::from_utf8_lossy(&received).into_owned(),
            at,
        },
    }
}

/// A client that declares a 30,000-byte body and sends it one byte a second.
async fn slow_body(server: SocketAddr, path: &'static str, headers: String) -> (&'static str, Fate) {
    let Ok(stream) = TcpStream::connect(server).await else {
        return (path, Fate::ClosedUnanswered);
    };
    let (reader, mut writer) = stream.into_split();
    let head = format!("POST {path} HTTP/1.1\r\nHost: {server}\r\n{headers}Content-Length: 30000\r\n\r\n{{");
    let drip = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let fate = outcome(reader).await;
    drip.abort();
    (path, fate)
}

fn count(app: &TestApp, table: &str) -> i64 {
    app.db()
        .clone()
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), crate::vals![], |r| {
            r.get(0)
        })
        .unwrap()
}

/// A client of another loopback address (127.0.0.2): its own connection budget.
fn other_client() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_off_with_408_connections_over_the_cap_are_closed_and_another_address_is_served_meanwhile(
) {
    let gateway = GatewayStandin::start().await;
    gateway.answer_method(
        "alipay.trade.precreate",
        Reply::Signed(serde_json::json!({"code": "10000", "msg": "Success",
            "out_trade_no": "x", "qr_code": "https://qr.alipay.com/slow-clients"})),
    );
    let app = TestApp::spawn_alipay_via(
        &gateway,
        &[
            ("KASSA_SERVER_BODY_TIMEOUT", "15s"),
            ("KASSA_SERVER_MAX_CONNECTIONS_PER_ADDRESS", "50"),
        ],
    )
    .await;
    // Signed before the slow clients start (the oracle blocks while it runs).
    let paid_by_notify = app.insert_order("slow-clients-notified", 1234).await;
    let notification = signed_notification(&trade_success(&paid_by_notify, "12.34"));
    let orders_before = count(&app, "orders");
    assert_eq!(app.notifications().await.len(), 0);

    let slow: Vec<_> = (0..200)
        .map(|n| {
            let (path, headers) = if n % 3 == 0 {
                (
                    "/notify/alipay",
                    "Content-Type: application/x-www-form-urlencoded\r\n".to_owned(),
                )
            } else if n % 3 == 1 {
                (
                    "/notify/wechat",
                    "Content-Type: application/json\r\nWechatpay-Serial: PUB_KEY_ID_0\r\n".to_owned(),
                )
            } else {
                (
                    "/api/v1/orders",
                    format!(
                        "Content-Type: application/json\r\nAuthorization: Bearer {}\r\n",
                        app.api_key
                    ),
                )
            };
            tokio::spawn(slow_body(app.socket, path, headers))
        })
        .collect();

    // Meanwhile, from another address: a health check, an order created through the
    // API (a call to the gateway included) and a notification that pays another order.
    let other = other_client();
    let health = other.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let created = other
        .post(app.url("/api/v1/orders"))
        .bearer_auth(&app.api_key)
        .json(&order_body("slow-clients-created", 500))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["qr_code"], "https://qr.alipay.com/slow-clients");
    let notified = other
        .post(app.url("/notify/alipay"))
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body(notification)
        .send()
        .await
        .unwrap();
    assert_eq!(notified.status(), 200);
    assert_eq!(notified.text().await.unwrap(), "success");
    let others_done = Instant::now();

    let mut timed_out = Vec::new();
    let mut unanswered = 0;
    for task in slow {
        match task.await.unwrap() {
            (path, Fate::Answered { text, at }) => timed_out.push((path, text, at)),
            (_, Fate::ClosedUnanswered) => unanswered += 1,
            (path, Fate::NeverCutOff) => panic!(
                "a slow client of {path} was still connected {} s after it started",
                GIVE_UP.as_secs()
            ),
        }
    }
    assert_eq!(
        (timed_out.len(), unanswered),
        (50, 150),
        "50 connections allowed and cut off with an answer, 150 over the cap closed unanswered"
    );
    for (path, text, at) in &timed_out {
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "{path}: a slow body is answered 408: {text}"
        );
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{path}: {text}"
        );
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        match *path {
            "/notify/alipay" => assert_eq!(body, "failure", "Alipay's retry word: {text}"),
            "/notify/wechat" => {
                let json: serde_json::Value = serde_json::from_str(body).unwrap();
                assert_eq!(json["code"], "FAIL", "WeChat Pay's retry answer: {text}");
            }
            _ => {
                let json: serde_json::Value = serde_json::from_str(body).unwrap();
                assert_eq!(json["error"]["code"], "request_timeout", "{text}");
            }
        }
        assert!(
            others_done < *at,
            "the other address was served before the slow clients were cut off"
        );
    }
    assert!(
        ["/notify/alipay", "/notify/wechat", "/api/v1/orders"]
            .iter()
            .all(|p| timed_out.iter().any(|(path, _, _)| path == p)),
        "every surface was cut off at least once"
    );

    // The cut-off connections gave their places back: 127.0.0.1 is served again (as
    // soon as the server has dropped them, which may trail the client's view a little).
    let mut served_again = false;
    for _ in 0..50 {
        if let Ok(r) = app.client.get(app.url("/healthz")).send().await {
            served_again = r.status() == 200;
            if served_again {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served_again,
        "the address is served again once its connections are gone"
    );

    // Nothing of the slow clients was stored: one order created and one notification,
    // both the other address's.
    assert_eq!(count(&app, "orders"), orders_before + 1);
    let notifications = app.notifications().await;
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0].verdict.as_str(), "applied");
    assert!(notifications[0]
        .remote_addr
        .as_deref()
        .is_some_and(|a| a.starts_with("127.0.0.2:")));
    assert_eq!(app.order(&paid_by_notify).await["status"], "paid");
    let created_id = created["id"].as_str().unwrap();
    assert_eq!(app.order(created_id).await["status"], "pending");
    assert_eq!(
        gateway.methods(),
        vec!["alipay.trade.precreate".to_owned()],
        "the gateway was called for the other address's order only"
    );

    let metrics = other
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "kassa_rate_limited_total{surface=\"connections\"} 150"),
        "refused connections are counted: {metrics}"
    );
}

#[tokio::test]
async fn a_request_head_sent_slower_than_header_timeout_is_answered_408_closed_and_not_handled() {
    let app = TestApp::spawn_alipay(&[("KASSA_SERVER_HEADER_TIMEOUT", "1s")]).await;
    let stream = TcpStream::connect(app.socket).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    let head_sent = Arc::new(AtomicBool::new(false));
    let sent = head_sent.clone();
    // 45 bytes of one header at 100 ms each: the whole head takes 4.5 s, under actix's
    // own default of 5 s, over the configured 1 s.
    let drip = tokio::spawn(async move {
        let start = "POST /notify/alipay HTTP/1.1\r\nHost: kassa\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\nX-Slow: ";
        if writer.write_all(start.as_bytes()).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for _ in 0..45 {
            tick.tick().await;
            if writer.write_all(b"a").await.is_err() {
                return;
            }
        }
        if writer.write_all(b"\r\nContent-Length: 1\r\n\r\na").await.is_ok() {
            sent.store(true, Ordering::SeqCst);
        }
    });

    let fate = outcome(reader).await;
    let head_was_sent = head_sent.load(Ordering::SeqCst);
    drip.abort();
    match fate {
        Fate::Answered { text, .. } => {
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        }
        other => panic!("a slow head is answered 408, not {other:?}"),
    }
    assert!(!head_was_sent, "cut off before the head was complete");
    assert_eq!(
        app.notifications().await.len(),
        0,
        "no notification stored: the request never reached the handler"
    );
}

/// A client that sends a chunked body one 1-byte chunk a second and never its last
/// chunk: no length declared, so nothing tells the server how much is left.
async fn dripped_chunks(server: SocketAddr, head: String) -> Fate {
    let stream = TcpStream::connect(server).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    let drip = tokio::spawn(async move {
        if writer.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if writer.write_all(b"1\r\n \r\n").await.is_err() {
                return;
            }
        }
    });
    let fate = outcome(reader).await;
    drip.abort();
    fate
}

#[tokio::test]
async fn a_chunked_body_dripped_without_end_is_answered_and_its_connection_closed_whether_or_not_the_route_reads_it_storing_nothing(
) {
    let app = TestApp::spawn_alipay(&[("KASSA_SERVER_BODY_TIMEOUT", "2s")]).await;
    let orders_before = count(&app, "orders");
    let cases = [
        (
            "POST /api/v1/orders",
            "Content-Type: application/json\r\nAuthorization: Bearer kassa_not_a_key\r\n".to_owned(),
            "HTTP/1.1 401",
        ),
        (
            "POST /api/v1/orders",
            format!(
                "Content-Type: text/plain\r\nAuthorization: Bearer {}\r\n",
                app.api_key
            ),
            "HTTP/1.1 415",
        ),
        ("POST /no-such-path", String::new(), "HTTP/1.1 404"),
        // Read, so cut off by the body deadline: still, nothing of it is drained.
        (
            "POST /notify/alipay",
            "Content-Type: application/x-www-form-urlencoded\r\n".to_owned(),
            "HTTP/1.1 408",
        ),
        ("GET /healthz", String::new(), "HTTP/1.1 200"),
    ];
    let clients: Vec<_> = cases
        .iter()
        .map(|(line, headers, _)| {
            let head = format!(
                "{line} HTTP/1.1\r\nHost: {}\r\n{headers}Transfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n",
                app.socket
            );
            tokio::spawn(dripped_chunks(app.socket, head))
        })
        .collect();
    for ((line, _, expected), client) in cases.iter().zip(clients) {
        match client.await.unwrap() {
            Fate::Answered { text, .. } => {
                assert!(text.starts_with(expected), "{line}: {text}");
                assert!(
                    text.to_ascii_lowercase().contains("connection: close"),
                    "{line}: the answer says the connection ends: {text}"
                );
            }
            other => panic!(
                "{line}: answered and closed while the body still drips, not {other:?} (a client \
                 still connected after {} s is NeverCutOff)",
                GIVE_UP.as_secs()
            ),
        }
    }
    assert_eq!(count(&app, "orders"), orders_before, "no order was created");
    assert_eq!(app.notifications().await.len(), 0, "no notification stored");
}
