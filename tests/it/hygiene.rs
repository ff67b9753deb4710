//! What any client gets whatever it sends: a request id on every answer, 405 with
//! `Allow` for a method a route lacks, never a 5xx for malformed input; and which client
//! address is recorded behind a reverse proxy.

use std::collections::BTreeSet;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::admin::Staff;
use crate::helpers::{trade_success, TestApp};

fn orders_count(app: &TestApp) -> i64 {
    app.db()
        .clone()
        .query_row("SELECT COUNT(*) FROM orders", crate::vals![], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn every_answer_carries_a_request_id_keeping_a_well_formed_one_and_replacing_any_other() {
    let app = TestApp::spawn().await;
    let id_of = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let well_formed = |id: &str| {
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };

    let mut fresh = BTreeSet::new();
    for path in ["/healthz", "/nothing-here", "/api/v1/orders", "/api/v1/nothing"] {
        let response = app.get(path).await;
        let id = id_of(&response);
        assert!(well_formed(&id) && id.len() >= 16, "{path}: {id}");
        fresh.insert(id);
    }
    assert_eq!(fresh.len(), 4, "each request its own id");
    let refused = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert_eq!(refused.status(), 405);
    assert!(well_formed(&id_of(&refused)));

    let long = "a".repeat(64);
    for given in ["abc", "Proxy-1.req_2", long.as_str()] {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", given)
            .send()
            .await
            .unwrap();
        assert_eq!(id_of(&response), given);
    }
    let too_long = "a".repeat(65);
    for given in [
        "",
        "two words",
        "a\"quote",
        "log\tinjection",
        "ünïcode",
        too_long.as_str(),
    ] {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", given.as_bytes())
            .send()
            .await
            .unwrap();
        let id = id_of(&response);
        assert!(id != given && well_formed(&id), "{given:?} gave {id:?}");
    }
}

/// Every route of kassa and of the sandbox, with the methods it takes.
const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/static/kassa.css", &["GET"]),
    ("/pay/{id}", &["GET"]),
    ("/pay/{id}/status", &["GET"]),
    ("/pay/{id}/events", &["GET"]),
    ("/notify/alipay", &["POST"]),
    ("/notify/wechat", &["POST"]),
    ("/api/openapi.json", &["GET"]),
    ("/api/v1/orders", &["GET", "POST"]),
    ("/api/v1/orders/{id}", &["GET"]),
    ("/api/v1/orders/{id}/close", &["POST"]),
    ("/api/v1/orders/{id}/events", &["GET"]),
    ("/api/v1/orders/{id}/refunds", &["GET", "POST"]),
    ("/admin", &["GET"]),
    ("/admin/", &["GET"]),
    ("/admin/login", &["GET", "POST"]),
    ("/admin/logout", &["POST"]),
    ("/admin/login/code", &["GET", "POST"]),
    ("/admin/notifications", &["GET"]),
    ("/admin/notifications/1", &["GET"]),
    ("/admin/webhooks", &["GET"]),
    ("/admin/webhooks/resend", &["POST"]),
    ("/admin/webhooks/resend-matching", &["POST"]),
    ("/admin/webhooks/ping", &["POST"]),
    ("/admin/webhooks/reenable", &["POST"]),
    ("/admin/webhooks/secret", &["POST"]),
    ("/admin/webhooks/rotate", &["POST"]),
    ("/admin/users", &["GET"]),
    ("/admin/users/add", &["POST"]),
    ("/admin/users/role", &["POST"]),
    ("/admin/users/remove", &["POST"]),
    ("/admin/users/reset-totp", &["POST"]),
    ("/admin/users/require-totp", &["POST"]),
    ("/admin/profile", &["GET"]),
    ("/admin/profile/totp", &["POST"]),
    ("/admin/api-keys", &["GET"]),
    ("/admin/api-keys/create", &["POST"]),
    ("/admin/api-keys/revoke", &["POST"]),
    ("/admin/audit", &["GET"]),
    ("/admin/orders", &["GET"]),
    ("/admin/orders.csv", &["GET"]),
    ("/admin/orders/{id}", &["GET"]),
    ("/admin/orders/{id}/acknowledge", &["POST"]),
    ("/admin/orders/{id}/close", &["POST"]),
    ("/admin/orders/{id}/refund", &["POST"]),
    ("/admin/orders/{id}/query", &["POST"]),
    ("/admin/orders/{id}/resend", &["POST"]),
    ("/sandbox/alipay/gateway.do", &["GET", "POST"]),
    ("/sandbox/alipay/faults", &["GET", "POST"]),
    ("/sandbox/alipay/faults/{no}", &["GET", "POST"]),
    ("/sandbox/wechat/faults", &["GET", "POST"]),
    ("/sandbox/wechat/faults/{no}", &["GET", "POST"]),
    ("/sandbox/wechat/v3/pay/transactions/native", &["GET", "POST"]),
    ("/sandbox/wallet/{token}", &["GET"]),
    ("/sandbox/wallet/{token}/pay", &["POST"]),
    ("/sandbox/wallet/{token}/cancel", &["POST"]),
    ("/sandbox/wallet/{token}/faults", &["POST"]),
];

#[tokio::test]
async fn a_method_a_route_lacks_gets_405_listing_the_routes_methods_and_changes_nothing() {
    let app = TestApp::spawn_sandbox(&[]).await;
    let order = app.create_order("allow-1", 100).await;
    let id = order["id"].as_str().unwrap();
    let token = order["qr_code"].as_str().unwrap().rsplit('/').next().unwrap();
    let staff = Staff::signed_in(&app).await;
    let session = format!("kassa_admin={}", staff.cookie("kassa_admin").unwrap());
    let before = app.order(id).await;

    for (route, allowed) in ROUTES {
        let path = route
            .replace("{id}", id)
            .replace("{token}", token)
            .replace("{no}", "allow-1");
        let mut allowed: BTreeSet<String> = allowed.iter().map(|m| m.to_string()).collect();
        if allowed.contains("GET") {
            allowed.insert("HEAD".to_owned());
        }
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
            if allowed.contains(method) {
                continue;
            }
            let response = app
                .client
                .request(method.parse().unwrap(), app.url(&path))
                .bearer_auth(&app.api_key)
                .header("cookie", &session)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
            let allow: BTreeSet<String> = response
                .headers()
                .get("allow")
                .unwrap_or_else(|| panic!("{method} {path}: no Allow"))
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            assert_eq!(allow, allowed, "{method} {path}");
            for (name, value) in [
                ("x-content-type-options", "nosniff"),
                ("referrer-policy", "no-referrer"),
            ] {
                assert_eq!(
                    response.headers().get(name).and_then(|v| v.to_str().ok()),
                    Some(value),
                    "{method} {path}: {name}"
                );
            }
            if path.starts_with("/api/") && method != "HEAD" {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "method_not_allowed", "{method} {path}");
            }
        }
    }

    assert_eq!(app.order(id).await, before, "the order is as it was");
    assert_eq!(orders_count(&app), 1, "no order was created");
    assert!(app.events(id).await.is_empty(), "no transition");
    assert!(app.outbox(id).await.is_empty(), "no webhook queued");
}

#[tokio::test]
async fn malformed_input_to_api_notify_admin_checkout_and_sandbox_routes_is_never_a_server_error() {
    let app = TestApp::spawn_sandbox(&[]).await;
    let order = app.create_order("bad-1", 100).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let staff = Staff::signed_in(&app).await;
    let session = format!("kassa_admin={}", staff.cookie("kassa_admin").unwrap());
    let before = app.order(&id).await;
    let huge = "h".repeat(64 * 1024);
    let not_utf8: &[u8] = b"\xff\xfe\xc0\xaf=\x80";
    let json = "application/json";
    let form = "application/x-www-form-urlencoded";

    // (method, path, content type, body)
    let cases: Vec<(&str, String, &str, Vec<u8>)> = vec![
        ("POST", "/api/v1/orders".into(), json, b"{\"amount\":".to_vec()),
        ("POST", "/api/v1/orders".into(), json, b"[1,2,3]".to_vec()),
        ("POST", "/api/v1/orders".into(), json, not_utf8.to_vec()),
        (
            "POST",
            "/api/v1/orders".into(),
            "text/plain",
            b"{\"amount\":1}".to_vec(),
        ),
        ("POST", "/api/v1/orders".into(), form, b"amount=1".to_vec()),
        (
            "POST",
            "/api/v1/orders".into(),
            json,
            format!("{{\"amount\":1e999,\"subject\":\"{huge}\"}}").into_bytes(),
        ),
        (
            "GET",
            "/api/v1/orders?limit=%FF%FE&status=%C0".into(),
            json,
            vec![],
        ),
        (
            "GET",
            "/api/v1/orders?limit=99999999999999999999999".into(),
            json,
            vec![],
        ),
        ("GET", "/api/v1/orders/%FF%FE".into(), json, vec![]),
        ("GET", format!("/api/v1/orders/{id}%00/events"), json, vec![]),
        (
            "POST",
            format!("/api/v1/orders/{id}/refunds"),
            json,
            b"{\"amount\":-1}".to_vec(),
        ),
        (
            "POST",
            format!("/api/v1/orders/{id}/refunds"),
            json,
            not_utf8.to_vec(),
        ),
        (
            "POST",
            "/api/v1/orders/%FF%FE/close".into(),
            "text/plain",
            not_utf8.to_vec(),
        ),
        ("POST", "/notify/alipay".into(), form, not_utf8.to_vec()),
        ("POST", "/notify/alipay".into(), json, b"{\"sign\":1}".to_vec()),
        (
            "POST",
            "/notify/alipay".into(),
            form,
            b"sign=%ZZ&&==&out_trade_no=%FF".to_vec(),
        ),
        ("POST", "/notify/alipay?%FF=%FE".into(), form, vec![]),
        ("POST", "/notify/wechat".into(), json, b"{\"resource\":".to_vec()),
        ("POST", "/notify/wechat".into(), json, not_utf8.to_vec()),
        ("POST", "/notify/wechat".into(), "text/plain", b"hello".to_vec()),
        ("GET", "/pay/%FF%FE".into(), "", vec![]),
        ("GET", "/pay/%FF/status".into(), "", vec![]),
        ("GET", format!("/pay/{id}?lang=%FF"), "", vec![]),
        (
            "GET",
            "/admin/orders?status=%FF&from=%FE&to=2026-13-45&q=%C0%AF".into(),
            "",
            vec![],
        ),
        ("GET", "/admin/orders/%FF%FE".into(), "", vec![]),
        ("GET", "/admin/notifications/%FF".into(), "", vec![]),
        (
            "GET",
            "/admin/notifications/99999999999999999999999".into(),
            "",
            vec![],
        ),
        ("GET", "/admin/orders.csv?from=%FF".into(), "", vec![]),
        (
            "POST",
            format!("/admin/orders/{id}/close"),
            form,
            not_utf8.to_vec(),
        ),
        (
            "POST",
            format!("/admin/orders/{id}/refund"),
            json,
            b"{\"amount\":1}".to_vec(),
        ),
        ("POST", "/admin/login".into(), form, not_utf8.to_vec()),
        ("POST", "/admin/login".into(), json, b"{}".to_vec()),
        (
            "POST",
            "/admin/users/add".into(),
            form,
            b"csrf=%FF&username=%FE".to_vec(),
        ),
        (
            "POST",
            "/sandbox/alipay/gateway.do".into(),
            form,
            not_utf8.to_vec(),
        ),
        (
            "POST",
            "/sandbox/alipay/faults".into(),
            json,
            b"{\"nope\":".to_vec(),
        ),
        (
            "POST",
            "/sandbox/wechat/v3/pay/transactions/native".into(),
            json,
            not_utf8.to_vec(),
        ),
        ("GET", "/sandbox/wallet/%FF".into(), "", vec![]),
        ("POST", "/sandbox/wallet/%FF/pay".into(), form, not_utf8.to_vec()),
    ];
    for (method, path, content_type, body) in cases {
        let mut request = app
            .client
            .request(method.parse().unwrap(), app.url(&path))
            .header("cookie", &session)
            .bearer_auth(&app.api_key)
            .body(body);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        // Refused with a 4xx, or (an unknown `lang`, Alipay's "failure") a 200 that
        // ignores what it cannot use; the end of the test shows that nothing changed.
        let text: String = text.chars().take(300).collect();
        assert!(status < 500, "{method} {path}: {status} {text}");
    }
    // Headers no server should have to take: one huge, and a value that is not UTF-8.
    for path in [
        "/api/v1/orders",
        "/notify/alipay",
        "/admin/orders",
        &format!("/pay/{id}"),
    ] {
        // Each on a client of its own: the server closes the connection after a 431,
        // and a pooled client would send the next request on it and read a reset.
        let response = crate::helpers::http_client()
            .get(app.url(path))
            .header("x-huge", "x".repeat(200 * 1024))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 431, "{path}");
        let response = crate::helpers::http_client()
            .get(app.url(path))
            .header("cookie", &session)
            .header("accept-language", &b"\xff\xfe"[..])
            .header("authorization", &b"Bearer \xff"[..])
            .send()
            .await
            .unwrap();
        assert!(response.status().as_u16() < 500, "{path}: {}", response.status());
    }

    assert_eq!(app.order(&id).await, before, "the order is as it was");
    assert_eq!(orders_count(&app), 1);
    assert!(app.events(&id).await.is_empty() && app.outbox(&id).await.is_empty());
    assert_eq!(app.get("/healthz").await.status(), 200);
}

async fn sign_in_attempt_from(app: &TestApp, forwarded_for: &str) {
    let client = crate::helpers::http_client();
    let form = client.get(app.url("/admin/login")).send().await.unwrap();
    let cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ");
    let csrf = crate::admin::csrf_of(&form.text().await.unwrap());
    let response = client
        .post(app.url("/admin/login"))
        .header("cookie", cookie)
        .header("x-forwarded-for", forwarded_for)
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", "admin"),
            ("password", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the form again: refused");
}

fn audit_addresses(app: &TestApp) -> Vec<String> {
    let conn = app.db().clone();
    let stmt = conn
        .prepare("SELECT COALESCE(remote_addr, '') FROM audit_log WHERE action = 'sign_in' ORDER BY id")
        .unwrap();
    stmt.query_map(crate::vals![], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A notification and a failed sign-in, both claiming to come from 203.0.113.7 by way
/// of 198.51.100.20; returns the addresses kassa recorded.
async fn recorded_addresses(app: &TestApp) -> (String, String) {
    let id = app.insert_order("xff-1", 1234).await;
    let body = crate::oracle::signed_notification(&trade_success(&id, "12.34"));
    let response = app
        .client
        .post(app.url("/notify/alipay"))
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-for", "198.51.100.20, 127.0.0.1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), "success");
    sign_in_attempt_from(app, "203.0.113.7, 198.51.100.20").await;
    let notifications = app.notifications().await;
    assert_eq!(notifications.len(), 1);
    let audit = audit_addresses(app);
    assert_eq!(audit.len(), 1, "{audit:?}");
    (notifications[0].remote_addr.clone().unwrap(), audit[0].clone())
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_right_most_untrusted_forwarded_address_is_recorded() {
    let app = TestApp::spawn_alipay(&[("KASSA_SERVER_TRUSTED_PROXIES", "127.0.0.0/8, 10.0.0.0/8")]).await;

    let (notification, audit) = recorded_addresses(&app).await;

    assert_eq!(notification, "198.51.100.20");
    assert_eq!(audit, "198.51.100.20");
}

#[tokio::test]
async fn a_forwarded_address_from_a_peer_that_is_no_trusted_proxy_is_ignored() {
    let app = TestApp::spawn_alipay(&[("KASSA_SERVER_TRUSTED_PROXIES", "10.0.0.0/8")]).await;

    let (notification, audit) = recorded_addresses(&app).await;

    assert!(notification.starts_with("127.0.0.1:"), "{notification}");
    assert_eq!(audit, "127.0.0.1");
}

/// What came back for a HEAD sent on a connection of its own with `Connection: close`,
/// read until the server closed it: status, headers (names lower-cased), and every byte
/// after the head, which must be none.
struct RawAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    after_head: Vec<u8>,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn raw_head(app: &TestApp, path: &str, extra: &[(&str, &str)]) -> RawAnswer {
    let mut stream = tokio::net::TcpStream::connect(app.socket).await.unwrap();
    let mut request = format!("HEAD {path} HTTP/1.1\r\nhost: kassa\r\nconnection: close\r\n");
    for (name, value) in extra {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // Only a guard against a hung test: the server closing the connection ends the read.
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut answer),
    )
    .await
    .unwrap_or_else(|_| panic!("HEAD {path}: the server never ended its answer"))
    .unwrap();
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "HEAD {path}: no complete head: {:?}",
                String::from_utf8_lossy(&answer)
            )
        });
    let head = String::from_utf8(answer[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (name, value) = l.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    RawAnswer {
        status,
        headers,
        after_head: answer[end + 4..].to_vec(),
    }
}

#[tokio::test]
async fn head_on_a_get_route_answers_as_the_get_with_its_content_length_and_no_body_bytes() {
    let app = TestApp::spawn().await;
    let get = app.get("/healthz").await;
    assert_eq!(get.status(), 200);
    let get_length = get.headers()["content-length"].to_str().unwrap().to_owned();
    let get_body = get.bytes().await.unwrap();
    assert!(!get_body.is_empty());
    assert_eq!(get_length, get_body.len().to_string());

    let head = raw_head(&app, "/healthz", &[]).await;

    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(get_length.as_str()));
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert_eq!(head.header("x-content-type-options"), Some("nosniff"));
    assert!(head.header("x-request-id").is_some());
    assert!(
        head.after_head.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&head.after_head)
    );
}

#[tokio::test]
async fn head_on_the_checkout_event_stream_ends_its_answer_instead_of_holding_the_stream_open() {
    let app = TestApp::spawn_sandbox(&[]).await;
    let order = app.create_order("head-sse-1", 100).await;
    let id = order["id"].as_str().unwrap();

    // The order stays pending, so a GET's stream would never end: only a HEAD that drops
    // the stream lets the server close this connection.
    let head = raw_head(&app, &format!("/pay/{id}/events"), &[]).await;

    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert!(
        head.after_head.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&head.after_head)
    );
    assert_eq!(app.order(id).await["status"], "pending");
}

#[tokio::test]
async fn head_on_a_route_that_takes_only_post_is_refused_with_405_and_changes_nothing() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("head-post-1", 1234).await;
    let before = app.order(&id).await;
    let bearer = format!("Bearer {}", app.api_key);

    for path in ["/notify/alipay".to_owned(), format!("/api/v1/orders/{id}/close")] {
        let head = raw_head(&app, &path, &[("authorization", &bearer)]).await;
        assert_eq!(head.status, 405, "{path}");
        assert_eq!(head.header("allow"), Some("POST"), "{path}");
        assert_eq!(head.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert!(head.after_head.is_empty(), "{path}");
    }

    assert_eq!(app.order(&id).await, before, "the order is as it was");
    assert!(app.events(&id).await.is_empty(), "no transition");
    assert!(app.outbox(&id).await.is_empty(), "no webhook queued");
    assert!(app.notifications().await.is_empty(), "no notification recorded");
}
