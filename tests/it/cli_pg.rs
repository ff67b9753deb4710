//! The real `kassa` binary's commands on PostgreSQL, each test on a schema of its own
//! (`PgSchema`). They run when `KASSA_TEST_PG_URL` is set, else print
//! `skipped: KASSA_TEST_PG_URL not set` and pass. Every URL carries a password the
//! server does not ask for (the test cluster trusts local sockets), so that any output
//! showing it fails the test.

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use chrono::{Duration, Utc};
use kassa::db::{Database, DbTarget};

use crate::cli::{kassa, run, seed_export_orders, text};
use crate::pg_schema::{PgSchema, SKIPPED};

const PASSWORD: &str = "unasked-pw-7";

/// A schema of this test's own and a working directory, or None when the tests do not
/// run on PostgreSQL.
fn setup() -> Option<(PgSchema, tempfile::TempDir)> {
    let Some(schema) = PgSchema::new() else {
        println!("{SKIPPED}");
        return None;
    };
    Some((schema, tempfile::tempdir().unwrap()))
}

/// The schema's URL with a password in its user part.
fn url(schema: &PgSchema) -> String {
    let url = schema.url();
    let (scheme, rest) = url.split_once("://").unwrap();
    match rest.split_once('@') {
        Some((user, host)) => format!("{scheme}://{user}:{PASSWORD}@{host}"),
        None => format!("{scheme}://kassa:{PASSWORD}@{rest}"),
    }
}

/// `kassa <args>` on the schema, `input` on its standard input. Asserts that nothing it
/// printed shows the password.
fn kassa_on(schema: &PgSchema, dir: &Path, args: &[&str], input: &str) -> Output {
    let mut child = kassa(dir)
        .args(args)
        .env("KASSA_DATABASE_URL", url(schema))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!said.contains(PASSWORD), "{args:?}: {said}");
    out
}

/// As `kassa_on`, which must succeed; its standard output.
fn ok(schema: &PgSchema, dir: &Path, args: &[&str], input: &str) -> String {
    let out = kassa_on(schema, dir, args, input);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

fn tables_in(schema: &PgSchema) -> String {
    schema
        .value(&format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = '{}'",
            schema.schema()
        ))
        .unwrap()
}

fn latest() -> i64 {
    kassa::db::migrations::latest_version()
}

/// Nothing under the working directory: on PostgreSQL the commands keep no file.
fn assert_empty(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn migrate_applies_every_migration_once_and_then_finds_the_schema_up_to_date() {
    let Some((schema, dir)) = setup() else { return };

    let first = ok(&schema, dir.path(), &["migrate"], "");
    let again = kassa_on(&schema, dir.path(), &["migrate"], "");
    let second = text(&again.stdout);

    // Not even the server's NOTICE that the version table exists.
    assert!(
        again.status.success() && again.stderr.is_empty(),
        "{}",
        text(&again.stderr)
    );

    assert!(first.starts_with("applied migrations to postgres"), "{first}");
    assert!(first.contains("0001_init") && first.contains(":***@"), "{first}");
    assert!(second.contains("is up to date"), "{second}");
    assert_eq!(
        schema.value("SELECT MAX(version) FROM schema_migrations"),
        Some(latest().to_string())
    );
    assert_eq!(
        schema.value("SELECT COUNT(*) FROM schema_migrations"),
        Some(latest().to_string())
    );
    assert_empty(dir.path());
}

#[test]
fn api_keys_are_created_listed_and_revoked_from_the_command_line() {
    let Some((schema, dir)) = setup() else { return };

    // Creating migrates a database no server has started on yet.
    let key = ok(&schema, dir.path(), &["apikey", "create", "shop"], "");
    let key = key.trim();
    assert!(key.starts_with("kassa_sk_"), "{key}");
    let twice = kassa_on(&schema, dir.path(), &["apikey", "create", "shop"], "");
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        text(&twice.stderr).contains("already exists"),
        "{}",
        text(&twice.stderr)
    );
    let listed = ok(&schema, dir.path(), &["apikey", "list"], "");
    let revoked = ok(&schema, dir.path(), &["apikey", "revoke", "shop"], "");
    let again = kassa_on(&schema, dir.path(), &["apikey", "revoke", "shop"], "");
    let listed_after = ok(&schema, dir.path(), &["apikey", "list"], "");

    let row = |listing: &str| {
        listing
            .lines()
            .find(|l| l.starts_with("shop "))
            .unwrap_or_else(|| panic!("{listing}"))
            .to_owned()
    };
    assert!(row(&listed).trim_end().ends_with("active"), "{listed}");
    assert!(row(&listed).contains(&key[..15]), "{listed}");
    assert!(revoked.contains("revoked API key \"shop\""), "{revoked}");
    assert_eq!(again.status.code(), Some(1));
    assert!(row(&listed_after).contains("revoked 20"), "{listed_after}");
    assert_eq!(
        schema.query("SELECT name, revoked_at IS NOT NULL FROM api_keys"),
        [[Some("shop".to_owned()), Some("t".to_owned())]]
    );
    assert_empty(dir.path());
}

#[test]
fn staff_users_are_added_given_a_new_password_and_removed_each_with_its_audit_row() {
    let Some((schema, dir)) = setup() else { return };

    let added = ok(
        &schema,
        dir.path(),
        &["admin", "add", "bob", "--role", "operator"],
        "correct horse battery\n",
    );
    let hash =
        |schema: &PgSchema| schema.value("SELECT password_hash FROM admin_users WHERE username = 'bob'");
    let first_hash = hash(&schema);
    let changed = ok(
        &schema,
        dir.path(),
        &["admin", "passwd", "bob"],
        "another good password\n",
    );
    let second_hash = hash(&schema);
    let unknown = kassa_on(
        &schema,
        dir.path(),
        &["admin", "passwd", "nobody"],
        "another good password\n",
    );
    let removed = ok(&schema, dir.path(), &["admin", "remove", "bob"], "");

    assert!(added.contains("added \"bob\" as operator"), "{added}");
    assert!(changed.contains("password of \"bob\" changed"), "{changed}");
    assert!(first_hash.is_some() && second_hash.is_some() && first_hash != second_hash);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("no admin user named \"nobody\""));
    assert!(removed.contains("removed \"bob\""), "{removed}");
    assert_eq!(
        schema.value("SELECT COUNT(*) FROM admin_users WHERE username = 'bob'"),
        Some("0".to_owned())
    );
    assert_eq!(
        schema.query("SELECT actor, action, outcome FROM audit_log ORDER BY id"),
        [
            ["cli", "user.create", "done"],
            ["cli", "user.password", "done"],
            ["cli", "user.remove", "done"],
        ]
        .map(|row| row.map(|cell| Some(cell.to_owned())))
    );
    assert_empty(dir.path());
}

#[test]
fn export_orders_streams_the_orders_of_a_postgresql_database_as_csv() {
    let Some((schema, dir)) = setup() else { return };
    let empty = kassa_on(&schema, dir.path(), &["export", "orders"], "");
    let target = DbTarget::parse(&schema.url()).unwrap();
    let db = Database::open_target(&target).unwrap();
    seed_export_orders(&db, 500, "pg", Duration::minutes(6));
    drop(db);

    let all = kassa_on(&schema, dir.path(), &["export", "orders"], "");
    // 2026-11-02 in Shanghai is 2026-11-01T16:00Z .. 2026-11-02T16:00Z: minutes 960 to
    // 2400 of the six-minute slots, i = 160 to 399.
    let mut day = kassa(dir.path());
    day.args(["export", "orders", "--from", "2026-11-02", "--to", "2026-11-02"])
        .env("KASSA_DATABASE_URL", url(&schema))
        .env("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai");
    let day = run(&mut day);

    assert_eq!(empty.status.code(), Some(1));
    assert!(
        text(&empty.stderr).contains("no kassa database at postgres"),
        "{}",
        text(&empty.stderr)
    );
    assert!(all.status.success(), "{}", text(&all.stderr));
    let mut reader = csv::Reader::from_reader(&all.stdout[..]);
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 500);
    assert_eq!(&rows[0][col("out_trade_no")], "pg-00000");
    assert_eq!(&rows[0][col("subject")], "'=SUM(A1)");
    assert_eq!(&rows[123][col("amount")], "1.24");
    assert_eq!(&rows[1][col("subject")], "Tea, \"green\" #1");
    assert_eq!(&rows[0][col("created_at_utc")], "2026-11-01T00:00:00Z");
    assert!(day.status.success(), "{}", text(&day.stderr));
    let day: Vec<csv::StringRecord> = csv::Reader::from_reader(&day.stdout[..])
        .records()
        .map(Result::unwrap)
        .collect();
    assert_eq!(day.len(), 240);
    assert_eq!(&day[0][col("created_at")], "2026-11-02T00:00:00+08:00");
    assert_empty(dir.path());
}

#[tokio::test]
async fn the_webhook_secret_is_made_once_rotated_signs_a_test_ping_with_both_and_failed_deliveries_are_resent(
) {
    let Some((schema, dir)) = setup() else { return };

    let first = ok(&schema, dir.path(), &["webhooks", "secret"], "");
    let again = ok(&schema, dir.path(), &["webhooks", "secret"], "");
    let rotated = ok(&schema, dir.path(), &["webhooks", "rotate-secret"], "");
    let receiver = crate::receiver::Receiver::start().await;
    let (at, to, database) = (dir.path().to_owned(), receiver.url.clone(), url(&schema));
    // Off the runtime: the receiver answers on it while the command waits.
    let tested = tokio::task::spawn_blocking(move || {
        run(kassa(&at)
            .env("KASSA_DATABASE_URL", database)
            .env("KASSA_WEBHOOKS_ALLOW_PRIVATE", "true")
            .args(["webhooks", "test", "--url", &to]))
    })
    .await
    .unwrap();
    let resent = ok(
        &schema,
        dir.path(),
        &["webhooks", "resend", "--failed-since", "2026-01-01"],
        "",
    );
    let unknown = kassa_on(
        &schema,
        dir.path(),
        &["webhooks", "resend", "--id", "msg_nope"],
        "",
    );
    let status = ok(&schema, dir.path(), &["webhooks", "status"], "");

    let first = first.trim();
    assert!(first.starts_with("whsec_"), "{first}");
    assert_eq!(again.trim(), first);
    let new = rotated.lines().next().unwrap();
    assert!(new.starts_with("whsec_") && new != first, "{rotated}");
    assert!(rotated.contains("also with the previous one"), "{rotated}");
    // The old secret is kept until it retires; the new one has no retirement.
    assert_eq!(
        schema.query("SELECT secret, retire_at IS NOT NULL FROM webhook_secrets ORDER BY id"),
        [
            [Some(first.to_owned()), Some("t".to_owned())],
            [Some(new.to_owned()), Some("f".to_owned())],
        ]
    );
    assert!(tested.status.success(), "{}", text(&tested.stderr));
    assert!(!text(&tested.stderr).contains(PASSWORD));
    assert!(
        text(&tested.stdout).contains("answer: HTTP 200"),
        "{}",
        text(&tested.stdout)
    );
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    for secret in [first, new] {
        assert_eq!(
            crate::oracle::verify_webhook(secret, &got[0].headers, &got[0].body, Utc::now()),
            Ok("ping".into())
        );
    }
    // The endpoint answered: recorded healthy.
    assert_eq!(
        schema.query("SELECT url, failing_since IS NULL FROM webhook_endpoints"),
        [[Some(receiver.url.clone()), Some("t".to_owned())]]
    );
    assert!(resent.contains("queued 0 failed webhook(s)"), "{resent}");
    assert_eq!(unknown.status.code(), Some(1));
    assert!(status.contains("deliveries:\n  none yet"), "{status}");
    assert!(status.contains(&format!("{}  ok", receiver.url)), "{status}");
    assert_empty(dir.path());
}

/// Doctor's line about the database, and its exit code.
fn doctor(schema: &PgSchema, dir: &Path) -> (String, Option<i32>, String) {
    let out = kassa_on(schema, dir, &["doctor"], "");
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("database.url:"))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_owned();
    (line, out.status.code(), stdout)
}

#[test]
fn doctor_shows_the_server_version_and_schema_version_and_never_migrates() {
    let Some((schema, dir)) = setup() else { return };
    let server = schema.value("SHOW server_version").unwrap();

    let (before, before_code, _) = doctor(&schema, dir.path());
    let tables_after_doctor = tables_in(&schema);
    ok(&schema, dir.path(), &["migrate"], "");
    let (migrated, migrated_code, report) = doctor(&schema, dir.path());
    schema
        .execute(&format!(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ({}, 'from_the_future', 0)",
            latest() + 1
        ))
        .unwrap();
    let (newer, newer_code, newer_report) = doctor(&schema, dir.path());

    assert!(
        before.starts_with("warning  database.url: postgres")
            && before.contains(&format!("(PostgreSQL {server})"))
            && before.contains("no kassa schema there yet (doctor does not create one)"),
        "{before}"
    );
    assert_eq!(before_code, Some(0));
    assert_eq!(tables_after_doctor, "0", "doctor created tables");
    assert!(
        migrated.starts_with("ok       database.url: postgres")
            && migrated.contains(":***@")
            && migrated.contains(&format!(
                ": PostgreSQL {server}, schema version {} (this kassa: {})",
                latest(),
                latest()
            )),
        "{migrated}"
    );
    assert_eq!(migrated_code, Some(0), "{report}");
    assert!(
        newer_report.lines().any(|l| l
            .starts_with("problem  database.url: the database was written by a newer kassa")
            && l.contains(&format!("schema {}", latest() + 1))),
        "{newer_report}"
    );
    assert!(
        newer.contains(&format!("schema version {}", latest() + 1)),
        "{newer}"
    );
    assert_eq!(newer_code, Some(1));
    // Doctor only read: the future version is still the newest, nothing was applied.
    assert_eq!(
        schema.value("SELECT COUNT(*) FROM schema_migrations"),
        Some((latest() + 1).to_string())
    );
    assert_empty(dir.path());
}
