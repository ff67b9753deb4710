//! The merchant JSON API under `/api/v1`: Bearer API keys, JSON errors everywhere,
//! bodies read with a hard size limit.

pub mod limits;
mod orders;
mod refunds;

use std::future::Future;
use std::pin::Pin;

use actix_web::http::{header, Method};
use actix_web::web::{self, Bytes};
use actix_web::{mime, FromRequest, HttpRequest, HttpResponse, Route};
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
        let address = crate::http::client_ip(req);
        Box::pin(async move {
            let state =
                state.ok_or_else(|| ApiError::new(ErrorCode::InternalError, "application state missing"))?;
            let now = state.now();
            // First, before the key is even read: see `ApiLimits::check_address`.
            state.api_limits.check_address(address, now).await.map_err(|l| {
                ApiError::rate_limited(
                    l.retry_after,
                    "too many invalid API keys from this address; every request from it is refused until Retry-After has passed",
                )
            })?;
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
            let token = crate::http::bearer_token(&value).ok_or_else(|| {
                ApiError::new(ErrorCode::Unauthorized, "Authorization must be Bearer <api key>")
            })?;
            let hash = api_key::hash(token);
            let record = state
                .db
                .read(move |c| api_keys::find_active_by_hash(c, &hash))
                .await?;
            let Some(record) = record else {
                // Only a key looked up in vain counts: a missing or malformed header
                // guesses nothing and costs no read.
                state.api_limits.failed(address, now).await;
                return Err(ApiError::new(
                    ErrorCode::Unauthorized,
                    "invalid or revoked API key",
                ));
            };
            state.api_limits.check_key(record.id, now).await.map_err(|l| {
                ApiError::rate_limited(
                    l.retry_after,
                    "this API key has made more requests than [server] api_rate_limit allows; retry after Retry-After seconds",
                )
            })?;
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

/// Refuses a body that is not declared JSON: a client sending `text/plain` (or nothing)
/// is not speaking this API, and reading it anyway would make what it meant a guess.
fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let declared = req.headers().get(header::CONTENT_TYPE);
    let is_json = declared
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.type_() == mime::APPLICATION && m.subtype() == mime::JSON);
    if is_json {
        return Ok(());
    }
    let shown = match declared {
        None => "no Content-Type".to_owned(),
        Some(v) => {
            let text = String::from_utf8_lossy(v.as_bytes());
            // Bounded: the header is echoed back.
            format!("Content-Type {:?}", text.chars().take(64).collect::<String>())
        }
    };
    Err(ApiError::new(
        ErrorCode::UnsupportedMediaType,
        format!("request body must be sent as Content-Type: application/json; got {shown}"),
    ))
}

/// Reads the whole body of a JSON request: refuses any other content type with a JSON
/// 415, and more than `MAX_BODY_BYTES` with a JSON 413.
pub async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Bytes, ApiError> {
    require_json(req)?;
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
            if crate::http::slow_clients::is_body_timeout(&e) {
                ApiError::new(ErrorCode::RequestTimeout, e.to_string())
            } else {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("cannot read request body: {e}"),
                )
            }
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
    let depth = nesting_depth(body);
    if depth > MAX_BODY_DEPTH {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "request body is nested too deep: {depth} levels of objects and arrays, at most \
                 {MAX_BODY_DEPTH} are accepted (the body itself is level 1, metadata's value level 2)"
            ),
        ));
    }
    // A repeated key would be read as its last value by the parser below, while
    // another reader of the same bytes may take the first: refused, at any depth.
    serde_json::from_slice::<UniqueKeys>(body).map_err(|e| {
        let message = if e.is_data() {
            format!("request body repeats a key: {e}")
        } else {
            format!("request body is not valid JSON: {e}")
        };
        ApiError::new(ErrorCode::MalformedJson, message)
    })?;
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

/// Deepest nesting of objects and arrays a body may have. Well under serde_json's own
/// limit (128), so a deep body is refused as too deep, never as "not valid JSON".
pub const MAX_BODY_DEPTH: usize = 64;

/// How deep objects and arrays nest in `body`, brackets inside strings not counted. Run
/// before parsing, so it also sees bodies the parser would give up on.
fn nesting_depth(body: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Any JSON value, read only to refuse an object that names a key twice (keys compared
/// unescaped, so `"a"` and `"\u0061"` are the same key).
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<UniqueKeys>()?;
            seen.insert(key);
        }
        Ok(UniqueKeys)
    }
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
