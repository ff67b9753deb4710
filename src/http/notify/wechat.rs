//! `POST /notify/wechat`: read the body, verify and decrypt it (WeChat's notify module),
//! hand it to the notification pipeline, reply `204` when WeChat may stop resending and
//! `4xx`/`5xx` with `{"code":"FAIL","message":…}` when it must try again.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{headers_json, over_limit, read_capped, remote_addr, too_many_requests, MAX_NOTIFY_BYTES};
use crate::domain::{ProviderKind, Reason, Rejection, RejectionCode};
use crate::http::state::AppState;
use crate::providers::wechat::wire::PlatformHeaders;
use crate::service::notifications::{self, RawNotification};

pub(super) fn fail(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({"code": "FAIL", "message": message}))
}

pub async fn receive_wechat_notify(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let received_at = state.now();
    let (body, oversized) = match read_capped(payload).await {
        Ok(read) => read,
        Err(e) => {
            // A client that stalls or hangs up mid-body can do so at will: a line
            // above debug for each would let it fill the log.
            tracing::debug!(provider = "wechat", error = %e, "notification body unreadable");
            return fail(StatusCode::BAD_REQUEST, "body unreadable");
        }
    };
    let headers = PlatformHeaders::from_lookup(|name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    // Signature, decryption and merchant checks are pure CPU work: done here, not in
    // the writer.
    let verified = if oversized {
        Err(Rejection::new(
            RejectionCode::BodyTooLarge,
            format!("body larger than {MAX_NOTIFY_BYTES} bytes"),
        ))
    } else {
        match state.providers.wechat() {
            None => Err(Rejection::new(
                RejectionCode::ProviderDisabled,
                "WeChat Pay is not enabled on this server",
            )),
            Some(wechat) => wechat.verify_notification(&headers, &body),
        }
    };
    if let Some(limited) = over_limit(&state, &req, &verified, received_at).await {
        return too_many_requests(limited).json(serde_json::json!({
            "code": "FAIL",
            "message": "too many notifications that failed verification from this address; retry after Retry-After seconds",
        }));
    }
    let raw = RawNotification {
        provider: ProviderKind::Wechat,
        received_at,
        remote_addr: remote_addr(&req),
        headers: headers_json(&req),
        body: body.into(),
        cut: None,
    };
    let decision = notifications::process(&state, raw, verified).await;
    if decision.verdict().acknowledged() {
        return HttpResponse::NoContent().finish();
    }
    let status = match decision.reason {
        Reason::Rejected(RejectionCode::BodyTooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
        Reason::Rejected(
            RejectionCode::BadSignature
            | RejectionCode::UnknownSerial
            | RejectionCode::StaleTimestamp
            | RejectionCode::MissingHeader
            | RejectionCode::MissingSignature
            | RejectionCode::UnsupportedSignType,
        ) => StatusCode::UNAUTHORIZED,
        Reason::Rejected(RejectionCode::ProviderDisabled) => StatusCode::NOT_FOUND,
        Reason::Rejected(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = decision
        .detail
        .clone()
        .unwrap_or_else(|| decision.reason.code().to_owned());
    fail(status, &message)
}
