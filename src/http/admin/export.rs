//! "Export CSV" (`/admin/orders.csv`): exactly the list's current filter and order,
//! every row, streamed as it is read.

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;

use super::orders::ListParams;
use super::{render, AdminError, Base, SignedIn};
use crate::domain::admin::Permission;
use crate::http::state::AppState;
use crate::service::export::orders_csv;

#[derive(Template)]
#[template(path = "admin/error.html")]
struct FilterProblem<'a> {
    base: Base,
    title: &'a str,
    message: &'a str,
    reference: Option<&'a str>,
    sign_in_link: bool,
}

pub async fn export_orders(
    state: web::Data<AppState>,
    req: HttpRequest,
    staff: SignedIn,
) -> Result<HttpResponse, AdminError> {
    let base = Base::new(&req, Some(&staff.0));
    staff.require(Permission::Read, base.lang)?;
    let f = ListParams::parse(req.query_string());
    let merchant = &state.settings.merchant;
    let query = match f.query(merchant.timezone, merchant.currency, base.t) {
        Ok(q) => q,
        Err(problems) => {
            let message = problems.join(" ");
            let page = FilterProblem {
                title: base.t.filter_problem,
                message: &message,
                reference: None,
                sign_in_link: false,
                base,
            };
            return render(
                &page,
                &page.base,
                actix_web::http::StatusCode::UNPROCESSABLE_ENTITY,
            );
        }
    };
    tracing::info!(user = %staff.0.username, "orders exported as CSV");
    let chunks = orders_csv(&state, query, merchant.timezone);
    let stream = futures_util::stream::unfold(chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?;
        Some((chunk.map(Bytes::from).map_err(std::io::Error::other), chunks))
    });
    let file = format!(
        "orders-{}.csv",
        state
            .now()
            .with_timezone(&merchant.timezone)
            .format("%Y%m%d-%H%M%S")
    );
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ))
        .streaming(stream))
}
