//! The overview in a real headless Chromium: sign in with a password and a TOTP code,
//! see the three charts with no console error and nothing fetched from anywhere but
//! kassa, on a desktop and on a phone (nothing scrolls sideways). Whole-page
//! screenshots are kept under `target/tmp/screenshots/` (those in `docs/` are copies).

use std::time::Duration;

use serde_json::{json, Value};

use crate::admin::Staff;
use crate::admin_staff::{enrol, seed_month, totp_code};
use crate::helpers::{TestApp, ADMIN_PASSWORD};
use crate::webdriver::Browser;

async fn set_value(browser: &Browser, css: &str, value: &str) {
    let script = format!(
        "const e = document.querySelector({}); e.value = {}; return e.value;",
        serde_json::to_string(css).unwrap(),
        serde_json::to_string(value).unwrap()
    );
    assert_eq!(browser.script(&script).await, json!(value), "{css}");
}

/// The whole page in one screenshot: the window made as tall as the page.
async fn whole_page(browser: &Browser, width: u32, height: u32, name: &str) {
    let size = browser
        .script("window.scrollTo(0, 0); return {page: document.documentElement.scrollHeight, chrome: window.outerHeight - window.innerHeight};")
        .await;
    let page = size["page"].as_u64().unwrap() as u32;
    let chrome = size["chrome"].as_u64().unwrap() as u32;
    browser.resize(width, page + chrome).await;
    browser.screenshot(name).await;
    browser.resize(width, height).await;
}

/// Console entries at warning level or worse.
fn problems(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|e| matches!(e["level"].as_str(), Some("SEVERE" | "WARNING")))
        .collect()
}

#[tokio::test]
async fn staff_sign_in_with_a_code_and_the_overview_draws_its_charts_from_kassa_alone_on_a_desktop_and_a_phone(
) {
    let app = TestApp::spawn_with(&[
        ("KASSA_MERCHANT_NAME", "Tea House 茶馆"),
        ("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai"),
    ])
    .await;
    seed_month(&app);
    let (secret, _) = enrol(&app, &Staff::signed_in(&app).await).await;
    // Past the step whose code enrolment used.
    app.clock.advance(chrono::Duration::minutes(5));
    let (width, height) = (1280, 900);
    let browser = Browser::start(width, height).await;
    let wait = Duration::from_secs(10);

    browser.goto(&app.url("/admin?lang=en")).await;
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
            .wait_for("location.pathname == '/admin/login/code'", wait)
            .await,
        "asked for the code"
    );
    set_value(
        &browser,
        "input[name=code]",
        &totp_code(&secret, app.now().timestamp()),
    )
    .await;
    browser.click("form.stack button[type=submit]").await;
    assert!(
        browser.wait_for("location.pathname == '/admin'", wait).await,
        "signed in: {}",
        browser.url().await
    );

    let shown = browser
        .script(
            "return {charts: [...document.querySelectorAll('svg.chart')].map(s => ({
                         title: s.querySelector('title').textContent,
                         bars: s.querySelectorAll('rect').length,
                         points: s.querySelectorAll('circle').length,
                         width: s.getBoundingClientRect().width})),
                     tiles: [...document.querySelectorAll('.tile')].map(t => t.href),
                     resources: performance.getEntriesByType('resource').map(r => r.name),
                     origin: location.origin};",
        )
        .await;
    let charts = shown["charts"].as_array().unwrap();
    let titles: Vec<&str> = charts.iter().map(|c| c["title"].as_str().unwrap()).collect();
    assert_eq!(
        titles,
        [
            "Paid amount per day, last 30 days",
            "Notifications per day by verdict",
            "Pipeline rates per day"
        ]
    );
    assert!(charts[0]["bars"].as_u64().unwrap() >= 25, "{shown}");
    assert!(charts[1]["bars"].as_u64().unwrap() >= 25, "{shown}");
    assert!(charts[2]["points"].as_u64().unwrap() >= 100, "{shown}");
    assert!(
        charts.iter().all(|c| c["width"].as_f64().unwrap() > 600.0),
        "{shown}"
    );
    let origin = shown["origin"].as_str().unwrap();
    let resources = shown["resources"].as_array().unwrap();
    assert!(!resources.is_empty(), "the stylesheet at least");
    for r in resources {
        assert!(
            r.as_str().unwrap().starts_with(origin),
            "fetched from elsewhere: {r}"
        );
    }
    for href in shown["tiles"].as_array().unwrap() {
        assert!(href.as_str().unwrap().starts_with(origin), "{href}");
    }
    let log = browser.console_log().await;
    assert!(problems(&log).is_empty(), "console: {log:?}");
    whole_page(&browser, width, height, "admin-overview-desktop").await;

    // A phone: the same page, nothing wider than the screen.
    browser.resize(390, 844).await;
    browser.goto(&app.url("/admin?lang=en")).await;
    assert!(
        browser
            .wait_for("document.querySelectorAll('svg.chart').length == 3", wait)
            .await
    );
    let layout = browser
        .script("return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth};")
        .await;
    assert!(layout["scroll"].as_f64() <= layout["inner"].as_f64(), "{layout}");
    let log = browser.console_log().await;
    assert!(problems(&log).is_empty(), "console: {log:?}");
    whole_page(&browser, 390, 844, "admin-overview-phone").await;
    browser.quit();
}
