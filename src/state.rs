//! Everything a request handler or worker needs, in one value.

use std::sync::Arc;

use crate::config::Settings;
use crate::db::Database;
use crate::domain::Clock;
use crate::providers::keys::VerifyingKey;
use crate::providers::Providers;

/// What checking an Alipay notification needs: whose it must be and who signs it.
pub struct AlipayAccount {
    pub app_id: String,
    pub seller_id: Option<String>,
    pub alipay_key: VerifyingKey,
}

#[derive(Clone)]
pub struct AppState {
    pub db: Database,
    pub settings: Arc<Settings>,
    pub providers: Providers,
    pub clock: Arc<dyn Clock>,
    pub alipay: Option<Arc<AlipayAccount>>,
    pub sandbox: Option<Arc<crate::providers::sandbox::Sandbox>>,
    /// Wakes checkout pages when an order changes.
    pub signals: crate::live::OrderSignals,
}

impl AppState {
    pub fn public_url(&self) -> &str {
        &self.settings.server.public_url
    }
}
