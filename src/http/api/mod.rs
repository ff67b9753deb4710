//! The merchant JSON API under `/api/v1`: Bearer API keys, JSON errors everywhere,
//! bodies read with a hard size limit.

mod orders;
mod refunds;

use std::future::Future;
use std::pin::Pin;

use actix_web::http::{header, Method};
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest, HttpResponse, Route};
use chrono::Duration;
use futures_util::StreamExt;

use crate::db::api_keys;
use crate::domain::api_key;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::state::AppState;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// One operation of `/api/v1`. `configure` mounts exactly these, and the OpenAPI drift
/// test (tests/it/openapi.rs) checks `openapi.json` against them: a route cannot exist
/// without being in this table, nor be in it without being in the document.
pub struct Operation {
    pub method: Method,
    /// Under `/api/v1`, path parameters as `{name}` (actix's spelling and OpenAPI's).
    pub path: &'static str,
    /// The query parameters it reads; it refuses any other.
    pub query: &'static [&'static str],
    handler: fn(Route) -> Route,
}

/// Every operation of `/api/v1`.
pub fn operations() -> impl Iterator<Item = &'static Operation> {
    orders::OPERATIONS.iter().chain(refunds::OPERATIONS)
}

/// One resource per path, with a route per operation; actix answers any other method
/// with 405 and `Allow`.
fn mount_operations(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<&'static str> = Vec::new();
    for op in operations() {
        if !paths.contains(&op.path) {
            paths.push(op.path);
        }
    }
    for path in paths {
        let resource = operations()
            .filter(|op| op.path == path)
            .fold(web::resource(path), |resource, op| {
                resource.route((op.handler)(web::method(op.method.clone())))
            });
        cfg.service(resource);
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v1")
            .configure(mount_operations)
            .default_service(web::to(api_not_found)),
    )
    // A method a route lacks: actix's 405 with `Allow`, made JSON by
    // `http::method_not_allowed`.
    .service(web::resource("/openapi.json").route(web::get().to(openapi)))
    .default_service(web::to(api_not_found));
}

async fn api_not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("no API route {} {}", req.method(), req.path()),
    ))
}

async fn openapi() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(include_str!("openapi.json"))
}

/// The caller, identified by a valid API key.
#[derive(Debug, Clone)]
pub struct ApiCaller {
    pub key_id: i64,
    pub name: String,
}

/// How often `last_used_at` is refreshed; a write per request would be waste.
const TOUCH_EVERY: Duration = Duration::seconds(60);

impl FromRequest for ApiCaller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().map(str::to_owned));
        Box::pin(async move {
            let state =
                state.ok_or_else(|| ApiError::new(ErrorCode::InternalError, "application state missing"))?;
            let value = match header {
                None => {
                    return Err(ApiError::new(
                        ErrorCode::Unauthorized,
                        "missing Authorization header; send Authorization: Bearer <api key>",
                    ))
                }
                Some(Err(_)) => {
                    return Err(ApiError::new(
                        ErrorCode::Unauthorized,
                        "Authorization header is not valid text",
                    ))
                }
                Some(Ok(v)) => v,
            };
            let token = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::new(ErrorCode::Unauthorized, "Authorization must be Bearer <api key>")
                })?;
            let hash = api_key::hash(token);
            let record = state
                .db
                .read(move |c| api_keys::find_active_by_hash(c, &hash))
                .await?
                .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "invalid or revoked API key"))?;
            let now = state.now();
            if record.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY) {
                let id = record.id;
                actix_web::rt::spawn(async move {
                    if let Err(e) = state.db.write(move |c| api_keys::touch(c, id, now)).await {
                        tracing::warn!(error = %e, "cannot record API key use");
                    }
                });
            }
            Ok(ApiCaller {
                key_id: record.id,
                name: record.name,
            })
        })
    }
}

/// Reads the whole body, refusing more than `MAX_BODY_BYTES` with a JSON 413.
pub async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("cannot read request body: {e}"),
            )
        })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON object body: malformed JSON (or not an object) is 400, a field of the
/// wrong type, missing or unknown is 422 naming the field. Also returns the canonical
/// text of the body (object keys sorted), for request fingerprints.
pub fn parse_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<(T, String), ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::MalformedJson,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::new(
            ErrorCode::MalformedJson,
            "request body must be a JSON object",
        ));
    }
    let canonical = value.to_string();
    let parsed = serde_path_to_error::deserialize(value)
        .map_err(|e| ApiError::field(field_of(&e), e.inner().to_string()))?;
    Ok((parsed, canonical))
}

/// Field name from a serde error, for `{"error": {"field": …}}`.
fn field_of(error: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    if path != "." {
        return path;
    }
    let message = error.inner().to_string();
    message.split('`').nth(1).unwrap_or("body").to_owned()
}

/// `{"data": [...]}`, the shape of every list that is not paginated.
#[derive(serde::Serialize)]
pub struct List<T> {
    pub data: Vec<T>,
}
