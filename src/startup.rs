//! Builds the application: opens the database, binds the listener (port 0 works and
//! the real port is reported), mounts every surface and runs the background jobs under
//! one supervisor.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};

use crate::config::{SandboxMode, Settings, Source};
use crate::core::{Core, InstanceId, PostCommit};
use crate::db::lock::ServerLock;
use crate::db::{outbox, Database, DbError, DbThreads};
use crate::domain::{Clock, SystemClock};
use crate::http::state::AppState;
use crate::jobs::expiry::ExpiryWorker;
use crate::jobs::supervisor::{Job, Supervisor};
use crate::jobs::{late_checks, refund_settlement};
use crate::providers::alipay::client::{self, AlipayClient};
use crate::providers::alipay::AlipayProvider;
use crate::providers::keys::{SigningKey, VerifyingKey};
use crate::providers::wechat::client::{self as wechat_client, WechatClient};
use crate::providers::wechat::{
    ApiV3Key, MerchantSigner, PlatformCertificate, PlatformKeys, PlatformPublicKey, WechatProvider,
};
use crate::providers::Providers;
use crate::sandbox::{self, Sandbox, SANDBOX_APP_ID};
use crate::service::admin::{ensure_first_admin_blocking, AdminError, FirstAdmin};
use crate::webhooks::dispatcher::Dispatcher;

const WEBHOOK_LOOPS: usize = 4;
/// actix's default, pinned because the slow-client defence rests on it: after an answer
/// to a request whose body was not read to the end (`slow_clients::HoldingBody`, the
/// 408 of a cut-off body) actix lingers this long for the client to read the answer,
/// then closes; without this timer (0) it would close at once and the answer could be
/// lost to a reset, and a long one would let a dripping client hold the connection
/// that much longer.
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// `auto`: on when no real provider is configured.
pub fn sandbox_enabled(settings: &Settings) -> bool {
    match settings.sandbox.enabled {
        SandboxMode::On => true,
        SandboxMode::Off => false,
        SandboxMode::Auto => !settings.alipay.is_configured() && !settings.wechat.is_configured(),
    }
}

/// The configured Alipay account, or kassa's client of the sandbox when Alipay is not
/// configured and the sandbox is on. The sandbox is reached over real HTTP.
fn providers_from_settings(
    settings: &Settings,
    sandbox_keys: Option<&sandbox::keys::SandboxKeys>,
    local: SocketAddr,
    clock: Arc<dyn Clock>,
    timeout: Duration,
) -> Result<Providers, StartupError> {
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
    } else if let Some(keys) = sandbox_keys {
        (
            SANDBOX_APP_ID.to_owned(),
            format!("http://{local}/sandbox/alipay/gateway.do"),
            SigningKey::from_pem(&keys.client.alipay_app_private)
                .map_err(|e| problem("sandbox app key", &e))?,
            keys.client.alipay_platform_public.clone(),
            None,
        )
    } else {
        return Ok(Providers::none());
    };
    let client = AlipayClient::new(app_id, gateway, app_key, alipay_key, timeout)
        .map_err(StartupError::Provider)?
        .with_seller_id(seller_id);
    Ok(Providers::none().with_alipay(Arc::new(AlipayProvider { client, clock })))
}

/// The configured WeChat Pay merchant, or kassa's client of the sandbox's WeChat side
/// when WeChat Pay is not configured and the sandbox is on.
fn wechat_from_settings(
    settings: &Settings,
    sandbox_keys: Option<&sandbox::keys::SandboxKeys>,
    local: SocketAddr,
    clock: Arc<dyn Clock>,
    timeout: Duration,
) -> Result<Option<Arc<WechatProvider>>, StartupError> {
    let problem = |key: &str, e: &dyn std::fmt::Display| StartupError::Provider(format!("{key}: {e}"));
    let w = &settings.wechat;
    let (mchid, appid, serial_no, merchant_key, platform, apiv3, api_base) = if w.is_configured() {
        let key_path = w.merchant_private_key_file.clone().unwrap_or_default();
        let merchant_key =
            SigningKey::from_file(&key_path).map_err(|e| problem("wechat.merchant_private_key_file", &e))?;
        let public = match &w.platform_public_key_file {
            Some(path) => Some(
                PlatformPublicKey::from_file(w.platform_public_key_id.clone(), path)
                    .map_err(|e| problem("wechat.platform_public_key_file", &e))?,
            ),
            None => None,
        };
        let mut certificates = Vec::new();
        for path in &w.platform_certificate_files {
            certificates.extend(
                PlatformCertificate::from_file(path)
                    .map_err(|e| problem("wechat.platform_certificate_files", &e))?,
            );
        }
        let platform = PlatformKeys::new(public, certificates).map_err(|e| problem("wechat", &e))?;
        let apiv3 =
            ApiV3Key::new(w.apiv3_key.expose().as_bytes()).map_err(|e| problem("wechat.apiv3_key", &e))?;
        (
            w.mchid.clone(),
            w.appid.clone(),
            w.merchant_serial_no.clone(),
            merchant_key,
            platform,
            apiv3,
            w.api_base.clone(),
        )
    } else if let Some(keys) = sandbox_keys {
        use sandbox::keys as sk;
        let merchant_key = SigningKey::from_pem(&keys.client.wechat_merchant_private)
            .map_err(|e| problem("sandbox WeChat merchant key", &e))?;
        let public = keys.client.wechat_platform_public.clone();
        // Both modes, as during WeChat's switch: the certificate_mode fault signs with
        // the certificate.
        let certificates = keys
            .wechat
            .certificate
            .iter()
            .map(|(cert, _)| cert.clone())
            .collect();
        let platform =
            PlatformKeys::new(Some(public), certificates).map_err(|e| problem("sandbox WeChat keys", &e))?;
        (
            sk::WECHAT_MCHID.to_owned(),
            sk::WECHAT_APPID.to_owned(),
            sk::WECHAT_MERCHANT_SERIAL_NO.to_owned(),
            merchant_key,
            platform,
            sk::wechat_apiv3(keys),
            format!("http://{local}/sandbox/wechat"),
        )
    } else {
        return Ok(None);
    };
    let now = clock.now();
    tracing::info!(mchid = %mchid, keys = %platform.describe(), "WeChat Pay platform keys");
    for cert in platform.expiring_soon(now) {
        tracing::warn!(
            serial = cert.serial(),
            not_after = %cert.not_after(),
            "WeChat Pay platform certificate expires within {} days (or has expired); download its successor or switch to the platform public key",
            crate::providers::wechat::platform_keys::EXPIRY_WARNING_DAYS
        );
    }
    let notify_url = format!(
        "{}/notify/wechat",
        settings.server.public_url.trim_end_matches('/')
    );
    if w.is_configured() {
        let public = url::Url::parse(&settings.server.public_url).ok();
        if public.as_ref().is_some_and(|u| u.scheme() != "https") {
            tracing::warn!(
                public_url = %settings.server.public_url,
                "WeChat Pay calls notify URLs on public hosts over HTTPS only: server.public_url is not https, so notifications may never arrive"
            );
        }
        if public.as_ref().is_some_and(|u| u.query().is_some()) {
            tracing::warn!(
                public_url = %settings.server.public_url,
                "server.public_url carries a query string, which WeChat Pay drops from notify URLs"
            );
        }
    }
    let signer = MerchantSigner::new(mchid.clone(), serial_no, merchant_key);
    let client = WechatClient::new(
        mchid, appid, signer, platform, apiv3, api_base, notify_url, timeout,
    )
    .map_err(StartupError::Provider)?;
    Ok(Some(Arc::new(WechatProvider { client, clock })))
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Provider(String),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("cannot create the first admin user: {0}")]
    FirstAdmin(#[from] AdminError),
    #[error(transparent)]
    Lock(#[from] crate::db::lock::LockError),
    #[error(
        "refusing to start: the sandbox is on by default (sandbox.enabled = \"auto\" and no real payment provider is configured) and kassa would listen on {addr}, reachable from the network, where anyone could pay its orders with simulated money. Bind a loopback address (server.bind = \"127.0.0.1:8080\"), configure [alipay] or [wechat], or set [sandbox] enabled = true (KASSA_SANDBOX_ENABLED=true) to expose the sandbox on purpose"
    )]
    SandboxExposed { addr: SocketAddr },
}

/// The sandbox turned on by default must not face the network: only an explicit
/// `enabled = true` puts it on a non-loopback address (with a warning).
fn check_sandbox_exposure(settings: &Settings, address: SocketAddr) -> Result<(), StartupError> {
    if !sandbox_enabled(settings) || address.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    if settings.sandbox.enabled == SandboxMode::Auto {
        return Err(StartupError::SandboxExposed { addr: address });
    }
    tracing::warn!(
        "the sandbox is on (sandbox.enabled = true) and kassa listens on {address}, reachable from the network: anyone who reaches it can pay sandbox orders with simulated money; its fault switches need the sandbox token from other hosts. Configure [alipay] or [wechat] and set [sandbox] enabled = false before going live"
    );
    Ok(())
}

/// Where the payment providers come from.
pub enum ProviderSetup {
    /// From the settings: the configured Alipay account, or the built-in sandbox.
    FromSettings,
    /// As `FromSettings`, but each provider call gives up after this instead of the
    /// clients' own 15 s: tests, so that a platform that never answers costs them a
    /// second, not fifteen.
    FromSettingsTimingOutAfter(Duration),
    /// These, as they are (tests use a test double).
    Given(Providers),
}

/// What to start besides the settings.
pub struct Options {
    pub providers: ProviderSetup,
    pub clock: Arc<dyn Clock>,
    /// Tests turn the background loops off and drive `try_run_once` themselves.
    pub run_jobs: bool,
    /// More background jobs to supervise beside kassa's own (when `run_jobs`).
    pub extra_jobs: Vec<Job>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            providers: ProviderSetup::FromSettings,
            clock: Arc::new(SystemClock),
            run_jobs: true,
            extra_jobs: Vec::new(),
        }
    }
}

pub struct Application {
    address: SocketAddr,
    server: Server,
    state: AppState,
    sandbox: Option<Arc<Sandbox>>,
    /// `None` when the jobs do not run.
    jobs: Option<Supervisor>,
    first_admin: Option<FirstAdmin>,
    /// Held until the database is closed: `kassa restore` and a second server on the
    /// same data directory or the same database file see that this one runs.
    lock: ServerLock,
    /// Tells the event streams that a graceful stop began.
    stopping: tokio::sync::watch::Sender<bool>,
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
        // Checked on the address actually bound: a listener whose address cannot be
        // read is not started, rather than started unchecked.
        let bound = listener.local_addr().map_err(|e| StartupError::Bind {
            addr: settings.server.bind,
            reason: e.to_string(),
        })?;
        check_sandbox_exposure(&settings, bound)?;
        let lock = ServerLock::acquire(&settings.server.data_dir, &settings.database.target)?;
        keep_private(&settings.server.data_dir, &settings.database.target);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        crate::service::metrics::declare(&metrics);
        let db = Database::open_with(
            &settings.database.target,
            metrics.writer(),
            settings.database.pool_size,
        )?;
        let bind = settings.server.bind;
        let address = bound;
        // How kassa reaches itself (the sandbox gateway), whatever the public URL is.
        let local = if address.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], address.port()))
        } else {
            address
        };
        if settings.source_of(crate::config::keys::SERVER_PUBLIC_URL.name) == Some(&Source::Default) {
            // 0.0.0.0 is no address to send a customer or a platform to.
            settings.server.public_url = format!("http://{local}");
            if address.ip().is_unspecified() {
                tracing::warn!(
                    "listening on {address} but server.public_url is not set: checkout links and notify URLs use {}; set public_url to the address customers and payment platforms reach",
                    settings.server.public_url
                );
            }
        }
        let sandbox_keys = if sandbox_enabled(&settings) {
            let keys = sandbox::keys::ensure(
                &settings.server.data_dir,
                &settings.database.target,
                options.clock.now(),
            )
            .map_err(|e| StartupError::Provider(format!("sandbox keys: {e}")))?;
            Some(keys)
        } else {
            None
        };
        let providers = match options.providers {
            ProviderSetup::Given(p) => p,
            setup => {
                let timeouts = match setup {
                    ProviderSetup::FromSettingsTimingOutAfter(t) => (t, t),
                    _ => (client::TIMEOUT, wechat_client::TIMEOUT),
                };
                let providers = providers_from_settings(
                    &settings,
                    sandbox_keys.as_ref(),
                    local,
                    options.clock.clone(),
                    timeouts.0,
                )?;
                match wechat_from_settings(
                    &settings,
                    sandbox_keys.as_ref(),
                    local,
                    options.clock.clone(),
                    timeouts.1,
                )? {
                    Some(wechat) => providers.with_wechat(wechat),
                    None => providers,
                }
            }
        };
        crate::webhooks::ensure_secret_blocking(&db, &settings, options.clock.now())?;
        let first_admin = ensure_first_admin_blocking(&db, &settings, options.clock.now())?;
        let sandbox_payments =
            sandbox_keys.is_some() && !settings.alipay.is_configured() && !settings.wechat.is_configured();
        let hooks = PostCommit::new(metrics.clone());
        // Other instances' transitions wake this one's checkout pages and dispatcher.
        if let Some(remote) = db.remote_changes() {
            hooks.follow(remote);
        }
        let core = Core {
            db,
            providers,
            clock: options.clock,
            settings: Arc::new(settings),
            hooks,
            metrics,
            instance: InstanceId::generate(),
        };
        tracing::info!(instance = %core.instance, "instance id (names this process's job leases and delivery claims)");
        let sandbox = match sandbox_keys {
            Some(keys) => Some(Arc::new(
                Sandbox::new(core.clone(), keys).map_err(StartupError::Provider)?,
            )),
            None => None,
        };
        let api_limits = Arc::new(crate::http::api::limits::ApiLimits::new(
            &core.settings.server,
            core.metrics.clone(),
            &core.db,
        ));
        let notify_limit = Arc::new(crate::http::notify::limit::RejectedLimit::new(
            &core.settings.notifications,
            core.metrics.clone(),
            &core.db,
        ));
        let (stopping, stopping_seen) = tokio::sync::watch::channel(false);
        let state = AppState {
            core,
            sandbox_payments,
            overview: Default::default(),
            api_limits,
            notify_limit,
            stopping: stopping_seen,
        };
        let data = web::Data::new(state.clone());
        let shutdown_timeout = state.core.settings.server.shutdown_timeout;
        let sandbox_data = sandbox.clone().map(web::Data::from);
        let server_settings = &state.core.settings.server;
        let header_timeout = server_settings
            .header_timeout
            .to_std()
            .unwrap_or(Duration::from_secs(5));
        let connections = crate::http::slow_clients::ConnectionCap::new(
            server_settings,
            state.core.metrics.clone(),
            state.core.clock.clone(),
        );
        let server = HttpServer::new(move || {
            let app = App::new()
                .app_data(data.clone())
                // Innermost first. HEAD becomes GET before routing, but after the log
                // line took the client's method; the default headers go outside
                // `method_not_allowed`, which replaces the API's 405 whole.
                .wrap(from_fn(crate::http::head_as_get))
                .wrap(from_fn(crate::http::method_not_allowed))
                .wrap(from_fn(crate::http::slow_clients::body_deadline))
                .wrap(crate::http::default_headers())
                .wrap(from_fn(crate::http::telemetry::log_request))
                .configure(crate::http::configure);
            let app = match &sandbox_data {
                Some(s) => app.app_data(s.clone()).configure(sandbox::configure),
                None => app,
            };
            app.default_service(web::to(crate::http::not_found))
        })
        .workers(2)
        .on_connect(move |connection, data| connections.on_connect(connection, data))
        // A request head must arrive whole within this of the connection opening (the
        // body has its own deadline, `slow_clients::body_deadline`).
        .client_request_timeout(header_timeout)
        // After a response that closes the connection, how long the client has to read it
        // before the socket is dropped.
        .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
        .shutdown_timeout(u64::try_from(shutdown_timeout.num_seconds()).unwrap_or(10))
        // SIGTERM and SIGINT alike stop gracefully (actix's own handling forces SIGINT):
        // see `stop_on_signals`.
        .disable_signals()
        .listen(listener)
        .map_err(|e| StartupError::Bind {
            addr: bind,
            reason: e.to_string(),
        })?
        .run();
        let jobs = options
            .run_jobs
            .then(|| supervisor(&state.core, sandbox.as_ref(), options.extra_jobs));
        Ok(Application {
            address,
            server,
            state,
            sandbox,
            jobs,
            first_admin,
            lock,
            stopping,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn core(&self) -> &Core {
        &self.state.core
    }

    /// The admin user this start created (the database had none), with its password
    /// when kassa made one up: shown once, never stored in clear.
    pub fn first_admin(&self) -> Option<&FirstAdmin> {
        self.first_admin.as_ref()
    }

    /// The built-in sandbox, when it is on.
    pub fn sandbox(&self) -> Option<&Arc<Sandbox>> {
        self.sandbox.as_ref()
    }

    /// Stops the server from outside, as SIGTERM does (`stop(true)` finishes requests
    /// in flight and ends open event streams); `run_until_stopped` then returns. A
    /// restart in the same process needs this: the old server, its jobs and its
    /// database writer must be gone first.
    pub fn handle(&self) -> StopHandle {
        StopHandle {
            server: self.server.handle(),
            stopping: self.stopping.clone(),
        }
    }

    /// Serves until the server stops (SIGTERM or Ctrl-C, or `handle().stop`), or until
    /// the database writer dies, which is an error. Then shuts down in order: requests
    /// in flight finish (within `server.shutdown_timeout`), the jobs stop, this
    /// instance's delivery claims and job leases are given back, the writer commits what
    /// is queued, empties the log (`wal_checkpoint(TRUNCATE)`) and closes, and only then
    /// are the locks released (the data directory's and the database file's).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let Application {
            server,
            state,
            sandbox,
            jobs,
            lock,
            stopping,
            ..
        } = self;
        let handle = server.handle();
        let writer_stopped = state.core.db.writer_stopped();
        let signals = tokio::spawn(stop_on_signals(
            StopHandle {
                server: handle.clone(),
                stopping,
            },
            state.core.settings.server.shutdown_timeout,
        ));
        // Without its writer kassa can store nothing: better stopped than answering
        // every payment platform with a failure.
        let watch = tokio::spawn(async move {
            writer_stopped.await;
            tracing::error!("the database writer stopped; stopping the server");
            handle.stop(false).await;
        });
        let (stop_jobs, jobs_stop) = tokio::sync::oneshot::channel::<()>();
        let jobs = jobs.map(|jobs| {
            tokio::spawn(jobs.run(async {
                let _ = jobs_stop.await;
            }))
        });
        let result = server.await;
        signals.abort();
        // Still holding `state` (a database handle): the writer cannot have ended of
        // itself before this point, only by failing.
        watch.abort();
        let writer_died = watch.await.is_ok();
        let _ = stop_jobs.send(());
        if let Some(jobs) = jobs {
            let _ = jobs.await;
        }
        if !writer_died {
            release_claims(&state).await;
        }
        let database = state.core.db.threads();
        let db_path = state.core.db.sqlite_path().map(std::path::Path::to_owned);
        drop((state, sandbox));
        wait_until_closed(&database, db_path.as_deref()).await;
        drop(lock);
        if writer_died {
            return Err(std::io::Error::other("the database writer stopped"));
        }
        result
    }
}

/// Longest wait at shutdown for this process's transactions still under way, so that
/// a claim one of them commits is given back too; statements are bounded by
/// `statement_timeout` anyway.
const SETTLE_WAIT: Duration = Duration::from_secs(10);

/// What this process held goes back once its jobs have stopped: webhook deliveries and
/// sandbox notices its loops had claimed return to pending, so the next start (or
/// another instance) sends them at once instead of after their lease, and its job
/// leases are freed for another instance to take at once. Other instances' claims and
/// leases are left alone.
async fn release_claims(state: &AppState) {
    if !state.core.db.settle(SETTLE_WAIT).await {
        tracing::warn!(
            "transactions still under way after {SETTLE_WAIT:?}; a webhook delivery one of them claims waits for its lease"
        );
    }
    let now = state.core.now();
    let me = state.core.instance.clone();
    match state
        .core
        .db
        .write(move |tx| {
            let webhooks = outbox::release_claims(tx, me.as_str(), now)?;
            crate::db::sandbox::release_claims(tx, me.as_str())?;
            crate::db::leases::release_all(tx, me.as_str())?;
            Ok(webhooks)
        })
        .await
    {
        Ok(0) => {}
        Ok(released) => tracing::info!(
            released,
            "webhook deliveries under way given back; the next start sends them"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot give back webhook deliveries under way and job leases; after a restart they wait for their lease"
        ),
    }
}

/// Longest wait for the database to close once everything else has stopped: a periodic
/// backup under way holds it open until its copy ends.
const CLOSE_WAIT: Duration = Duration::from_secs(60);

/// Waits until the writer has committed what was queued, emptied the log and closed.
/// Polls: the threads end on their own once the last handle is gone.
async fn wait_until_closed(database: &DbThreads, db_path: Option<&std::path::Path>) {
    let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
    while database.running() {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                "the database is still open {} s after the server stopped; exiting without its last checkpoint (nothing committed is lost)",
                CLOSE_WAIT.as_secs()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wal = db_path.map(|db| crate::db::backup::with_tail(db, "-wal"));
    let left = wal.map_or(0, |wal| std::fs::metadata(wal).map_or(0, |m| m.len()));
    tracing::info!(wal_bytes = left, "database closed");
}

/// Stops a running `Application` from outside. A graceful stop first ends the open
/// checkout event streams: they never finish by themselves, so the server would wait
/// for them the whole `server.shutdown_timeout`.
#[derive(Clone)]
pub struct StopHandle {
    server: ServerHandle,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl StopHandle {
    /// `graceful`: requests in flight may finish (within `server.shutdown_timeout`);
    /// otherwise connections are dropped at once.
    pub async fn stop(&self, graceful: bool) {
        self.stopping.send_replace(true);
        self.server.stop(graceful).await
    }
}

/// SIGTERM or SIGINT: a graceful stop (no new connections; requests in flight get
/// `grace` to finish; event streams end, as they would never finish). A second signal
/// stops at once.
async fn stop_on_signals(handle: StopHandle, grace: chrono::Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM and SIGINT; stop kassa with SIGKILL");
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        grace_seconds = grace.num_seconds(),
        "stopping: no new connections; requests in flight may finish"
    );
    let graceful = handle.stop(true);
    tokio::select! {
        () = graceful => {}
        _ = term.recv() => handle.stop(false).await,
        _ = int.recv() => handle.stop(false).await,
    }
}

/// kassa's background loops, by name.
fn supervisor(core: &Core, sandbox: Option<&Arc<Sandbox>>, extra: Vec<Job>) -> Supervisor {
    let mut jobs = Supervisor::new();
    let c = core.clone();
    jobs.add(Job::new("expiry", move || ExpiryWorker::new(c.clone()).run()));
    let c = core.clone();
    jobs.add(Job::new("late-checks", move || late_checks::run(c.clone())));
    let c = core.clone();
    jobs.add(Job::new("refund-settlement", move || {
        refund_settlement::run(c.clone())
    }));
    // Several loops, so one slow shop endpoint does not hold up the others; the claim's
    // lease keeps them from delivering a row twice.
    for n in 1..=WEBHOOK_LOOPS {
        let c = core.clone();
        jobs.add(Job::new(format!("webhooks-{n}"), move || {
            let dispatcher = Dispatcher::new(c.clone());
            async move {
                match dispatcher {
                    Ok(d) => d.run().await,
                    Err(e) => tracing::error!(error = %e, "cannot start the webhook dispatcher"),
                }
            }
        }));
    }
    if let Some(interval) = core.settings.backup.interval.and_then(|d| d.to_std().ok()) {
        let c = core.clone();
        jobs.add(Job::new("backup", move || {
            crate::jobs::backup::run(c.clone(), interval)
        }));
    }
    if let Some(keep) = core.settings.notifications.keep_rejected {
        let c = core.clone();
        jobs.add(Job::new("notification-retention", move || {
            crate::jobs::notification_retention::run(c.clone(), keep)
        }));
    }
    if let Some(sandbox) = sandbox {
        let s = sandbox.clone();
        jobs.add(Job::new("sandbox-notifier", move || {
            sandbox::alipay::notifier::run(s.clone())
        }));
    }
    for job in extra {
        jobs.add(job);
    }
    jobs
}

/// Databases, backups and keys written by earlier versions (or by SQLite itself) may be
/// readable by anyone, in a data directory anyone may list: they hold every order, the
/// webhook secret, API key hashes and private keys. What kassa's own user owns it
/// narrows (directories 0700, files 0600) and says so in one line; what another user
/// owns (a directory root made for kassa, a mount) it cannot or should not change, so
/// that is reported and left. A database outside the data directory has its files
/// narrowed, not its directory: that is wherever the operator chose, perhaps shared.
fn keep_private(data_dir: &std::path::Path, database: &crate::db::DbTarget) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Owned by the process's effective user; without /proc, chmod itself refuses a
    // user other than the owner.
    let me = std::fs::metadata("/proc/self").ok().map(|m| m.uid());
    let mut narrowed = Vec::new();
    let mut narrow = |path: &std::path::Path, meta: &std::fs::Metadata| {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            return;
        }
        let (private, what) = if meta.is_dir() {
            (0o700, "directory")
        } else {
            (0o600, "file")
        };
        if me.is_some_and(|uid| uid != meta.uid()) {
            tracing::warn!(
                path = %path.display(),
                "the {what} is mode {mode:o} and another user owns it: it holds secrets (orders, webhook secret, keys, API key hashes); make it {private:o}"
            );
            return;
        }
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(private)) {
            Ok(()) => narrowed.push(format!("{} {mode:o}→{private:o}", path.display())),
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "the {what} is mode {mode:o} and cannot be narrowed: it holds secrets (orders, webhook secret, keys, API key hashes); make it {private:o}"
            ),
        }
    };
    use crate::db::backup::with_tail;
    let mut paths = vec![data_dir.to_owned(), data_dir.join(crate::db::lock::FILE_NAME)];
    if let Some(database) = database.sqlite_path() {
        paths.extend(["", "-wal", "-shm"].map(|tail| with_tail(database, tail)));
        // Where the lock really is (beside the file a link or `..` leads to), as taken.
        paths.extend(crate::db::lock::database_lock_file(database).ok());
    }
    // Directories only kassa writes into: every file in them is its own. Not when the
    // directory is a link: it leads somewhere the operator chose (a shared backup disk),
    // whose other files are not kassa's to narrow.
    for dir in [
        data_dir.join("sandbox"),
        data_dir.join(crate::db::backup::PERIODIC_DIR),
    ] {
        let real_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        if let Some(entries) = real_dir.then(|| std::fs::read_dir(&dir).ok()).flatten() {
            paths.push(dir);
            paths.extend(entries.flatten().map(|e| e.path()));
        }
    }
    for (n, path) in paths.iter().enumerate() {
        // A link inside points at something kassa did not make, and chmod would follow
        // it; the data directory itself is wherever the operator's link leads.
        let meta = if n == 0 {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        match meta {
            Ok(meta) if meta.file_type().is_symlink() => {}
            Ok(meta) => narrow(path, &meta),
            Err(_) => {}
        }
    }
    // Info, not a warning: a fresh checkout's `data/` (git keeps no directory modes) is
    // narrowed on its first start, and there is nothing left for the operator to do.
    if !narrowed.is_empty() {
        tracing::info!(
            "narrowed to owner-only what was readable by others (the data directory holds secrets): {}",
            narrowed.join(", ")
        );
    }
}
