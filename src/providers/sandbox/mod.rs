//! The built-in sandbox: a simulator of the payment platform's server side, served by
//! the same binary under `/sandbox/`. It speaks Alipay's real protocol (signed
//! requests, signed responses, signed notifications with Alipay's retry schedule), so
//! kassa's own Alipay client talks to it over real HTTP exactly as to Alipay. Nothing
//! here is used when a real provider is configured, unless the sandbox is turned on.

pub mod faults;
pub mod gateway;
pub mod keys;
pub mod notifier;
pub mod wallet;

use std::sync::Arc;

use actix_web::web;
use tokio::sync::Notify;

use self::keys::SandboxKeys;

/// The app id of the simulated merchant account.
pub const SANDBOX_APP_ID: &str = "2021000000000000";
/// The simulated seller (merchant's Alipay user id).
pub const SANDBOX_SELLER_ID: &str = "2088000000000000";

pub struct Sandbox {
    pub keys: SandboxKeys,
    /// Base of wallet URLs in QR codes: what a phone opens.
    pub public_url: String,
    pub merchant_name: String,
    /// Divides the platform's retry delays, for testing.
    pub time_scale: u32,
    pub http: reqwest::Client,
    /// Wakes the notifier when a delivery is queued.
    pub wake: Arc<Notify>,
}

impl Sandbox {
    pub fn new(
        keys: SandboxKeys,
        public_url: String,
        merchant_name: String,
        time_scale: u32,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("Mozilla/4.0 (kassa sandbox; Alipay notification simulator)")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Sandbox {
            keys,
            public_url,
            merchant_name,
            time_scale,
            http,
            wake: Arc::new(Notify::new()),
        })
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/sandbox/alipay/gateway.do")
            .route(web::post().to(gateway::handle))
            .route(web::get().to(gateway::handle)),
    )
    .service(
        web::resource("/sandbox/alipay/faults")
            .route(web::get().to(faults::get_global))
            .route(web::post().to(faults::set_global)),
    )
    .service(
        web::resource("/sandbox/alipay/faults/{out_trade_no}")
            .route(web::get().to(faults::get_trade))
            .route(web::post().to(faults::set_trade)),
    )
    .route("/sandbox/wallet/{token}", web::get().to(wallet::show))
    .route("/sandbox/wallet/{token}/pay", web::post().to(wallet::pay))
    .route("/sandbox/wallet/{token}/cancel", web::post().to(wallet::cancel))
    .route(
        "/sandbox/wallet/{token}/faults",
        web::post().to(wallet::set_faults),
    );
}
