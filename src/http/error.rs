//! HTTP-facing errors. The JSON API answers `ApiError`: each `ErrorCode` has one status
//! and one stable snake_case code. Pages answer `PageError`: one HTML page per status,
//! in the visitor's language. Clients get a plain sentence, logs get the whole chain.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use askama::Template;
use serde::Serialize;

use super::assets::AssetUrls;
use super::i18n::{self, Lang, Texts};
use super::PAGE_CSP;
use crate::db::DbError;
use crate::domain::ids::random_base62;
use crate::domain::order::FieldError;
use crate::http::telemetry::current_request_id;
use crate::providers::ProviderError;
use crate::service::orders::{CloseError, CreateError};

/// Declares `ErrorCode` with its status and wire code from one list, so `ALL` cannot
/// miss a variant: the OpenAPI drift test checks the document against `ALL`.
macro_rules! error_codes {
    ($($variant:ident => $status:ident, $code:literal;)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The one table of codes and statuses.
            pub fn parts(self) -> (StatusCode, &'static str) {
                match self {
                    $(ErrorCode::$variant => (StatusCode::$status, $code),)*
                }
            }
        }
    };
}

error_codes! {
    MalformedJson => BAD_REQUEST, "malformed_json";
    InvalidRequest => BAD_REQUEST, "invalid_request";
    Unauthorized => UNAUTHORIZED, "unauthorized";
    NotFound => NOT_FOUND, "not_found";
    OrderNotFound => NOT_FOUND, "order_not_found";
    MethodNotAllowed => METHOD_NOT_ALLOWED, "method_not_allowed";
    OutTradeNoTaken => CONFLICT, "out_trade_no_taken";
    IdempotencyKeyConflict => CONFLICT, "idempotency_key_conflict";
    IdempotencyKeyInProgress => CONFLICT, "idempotency_key_in_progress";
    IllegalTransition => CONFLICT, "illegal_transition";
    OrderPaid => CONFLICT, "order_paid";
    ProviderAmountMismatch => CONFLICT, "provider_amount_mismatch";
    RefundExceedsBalance => CONFLICT, "refund_exceeds_balance";
    RefundIdConflict => CONFLICT, "refund_id_conflict";
    RequestTimeout => REQUEST_TIMEOUT, "request_timeout";
    PayloadTooLarge => PAYLOAD_TOO_LARGE, "payload_too_large";
    RateLimited => TOO_MANY_REQUESTS, "rate_limited";
    UnsupportedMediaType => UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type";
    InvalidField => UNPROCESSABLE_ENTITY, "invalid_field";
    ProviderRejected => BAD_GATEWAY, "provider_rejected";
    ProviderUnavailable => SERVICE_UNAVAILABLE, "provider_unavailable";
    DatabaseUnavailable => SERVICE_UNAVAILABLE, "database_unavailable";
    InternalError => INTERNAL_SERVER_ERROR, "internal_error";
}

/// An error answered as `{"error": {"code", "message", "field"?}}`.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for `Retry-After`, for `RateLimited`.
    pub retry_after: Option<u64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// A `429` that tells the client when to come back.
    pub fn rate_limited(retry_after: u64, message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(ErrorCode::RateLimited, message)
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            code: ErrorCode::InvalidField,
            message: message.into(),
            field: Some(field.into()),
            retry_after: None,
        }
    }

    pub fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error_chain(error), "internal error");
        ApiError::new(
            ErrorCode::InternalError,
            "an internal error occurred; it has been logged",
        )
    }
}

/// Whether `error` or one of its causes is the database out of reach or busy
/// (`DbError::Unavailable` or `Busy`): not a fault of kassa's, and the same request may
/// succeed in a moment. The pages answer it `503`, logged at warn, instead of a `500`.
pub fn database_unreachable(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut link = Some(error);
    while let Some(e) = link {
        if matches!(db_error_in(e), Some(DbError::Unavailable(_) | DbError::Busy(_))) {
            return true;
        }
        link = match e.downcast_ref::<std::io::Error>() {
            // `io::Error::other(e)` hands on `e`'s source, never `e` itself.
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

/// The `DbError` that `e` is, or that a service error wraps. The service errors wrap it
/// `#[error(transparent)]`, which hands on its source but never the `DbError` itself,
/// so a walk over `source()` alone would not meet it.
fn db_error_in<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e DbError> {
    use crate::service::{admin, export, orders, refunds, staff};
    if let Some(db) = e.downcast_ref::<DbError>() {
        return Some(db);
    }
    if let Some(staff::StaffError::Admin(admin::AdminError::Db(db))) = e.downcast_ref() {
        return Some(db);
    }
    if let Some(admin::AdminError::Db(db)) = e.downcast_ref() {
        return Some(db);
    }
    if let Some(export::ExportError::Db(db)) = e.downcast_ref() {
        return Some(db);
    }
    if let Some(refunds::RefundError::Db(db)) = e.downcast_ref() {
        return Some(db);
    }
    if let Some(orders::CreateError::Db(db)) = e.downcast_ref() {
        return Some(db);
    }
    if let Some(orders::CloseError::Db(db)) = e.downcast_ref() {
        return Some(db);
    }
    if let Some(orders::QueryError::Db(db)) = e.downcast_ref() {
        return Some(db);
    }
    None
}

/// An error and all its causes on one line, for logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.parts().1, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code) = self.code.parts();
        let mut response = HttpResponse::build(status);
        if self.code == ErrorCode::Unauthorized {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        response.json(Body {
            error: Inner {
                code,
                message: &self.message,
                field: self.field.as_deref(),
            },
        })
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match &e {
            // Not a fault of kassa's to log as one: the database (PostgreSQL) is out of
            // reach, or every connection is busy, or the transaction lost a lock race.
            // Nothing was changed and the same request may succeed when sent again.
            DbError::Unavailable(_) | DbError::Busy(_) => {
                tracing::warn!(error = %error_chain(&e), "database unavailable; request refused");
                ApiError::new(
                    ErrorCode::DatabaseUnavailable,
                    "the database is unavailable or busy; nothing was changed, try again",
                )
            }
            _ => ApiError::internal(&e),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::field(e.field, e.message)
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        tracing::warn!(error = %e, "provider call failed");
        match &e {
            ProviderError::Rejected { provider, code, message } => ApiError::new(
                ErrorCode::ProviderRejected,
                format!("{provider} refused the request: {code}: {message}"),
            ),
            ProviderError::Unknown { provider, reason } => ApiError::new(
                ErrorCode::ProviderUnavailable,
                format!("{provider} could not be reached or gave no definite answer ({reason}); nothing was changed, try again"),
            ),
        }
    }
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Invalid(f) => f.into(),
            CreateError::OutTradeNoTaken(_) => ApiError::new(ErrorCode::OutTradeNoTaken, e.to_string()),
            CreateError::IdempotencyConflict => {
                ApiError::new(ErrorCode::IdempotencyKeyConflict, e.to_string())
            }
            CreateError::IdempotencyInProgress => {
                ApiError::new(ErrorCode::IdempotencyKeyInProgress, e.to_string())
            }
            CreateError::Provider(p) => p.into(),
            CreateError::Db(d) => d.into(),
        }
    }
}

impl From<CloseError> for ApiError {
    fn from(e: CloseError) -> Self {
        match e {
            CloseError::NotFound => ApiError::new(ErrorCode::OrderNotFound, "no order with that id"),
            CloseError::Illegal(_) => ApiError::new(ErrorCode::IllegalTransition, e.to_string()),
            CloseError::TurnedOutPaid(_) => ApiError::new(ErrorCode::OrderPaid, e.to_string()),
            CloseError::AmountMismatch { .. } => {
                ApiError::new(ErrorCode::ProviderAmountMismatch, e.to_string())
            }
            CloseError::Provider(p) => p.into(),
            CloseError::Db(d) => d.into(),
        }
    }
}

/// Seconds a page answered `503` (the database out of reach) asks the visitor to wait.
pub const UNAVAILABLE_RETRY_AFTER: u64 = 5;

/// What a 404 page says was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Page,
    Order,
    SandboxPayment,
}

#[derive(Debug)]
enum PageErrorKind {
    NotFound(Missing),
    /// A form value the page cannot take; the message says which and why.
    Invalid(String),
    /// Logged with its whole chain under this id, which the page shows.
    Internal {
        request_id: String,
    },
    /// The database cannot be reached or is busy: try again in a moment.
    Unavailable,
}

/// An error answered as an HTML page (`templates/errors/`), with the pages' security
/// headers. Checkout and the sandbox wallet answer with it, and so does any path that
/// matches no route when a browser asks.
#[derive(Debug)]
pub struct PageError {
    kind: PageErrorKind,
    lang: Lang,
}

#[derive(Template)]
#[template(path = "errors/404.html")]
struct NotFoundPage {
    lang: Lang,
    assets: AssetUrls,
    title: &'static str,
    body: &'static str,
}

#[derive(Template)]
#[template(path = "errors/422.html")]
struct InvalidPage<'a> {
    lang: Lang,
    t: &'static Texts,
    assets: AssetUrls,
    message: &'a str,
}

#[derive(Template)]
#[template(path = "errors/503.html")]
struct UnavailablePage {
    lang: Lang,
    t: &'static Texts,
    assets: AssetUrls,
}

#[derive(Template)]
#[template(path = "errors/500.html")]
struct ServerErrorPage<'a> {
    lang: Lang,
    t: &'static Texts,
    assets: AssetUrls,
    request_id: &'a str,
}

impl PageError {
    pub fn not_found(what: Missing) -> PageError {
        PageError {
            kind: PageErrorKind::NotFound(what),
            lang: Lang::default(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> PageError {
        PageError {
            kind: PageErrorKind::Invalid(message.into()),
            lang: Lang::default(),
        }
    }

    /// Logs `error` and its causes under the request's id (its `x-request-id`), which
    /// the page shows so a visitor's report can be matched to the log lines. The
    /// database out of reach is no bug of kassa's: a warning, and a `503` page that asks
    /// the visitor to try again.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> PageError {
        let request_id = current_request_id().unwrap_or_else(|| random_base62(12));
        let kind = if database_unreachable(error) {
            tracing::warn!(%request_id, error = %error_chain(error), "database unavailable; page refused");
            PageErrorKind::Unavailable
        } else {
            tracing::error!(%request_id, error = %error_chain(error), "page failed");
            PageErrorKind::Internal { request_id }
        };
        PageError {
            kind,
            lang: Lang::default(),
        }
    }

    /// The page in the language `req` asks for.
    pub fn for_request(self, req: &HttpRequest) -> PageError {
        PageError {
            lang: i18n::negotiate(req).0,
            ..self
        }
    }

    fn render(&self) -> Result<String, askama::Error> {
        let (lang, t, assets) = (self.lang, self.lang.texts(), AssetUrls::get());
        match &self.kind {
            PageErrorKind::NotFound(what) => {
                let (title, body) = match what {
                    Missing::Page => (t.page_not_found_title, t.page_not_found_body),
                    Missing::Order => (t.order_not_found_title, t.order_not_found_body),
                    Missing::SandboxPayment => (
                        t.sandbox_payment_not_found_title,
                        t.sandbox_payment_not_found_body,
                    ),
                };
                NotFoundPage {
                    lang,
                    assets,
                    title,
                    body,
                }
                .render()
            }
            PageErrorKind::Invalid(message) => InvalidPage {
                lang,
                t,
                assets,
                message,
            }
            .render(),
            PageErrorKind::Internal { request_id } => ServerErrorPage {
                lang,
                t,
                assets,
                request_id,
            }
            .render(),
            PageErrorKind::Unavailable => UnavailablePage { lang, t, assets }.render(),
        }
    }
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            PageErrorKind::NotFound(what) => write!(f, "not found: {what:?}"),
            PageErrorKind::Invalid(message) => write!(f, "invalid: {message}"),
            PageErrorKind::Internal { request_id } => write!(f, "internal error {request_id}"),
            PageErrorKind::Unavailable => f.write_str("database unavailable"),
        }
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self.kind {
            PageErrorKind::NotFound(_) => StatusCode::NOT_FOUND,
            PageErrorKind::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            PageErrorKind::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            PageErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::CONTENT_SECURITY_POLICY, PAGE_CSP))
            .insert_header((header::X_FRAME_OPTIONS, "DENY"))
            .insert_header((header::CONTENT_LANGUAGE, self.lang.tag()));
        if let PageErrorKind::Unavailable = self.kind {
            response.insert_header((header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER.to_string()));
        }
        match self.render() {
            Ok(html) => response.content_type("text/html; charset=utf-8").body(html),
            Err(e) => {
                tracing::error!(error = %e, "error page failed to render");
                response
                    .content_type("text/plain; charset=utf-8")
                    .body(format!("{}\n", self.status_code()))
            }
        }
    }
}
