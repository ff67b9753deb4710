//! Operator endpoints.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::state::AppState;
use crate::domain::admin::same_secret;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/healthz").route(web::get().to(healthz)))
        .service(web::resource("/metrics").route(web::get().to(metrics)));
}

/// 200 when the database answers, 503 otherwise.
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.db.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({"status": "ok"})),
        Err(e) => {
            tracing::error!(error = %e, "health check failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({"status": "unavailable", "reason": "database unreachable"}))
        }
    }
}

/// Prometheus metrics in the OpenMetrics text format. With `[server] metrics_token`
/// set, only for `Authorization: Bearer <token>`; open otherwise (bind to a private
/// address or let the proxy guard it).
async fn metrics(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let token = state.settings.server.metrics_token.expose();
    if !token.is_empty() {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(super::bearer_token)
            .unwrap_or("");
        if !same_secret(given, token) {
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="kassa metrics""#))
                .content_type("text/plain; charset=utf-8")
                .body("401 Unauthorized: send Authorization: Bearer <server.metrics_token>\n");
        }
    }
    let text = crate::service::metrics::render(&state).await;
    HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(text)
}
