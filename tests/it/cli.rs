//! The real `kassa` binary: configuration errors, API keys, backup and export.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use chrono::{Duration, TimeZone, Utc};
use kassa::db::{orders, Database};
use kassa::domain::ids::OrderId;
use kassa::domain::{Amount, Currency, NewOrder, OutTradeNo, ProviderKind};
use serde_json::Value;

use crate::helpers::TestApp;

/// The binary with a clean environment: no inherited KASSA_* and no kassa.toml.
pub(crate) fn kassa(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kassa"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("kassa runs")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server process, killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn start_server(dir: &Path, env: &[(&str, &str)]) -> Server {
    start_server_logging_to(dir, env, Stdio::null()).await
}

/// Like `start_server`, with the log (stderr) going to `log`.
pub(crate) async fn start_server_logging_to(dir: &Path, env: &[(&str, &str)], log: Stdio) -> Server {
    let mut child = kassa(dir)
        .args(["--bind", "127.0.0.1:0"])
        // Test receivers listen on 127.0.0.1; a test may still turn this off.
        .env("KASSA_WEBHOOKS_ALLOW_PRIVATE", "true")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(log)
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
    let client = crate::helpers::http_client();
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

/// Sends `signal` (`-TERM`, `-INT`, …) to the server process.
pub(crate) fn send_signal(server: &Server, signal: &str) {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap()
        .success());
}

/// Sends `signal` and waits, off the async runtime, for the server to exit.
pub(crate) async fn stop_with_signal(mut server: Server, signal: &str) -> ExitStatus {
    send_signal(&server, signal);
    tokio::task::spawn_blocking(move || {
        let exit = server.child.wait().unwrap();
        drop(server);
        exit
    })
    .await
    .unwrap()
}

/// Creates a 1.00 Alipay order through the server's API; returns its id.
pub(crate) async fn create_order(server: &Server, key: &str, out_trade_no: &str) -> String {
    let created = crate::helpers::http_client()
        .post(format!("{}/api/v1/orders", server.address))
        .bearer_auth(key)
        .json(&serde_json::json!({"out_trade_no": out_trade_no, "amount": 100, "subject": "Tea", "provider": "alipay"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The order `id` as the server's API shows it.
pub(crate) async fn get_order(server: &Server, key: &str, id: &str) -> Value {
    crate::helpers::http_client()
        .get(format!("{}/api/v1/orders/{id}", server.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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
        &["admin", "--help"],
        &["admin", "passwd", "--help"],
        &["restore", "--help"],
        &["doctor", "--help"],
        &["healthcheck", "--help"],
    ] {
        let out = run(kassa(dir.path()).args(args));
        assert!(out.status.success(), "{args:?}");
        assert!(text(&out.stdout).contains("Usage:"), "{args:?}");
    }
    let config = text(&run(kassa(dir.path()).args(["config", "--help"])).stdout);
    assert!(config.contains("--example"), "{config}");
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

    let client = crate::helpers::http_client();
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

/// What a backup file holds: its integrity check, its orders, its paid orders, and the
/// rows that break the rule "a paid order has its history row and its outbox row, and
/// only a paid order has them" (a half-copied transition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    orders: i64,
    paid: i64,
    torn: i64,
}

fn snapshot(copy: &Path) -> Snapshot {
    assert_eq!(
        kassa::db::backup::integrity_check(copy).unwrap(),
        "ok",
        "{copy:?}"
    );
    let conn = rusqlite::Connection::open(copy).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let torn = count(
        "SELECT COUNT(*) FROM orders o WHERE o.status = 'paid' AND ( \
             (SELECT COUNT(*) FROM order_events e WHERE e.order_id = o.id \
                 AND e.transition = 'pay' AND e.outcome = 'applied' AND e.to_status = 'paid') != 1 \
             OR (SELECT COUNT(*) FROM webhook_outbox w WHERE w.order_id = o.id \
                 AND w.event_type = 'order.paid') != 1)",
    ) + count(
        "SELECT COUNT(*) FROM order_events e JOIN orders o ON o.id = e.order_id \
             WHERE e.to_status = 'paid' AND e.outcome = 'applied' AND o.status != 'paid'",
    ) + count(
        "SELECT COUNT(*) FROM webhook_outbox w JOIN orders o ON o.id = w.order_id \
             WHERE o.status != 'paid'",
    );
    Snapshot {
        orders: count("SELECT COUNT(*) FROM orders"),
        paid: count("SELECT COUNT(*) FROM orders WHERE status = 'paid'"),
        torn,
    }
}

async fn backup_to(data_dir: &Path, target: &Path, force: bool) -> Output {
    let (data_dir, target) = (data_dir.to_owned(), target.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut cmd = kassa(Path::new("/"));
        cmd.arg("--data-dir").arg(&data_dir).arg("backup");
        if force {
            cmd.arg("--force");
        }
        run(cmd.arg(&target))
    })
    .await
    .unwrap()
}

const BACKUP_WRITERS: i64 = 3;
const BACKUP_ORDERS_EACH: i64 = 40;

/// One round: writers create and pay orders over HTTP while `kassa backup` runs again
/// and again; then a last backup. Returns every snapshot in the order taken.
async fn backups_during_writes(out_dir: &Path, round: usize) -> (Vec<Snapshot>, Snapshot) {
    let app = TestApp::spawn().await;
    // Closing an order the provider reports paid records it paid: one transition with
    // its history and outbox rows, as a payment notification writes them.
    *app.provider.query_answer.lock().unwrap() = Ok(kassa::providers::TradeState::Paid(
        kassa::providers::PaymentFacts {
            provider_trade_no: None,
            paid_at: None,
            amount: 1000,
        },
    ));
    let writers: Vec<_> = (0..BACKUP_WRITERS)
        .map(|w| {
            let (client, base, key) = (app.client.clone(), app.address.clone(), app.api_key.clone());
            tokio::spawn(async move {
                for i in 0..BACKUP_ORDERS_EACH {
                    let body = crate::helpers::order_body(&format!("bk-{w}-{i}"), 1000);
                    let created = client
                        .post(format!("{base}/api/v1/orders"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(created.status(), 201);
                    let id = created.json::<Value>().await.unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    client
                        .post(format!("{base}/api/v1/orders/{id}/close"))
                        .bearer_auth(&key)
                        .send()
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut taken = Vec::new();
    let mut n = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        let target = out_dir.join(format!("round-{round}-copy-{n}.db"));
        n += 1;
        let out = backup_to(&app.data_dir, &target, false).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("integrity_check: ok"));
        taken.push(snapshot(&target));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let last = out_dir.join(format!("round-{round}-last.db"));
    let out = backup_to(&app.data_dir, &last, false).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let final_snapshot = snapshot(&last);

    // An existing file is kept unless --force.
    let before = std::fs::read(&last).unwrap();
    let again = backup_to(&app.data_dir, &last, false).await;
    assert!(
        !again.status.success(),
        "existing file overwritten without --force"
    );
    assert!(text(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(&last).unwrap(),
        before,
        "the refused backup left the file as it was"
    );
    let first = out_dir.join(format!("round-{round}-copy-0.db"));
    if first.exists() {
        let forced = backup_to(&app.data_dir, &first, true).await;
        assert!(forced.status.success(), "{}", text(&forced.stderr));
        assert_eq!(snapshot(&first), final_snapshot, "--force replaced the old copy");
    }
    (taken, final_snapshot)
}

#[tokio::test]
async fn a_backup_taken_while_orders_are_being_paid_is_a_consistent_snapshot_in_which_every_paid_order_has_its_history_and_outbox_rows(
) {
    // `kassa backup` copies a SQLite file; on PostgreSQL it refuses (`database_url`'s
    // tests), and the app the test would spawn runs there.
    if std::env::var(crate::pg_schema::URL_VAR).is_ok_and(|v| !v.trim().is_empty()) {
        println!("skipped on PostgreSQL: kassa backup copies a SQLite file");
        return;
    }
    let total = BACKUP_WRITERS * BACKUP_ORDERS_EACH;
    let out_dir = tempfile::tempdir().unwrap();
    // A round whose writes all finished before the first backup proves nothing about
    // backing up under writes; such a round is run again.
    for round in 0..3 {
        let (taken, last) = backups_during_writes(out_dir.path(), round).await;

        assert_eq!(
            last,
            Snapshot {
                orders: total,
                paid: total,
                torn: 0
            }
        );
        for s in &taken {
            assert_eq!(s.torn, 0, "a transition copied in part: {taken:?}");
            assert!(s.paid <= s.orders && s.orders <= total, "{taken:?}");
        }
        assert!(
            taken
                .windows(2)
                .all(|w| w[0].orders <= w[1].orders && w[0].paid <= w[1].paid),
            "backups taken later hold no less: {taken:?}"
        );
        if taken.iter().any(|s| 0 < s.orders && s.orders < total) {
            return;
        }
        eprintln!("round {round}: no backup landed while writes went on ({taken:?}); again");
    }
    panic!("in three rounds, no backup was taken while the writes went on");
}

/// `count` pending Alipay orders named `<prefix>-00000`…, one every `every` from
/// 2026-11-01 00:00 UTC; the first one's subject is a spreadsheet formula and the
/// others carry a comma and quotes, for what the CSV export must escape.
pub fn seed_export_orders(db: &Database, count: i64, prefix: &str, every: Duration) {
    let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    let prefix = prefix.to_owned();
    db.write_blocking(move |c| {
        for i in 0..count {
            let created = start + every * i as i32;
            let order = NewOrder {
                id: OrderId::generate(),
                out_trade_no: OutTradeNo::parse(&format!("{prefix}-{i:05}")).unwrap(),
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
}

#[test]
fn export_streams_ten_thousand_orders_as_csv_with_local_and_utc_times() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(&dir.path().join("kassa.db")).unwrap();
    seed_export_orders(&db, 10_000, "exp", Duration::minutes(3));
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
    let client = crate::helpers::http_client();

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
    let tested = tokio::task::spawn_blocking(move || {
        run(kassa(&d)
            .env("KASSA_WEBHOOKS_ALLOW_PRIVATE", "true")
            .args(["webhooks", "test", "--url", &u]))
    })
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
    let client = crate::helpers::http_client();
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

    let csrf = crate::helpers::open_wallet(&client, qr).await;
    client
        .post(format!("{qr}/pay"))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();

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
async fn listening_on_all_interfaces_without_a_public_url_links_to_loopback_not_0_0_0_0_and_prints_the_sandbox_token_it_wrote(
) {
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
    // Then the database, the providers and the sandbox line, in that order.
    let rest: Vec<String> = (0..3).map(|_| lines.next().unwrap().unwrap()).collect();
    std::thread::spawn(move || lines.for_each(drop));
    let server = Server {
        child,
        address: first.strip_prefix("kassa listening on ").unwrap().to_owned(),
    };
    let port = server.address.rsplit(':').next().unwrap().to_owned();

    assert_eq!(public, format!("public URL: http://127.0.0.1:{port}"));
    // On its first start the operator is told the token the fault switches need, and where it is kept.
    let sandbox = rest
        .iter()
        .find(|l| l.starts_with("sandbox: on"))
        .unwrap_or_else(|| panic!("no sandbox line: {rest:?}"));
    let written = std::fs::read_to_string(dir.path().join("data/sandbox/token")).unwrap();
    assert!(written.len() >= 16, "{written:?}");
    let printed = sandbox
        .split("X-Sandbox-Token: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap_or_else(|| panic!("no token in {sandbox}"));
    assert_eq!(printed, written, "{sandbox}");
    assert!(sandbox.contains("data/sandbox/token"), "{sandbox}");
}

/// The outbox row of `order_id`'s only event, read from the database file.
fn outbox_row(db: &Path, order_id: &str) -> kassa::db::outbox::OutboxRow {
    let db = kassa::db::Offline::open(db).unwrap();
    let id = OrderId::parse(order_id).unwrap();
    let events = db.read(|tx| kassa::db::outbox::list_for_order(tx, &id)).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    db.read(|tx| kassa::db::outbox::find_by_event_id(tx, &events[0].event_id))
        .unwrap()
        .unwrap()
}

/// Polls (the server works on its own clock) until `done`, failing after `limit`.
pub(crate) async fn eventually<T>(
    limit: std::time::Duration,
    what: &str,
    mut done: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(t) = done() {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_webhook_pending_when_the_server_is_killed_is_delivered_by_the_next_server_with_its_id_and_nothing_acknowledged_is_lost(
) {
    use std::os::unix::process::ExitStatusExt;

    let down = crate::receiver::Receiver::down();
    let url = down.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/kassa.db");
    // Many short steps: the delivery stays pending, tried every second, while the shop is down.
    let schedule = ["1s"; 100].join(",");
    let env = [
        ("KASSA_WEBHOOKS_URL", url.as_str()),
        ("KASSA_WEBHOOKS_RETRY_SCHEDULE", schedule.as_str()),
    ];
    let mut killed = start_server(dir.path(), &env).await;
    let key = text(&run(kassa(dir.path()).args(["apikey", "create", "shop"])).stdout)
        .trim()
        .to_owned();
    let client = crate::helpers::http_client();
    let mut ids = Vec::new();
    for out_trade_no in ["killed-closed", "killed-pending"] {
        let body = serde_json::json!({"out_trade_no": out_trade_no, "amount": 100, "subject": "Tea", "provider": "alipay"});
        let created = client
            .post(format!("{}/api/v1/orders", killed.address))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        ids.push(
            created.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let (closed, pending) = (ids[0].clone(), ids[1].clone());
    let close = client
        .post(format!("{}/api/v1/orders/{closed}/close", killed.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(close.status(), 200, "the close is acknowledged");
    // The killed server's dispatcher has tried the shop at least once.
    eventually(std::time::Duration::from_secs(30), "a first attempt", || {
        Some(()).filter(|()| outbox_row(&db, &closed).attempts >= 1)
    })
    .await;

    let pid = killed.child.id().to_string();
    let signalled = Command::new("kill").args(["-9", &pid]).status().unwrap();
    assert!(signalled.success());
    let exit = killed.child.wait().unwrap();
    assert_eq!(
        exit.signal(),
        Some(9),
        "the old process is gone, killed: {exit:?}"
    );
    drop(killed);

    let at_kill = outbox_row(&db, &closed);
    assert!(
        at_kill.status.as_str() == "pending" || at_kill.status.as_str() == "delivering",
        "{at_kill:?}"
    );
    assert!(
        at_kill
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("connection error")),
        "{at_kill:?}"
    );
    let receiver = down.start().await;
    let next = start_server(dir.path(), &env).await;

    // A row the killed server held in `delivering` waits for its lease (60 s) to run out.
    let got = eventually(std::time::Duration::from_secs(120), "the delivery", || {
        Some(receiver.received()).filter(|r| !r.is_empty())
    })
    .await;
    assert_eq!(got.len(), 1, "refused connections never reached the shop");
    assert_eq!(got[0].headers["webhook-id"], at_kill.event_id.as_str());
    let secret = text(&run(kassa(dir.path()).args(["webhooks", "secret"])).stdout)
        .trim()
        .to_owned();
    assert_eq!(
        crate::oracle::verify_webhook(&secret, &got[0].headers, &got[0].body, chrono::Utc::now()),
        Ok("order.closed".into())
    );
    let payload: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(payload["data"]["id"], closed.as_str());
    let delivered = eventually(
        std::time::Duration::from_secs(30),
        "the delivery recorded",
        || Some(outbox_row(&db, &closed)).filter(|r| r.status.as_str() == "delivered"),
    )
    .await;
    assert_eq!(
        delivered.attempts,
        at_kill.attempts + 1,
        "one more attempt, and it arrived"
    );

    for (id, status) in [(&closed, "closed"), (&pending, "pending")] {
        let order: Value = client
            .get(format!("{}/api/v1/orders/{id}", next.address))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(order["status"], status, "{order}");
    }
    let events: Value = client
        .get(format!("{}/api/v1/orders/{closed}/events", next.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let transitions: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["transition"].as_str().unwrap())
        .collect();
    assert_eq!(transitions, ["close"]);
}
