//! `/api/v1/orders`: create, read, list, close, history.

use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};
use ring::digest::{digest, SHA256};
use serde::Serialize;

use super::{parse_object, read_body, ApiCaller, List, Operation};
use crate::db::history::Cause;
use crate::db::history::{self, HistoryEntry};
use crate::db::orders::{self, Cursor, OrderFilter};
use crate::domain::{CreateOrderRequest, OrderId, OrderStatus, OrderView, ProviderKind, TransitionSource};
use crate::http::error::{ApiError, ApiResult, ErrorCode};
use crate::http::state::AppState;
use crate::service::orders::{self as order_service, Created, Idempotency};
use crate::webhooks::guard::check_destination;

pub(super) static OPERATIONS: &[Operation] = &[
    Operation {
        method: Method::POST,
        path: "/orders",
        query: &[],
        handler: |r| r.to(create_order),
    },
    Operation {
        method: Method::GET,
        path: "/orders",
        query: LIST_QUERY,
        handler: |r| r.to(list_orders),
    },
    Operation {
        method: Method::GET,
        path: "/orders/{id}",
        query: &[],
        handler: |r| r.to(get_order),
    },
    Operation {
        method: Method::POST,
        path: "/orders/{id}/close",
        query: &[],
        handler: |r| r.to(close_order),
    },
    Operation {
        method: Method::GET,
        path: "/orders/{id}/events",
        query: &[],
        handler: |r| r.to(list_events),
    },
];

const MAX_IDEMPOTENCY_KEY: usize = 255;

fn idempotency_key(req: &HttpRequest) -> ApiResult<Option<String>> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .map(str::trim)
        // `to_str` lets a tab through; the key is printable ASCII, as documented.
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| (b' '..=b'~').contains(&b))
        })
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
            )
        })?;
    Ok(Some(text.to_owned()))
}

fn parse_create_request(body: &[u8]) -> ApiResult<(CreateOrderRequest, Vec<u8>)> {
    let (request, canonical) = parse_object::<CreateOrderRequest>(body)?;
    // Keys sorted: two bodies that differ only in key order or whitespace are the same
    // request for Idempotency-Key purposes.
    Ok((request, digest(&SHA256, canonical.as_bytes()).as_ref().to_vec()))
}

async fn create_order(
    state: web::Data<AppState>,
    caller: ApiCaller,
    req: HttpRequest,
    payload: web::Payload,
) -> ApiResult<HttpResponse> {
    let key = idempotency_key(&req)?;
    let body = read_body(&req, payload).await?;
    let (request, fingerprint) = parse_create_request(&body)?;
    // Before anything is claimed, stored or asked of a provider: a webhook URL aimed at
    // an internal address leaves nothing behind.
    if let Some(url) = request.notify_url.as_deref() {
        check_destination(url, state.settings.webhooks.allow_private)
            .await
            .map_err(|message| ApiError::field("notify_url", message))?;
    }
    let idem = key.map(|key| Idempotency {
        api_key_id: caller.key_id,
        key,
        request_hash: fingerprint,
    });
    let (order, status) = match order_service::create(&state, request, idem).await? {
        Created::New(o) => (o, actix_web::http::StatusCode::CREATED),
        Created::Replayed(o) => (o, actix_web::http::StatusCode::CREATED),
    };
    tracing::info!(order_id = %order.id, api_key = %caller.name, "order created");
    Ok(HttpResponse::build(status)
        .insert_header((header::LOCATION, format!("/api/v1/orders/{}", order.id)))
        .json(order.view(state.public_url())))
}

pub(super) fn path_id(raw: &str) -> ApiResult<OrderId> {
    OrderId::parse(raw).map_err(|_| ApiError::new(ErrorCode::OrderNotFound, "no order with that id"))
}

async fn get_order(
    state: web::Data<AppState>,
    _caller: ApiCaller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path_id(&path)?;
    let order = state
        .db
        .read(move |c| orders::find_by_id(c, &id))
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::OrderNotFound, "no order with that id"))?;
    Ok(HttpResponse::Ok().json(order.view(state.public_url())))
}

#[derive(Serialize)]
struct Page<T> {
    data: Vec<T>,
    has_more: bool,
    next_cursor: Option<String>,
}

const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 100;

/// The list's query parameters: a name outside this list is refused before the match
/// below sees it, so a parameter cannot be read without being listed (and documented).
const LIST_QUERY: &[&str] = &["status", "provider", "out_trade_no", "limit", "cursor"];

fn parse_list_query(query: &str) -> ApiResult<(OrderFilter, Option<Cursor>, u32)> {
    let mut filter = OrderFilter::default();
    let mut cursor = None;
    let mut limit = DEFAULT_LIMIT;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let unknown = || {
            ApiError::field(
                name.clone().into_owned(),
                format!("unknown query parameter; known: {}", LIST_QUERY.join(", ")),
            )
        };
        let Some(&known) = LIST_QUERY.iter().find(|k| **k == name) else {
            return Err(unknown());
        };
        match known {
            "status" => {
                filter.status = Some(
                    value
                        .parse::<OrderStatus>()
                        .map_err(|e| ApiError::field("status", e.to_string()))?,
                )
            }
            "provider" => {
                filter.provider = Some(
                    value
                        .parse::<ProviderKind>()
                        .map_err(|e| ApiError::field("provider", e))?,
                )
            }
            "out_trade_no" => filter.out_trade_no = Some(value.into_owned()),
            "limit" => {
                limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::field("limit", format!("must be a whole number from 1 to {MAX_LIMIT}"))
                    })?
            }
            "cursor" => {
                cursor = Some(Cursor::decode(&value).ok_or_else(|| {
                    ApiError::field(
                        "cursor",
                        "is not a cursor returned by this API (use next_cursor as given)",
                    )
                })?)
            }
            _ => return Err(unknown()),
        }
    }
    Ok((filter, cursor, limit))
}

async fn list_orders(
    state: web::Data<AppState>,
    _caller: ApiCaller,
    req: HttpRequest,
) -> ApiResult<HttpResponse> {
    let (filter, cursor, limit) = parse_list_query(req.query_string())?;
    let mut rows = state
        .db
        .read(move |c| orders::list(c, &filter, cursor.as_ref(), limit + 1))
        .await?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if has_more {
        rows.last().map(|o| Cursor::after(o).encode())
    } else {
        None
    };
    let public_url = state.public_url();
    let data: Vec<OrderView> = rows.iter().map(|o| o.view(public_url)).collect();
    Ok(HttpResponse::Ok().json(Page {
        data,
        has_more,
        next_cursor,
    }))
}

async fn close_order(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path_id(&path)?;
    let cause = Cause {
        source: TransitionSource::Api,
        actor: caller.name,
        detail: None,
        notification_id: None,
    };
    let order = order_service::close(&state, &id, cause, state.now()).await?;
    Ok(HttpResponse::Ok().json(order.view(state.public_url())))
}

async fn list_events(
    state: web::Data<AppState>,
    _caller: ApiCaller,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = path_id(&path)?;
    let (exists, data) = state
        .db
        .read(move |c| {
            Ok((
                orders::find_by_id(c, &id)?.is_some(),
                history::list_for_order(c, &id)?,
            ))
        })
        .await?;
    if !exists {
        return Err(ApiError::new(ErrorCode::OrderNotFound, "no order with that id"));
    }
    Ok(HttpResponse::Ok().json(List::<HistoryEntry> { data }))
}
