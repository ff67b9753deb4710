//! `/api/v1/orders/{id}/refunds`: create (idempotent by `refund_id`) and list.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::orders::path_id;
use super::{parse_object, read_body, ApiCaller, List, Operation};
use crate::db::history::Cause;
use crate::db::{orders, refunds as refund_rows};
use crate::domain::TransitionSource;
use crate::http::error::{ApiError, ApiResult, ErrorCode};
use crate::http::state::AppState;
use crate::service::refunds::{self, NewRefundRequest, RefundError, RefundView};

pub(super) static OPERATIONS: &[Operation] = &[
    Operation {
        method: Method::POST,
        path: "/orders/{id}/refunds",
        query: &[],
        handler: |r| r.to(create_refund),
    },
    Operation {
        method: Method::GET,
        path: "/orders/{id}/refunds",
        query: &[],
        handler: |r| r.to(list_refunds),
    },
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRefundRequest {
    amount: i64,
    reason: String,
    #[serde(default)]
    refund_id: Option<String>,
}

impl From<RefundError> for ApiError {
    fn from(e: RefundError) -> Self {
        match e {
            RefundError::OrderNotFound => ApiError::new(ErrorCode::OrderNotFound, "no order with that id"),
            RefundError::Invalid(f) => f.into(),
            RefundError::NotRefundable(_) => ApiError::new(ErrorCode::IllegalTransition, e.to_string()),
            RefundError::ExceedsBalance { .. } => {
                ApiError::new(ErrorCode::RefundExceedsBalance, e.to_string())
            }
            RefundError::RefundIdConflict(_) => ApiError::new(ErrorCode::RefundIdConflict, e.to_string()),
            RefundError::ProviderMissing => ApiError::new(ErrorCode::ProviderUnavailable, e.to_string()),
            RefundError::Db(d) => d.into(),
        }
    }
}

async fn create_refund(
    state: web::Data<AppState>,
    caller: ApiCaller,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let id = path_id(&path)?;
    let body = read_body(&req, payload).await?;
    let (request, _) = parse_object::<CreateRefundRequest>(&body)?;
    let cause = Cause {
        source: TransitionSource::Api,
        actor: caller.name,
        detail: None,
        notification_id: None,
    };
    let new = NewRefundRequest {
        amount: request.amount,
        reason: request.reason,
        refund_id: request.refund_id,
    };
    let (refund, order, created) = refunds::create(&state, &id, new, cause).await?;
    let status = if created {
        actix_web::http::StatusCode::CREATED
    } else {
        actix_web::http::StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(refunds::view(&refund, &order)))
}

async fn list_refunds(
    state: web::Data<AppState>,
    _caller: ApiCaller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path_id(&path)?;
    let (order, rows) = state
        .db
        .read(move |c| Ok((orders::find_by_id(c, &id)?, refund_rows::list_for_order(c, &id)?)))
        .await?;
    let order = order.ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound, "no order with that id"))?;
    Ok(HttpResponse::Ok().json(List::<RefundView> {
        data: rows.iter().map(|r| refunds::view(r, &order)).collect(),
    }))
}
