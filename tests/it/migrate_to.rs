//! `kassa migrate --to postgres://…` through the real binary: a SQLite shop that took
//! payments, refunds and webhook deliveries is copied into a PostgreSQL schema of the
//! test's own, and kassa started on that schema serves the same orders and takes new
//! ones. The PostgreSQL part runs when `KASSA_TEST_PG_URL` is set. Every URL carries a
//! password the server does not ask for, so that any output showing it fails the test.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

use crate::cli::{eventually, get_order, kassa, run, start_server, stop_with_signal, text, Server};
use crate::helpers::{install_sandbox_keys, open_wallet, order_body, raw_connection};
use crate::pg_schema::{PgSchema, SKIPPED};
use crate::receiver::Receiver;

/// Variables for one run of the binary.
type Env<'a> = &'a [(&'a str, &'a str)];

const PASSWORD: &str = "migrate-pw-3";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The schema's URL with a password in its user part.
fn url(schema: &PgSchema) -> String {
    let url = schema.url();
    let (scheme, rest) = url.split_once("://").unwrap();
    match rest.split_once('@') {
        Some((user, host)) => format!("{scheme}://{user}:{PASSWORD}@{host}"),
        None => format!("{scheme}://kassa:{PASSWORD}@{rest}"),
    }
}

/// `kassa migrate --to <to>` in `dir` (its SQLite database in `dir/data`), with `env`.
/// Asserts that nothing it printed shows the password.
fn migrate_to(dir: &Path, to: &str, env: &[(&str, &str)]) -> Output {
    let out = run(kassa(dir).args(["migrate", "--to", to]).envs(env.iter().copied()));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!said.contains(PASSWORD), "{said}");
    out
}

fn tables_in(schema: &PgSchema) -> i64 {
    schema
        .value(&format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{}'",
            schema.schema()
        ))
        .unwrap()
        .parse()
        .unwrap()
}

async fn post(server: &Server, key: &str, path: &str, body: &Value) -> reqwest::Response {
    crate::helpers::http_client()
        .post(format!("{}{path}", server.address))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Creates an order and returns its JSON.
async fn new_order(server: &Server, key: &str, out_trade_no: &str, amount: i64) -> Value {
    let created = post(server, key, "/api/v1/orders", &order_body(out_trade_no, amount)).await;
    assert_eq!(created.status(), 201, "creating {out_trade_no}");
    created.json().await.unwrap()
}

/// Pays `order` in the sandbox wallet and waits until kassa has the notification.
async fn pay(server: &Server, key: &str, order: &Value) {
    let client = crate::helpers::http_client();
    let qr_code = order["qr_code"].as_str().unwrap();
    let csrf = open_wallet(&client, qr_code).await;
    let paid = client
        .post(format!("{qr_code}/pay"))
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 303);
    let id = order["id"].as_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while get_order(server, key, id).await["status"] != "paid" {
        assert!(std::time::Instant::now() < deadline, "{id} was never paid");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `table: N rows, sha256 H` lines of the output, as (table, N, H).
fn sums(stdout: &str) -> Vec<(String, i64, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (table, rest) = line.split_once(": ")?;
            let (rows, sha) = rest.split_once(" rows, sha256 ")?;
            Some((table.to_owned(), rows.parse().ok()?, sha.to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn a_sqlite_shop_copied_to_postgresql_serves_the_same_orders_and_takes_new_ones() {
    let Some(schema) = PgSchema::new() else {
        println!("{SKIPPED}");
        return;
    };
    let to = url(&schema);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    install_sandbox_keys(&data);
    let receiver = Receiver::start().await;
    let env = [
        ("KASSA_SANDBOX_TIME_SCALE", "600"),
        ("KASSA_WEBHOOKS_URL", receiver.url.as_str()),
        ("KASSA_ADMIN_PASSWORD", "correct horse battery staple"),
    ];

    // A shop on SQLite: paid orders, a refund, one left pending, webhooks delivered.
    let server = start_server(dir.path(), &env).await;
    let key = text(&run(kassa(dir.path()).args(["apikey", "create", "shop"])).stdout)
        .trim()
        .to_owned();
    let mut ids = Vec::new();
    for (n, amount) in [(1, 1000), (2, 250), (3, 80)] {
        let order = new_order(&server, &key, &format!("mig-{n}"), amount).await;
        if n < 3 {
            pay(&server, &key, &order).await;
        }
        ids.push(order["id"].as_str().unwrap().to_owned());
    }
    let refund = post(
        &server,
        &key,
        &format!("/api/v1/orders/{}/refunds", ids[0]),
        &json!({"amount": 300, "reason": "one cup broken"}),
    )
    .await;
    assert_eq!(refund.status(), 201);
    // order.paid twice and order.partially_refunded.
    eventually(std::time::Duration::from_secs(30), "webhooks delivered", || {
        Some(()).filter(|()| receiver.received().len() >= 3)
    })
    .await;
    let mut before = Vec::new();
    for id in &ids {
        before.push(get_order(&server, &key, id).await);
    }
    assert_eq!(before[0]["refunded_amount"], 300);

    // Refused while the server holds the data directory: nothing is created on PostgreSQL.
    let refused = migrate_to(dir.path(), &to, &[]);
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    assert!(
        said.contains("a kassa server is running") && said.contains("stop it first"),
        "{said}"
    );
    assert_eq!(tables_in(&schema), 0);

    let stopped = stop_with_signal(server, "-TERM").await;
    assert!(stopped.success(), "{stopped:?}");

    let copied = migrate_to(dir.path(), &to, &[]);
    let stdout = text(&copied.stdout);
    assert!(copied.status.success(), "{}{stdout}", text(&copied.stderr));
    assert!(
        stdout.contains("every row count and checksum matches"),
        "{stdout}"
    );
    let printed = sums(&stdout);
    assert_eq!(printed.len(), kassa::db::copy::TABLES.len(), "{stdout}");
    let sqlite = raw_connection(&data.join("kassa.db"));
    for (table, rows, sha) in &printed {
        let in_sqlite: i64 = sqlite
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        let in_pg: i64 = schema
            .value(&format!("SELECT COUNT(*) FROM {table}"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!((*rows, *rows), (in_sqlite, in_pg), "{table}");
        assert_eq!(sha == EMPTY_SHA256, *rows == 0, "{table}: {sha}");
    }
    let rows_of = |table: &str| printed.iter().find(|p| p.0 == table).unwrap().1;
    assert_eq!(rows_of("orders"), 3);
    assert_eq!(rows_of("refunds"), 1);
    assert_eq!(rows_of("api_keys"), 1);
    assert_eq!(rows_of("admin_users"), 1);
    for table in [
        "notifications",
        "order_events",
        "webhook_outbox",
        "webhook_attempts",
        "provider_calls",
        "sandbox_trades",
    ] {
        assert!(
            rows_of(table) > 0,
            "{table} was empty: the test copies too little"
        );
    }

    // A second run refuses and changes nothing.
    let again = migrate_to(dir.path(), &to, &[]);
    assert!(!again.status.success());
    let said = text(&again.stderr);
    assert!(said.contains("not empty: orders has 3 row(s)"), "{said}");
    assert_eq!(sums(&text(&again.stdout)), []);
    assert_eq!(schema.value("SELECT COUNT(*) FROM orders").as_deref(), Some("3"));
    assert_eq!(schema.value("SELECT COUNT(*) FROM refunds").as_deref(), Some("1"));
    drop(sqlite);

    // kassa on PostgreSQL: the same orders, and new rows take ids after the copied ones.
    let on_pg = [env.as_slice(), &[("KASSA_DATABASE_URL", to.as_str())]].concat();
    let server = start_server(dir.path(), &on_pg).await;
    // All but the checkout link, which is built from the new server's address.
    let stored = |mut order: Value| {
        order.as_object_mut().unwrap().remove("checkout_url");
        order
    };
    for (id, was) in ids.iter().zip(&before) {
        assert_eq!(stored(get_order(&server, &key, id).await), stored(was.clone()));
    }
    let events = schema.value("SELECT MAX(id) FROM order_events").unwrap();
    let fresh = new_order(&server, &key, "mig-4", 120).await;
    pay(&server, &key, &fresh).await;
    let fresh_id = fresh["id"].as_str().unwrap();
    let newer: i64 = schema
        .value(&format!(
            "SELECT MIN(id) FROM order_events WHERE order_id = '{fresh_id}'"
        ))
        .unwrap()
        .parse()
        .unwrap();
    assert!(newer > events.parse::<i64>().unwrap());
    let refund = post(
        &server,
        &key,
        &format!("/api/v1/orders/{}/refunds", ids[1]),
        &json!({"amount": 250, "reason": "all of it"}),
    )
    .await;
    assert_eq!(refund.status(), 201);
    assert_eq!(get_order(&server, &key, &ids[1]).await["status"], "refunded");
    let stopped = stop_with_signal(server, "-TERM").await;
    assert!(stopped.success(), "{stopped:?}");
}

#[test]
fn migrate_to_refuses_a_target_that_is_no_postgresql_url_and_a_source_that_is_not_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there; every refusal comes before any connection.
    let to = format!("postgres://kassa:{PASSWORD}@127.0.0.1:1/kassa");
    let cases: [(&str, Env<'_>, &str); 4] = [
        ("data/other.db", &[], "--to takes a postgres:// URL"),
        ("jdbc:postgresql://h/db", &[], "--to looks like a URL"),
        (
            to.as_str(),
            &[("KASSA_DATABASE_URL", to.as_str())],
            "already PostgreSQL",
        ),
        (to.as_str(), &[], "no database at"),
    ];
    for (target, env, says) in cases {
        let out = migrate_to(dir.path(), target, env);
        assert!(!out.status.success(), "{target}");
        let said = text(&out.stderr);
        assert!(said.contains(says), "{target}: {said}");
    }
    // Nothing was created for the missing database.
    assert!(!dir.path().join("data/kassa.db").exists());
}

#[test]
fn migrate_to_refuses_a_sqlite_database_written_by_a_newer_kassa_and_leaves_it_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(kassa(dir.path()).arg("migrate")).status.success());
    let db = dir.path().join("data/kassa.db");
    raw_connection(&db)
        .pragma_update(None, "user_version", 999)
        .unwrap();
    // Refused before any connection: nothing listens there.
    let out = migrate_to(
        dir.path(),
        &format!("postgres://kassa:{PASSWORD}@127.0.0.1:1/kassa"),
        &[],
    );
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(said.contains("written by a newer kassa"), "{said}");
    let version: i64 = raw_connection(&db)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 999);
}
