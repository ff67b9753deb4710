//! `POST /notify/alipay`: verify, check, apply, record, then reply `success` or
//! `failure` (anything but `success` makes Alipay resend).

use actix_web::{web, HttpRequest, HttpResponse};

use super::{headers_json, read_capped, remote_addr, MAX_NOTIFY_BYTES};
use crate::db::history::Cause;
use crate::db::notifications::{self, NewNotification};
use crate::db::transitions::{Change, Outcome};
use crate::db::{orders, DbResult, Tx};
use crate::domain::{Amount, OrderId, OrderStatus, ProviderKind, TransitionSource, Verdict};
use crate::http::state::AppState;
use crate::providers::alipay::notify::AlipayNotice;
use crate::service::changes::{self, Changes};

fn reply(ok: bool) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(if ok { "success" } else { "failure" })
}

/// The request as received, stored whatever the verdict.
#[derive(Clone)]
struct RawRequest {
    received_at: chrono::DateTime<chrono::Utc>,
    remote: Option<String>,
    headers: String,
    body: actix_web::web::Bytes,
}

impl RawRequest {
    fn as_new(&self) -> NewNotification<'_> {
        NewNotification {
            provider: ProviderKind::Alipay,
            received_at: self.received_at,
            remote_addr: self.remote.as_deref(),
            headers: &self.headers,
            body: &self.body,
        }
    }
}

struct Decision {
    verdict: Verdict,
    reason: Option<String>,
    order_id: Option<OrderId>,
}

impl Decision {
    fn rejected(reason: impl Into<String>) -> Self {
        Decision {
            verdict: Verdict::Rejected,
            reason: Some(reason.into()),
            order_id: None,
        }
    }
}

/// The checks that need the order, and the transition; runs inside the writer's
/// transaction so the verdict, history row and outbox row commit together.
fn decide(
    tx: &Tx<'_>,
    changes: &mut Changes,
    notification_id: i64,
    notice: &AlipayNotice,
    now: chrono::DateTime<chrono::Utc>,
) -> DbResult<Decision> {
    let Some(order) = OrderId::parse(&notice.out_trade_no)
        .ok()
        .map(|id| orders::find_by_id(tx, &id))
        .transpose()?
        .flatten()
    else {
        return Ok(Decision::rejected(format!(
            "unknown out_trade_no {}",
            notice.out_trade_no
        )));
    };
    let decision = |verdict, reason: Option<String>| Decision {
        verdict,
        reason,
        order_id: Some(order.id.clone()),
    };
    if order.provider != ProviderKind::Alipay {
        return Ok(decision(
            Verdict::Rejected,
            Some(format!("order {} is not an Alipay order", order.id)),
        ));
    }
    match Amount::parse_decimal(&notice.total_amount, order.amount.currency()) {
        Ok(paid) if paid == order.amount => {}
        _ => {
            return Ok(decision(
                Verdict::Rejected,
                Some(format!(
                    "amount mismatch: total_amount {} but the order is {}",
                    notice.total_amount,
                    order.amount.to_decimal_string()
                )),
            ))
        }
    }
    let cause = Cause {
        source: TransitionSource::Notification,
        actor: "alipay".to_owned(),
        detail: Some(format!(
            "trade_status={} notify_id={}",
            notice.trade_status,
            notice.notify_id.as_deref().unwrap_or("-")
        )),
        notification_id: Some(notification_id),
    };
    let change = match (notice.trade_status.as_str(), notice.is_refund_notice) {
        ("TRADE_SUCCESS" | "TRADE_FINISHED", false) => Change::Pay {
            provider_trade_no: notice.trade_no.clone(),
            paid_at: notice.paid_at.unwrap_or(now),
        },
        // Refunds change an order only through kassa's own refund calls, whose
        // answers are authoritative; a notice about one changes nothing.
        ("TRADE_SUCCESS" | "TRADE_FINISHED", true) => {
            return Ok(decision(
                Verdict::Duplicate,
                Some("refund notice; refunds are settled by kassa's refund calls".into()),
            ))
        }
        ("TRADE_CLOSED", _) if order.status == OrderStatus::Pending => Change::Close,
        ("TRADE_CLOSED", _) if order.status == OrderStatus::Closed => {
            return Ok(decision(Verdict::Duplicate, None));
        }
        // On a paid order TRADE_CLOSED means "fully refunded" (or arrives out of order);
        // it never closes a paid order.
        ("TRADE_CLOSED", _) => {
            return Ok(decision(
                Verdict::Duplicate,
                Some(format!(
                    "TRADE_CLOSED for an order that is {}: a refund notice, not a close",
                    order.status
                )),
            ))
        }
        ("WAIT_BUYER_PAY", _) => {
            return Ok(decision(
                Verdict::Duplicate,
                Some("WAIT_BUYER_PAY changes nothing".into()),
            ))
        }
        (other, _) => {
            return Ok(decision(
                Verdict::Rejected,
                Some(format!("unknown trade_status {other:?}")),
            ))
        }
    };
    Ok(match changes.apply(tx, &order.id, &change, &cause, now)? {
        Outcome::Applied { .. } => decision(Verdict::Applied, None),
        Outcome::Duplicate { .. } => decision(Verdict::Duplicate, None),
        Outcome::Refused { order } => decision(
            Verdict::Rejected,
            Some(format!(
                "{} is not allowed for an order that is {}",
                change.transition().as_str(),
                order.status
            )),
        ),
        Outcome::NotFound => decision(Verdict::Rejected, Some("order vanished".into())),
    })
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
    let verified: Result<AlipayNotice, String> = if oversized {
        Err(format!("body larger than {MAX_NOTIFY_BYTES} bytes"))
    } else {
        match state.providers.alipay() {
            None => Err("Alipay is not enabled on this server".to_owned()),
            Some(alipay) => alipay.verify_notification(&body),
        }
    };
    let raw = RawRequest {
        received_at,
        remote: remote_addr(&req),
        headers: headers_json(&req),
        body,
    };
    let stored = raw.clone();
    let outcome = changes::write(&state, move |tx, changes| {
        let id = notifications::insert(tx, &stored.as_new())?;
        let decision = match &verified {
            Err(reason) => Decision::rejected(reason.clone()),
            Ok(notice) => decide(tx, changes, id, notice, received_at)?,
        };
        let dedupe = verified.as_ref().ok().and_then(|n| n.notify_id.clone());
        notifications::set_verdict(
            tx,
            id,
            decision.verdict,
            decision.reason.as_deref(),
            decision.order_id.as_ref(),
            dedupe.as_deref(),
        )?;
        Ok(decision)
    })
    .await;
    match outcome {
        Ok(d) => {
            let order_id = d.order_id.as_ref().map(|o| o.to_string());
            tracing::info!(
                provider = "alipay",
                verdict = d.verdict.as_str(),
                reason = d.reason.as_deref(),
                order_id,
                "notification"
            );
            reply(matches!(d.verdict, Verdict::Applied | Verdict::Duplicate))
        }
        Err(e) => {
            tracing::error!(provider = "alipay", error = %e, "notification could not be stored; replying failure so Alipay resends");
            // Best effort: keep the raw request with the error, if the database allows.
            let reason = format!("error: {e}");
            let _ = state
                .db
                .write(move |tx| {
                    let id = notifications::insert(tx, &raw.as_new())?;
                    notifications::set_verdict(tx, id, Verdict::Error, Some(&reason), None, None)
                })
                .await;
            reply(false)
        }
    }
}
