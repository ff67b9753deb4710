//! The dashboard in a real headless Chromium, on a desktop and on a phone: sign in,
//! find an order by the shop's order number, open it, refund part of it, and see the
//! refund in its timeline; nothing scrolls sideways on a phone. Screenshots of the list
//! and of the order (whole pages) are kept under `target/tmp/screenshots/`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::admin::Staff;
use crate::helpers::{TestApp, ADMIN_PASSWORD};
use crate::receiver::Receiver;
use crate::webdriver::Browser;

/// A shop's morning: paid, refunded, closed and pending orders, notifications from the
/// sandbox's Alipay, and webhooks delivered to the shop.
async fn a_mornings_orders(app: &TestApp) -> Vec<Value> {
    let items = [
        ("A-1001", 2800, "茉莉花茶 Jasmine tea ×2", "pay"),
        ("A-1002", 1500, "Oolong 乌龙茶", "pay"),
        ("A-1003", 4200, "龙井 Longjing 100g", "refund"),
        ("A-1004", 990, "Green tea", "close"),
        ("A-1005", 12800, "Tea set 茶具套装", "pay"),
        ("A-1006", 3600, "普洱 Pu'er cake", "pending"),
        ("A-1007", 1800, "White peony 白牡丹", "pay"),
        ("A-1008", 650, "Chrysanthemum 菊花茶", "pending"),
    ];
    let mut made = Vec::new();
    for (number, amount, subject, fate) in items {
        app.clock.advance(chrono::Duration::minutes(7));
        let body = json!({"out_trade_no": number, "amount": amount, "subject": subject,
            "provider": "alipay", "metadata": {"table": 4, "channel": "mini-program"}});
        let order: Value = app.post_order(&body).await.json().await.unwrap();
        let id = order["id"].as_str().unwrap().to_owned();
        match fate {
            "pay" | "refund" => {
                app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
                app.drive_sandbox().await;
            }
            "close" => {
                assert_eq!(
                    app.post(&format!("/api/v1/orders/{id}/close")).await.status(),
                    200
                );
            }
            _ => {}
        }
        if fate == "refund" {
            let refund = app
                .client
                .post(app.url(&format!("/api/v1/orders/{id}/refunds")))
                .bearer_auth(&app.api_key)
                .json(&json!({"amount": amount, "reason": "out of stock"}))
                .send()
                .await
                .unwrap();
            assert_eq!(refund.status(), 201);
        }
        made.push(order);
    }
    let dispatcher = kassa::webhooks::dispatcher::Dispatcher::new(app.core.clone()).unwrap();
    while dispatcher.try_dispatch_one(app.now()).await.unwrap() != kassa::webhooks::dispatcher::Outcome::Empty
    {
    }
    app.drive_sandbox().await;
    made
}

async fn set_value(browser: &Browser, css: &str, value: &str) {
    let script = format!(
        "const e = document.querySelector({}); e.value = {}; return e.value;",
        serde_json::to_string(css).unwrap(),
        serde_json::to_string(value).unwrap()
    );
    assert_eq!(browser.script(&script).await, json!(value), "{css}");
}

/// Whether the page is wider than the window (it would scroll sideways).
async fn scrolls_sideways(browser: &Browser) -> Value {
    browser
        .script(
            "return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                     wide: [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
                           .slice(0, 5).map(e => e.tagName + '.' + e.className)};",
        )
        .await
}

/// A screenshot of the whole page from its top (the window is made as tall as the
/// page), and screenshots of each window-full of it in turn, as a visitor scrolls.
async fn screenshots(browser: &Browser, width: u32, height: u32, name: &str) {
    let size = browser
        .script(
            "window.scrollTo(0, 0);
             return {page: document.documentElement.scrollHeight, inner: window.innerHeight,
                     chrome: window.outerHeight - window.innerHeight};",
        )
        .await;
    let number = |k: &str| size[k].as_u64().unwrap() as u32;
    let (page, inner, chrome) = (number("page"), number("inner"), number("chrome"));
    let mut top = 0;
    let mut n = 1;
    while top < page {
        browser
            .script(&format!("window.scrollTo(0, {top}); return 1;"))
            .await;
        browser.screenshot(&format!("{name}-{n}")).await;
        top += inner;
        n += 1;
    }
    browser.resize(width, page + chrome).await;
    browser.script("window.scrollTo(0, 0); return 1;").await;
    browser.screenshot(name).await;
    browser.resize(width, height).await;
}

async fn walk_through(width: u32, height: u32, label: &str) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_sandbox(&[
        ("KASSA_SANDBOX_TIME_SCALE", "600"),
        ("KASSA_MERCHANT_NAME", "Tea House 茶馆"),
        ("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai"),
        ("KASSA_WEBHOOKS_URL", &receiver.url),
    ])
    .await;
    let orders = a_mornings_orders(&app).await;
    let target = orders.iter().find(|o| o["out_trade_no"] == "A-1005").unwrap();
    let id = target["id"].as_str().unwrap().to_owned();
    let browser = Browser::start(width, height).await;
    let wait = Duration::from_secs(10);

    // Signing in from the link an expired session sends to.
    browser.goto(&app.url("/admin/orders?lang=en")).await;
    assert!(
        browser
            .wait_for("location.pathname == '/admin/login'", wait)
            .await
    );
    set_value(&browser, "input[name=username]", "admin").await;
    set_value(&browser, "input[name=password]", ADMIN_PASSWORD).await;
    browser.click("form.stack button[type=submit]").await;
    assert!(
        browser
            .wait_for("location.pathname == '/admin/orders'", wait)
            .await,
        "signed in"
    );
    assert_eq!(
        browser
            .script("return document.querySelectorAll('table.orders tbody tr').length;")
            .await,
        json!(8)
    );
    let layout = scrolls_sideways(&browser).await;
    assert!(
        layout["scroll"].as_f64() <= layout["inner"].as_f64(),
        "{label}: {layout}"
    );
    // The filters, opened to be seen.
    browser
        .script("document.querySelector('.filters details').open = true; return 1;")
        .await;
    screenshots(&browser, width, height, &format!("admin-orders-{label}")).await;

    // Search by the shop's order number.
    set_value(&browser, "input[name=q]", "A-1005").await;
    browser.click(".search-row button[type=submit]").await;
    assert!(
        browser
            .wait_for("location.search.includes('q=A-1005')", wait)
            .await
    );
    assert_eq!(
        browser.script("return [...document.querySelectorAll('table.orders tbody tr')].map(r => r.querySelector('a').textContent);").await,
        json!(["A-1005"])
    );
    browser.click("table.orders tbody tr a").await;
    assert!(
        browser
            .wait_for(&format!("location.pathname == '/admin/orders/{id}'"), wait)
            .await
    );
    assert_eq!(
        browser
            .script("return document.querySelector('#refund-form input[name=amount]').value;")
            .await,
        json!("128.00"),
        "prefilled with what is left"
    );

    // Refund part of it.
    set_value(&browser, "#refund-form input[name=amount]", "28.00").await;
    set_value(
        &browser,
        "#refund-form input[name=reason]",
        "one cup cracked in delivery",
    )
    .await;
    browser.click("#refund-form button[type=submit]").await;
    assert!(
        browser
            .wait_for("location.search.includes('done=refund_succeeded')", wait)
            .await
    );
    let shown = browser
        .script(
            "return {notice: document.getElementById('notice').textContent,
                     timeline: document.querySelector('.timeline').innerText,
                     left: document.querySelector('#refund-form input[name=amount]').value};",
        )
        .await;
    assert_eq!(shown["notice"], "The refund succeeded.");
    let timeline = shown["timeline"].as_str().unwrap();
    for text in [
        "Admin action · order.refund",
        "one cup cracked in delivery",
        "Call to the provider · Alipay refund",
        "Status changed: Paid → Partially refunded",
        "Webhook to the shop · order.paid",
        "Notification received · alipay",
    ] {
        assert!(timeline.contains(text), "{label}: {text} in {timeline}");
    }
    assert_eq!(shown["left"], "100.00");
    let layout = scrolls_sideways(&browser).await;
    assert!(
        layout["scroll"].as_f64() <= layout["inner"].as_f64(),
        "{label}: {layout}"
    );
    // The raw notification, opened.
    browser
        .script("document.querySelectorAll('.ev-notification details.raw').forEach(d => d.open = true); return 1;")
        .await;
    screenshots(&browser, width, height, &format!("admin-order-{label}")).await;
    let order = app.order(&id).await;
    assert_eq!(
        (order["status"].as_str(), order["refunded_amount"].as_i64()),
        (Some("partially_refunded"), Some(2800))
    );
    // The same session also works for plain HTTP, as a check of what the browser did.
    let staff = Staff::signed_in(&app).await;
    assert_eq!(staff.get(&format!("/admin/orders/{id}")).await.status, 200);
    browser.quit();
}

#[tokio::test]
async fn on_a_desktop_staff_find_an_order_by_its_number_refund_part_of_it_and_see_it_in_the_timeline() {
    walk_through(1280, 900, "desktop").await;
}

#[tokio::test]
async fn on_a_phone_the_same_works_with_cards_and_nothing_scrolls_sideways() {
    walk_through(390, 844, "phone").await;
}
