//! Error pages: one HTML page per status, in the visitor's language and with the
//! pages' security headers, whichever surface answers (checkout, the sandbox wallet,
//! or a path nobody serves).

use reqwest::header::HeaderMap;

use crate::helpers::TestApp;

async fn get(app: &TestApp, path: &str, accept: &str, language: &str) -> (u16, HeaderMap, String) {
    let r = app
        .client
        .get(app.url(path))
        .header("accept", accept)
        .header("accept-language", language)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.headers().clone(), r.text().await.unwrap())
}

const BROWSER: &str = "text/html,application/xhtml+xml,*/*;q=0.8";

fn assert_page_headers(headers: &HeaderMap) {
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
}

#[tokio::test]
async fn a_path_nobody_serves_is_the_404_page_for_a_browser_and_one_line_for_anything_else() {
    let app = TestApp::spawn().await;

    let (status, headers, html) = get(&app, "/no/such/page", BROWSER, "en").await;
    assert_eq!(status, 404);
    assert_page_headers(&headers);
    assert_eq!(headers["content-language"], "en");
    assert!(html.contains("<h1>Page not found</h1>"), "{html}");

    let (status, _, zh) = get(&app, "/no/such/page", BROWSER, "zh-CN").await;
    assert_eq!(status, 404);
    assert!(zh.contains("<h1>找不到此页面</h1>"), "{zh}");

    let (status, headers, text) = get(&app, "/no/such/page", "*/*", "en").await;
    assert_eq!(status, 404);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(text, "404 Not Found\n");
}

#[tokio::test]
async fn an_unknown_sandbox_wallet_link_is_the_404_page_that_names_a_sandbox_payment() {
    let app = TestApp::spawn_sandbox(&[]).await;

    let (status, headers, html) = get(&app, "/sandbox/wallet/nosuchtoken", BROWSER, "en").await;

    assert_eq!(status, 404);
    assert_page_headers(&headers);
    assert!(html.contains("<h1>No such sandbox payment</h1>"), "{html}");
}

#[tokio::test]
async fn a_checkout_page_the_database_cannot_serve_is_the_500_page_with_a_reference() {
    let app = TestApp::spawn().await;
    let order = app.create_order("page-500", 100).await;
    let path = format!("/pay/{}", order["id"].as_str().unwrap());
    let breaker = app.db().clone();
    breaker
        .execute_batch("ALTER TABLE orders RENAME TO orders_away")
        .unwrap();

    let (status, headers, html) = get(&app, &path, BROWSER, "en").await;

    breaker
        .execute_batch("ALTER TABLE orders_away RENAME TO orders")
        .unwrap();
    assert_eq!(status, 500);
    assert_page_headers(&headers);
    assert!(html.contains("<h1>Something went wrong</h1>"), "{html}");
    let reference = html
        .split("<code>")
        .nth(1)
        .and_then(|rest| rest.split("</code>").next())
        .expect("a reference on the page");
    assert!(
        reference.len() >= 12 && reference.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{reference:?}"
    );
    assert_eq!(
        headers["x-request-id"].to_str().unwrap(),
        reference,
        "the reference is the request id its log lines carry"
    );
    assert!(
        !html.contains("orders_away"),
        "no database detail reaches the visitor"
    );
    let (again, _, _) = get(&app, &path, BROWSER, "en").await;
    assert_eq!(again, 200, "the page works again once the database does");
}
