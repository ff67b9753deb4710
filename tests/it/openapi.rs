//! `/api/openapi.json` is written by hand; these tests keep it true. The drift test
//! compares it with what kassa mounts and answers (its operation table, the fields its
//! bodies take, its error codes); PyPI openapi-spec-validator and schemathesis check it
//! as a document and against the running server. Its response schemas are closed
//! (`additionalProperties: false`), so schemathesis also fails on a response field the
//! document lacks.

use std::collections::BTreeSet;

use kassa::http::api::operations;
use kassa::http::error::ErrorCode;
use serde_json::{json, Value};

use crate::helpers::{error_code, order_body, TestApp};
use crate::{oracle, stored};

const SCHEMATHESIS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/openapi_schemathesis.py"
);

/// A body field no request takes: a body that kassa parses is refused naming it, and
/// serde's message lists the fields the body does take.
const PROBE: &str = "openapi_drift_probe";

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(app: &TestApp) -> Value {
    let response = app.client.get(app.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected $ref {reference}"));
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

fn names(values: impl IntoIterator<Item = impl Into<String>>) -> BTreeSet<String> {
    values.into_iter().map(Into::into).collect()
}

/// The fields kassa's body parser says it takes, from serde's "unknown field `probe`,
/// expected one of `a`, `b`" answer to `{"openapi_drift_probe": 0}`; None when the
/// operation reads no body (it does not refuse the probe).
async fn body_fields(app: &TestApp, method: &str, path: &str) -> Option<BTreeSet<String>> {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let response = app
        .client
        .request(method, app.url(&format!("/api/v1{path}")))
        .bearer_auth(&app.api_key)
        .json(&json!({ PROBE: 0 }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !(status == 422 && body["error"]["field"] == PROBE) {
        return None;
    }
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("unknown field `{PROBE}`")),
        "serde's wording changed, the probe cannot read the fields from: {message}"
    );
    // Backticked names: the probe, then every field the body takes.
    Some(names(message.split('`').skip(1).step_by(2).skip(1)))
}

#[tokio::test]
async fn the_openapi_document_lists_every_operation_query_parameter_body_field_and_error_code_kassa_has() {
    let app = TestApp::spawn().await;
    let doc = document(&app).await;
    let order = app.create_order("drift-1", 100).await;
    let order_id = order["id"].as_str().unwrap();

    let mounted: BTreeSet<(String, String)> = operations()
        .map(|op| (op.method.as_str().to_lowercase(), op.path.to_owned()))
        .collect();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                documented.insert((method.to_owned(), path.clone()));
            }
        }
    }
    assert_eq!(
        mounted.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations kassa mounts that /api/openapi.json lacks"
    );
    assert_eq!(
        documented.difference(&mounted).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations /api/openapi.json describes that kassa does not mount"
    );

    for op in operations() {
        let method = op.method.as_str().to_lowercase();
        let item = &doc["paths"][op.path];
        let operation = &item[&method];
        let shown = format!("{} {}", op.method, op.path);

        let parameters = item["parameters"]
            .as_array()
            .into_iter()
            .chain(operation["parameters"].as_array())
            .flatten();
        let query = names(
            parameters
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap()),
        );
        assert_eq!(
            query,
            names(op.query.iter().copied()),
            "query parameters of {shown}"
        );

        let fields = if op.method == actix_web::http::Method::GET {
            None
        } else {
            body_fields(&app, &method, &op.path.replace("{id}", order_id)).await
        };
        let request_body = &operation["requestBody"]["content"]["application/json"]["schema"];
        let documented_fields = (!request_body.is_null()).then(|| {
            let schema = resolve(&doc, request_body);
            assert_eq!(
                schema["additionalProperties"], false,
                "{shown}: kassa refuses unknown body fields; the document must say so"
            );
            names(schema["properties"].as_object().unwrap().keys().cloned())
        });
        assert_eq!(fields, documented_fields, "body fields of {shown}");
    }

    let codes = names(ErrorCode::ALL.iter().map(|c| c.parts().1));
    let documented_codes = names(
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap()),
    );
    assert_eq!(documented_codes, codes, "error codes in the Error schema");
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_response_outside_the_document_on_any_operation() {
    // Built (once) before the app starts: pip must not hold up a running server's runtime.
    let python = oracle::schemathesis_python().clone();
    let app = TestApp::spawn_sandbox(&[]).await;
    // A paid order, large enough for many refunds, for the refund operations.
    let order = app.create_order("schemathesis-paid", 100_000_000).await;
    app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
    app.drive_sandbox().await;
    let paid = order["id"].as_str().unwrap();
    assert_eq!(app.order(paid).await["status"], "paid");
    let run = tokio::process::Command::new(python)
        .arg(SCHEMATHESIS)
        .arg(&app.address)
        .env("KASSA_API_KEY", &app.api_key)
        .env("KASSA_PAID_ORDER_ID", paid)
        .kill_on_drop(true)
        .output();
    // Not a performance bound: it keeps a hung run from holding CI until its own limit.
    let out = tokio::time::timeout(std::time::Duration::from_secs(600), run)
        .await
        .expect("schemathesis ends within 10 minutes")
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{report}");
    let all = operations().count();
    assert!(
        report.contains(&format!("{all} selected / {all} total")),
        "schemathesis did not test all {all} operations:\n{report}"
    );
    // Its requests got past the API key to kassa's own logic: it created orders (one
    // more than the test's) and refunded the paid one.
    let listed: Value = app.get("/api/v1/orders?limit=2").await.json().await.unwrap();
    assert_eq!(
        listed["data"].as_array().map(Vec::len),
        Some(2),
        "schemathesis created no order:\n{report}"
    );
    let refunds: Value = app
        .get(&format!("/api/v1/orders/{paid}/refunds"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        refunds["data"].as_array().is_some_and(|r| !r.is_empty()),
        "schemathesis refunded nothing:\n{report}"
    );
}

/// Found by schemathesis: `to_str` lets a tab through, so kassa took a key the document
/// (and its own error message) says is refused.
#[tokio::test]
async fn an_idempotency_key_with_a_tab_is_refused_as_documented_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let before = stored::rows(&app).await;

    let (status, code, _) =
        error_code(app.post_order_with_key(&order_body("tab-1", 100), "a\tb").await).await;

    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    assert_eq!(stored::rows(&app).await, before, "no order, no idempotency key");
    assert_eq!(app.provider.calls(), [0, 0, 0, 0, 0], "no provider call");
    let spaced = app.post_order_with_key(&order_body("tab-1", 100), "a b").await;
    assert_eq!(spaced.status(), 201, "a space inside a key is printable ASCII");
}
