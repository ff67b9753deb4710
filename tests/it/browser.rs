//! The checkout page in a real headless Chromium, at phone and desktop sizes: the QR
//! code is visible and large enough, the sandbox payment made in another tab turns the
//! page to "paid" without a reload, and the page returns to the shop; no browser
//! process outlives its test. Screenshots are kept under `target/tmp/screenshots/`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::qr_decode::decode_png;
use crate::webdriver::{assert_no_browser_left, processes_using_profile, Browser};

async fn sandbox_order(app: &TestApp, out_trade_no: &str, return_url: &str) -> Value {
    let body = json!({"out_trade_no": out_trade_no, "amount": 1234, "subject": "茉莉花茶 Jasmine tea ×2",
        "provider": "alipay", "return_url": return_url});
    let r = app.post_order(&body).await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

#[tokio::test]
async fn on_a_phone_the_page_turns_paid_after_paying_in_another_tab_and_returns_to_the_shop() {
    let app = TestApp::spawn_sandbox(&[
        ("KASSA_SANDBOX_TIME_SCALE", "600"),
        ("KASSA_MERCHANT_NAME", "Tea House 茶馆"),
    ])
    .await;
    let order = sandbox_order(&app, "phone-1", &app.url("/healthz?from=shop")).await;
    let id = order["id"].as_str().unwrap();
    let browser = Browser::start(390, 844).await;

    browser.goto(&app.url(&format!("/pay/{id}?lang=zh-CN"))).await;
    assert!(
        browser
            .wait_for("document.querySelector('#checkout svg')", Duration::from_secs(5))
            .await
    );
    let layout = browser
        .script(
            "const q = document.querySelector('.qr svg').getBoundingClientRect();
             const a = document.querySelector('.open-app');
             return {qr: q.width, scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                     app: getComputedStyle(a).display, countdown: document.getElementById('countdown').textContent,
                     lang: document.documentElement.lang};",
        )
        .await;
    let number = |key: &str| {
        layout[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is a number: {layout}"))
    };
    assert!(number("qr") >= 160.0, "{layout}");
    assert!(
        number("scroll") <= number("inner"),
        "no horizontal scrolling: {layout}"
    );
    assert_eq!(layout["app"], "block", "the open-in-app link shows on phones");
    assert!(
        layout["countdown"].as_str().unwrap().starts_with("14:") || layout["countdown"] == "15:00",
        "{layout}"
    );
    assert_eq!(layout["lang"], "zh-CN");
    let panel_before = browser
        .script("return document.querySelector('.panel').getBoundingClientRect().height;")
        .await;
    let before = browser.screenshot("checkout-phone-pending").await;
    assert_eq!(
        decode_png(&before),
        vec![order["qr_code"].as_str().unwrap().to_owned()],
        "the QR on screen scans"
    );

    // The customer pays in the wallet (another tab), the platform notifies kassa.
    let checkout = browser.window().await;
    let wallet = browser.new_tab().await;
    browser.switch_to(&wallet).await;
    browser.goto(order["qr_code"].as_str().unwrap()).await;
    browser.screenshot("sandbox-wallet-phone").await;
    browser.click("button.pay").await;
    assert!(
        browser
            .wait_for(
                "document.body.innerText.includes('Paid.')",
                Duration::from_secs(5)
            )
            .await
    );
    browser.screenshot("sandbox-wallet-phone-paid").await;
    browser.switch_to(&checkout).await;
    browser
        .script("document.getElementById('checkout').setAttribute('data-probe', '1'); return 1;")
        .await;
    app.drive_sandbox().await;

    // "Within a second" is shown by the mechanism, not by a stopwatch: the change
    // signal pushes the status (no polling request below), and this wait is far
    // shorter than the stream's 15 s heartbeat, the only other way it could come.
    assert!(
        browser
            .wait_for(
                "!document.getElementById('state-paid').hidden",
                Duration::from_secs(5)
            )
            .await,
        "the page shows paid"
    );
    assert_eq!(
        browser
            .script("return document.getElementById('checkout').getAttribute('data-probe');")
            .await,
        "1",
        "without a reload"
    );
    assert_eq!(
        browser
            .script(
                "return performance.getEntriesByType('resource')
                    .filter(e => e.name.includes('/status')).map(e => e.name);"
            )
            .await,
        json!([]),
        "pushed by the event stream, not found by the polling fallback"
    );
    browser.screenshot("checkout-phone-paid").await;
    let panel_after = browser
        .script("return document.querySelector('.panel').getBoundingClientRect().height;")
        .await;
    assert_eq!(
        panel_before, panel_after,
        "no layout shift when the status changes"
    );
    assert!(
        browser
            .wait_for("location.search.includes('order_id=')", Duration::from_secs(6))
            .await,
        "returns to the shop"
    );
    let url = browser.url().await;
    assert_eq!(url, app.url(&format!("/healthz?from=shop&order_id={id}")));
    browser.quit();
}

#[tokio::test]
async fn on_a_desktop_the_qr_code_is_large_and_scannable() {
    let app = TestApp::spawn_sandbox(&[
        ("KASSA_SANDBOX_TIME_SCALE", "600"),
        ("KASSA_MERCHANT_NAME", "Tea House 茶馆"),
    ])
    .await;
    let order = sandbox_order(&app, "desk-1", "https://shop.example/done").await;
    let id = order["id"].as_str().unwrap();
    let browser = Browser::start(1280, 900).await;

    browser.goto(&app.url(&format!("/pay/{id}?lang=en"))).await;
    assert!(
        browser
            .wait_for("document.querySelector('#checkout svg')", Duration::from_secs(5))
            .await
    );

    let layout = browser
        .script(
            "const q = document.querySelector('.qr svg').getBoundingClientRect();
             return {qr: q.width, app: getComputedStyle(document.querySelector('.open-app')).display};",
        )
        .await;
    let qr = layout["qr"]
        .as_f64()
        .unwrap_or_else(|| panic!("qr is a number: {layout}"));
    assert!(qr >= 200.0, "{layout}");
    assert_eq!(layout["app"], "none", "no open-in-app link on a desktop");
    let shot = browser.screenshot("checkout-desktop-pending").await;
    assert_eq!(
        decode_png(&shot),
        vec![order["qr_code"].as_str().unwrap().to_owned()]
    );

    // Expired while open: the page says so without a reload.
    app.clock.advance(chrono::Duration::minutes(16));
    app.expiry().try_run_once(app.now()).await.unwrap();
    browser
        .script("document.getElementById('checkout').setAttribute('data-probe', '1'); return 1;")
        .await;
    assert!(
        browser
            .wait_for(
                "!document.getElementById('state-expired').hidden",
                Duration::from_secs(20)
            )
            .await
    );
    assert_eq!(
        browser
            .script("return document.getElementById('checkout').getAttribute('data-probe');")
            .await,
        "1",
        "no reload"
    );
    browser.screenshot("checkout-desktop-expired").await;
    browser.quit();
}

#[tokio::test]
async fn no_browser_process_outlives_a_browser_test_that_passes_or_panics() {
    let browser = Browser::start(390, 300).await;
    let profile = browser.profile_dir();
    let running = processes_using_profile(&profile);
    assert!(
        running.len() >= 2,
        "the check sees the browser while it runs: {running:?}"
    );
    browser.quit();

    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let failing_test = tokio::spawn(async move {
        let browser = Browser::start(390, 300).await;
        let profile = browser.profile_dir();
        let running = processes_using_profile(&profile).len();
        seen_tx.send((profile, running)).unwrap();
        panic!("a browser test fails while its browser is open");
    });
    let failed = failing_test.await.expect_err("the test panicked");
    assert!(failed.is_panic());
    let (profile, running) = seen_rx.await.unwrap();
    assert!(running >= 2, "{running} processes before the panic");
    assert_no_browser_left(&profile);
}
