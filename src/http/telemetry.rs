//! Request ids and the one log line per request: method, route pattern, status,
//! latency, request id.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;
use tracing::Instrument;

use super::state::AppState;
use crate::domain::ids::random_base62;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id kept from a client or a proxy.
pub const MAX_REQUEST_ID: usize = 64;

tokio::task_local! {
    static CURRENT_REQUEST_ID: String;
}

/// A request id taken from a client (or the proxy in front) only when it is 1 to 64
/// characters of `[A-Za-z0-9._-]`: anything else could forge or break log lines.
pub fn well_formed_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The id of the request being served, when called while serving one: error pages
/// show it, so that a visitor's report leads to the request's log lines.
pub fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

/// Gives each request an id (the caller's, when well-formed), serves it inside a span
/// that carries the id, so that every line logged meanwhile (a notification's verdict,
/// a provider call) names it, returns it as `x-request-id`, and logs the request by its
/// route pattern (`/api/v1/orders/{id}`), never the raw path, so ids stay out of
/// aggregate logs.
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| well_formed_request_id(id))
        .map(str::to_owned)
        .unwrap_or_else(|| random_base62(16));
    let method = req.method().to_string();
    // ERROR, the highest level, so that the span is recorded whatever `RUST_LOG`
    // lets through: a warning logged under `RUST_LOG=warn` still names its request.
    let span = tracing::error_span!("request", request_id = %request_id);
    let served = CURRENT_REQUEST_ID
        .scope(request_id.clone(), next.call(req).instrument(span.clone()))
        .await;
    let mut response = match served {
        Ok(response) => response.map_into_boxed_body(),
        Err(e) => {
            // Only a middleware's own failure gets here (handlers' errors are already
            // responses), and without the request no header can be added: logged, then
            // answered by actix.
            let status = e.as_response_error().status_code().as_u16();
            span.in_scope(|| tracing::warn!(%method, status, error = %e, "request failed in a middleware"));
            return Err(e);
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    if let Some(state) = response.request().app_data::<web::Data<AppState>>() {
        state
            .metrics
            .observe_request(metric_method(&method), &route, status, elapsed);
    }
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        // Probes and scrapers call every few seconds: their lines would drown the rest.
        // So would refusals anyone can cause at will (a client past a rate limit, or too
        // slow to send its body): the rate limits count theirs and log them once a minute.
        if route == "/healthz" || route == "/metrics" || status == 408 || status == 429 {
            tracing::debug!(%method, %route, status, latency_ms, "request");
        } else {
            tracing::info!(%method, %route, status, latency_ms, "request");
        }
    });
    Ok(response)
}

/// A method as a metric label: any token is a valid HTTP method, so those kassa never
/// serves count as one, or a client could mint a series per request.
fn metric_method(method: &str) -> &str {
    match method {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
        _ => "OTHER",
    }
}
