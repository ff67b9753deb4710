//! Builds the application: opens the database, binds the listener (port 0 works and
//! the real port is reported), mounts every surface and starts the workers.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::config::{SandboxMode, Settings, Source};
use crate::db::{Database, DbError};
use crate::domain::{Clock, SystemClock};
use crate::jobs::expiry::ExpiryWorker;
use crate::providers::alipay::client::{self, AlipayClient};
use crate::providers::alipay::AlipayProvider;
use crate::providers::keys::{SigningKey, VerifyingKey};
use crate::providers::sandbox::{self, Sandbox, SANDBOX_APP_ID};
use crate::providers::Providers;
use crate::state::{AlipayAccount, AppState};
use crate::webhooks::dispatcher::Dispatcher;

const WEBHOOK_LOOPS: usize = 4;

/// `auto`: on when no real provider is configured.
pub fn sandbox_enabled(settings: &Settings) -> bool {
    match settings.sandbox.enabled {
        SandboxMode::On => true,
        SandboxMode::Off => false,
        SandboxMode::Auto => !settings.alipay.is_configured() && !settings.wechat.is_configured(),
    }
}

type Built = (Providers, Option<Arc<AlipayAccount>>);

/// The configured Alipay account, or kassa's client of the sandbox when Alipay is not
/// configured and the sandbox is on. The sandbox is reached over real HTTP.
fn providers_from_settings(
    settings: &Settings,
    sandbox: Option<&Sandbox>,
    local: SocketAddr,
    clock: Arc<dyn Clock>,
) -> Result<Built, StartupError> {
    let problem = |key: &str, e: &dyn std::fmt::Display| StartupError::Provider(format!("{key}: {e}"));
    let (app_id, gateway, app_key, alipay_key, seller_id) = if settings.alipay.is_configured() {
        let app_path = settings.alipay.app_private_key_file.clone().unwrap_or_default();
        let ali_path = settings.alipay.alipay_public_key_file.clone().unwrap_or_default();
        (
            settings.alipay.app_id.clone(),
            settings.alipay.gateway.clone(),
            SigningKey::from_file(&app_path).map_err(|e| problem("alipay.app_private_key_file", &e))?,
            VerifyingKey::from_file(&ali_path).map_err(|e| problem("alipay.alipay_public_key_file", &e))?,
            settings.alipay.seller_id.clone(),
        )
    } else if let Some(sandbox) = sandbox {
        (
            SANDBOX_APP_ID.to_owned(),
            format!("http://{local}/sandbox/alipay/gateway.do"),
            SigningKey::from_file(&sandbox.keys.app_private_path())
                .map_err(|e| problem("sandbox app key", &e))?,
            VerifyingKey::from_file(&sandbox.keys.platform_public_path())
                .map_err(|e| problem("sandbox platform key", &e))?,
            None,
        )
    } else {
        return Ok((Providers::none(), None));
    };
    let account = Arc::new(AlipayAccount {
        app_id: app_id.clone(),
        seller_id,
        alipay_key: alipay_key.clone(),
    });
    let client = AlipayClient::new(app_id, gateway, app_key, alipay_key, client::TIMEOUT)
        .map_err(StartupError::Provider)?;
    let providers = Providers::none().with(Arc::new(AlipayProvider { client, clock }));
    Ok((providers, Some(account)))
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Provider(String),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

/// Where the payment providers come from.
pub enum ProviderSetup {
    /// From the settings: the configured Alipay account, or the built-in sandbox.
    FromSettings,
    /// These, as they are (tests use a test double).
    Given(Providers),
}

/// What to start besides the settings.
pub struct Options {
    pub providers: ProviderSetup,
    pub clock: Arc<dyn Clock>,
    /// Tests turn the background loops off and drive `try_run_once` themselves.
    pub run_jobs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            providers: ProviderSetup::FromSettings,
            clock: Arc::new(SystemClock),
            run_jobs: true,
        }
    }
}

pub struct Application {
    address: SocketAddr,
    server: Server,
    state: AppState,
    run_jobs: bool,
}

impl Application {
    pub fn build(settings: Settings, options: Options) -> Result<Application, StartupError> {
        let bind = settings.server.bind;
        let listener = TcpListener::bind(bind).map_err(|e| StartupError::Bind {
            addr: bind,
            reason: e.to_string(),
        })?;
        Application::build_on(settings, options, listener)
    }

    /// Like `build`, on a listener the caller has bound (instead of `server.bind`): a
    /// restart in the tests hands the old address over this way, so that no other
    /// process can take the port between the old server's stop and the new start.
    pub fn build_on(
        mut settings: Settings,
        options: Options,
        listener: TcpListener,
    ) -> Result<Application, StartupError> {
        let db = Database::open(&settings.database_path())?;
        let bind = settings.server.bind;
        let address = listener.local_addr().map_err(|e| StartupError::Bind {
            addr: bind,
            reason: e.to_string(),
        })?;
        // How kassa reaches itself (the sandbox gateway), whatever the public URL is.
        let local = if address.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], address.port()))
        } else {
            address
        };
        if settings.source_of("server.public_url") == Some(&Source::Default) {
            // 0.0.0.0 is no address to send a customer or a platform to.
            settings.server.public_url = format!("http://{local}");
            if address.ip().is_unspecified() {
                tracing::warn!(
                    "listening on {address} but server.public_url is not set: checkout links and notify URLs use {}; set public_url to the address customers and payment platforms reach",
                    settings.server.public_url
                );
            }
        }
        let sandbox = if sandbox_enabled(&settings) {
            let keys = sandbox::keys::ensure(&settings.server.data_dir)
                .map_err(|e| StartupError::Provider(format!("sandbox keys: {e}")))?;
            let sandbox = Sandbox::new(
                keys,
                settings.server.public_url.clone(),
                settings.merchant.name.clone(),
                settings.sandbox.time_scale,
            )
            .map_err(StartupError::Provider)?;
            Some(Arc::new(sandbox))
        } else {
            None
        };
        let (providers, alipay) = match options.providers {
            ProviderSetup::Given(p) => (p, None),
            ProviderSetup::FromSettings => {
                providers_from_settings(&settings, sandbox.as_deref(), local, options.clock.clone())?
            }
        };
        crate::webhooks::ensure_secret_blocking(&db, &settings, options.clock.now())?;
        let state = AppState {
            db,
            settings: Arc::new(settings),
            providers,
            clock: options.clock,
            alipay,
            sandbox,
            signals: Default::default(),
        };
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .wrap(crate::http::default_headers())
                .wrap(from_fn(crate::telemetry::log_request))
                .configure(crate::http::configure)
                .default_service(web::to(crate::http::not_found))
        })
        .workers(2)
        .listen(listener)
        .map_err(|e| StartupError::Bind {
            addr: bind,
            reason: e.to_string(),
        })?
        .run();
        Ok(Application {
            address,
            server,
            state,
            run_jobs: options.run_jobs,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops the server from outside, as SIGTERM does (`stop(true)` finishes requests
    /// in flight); `run_until_stopped` then returns. A restart in the same process needs
    /// this: the old server, its workers and its database writer must be gone first.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server stops (Ctrl-C / SIGTERM). Workers end with it.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let mut workers = Vec::new();
        if self.run_jobs {
            let expiry = ExpiryWorker::new(self.state.clone());
            workers.push(tokio::spawn(expiry.run()));
            workers.push(tokio::spawn(crate::jobs::checks::run(self.state.clone())));
            // Several loops, so one slow shop endpoint does not hold up the others; the
            // claim's lease keeps them from delivering a row twice.
            for _ in 0..WEBHOOK_LOOPS {
                match Dispatcher::new(self.state.clone()) {
                    Ok(d) => workers.push(tokio::spawn(d.run())),
                    Err(e) => tracing::error!(error = %e, "cannot start the webhook dispatcher"),
                }
            }
            if let Some(sandbox) = self.state.sandbox.clone() {
                workers.push(tokio::spawn(sandbox::notifier::run(self.state.clone(), sandbox)));
            }
        }
        let result = self.server.await;
        for worker in &workers {
            worker.abort();
        }
        // Aborting only asks; awaiting makes sure every worker (and its handle on the
        // database) is gone when this returns.
        for worker in workers {
            let _ = worker.await;
        }
        result
    }
}
