//! Everything a request handler or worker needs, in one value.

use std::sync::Arc;

use crate::config::Settings;
use crate::db::Database;
use crate::domain::Clock;
use crate::providers::Providers;

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub settings: Arc<Settings>,
    pub providers: Providers,
    pub clock: Arc<dyn Clock>,
}

impl AppState {
    pub fn public_url(&self) -> &str {
        &self.settings.server.public_url
    }
}
