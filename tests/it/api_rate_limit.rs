//! The merchant API's rate limits: wrong API keys per client address (always on), and
//! requests per API key with `[server] api_rate_limit`. The clients' addresses are set
//! through `X-Forwarded-For`, believed from the test's loopback peer because it is listed
//! in `trusted_proxies`; windows move with the app's `FixedClock`, never with sleeps.

use chrono::Duration;
use serde_json::Value;

use crate::helpers::{error_code, order_body, unique, TestApp};
use crate::stored;

const ATTACKER: &str = "203.0.113.66";
const SHOP: &str = "198.51.100.7";

fn orders_count(app: &TestApp) -> i64 {
    app.db()
        .clone()
        .query_row("SELECT COUNT(*) FROM orders", crate::vals![], |r| r.get(0))
        .unwrap()
}

async fn spawn(extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![("KASSA_SERVER_TRUSTED_PROXIES", "127.0.0.1")];
    env.extend_from_slice(extra);
    TestApp::spawn_with(&env).await
}

/// `POST /api/v1/orders` from `from` with `key`.
async fn create_from(app: &TestApp, from: &str, key: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/orders"))
        .header("x-forwarded-for", from)
        .bearer_auth(key)
        .json(&order_body(&format!("rl-{}", unique()), 100))
        .send()
        .await
        .unwrap()
}

async fn list_from(app: &TestApp, from: &str, key: &str) -> reqwest::Response {
    app.client
        .get(app.url("/api/v1/orders"))
        .header("x-forwarded-for", from)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// Sends `n` wrong keys from `from`, each refused as unauthorized.
async fn wrong_keys(app: &TestApp, from: &str, n: usize) {
    for i in 0..n {
        let response = create_from(app, from, &format!("kassa_wrong{i}")).await;
        let (status, code, _) = error_code(response).await;
        assert_eq!((status, code.as_str()), (401, "unauthorized"), "wrong key {i}");
    }
}

/// Asserts a 429 in the API's error shape and returns its `Retry-After`.
async fn assert_limited(response: reqwest::Response) -> u64 {
    let retry_after = response
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let (status, code, body) = error_code(response).await;
    assert_eq!((status, code.as_str()), (429, "rate_limited"), "{body}");
    retry_after
}

#[tokio::test]
async fn after_twenty_wrong_keys_an_address_is_refused_even_with_the_right_key_and_nothing_is_stored() {
    let app = spawn(&[]).await;
    wrong_keys(&app, ATTACKER, 20).await;
    let before = stored::rows(&app).await;

    let retry_after = assert_limited(create_from(&app, ATTACKER, &app.api_key).await).await;
    assert_eq!(
        retry_after, 60,
        "the window began with the first wrong key, on a still clock"
    );
    assert_limited(create_from(&app, ATTACKER, "kassa_wrong_again").await).await;
    assert_eq!(orders_count(&app), 0, "no order was created");
    assert_eq!(stored::rows(&app).await, before, "nothing stored");
    assert_eq!(app.provider.calls(), [0; 5], "the provider was not asked");
}

#[tokio::test]
async fn an_address_locked_out_for_wrong_keys_leaves_every_other_address_unaffected() {
    let app = spawn(&[]).await;
    wrong_keys(&app, ATTACKER, 20).await;
    assert_limited(list_from(&app, ATTACKER, &app.api_key).await).await;

    let created = create_from(&app, SHOP, &app.api_key).await;
    assert_eq!(created.status(), 201);
    // A wrong key from elsewhere is an ordinary 401, not a 429.
    let (status, code, _) = error_code(create_from(&app, SHOP, "kassa_typo").await).await;
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    assert_eq!(orders_count(&app), 1, "only the other address's order");
    // And the peer itself (the proxy, when nothing is forwarded) is another address too.
    assert_eq!(app.get("/api/v1/orders").await.status(), 200);
}

#[tokio::test]
async fn once_the_window_has_passed_on_the_clock_the_locked_out_address_is_served_again() {
    let app = spawn(&[]).await;
    wrong_keys(&app, ATTACKER, 20).await;

    app.clock.advance(Duration::seconds(45));
    let before = stored::rows(&app).await;
    let retry_after = assert_limited(create_from(&app, ATTACKER, &app.api_key).await).await;
    assert_eq!(retry_after, 15);
    assert_eq!(orders_count(&app), 0);
    assert_eq!(stored::rows(&app).await, before, "nothing stored");
    assert_eq!(app.provider.calls(), [0; 5], "the provider was not asked");

    app.clock.advance(Duration::seconds(15));
    let created = create_from(&app, ATTACKER, &app.api_key).await;
    assert_eq!(created.status(), 201);
    assert_eq!(orders_count(&app), 1);
    assert_eq!(
        app.provider.calls(),
        [1, 0, 0, 0, 0],
        "served, the call reaches the provider"
    );
    // A new window: the next wrong key is one of twenty again, not the twenty-first.
    wrong_keys(&app, ATTACKER, 1).await;
}

#[tokio::test]
async fn with_an_api_rate_limit_the_call_past_it_in_a_window_is_refused_and_not_carried_out() {
    let app = spawn(&[("KASSA_SERVER_API_RATE_LIMIT", "5/min")]).await;
    for i in 0..5 {
        assert_eq!(
            list_from(&app, SHOP, &app.api_key).await.status(),
            200,
            "call {i}"
        );
    }
    app.clock.advance(Duration::seconds(20));
    let before = stored::rows(&app).await;
    let retry_after = assert_limited(create_from(&app, SHOP, &app.api_key).await).await;
    assert_eq!(retry_after, 40);
    assert_eq!(orders_count(&app), 0, "the refused call created nothing");
    assert_eq!(stored::rows(&app).await, before, "nothing stored");
    assert_eq!(app.provider.calls(), [0; 5], "the provider was not asked");

    // The limit is per key: another key of the same shop, from the same address, is served.
    let other = TestApp::create_api_key(&app.core, "second").await;
    assert_eq!(create_from(&app, SHOP, &other).await.status(), 201);
    assert_eq!(orders_count(&app), 1);
    assert_eq!(
        app.provider.calls(),
        [1, 0, 0, 0, 0],
        "the served call reached the provider"
    );

    app.clock.advance(Duration::seconds(40));
    assert_eq!(create_from(&app, SHOP, &app.api_key).await.status(), 201);
    assert_eq!(orders_count(&app), 2);
}

#[tokio::test]
async fn without_an_api_rate_limit_a_key_makes_hundreds_of_calls_while_wrong_keys_are_still_limited() {
    let app = spawn(&[]).await;
    for i in 0..300 {
        assert_eq!(
            list_from(&app, SHOP, &app.api_key).await.status(),
            200,
            "call {i}"
        );
    }
    wrong_keys(&app, SHOP, 20).await;
    assert_limited(list_from(&app, SHOP, &app.api_key).await).await;
}

#[tokio::test]
async fn every_429_is_counted_in_kassa_rate_limited_total_by_surface() {
    let app = spawn(&[("KASSA_SERVER_API_RATE_LIMIT", "1/min")]).await;
    wrong_keys(&app, ATTACKER, 20).await;
    for _ in 0..3 {
        assert_limited(list_from(&app, ATTACKER, &app.api_key).await).await;
    }
    assert_eq!(list_from(&app, SHOP, &app.api_key).await.status(), 200);
    for _ in 0..2 {
        assert_limited(list_from(&app, SHOP, &app.api_key).await).await;
    }

    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Read by prometheus_client's parser (PyPI), not by kassa's own code.
    let families = crate::oracle::parse_metrics(&text);
    let mut samples: Vec<(String, f64)> = families
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap().clone())
        .filter(|s: &Value| s["name"] == "kassa_rate_limited_total")
        .map(|s| {
            (
                s["labels"]["surface"].as_str().unwrap().to_owned(),
                s["value"].as_f64().unwrap(),
            )
        })
        .collect();
    samples.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        samples,
        vec![
            ("api".to_owned(), 2.0),
            ("api_auth".to_owned(), 3.0),
            ("connections".to_owned(), 0.0),
            ("notify".to_owned(), 0.0)
        ],
        "{text}"
    );
}
