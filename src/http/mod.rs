//! Every HTTP surface, mounted by one `configure` that production and tests share.

pub mod api;
pub mod assets;
pub mod checkout;
pub mod i18n;
pub mod notify;
pub mod ops;
pub mod qr;

use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpResponse};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(ops::configure)
        .configure(assets::configure)
        .configure(checkout::configure)
        .configure(notify::configure)
        .configure(crate::providers::sandbox::configure)
        .service(web::scope("/api").configure(api::configure));
}

/// Headers every response carries.
pub fn default_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
}

pub async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("404 Not Found\n")
}
