//! The built-in sandbox: a simulated payment platform mounted into the same server
//! under `/sandbox/`, with its own state and tables. It speaks Alipay's real protocol
//! (signed requests, signed responses, signed notifications with Alipay's retry
//! schedule) and WeChat Pay's API v3 (signed answers, encrypted and signed
//! notifications on WeChat's schedule) using the providers' signing code, so kassa's own
//! clients talk to it over real HTTP exactly as to the platforms. It is mounted only
//! when it is on.

pub mod access;
pub mod alipay;
pub mod faults;
pub mod keys;
pub mod wallet;
pub mod wechat;

use std::sync::Arc;

use actix_web::web;
use tokio::sync::Notify;

use self::keys::SandboxKeys;
use crate::core::Core;

/// The app id of the simulated merchant account.
pub const SANDBOX_APP_ID: &str = "2021000000000000";
/// The simulated seller (merchant's Alipay user id).
pub const SANDBOX_SELLER_ID: &str = "2088000000000000";

/// The simulated platform's state; its handlers get it as `web::Data<Sandbox>`.
pub struct Sandbox {
    /// The server's database and clock: the sandbox keeps its tables beside kassa's.
    pub core: Core,
    pub keys: SandboxKeys,
    /// Base of wallet URLs in QR codes: what a phone opens.
    pub public_url: String,
    pub merchant_name: String,
    /// Divides the platform's retry delays, for testing.
    pub time_scale: u32,
    pub http: reqwest::Client,
    /// Wakes the notifier when a delivery is queued.
    pub wake: Arc<Notify>,
    /// Signs the wallet forms' anti-forgery tokens (from the sandbox token).
    pub csrf_key: ring::hmac::Key,
}

impl Sandbox {
    pub fn new(core: Core, keys: SandboxKeys) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(15))
            // Shops' servers close idle keep-alive connections (actix after 5 s): a
            // notification sent on one they are closing is lost for that attempt. Drop
            // idle connections well before that instead of racing the shop's close.
            .pool_idle_timeout(std::time::Duration::from_secs(1))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("Mozilla/4.0 (kassa sandbox; Alipay notification simulator)")
            .build()
            .map_err(|e| e.to_string())?;
        let settings = core.settings.clone();
        let csrf_key = access::csrf_key(&keys.token);
        Ok(Sandbox {
            core,
            keys,
            public_url: settings.server.public_url.clone(),
            merchant_name: settings.merchant.name.clone(),
            time_scale: settings.sandbox.time_scale,
            http,
            wake: Arc::new(Notify::new()),
            csrf_key,
        })
    }
}

/// Mounts the sandbox's routes; the app must hold a `web::Data<Sandbox>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/sandbox/alipay/gateway.do")
            .route(web::post().to(alipay::gateway::handle))
            .route(web::get().to(alipay::gateway::handle)),
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
    .service(
        web::resource("/sandbox/wechat/faults")
            .route(web::get().to(faults::get_wechat_global))
            .route(web::post().to(faults::set_wechat_global)),
    )
    .service(
        web::resource("/sandbox/wechat/faults/{out_trade_no}")
            .route(web::get().to(faults::get_trade))
            .route(web::post().to(faults::set_trade)),
    )
    .service(
        web::resource("/sandbox/wechat/v3/{tail:.*}")
            .route(web::post().to(wechat::gateway::handle))
            .route(web::get().to(wechat::gateway::handle)),
    )
    .service(web::resource("/sandbox/wallet/{token}").route(web::get().to(wallet::show)))
    .service(web::resource("/sandbox/wallet/{token}/pay").route(web::post().to(wallet::pay)))
    .service(web::resource("/sandbox/wallet/{token}/cancel").route(web::post().to(wallet::cancel)))
    .service(web::resource("/sandbox/wallet/{token}/faults").route(web::post().to(wallet::set_faults)));
}
