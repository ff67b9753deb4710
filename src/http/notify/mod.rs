//! Payment platforms' asynchronous notifications: reading the request and formatting
//! the reply each platform expects. What a notification means is decided once, for
//! every platform, by `service::notifications`, which stores it raw with its verdict
//! before the reply, in the same transaction as the transition it causes.

mod alipay;
mod wechat;

use actix_web::web::{self, Bytes, BytesMut};
use actix_web::HttpRequest;
use futures_util::StreamExt;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/notify/alipay").route(web::post().to(alipay::receive_alipay_notify)))
        .service(web::resource("/notify/wechat").route(web::post().to(wechat::receive_wechat_notify)));
}

/// Largest notification body kept; real ones are a few KB.
pub const MAX_NOTIFY_BYTES: usize = 32 * 1024;

/// The body, cut at `MAX_NOTIFY_BYTES`; `true` when it was longer.
async fn read_capped(mut payload: web::Payload) -> Result<(Bytes, bool), String> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
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
