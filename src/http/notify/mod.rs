//! Payment platforms' asynchronous notifications: reading the request and formatting
//! the reply each platform expects. What a notification means is decided once, for
//! every platform, by `service::notifications`, which stores it raw with its verdict
//! before the reply, in the same transaction as the transition it causes.

mod alipay;
pub mod limit;
mod wechat;

use actix_web::web::{self, Bytes, BytesMut};
use actix_web::HttpRequest;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;

use crate::http::state::AppState;
use crate::service::rate_limit::Limited;

const ALIPAY_PATH: &str = "/notify/alipay";
const WECHAT_PATH: &str = "/notify/wechat";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource(ALIPAY_PATH).route(web::post().to(alipay::receive_alipay_notify)))
        .service(web::resource(WECHAT_PATH).route(web::post().to(wechat::receive_wechat_notify)));
}

/// The answer that makes the platform of notify route `path` send again, with
/// `status`, for an answer made outside its handler (`slow_clients::body_deadline`'s
/// `408`); `None` off the notify routes.
pub fn resend_reply(
    path: &str,
    status: actix_web::http::StatusCode,
    message: &str,
) -> Option<actix_web::HttpResponse> {
    match path {
        ALIPAY_PATH => {
            let mut reply = alipay::reply(false);
            *reply.status_mut() = status;
            Some(reply)
        }
        WECHAT_PATH => Some(wechat::fail(status, message)),
        _ => None,
    }
}

/// Largest notification body kept; real ones are a few KB.
pub const MAX_NOTIFY_BYTES: usize = 32 * 1024;

/// The body, cut at `MAX_NOTIFY_BYTES`; `true` when it was longer.
async fn read_capped(mut payload: web::Payload) -> Result<(Bytes, bool), String> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        // Past `server.body_timeout` this is the deadline's error: nothing is stored,
        // and `slow_clients::body_deadline` turns the reply into a 408.
        let chunk = chunk.map_err(|e| format!("cannot read body: {e}"))?;
        if body.len() + chunk.len() > MAX_NOTIFY_BYTES {
            let room = MAX_NOTIFY_BYTES - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body.freeze(), true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), false))
}

/// Request headers as a JSON object, for the raw log.
fn headers_json(req: &HttpRequest) -> String {
    let map: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// Who sent the notification: the socket address (with its port, to tell connections
/// apart), or, behind a trusted proxy, the forwarded client's IP.
fn remote_addr(req: &HttpRequest) -> Option<String> {
    let peer = req.peer_addr()?;
    let client = super::client_ip(req)?;
    Some(if client == peer.ip().to_canonical() {
        peer.to_string()
    } else {
        client.to_string()
    })
}

/// `Some` when `verified` failed verification and its client is past the limit: the
/// request is then answered `429` with this `Retry-After` and not stored. A notice the
/// platform signed is never limited, whatever kassa then makes of it.
async fn over_limit(
    state: &AppState,
    req: &HttpRequest,
    verified: &crate::providers::Verified,
    now: DateTime<Utc>,
) -> Option<Limited> {
    if !crate::service::notifications::failed_verification(verified) {
        return None;
    }
    state.notify_limit.failed(super::client_ip(req), now).await.err()
}

/// A `429` answer builder with the refusal's `Retry-After`.
fn too_many_requests(limited: Limited) -> actix_web::HttpResponseBuilder {
    let mut reply = actix_web::HttpResponse::TooManyRequests();
    reply.insert_header((
        actix_web::http::header::RETRY_AFTER,
        limited.retry_after.to_string(),
    ));
    reply
}
