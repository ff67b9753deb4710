//! `TestApp`: the real application on a random port with a temp-dir database.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kassa::config::{ConfigSources, Settings};
use kassa::db::api_keys;
use kassa::domain::{api_key, FixedClock, ProviderKind};
use kassa::jobs::expiry::ExpiryWorker;
use kassa::providers::Providers;
use kassa::startup::{Application, Options, ProviderSetup};
use kassa::state::AppState;
use serde_json::{json, Value};

use crate::fake_provider::FakeProvider;

pub struct TestApp {
    pub address: String,
    pub state: AppState,
    pub clock: Arc<FixedClock>,
    pub provider: Arc<FakeProvider>,
    pub api_key: String,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn settings_for(data_dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Settings {
    let sources = ConfigSources {
        file: None,
        env: extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        flags: vec![
            ("server.data_dir", data_dir.display().to_string(), "--data-dir"),
            ("server.bind", "127.0.0.1:0".into(), "--bind"),
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
        let dir = tempfile::tempdir().unwrap();
        TestApp::spawn_in(dir, env).await
    }

    pub async fn spawn_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> TestApp {
        let data_dir = dir.path().to_owned();
        let settings = settings_for(&data_dir, env);
        let clock = Arc::new(FixedClock::new(Utc::now()));
        let provider = Arc::new(FakeProvider::new(ProviderKind::Alipay));
        let app = Application::build(
            settings,
            Options {
                providers: ProviderSetup::Given(Providers::none().with(provider.clone())),
                clock: clock.clone(),
                run_jobs: false,
            },
        )
        .expect("application builds");
        let address = format!("http://{}", app.address());
        let state = app.state().clone();
        tokio::spawn(app.run_until_stopped());
        let api_key = TestApp::create_api_key(&state, "test-shop").await;
        TestApp {
            address,
            state,
            clock,
            provider,
            api_key,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            data_dir,
            _dir: dir,
        }
    }

    pub async fn create_api_key(state: &AppState, name: &str) -> String {
        let key = api_key::generate();
        let (prefix, hash, name) = (key.display_prefix.clone(), key.hash.clone(), name.to_owned());
        state
            .db
            .write(move |c| api_keys::insert(c, &name, &prefix, &hash, Utc::now()))
            .await
            .unwrap()
            .expect("key name free");
        key.plaintext
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
        ExpiryWorker::new(self.state.clone())
    }
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
