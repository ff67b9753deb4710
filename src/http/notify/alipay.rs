//! `POST /notify/alipay`: read the body, verify it (Alipay's notify module), hand it to
//! the notification pipeline, reply `success` or `failure` (anything but `success`
//! makes Alipay resend).

use actix_web::{web, HttpRequest, HttpResponse};

use super::{headers_json, read_capped, remote_addr, MAX_NOTIFY_BYTES};
use crate::domain::{ProviderKind, Rejection, RejectionCode};
use crate::http::state::AppState;
use crate::service::notifications::{self, RawNotification};

fn reply(ok: bool) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(if ok { "success" } else { "failure" })
}

pub async fn receive_alipay_notify(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let received_at = state.now();
    let (body, oversized) = match read_capped(payload).await {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(provider = "alipay", error = %e, "notification body unreadable");
            return reply(false);
        }
    };
    // Signature and merchant checks are pure CPU work: done here, not in the writer.
    let verified = if oversized {
        Err(Rejection::new(
            RejectionCode::BodyTooLarge,
            format!("body larger than {MAX_NOTIFY_BYTES} bytes"),
        ))
    } else {
        match state.providers.alipay() {
            None => Err(Rejection::new(
                RejectionCode::ProviderDisabled,
                "Alipay is not enabled on this server",
            )),
            Some(alipay) => alipay.verify_notification(&body),
        }
    };
    let raw = RawNotification {
        provider: ProviderKind::Alipay,
        received_at,
        remote_addr: remote_addr(&req),
        headers: headers_json(&req),
        body: body.into(),
    };
    let decision = notifications::process(&state, raw, verified).await;
    reply(decision.verdict().acknowledged())
}
