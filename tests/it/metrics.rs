//! `/metrics` after a real sandbox flow, read by PyPI prometheus_client's OpenMetrics
//! parser (`tests/python/metrics_parser.py`), never by kassa's own code: each counter at
//! the value the flow makes it, gauges as the database stands, no order id in any label,
//! and the token refusal.

use std::collections::BTreeMap;

use chrono::Duration;
use kassa::webhooks::dispatcher::{Dispatcher, Outcome};
use serde_json::Value;

use crate::helpers::{trade_success, unique, TestApp};
use crate::oracle::{parse_metrics, signed_notification};
use crate::receiver::{Answer, Receiver};
use crate::sandbox_wechat::create_wechat_order;

const TOKEN: &str = "scrape-me-0123456789";

type Labels = BTreeMap<String, String>;

/// Every sample as `(sample name, labels) -> value`.
struct Scrape {
    families: Vec<Value>,
    samples: BTreeMap<(String, Labels), f64>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let families = parse_metrics(text).as_array().unwrap().clone();
        let mut samples = BTreeMap::new();
        for family in &families {
            for s in family["samples"].as_array().unwrap() {
                let labels: Labels = s["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect();
                let name = s["name"].as_str().unwrap().to_owned();
                samples.insert((name, labels), s["value"].as_f64().unwrap());
            }
        }
        Scrape { families, samples }
    }

    fn family_type(&self, name: &str) -> Option<&str> {
        self.families
            .iter()
            .find(|f| f["name"] == name)
            .and_then(|f| f["type"].as_str())
    }

    /// The samples named `name` for which `keep` holds, by their labels (`k=v,k=v`).
    fn series(&self, name: &str, keep: impl Fn(f64) -> bool) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|((n, _), v)| n == name && keep(**v))
            .map(|((_, labels), v)| {
                let key = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                (key, *v)
            })
            .collect()
    }

    /// The series of counter `name` that have counted something.
    fn counted(&self, name: &str) -> BTreeMap<String, f64> {
        self.series(name, |v| v != 0.0)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }
}

fn expected(rows: &[(&str, f64)]) -> BTreeMap<String, f64> {
    rows.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

async fn dispatch(app: &TestApp) -> Vec<Outcome> {
    let d = Dispatcher::new(app.core.clone()).unwrap();
    let mut outcomes = Vec::new();
    loop {
        match d.try_dispatch_one(app.now()).await.unwrap() {
            Outcome::Empty => return outcomes,
            o => outcomes.push(o),
        }
    }
}

async fn scrape(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let request = app.client.get(app.url("/metrics"));
    let request = match token {
        Some(t) => request.bearer_auth(t),
        None => request,
    };
    request.send().await.unwrap()
}

#[tokio::test]
async fn after_a_sandbox_flow_every_counter_and_gauge_reads_what_the_flow_did_and_no_label_holds_an_order_id()
{
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_sandbox(&[
        ("KASSA_SANDBOX_TIME_SCALE", "600"),
        ("KASSA_WEBHOOKS_URL", &receiver.url),
        // One retry, then the delivery is given up: a failed row for `kassa_outbox_failed`.
        ("KASSA_WEBHOOKS_RETRY_SCHEDULE", "5s"),
        ("KASSA_SERVER_METRICS_TOKEN", TOKEN),
    ])
    .await;
    let n = unique();

    // An Alipay order paid in the sandbox wallet; its webhook fails twice and is given up.
    let alipay = app.create_order(&format!("m-ali-{n}"), 1234).await;
    let alipay_id = alipay["id"].as_str().unwrap().to_owned();
    app.pay_in_wallet(alipay["qr_code"].as_str().unwrap()).await;
    assert_eq!(app.drive_sandbox().await, 1);
    receiver.script([Answer::status(500), Answer::status(500)]);
    assert_eq!(dispatch(&app).await, [Outcome::Retried]);
    app.clock.advance(Duration::seconds(10));
    assert_eq!(dispatch(&app).await, [Outcome::Failed]);

    // A WeChat Pay order paid the same way; its webhook is delivered.
    let wechat = create_wechat_order(&app, &format!("m-wx-{n}"), 880).await;
    let wechat_id = wechat["id"].as_str().unwrap().to_owned();
    app.pay_in_wallet(wechat["qr_code"].as_str().unwrap()).await;
    assert_eq!(app.drive_sandbox().await, 1);
    assert_eq!(dispatch(&app).await, [Outcome::Delivered]);
    assert_eq!(receiver.received().len(), 3);

    // A notification for the paid Alipay order, signed by python-alipay-sdk with the
    // platform key, then altered: rejected, and the order stays as it was.
    let events_before = app.events(&alipay_id).await;
    let forged = signed_notification(&trade_success(&alipay_id, "12.34"))
        .replace("total_amount=12.34", "total_amount=0.01");
    app.post_alipay_notify(forged).await;
    let stored = app.notifications().await;
    assert_eq!(stored[0].reason_code.map(|r| r.code()), Some("bad_signature"));
    assert_eq!(app.order(&alipay_id).await["status"], "paid");
    assert_eq!(app.events(&alipay_id).await, events_before);

    // An Alipay order closed through the API (query, then close at the gateway); its
    // webhook is left queued. One more left pending.
    let closed = app.create_order(&format!("m-close-{n}"), 500).await;
    let closed_id = closed["id"].as_str().unwrap().to_owned();
    let close = app.post(&format!("/api/v1/orders/{closed_id}/close")).await;
    assert_eq!(close.status(), 200, "{}", close.text().await.unwrap());
    let pending = app.create_order(&format!("m-pending-{n}"), 700).await;
    let pending_id = pending["id"].as_str().unwrap().to_owned();

    // An API 404 on an order id kassa never issued.
    let missing = kassa::domain::OrderId::generate().to_string();
    assert_eq!(app.get(&format!("/api/v1/orders/{missing}")).await.status(), 404);

    let response = scrape(&app, Some(TOKEN)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let m = Scrape::parse(&text);

    assert_eq!(
        m.counted("kassa_notifications_total"),
        expected(&[
            ("provider=alipay,reason=bad_signature,verdict=rejected", 1.0),
            ("provider=alipay,reason=paid,verdict=applied", 1.0),
            ("provider=wechat,reason=paid,verdict=applied", 1.0),
        ]),
        "{text}"
    );
    assert_eq!(
        m.counted("kassa_transitions_total"),
        expected(&[
            ("from=pending,source=api,to=closed", 1.0),
            ("from=pending,source=notification,to=paid", 2.0),
        ]),
        "{text}"
    );
    assert_eq!(
        m.counted("kassa_webhook_attempts_total"),
        expected(&[
            ("outcome=delivered", 1.0),
            ("outcome=failed", 1.0),
            ("outcome=retried", 1.0),
        ]),
        "{text}"
    );
    assert_eq!(
        m.counted("kassa_provider_calls_total"),
        expected(&[
            ("call=close,outcome=ok,provider=alipay", 1.0),
            ("call=precreate,outcome=ok,provider=alipay", 3.0),
            ("call=precreate,outcome=ok,provider=wechat", 1.0),
            ("call=query,outcome=ok,provider=alipay", 1.0),
        ]),
        "{text}"
    );
    assert_eq!(
        m.series("kassa_orders", |_| true),
        expected(&[
            ("status=closed", 1.0),
            ("status=paid", 2.0),
            ("status=partially_refunded", 0.0),
            ("status=pending", 1.0),
            ("status=refunded", 0.0),
        ]),
        "{text}"
    );
    assert_eq!(
        m.value("kassa_outbox_pending", &[]),
        Some(1.0),
        "the close's webhook"
    );
    assert_eq!(
        m.value("kassa_outbox_failed", &[]),
        Some(1.0),
        "the Alipay payment's webhook"
    );
    assert_eq!(
        m.value("kassa_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );
    assert_eq!(m.family_type("kassa_build"), Some("info"));
    assert_eq!(
        m.series("kassa_backups_total", |_| true),
        expected(&[("outcome=failed", 0.0), ("outcome=ok", 0.0)]),
        "no backup ran"
    );
    // Series that counted nothing yet are there at 0, so the first count is a rise.
    for (name, labels) in [
        (
            "kassa_notifications_total",
            &[
                ("provider", "wechat"),
                ("verdict", "rejected"),
                ("reason", "bad_signature"),
            ][..],
        ),
        (
            "kassa_notifications_total",
            &[
                ("provider", "alipay"),
                ("verdict", "error"),
                ("reason", "storage_failed"),
            ],
        ),
        (
            "kassa_provider_calls_total",
            &[("provider", "wechat"), ("call", "refund"), ("outcome", "unknown")],
        ),
    ] {
        assert_eq!(m.value(name, labels), Some(0.0), "{name} {labels:?}");
    }

    // Requests by route pattern: the id never shows, the 404 counts under the pattern.
    let order_route = [("method", "GET"), ("route", "/api/v1/orders/{id}")];
    let count = |status: &str| {
        let mut labels = order_route.to_vec();
        labels.push(("status", status));
        m.value("kassa_http_request_duration_seconds_count", &labels)
    };
    assert_eq!(count("4xx"), Some(1.0), "{text}");
    assert_eq!(count("2xx"), Some(1.0), "the one read of the paid order");
    assert_eq!(
        m.value(
            "kassa_http_request_duration_seconds_count",
            &[("method", "POST"), ("route", "/api/v1/orders"), ("status", "2xx")]
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        m.family_type("kassa_http_request_duration_seconds"),
        Some("histogram")
    );
    let ids = [&alipay_id, &wechat_id, &closed_id, &pending_id, &missing];
    for (name, labels) in m.samples.keys() {
        for value in labels.values() {
            assert!(
                !ids.iter().any(|id| value.contains(id.as_str())),
                "{name} has a label with an order id: {labels:?}"
            );
        }
        if let Some(route) = labels.get("route") {
            assert!(route == "unmatched" || route.starts_with('/'), "{name}: {route}");
        }
    }

    // The writer's histograms: every job waited once in the queue and sat in one batch.
    // PostgreSQL has no writer (each write is a transaction of its own): none counted.
    if app.is_postgres() {
        let batches = m.value("kassa_db_writer_batch_size_count", &[]).unwrap_or(0.0);
        assert_eq!(batches, 0.0, "{text}");
        return;
    }
    let batches = m.value("kassa_db_writer_batch_size_count", &[]).unwrap();
    let jobs = m.value("kassa_db_writer_batch_size_sum", &[]).unwrap();
    let waits = m.value("kassa_db_writer_queue_seconds_count", &[]).unwrap();
    assert!(batches >= 1.0 && jobs >= batches, "{text}");
    assert!(waits >= jobs, "{text}");
    assert!(
        jobs >= 8.0,
        "at least the four orders, two notifications, the rejection and the close: {text}"
    );
}

#[tokio::test]
async fn with_a_metrics_token_a_scrape_without_it_or_with_another_gets_401_and_no_metric() {
    let app = TestApp::spawn_with(&[("KASSA_SERVER_METRICS_TOKEN", TOKEN)]).await;
    app.create_order(&format!("m-token-{}", unique()), 100).await;

    for token in [None, Some("scrape-me-0123456788"), Some("")] {
        let refused = scrape(&app, token).await;
        assert_eq!(refused.status(), 401, "{token:?}");
        let challenge = refused.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        let body = refused.text().await.unwrap();
        assert!(!body.contains("kassa_"), "{token:?}: {body}");
    }

    let allowed = scrape(&app, Some(TOKEN)).await;
    assert_eq!(allowed.status(), 200);
    let m = Scrape::parse(&allowed.text().await.unwrap());
    assert_eq!(m.value("kassa_orders", &[("status", "pending")]), Some(1.0));

    // The scheme is case-insensitive (RFC 9110 §11.1), as on the API.
    let upper = app
        .client
        .get(app.url("/metrics"))
        .header("authorization", format!("BEARER {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(upper.status(), 200);
}

#[tokio::test]
async fn without_a_metrics_token_metrics_are_open() {
    let app = TestApp::spawn().await;

    let open = scrape(&app, None).await;

    assert_eq!(open.status(), 200);
    let m = Scrape::parse(&open.text().await.unwrap());
    assert_eq!(m.value("kassa_orders", &[("status", "pending")]), Some(0.0));
}

#[tokio::test]
async fn the_readme_table_lists_exactly_the_metrics_that_metrics_declares() {
    let app = TestApp::spawn().await;
    // A transition and a request: the two families that appear with their first count.
    let order = app.create_order(&format!("m-doc-{}", unique()), 100).await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(
        app.post(&format!("/api/v1/orders/{id}/close")).await.status(),
        200
    );
    let text = scrape(&app, None).await.text().await.unwrap();
    let declared: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap();
            match kind {
                "counter" => format!("{name}_total"),
                "info" => format!("{name}_info"),
                _ => name.to_owned(),
            }
        })
        .collect();

    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let documented: std::collections::BTreeSet<String> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `kassa_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("kassa_{name}"))
        .collect();

    assert_eq!(documented, declared);
    assert_eq!(declared.len(), 14, "{text}");
}
