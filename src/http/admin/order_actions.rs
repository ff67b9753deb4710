//! What staff can do to an order: close it (at the provider first), refund it, query
//! the provider now (a lost notification becomes `paid`), re-send a webhook. Each is a
//! POST with the session's anti-forgery token and a reason; each goes through the same
//! service functions and guarded transitions as the API, with the staff user as the
//! actor; each is written to the audit log, refused or done. An action the order's
//! status does not allow is refused before anything is asked of anyone.

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};

use super::order_detail::{order_page, resendable, Notice, Typed};
use super::texts::{fill, AdminTexts};
use super::{remote_addr, role_refusal, see_other, AdminError, Base, Form, SignedIn};
use crate::db::history::Cause;
use crate::db::refunds::Refund;
use crate::db::{orders, outbox, timeline};
use crate::domain::admin::Permission;
use crate::domain::{Amount, Order, OrderId, OrderStatus, RefundStatus, TransitionSource};
use crate::http::i18n::Lang;
use crate::http::state::AppState;
use crate::providers::ProviderError;
use crate::service::admin::{Action, Staff};
use crate::service::orders::{self as order_service, CloseError, Queried, QueryError};
use crate::service::refunds::{self, NewRefundRequest, RefundError, MAX_REASON_CHARS};

/// One action request, checked: the token first, then the order, the role, the reason.
struct Request<'a> {
    state: &'a AppState,
    req: &'a HttpRequest,
    staff: &'a Staff,
    lang: Lang,
    t: &'static AdminTexts,
    form: Form,
    order: Order,
    action: Action,
    typed: Typed,
}

impl<'a> Request<'a> {
    async fn begin(
        state: &'a AppState,
        req: &'a HttpRequest,
        staff: &'a Staff,
        raw_id: &str,
        body: &Bytes,
        name: &'static str,
    ) -> Result<Request<'a>, AdminError> {
        let base = Base::new(req, Some(staff));
        let (lang, t) = (base.lang, base.t);
        let form = Form::parse(body);
        form.check_csrf(staff, lang)?;
        let id = OrderId::parse(raw_id).map_err(|_| AdminError::NotFound(lang, t.order_not_found))?;
        let lookup = id.clone();
        let order = state
            .db
            .read(move |tx| orders::find_by_id(tx, &lookup))
            .await
            .map_err(|e| AdminError::internal(lang, &e))?
            .ok_or(AdminError::NotFound(lang, t.order_not_found))?;
        let reason = form.get("reason").unwrap_or_default().trim().to_owned();
        let typed = Typed {
            action: name.split('.').nth(1).unwrap_or(name),
            reason: reason.clone(),
            amount: form.get("amount").unwrap_or_default().trim().to_owned(),
        };
        let action = Action {
            at: state.now(),
            actor: staff.username.clone(),
            action: name,
            order_id: Some(id),
            reason: Some(reason).filter(|r| !r.is_empty()),
            remote_addr: remote_addr(req),
        };
        Ok(Request {
            state,
            req,
            staff,
            lang,
            t,
            form,
            order,
            action,
            typed,
        })
    }

    /// The role may act, and the reason is given: else the refusal's response.
    async fn permitted(&self) -> Result<Option<HttpResponse>, AdminError> {
        if !self.staff.role.may_act_on_orders() {
            return self
                .refuse(
                    StatusCode::FORBIDDEN,
                    self.t.refused_role.to_owned(),
                    &role_refusal(self.staff.role, Permission::ActOnOrders),
                )
                .await
                .map(Some);
        }
        let reason = self.action.reason.as_deref().unwrap_or_default();
        if reason.is_empty()
            || reason.chars().count() > MAX_REASON_CHARS
            || reason.chars().any(char::is_control)
        {
            return self
                .again(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    self.t.reason_required.to_owned(),
                )
                .await
                .map(Some);
        }
        Ok(None)
    }

    fn cause(&self, source: TransitionSource, detail: String) -> Cause {
        Cause {
            source,
            actor: self.staff.username.clone(),
            detail: Some(detail),
            notification_id: None,
        }
    }

    async fn record(&self, outcome: &'static str, detail: Option<String>) -> Result<(), AdminError> {
        self.action
            .clone()
            .record(self.state, outcome, detail)
            .await
            .map_err(|e| AdminError::internal(self.lang, &e))
    }

    /// The order page again with `message`, nothing recorded (bad input).
    async fn again(&self, status: StatusCode, message: String) -> Result<HttpResponse, AdminError> {
        let notice = Notice {
            ok: false,
            text: message,
        };
        order_page(
            self.state,
            self.req,
            self.staff,
            self.order.id.clone(),
            Some(notice),
            self.typed.clone(),
            status,
        )
        .await
    }

    /// Records the refusal, then shows the order page with `message`.
    async fn refuse(
        &self,
        status: StatusCode,
        message: String,
        why: &str,
    ) -> Result<HttpResponse, AdminError> {
        self.record("refused", Some(why.to_owned())).await?;
        self.again(status, message).await
    }

    /// Records a failure (the provider, the amounts), then shows it.
    async fn failed(
        &self,
        status: StatusCode,
        message: String,
        why: String,
    ) -> Result<HttpResponse, AdminError> {
        self.record("failed", Some(why)).await?;
        self.again(status, message).await
    }

    fn not_now(&self, status: OrderStatus) -> String {
        fill(self.t.refused_status, &[self.t.status(status)])
    }

    /// After an action that did something: back to the order page (a reload does not
    /// repeat it), saying what happened.
    async fn done(&self, code: &str, detail: Option<String>) -> Result<HttpResponse, AdminError> {
        self.record("done", detail).await?;
        Ok(see_other(&format!(
            "/admin/orders/{}?done={code}#notice",
            self.order.id
        )))
    }

    async fn provider_failed(&self, e: &ProviderError) -> Result<HttpResponse, AdminError> {
        match e {
            ProviderError::Unknown { .. } => {
                self.failed(
                    StatusCode::SERVICE_UNAVAILABLE,
                    self.t.provider_unavailable.to_owned(),
                    e.to_string(),
                )
                .await
            }
            ProviderError::Rejected { code, message, .. } => {
                let text = fill(self.t.provider_rejected, &[&format!("{code}: {message}")]);
                self.failed(StatusCode::BAD_GATEWAY, text, e.to_string()).await
            }
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.action.at
    }
}

pub async fn close_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let r = Request::begin(&state, &req, &staff.0, &path, &body, "order.close").await?;
    if let Some(refused) = r.permitted().await? {
        return Ok(refused);
    }
    if r.order.status != OrderStatus::Pending {
        let status = r.order.status;
        return r
            .refuse(
                StatusCode::CONFLICT,
                r.not_now(status),
                &format!("order is {status}"),
            )
            .await;
    }
    let reason = r.action.reason.clone().unwrap_or_default();
    let cause = r.cause(TransitionSource::Admin, reason);
    match order_service::close(&state, &r.order.id, cause, r.now()).await {
        Ok(_) => r.done("closed", None).await,
        Err(CloseError::TurnedOutPaid(_)) => {
            r.done(
                "close_paid",
                Some("the provider reports it paid; recorded as paid".into()),
            )
            .await
        }
        Err(CloseError::Illegal(status)) => {
            r.refuse(
                StatusCode::CONFLICT,
                r.not_now(status),
                &format!("order is {status}"),
            )
            .await
        }
        Err(e @ CloseError::AmountMismatch { .. }) => {
            r.failed(
                StatusCode::CONFLICT,
                r.t.amount_mismatch.to_owned(),
                e.to_string(),
            )
            .await
        }
        Err(CloseError::Provider(e)) => r.provider_failed(&e).await,
        Err(CloseError::NotFound) => Err(AdminError::NotFound(r.lang, r.t.order_not_found)),
        Err(CloseError::Db(e)) => Err(AdminError::internal(r.lang, &e)),
    }
}

fn refund_code(refund: &Refund) -> &'static str {
    match refund.status {
        RefundStatus::Succeeded => "refund_succeeded",
        RefundStatus::Pending => "refund_pending",
        RefundStatus::Failed => "refund_failed",
    }
}

pub async fn refund_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let r = Request::begin(&state, &req, &staff.0, &path, &body, "order.refund").await?;
    if let Some(refused) = r.permitted().await? {
        return Ok(refused);
    }
    if !r.order.status.is_refundable() {
        let status = r.order.status;
        return r
            .refuse(
                StatusCode::CONFLICT,
                r.not_now(status),
                &format!("order is {status}"),
            )
            .await;
    }
    let typed = r.form.get("amount").unwrap_or_default().trim();
    let amount = match Amount::parse_decimal(typed, r.order.amount.currency()) {
        Ok(a) if a.minor() > 0 => a,
        _ => {
            return r
                .again(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    fill(r.t.bad_refund_amount, &[typed]),
                )
                .await
        }
    };
    let request = NewRefundRequest {
        amount: amount.minor(),
        reason: r.action.reason.clone().unwrap_or_default(),
        refund_id: None,
    };
    let cause = r.cause(TransitionSource::Admin, String::new());
    match refunds::create(&state, &r.order.id, request, cause).await {
        Ok((refund, _, _)) => {
            let detail = format!("refund {} of {}: {}", refund.id, amount, refund.status.as_str());
            r.done(refund_code(&refund), Some(detail)).await
        }
        Err(RefundError::NotRefundable(status)) => {
            r.refuse(
                StatusCode::CONFLICT,
                r.not_now(status),
                &format!("order is {status}"),
            )
            .await
        }
        Err(RefundError::ExceedsBalance { requested, available }) => {
            let text = fill(r.t.refund_exceeds, &[&requested, &available]);
            r.refuse(
                StatusCode::CONFLICT,
                text,
                &format!("{requested} exceeds what is left ({available})"),
            )
            .await
        }
        Err(RefundError::ProviderMissing) => {
            r.failed(
                StatusCode::CONFLICT,
                r.t.provider_missing.to_owned(),
                "provider not enabled".into(),
            )
            .await
        }
        Err(RefundError::Invalid(f)) => r.again(StatusCode::UNPROCESSABLE_ENTITY, f.message).await,
        Err(e @ RefundError::RefundIdConflict(_)) => {
            r.failed(StatusCode::CONFLICT, e.to_string(), e.to_string()).await
        }
        Err(RefundError::OrderNotFound) => Err(AdminError::NotFound(r.lang, r.t.order_not_found)),
        Err(RefundError::Db(e)) => Err(AdminError::internal(r.lang, &e)),
    }
}

pub async fn query_order(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let r = Request::begin(&state, &req, &staff.0, &path, &body, "order.query").await?;
    if let Some(refused) = r.permitted().await? {
        return Ok(refused);
    }
    if !matches!(r.order.status, OrderStatus::Pending | OrderStatus::Closed) {
        let status = r.order.status;
        return r
            .refuse(
                StatusCode::CONFLICT,
                r.not_now(status),
                &format!("order is {status}"),
            )
            .await;
    }
    let reason = r.action.reason.clone().unwrap_or_default();
    let cause = r.cause(
        TransitionSource::ProviderQuery,
        format!("queried from the dashboard: {reason}"),
    );
    match order_service::query_provider(&state, &r.order.id, cause, r.now()).await {
        Ok(Queried::Paid(order)) => {
            let detail = if order.late_payment {
                "paid at the provider; recorded as a late payment"
            } else {
                "paid at the provider; recorded as paid"
            };
            r.done("query_paid", Some(detail.into())).await
        }
        Ok(Queried::AlreadyPaid(_)) => r.done("query_already_paid", Some("already paid".into())).await,
        Ok(Queried::NotPaid(_, state)) => {
            r.done("query_not_paid", Some(format!("the provider reports {state:?}")))
                .await
        }
        Err(QueryError::NotQueryable(status)) => {
            r.refuse(
                StatusCode::CONFLICT,
                r.not_now(status),
                &format!("order is {status}"),
            )
            .await
        }
        Err(e @ QueryError::AmountMismatch { .. }) => {
            r.failed(
                StatusCode::CONFLICT,
                r.t.amount_mismatch.to_owned(),
                e.to_string(),
            )
            .await
        }
        Err(QueryError::ProviderMissing) => {
            r.failed(
                StatusCode::CONFLICT,
                r.t.provider_missing.to_owned(),
                "provider not enabled".into(),
            )
            .await
        }
        Err(QueryError::Provider(e)) => r.provider_failed(&e).await,
        Err(QueryError::NotFound) => Err(AdminError::NotFound(r.lang, r.t.order_not_found)),
        Err(QueryError::Db(e)) => Err(AdminError::internal(r.lang, &e)),
    }
}

pub async fn resend_webhook(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, AdminError> {
    let mut r = Request::begin(&state, &req, &staff.0, &path, &body, "webhook.resend").await?;
    let event_id = r.form.get("webhook_id").unwrap_or_default().trim().to_owned();
    r.action.reason = r
        .action
        .reason
        .take()
        .map(|reason| format!("{reason} ({event_id})"));
    if let Some(refused) = r.permitted().await? {
        return Ok(refused);
    }
    let lookup = r.order.id.clone();
    let deliveries = state
        .db
        .read(move |tx| timeline::deliveries_for_order(tx, &lookup))
        .await
        .map_err(|e| AdminError::internal(r.lang, &e))?;
    let Some(delivery) = deliveries.iter().find(|d| d.event_id == event_id) else {
        return r
            .again(StatusCode::UNPROCESSABLE_ENTITY, r.t.no_such_delivery.to_owned())
            .await;
    };
    if !resendable(delivery.status) {
        let status = delivery.status;
        return r
            .refuse(
                StatusCode::CONFLICT,
                r.t.not_resendable.to_owned(),
                &format!("delivery {event_id} is {}", status.as_str()),
            )
            .await;
    }
    let (id, now) = (event_id.clone(), r.now());
    let queued = state
        .db
        .write(move |tx| outbox::requeue(tx, &id, now))
        .await
        .map_err(|e| AdminError::internal(r.lang, &e))?;
    if !queued {
        // Claimed or re-queued by someone else since it was read.
        return r
            .refuse(
                StatusCode::CONFLICT,
                r.t.not_resendable.to_owned(),
                &format!("delivery {event_id} was no longer re-sendable"),
            )
            .await;
    }
    r.done("resent", Some(format!("delivery {event_id} queued again")))
        .await
}
