//! `TestApp`: the real application on a random port with a temp-dir database, or, when
//! `KASSA_TEST_PG_URL` is set, on a PostgreSQL schema of its own (`PgSchema`); `TestDb`
//! reaches its rows as another client would, on either backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kassa::config::{keys, ConfigSources, Settings};
use kassa::core::Core;
use kassa::db::api_keys;
use kassa::domain::{api_key, Amount, Currency, FixedClock, NewOrder, OrderId, OutTradeNo, ProviderKind};
use kassa::jobs::expiry::ExpiryWorker;
use kassa::providers::Providers;
use kassa::sandbox::Sandbox;
use kassa::startup::{Application, Options, ProviderSetup};
use serde_json::{json, Value};

use crate::fake_provider::FakeProvider;
use crate::gateway_standin::GatewayStandin;
use crate::pg_schema::PgSchema;

pub struct TestApp {
    pub address: String,
    /// The listening address (the same across a restart).
    pub socket: SocketAddr,
    pub core: Core,
    /// The built-in sandbox, when it is on.
    pub sandbox: Option<Arc<Sandbox>>,
    pub clock: Arc<FixedClock>,
    pub provider: Arc<FakeProvider>,
    pub api_key: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    env: Vec<(String, String)>,
    mode: Mode,
    server: kassa::startup::StopHandle,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The app's database, as the test reaches it.
    db: TestDb,
    _dir: tempfile::TempDir,
    /// Last: the schema is dropped after everything else of the app (on PostgreSQL).
    pg: Option<Arc<PgSchema>>,
}

pub const ALIPAY_APP_ID: &str = "2021000000000001";
pub const ALIPAY_SELLER_ID: &str = "2088102177000000";

#[derive(Clone, Copy)]
enum Mode {
    Fake,
    Settings,
    /// From the settings, every provider call giving up after this.
    SettingsTimingOutAfter(std::time::Duration),
}

/// A socket that shares its port with other SO_REUSEPORT sockets of this user: a
/// restart binds the old address before the old server lets it go.
fn reuse_port_socket() -> tokio::net::TcpSocket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.set_reuseport(true).unwrap();
    socket
}

/// kassa's listener on a free loopback port, open to a later restart's reservation.
fn listener() -> std::net::TcpListener {
    let socket = reuse_port_socket();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    socket.listen(1024).unwrap().into_std().unwrap()
}

/// A connection of the test's own to the database file, as another process would open
/// it: to break the database on purpose, or to look at rows directly.
pub fn raw_connection(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    conn
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// The test vectors' Alipay and WeChat Pay keys as the sandbox's own.
pub fn install_sandbox_keys(data_dir: &std::path::Path) {
    let keys = format!("{}/tests/vectors/keys", env!("CARGO_MANIFEST_DIR"));
    let dir = data_dir.join("sandbox");
    std::fs::create_dir_all(&dir).unwrap();
    for (from, to) in [
        ("alipay_app_private_pkcs8.pem", "alipay_app_private.pem"),
        ("alipay_app_public.pem", "alipay_app_public.pem"),
        ("alipay_platform_private_pkcs8.pem", "alipay_platform_private.pem"),
        ("alipay_platform_public.pem", "alipay_platform_public.pem"),
        ("wechat_merchant_private_pkcs8.pem", "wechat_merchant_private.pem"),
        ("wechat_merchant_public.pem", "wechat_merchant_public.pem"),
        ("wechat_platform_private_pkcs8.pem", "wechat_platform_private.pem"),
        ("wechat_platform_public.pem", "wechat_platform_public.pem"),
        ("wechat_platform_cert.pem", "wechat_platform_cert.pem"),
        (
            "wechat_platform_cert_private_pkcs8.pem",
            "wechat_platform_cert_private.pem",
        ),
    ] {
        std::fs::copy(format!("{keys}/{from}"), dir.join(to)).unwrap();
    }
    std::fs::write(dir.join("wechat_apiv3_key"), WECHAT_APIV3_KEY).unwrap();
}

/// The test vectors' APIv3 key.
pub const WECHAT_APIV3_KEY: &str = "kassaTestApiV3Key0123456789abcdE";

/// The first admin's password in every test app (`KASSA_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

pub fn settings_for(data_dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Settings {
    let mut env: Vec<(String, String)> = extra_env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !env.iter().any(|(k, _)| k == "KASSA_ADMIN_PASSWORD") {
        env.push(("KASSA_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()));
    }
    // Test receivers listen on 127.0.0.1, which webhooks may not reach by default.
    if !env.iter().any(|(k, _)| k == "KASSA_WEBHOOKS_ALLOW_PRIVATE") {
        env.push(("KASSA_WEBHOOKS_ALLOW_PRIVATE".into(), "true".into()));
    }
    let sources = ConfigSources {
        file: None,
        env,
        flags: vec![
            (
                keys::SERVER_DATA_DIR.name,
                data_dir.display().to_string(),
                "--data-dir",
            ),
            (keys::SERVER_BIND.name, "127.0.0.1:0".into(), "--bind"),
        ],
    }
    .with_no_file();
    Settings::load(&sources).expect("test settings")
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[]).await
    }

    pub async fn spawn_with(env: &[(&str, &str)]) -> TestApp {
        TestApp::launch(tempfile::tempdir().unwrap(), Mode::Fake, env, listener()).await
    }

    /// kassa with its built-in sandbox, as out of the box. The sandbox gets the test
    /// vectors' keys so the independent oracle can sign as "Alipay".
    pub async fn spawn_sandbox(env: &[(&str, &str)]) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        install_sandbox_keys(dir.path());
        TestApp::launch(dir, Mode::Settings, env, listener()).await
    }

    /// kassa configured for a real Alipay account (the test vectors' keys), sandbox off.
    /// Its gateway is a stand-in that answers HTTP 503 to every call.
    pub async fn spawn_alipay(env: &[(&str, &str)]) -> TestApp {
        let gateway = GatewayStandin::start().await;
        TestApp::spawn_alipay_via(&gateway, env).await
    }

    /// As `spawn_alipay`, with `gateway` standing in for Alipay's gateway.
    pub async fn spawn_alipay_via(gateway: &GatewayStandin, env: &[(&str, &str)]) -> TestApp {
        let keys = format!("{}/tests/vectors/keys", env!("CARGO_MANIFEST_DIR"));
        let app_key = format!("{keys}/alipay_app_private_pkcs1.pem");
        let ali_key = format!("{keys}/alipay_platform_public.pem");
        let mut all: Vec<(&str, &str)> = vec![
            ("KASSA_ALIPAY_APP_ID", ALIPAY_APP_ID),
            ("KASSA_ALIPAY_APP_PRIVATE_KEY_FILE", &app_key),
            ("KASSA_ALIPAY_ALIPAY_PUBLIC_KEY_FILE", &ali_key),
            ("KASSA_ALIPAY_GATEWAY", &gateway.url),
            ("KASSA_ALIPAY_SELLER_ID", ALIPAY_SELLER_ID),
        ];
        all.extend_from_slice(env);
        TestApp::launch(tempfile::tempdir().unwrap(), Mode::Settings, &all, listener()).await
    }

    /// As `spawn_with_settings`, on `schema` reached through `url` (a proxy of the
    /// test's own in front of the server, say): `db()` still reaches the schema directly.
    pub async fn spawn_with_settings_on(schema: Arc<PgSchema>, url: &str, env: &[(&str, &str)]) -> TestApp {
        let mut all = env.to_vec();
        all.push(("KASSA_DATABASE_URL", url));
        TestApp::launch_on(
            tempfile::tempdir().unwrap(),
            Mode::Settings,
            &all,
            listener(),
            Some(schema),
        )
        .await
    }

    /// kassa with providers from the given settings only.
    pub async fn spawn_with_settings(env: &[(&str, &str)]) -> TestApp {
        TestApp::launch(tempfile::tempdir().unwrap(), Mode::Settings, env, listener()).await
    }

    /// As `spawn_with_settings`, each provider call giving up after `timeout` instead of
    /// 15 s: a platform that never answers is a real timeout, and a short one.
    pub async fn spawn_with_settings_timing_out_after(
        env: &[(&str, &str)],
        timeout: std::time::Duration,
    ) -> TestApp {
        TestApp::launch(
            tempfile::tempdir().unwrap(),
            Mode::SettingsTimingOutAfter(timeout),
            env,
            listener(),
        )
        .await
    }

    /// A restart: stops this kassa (its HTTP server gracefully, as SIGTERM does, then
    /// its database writer), asserts that it is gone, and starts kassa again on the same
    /// data directory and the same address. Anything a test still holds of the old app
    /// (a clone of its state) keeps the old writer alive and fails the restart.
    pub async fn restart(self) -> TestApp {
        let TestApp {
            core,
            sandbox,
            mode,
            client,
            socket,
            env,
            server,
            serving,
            _dir: dir,
            pg,
            ..
        } = self;
        // Holds the port (bound, not listening) while no kassa runs: connections are
        // refused, and nothing else can take the address the new kassa needs.
        let reserved = reuse_port_socket();
        reserved.bind(socket).expect("reserve the address");
        let database = core.db.threads();
        drop((core, sandbox, client));

        server.stop(true).await;
        serving
            .await
            .expect("the old server task ended")
            .expect("the old server ran");
        // Polls only so the answer does not depend on thread scheduling; gives up loudly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while database.running() {
            assert!(
                std::time::Instant::now() < deadline,
                "the old database writer still runs: something holds the old app's state"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let refused = tokio::net::TcpStream::connect(socket).await;
        assert!(
            matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
            "the old address still accepts connections: {refused:?}"
        );

        let listener = reserved
            .listen(1024)
            .and_then(|l| l.into_std())
            .expect("listen on the old address");
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        TestApp::launch_on(dir, mode, &env, listener, pg).await
    }

    async fn launch(
        dir: tempfile::TempDir,
        mode: Mode,
        env: &[(&str, &str)],
        listener: std::net::TcpListener,
    ) -> TestApp {
        // A test that names its own database keeps it.
        let pg = if env.iter().any(|(k, _)| *k == "KASSA_DATABASE_URL") {
            None
        } else {
            PgSchema::new().map(Arc::new)
        };
        TestApp::launch_on(dir, mode, env, listener, pg).await
    }

    /// As `launch`, on `pg`'s schema when there is one (the same one across a restart).
    async fn launch_on(
        dir: tempfile::TempDir,
        mode: Mode,
        env: &[(&str, &str)],
        listener: std::net::TcpListener,
        pg: Option<Arc<PgSchema>>,
    ) -> TestApp {
        let data_dir = dir.path().to_owned();
        // The schema's own URL, unless the test reaches it another way.
        let url = pg
            .as_ref()
            .filter(|_| !env.iter().any(|(k, _)| *k == "KASSA_DATABASE_URL"))
            .map(|schema| schema.url());
        let mut all_env: Vec<(&str, &str)> = env.to_vec();
        if let Some(url) = &url {
            all_env.push(("KASSA_DATABASE_URL", url));
        }
        // Few connections per app, as many apps share the test server; enough for the
        // requests a test sends at once to wait their turn within the pool's wait.
        if pg.is_some() && !env.iter().any(|(k, _)| *k == "KASSA_DATABASE_POOL_SIZE") {
            all_env.push(("KASSA_DATABASE_POOL_SIZE", "4"));
        }
        let settings = settings_for(&data_dir, &all_env);
        let clock = Arc::new(FixedClock::new(Utc::now()));
        let provider = Arc::new(FakeProvider::new(ProviderKind::Alipay));
        let providers = match mode {
            Mode::Fake => ProviderSetup::Given(Providers::none().with(provider.clone())),
            Mode::Settings => ProviderSetup::FromSettings,
            Mode::SettingsTimingOutAfter(t) => ProviderSetup::FromSettingsTimingOutAfter(t),
        };
        let app = Application::build_on(
            settings,
            Options {
                providers,
                clock: clock.clone(),
                run_jobs: false,
                extra_jobs: Vec::new(),
            },
            listener,
        )
        .expect("application builds");
        let socket = app.address();
        let address = format!("http://{socket}");
        let core = app.core().clone();
        let db = match (&pg, core.db.sqlite_path()) {
            (Some(schema), _) => TestDb::Postgres(schema.clone()),
            (None, Some(path)) => TestDb::Sqlite(path.to_owned()),
            (None, None) => panic!("a PostgreSQL database the test did not make: reach it yourself"),
        };
        let sandbox = app.sandbox().cloned();
        let server = app.handle();
        let serving = tokio::spawn(app.run_until_stopped());
        // After a restart the first name is taken: the new key gets another.
        let api_key = match TestApp::try_create_api_key(&core, "test-shop").await {
            Some(key) => key,
            None => TestApp::create_api_key(&core, &format!("test-shop-{}", unique())).await,
        };
        TestApp {
            address,
            socket,
            core,
            sandbox,
            clock,
            provider,
            api_key,
            client: http_client(),
            data_dir,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            mode,
            server,
            serving,
            db,
            _dir: dir,
            pg,
        }
    }

    /// What the `kassa` binary needs in its environment to work on this app's database
    /// beside `--data-dir` (on PostgreSQL, `KASSA_DATABASE_URL`).
    pub fn database_env(&self) -> Vec<(&'static str, String)> {
        match &self.pg {
            Some(schema) => vec![("KASSA_DATABASE_URL", schema.url())],
            None => Vec::new(),
        }
    }

    /// The app's database, as another client reaches it.
    pub fn db(&self) -> &TestDb {
        &self.db
    }

    /// True when the app runs on PostgreSQL (`KASSA_TEST_PG_URL` set): for what only one
    /// backend has (SQLite's writer, its file).
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, TestDb::Postgres(_))
    }

    pub async fn create_api_key(core: &Core, name: &str) -> String {
        TestApp::try_create_api_key(core, name)
            .await
            .expect("key name free")
    }

    pub async fn try_create_api_key(core: &Core, name: &str) -> Option<String> {
        let key = api_key::generate();
        let (prefix, hash, name) = (key.display_prefix.clone(), key.hash.clone(), name.to_owned());
        let id = core
            .db
            .write(move |c| api_keys::insert(c, &name, &prefix, &hash, Utc::now()))
            .await
            .unwrap();
        id.map(|_| key.plaintext)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn now(&self) -> DateTime<Utc> {
        use kassa::domain::Clock;
        self.clock.now()
    }

    pub async fn post_order(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/orders"))
            .bearer_auth(&self.api_key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_order_with_key(&self, body: &Value, idempotency_key: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/orders"))
            .bearer_auth(&self.api_key)
            .header("Idempotency-Key", idempotency_key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap()
    }

    /// Creates an order through the API and returns its JSON.
    pub async fn create_order(&self, out_trade_no: &str, amount: i64) -> Value {
        let response = self.post_order(&order_body(out_trade_no, amount)).await;
        assert_eq!(response.status(), 201, "creating {out_trade_no}");
        response.json().await.unwrap()
    }

    pub fn expiry(&self) -> ExpiryWorker {
        ExpiryWorker::new(self.core.clone())
    }

    /// Stores a pending Alipay order directly (no gateway call) and returns its id.
    pub async fn insert_order(&self, out_trade_no: &str, amount: i64) -> String {
        let order = NewOrder {
            id: OrderId::generate(),
            out_trade_no: OutTradeNo::parse(out_trade_no).unwrap(),
            amount: Amount::from_minor(amount, Currency::Cny).unwrap(),
            subject: "Jasmine tea".into(),
            provider: ProviderKind::Alipay,
            notify_url: None,
            return_url: None,
            metadata: Default::default(),
            created_at: self.now(),
            expires_at: self.now() + chrono::Duration::minutes(15),
        };
        let id = order.id.to_string();
        self.core
            .db
            .write(move |c| kassa::db::orders::insert(c, &order, Some("qr")))
            .await
            .unwrap();
        id
    }

    /// Closes an order as the expiry sweep would, without asking any provider.
    pub async fn close_locally(&self, id: &str) {
        use kassa::db::history::Cause;
        use kassa::db::transitions::Change;
        let oid = OrderId::parse(id).unwrap();
        let cause = Cause::system(kassa::domain::TransitionSource::Expiry);
        kassa::service::changes::apply(&self.core, &oid, Change::Close, cause, self.now())
            .await
            .unwrap();
    }

    pub async fn post_alipay_notify(&self, body: String) -> (u16, String) {
        let response = self
            .client
            .post(self.url("/notify/alipay"))
            .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn order(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/orders/{id}"))
            .await
            .json()
            .await
            .unwrap()
    }

    pub async fn events(&self, id: &str) -> Vec<Value> {
        let v: Value = self
            .get(&format!("/api/v1/orders/{id}/events"))
            .await
            .json()
            .await
            .unwrap();
        v["data"].as_array().unwrap().clone()
    }

    pub async fn notifications(&self) -> Vec<kassa::db::notifications::NotificationRecord> {
        self.core
            .db
            .read(|c| kassa::db::notifications::list_recent(c, 1000))
            .await
            .unwrap()
    }

    pub async fn outbox(&self, id: &str) -> Vec<kassa::db::outbox::OutboxRow> {
        let id = OrderId::parse(id).unwrap();
        self.core
            .db
            .read(move |c| kassa::db::outbox::list_for_order(c, &id))
            .await
            .unwrap()
    }

    /// Runs the sandbox notifier until nothing is due now.
    pub async fn drive_sandbox(&self) -> usize {
        let sandbox = self.sandbox.as_deref().expect("sandbox on");
        let mut attempts = 0;
        loop {
            let report = kassa::sandbox::alipay::notifier::try_run_once(sandbox, self.now())
                .await
                .unwrap();
            if report.attempted == 0 {
                return attempts;
            }
            attempts += report.attempted;
        }
    }

    /// Opens the wallet page (the "scan") and presses Pay.
    pub async fn pay_in_wallet(&self, qr_code: &str) {
        let csrf = open_wallet(&self.client, qr_code).await;
        let pay = self
            .client
            .post(format!("{qr_code}/pay"))
            .form(&[("csrf", csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(pay.status(), 303);
    }

    /// A crash, as `kill -9` would leave it: the serving task is dropped where it stands
    /// (so `run_until_stopped` never gives back this instance's delivery claims and job
    /// leases), then the listener and its connections are dropped at once. Background
    /// work the test started on `core` (dispatchers) is the test's to abort first.
    pub async fn crash(self) {
        let TestApp { server, serving, .. } = self;
        serving.abort();
        let _ = serving.await;
        server.stop(false).await;
    }
}

/// Opens a sandbox wallet page (the "scan"): its forms' anti-forgery token.
pub async fn open_wallet(client: &reqwest::Client, qr_code: &str) -> String {
    let page = client.get(qr_code).send().await.unwrap();
    assert_eq!(page.status(), 200);
    wallet_csrf(&page.text().await.unwrap())
}

/// The anti-forgery token of a wallet page's forms.
pub fn wallet_csrf(html: &str) -> String {
    let marker = r#"name="csrf" value=""#;
    let start = html.find(marker).expect("a wallet form") + marker.len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_owned()
}

/// Parameters of a TRADE_SUCCESS notification for `order_id`, as Alipay sends them.
pub fn trade_success(order_id: &str, total_amount: &str) -> Value {
    json!({
        "notify_time": "2026-11-24 11:30:06", "notify_type": "trade_status_sync",
        "notify_id": format!("20261124002221130060674{:011}", unique()),
        "app_id": ALIPAY_APP_ID, "auth_app_id": ALIPAY_APP_ID, "charset": "utf-8", "version": "1.0", "sign_type": "RSA2",
        "trade_no": "2026112422001446880501234567", "out_trade_no": order_id,
        "buyer_id": "2088102177846880", "buyer_logon_id": "csq***@sandbox.com", "seller_id": ALIPAY_SELLER_ID,
        "trade_status": "TRADE_SUCCESS", "total_amount": total_amount, "receipt_amount": total_amount,
        "buyer_pay_amount": total_amount, "invoice_amount": total_amount, "point_amount": "0.00",
        "subject": "2 杯咖啡 & 1 cake", "gmt_create": "2026-11-24 11:30:05", "gmt_payment": "2026-11-24 11:30:06",
        "fund_bill_list": "[{\"amount\":\"12.34\",\"fundChannel\":\"ALIPAYACCOUNT\"}]",
    })
}

pub fn order_body(out_trade_no: &str, amount: i64) -> Value {
    json!({
        "out_trade_no": out_trade_no,
        "amount": amount,
        "subject": "Jasmine tea 茉莉花茶",
        "provider": "alipay",
    })
}

/// The error code of a JSON error response, asserting its shape.
pub async fn error_code(response: reqwest::Response) -> (u16, String, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("error body is JSON");
    let code = body["error"]["code"].as_str().expect("error.code").to_owned();
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error.message: {body}"
    );
    (status, code, body)
}

/// The HTTP client every test talks to kassa with: no redirects followed, and an idle
/// connection is never reused after a second. kassa closes idle connections after its
/// keep-alive (5 s); a test that blocks its runtime longer (the first oracle call builds
/// the Python environment) would otherwise send its next request on a connection the
/// server already closed and fail with `IncompleteMessage`.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(std::time::Duration::from_secs(1))
        .build()
        .unwrap()
}

/// A value for a statement of `TestDb`: `vals![…]` makes the list.
#[derive(Debug, Clone)]
pub enum Val {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    Null,
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}
impl From<i32> for Val {
    fn from(v: i32) -> Val {
        Val::Int(v.into())
    }
}
impl From<usize> for Val {
    fn from(v: usize) -> Val {
        Val::Int(i64::try_from(v).unwrap())
    }
}
impl From<bool> for Val {
    /// kassa's flags are integers 0 and 1 on both backends.
    fn from(v: bool) -> Val {
        Val::Int(v.into())
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_owned())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}
/// Taken by reference, as rusqlite's `params!` takes them.
impl<T: Clone + Into<Val>> From<&T> for Val {
    fn from(v: &T) -> Val {
        v.clone().into()
    }
}
impl From<&[u8]> for Val {
    fn from(v: &[u8]) -> Val {
        Val::Bytes(v.to_vec())
    }
}
impl From<Vec<u8>> for Val {
    fn from(v: Vec<u8>) -> Val {
        Val::Bytes(v)
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}

/// The values of a `TestDb` statement, in `?1`, `?2`… order.
#[macro_export]
macro_rules! vals {
    ($($v:expr),* $(,)?) => {
        &[$($crate::helpers::Val::from(&$v)),*][..]
    };
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Val::Int(i) => ValueRef::Integer(*i),
            Val::Text(t) => ValueRef::Text(t.as_bytes()),
            Val::Bytes(b) => ValueRef::Blob(b),
            Val::Null => ValueRef::Null,
        }))
    }
}

impl Val {
    /// As a PostgreSQL literal (the statement is the test's own; values are inlined).
    fn pg_literal(&self) -> String {
        match self {
            Val::Int(i) => i.to_string(),
            Val::Text(t) => format!("'{}'", t.replace('\'', "''")),
            Val::Bytes(b) => format!("'\\x{}'::bytea", hex(b)),
            Val::Null => "NULL".to_owned(),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One row of a `TestDb` query: each column as PostgreSQL's text form (SQLite's values
/// written the same way: integers in decimal, blobs as `\x` and hex), NULL as None.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DbRow(pub Vec<Option<String>>);

/// A `TestDb` failure (a statement refused, a value of another type), to `unwrap`.
#[derive(Debug)]
pub struct DbFailure(#[allow(dead_code)] pub String);

impl DbRow {
    /// Column `i` (rusqlite's shape, so closures read the same on both backends).
    pub fn get<T: FromCell>(&self, i: usize) -> Result<T, DbFailure> {
        T::from_cell(self.0[i].as_deref()).map_err(DbFailure)
    }

    /// Column `i`, panicking when it does not read as `T`.
    pub fn at<T: FromCell>(&self, i: usize) -> T {
        self.get(i).unwrap()
    }
}

/// A column's Rust value, from its text.
pub trait FromCell: Sized {
    fn from_cell(cell: Option<&str>) -> Result<Self, String>;
}

impl FromCell for i64 {
    fn from_cell(cell: Option<&str>) -> Result<i64, String> {
        let text = cell.ok_or("NULL, not an integer")?;
        text.parse().map_err(|_| format!("{text:?} is not an integer"))
    }
}
impl FromCell for String {
    fn from_cell(cell: Option<&str>) -> Result<String, String> {
        Ok(cell.ok_or("NULL, not a text")?.to_owned())
    }
}
impl FromCell for bool {
    fn from_cell(cell: Option<&str>) -> Result<bool, String> {
        match cell.ok_or("NULL, not a flag")? {
            "1" | "t" | "true" => Ok(true),
            "0" | "f" | "false" => Ok(false),
            other => Err(format!("{other:?} is not a flag")),
        }
    }
}
impl FromCell for Vec<u8> {
    fn from_cell(cell: Option<&str>) -> Result<Vec<u8>, String> {
        let text = cell.ok_or("NULL, not a blob")?;
        let digits = text
            .strip_prefix("\\x")
            .ok_or_else(|| format!("{text:?} is not a blob"))?;
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|e| e.to_string()))
            .collect()
    }
}
impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: Option<&str>) -> Result<Option<T>, String> {
        cell.map(|c| T::from_cell(Some(c))).transpose()
    }
}

/// The values of a statement: `vals![…]`, or an array of one type (`[&id]`).
pub trait IntoVals {
    fn into_vals(self) -> Vec<Val>;
}
impl IntoVals for &[Val] {
    fn into_vals(self) -> Vec<Val> {
        self.to_vec()
    }
}
impl<T: Into<Val>, const N: usize> IntoVals for [T; N] {
    fn into_vals(self) -> Vec<Val> {
        self.into_iter().map(Into::into).collect()
    }
}

/// The database of a `TestApp`, reached as another client would (a connection of its
/// own): to look at rows directly or change them behind kassa's back. Statements are
/// written once with `?1`… for both backends (on PostgreSQL the values are inlined as
/// literals); the few that differ by dialect branch on `is_postgres`. The methods have
/// rusqlite's names and shapes.
#[derive(Clone)]
pub enum TestDb {
    Sqlite(PathBuf),
    Postgres(Arc<PgSchema>),
}

/// A statement of `TestDb::prepare`.
pub struct Stmt {
    db: TestDb,
    sql: String,
}

impl Stmt {
    pub fn query_map<T>(
        &self,
        args: impl IntoVals,
        mut f: impl FnMut(&DbRow) -> Result<T, DbFailure>,
    ) -> Result<std::vec::IntoIter<Result<T, DbFailure>>, DbFailure> {
        let rows = self.db.try_rows(&self.sql, &args.into_vals())?;
        Ok(rows.iter().map(&mut f).collect::<Vec<_>>().into_iter())
    }
}

impl TestDb {
    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres(_))
    }

    fn try_rows(&self, sql: &str, args: &[Val]) -> Result<Vec<DbRow>, DbFailure> {
        match self {
            TestDb::Sqlite(path) => {
                let failed = |e: rusqlite::Error| DbFailure(format!("{sql}: {e}"));
                let conn = raw_connection(path);
                let mut stmt = conn.prepare(sql).map_err(failed)?;
                let width = stmt.column_count();
                let rows = stmt
                    .query_map(rusqlite::params_from_iter(args), |row| {
                        (0..width)
                            .map(|i| Ok(sqlite_text(row.get_ref(i)?)))
                            .collect::<rusqlite::Result<Vec<_>>>()
                            .map(DbRow)
                    })
                    .map_err(failed)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(failed);
                rows
            }
            TestDb::Postgres(schema) => Ok(pg_run(schema, &inline(sql, args))?.0),
        }
    }

    /// The rows `sql` returns.
    pub fn rows(&self, sql: &str, args: impl IntoVals) -> Vec<DbRow> {
        self.try_rows(sql, &args.into_vals()).unwrap()
    }

    /// The first column of the one row `sql` returns.
    pub fn one<T: FromCell>(&self, sql: &str, args: impl IntoVals) -> T {
        let rows = self.rows(sql, args);
        assert_eq!(rows.len(), 1, "{sql} returned {} rows", rows.len());
        rows[0].at(0)
    }

    /// `f` of the first row `sql` returns (an error when there is none).
    pub fn query_row<T>(
        &self,
        sql: &str,
        args: impl IntoVals,
        f: impl FnOnce(&DbRow) -> Result<T, DbFailure>,
    ) -> Result<T, DbFailure> {
        let rows = self.try_rows(sql, &args.into_vals())?;
        f(rows.first().ok_or_else(|| DbFailure(format!("{sql}: no row")))?)
    }

    pub fn prepare(&self, sql: &str) -> Result<Stmt, DbFailure> {
        Ok(Stmt {
            db: self.clone(),
            sql: sql.to_owned(),
        })
    }

    /// Runs `sql`; the rows it changed.
    pub fn execute(&self, sql: &str, args: impl IntoVals) -> Result<usize, DbFailure> {
        let args = args.into_vals();
        match self {
            TestDb::Sqlite(path) => raw_connection(path)
                .execute(sql, rusqlite::params_from_iter(&args))
                .map_err(|e| DbFailure(format!("{sql}: {e}"))),
            TestDb::Postgres(schema) => Ok(pg_run(schema, &inline(sql, &args))?.1),
        }
    }

    /// Runs statements without values (DDL, several at once).
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbFailure> {
        match self {
            TestDb::Sqlite(path) => raw_connection(path)
                .execute_batch(sql)
                .map_err(|e| DbFailure(format!("{sql}: {e}"))),
            TestDb::Postgres(schema) => pg_run(schema, sql).map(drop),
        }
    }

    /// The names of kassa's tables, sorted.
    pub fn tables(&self) -> Vec<String> {
        let sql = match self {
            TestDb::Sqlite(_) => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            TestDb::Postgres(_) => {
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() \
                 AND table_type = 'BASE TABLE' ORDER BY table_name COLLATE \"C\""
            }
        };
        self.rows(sql, crate::vals![]).iter().map(|r| r.at(0)).collect()
    }
}

fn sqlite_text(value: rusqlite::types::ValueRef<'_>) -> Option<String> {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Some(format!("\\x{}", hex(b))),
    }
}

/// `sql` with each `?N` outside quotes replaced by the literal of `args[N-1]`.
fn inline(sql: &str, args: &[Val]) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if c != '?' || quoted {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let n: usize = digits.parse().unwrap_or_else(|_| panic!("{sql}: a bare ?"));
        out.push_str(&args[n - 1].pg_literal());
    }
    out
}

/// Runs `sql` (one statement) on a connection of its own, on a thread and runtime of
/// its own (it works from inside a tokio test without blocking on its runtime): the rows
/// in text form, and the rows changed.
fn pg_run(schema: &PgSchema, sql: &str) -> Result<(Vec<DbRow>, usize), DbFailure> {
    let url = schema.url();
    let text = sql.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test schema");
            let connection = tokio::spawn(connection);
            let messages = client.simple_query(&text).await;
            drop(client);
            let _ = connection.await;
            let messages = messages.map_err(|e| {
                let message = e.as_db_error().map_or(e.to_string(), |d| d.message().to_owned());
                DbFailure(format!("{text}: {message}"))
            })?;
            let mut rows = Vec::new();
            let mut changed = 0;
            for message in messages {
                match message {
                    tokio_postgres::SimpleQueryMessage::Row(row) => rows.push(DbRow(
                        (0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect(),
                    )),
                    tokio_postgres::SimpleQueryMessage::CommandComplete(n) => {
                        changed = usize::try_from(n).unwrap()
                    }
                    _ => {}
                }
            }
            Ok((rows, changed))
        })
    })
    .join()
    .expect("the statement's thread")
}
