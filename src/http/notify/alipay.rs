//! `POST /notify/alipay`: read the body, verify it (Alipay's notify module), hand it to
//! the notification pipeline, reply `success` or `failure` (anything but `success`
//! makes Alipay resend).

use actix_web::http::header;
use actix_web::{mime, web, HttpRequest, HttpResponse};

use super::{headers_json, over_limit, read_capped, remote_addr, too_many_requests, MAX_NOTIFY_BYTES};
use crate::domain::{ProviderKind, Rejection, RejectionCode};
use crate::http::state::AppState;
use crate::service::notifications::{self, RawNotification};

pub(super) fn reply(ok: bool) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(if ok { "success" } else { "failure" })
}

/// Alipay posts its notifications as `application/x-www-form-urlencoded` (with a
/// charset or not, in any case); a body sent as anything else is not from Alipay, and
/// reading it as a form anyway would accept what its sender did not mean as one.
fn form_content_type(req: &HttpRequest) -> Result<(), Rejection> {
    let declared = req.headers().get(header::CONTENT_TYPE);
    let is_form = declared
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.essence_str() == mime::APPLICATION_WWW_FORM_URLENCODED.essence_str());
    if is_form {
        return Ok(());
    }
    let detail = match declared {
        None => "no Content-Type; Alipay sends application/x-www-form-urlencoded".to_owned(),
        Some(v) => format!(
            "Content-Type {:?} is not application/x-www-form-urlencoded",
            // Bounded: the stored detail is shown on the admin pages.
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(100)
                .collect::<String>()
        ),
    };
    Err(Rejection::new(RejectionCode::UnsupportedContentType, detail))
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
            // A client that stalls or hangs up mid-body can do so at will: a line
            // above debug for each would let it fill the log.
            tracing::debug!(provider = "alipay", error = %e, "notification body unreadable");
            return reply(false);
        }
    };
    // Signature and merchant checks are pure CPU work: done here, not in the writer.
    let verified = if oversized {
        Err(Rejection::new(
            RejectionCode::BodyTooLarge,
            format!("body larger than {MAX_NOTIFY_BYTES} bytes"),
        ))
    } else if let Err(rejection) = form_content_type(&req) {
        Err(rejection)
    } else {
        match state.providers.alipay() {
            None => Err(Rejection::new(
                RejectionCode::ProviderDisabled,
                "Alipay is not enabled on this server",
            )),
            Some(alipay) => alipay.verify_notification(&body),
        }
    };
    if let Some(limited) = over_limit(&state, &req, &verified, received_at).await {
        return too_many_requests(limited)
            .content_type("text/plain; charset=utf-8")
            .body("failure");
    }
    let raw = RawNotification {
        provider: ProviderKind::Alipay,
        received_at,
        remote_addr: remote_addr(&req),
        headers: headers_json(&req),
        body: body.into(),
        cut: None,
    };
    let decision = notifications::process(&state, raw, verified).await;
    reply(decision.verdict().acknowledged())
}
