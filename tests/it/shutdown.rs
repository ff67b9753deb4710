//! Stopping the real binary while payment notifications stream in: SIGTERM (a graceful
//! stop) and `kill -9`. Whatever kassa answered `success` to must be paid after the
//! restart; a graceful stop also leaves no write-ahead log and no claimed webhook.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{Duration, Utc};
use kassa::db::{orders, Database};
use kassa::domain::ids::OrderId;
use kassa::domain::{Amount, Currency, NewOrder, OutTradeNo, ProviderKind};
use kassa::sandbox::SANDBOX_APP_ID;
use serde_json::{json, Value};

use crate::cli::{eventually, get_order, kassa, run, send_signal, start_server, text, Server};
use crate::gateway_standin::platform_sign;
use crate::helpers::{install_sandbox_keys, trade_success};
use crate::receiver::{Answer, Receiver};

const ORDERS: usize = 240;
const CLIENTS: usize = 4;
/// Acknowledged notifications before the signal: the stream is well under way.
const ACKED_BEFORE_SIGNAL: usize = 40;

/// Pending Alipay orders of 12.34 stored straight into a new database (the server is
/// not running yet), and their ids.
fn seed_orders(db_path: &Path) -> Vec<String> {
    let db = Database::open(db_path).unwrap();
    let threads = db.threads();
    let now = Utc::now();
    let ids = db
        .write_blocking(move |c| {
            let mut ids = Vec::new();
            for i in 0..ORDERS {
                let order = NewOrder {
                    id: OrderId::generate(),
                    out_trade_no: OutTradeNo::parse(&format!("stop-{i}")).unwrap(),
                    amount: Amount::from_minor(1234, Currency::Cny).unwrap(),
                    subject: "Tea".into(),
                    provider: ProviderKind::Alipay,
                    notify_url: None,
                    return_url: None,
                    metadata: Default::default(),
                    created_at: now,
                    expires_at: now + Duration::minutes(15),
                };
                ids.push(order.id.to_string());
                orders::insert(c, &order, Some("qr"))?;
            }
            Ok(ids)
        })
        .unwrap();
    drop(db);
    while threads.running() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    ids
}

/// What each client saw: the orders whose notification kassa answered `success`.
struct Stream {
    acknowledged: Vec<String>,
    unanswered: usize,
}

/// Several clients post python-alipay-sdk-signed notifications for every order, each
/// its own share, while `signal` is sent to the server once `ACKED_BEFORE_SIGNAL` have
/// been acknowledged (and `ready` holds). Returns what was acknowledged and how the
/// process ended.
async fn notifications_cut_by(
    server: &mut Server,
    ids: &[String],
    signal: &str,
    ready: impl Fn() -> bool,
) -> (Stream, ExitStatus) {
    let params: Vec<Value> = ids
        .iter()
        .map(|id| {
            let mut p = trade_success(id, "12.34");
            p["app_id"] = json!(SANDBOX_APP_ID);
            p["auth_app_id"] = json!(SANDBOX_APP_ID);
            p
        })
        .collect();
    let bodies = tokio::task::spawn_blocking(move || crate::oracle::signed_notifications(&params))
        .await
        .unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    let url = format!("{}/notify/alipay", server.address);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let share: Vec<(String, String)> = ids
                .iter()
                .cloned()
                .zip(bodies.iter().cloned())
                .skip(c)
                .step_by(CLIENTS)
                .collect();
            let (url, acked) = (url.clone(), acked.clone());
            tokio::spawn(async move {
                let client = crate::helpers::http_client();
                let mut mine = Vec::new();
                let mut unanswered = 0;
                for (id, body) in share {
                    let reply = client
                        .post(&url)
                        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
                        .body(body)
                        .send()
                        .await;
                    let success = match reply {
                        Ok(r) if r.status() == 200 => r.text().await.is_ok_and(|t| t == "success"),
                        _ => false,
                    };
                    if success {
                        acked.fetch_add(1, Ordering::SeqCst);
                        mine.push(id);
                    } else {
                        unanswered += 1;
                    }
                }
                (mine, unanswered)
            })
        })
        .collect();
    eventually(
        std::time::Duration::from_secs(60),
        "the first acknowledgements",
        || Some(()).filter(|()| acked.load(Ordering::SeqCst) >= ACKED_BEFORE_SIGNAL && ready()),
    )
    .await;
    send_signal(server, signal);
    let mut stream = Stream {
        acknowledged: Vec::new(),
        unanswered: 0,
    };
    for client in clients {
        let (mine, unanswered) = client.await.unwrap();
        stream.acknowledged.extend(mine);
        stream.unanswered += unanswered;
    }
    let exit = server.child.wait().unwrap();
    (stream, exit)
}

fn wal_bytes(db_path: &Path) -> u64 {
    let mut wal = db_path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(std::path::PathBuf::from(wal)).map_or(0, |m| m.len())
}

/// Starts kassa again on `dir` and asserts through the API that every acknowledged order
/// is paid, with one applied payment.
async fn assert_paid_after_restart(dir: &Path, key: &str, acknowledged: &[String]) {
    let next = start_server(dir, &[]).await;
    for id in acknowledged {
        let order = get_order(&next, key, id).await;
        assert_eq!(order["status"], "paid", "acknowledged, so paid: {order}");
    }
    drop(next);
}

/// An API key (created before any server runs), the seeded orders, and the sandbox
/// with the test vectors' keys so the oracle signs as the platform.
fn prepare(dir: &Path) -> (String, Vec<String>) {
    let data = dir.join("data");
    install_sandbox_keys(&data);
    let key = text(&run(kassa(dir).args(["apikey", "create", "shop"])).stdout)
        .trim()
        .to_owned();
    assert!(key.starts_with("kassa_sk_"), "{key}");
    (key, seed_orders(&data.join("kassa.db")))
}

#[tokio::test]
async fn sigterm_under_a_stream_of_notifications_exits_0_with_an_empty_log_and_no_claimed_webhook_and_every_acknowledged_order_is_paid(
) {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("data/kassa.db");
    let path = dir.path().to_owned();
    let (key, ids) = tokio::task::spawn_blocking(move || prepare(&path)).await.unwrap();
    // The shop takes a minute to answer: the dispatchers hold their claims when the
    // signal comes.
    let shop = Receiver::start().await;
    shop.script(vec![
        Answer::status(200).after(std::time::Duration::from_secs(60));
        64
    ]);
    let mut server = start_server(dir.path(), &[("KASSA_WEBHOOKS_URL", shop.url.as_str())]).await;

    let (stream, exit) =
        notifications_cut_by(&mut server, &ids, "-TERM", || !shop.received().is_empty()).await;

    assert_eq!(exit.code(), Some(0), "a graceful stop exits 0: {exit:?}");
    assert_eq!(wal_bytes(&db_path), 0, "the log was checkpointed and emptied");
    assert!(stream.acknowledged.len() >= ACKED_BEFORE_SIGNAL);
    assert!(
        stream.unanswered > 0,
        "the signal came while notifications were still being sent"
    );
    let conn = crate::helpers::raw_connection(&db_path);
    let claimed: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM webhook_outbox WHERE status = 'delivering' OR lease_until IS NOT NULL OR lease_owner IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(claimed, 0, "every claim was given back");
    drop(conn);
    drop(server);
    assert_paid_after_restart(dir.path(), &key, &stream.acknowledged).await;
}

#[tokio::test]
async fn kill_9_under_a_stream_of_notifications_loses_no_acknowledged_payment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let (key, ids) = tokio::task::spawn_blocking(move || prepare(&path)).await.unwrap();
    let mut server = start_server(dir.path(), &[]).await;

    let (stream, exit) = notifications_cut_by(&mut server, &ids, "-KILL", || true).await;

    assert_eq!(exit.signal(), Some(9), "{exit:?}");
    assert!(stream.acknowledged.len() >= ACKED_BEFORE_SIGNAL);
    assert!(
        stream.unanswered > 0,
        "the kill came while notifications were still being sent"
    );
    drop(server);
    assert_paid_after_restart(dir.path(), &key, &stream.acknowledged).await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused_and_the_first_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    install_sandbox_keys(&dir.path().join("data"));
    let first = start_server(dir.path(), &[]).await;

    let second = run(kassa(dir.path()).args(["--bind", "127.0.0.1:0"]));

    assert!(!second.status.success());
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains("kassa.lock") && stderr.contains("running"),
        "{stderr}"
    );
    let health = crate::helpers::http_client()
        .get(format!("{}/healthz", first.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

const IN_FLIGHT_QR: &str = "https://qr.alipay.com/in-flight";

/// How an order created across SIGTERM ended.
struct AcrossSigterm {
    /// The HTTP status and JSON body the client got, if it got an answer.
    answer: Option<(u16, Value)>,
    exit: ExitStatus,
    /// The orders and provider calls stored once the process had exited.
    orders: Vec<(String, String)>,
    calls: Vec<(String, String, String)>,
}

/// An order created while the Alipay gateway takes `gateway_delay` to answer (a signed
/// precreate success with `IN_FLIGHT_QR`), with SIGTERM sent while kassa waits on it.
async fn create_order_across_sigterm(
    shutdown_timeout: &str,
    gateway_delay: std::time::Duration,
) -> AcrossSigterm {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Receiver::start().await;
    let precreated =
        json!({"code": "10000", "msg": "Success", "out_trade_no": "in-flight", "qr_code": IN_FLIGHT_QR})
            .to_string();
    let signed = format!(
        r#"{{"alipay_trade_precreate_response":{precreated},"sign":"{}"}}"#,
        platform_sign(&precreated)
    );
    gateway.script([Answer::status(200).after(gateway_delay).with_body(signed)]);
    let keys = format!("{}/tests/vectors/keys", env!("CARGO_MANIFEST_DIR"));
    let (app_key, ali_key) = (
        format!("{keys}/alipay_app_private_pkcs1.pem"),
        format!("{keys}/alipay_platform_public.pem"),
    );
    let env = [
        ("KASSA_SERVER_SHUTDOWN_TIMEOUT", shutdown_timeout),
        ("KASSA_ALIPAY_APP_ID", crate::helpers::ALIPAY_APP_ID),
        ("KASSA_ALIPAY_APP_PRIVATE_KEY_FILE", app_key.as_str()),
        ("KASSA_ALIPAY_ALIPAY_PUBLIC_KEY_FILE", ali_key.as_str()),
        ("KASSA_ALIPAY_GATEWAY", gateway.url.as_str()),
    ];
    let mut server = start_server(dir.path(), &env).await;
    let key = text(&run(kassa(dir.path()).args(["apikey", "create", "shop"])).stdout)
        .trim()
        .to_owned();
    // No client timeout: only the server decides when this request ends.
    let request = reqwest::Client::new()
        .post(format!("{}/api/v1/orders", server.address))
        .bearer_auth(&key)
        .json(&crate::helpers::order_body("in-flight", 100))
        .send();
    let request = tokio::spawn(async move {
        let response = request.await?;
        let status = response.status().as_u16();
        Ok::<_, reqwest::Error>((status, response.json::<Value>().await?))
    });
    eventually(
        std::time::Duration::from_secs(30),
        "the order's call to the gateway",
        || Some(()).filter(|()| !gateway.received().is_empty()),
    )
    .await;
    send_signal(&server, "-TERM");
    let answer = request.await.unwrap().ok();
    let exit = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("data/kassa.db")).unwrap();
    let orders = conn
        .prepare("SELECT id, out_trade_no FROM orders ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let calls = conn
        .prepare("SELECT order_id, call, outcome FROM provider_calls ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    AcrossSigterm {
        answer,
        exit,
        orders,
        calls,
    }
}

#[tokio::test]
async fn a_request_in_flight_at_sigterm_is_answered_before_the_exit() {
    let ended = create_order_across_sigterm("10s", std::time::Duration::from_secs(2)).await;

    let (status, order) = ended.answer.expect("the request in flight got its HTTP answer");
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["out_trade_no"], "in-flight");
    assert_eq!(
        order["qr_code"], IN_FLIGHT_QR,
        "the gateway's answer, given after the signal"
    );
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(ended.orders, [(id.clone(), "in-flight".to_owned())]);
    assert_eq!(
        ended.calls,
        [(id, "precreate".to_owned(), "ok".to_owned())],
        "the gateway's answer was stored before the exit"
    );
    assert_eq!(ended.exit.code(), Some(0), "{:?}", ended.exit);
}

#[tokio::test]
async fn a_request_outlasting_the_shutdown_timeout_is_cut_off_and_kassa_still_exits_0() {
    // kassa would answer after its 15 s provider timeout; the 1 s grace ends first.
    let ended = create_order_across_sigterm("1s", std::time::Duration::from_secs(60)).await;

    assert!(
        ended.answer.is_none(),
        "the connection was closed without an answer: {:?}",
        ended.answer
    );
    assert!(ended.orders.is_empty(), "{:?}", ended.orders);
    assert!(ended.calls.is_empty(), "{:?}", ended.calls);
    assert_eq!(ended.exit.code(), Some(0), "{:?}", ended.exit);
}

#[tokio::test]
async fn sigterm_with_a_checkout_event_stream_open_ends_the_stream_and_exits_0_without_waiting_out_the_shutdown_timeout(
) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), &[("KASSA_SERVER_SHUTDOWN_TIMEOUT", "60s")]).await;
    let key = text(&run(kassa(dir.path()).args(["apikey", "create", "shop"])).stdout)
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    let order: Value = client
        .post(format!("{}/api/v1/orders", server.address))
        .bearer_auth(&key)
        .json(&crate::helpers::order_body("streamed", 100))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    let mut events = client
        .get(format!("{}/pay/{id}/events", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let first = events.chunk().await.unwrap().expect("the first event");
    let first = String::from_utf8_lossy(&first).into_owned();
    assert!(first.starts_with("event: status\n"), "{first}");
    assert!(first.contains(r#""status":"pending""#), "{first}");

    let signalled = std::time::Instant::now();
    send_signal(&server, "-TERM");
    // Heartbeats (every 15 s) may come first; the stream must then end cleanly, not be
    // cut when the 60 s grace runs out.
    let mut rest = String::new();
    let end = loop {
        match events.chunk().await {
            Ok(Some(chunk)) => rest.push_str(&String::from_utf8_lossy(&chunk)),
            other => break other.map(|_| ()),
        }
    };
    assert!(
        end.is_ok(),
        "the stream was cut, not ended: {end:?} after {rest:?}"
    );
    assert!(!rest.contains("event:"), "no other event came: {rest:?}");
    let exit = tokio::task::spawn_blocking(move || server.child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let took = signalled.elapsed();
    assert!(
        took < std::time::Duration::from_secs(30),
        "the stop took {took:?}, as if it had waited for the 60 s shutdown_timeout"
    );
}

#[tokio::test]
async fn a_graceful_stop_through_the_applications_handle_ends_an_open_checkout_event_stream_instead_of_waiting_out_the_shutdown_timeout(
) {
    let app = crate::helpers::TestApp::spawn_sandbox(&[("KASSA_SERVER_SHUTDOWN_TIMEOUT", "60s")]).await;
    let order = app.create_order("streamed-in-process", 100).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let mut events = client
        .get(app.url(&format!("/pay/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let first = events.chunk().await.unwrap().expect("the first event");
    assert!(String::from_utf8_lossy(&first).contains(r#""status":"pending""#));

    let stopped = std::time::Instant::now();
    // `restart` stops through `Application::handle()`, as an embedding program would.
    let reading = tokio::spawn(async move {
        let mut rest = String::new();
        loop {
            match events.chunk().await {
                Ok(Some(chunk)) => rest.push_str(&String::from_utf8_lossy(&chunk)),
                other => break (other.map(|_| ()), rest),
            }
        }
    });
    let app = app.restart().await;
    let (end, rest) = reading.await.unwrap();
    assert!(
        end.is_ok(),
        "the stream was cut, not ended: {end:?} after {rest:?}"
    );
    assert!(!rest.contains("event:"), "no other event came: {rest:?}");
    let took = stopped.elapsed();
    assert!(
        took < std::time::Duration::from_secs(30),
        "the stop took {took:?}, as if it had waited for the 60 s shutdown_timeout"
    );
    assert_eq!(
        app.order(&id).await["status"],
        "pending",
        "the restarted kassa serves the order"
    );
}
