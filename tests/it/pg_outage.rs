//! kassa on PostgreSQL while the database cannot be reached: a TCP proxy of the test's
//! own stands between kassa and the server, and "the server is gone" is the proxy
//! dropping every connection and refusing new ones (nothing global is done to the
//! shared server). Payment platforms must hear `failure` (so they resend), the API a
//! 503 `database_unavailable`, `/healthz` a 503; once the database is back, the resent
//! notifications apply. The checkout page and the dashboard answer a `503` page that asks
//! to try again, not the `500` of a bug.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use kassa::domain::Currency;

use crate::admin::{csrf_of, Staff};
use crate::helpers::{
    error_code, http_client, trade_success, TestApp, ADMIN_PASSWORD, ALIPAY_APP_ID, ALIPAY_SELLER_ID,
};
use crate::notify_wechat::{insert_wechat_order, post, Notice, APPID, MCHID, PUBLIC_KEY_ID};
use crate::oracle::signed_notification;
use crate::pg_schema::{PgSchema, SKIPPED, URL_VAR};

/// Forwards TCP connections to the PostgreSQL server's Unix socket, until `cut`. On a
/// runtime of its own: kassa's start-up blocks the test's thread while it connects.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    fn start(socket: std::path::PathBuf) -> Proxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (up_, links_) = (up.clone(), links.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut client, _)) = listener.accept().await {
                if !up_.load(Ordering::SeqCst) {
                    // The server is "gone": the connection ends before a byte of answer.
                    drop(client);
                    continue;
                }
                let socket = socket.clone();
                links_.lock().unwrap().push(tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::UnixStream::connect(&socket).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                }));
            }
        });
        Proxy {
            port,
            up,
            links,
            runtime: Some(runtime),
        }
    }

    /// Every open connection is dropped, and new ones are closed at once.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The server's Unix socket, from `KASSA_TEST_PG_URL` (the test cluster listens on a
/// socket only); `None` when it names a TCP server, which this test does not proxy.
fn server_socket() -> Option<std::path::PathBuf> {
    let url = std::env::var(URL_VAR).ok()?;
    let config: tokio_postgres::Config = url.trim().parse().ok()?;
    let port = config.get_ports().first().copied().unwrap_or(5432);
    config.get_hosts().iter().find_map(|host| match host {
        tokio_postgres::config::Host::Unix(dir) => Some(dir.join(format!(".s.PGSQL.{port}"))),
        _ => None,
    })
}

/// `KASSA_TEST_PG_URL` with the proxy's address instead of the socket, on `schema`.
fn proxied_url(schema: &PgSchema, port: u16) -> String {
    let url = std::env::var(URL_VAR).unwrap();
    let config: tokio_postgres::Config = url.trim().parse().unwrap();
    format!(
        "postgresql://{}@127.0.0.1:{port}/{}?options=-csearch_path%3D{}",
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres"),
        schema.schema()
    )
}

/// kassa with Alipay and WeChat Pay configured (their gateways unreachable), on a
/// schema of its own reached through a `Proxy`; `None` without a server to proxy.
async fn app_behind_a_proxy() -> Option<(Proxy, TestApp)> {
    let (Some(schema), Some(socket)) = (PgSchema::new(), server_socket()) else {
        return None;
    };
    let proxy = Proxy::start(socket);
    let url = proxied_url(&schema, proxy.port);
    let keys = format!("{}/tests/vectors/keys", env!("CARGO_MANIFEST_DIR"));
    let alipay_key = format!("{keys}/alipay_app_private_pkcs1.pem");
    let alipay_public = format!("{keys}/alipay_platform_public.pem");
    let merchant = format!("{keys}/wechat_merchant_private_pkcs1.pem");
    let wechat_public = format!("{keys}/wechat_platform_public.pem");
    let env: Vec<(&str, &str)> = vec![
        ("KASSA_ALIPAY_APP_ID", ALIPAY_APP_ID),
        ("KASSA_ALIPAY_APP_PRIVATE_KEY_FILE", &alipay_key),
        ("KASSA_ALIPAY_ALIPAY_PUBLIC_KEY_FILE", &alipay_public),
        ("KASSA_ALIPAY_GATEWAY", "http://127.0.0.1:9/gateway.do"),
        ("KASSA_ALIPAY_SELLER_ID", ALIPAY_SELLER_ID),
        ("KASSA_WECHAT_MCHID", MCHID),
        ("KASSA_WECHAT_APPID", APPID),
        ("KASSA_WECHAT_APIV3_KEY", crate::helpers::WECHAT_APIV3_KEY),
        (
            "KASSA_WECHAT_MERCHANT_SERIAL_NO",
            crate::notify_wechat::MERCHANT_SERIAL,
        ),
        ("KASSA_WECHAT_MERCHANT_PRIVATE_KEY_FILE", &merchant),
        ("KASSA_WECHAT_PLATFORM_PUBLIC_KEY_FILE", &wechat_public),
        ("KASSA_WECHAT_PLATFORM_PUBLIC_KEY_ID", PUBLIC_KEY_ID),
        ("KASSA_WECHAT_API_BASE", "http://127.0.0.1:9"),
    ];
    let app = TestApp::spawn_with_settings_on(Arc::new(schema), &url, &env).await;
    Some((proxy, app))
}

#[tokio::test]
async fn with_the_database_gone_notifications_answer_failure_the_api_and_healthz_503_and_the_resends_apply_once_it_is_back(
) {
    let Some((proxy, app)) = app_behind_a_proxy().await else {
        println!("{SKIPPED} (or it names no Unix socket to proxy)");
        return;
    };
    let alipay_order = app.insert_order("outage-1", 1234).await;
    let wechat_order = insert_wechat_order(&app, 1234, Currency::Cny).await;
    let alipay_notice = signed_notification(&trade_success(&alipay_order, "12.34"));
    let wechat_notice = Notice::paying(&app, &wechat_order, 1234);
    let wechat_body = wechat_notice.body();
    let wechat_headers = wechat_notice.headers(&wechat_body);
    assert_eq!(app.get("/healthz").await.status(), 200);

    proxy.cut();
    let started = std::time::Instant::now();
    let alipay = app.post_alipay_notify(alipay_notice.clone()).await;
    let wechat = post(&app, &wechat_body, &wechat_headers).await;
    let api = error_code(app.get(&format!("/api/v1/orders/{alipay_order}")).await).await;
    let health = app.get("/healthz").await.status().as_u16();
    let took = started.elapsed();

    assert_eq!(
        alipay,
        (200, "failure".to_owned()),
        "Alipay resends on anything but success"
    );
    assert!(
        !(200..300).contains(&wechat.0),
        "WeChat resends on a non-2xx: {wechat:?}"
    );
    let error: serde_json::Value = serde_json::from_str(&wechat.1).expect("WeChat's JSON error");
    assert_eq!(error["code"], "FAIL", "{error}");
    assert_eq!(
        (api.0, api.1.as_str()),
        (503, "database_unavailable"),
        "{}",
        api.2
    );
    assert_eq!(health, 503);
    assert!(
        took < std::time::Duration::from_secs(20),
        "answered within bounds: {took:?}"
    );

    proxy.restore();
    assert_eq!(
        app.get("/healthz").await.status(),
        200,
        "back once the database is"
    );
    assert_eq!(
        app.post_alipay_notify(alipay_notice).await,
        (200, "success".to_owned())
    );
    let resent = post(&app, &wechat_body, &wechat_headers).await;
    assert_eq!(resent.0, 204, "{resent:?}");
    assert_eq!(app.order(&alipay_order).await["status"], "paid");
    assert_eq!(app.order(&wechat_order).await["status"], "paid");
    assert_eq!(app.events(&alipay_order).await.len(), 1, "applied once");
}

/// A page answered while the database is out of reach: `(status, Retry-After, body)`.
async fn page(client: &reqwest::Client, url: &str, language: &str) -> (u16, Option<String>, String) {
    let response = client
        .get(url)
        .header("accept-language", language)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.text().await.unwrap())
}

#[tokio::test]
async fn with_the_database_gone_the_checkout_and_admin_pages_answer_a_503_page_to_retry_and_200_once_it_is_back(
) {
    let Some((proxy, app)) = app_behind_a_proxy().await else {
        println!("{SKIPPED} (or it names no Unix socket to proxy)");
        return;
    };
    let order = app.insert_order("outage-pages-1", 1234).await;
    let checkout = app.url(&format!("/pay/{order}"));
    let customer = http_client();
    let staff = Staff::signed_in(&app).await;
    let mut staff_zh = Staff::signed_in(&app).await;
    staff_zh.language = "zh-CN";
    let signing_in = Staff::new(&app);
    let login_form = signing_in.get("/admin/login").await;
    let csrf = csrf_of(&login_form.body);
    assert_eq!(page(&customer, &checkout, "en").await.0, 200);
    assert_eq!(staff.get("/admin/orders").await.status, 200);

    proxy.cut();
    let checkout_en = page(&customer, &checkout, "en").await;
    let checkout_zh = page(&customer, &checkout, "zh-CN").await;
    let orders_en = staff.get("/admin/orders").await;
    let orders_zh = staff_zh.get("/admin/orders").await;
    let sign_in = signing_in
        .post(
            "/admin/login",
            &[
                ("csrf", csrf.as_str()),
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
            ],
        )
        .await;

    for (what, (status, retry_after, body), says) in [
        ("checkout, English", checkout_en, "temporarily unavailable"),
        ("checkout, Chinese", checkout_zh, "服务暂时不可用"),
    ] {
        assert_eq!(status, 503, "{what}: {body}");
        assert_eq!(retry_after.as_deref(), Some("5"), "{what}");
        assert!(body.contains(says), "{what}: {body}");
        assert!(
            !body.to_lowercase().contains("database") && !body.contains("数据库"),
            "{what}: customers are told nothing about databases: {body}"
        );
    }
    for (what, answer, says) in [
        ("orders, English", &orders_en, "The database cannot be reached"),
        ("orders, Chinese", &orders_zh, "暂时无法连接数据库"),
        ("sign-in form sent", &sign_in, "The database cannot be reached"),
    ] {
        assert_eq!(answer.status, 503, "{what}: {}", answer.body);
        assert_eq!(answer.headers["retry-after"], "5", "{what}");
        assert!(answer.body.contains(says), "{what}: {}", answer.body);
        assert!(answer.body.contains("<html"), "{what}: a page: {}", answer.body);
    }

    proxy.restore();
    let back = page(&customer, &checkout, "en").await;
    assert_eq!(back.0, 200, "back once the database is: {}", back.2);
    assert!(back.1.is_none(), "no Retry-After on a page shown");
    assert_eq!(staff.get("/admin/orders").await.status, 200);
    assert_eq!(
        signing_in.try_sign_in("admin", ADMIN_PASSWORD).await.status,
        303,
        "signs in once the database is back"
    );
}
