//! The customer's checkout page through HTTP: contents per status, 404, languages,
//! status JSON, the live event stream and the QR code itself.

use std::time::Duration;

use kassa::providers::{PaymentFacts, TradeState};
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::qr_decode::decode_svg;

async fn page(
    app: &TestApp,
    path: &str,
    accept_language: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = app.client.get(app.url(path));
    if let Some(al) = accept_language {
        request = request.header("accept-language", al);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.headers().clone(), r.text().await.unwrap())
}

fn between<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html.find(start).unwrap_or_else(|| panic!("{start} not in page"));
    let rest = &html[from..];
    &rest[..rest.find(end).map(|e| e + end.len()).unwrap()]
}

#[tokio::test]
async fn a_pending_order_shows_merchant_subject_amount_qr_countdown_and_app_link() {
    let app = TestApp::spawn().await;
    let order = app.create_order("co-1", 1234).await;
    let id = order["id"].as_str().unwrap();

    let (status, headers, html) = page(&app, &format!("/pay/{id}"), Some("en-US,en;q=0.9")).await;

    assert_eq!(status, 200);
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("My Shop") && html.contains("Jasmine tea 茉莉花茶") && html.contains("¥12.34"));
    assert_eq!(visible_states(&html), vec!["state-pending".to_owned()]);
    assert!(state_block(&html, "state-pending").contains("Scan with Alipay to pay"));
    let svg = between(&html, "<svg", "</svg>");
    assert!(svg.contains("role=\"img\"") && svg.contains("aria-label=\"QR code to pay with Alipay\""));
    assert_eq!(
        decode_svg(svg, 6),
        vec![order["qr_code"].as_str().unwrap().to_owned()]
    );
    assert!(html.contains(&format!(
        "class=\"open-app\" href=\"{}\"",
        order["qr_code"].as_str().unwrap()
    )));
    assert!(
        html.contains("data-expires-in=\"900\""),
        "countdown from server time"
    );
    assert!(html.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"));
    assert!(!html.contains("<script>"), "no inline script");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
}

#[tokio::test]
async fn the_qr_svg_decodes_to_exactly_the_orders_qr_code_for_long_and_unicode_payloads() {
    for data in [
        "https://qr.alipay.com/bax08431cyxd2ny7pxvq0000",
        "weixin://wxpay/bizpayurl?pr=JyC91EIz1",
        &format!("http://127.0.0.1:8080/sandbox/wallet/{}", "A".repeat(200)),
    ] {
        let svg = kassa::http::qr::svg(data, "QR").unwrap();
        assert_eq!(decode_svg(&svg, 4), vec![data.to_owned()]);
    }
}

/// The `id="state-…"` blocks of the status panel that are not hidden.
fn visible_states(html: &str) -> Vec<String> {
    html.match_indices("id=\"state-")
        .filter_map(|(at, _)| {
            let tag = &html[at..at + html[at..].find('>').unwrap()];
            let name = tag["id=\"".len()..].split('"').next().unwrap();
            (!tag.contains("hidden")).then(|| name.to_owned())
        })
        .collect()
}

/// The text of the status block `state`, up to the next block or the panel's end.
fn state_block<'a>(html: &'a str, state: &str) -> &'a str {
    let from = html
        .find(&format!("id=\"{state}\""))
        .unwrap_or_else(|| panic!("{state} not in page"));
    let rest = &html[from..];
    let end = [
        rest[1..].find("id=\"state-").map(|i| i + 1),
        rest.find("</section>"),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap();
    &rest[..end]
}

#[tokio::test]
async fn closed_expired_paid_late_paid_and_refunded_orders_say_so_without_a_qr_code() {
    let app = TestApp::spawn_sandbox(&[("KASSA_SANDBOX_TIME_SCALE", "600")]).await;
    let closed = app.create_order("st-closed", 100).await;
    let expired = app.create_order("st-expired", 100).await;
    let paid = app.create_order("st-paid", 100).await;
    let late = app.create_order("st-late", 100).await;
    let refunded = app.create_order("st-refunded", 100).await;
    let id = |o: &Value| o["id"].as_str().unwrap().to_owned();
    let qr = |o: &Value| o["qr_code"].as_str().unwrap().to_owned();

    // Closed by the shop: the sandbox platform is asked, says unpaid, and closes too.
    let r = app.post(&format!("/api/v1/orders/{}/close", id(&closed))).await;
    assert_eq!(r.status(), 200);
    for order in [&paid, &late, &refunded] {
        app.pay_in_wallet(&qr(order)).await;
    }
    // The customer paid, but kassa closed the order before the platform's signed
    // notification arrived: it is recorded as a late payment.
    app.close_locally(&id(&late)).await;
    app.drive_sandbox().await;
    let r = app
        .client
        .post(app.url(&format!("/api/v1/orders/{}/refunds", id(&refunded))))
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 100, "reason": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app.clock.advance(chrono::Duration::minutes(16));

    let stored = |o: Value| {
        (
            o["status"].as_str().map(str::to_owned),
            o["late_payment"].as_bool(),
        )
    };
    for (order, status, late_payment) in [
        (&closed, "closed", false),
        (&expired, "pending", false),
        (&paid, "paid", false),
        (&late, "paid", true),
        (&refunded, "refunded", false),
    ] {
        assert_eq!(
            stored(app.order(&id(order)).await),
            (Some(status.to_owned()), Some(late_payment)),
            "{}",
            id(order)
        );
    }

    for (order, visible, text, status) in [
        (&closed, "state-closed", "This order is closed", "closed"),
        (&expired, "state-expired", "This order has expired", "expired"),
        (&paid, "state-paid", "Payment received", "paid"),
        (
            &late,
            "state-late",
            "Paid after the order was closed",
            "late_paid",
        ),
        (&refunded, "state-refunded", "Refunded", "refunded"),
    ] {
        let (code, _, html) = page(&app, &format!("/pay/{}?lang=en", id(order)), None).await;
        assert_eq!(code, 200);
        assert_eq!(visible_states(&html), vec![visible.to_owned()], "{status}");
        // Every state's text is in the page (hidden ones too): look in the visible one.
        assert!(state_block(&html, visible).contains(text), "{status}: {text}");
        assert!(!html.contains("role=\"img\""), "{status}: no QR code");
        assert!(!html.contains(&qr(order)), "{status}: no payment link");
        assert!(
            !html.contains("http-equiv=\"refresh\" content=\"5\""),
            "{status}: no refresh once settled"
        );
        let reported: Value = app
            .client
            .get(app.url(&format!("/pay/{}/status", id(order))))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(reported["status"], status);
    }
}

#[tokio::test]
async fn a_late_payment_is_explained_to_the_customer() {
    let app = TestApp::spawn_alipay(&[]).await;
    let id = app.insert_order("late-page", 1234).await;
    app.close_locally(&id).await;
    app.post_alipay_notify(crate::oracle::signed_notification(
        &crate::helpers::trade_success(&id, "12.34"),
    ))
    .await;

    let (_, _, html) = page(&app, &format!("/pay/{id}"), Some("zh-CN")).await;

    // Every state's text is in the page (hidden ones too): look in the visible one.
    assert_eq!(visible_states(&html), vec!["state-late".to_owned()]);
    assert!(
        state_block(&html, "state-late").contains("已在订单关闭后收到付款"),
        "{html}"
    );
    assert!(!html.contains("role=\"img\""), "no QR code");
}

#[tokio::test]
async fn a_paid_order_returns_to_the_shop_with_only_the_order_id_added() {
    let app = TestApp::spawn().await;
    let body = json!({"out_trade_no": "ret-1", "amount": 100, "subject": "s", "provider": "alipay",
        "return_url": "https://shop.example/thanks?cart=9&order_id=forged"});
    let order: Value = app.post_order(&body).await.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    *app.provider.query_answer.lock().unwrap() = Ok(TradeState::Paid(PaymentFacts {
        provider_trade_no: None,
        paid_at: None,
        amount: 100,
    }));
    app.post(&format!("/api/v1/orders/{id}/close")).await;

    let (_, _, html) = page(&app, &format!("/pay/{id}"), None).await;

    let expected = format!("https://shop.example/thanks?cart=9&#38;order_id=forged&#38;order_id={id}");
    assert!(
        html.contains(&format!("data-return-url=\"{expected}\"")),
        "{html}"
    );
    assert!(html.contains(&format!(
        "<noscript><meta http-equiv=\"refresh\" content=\"3;url={expected}\"></noscript>"
    )));
    let ord = kassa::domain::OrderId::parse("ord_x").unwrap();
    for (given, returned) in [
        ("https://s.example/r", "https://s.example/r?order_id=ord_x"),
        ("https://s.example/r?", "https://s.example/r?order_id=ord_x"),
        (
            "https://s.example/r?next=/cart&q=a%20b&flag&sig=AbC",
            "https://s.example/r?next=/cart&q=a%20b&flag&sig=AbC&order_id=ord_x",
        ),
        (
            "https://s.example/r?a=1#done",
            "https://s.example/r?a=1&order_id=ord_x#done",
        ),
    ] {
        assert_eq!(
            kassa::http::checkout::return_url_for(given, &ord).unwrap(),
            returned,
            "{given}"
        );
    }
}

#[tokio::test]
async fn unknown_orders_get_a_real_404_page() {
    let app = TestApp::spawn().await;
    for path in ["/pay/ord_doesnotexist", "/pay/not%20an%20id", "/pay/..%2Fetc"] {
        let (status, headers, html) = page(&app, path, Some("en")).await;
        assert_eq!(status, 404, "{path}");
        assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(html.contains("Order not found"), "{path}");
    }
    let status = app
        .client
        .get(app.url("/pay/ord_doesnotexist/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 404);
}

#[tokio::test]
async fn language_follows_accept_language_and_the_switch_is_remembered() {
    let app = TestApp::spawn().await;
    let order = app.create_order("lang-1", 100).await;
    let path = format!("/pay/{}", order["id"].as_str().unwrap());

    let (_, _, zh) = page(&app, &path, Some("zh-CN,zh;q=0.9,en;q=0.8")).await;
    let (_, _, en) = page(&app, &path, Some("en-GB,en;q=0.9")).await;
    let (_, _, fallback) = page(&app, &path, Some("fr")).await;
    assert!(zh.contains("<html lang=\"zh-CN\">") && zh.contains("请使用支付宝扫码付款"));
    assert!(en.contains("<html lang=\"en\">") && en.contains("Scan with Alipay"));
    assert!(fallback.contains("<html lang=\"zh-CN\">"));

    let switched = app
        .client
        .get(app.url(&format!("{path}?lang=en")))
        .header("accept-language", "zh-CN")
        .send()
        .await
        .unwrap();
    let cookie = switched.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("kassa_lang=en") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(switched.text().await.unwrap().contains("<html lang=\"en\">"));
    let remembered = app
        .client
        .get(app.url(&path))
        .header("accept-language", "zh-CN")
        .header("cookie", "kassa_lang=en")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(remembered.contains("<html lang=\"en\">"));
}

#[tokio::test]
async fn times_show_in_the_merchants_zone() {
    let app = TestApp::spawn_with(&[("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai")]).await;
    let order = app.create_order("tz-1", 100).await;
    let expires = chrono::DateTime::parse_from_rfc3339(order["expires_at"].as_str().unwrap()).unwrap();
    let local = expires
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M CST")
        .to_string();
    let (_, _, html) = page(
        &app,
        &format!("/pay/{}", order["id"].as_str().unwrap()),
        Some("en"),
    )
    .await;
    assert!(html.contains(&local), "{local}");
}

/// The stream's next chunk (`None` once it ended), failing the test instead of hanging
/// when nothing comes.
pub async fn next_chunk(
    stream: &mut reqwest::Response,
    within: Duration,
    waiting_for: &str,
) -> Option<String> {
    let chunk = tokio::time::timeout(within, stream.chunk())
        .await
        .unwrap_or_else(|_| panic!("no {waiting_for} on the event stream within {within:?}"))
        .unwrap_or_else(|e| panic!("event stream broke while waiting for {waiting_for}: {e}"));
    chunk.map(|c| String::from_utf8(c.to_vec()).unwrap())
}

#[tokio::test]
async fn the_event_stream_delivers_paid_when_the_notification_is_applied() {
    let app = TestApp::spawn_sandbox(&[("KASSA_SANDBOX_TIME_SCALE", "600")]).await;
    let order = app.create_order("sse-1", 100).await;
    let id = order["id"].as_str().unwrap();
    let mut stream = app
        .client
        .get(app.url(&format!("/pay/{id}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let first = next_chunk(&mut stream, Duration::from_secs(5), "first status").await;
    assert!(
        first
            .as_deref()
            .is_some_and(|f| f.starts_with("event: status\ndata: {\"status\":\"pending\"")),
        "{first:?}"
    );

    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    app.drive_sandbox().await;
    // A third of the stream's 15 s heartbeat, after which it would re-read the order
    // anyway: arriving within it shows the change signal pushed the event.
    let next = next_chunk(&mut stream, Duration::from_secs(5), "paid status").await;

    assert!(
        next.as_deref()
            .is_some_and(|n| n.starts_with("event: status\n") && n.contains("\"status\":\"paid\"")),
        "{next:?}"
    );
    assert_eq!(
        next_chunk(&mut stream, Duration::from_secs(5), "end of stream").await,
        None,
        "the stream ends once settled"
    );
}

#[tokio::test]
async fn static_assets_are_served_from_the_binary_with_types_and_caching() {
    let app = TestApp::spawn().await;
    for (name, kind) in [
        ("kassa.css", "text/css"),
        ("checkout.js", "text/javascript"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let url = kassa::http::assets::url(name);
        let r = app.client.get(app.url(&url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert!(
            r.headers()["content-type"].to_str().unwrap().starts_with(kind),
            "{name}"
        );
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable"),
            "{name}"
        );
        let etag = r.headers()["etag"].clone();
        let again = app
            .client
            .get(app.url(&url))
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
    }
    assert_eq!(
        app.client
            .get(app.url("/static/../Cargo.toml"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        app.client
            .get(app.url("/static/secret.txt"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}
