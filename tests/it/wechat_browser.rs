//! A WeChat Pay order in a real headless Chromium, against the sandbox: the checkout
//! page is WeChat's (green, "Scan with WeChat"), the QR code on screen opens the green
//! WeChat wallet, paying there turns the checkout page to paid, and the shop gets its
//! `order.paid` webhook.

use std::time::Duration;

use serde_json::json;

use crate::helpers::TestApp;
use crate::qr_decode::decode_png;
use crate::receiver::Receiver;
use crate::webdriver::{assert_no_browser_left, Browser};

#[tokio::test]
async fn a_wechat_order_paid_in_the_sandbox_wallet_turns_the_checkout_page_paid_and_sends_order_paid() {
    let shop = Receiver::start().await;
    let app = TestApp::spawn_sandbox(&[("KASSA_SANDBOX_TIME_SCALE", "600")]).await;
    let r = app
        .post_order(
            &json!({"out_trade_no": "wx-browser-1", "amount": 1888, "subject": "普洱茶 Pu'er tea",
            "provider": "wechat", "notify_url": shop.url}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let order: serde_json::Value = r.json().await.unwrap();
    let id = order["id"].as_str().unwrap();
    let browser = Browser::start(1280, 900).await;

    browser.goto(&app.url(&format!("/pay/{id}?lang=en"))).await;
    assert!(
        browser
            .wait_for("document.querySelector('#checkout svg')", Duration::from_secs(5))
            .await
    );
    let look = browser
        .script(
            "const s = document.querySelector('.scan-with');
             return {text: s.textContent.trim(), color: getComputedStyle(s).color,
                     panel: document.querySelector('.panel').className};",
        )
        .await;
    assert_eq!(look["text"], "Scan with WeChat to pay", "{look}");
    assert_eq!(look["color"], "rgb(7, 136, 61)", "WeChat green: {look}");
    assert_eq!(look["panel"], "panel wechat");
    let shot = browser.screenshot("wechat-checkout-desktop-pending").await;
    let scanned = decode_png(&shot);
    assert_eq!(scanned, vec![order["qr_code"].as_str().unwrap().to_owned()]);

    let checkout = browser.window().await;
    let wallet = browser.new_tab().await;
    browser.switch_to(&wallet).await;
    browser.goto(&scanned[0]).await;
    let wallet_look = browser
        .script(
            "return {body: document.body.className, pay: getComputedStyle(document.querySelector('button.pay')).backgroundColor,
                     text: document.body.innerText};",
        )
        .await;
    assert_eq!(wallet_look["body"], "wechat", "{wallet_look}");
    assert_eq!(wallet_look["pay"], "rgb(7, 193, 96)", "{wallet_look}");
    assert!(wallet_look["text"].as_str().unwrap().contains("WeChat Pay"));
    browser.screenshot("sandbox-wechat-wallet").await;
    browser.click("button.pay").await;
    assert!(
        browser
            .wait_for(
                "document.body.innerText.includes('Paid.')",
                Duration::from_secs(5)
            )
            .await
    );
    browser.switch_to(&checkout).await;
    app.drive_sandbox().await;

    assert!(
        browser
            .wait_for(
                "!document.getElementById('state-paid').hidden",
                Duration::from_secs(5)
            )
            .await,
        "the checkout page shows paid"
    );
    browser.screenshot("wechat-checkout-desktop-paid").await;
    let profile = browser.profile_dir();
    browser.quit();
    assert_no_browser_left(&profile);

    let dispatcher = kassa::webhooks::dispatcher::Dispatcher::new(app.core.clone()).unwrap();
    while dispatcher.try_dispatch_one(app.now()).await.unwrap() != kassa::webhooks::dispatcher::Outcome::Empty
    {
    }
    let received = shop.received();
    assert_eq!(received.len(), 1);
    let payload: serde_json::Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(
        (
            payload["type"].as_str(),
            payload["data"]["id"].as_str(),
            payload["data"]["provider"].as_str()
        ),
        (Some("order.paid"), Some(id), Some("wechat"))
    );
}
