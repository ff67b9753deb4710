//! The sandbox facing a client that is not on the server's machine: its fault switches
//! need the sandbox's token, per-order switches exist only for real trades, the wallet's
//! forms carry an anti-forgery token, its pages the checkout page's security headers,
//! and the default sandbox refuses to start on a non-loopback address.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use kassa::config::{keys, ConfigSources, Settings};
use kassa::db::sandbox as store;
use kassa::startup::{Application, Options, StartupError};
use serde_json::{json, Value};

use crate::cli::{kassa, text};
use crate::helpers::{open_wallet, wallet_csrf, TestApp, ADMIN_PASSWORD};
use crate::sandbox_wechat::create_wechat_order;

const SCALE: &[(&str, &str)] = &[("KASSA_SANDBOX_TIME_SCALE", "600")];
/// Requests from the test's loopback client count as this one's: kassa trusts loopback
/// as its proxy.
const REMOTE: &str = "203.0.113.7";

async fn behind_proxy() -> TestApp {
    TestApp::spawn_sandbox(&[
        ("KASSA_SANDBOX_TIME_SCALE", "600"),
        ("KASSA_SERVER_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await
}

fn sandbox_token(app: &TestApp) -> String {
    std::fs::read_to_string(app.data_dir.join("sandbox/token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Every stored fault switch: scope and JSON.
fn fault_rows(app: &TestApp) -> Vec<(String, String)> {
    let conn = app.db().clone();
    let stmt = conn
        .prepare("SELECT scope, faults FROM sandbox_faults ORDER BY scope")
        .unwrap();
    stmt.query_map(crate::vals![], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

async fn trade_status(app: &TestApp, out_trade_no: &str) -> String {
    let no = out_trade_no.to_owned();
    app.core
        .db
        .read(move |c| store::find_trade(c, &no))
        .await
        .unwrap()
        .unwrap()
        .status
        .as_str()
        .to_owned()
}

#[tokio::test]
async fn from_beyond_a_trusted_proxy_every_fault_switch_is_refused_without_the_sandbox_token_changes_nothing_and_answers_with_it(
) {
    let app = behind_proxy().await;
    let order = app.create_order("remote-1", 100).await;
    let (id, qr) = (order["id"].as_str().unwrap(), order["qr_code"].as_str().unwrap());
    let token = sandbox_token(&app);
    let paths = [
        "/sandbox/alipay/faults".to_owned(),
        "/sandbox/wechat/faults".to_owned(),
        format!("/sandbox/alipay/faults/{id}"),
        format!("/sandbox/wechat/faults/{id}"),
    ];
    // Scanned first: opening the wallet page moves the trade on by itself.
    let csrf = open_wallet(&app.client, qr).await;
    let before = crate::stored::rows(&app).await;

    for path in &paths {
        for bad in [None, Some("not-the-token")] {
            let mut get = app.client.get(app.url(path)).header("x-forwarded-for", REMOTE);
            let mut set = app
                .client
                .post(app.url(path))
                .header("x-forwarded-for", REMOTE)
                .json(&json!({"bad_signature": true}));
            if let Some(bad) = bad {
                get = get.header("x-sandbox-token", bad);
                set = set.bearer_auth(bad);
            }
            for request in [get, set] {
                let (status, code, body) = crate::helpers::error_code(request.send().await.unwrap()).await;
                assert_eq!((status, code.as_str()), (403, "sandbox_token_required"), "{path}");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(
                    message.contains("X-Sandbox-Token") && message.contains("sandbox/token"),
                    "says how to get in: {message}"
                );
            }
        }
    }
    // The wallet's own form, from the page's remote visitor without the token.
    let remote_page = app
        .client
        .get(qr)
        .header("x-forwarded-for", REMOTE)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        remote_page.contains(r#"name="sandbox_token""#),
        "a remote visitor is asked for the token: {remote_page}"
    );
    let form = app
        .client
        .post(format!("{qr}/faults"))
        .header("x-forwarded-for", REMOTE)
        .form(&[("csrf", csrf.as_str()), ("bad_signature", "on")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 403);
    assert!(form.text().await.unwrap().contains("sandbox token"));

    assert_eq!(fault_rows(&app), vec![], "no switch stored");
    assert_eq!(crate::stored::rows(&app).await, before, "nothing else changed");
    // Sandbox payments still work: the refused bad_signature was not set.
    app.pay_in_wallet(qr).await;
    assert_eq!(app.drive_sandbox().await, 1);
    assert_eq!(app.order(id).await["status"], "paid");
    let notes = app.notifications().await;
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].verdict.as_str(), "applied");

    // With the token, in either header, the same remote client reads and sets them.
    let set = app
        .client
        .post(app.url("/sandbox/alipay/faults"))
        .header("x-forwarded-for", REMOTE)
        .header("x-sandbox-token", &token)
        .json(&json!({"drop_first": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let read: Value = app
        .client
        .get(app.url("/sandbox/alipay/faults"))
        .header("x-forwarded-for", REMOTE)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["drop_first"], 1);
    let other = app.create_order("remote-2", 100).await;
    let other_qr = other["qr_code"].as_str().unwrap();
    let csrf = open_wallet(&app.client, other_qr).await;
    let form = app
        .client
        .post(format!("{other_qr}/faults"))
        .header("x-forwarded-for", REMOTE)
        .form(&[
            ("csrf", csrf.as_str()),
            ("sandbox_token", token.as_str()),
            ("duplicates", "2"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 303);
    let other_scope = format!("trade:{}", other["id"].as_str().unwrap());
    let stored = fault_rows(&app);
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0].0, "global");
    assert_eq!(stored[1].0, other_scope);
    assert!(stored[1].1.contains(r#""duplicates":2"#), "{stored:?}");
}

#[tokio::test]
async fn per_order_switches_for_an_order_the_sandbox_never_saw_or_a_20_kb_name_are_refused_and_store_nothing()
{
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = create_wechat_order(&app, "scope-1", 100).await;
    let id = order["id"].as_str().unwrap();
    let long = "x".repeat(20 * 1024);
    let before = crate::stored::rows(&app).await;

    for platform in ["alipay", "wechat"] {
        for name in ["ord_nosuchorder00000000", "scope-1", long.as_str()] {
            let path = format!("/sandbox/{platform}/faults/{name}");
            let set = app
                .client
                .post(app.url(&path))
                .json(&json!({"drop_first": 3}))
                .send()
                .await
                .unwrap();
            let (status, code, body) = crate::helpers::error_code(set).await;
            assert_eq!(
                (status, code.as_str()),
                (404, "unknown_trade"),
                "{platform} {}",
                name.len()
            );
            assert!(
                body["error"]["message"].as_str().unwrap().len() < 400,
                "the name is not echoed back whole"
            );
            let get = app.client.get(app.url(&path)).send().await.unwrap();
            assert_eq!(get.status(), 404);
        }
    }

    assert_eq!(fault_rows(&app), vec![], "no scope created");
    assert_eq!(crate::stored::rows(&app).await, before);
    // The order's own id names its trade.
    let own = app
        .client
        .post(app.url(&format!("/sandbox/wechat/faults/{id}")))
        .json(&json!({"drop_first": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let stored = fault_rows(&app);
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].0, format!("trade:{id}"));
    let switches: Value = serde_json::from_str(&stored[0].1).unwrap();
    assert_eq!(switches["drop_first"], 3);
}

#[tokio::test]
async fn a_wallet_form_without_its_pages_anti_forgery_token_is_refused_and_the_order_stays_pending_with_nothing_sent(
) {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = app.create_order("forged-1", 100).await;
    let (id, qr) = (order["id"].as_str().unwrap(), order["qr_code"].as_str().unwrap());
    let another = app.create_order("forged-2", 100).await;
    let others_csrf = open_wallet(&app.client, another["qr_code"].as_str().unwrap()).await;
    let csrf = open_wallet(&app.client, qr).await;
    assert_ne!(csrf, others_csrf, "bound to its wallet");
    let before = crate::stored::rows(&app).await;

    for action in ["pay", "cancel", "faults"] {
        for fields in [
            vec![],
            vec![("csrf", "")],
            vec![("csrf", "AAAA")],
            vec![("csrf", others_csrf.as_str())],
        ] {
            let mut fields = fields.clone();
            fields.push(("bad_signature", "on"));
            let response = app
                .client
                .post(format!("{qr}/{action}"))
                .form(&fields)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 403, "{action} {fields:?}");
            assert!(response.text().await.unwrap().contains("anti-forgery token"));
        }
        // No body at all, as a cross-site form with nothing in it would send.
        let bare = app.client.post(format!("{qr}/{action}")).send().await.unwrap();
        assert_eq!(bare.status(), 403, "{action}");
    }

    assert_eq!(crate::stored::rows(&app).await, before, "nothing stored");
    assert_eq!(fault_rows(&app), vec![]);
    assert_eq!(trade_status(&app, id).await, "WAIT_BUYER_PAY");
    assert_eq!(app.drive_sandbox().await, 0, "no notification queued");
    assert!(app.notifications().await.is_empty());
    assert_eq!(app.order(id).await["status"], "pending");
    assert!(app.events(id).await.is_empty());
    // The page's own token pays.
    let paid = app
        .client
        .post(format!("{qr}/pay"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    assert_eq!(app.drive_sandbox().await, 1);
    assert_eq!(app.order(id).await["status"], "paid");
}

#[tokio::test]
async fn every_wallet_page_carries_the_checkout_pages_security_headers_with_its_own_style_allowed_by_hash() {
    use base64::Engine;

    let app = TestApp::spawn_sandbox(SCALE).await;
    let alipay = app.create_order("headers-1", 100).await;
    let wechat = create_wechat_order(&app, "headers-2", 100).await;
    let checkout = app.get(&format!("/pay/{}", alipay["id"].as_str().unwrap())).await;
    let checkout_csp = checkout.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(checkout_csp.contains("frame-ancestors 'none'"), "{checkout_csp}");

    for order in [&alipay, &wechat] {
        let response = app
            .client
            .get(order["qr_code"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        let html = response.text().await.unwrap();
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(header("referrer-policy").as_deref(), Some("no-referrer"));
        assert_eq!(header("cache-control").as_deref(), Some("no-store"));
        let csp = header("content-security-policy").expect("a CSP");
        // The checkout page's policy, with one more style source: the page's own style.
        let style_start = html.find("<style>").unwrap() + "<style>".len();
        let style = &html[style_start..style_start + html[style_start..].find("</style>").unwrap()];
        let digest = ring::digest::digest(&ring::digest::SHA256, style.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        assert_eq!(
            csp,
            checkout_csp.replacen(
                "style-src 'self'",
                &format!("style-src 'self' 'sha256-{hash}'"),
                1
            ),
            "the policy allows exactly the page's style"
        );
        assert!(!html.contains("<script"), "no script on the page");
        assert!(!wallet_csrf(&html).is_empty());
    }
}

/// Settings as the binary would read them, listening on `bind`.
fn settings_on(dir: &std::path::Path, bind: &str, env: &[(&str, &str)]) -> Settings {
    let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    env.push(("KASSA_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()));
    let sources = ConfigSources {
        file: None,
        env,
        flags: vec![
            (
                keys::SERVER_DATA_DIR.name,
                dir.display().to_string(),
                "--data-dir",
            ),
            (keys::SERVER_BIND.name, bind.into(), "--bind"),
        ],
    }
    .with_no_file();
    Settings::load(&sources).unwrap()
}

/// A server built from `settings` (jobs off), serving.
struct Started {
    port: u16,
    /// The sandbox's token, when the sandbox is on.
    token: Option<String>,
    handle: kassa::startup::StopHandle,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn start(settings: Settings) -> Started {
    let options = Options {
        run_jobs: false,
        ..Options::default()
    };
    let app = match Application::build(settings, options) {
        Ok(app) => app,
        Err(e) => panic!("does not start: {e}"),
    };
    Started {
        port: app.address().port(),
        token: app.sandbox().map(|s| s.keys.token.clone()),
        handle: app.handle(),
        serving: tokio::spawn(app.run_until_stopped()),
    }
}

impl Started {
    async fn healthy_then_stopped(self) {
        let health = crate::helpers::http_client()
            .get(format!("http://127.0.0.1:{}/healthz", self.port))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        self.handle.stop(false).await;
        self.serving.await.unwrap().unwrap();
    }
}

/// This machine's address on its network, if it has one: what another host reaches.
fn lan_address() -> Option<std::net::IpAddr> {
    // Connecting a UDP socket sends nothing; it only picks the outgoing interface.
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback())
}

#[tokio::test]
async fn the_default_sandbox_refuses_to_start_on_all_interfaces_and_starts_when_enabled_explicitly_or_when_a_provider_is_configured(
) {
    // The real binary: no listening line, a non-zero exit, and the way out in the message.
    let dir = tempfile::tempdir().unwrap();
    let mut child = kassa(dir.path())
        .args(["--bind", "0.0.0.0:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next();
    if first.is_some() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    assert!(first.is_none(), "it started: {first:?}");
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("refusing to start")
            && stderr.contains("0.0.0.0")
            && stderr.contains("[sandbox] enabled = true")
            && stderr.contains("127.0.0.1"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data/kassa.db").exists(),
        "refused before creating anything"
    );

    // In process: refused as a typed error, for IPv6's any-address too.
    for bind in ["0.0.0.0:0", "[::]:0"] {
        let dir = tempfile::tempdir().unwrap();
        let refused = Application::build(settings_on(dir.path(), bind, &[]), Options::default());
        assert!(
            matches!(refused, Err(StartupError::SandboxExposed { .. })),
            "{bind}: {:?}",
            refused.err()
        );
    }
    // Explicitly on: it starts, sandbox and all; a client on the network (when this
    // machine has a network address) meets the token requirement.
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_on(dir.path(), "0.0.0.0:0", &[("KASSA_SANDBOX_ENABLED", "true")]);
    let started = start(settings);
    let token = started.token.clone().expect("the sandbox is on");
    if let Some(lan) = lan_address() {
        let url = format!(
            "http://{}/sandbox/alipay/faults",
            std::net::SocketAddr::new(lan, started.port)
        );
        let client = crate::helpers::http_client();
        let refused = client
            .post(&url)
            .json(&json!({"bad_signature": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "from {lan}");
        let read: Value = client
            .get(&url)
            .header("x-sandbox-token", &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(read["bad_signature"], false, "the refused switch was not set");
    }
    started.healthy_then_stopped().await;
    // `auto` with a real provider means no sandbox: nothing to refuse.
    let keys = format!("{}/tests/vectors/keys", env!("CARGO_MANIFEST_DIR"));
    let (app_key, ali_key) = (
        format!("{keys}/alipay_app_private_pkcs8.pem"),
        format!("{keys}/alipay_platform_public.pem"),
    );
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_on(
        dir.path(),
        "0.0.0.0:0",
        &[
            ("KASSA_ALIPAY_APP_ID", crate::helpers::ALIPAY_APP_ID),
            ("KASSA_ALIPAY_APP_PRIVATE_KEY_FILE", &app_key),
            ("KASSA_ALIPAY_ALIPAY_PUBLIC_KEY_FILE", &ali_key),
        ],
    );
    let started = start(settings);
    assert!(started.token.is_none(), "the sandbox is off");
    started.healthy_then_stopped().await;
}

/// What every answer of the simulated gateways carries: no script, no style, no frame.
fn assert_gateway_headers(what: &str, headers: &reqwest::header::HeaderMap) {
    assert_eq!(
        headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok()),
        Some("default-src 'none'; frame-ancestors 'none'"),
        "{what}"
    );
    assert_eq!(
        headers
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff"),
        "{what}"
    );
}

#[tokio::test]
async fn a_gateway_method_carrying_markup_or_quotes_is_answered_as_an_invalid_method_never_written_back_and_every_gateway_answer_forbids_scripts(
) {
    let app = TestApp::spawn_sandbox(SCALE).await;
    let before = crate::stored::rows(&app).await;
    let markup = "<img src=x onerror=alert(1)>";
    let methods = [
        markup.to_owned(),
        format!("alipay.trade.query{markup}"),
        r#"alipay.trade.query_response":{},"x":"1"#.to_owned(),
        "ALIPAY.TRADE.QUERY".to_owned(),
        "a".repeat(65),
    ];
    let gateway = app.url("/sandbox/alipay/gateway.do");
    for method in &methods {
        let get = app.client.get(&gateway).query(&[("method", method.as_str())]);
        let post = app.client.post(&gateway).form(&[("method", method.as_str())]);
        for request in [get, post] {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{method}");
            let headers = response.headers().clone();
            let body = response.text().await.unwrap();
            assert!(
                !body.contains('<') && !body.contains("onerror") && !body.contains("\"x\""),
                "{method}: written back: {body}"
            );
            let answer: Value = serde_json::from_str(&body).unwrap();
            let answer = answer.as_object().unwrap();
            let keys: Vec<&str> = answer.keys().map(String::as_str).collect();
            assert_eq!(keys, ["error_response", "sign"], "{method}: {body}");
            assert_eq!(
                answer["error_response"]["sub_code"], "isv.invalid-method",
                "{body}"
            );
            assert_gateway_headers(method, &headers);
            assert_eq!(
                headers.get("content-type").and_then(|v| v.to_str().ok()),
                Some("text/html;charset=utf-8"),
                "the content type Alipay's SDKs expect"
            );
        }
    }
    // A well-formed method is still answered under its own name, with the same headers.
    let response = app
        .client
        .get(&gateway)
        .query(&[("method", "alipay.trade.query")])
        .send()
        .await
        .unwrap();
    let headers = response.headers().clone();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["alipay_trade_query_response"]["sub_code"], "isv.missing-app-id",
        "{answer}"
    );
    assert_gateway_headers("a well-formed method", &headers);
    // The WeChat side answers JSON built by serde (nothing to escape there), under the
    // same policy.
    let response = app
        .client
        .get(app.url("/sandbox/wechat/v3/pay/transactions/out-trade-no/%3Cimg%3E"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_gateway_headers("WeChat", response.headers());
    assert_eq!(crate::stored::rows(&app).await, before, "nothing stored");
}

#[tokio::test]
async fn a_forwarded_request_through_a_loopback_proxy_not_listed_in_trusted_proxies_is_not_local_and_every_fault_switch_refuses_it(
) {
    // trusted_proxies empty: a proxy on this machine (nginx in front of kassa) connects
    // from loopback for every internet client.
    let app = TestApp::spawn_sandbox(SCALE).await;
    let order = app.create_order("unlisted-proxy", 100).await;
    let id = order["id"].as_str().unwrap();
    let token = sandbox_token(&app);
    let paths = [
        "/sandbox/alipay/faults".to_owned(),
        "/sandbox/wechat/faults".to_owned(),
        format!("/sandbox/alipay/faults/{id}"),
        format!("/sandbox/wechat/faults/{id}"),
    ];
    let forwarded = [
        ("x-forwarded-for", REMOTE.to_owned()),
        ("forwarded", format!("for={REMOTE};proto=https")),
        ("x-real-ip", REMOTE.to_owned()),
    ];
    let before = crate::stored::rows(&app).await;
    for path in &paths {
        for (name, value) in &forwarded {
            let get = app.client.get(app.url(path)).header(*name, value);
            let set = app
                .client
                .post(app.url(path))
                .header(*name, value)
                .json(&json!({"bad_signature": true}));
            for request in [get, set] {
                let (status, code, _) = crate::helpers::error_code(request.send().await.unwrap()).await;
                assert_eq!(
                    (status, code.as_str()),
                    (403, "sandbox_token_required"),
                    "{path} with {name}"
                );
            }
        }
    }
    assert_eq!(fault_rows(&app), vec![], "no switch stored");
    assert_eq!(crate::stored::rows(&app).await, before, "nothing else changed");

    // The same forwarded request with the token gets in; so does a loopback client that
    // names nobody (a script on the server's own machine).
    let with_token = app
        .client
        .post(app.url("/sandbox/alipay/faults"))
        .header("x-forwarded-for", REMOTE)
        .header("x-sandbox-token", &token)
        .json(&json!({"drop_first": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 200);
    let local = app
        .client
        .post(app.url("/sandbox/wechat/faults"))
        .json(&json!({"duplicates": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200);
    let stored = fault_rows(&app);
    assert_eq!(stored.len(), 2, "{stored:?}");
}
