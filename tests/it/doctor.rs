//! `kassa doctor`, the real binary: a configuration ready to go live passes (exit 0)
//! and each mistake doctor knows, made one at a time, fails (exit 1) with a problem
//! line naming the key at fault. The payment gateways are local ports nobody answers
//! on (offline) or a stand-in that only tells the time.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{Duration, Utc};
use serde_json::json;

use crate::receiver::Receiver;

const SECRET: &str = "whsec_a2Fzc2EtdGVzdC13ZWJob29rLXNlY3JldC0zMmJ5dGU=";

fn vector_key(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/vectors/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Writes a key file readable by its owner only, as a merchant should keep one.
fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// A platform certificate for the test platform key, valid between the two instants.
fn certificate(not_before: &str, not_after: &str) -> String {
    let made = crate::oracle::wechat_oracle(json!({
        "op": "make_certificate", "private_key": vector_key("wechat_platform_cert_private_pkcs8.pem"),
        "serial": "3C5A7E9F3C2B1D4E5F60718293A4B5C6D7E8F902",
        "not_before": not_before, "not_after": not_after,
    }));
    made["pem"].as_str().unwrap().to_owned()
}

/// A gateway that answers every request with an empty 200 whose `Date` is the real
/// time moved by `offset`.
fn clock_gateway(offset: Duration) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let date = (Utc::now() + offset).format("%a, %d %b %Y %H:%M:%S GMT");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nDate: {date}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    url
}

/// The files and endpoints of a merchant ready to go live, in a temp dir.
struct Merchant {
    dir: tempfile::TempDir,
    /// `section.key` → TOML value, written to kassa.toml by `doctor`.
    config: BTreeMap<String, String>,
    app_public_key: PathBuf,
    _offline: crate::receiver::Down,
}

fn quoted(text: &str) -> String {
    format!("{text:?}")
}

impl Merchant {
    fn new(webhook_url: &str, valid_certificate: &str) -> Merchant {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        write_private(
            &path("alipay_app_private.pem"),
            &vector_key("alipay_app_private_pkcs8.pem"),
        );
        std::fs::write(
            path("alipay_public.pem"),
            vector_key("alipay_platform_public.pem"),
        )
        .unwrap();
        std::fs::write(path("alipay_app_public.pem"), vector_key("alipay_app_public.pem")).unwrap();
        write_private(
            &path("apiclient_key.pem"),
            &vector_key("wechat_merchant_private_pkcs1.pem"),
        );
        std::fs::write(
            path("wechat_public.pem"),
            vector_key("wechat_platform_public.pem"),
        )
        .unwrap();
        std::fs::write(path("wechat_cert.pem"), valid_certificate).unwrap();
        let offline = Receiver::down();
        let shown = |name: &str| quoted(&path(name).display().to_string());
        let config = [
            ("server.public_url", quoted("https://pay.example.com")),
            ("server.data_dir", quoted(&path("data").display().to_string())),
            ("alipay.app_id", quoted("2021000000000001")),
            ("alipay.app_private_key_file", shown("alipay_app_private.pem")),
            ("alipay.alipay_public_key_file", shown("alipay_public.pem")),
            ("alipay.gateway", quoted(&offline.url)),
            ("wechat.mchid", quoted("1900000001")),
            ("wechat.appid", quoted("wx8888888888888888")),
            ("wechat.apiv3_key", quoted("kassa-test-apiv3-key-32-bytes-ok")),
            (
                "wechat.merchant_serial_no",
                quoted("5157F09EFDC096DE15EBE81A47057A7232FE1F5B"),
            ),
            ("wechat.merchant_private_key_file", shown("apiclient_key.pem")),
            ("wechat.platform_public_key_file", shown("wechat_public.pem")),
            (
                "wechat.platform_public_key_id",
                quoted("PUB_KEY_ID_0114232134912410000000000000"),
            ),
            (
                "wechat.platform_certificate_files",
                format!("[{}]", shown("wechat_cert.pem")),
            ),
            ("wechat.api_base", quoted(&clock_gateway(Duration::zero()))),
            ("sandbox.enabled", "false".to_owned()),
            ("webhooks.url", quoted(webhook_url)),
            // The test receivers listen on 127.0.0.1.
            ("webhooks.allow_private", "true".to_owned()),
            ("webhooks.secret", quoted(SECRET)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Merchant {
            app_public_key: path("alipay_app_public.pem"),
            dir,
            config,
            _offline: offline,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn database(&self) -> PathBuf {
        self.path("data/kassa.db")
    }

    /// Runs `kassa <args>` with kassa.toml written from `config`, in a clean environment.
    fn kassa(&self, config: &BTreeMap<String, String>, args: &[&str]) -> Output {
        let mut sections: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (name, value) in config {
            let (section, key) = name.split_once('.').unwrap();
            sections
                .entry(section)
                .or_default()
                .push(format!("{key} = {value}"));
        }
        let toml: String = sections
            .iter()
            .map(|(section, lines)| format!("[{section}]\n{}\n", lines.join("\n")))
            .collect();
        let file = self.path("kassa.toml");
        std::fs::write(&file, toml).unwrap();
        Command::new(env!("CARGO_BIN_EXE_kassa"))
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("--config")
            .arg(&file)
            .args(args)
            .output()
            .unwrap()
    }

    /// `kassa doctor --alipay-app-public-key <the registered key>`, off the async
    /// runtime so that the test's webhook receiver can answer meanwhile.
    async fn doctor(&self, config: &BTreeMap<String, String>, app_public_key: &Path) -> Report {
        let app_public_key = app_public_key.display().to_string();
        let output = tokio::task::block_in_place(|| {
            self.kassa(config, &["doctor", "--alipay-app-public-key", &app_public_key])
        });
        Report {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        }
    }
}

struct Report {
    code: Option<i32>,
    stdout: String,
}

impl Report {
    /// The subjects of the lines at `level` (`ok`, `skipped`, `warning`, `problem`).
    fn subjects(&self, level: &str) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(|line| line.strip_prefix(level)?.strip_prefix(' '))
            .filter_map(|rest| rest.trim_start().split_once(": ").map(|(s, _)| s.to_owned()))
            .collect()
    }

    fn line(&self, level: &str, subject: &str) -> Option<&str> {
        self.stdout.lines().find(|line| {
            line.strip_prefix(level)
                .is_some_and(|rest| rest.trim_start().starts_with(&format!("{subject}: ")))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_configuration_ready_to_go_live_and_leaves_the_database_as_it_was() {
    let receiver = Receiver::start().await;
    let now = Utc::now();
    let valid = certificate(
        &(now - Duration::days(1)).to_rfc3339(),
        &(now + Duration::days(365)).to_rfc3339(),
    );
    let merchant = Merchant::new(&receiver.url, &valid);

    // Before the first start there is no database: a warning, and none is created.
    let first = merchant.doctor(&merchant.config, &merchant.app_public_key).await;
    assert_eq!(first.code, Some(0), "{}", first.stdout);
    assert_eq!(first.subjects("warning"), ["server.data_dir"], "{}", first.stdout);
    assert!(!merchant.database().exists(), "doctor created a database");

    let migrated = merchant.kassa(&merchant.config, &["migrate"]);
    assert!(migrated.status.success());
    let before = std::fs::read(merchant.database()).unwrap();
    let report = merchant.doctor(&merchant.config, &merchant.app_public_key).await;
    assert_eq!(report.code, Some(0), "{}", report.stdout);
    assert!(report.subjects("problem").is_empty(), "{}", report.stdout);
    assert!(report.subjects("warning").is_empty(), "{}", report.stdout);
    for key in [
        "configuration",
        "alipay.app_private_key_file",
        "alipay.alipay_public_key_file",
        "wechat.merchant_private_key_file",
        "wechat.merchant_serial_no",
        "wechat.apiv3_key",
        "wechat.platform_public_key_file",
        "wechat.platform_certificate_files",
        "server.public_url",
        "server.data_dir",
        "wechat.api_base",
        "webhooks.url",
    ] {
        assert!(
            report.line("ok", key).is_some(),
            "no ok line for {key}:\n{}",
            report.stdout
        );
    }
    assert!(
        report
            .stdout
            .lines()
            .any(|l| l.starts_with("ok")
                && l.contains("alipay.app_private_key_file: matches the app public key")),
        "{}",
        report.stdout
    );
    assert!(report
        .stdout
        .contains("Alipay notifies https://pay.example.com/notify/alipay"));
    assert!(report
        .stdout
        .contains("WeChat Pay notifies https://pay.example.com/notify/wechat"));
    // The Alipay gateway is offline: said, not failed.
    assert!(
        report
            .line("skipped", "alipay.gateway")
            .is_some_and(|l| l.contains("clock not compared")),
        "{}",
        report.stdout
    );
    assert!(report.stdout.contains("integrity_check ok"));
    assert_eq!(
        std::fs::read(merchant.database()).unwrap(),
        before,
        "doctor wrote to the database"
    );
    for left in ["data/kassa.db-wal", "data/kassa.db-shm"] {
        assert!(!merchant.path(left).exists(), "doctor left {left} behind");
    }

    // Each run pinged the shop, signed as Standard Webhooks say.
    let pings = receiver.received();
    assert_eq!(pings.len(), 2);
    assert_eq!(
        crate::oracle::verify_webhook(SECRET, &pings[1].headers, &pings[1].body, Utc::now()),
        Ok("ping".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_each_mistake_it_knows_with_a_problem_naming_the_key_and_passes_warnings() {
    let receiver = Receiver::start().await;
    let now = Utc::now();
    let valid = certificate(
        &(now - Duration::days(1)).to_rfc3339(),
        &(now + Duration::days(365)).to_rfc3339(),
    );
    let merchant = Merchant::new(&receiver.url, &valid);
    assert!(merchant.kassa(&merchant.config, &["migrate"]).status.success());
    let good = merchant.doctor(&merchant.config, &merchant.app_public_key).await;
    assert_eq!(good.code, Some(0), "{}", good.stdout);

    let file = |name: &str, text: &str| {
        let path = merchant.path(name);
        write_private(&path, text);
        quoted(&path.display().to_string())
    };
    let not_pem = file(
        "not_a_key.pem",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC (the key, without its PEM lines)\n",
    );
    let expired = certificate("2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z");
    let expired = format!("[{}]", file("expired_cert.pem", &expired));
    let app_public_as_alipay = file("app_public_copy.pem", &vector_key("alipay_app_public.pem"));
    // A database whose every page but the first lost its b-tree page header.
    std::fs::create_dir_all(merchant.path("broken")).unwrap();
    let mut broken = std::fs::read(merchant.database()).unwrap();
    let page_size = usize::from(u16::from_be_bytes([broken[16], broken[17]]));
    for page in broken.chunks_mut(page_size).skip(1) {
        page[..8].fill(0x5a);
    }
    std::fs::write(merchant.path("broken/kassa.db"), broken).unwrap();
    let broken_dir = quoted(&merchant.path("broken").display().to_string());
    let down = Receiver::down();
    let skewed = clock_gateway(-Duration::minutes(10));
    let other_public_key = merchant.path("other_public.pem");
    std::fs::write(&other_public_key, vector_key("wechat_merchant_public.pem")).unwrap();

    let apiv3_31 = quoted(&"k".repeat(31));
    let unreachable = quoted(&down.url);
    let skewed = quoted(&skewed);
    let mistakes: &[(&str, &str, &str, &Path)] = &[
        (
            "alipay.app_private_key_file",
            "a key file without PEM lines",
            &not_pem,
            &merchant.app_public_key,
        ),
        (
            "alipay.app_private_key_file",
            "an app key that is not the registered one",
            "",
            &other_public_key,
        ),
        (
            "alipay.alipay_public_key_file",
            "the app's own public key as Alipay's",
            &app_public_as_alipay,
            &merchant.app_public_key,
        ),
        (
            "wechat.apiv3_key",
            "a 31-byte APIv3 key",
            &apiv3_31,
            &merchant.app_public_key,
        ),
        (
            "wechat.platform_certificate_files",
            "a certificate that expired in 2021",
            &expired,
            &merchant.app_public_key,
        ),
        (
            "wechat.platform_public_key_id",
            "a key id without PUB_KEY_ID_",
            "\"0114232134912410\"",
            &merchant.app_public_key,
        ),
        (
            "server.public_url",
            "plain http",
            "\"http://pay.example.com\"",
            &merchant.app_public_key,
        ),
        (
            "server.public_url",
            "a loopback address",
            "\"https://127.0.0.1:8443\"",
            &merchant.app_public_key,
        ),
        (
            "server.public_url",
            "localhost",
            "\"https://localhost\"",
            &merchant.app_public_key,
        ),
        (
            "webhooks.url",
            "a shop that is down",
            &unreachable,
            &merchant.app_public_key,
        ),
        (
            "server.data_dir",
            "a corrupt database",
            &broken_dir,
            &merchant.app_public_key,
        ),
        (
            "alipay.gateway",
            "a clock 10 minutes ahead of the gateway's",
            &skewed,
            &merchant.app_public_key,
        ),
    ];
    for (key, mistake, value, app_public_key) in mistakes {
        let mut config = merchant.config.clone();
        if !value.is_empty() {
            config.insert((*key).to_owned(), (*value).to_owned());
        }
        let report = merchant.doctor(&config, app_public_key).await;
        assert_eq!(report.code, Some(1), "{mistake}: {}", report.stdout);
        assert_eq!(report.subjects("problem"), [*key], "{mistake}: {}", report.stdout);
        assert!(report.stdout.contains("fix: "), "{mistake}: {}", report.stdout);
    }

    // What deserves a warning does not fail the run.
    let soon = certificate(
        &(now - Duration::days(300)).to_rfc3339(),
        &(now + Duration::days(10)).to_rfc3339(),
    );
    let soon = format!("[{}]", file("soon_cert.pem", &soon));
    let shared = merchant.path("shared_key.pem");
    std::fs::write(&shared, vector_key("alipay_app_private_pkcs1.pem")).unwrap();
    // Other users may read it (the test runs where modes exist: kassa serves from Unix).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let shared = quoted(&shared.display().to_string());
    let warnings: &[(&str, Option<&str>)] = &[
        ("wechat.platform_certificate_files", Some(&soon)),
        ("webhooks.url", None),
        ("alipay.app_private_key_file", Some(&shared)),
    ];
    for (key, value) in warnings {
        let mut config = merchant.config.clone();
        match value {
            Some(v) => config.insert((*key).to_owned(), (*v).to_owned()),
            None => config.remove(*key),
        };
        let report = merchant.doctor(&config, &merchant.app_public_key).await;
        assert_eq!(report.code, Some(0), "{key}: {}", report.stdout);
        assert_eq!(report.subjects("warning"), [*key], "{}", report.stdout);
        assert!(report.subjects("problem").is_empty(), "{}", report.stdout);
    }
}
