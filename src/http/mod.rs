//! Every HTTP surface of kassa itself, mounted by one `configure` that production and
//! tests share. (The sandbox mounts its own routes beside these when it is on.)

pub mod admin;
pub mod api;
pub mod assets;
pub mod checkout;
pub mod error;
pub mod i18n;
pub mod notify;
pub mod ops;
pub mod qr;
pub mod state;
pub mod telemetry;

use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use self::error::{Missing, PageError};

/// Pages allow only their own scripts and styles, and no framing.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(ops::configure)
        .configure(assets::configure)
        .configure(checkout::configure)
        .configure(notify::configure)
        .configure(admin::configure)
        .service(web::scope("/api").configure(api::configure));
}

/// Headers every response carries.
pub fn default_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
}

/// The security headers of kassa's own pages.
pub fn page_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, PAGE_CSP))
        .add((header::X_FRAME_OPTIONS, "DENY"))
}

/// What a path that matches no route gets: the 404 page for a browser, a short line
/// for anything else. (The API has its own JSON answer.)
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        PageError::not_found(Missing::Page)
            .for_request(&req)
            .error_response()
    } else {
        HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("404 Not Found\n")
    }
}
