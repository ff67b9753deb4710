//! What every HTTP handler gets (one `web::Data<AppState>`): the core, plus what only
//! the pages need.

use std::ops::Deref;
use std::sync::Arc;

use crate::core::Core;
use crate::http::api::limits::ApiLimits;
use crate::service::overview::OverviewCache;

#[derive(Clone)]
pub struct AppState {
    pub core: Core,
    /// Payments go to the built-in sandbox: checkout pages say no real money moves.
    pub sandbox_payments: bool,
    /// The dashboard overview's figures, kept for a few seconds.
    pub overview: Arc<OverviewCache>,
    /// The merchant API's rate limits, shared by every worker.
    pub api_limits: Arc<ApiLimits>,
    /// The limit on platform notifications that fail verification.
    pub notify_limit: Arc<crate::http::notify::limit::RejectedLimit>,
    /// Turns true when a graceful stop begins: open event streams end then, instead of
    /// holding the stop for its whole `[server] shutdown_timeout`.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

impl Deref for AppState {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}
