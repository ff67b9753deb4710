//! Webhooks may not be aimed at the host itself, its LAN or the cloud metadata service
//! unless `[webhooks] allow_private = true`: refused when an order names such a
//! `notify_url`, when `[webhooks] url` does, and again at delivery, after DNS.

use kassa::db::outbox;
use kassa::domain::{Amount, Currency, NewOrder, OrderId, OutTradeNo, ProviderKind};
use kassa::webhooks::dispatcher::{Dispatcher, Outcome};
use serde_json::json;

use crate::helpers::{error_code, order_body, unique, TestApp};
use crate::receiver::Receiver;

const PRIVATE_OFF: (&str, &str) = ("KASSA_WEBHOOKS_ALLOW_PRIVATE", "false");

#[tokio::test]
async fn an_order_whose_notify_url_is_or_resolves_to_an_internal_address_is_refused_with_422_and_nothing_is_stored_or_asked(
) {
    let app = TestApp::spawn_with(&[PRIVATE_OFF]).await;
    let before = crate::stored::rows(&app).await;
    let cases = [
        ("http://127.0.0.1:9/hook", "127.0.0.1 is a loopback address"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254 is a link-local address",
        ),
        ("http://10.0.0.1/hook", "10.0.0.1 is a private address"),
        ("https://192.168.1.20/hook", "192.168.1.20 is a private address"),
        ("http://[::1]:8080/hook", "::1 is a loopback address"),
        (
            "http://[::ffff:169.254.169.254]/latest/",
            "is a link-local address",
        ),
        ("http://100.64.0.1/hook", "100.64.0.1 is a shared (CGNAT) address"),
        (
            "http://[fd00::1]/hook",
            "fd00::1 is a private (unique local) address",
        ),
        // Not a literal: refused for what the system resolver answers for it.
        ("http://localhost:8080/hook", "localhost resolves to "),
    ];
    for (url, reason) in cases {
        let mut body = order_body(&format!("ssrf-{}", unique()), 100);
        body["notify_url"] = json!(url);
        let (status, code, error) = error_code(app.post_order(&body).await).await;
        assert_eq!(status, 422, "{url}: {error}");
        assert_eq!(code, "invalid_field", "{url}: {error}");
        assert_eq!(error["error"]["field"], "notify_url", "{url}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{url}: {message}");
        assert!(message.contains("allow_private = true"), "{url}: {message}");
    }
    assert_eq!(
        crate::stored::rows(&app).await,
        before,
        "nothing stored by refused orders"
    );
    assert_eq!(app.provider.calls(), [0; 5], "the provider was not asked");

    // The same URL is taken where private addresses are allowed: it is the policy that
    // refused it above, not the URL's syntax.
    let lan = TestApp::spawn_with(&[("KASSA_WEBHOOKS_ALLOW_PRIVATE", "true")]).await;
    let mut body = order_body("ssrf-allowed", 100);
    body["notify_url"] = json!("http://localhost:8080/hook");
    assert_eq!(lan.post_order(&body).await.status(), 201);
}

/// Stores a pending order with `notify_url` straight into the database, as one created
/// before the policy existed (or while private addresses were allowed) would be.
async fn stored_order_for(app: &TestApp, notify_url: &str) -> String {
    let order = NewOrder {
        id: OrderId::generate(),
        out_trade_no: OutTradeNo::parse(&format!("old-{}", unique())).unwrap(),
        amount: Amount::from_minor(100, Currency::Cny).unwrap(),
        subject: "Jasmine tea".into(),
        provider: ProviderKind::Alipay,
        notify_url: Some(notify_url.to_owned()),
        return_url: None,
        metadata: Default::default(),
        created_at: app.now(),
        expires_at: app.now() + chrono::Duration::minutes(15),
    };
    let id = order.id.to_string();
    app.core
        .db
        .write(move |c| kassa::db::orders::insert(c, &order, Some("qr")))
        .await
        .unwrap();
    app.close_locally(&id).await;
    id
}

async fn dispatch_all(app: &TestApp, at: chrono::DateTime<chrono::Utc>) -> Vec<Outcome> {
    let d = Dispatcher::new(app.core.clone()).unwrap();
    let mut outcomes = Vec::new();
    loop {
        match d.try_dispatch_one(at).await.unwrap() {
            Outcome::Empty => return outcomes,
            o => outcomes.push(o),
        }
    }
}

#[tokio::test]
async fn with_private_addresses_off_a_stored_delivery_to_a_loopback_address_or_a_name_resolving_to_one_is_refused_recorded_once_and_the_shop_gets_nothing(
) {
    let receiver = Receiver::start().await;
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    assert_ne!(by_name, receiver.url);
    let app = TestApp::spawn_with(&[PRIVATE_OFF]).await;
    let literal = stored_order_for(&app, &receiver.url).await;
    let named = stored_order_for(&app, &by_name).await;

    assert_eq!(
        dispatch_all(&app, app.now()).await,
        [Outcome::Failed, Outcome::Failed]
    );
    assert!(
        receiver.received().is_empty(),
        "the shop got {:?}",
        receiver.received()
    );
    for (id, url, reason) in [
        (&literal, &receiver.url, "127.0.0.1 is a loopback address"),
        (&named, &by_name, "localhost resolves to "),
    ] {
        let rows = app.outbox(id).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status.as_str(), "failed", "{url}");
        let last = rows[0].last_error.clone().unwrap_or_default();
        assert!(
            last.contains(reason) && last.contains("allow_private"),
            "{url}: {last}"
        );
        let event_id = rows[0].event_id.clone();
        let attempts = app
            .core
            .db
            .read(move |c| outbox::list_attempts(c, &event_id))
            .await
            .unwrap();
        assert_eq!(attempts.len(), 1, "{url}: {attempts:?}");
        assert_eq!(&attempts[0].url, url);
        assert_eq!(attempts[0].http_status, None);
        let error = attempts[0].error.clone().unwrap_or_default();
        assert!(
            error.starts_with("refused: ") && error.contains(reason),
            "{url}: {error}"
        );
    }
    // Final for the row: nothing is due again, however late.
    assert_eq!(
        dispatch_all(&app, app.now() + chrono::Duration::days(30)).await,
        []
    );
    assert!(receiver.received().is_empty());

    // The same rows where private addresses are allowed reach the same shop: what
    // stopped them above was the policy, not the receiver.
    let lan = TestApp::spawn().await;
    stored_order_for(&lan, &receiver.url).await;
    stored_order_for(&lan, &by_name).await;
    assert_eq!(
        dispatch_all(&lan, lan.now()).await,
        [Outcome::Delivered, Outcome::Delivered]
    );
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn a_server_whose_default_webhook_url_is_an_internal_address_refuses_to_start_unless_private_addresses_are_allowed(
) {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::cli::run(
        crate::cli::kassa(dir.path())
            .args(["--bind", "127.0.0.1:0"])
            .env("KASSA_WEBHOOKS_URL", "http://169.254.169.254/latest/meta-data/"),
    );
    assert!(!out.status.success());
    let stderr = crate::cli::text(&out.stderr);
    assert!(
        stderr.contains("webhooks.url") && stderr.contains("link-local") && stderr.contains("allow_private"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("data/kassa.db").exists(),
        "nothing was created before the refusal"
    );

    // `start_server` allows private addresses (as every test server does) and waits for
    // the server to say it listens.
    let _allowed = crate::cli::start_server(
        dir.path(),
        &[("KASSA_WEBHOOKS_URL", "http://169.254.169.254/latest/meta-data/")],
    )
    .await;
    assert!(dir.path().join("data/kassa.db").exists());
}
