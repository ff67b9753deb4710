//! The real `kassa` binary: configuration errors, API keys, backup and export.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use chrono::{Duration, TimeZone, Utc};
use kassa::db::{orders, Database};
use kassa::domain::ids::OrderId;
use kassa::domain::{Amount, Currency, NewOrder, OutTradeNo, ProviderKind};
use serde_json::Value;

use crate::helpers::TestApp;

/// The binary with a clean environment: no inherited KASSA_* and no kassa.toml.
fn kassa(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kassa"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("kassa runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server process, killed on drop.
struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(dir: &Path, env: &[(&str, &str)]) -> Server {
    let mut child = kassa(dir)
        .args(["--bind", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    // Keep draining so the server never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let address = first
        .strip_prefix("kassa listening on ")
        .expect("prints its address")
        .to_owned();
    let server = Server { child, address };
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("{}/healthz", server.address))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return server;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("server never became healthy");
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["apikey", "--help"],
        &["apikey", "create", "--help"],
        &["apikey", "list", "--help"],
        &["apikey", "revoke", "--help"],
        &["backup", "--help"],
        &["export", "--help"],
        &["export", "orders", "--help"],
        &["config", "--help"],
        &["webhooks", "--help"],
        &["webhooks", "secret", "--help"],
        &["webhooks", "rotate-secret", "--help"],
        &["webhooks", "resend", "--help"],
        &["webhooks", "test", "--help"],
        &["webhooks", "status", "--help"],
    ] {
        let out = run(kassa(dir.path()).args(args));
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage:"), "{args:?}");
    }
}

#[test]
fn a_bad_setting_stops_start_up_naming_key_problem_and_source() {
    let dir = tempfile::tempdir().unwrap();

    let out = run(kassa(dir.path()).env("KASSA_SERVER_BIND", "localhost"));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("server.bind") && err.contains("environment variable KASSA_SERVER_BIND"),
        "{err}"
    );
    assert!(err.contains("\"localhost\""), "{err}");

    std::fs::write(
        dir.path().join("kassa.toml"),
        "[merchant]\ntimezone = \"Mars/Olympus\"\n",
    )
    .unwrap();
    let out = run(&mut kassa(dir.path()));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("merchant.timezone") && err.contains("config file kassa.toml"),
        "{err}"
    );

    let out = run(kassa(dir.path()).args(["--bind", "127.0.0.1:99999"]));
    let err = text(&out.stderr);
    assert!(
        err.contains("server.bind") && err.contains("command-line flag --bind"),
        "{err}"
    );

    std::fs::write(dir.path().join("broken.toml"), "[server\n").unwrap();
    let out = run(kassa(dir.path()).args(["--config", "broken.toml", "config"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("broken.toml"), "{}", text(&out.stderr));
}

#[test]
fn config_shows_sources_warns_about_unknown_variables_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kassa.toml"),
        "[merchant]\nname = \"Tea House\"\n",
    )
    .unwrap();
    let out = run(kassa(dir.path())
        .arg("config")
        .env("KASSA_WEBHOOKS_SECRET", "whsec_c2VjcmV0c2VjcmV0c2VjcmV0")
        .env("KASSA_MERCHANT_NAEM", "typo"));
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("merchant.name = \"Tea House\"    # config file kassa.toml"),
        "{stdout}"
    );
    assert!(
        stdout.contains("webhooks.secret = \"***\"    # environment variable KASSA_WEBHOOKS_SECRET"),
        "{stdout}"
    );
    assert!(!stdout.contains("c2VjcmV0"), "secret printed");
    assert!(
        text(&out.stderr).contains("KASSA_MERCHANT_NAEM"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn an_api_key_created_by_the_cli_opens_the_api_of_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &[("KASSA_SANDBOX_ENABLED", "false")]).await;

    let created = run(kassa(dir.path()).args(["apikey", "create", "shop"]));
    assert!(created.status.success(), "{}", text(&created.stderr));
    let key = text(&created.stdout).trim().to_owned();
    assert!(key.starts_with("kassa_sk_") && key.len() > 40, "{key}");

    let client = reqwest::Client::new();
    let listed = client
        .get(format!("{}/api/v1/orders", server.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    // With the sandbox off and no provider configured, creating an order says what to enable.
    let body =
        serde_json::json!({"out_trade_no": "o1", "amount": 100, "subject": "Tea", "provider": "alipay"});
    let response = client
        .post(format!("{}/api/v1/orders", server.address))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["field"], "provider");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("[alipay]") && message.contains("[wechat]"),
        "{message}"
    );

    let list = run(kassa(dir.path()).args(["apikey", "list"]));
    let list = text(&list.stdout);
    assert!(list.contains("shop") && list.contains("active"), "{list}");
    assert!(!list.contains(&key), "the key is never shown again");

    let again = run(kassa(dir.path()).args(["apikey", "create", "shop"]));
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already exists"));

    let revoked = run(kassa(dir.path()).args(["apikey", "revoke", "shop"]));
    assert!(revoked.status.success());
    let after = client
        .get(format!("{}/api/v1/orders", server.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    let missing = run(kassa(dir.path()).args(["apikey", "revoke", "shop"]));
    assert!(!missing.status.success());
    let bad_name = run(kassa(dir.path()).args(["apikey", "create", "no spaces"]));
    assert!(!bad_name.status.success());
}

#[tokio::test]
async fn backup_makes_a_consistent_copy_while_the_server_takes_writes() {
    let app = TestApp::spawn().await;
    let writer = {
        let (client, url, key) = (app.client.clone(), app.url("/api/v1/orders"), app.api_key.clone());
        tokio::spawn(async move {
            for i in 0..150 {
                let body = crate::helpers::order_body(&format!("bk-{i}"), 100 + i);
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        })
    };
    let data_dir = app.data_dir.display().to_string();
    let out_dir = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for n in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        let target = out_dir.path().join(format!("copy-{n}.db"));
        let out = tokio::task::spawn_blocking({
            let (data_dir, target) = (data_dir.clone(), target.clone());
            move || {
                run(kassa(Path::new("/"))
                    .args(["--data-dir", &data_dir, "backup"])
                    .arg(&target))
            }
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("integrity_check: ok"));
        copies.push(target);
    }
    writer.await.unwrap();

    let mut counts = Vec::new();
    for copy in &copies {
        assert!(
            !copy.with_extension("db-wal").exists()
                || std::fs::metadata(copy.with_extension("db-wal")).unwrap().len() == 0
        );
        let db = Database::open(copy).unwrap();
        let check: String = db
            .read_blocking(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(check, "ok");
        counts.push(db.read_blocking(orders::count).unwrap());
    }
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");

    let again = run(kassa(Path::new("/"))
        .args(["--data-dir", &data_dir, "backup"])
        .arg(&copies[0]));
    assert!(
        !again.status.success(),
        "existing file not overwritten without --force"
    );
    assert!(text(&again.stderr).contains("--force"));
    let forced = run(kassa(Path::new("/"))
        .args(["--data-dir", &data_dir, "backup", "--force"])
        .arg(&copies[0]));
    assert!(forced.status.success());
    let final_count = Database::open(&copies[0])
        .unwrap()
        .read_blocking(orders::count)
        .unwrap();
    assert_eq!(final_count, 150);
}

#[test]
fn export_streams_ten_thousand_orders_as_csv_with_local_and_utc_times() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&dir.path().join("kassa.db")).unwrap();
    let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    db.write_blocking(move |c| {
        for i in 0..10_000i64 {
            let created = start + Duration::minutes(i * 3);
            let order = NewOrder {
                id: OrderId::generate(),
                out_trade_no: OutTradeNo::parse(&format!("exp-{i:05}")).unwrap(),
                amount: Amount::from_minor(i + 1, Currency::Cny).unwrap(),
                subject: if i == 0 {
                    "=SUM(A1)".into()
                } else {
                    format!("Tea, \"green\" #{i}")
                },
                provider: ProviderKind::Alipay,
                notify_url: None,
                return_url: None,
                metadata: Default::default(),
                created_at: created,
                expires_at: created + Duration::minutes(15),
            };
            orders::insert(c, &order, Some("qr"))?;
        }
        Ok(())
    })
    .unwrap();
    drop(db);

    let out = run(kassa(dir.path())
        .args(["--data-dir", ".", "export", "orders"])
        .env("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai"));

    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut reader = csv::Reader::from_reader(&out.stdout[..]);
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        &header[..6],
        ["id", "out_trade_no", "provider", "status", "amount", "currency"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 10_000);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][col("amount")], "0.01");
    assert_eq!(&rows[0][col("subject")], "'=SUM(A1)");
    assert_eq!(&rows[1234][col("amount")], "12.35");
    assert_eq!(&rows[1][col("subject")], "Tea, \"green\" #1");
    assert_eq!(&rows[0][col("created_at")], "2026-11-01T08:00:00+08:00");
    assert_eq!(&rows[0][col("created_at_utc")], "2026-11-01T00:00:00Z");
    assert_eq!(&rows[0][col("paid_at")], "");

    // 2026-11-02 in Shanghai is 2026-11-01T16:00Z .. 2026-11-02T16:00Z: 480 three-minute slots.
    let out = run(kassa(dir.path())
        .args([
            "--data-dir",
            ".",
            "export",
            "orders",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-02",
        ])
        .env("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai"));
    let day: Vec<csv::StringRecord> = csv::Reader::from_reader(&out.stdout[..])
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(day.len(), 480);
    assert_eq!(&day[0][col("created_at")], "2026-11-02T00:00:00+08:00");

    let bad = run(kassa(dir.path()).args(["--data-dir", ".", "export", "orders", "--from", "last week"]));
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("--from"));
}

#[tokio::test]
async fn out_of_the_box_the_binary_takes_orders_through_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &[]).await;
    let created = run(kassa(dir.path()).args(["apikey", "create", "shop"]));
    let key = text(&created.stdout).trim().to_owned();
    let client = reqwest::Client::new();

    let body =
        serde_json::json!({"out_trade_no": "o1", "amount": 100, "subject": "Tea", "provider": "alipay"});
    let response = client
        .post(format!("{}/api/v1/orders", server.address))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 201);
    let order: Value = response.json().await.unwrap();
    let qr = order["qr_code"].as_str().unwrap();
    assert!(
        qr.starts_with(&format!("{}/sandbox/wallet/", server.address)),
        "{qr}"
    );
    let private = std::fs::metadata(dir.path().join("data/sandbox/alipay_app_private.pem")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        private.permissions().mode() & 0o777,
        0o600,
        "generated private keys are private"
    );
}

#[tokio::test]
async fn webhooks_secret_rotate_test_and_resend_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let secret = |dir: &Path| {
        text(&run(kassa(dir).args(["webhooks", "secret"])).stdout)
            .trim()
            .to_owned()
    };
    let first = secret(dir.path());
    assert!(first.starts_with("whsec_"), "{first}");
    assert_eq!(secret(dir.path()), first, "generated once, then kept");

    let rotated = run(kassa(dir.path()).args(["webhooks", "rotate-secret"]));
    assert!(rotated.status.success());
    let new = text(&rotated.stdout).lines().next().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != first);
    assert!(text(&rotated.stdout).contains("also with the previous one"));
    assert_eq!(secret(dir.path()), new);

    let receiver = crate::receiver::Receiver::start().await;
    let url = receiver.url.clone();
    let (d, u) = (dir.path().to_owned(), url.clone());
    let tested = tokio::task::spawn_blocking(move || run(kassa(&d).args(["webhooks", "test", "--url", &u])))
        .await
        .unwrap();
    assert!(tested.status.success(), "{}", text(&tested.stderr));
    assert!(
        text(&tested.stdout).contains("answer: HTTP 200"),
        "{}",
        text(&tested.stdout)
    );
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].headers["webhook-signature"]
            .as_str()
            .unwrap()
            .split(' ')
            .count(),
        2,
        "both secrets sign during the overlap"
    );
    for s in [&first, &new] {
        assert_eq!(
            crate::oracle::verify_webhook(s, &got[0].headers, &got[0].body, chrono::Utc::now()),
            Ok("ping".into())
        );
    }

    let bad = run(kassa(dir.path()).args(["webhooks", "test", "--url", "ftp://shop.example/"]));
    assert!(!bad.status.success() && text(&bad.stderr).contains("--url"));
    let none = run(kassa(dir.path()).args(["webhooks", "test"]));
    assert!(!none.status.success() && text(&none.stderr).contains("[webhooks] url"));
    let configured = run(kassa(dir.path())
        .args(["webhooks", "rotate-secret"])
        .env("KASSA_WEBHOOKS_SECRET", &first));
    assert!(!configured.status.success());
    assert!(text(&configured.stderr).contains("KASSA_WEBHOOKS_SECRET"));

    let resent = run(kassa(dir.path()).args(["webhooks", "resend", "--failed-since", "2026-01-01"]));
    assert!(resent.status.success());
    assert!(text(&resent.stdout).contains("queued 0 failed webhook(s)"));
    let unknown = run(kassa(dir.path()).args(["webhooks", "resend", "--id", "msg_nope"]));
    assert!(!unknown.status.success());
    let neither = run(kassa(dir.path()).args(["webhooks", "resend"]));
    assert!(!neither.status.success());
}

#[tokio::test]
async fn the_running_binary_takes_a_sandbox_payment_all_the_way_to_a_signed_webhook() {
    let receiver = crate::receiver::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &[("KASSA_WEBHOOKS_URL", &receiver.url)]).await;
    let key = text(&run(kassa(dir.path()).args(["apikey", "create", "shop"])).stdout)
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    let body =
        serde_json::json!({"out_trade_no": "e2e-1", "amount": 1234, "subject": "Tea", "provider": "alipay"});
    let order: Value = client
        .post(format!("{}/api/v1/orders", server.address))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let qr = order["qr_code"].as_str().unwrap();

    client.get(qr).send().await.unwrap();
    client.post(format!("{qr}/pay")).send().await.unwrap();

    let mut delivered = Vec::new();
    for _ in 0..200 {
        delivered = receiver.received();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(delivered.len(), 1, "the shop heard about the payment");
    let secret = text(&run(kassa(dir.path()).args(["webhooks", "secret"])).stdout)
        .trim()
        .to_owned();
    assert_eq!(
        crate::oracle::verify_webhook(
            &secret,
            &delivered[0].headers,
            &delivered[0].body,
            chrono::Utc::now()
        ),
        Ok("order.paid".into())
    );
    let payload: Value = serde_json::from_str(&delivered[0].body).unwrap();
    assert_eq!(payload["data"]["id"], order["id"]);
    assert_eq!(payload["data"]["status"], "paid");
}

#[tokio::test]
async fn listening_on_all_interfaces_without_a_public_url_links_to_loopback_not_0_0_0_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = kassa(dir.path())
        .args(["--bind", "0.0.0.0:0"])
        .env("KASSA_SANDBOX_ENABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let public = lines.next().unwrap().unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let server = Server {
        child,
        address: first.strip_prefix("kassa listening on ").unwrap().to_owned(),
    };
    let port = server.address.rsplit(':').next().unwrap().to_owned();

    assert_eq!(public, format!("public URL: http://127.0.0.1:{port}"));
}
