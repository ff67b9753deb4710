//! The sandbox's keys live in the database's `secrets` table, so every kassa on one
//! database uses the same ones; the files under `data/sandbox/` are copies of the rows.
//! Through the binary, on data directories as a first start, an older kassa and a
//! second instance leave them.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kassa::sandbox::SANDBOX_APP_ID;
use serde_json::{json, Value};

use crate::cli::{create_order, get_order, kassa, run, start_server, start_server_logging_to, text, Server};
use crate::helpers::{install_sandbox_keys, raw_connection, trade_success};

/// Every file the sandbox keeps, each a row `sandbox/<file>`.
const FILES: [&str; 12] = [
    "alipay_app_private.pem",
    "alipay_app_public.pem",
    "alipay_platform_private.pem",
    "alipay_platform_public.pem",
    "token",
    "wechat_apiv3_key",
    "wechat_merchant_private.pem",
    "wechat_merchant_public.pem",
    "wechat_platform_cert.pem",
    "wechat_platform_cert_private.pem",
    "wechat_platform_private.pem",
    "wechat_platform_public.pem",
];

/// The `secrets` rows, by name (each is text; a value that is not is a failure).
fn rows(db: &Path) -> BTreeMap<String, String> {
    let conn = raw_connection(db);
    let mut stmt = conn.prepare("SELECT name, value FROM secrets").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap()
        .map(|row| {
            let (name, value) = row.unwrap();
            (name, String::from_utf8(value).unwrap())
        })
        .collect();
    rows
}

/// The sandbox's files, by the row name each copies.
fn files(data: &Path) -> BTreeMap<String, String> {
    FILES
        .iter()
        .map(|f| {
            let path = data.join("sandbox").join(f);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (format!("sandbox/{f}"), text)
        })
        .collect()
}

/// `left` and `right` hold the same names with the same values; a failure names the
/// ones that differ rather than printing every key.
fn assert_same(left: &BTreeMap<String, String>, right: &BTreeMap<String, String>, what: &str) {
    let names: std::collections::BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    let differ: Vec<&&String> = names.iter().filter(|n| left.get(**n) != right.get(**n)).collect();
    assert!(differ.is_empty(), "{what}: {differ:?} differ");
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// An API key made by the CLI (which creates and migrates the database if needed).
fn api_key(dir: &Path) -> String {
    let out = run(kassa(dir).args(["apikey", "create", "shop"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// Creates an order and posts a payment notification for it signed by
/// python-alipay-sdk with the test vectors' platform key; returns the order as the API
/// then shows it.
async fn pay_with_vector_key(server: &Server, key: &str, out_trade_no: &str) -> (String, Value) {
    let id = create_order(server, key, out_trade_no).await;
    let mut params = trade_success(&id, "1.00");
    params["app_id"] = json!(SANDBOX_APP_ID);
    params["auth_app_id"] = json!(SANDBOX_APP_ID);
    let body = tokio::task::spawn_blocking(move || crate::oracle::signed_notification(&params))
        .await
        .unwrap();
    let client = crate::helpers::http_client();
    let reply = client
        .post(format!("{}/notify/alipay", server.address))
        .header("content-type", "application/x-www-form-urlencoded; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    let answer = reply.text().await.unwrap();
    (answer, get_order(server, key, &id).await)
}

#[tokio::test]
async fn keys_made_on_a_first_start_are_stored_as_rows_and_a_restart_without_the_files_writes_them_back_byte_for_byte_and_owner_only(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("kassa.db");
    let key = api_key(dir.path());
    assert!(rows(&db).is_empty(), "the CLI makes no sandbox keys");
    let server = start_server(dir.path(), &[]).await;
    create_order(&server, &key, "first-1").await;
    drop(server);

    let stored = rows(&db);
    assert_eq!(
        stored.keys().cloned().collect::<Vec<_>>(),
        FILES.map(|f| format!("sandbox/{f}"))
    );
    assert_same(&files(&data), &stored, "the files are the rows");
    assert!(stored["sandbox/alipay_app_private.pem"].starts_with("-----BEGIN "));
    for f in FILES {
        std::fs::remove_file(data.join("sandbox").join(f)).unwrap();
    }

    let server = start_server(dir.path(), &[]).await;
    // kassa's client of the sandbox signs with the app key and checks the sandbox's
    // answer with the platform key: the precreate works only if both came back whole.
    create_order(&server, &key, "after-1").await;
    drop(server);

    assert_same(&files(&data), &stored, "written back from the rows");
    assert_same(&rows(&db), &stored, "the rows stay as they were");
    for f in FILES {
        let path = data.join("sandbox").join(f);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[tokio::test]
async fn an_older_data_directory_with_its_keys_only_in_files_and_a_version_10_database_has_them_imported_unchanged_and_its_platform_key_still_verifies(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("kassa.db");
    install_sandbox_keys(&data);
    std::fs::write(data.join("sandbox/token"), "an older kassa's token, 0123456789\n").unwrap();
    let before = files(&data);
    {
        // The schema as the release before `secrets` left it (version 10).
        let conn = raw_connection(&db);
        for (_, sql) in &kassa::db::migrations::MIGRATIONS[..10] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch("PRAGMA user_version = 10").unwrap();
    }

    let server = start_server(dir.path(), &[]).await;
    let key = api_key(dir.path());
    let (answer, order) = pay_with_vector_key(&server, &key, "older-1").await;
    drop(server);

    assert_eq!(answer, "success");
    assert_eq!(order["status"], "paid", "{order}");
    assert_same(&rows(&db), &before, "every file imported as it was");
    assert_same(&files(&data), &before, "and left as it was");
    for f in FILES {
        let path = data.join("sandbox").join(f);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    let version: i64 = raw_connection(&db)
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, kassa::db::migrations::latest_version());
}

#[tokio::test]
async fn a_start_on_a_database_whose_keys_another_kassa_stored_uses_those_rows_not_its_own_files_and_rewrites_the_stale_files(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("kassa.db");
    let key = api_key(dir.path());
    // Another kassa on this database stored the test vectors' Alipay platform pair.
    let vectors = format!("{}/tests/vectors/keys", env!("CARGO_MANIFEST_DIR"));
    let theirs = [
        (
            "sandbox/alipay_platform_private.pem",
            std::fs::read_to_string(format!("{vectors}/alipay_platform_private_pkcs8.pem")).unwrap(),
        ),
        (
            "sandbox/alipay_platform_public.pem",
            std::fs::read_to_string(format!("{vectors}/alipay_platform_public.pem")).unwrap(),
        ),
    ];
    {
        let conn = raw_connection(&db);
        for (name, value) in &theirs {
            conn.execute(
                "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, 0)",
                rusqlite::params![name, value.as_bytes()],
            )
            .unwrap();
        }
    }
    // This data directory still holds every key of its own, the platform pair a
    // different one.
    install_sandbox_keys(&data);
    std::fs::write(data.join("sandbox/token"), "this kassa's own token, 0123456789").unwrap();
    let (private, public) = kassa::providers::keys::generate_pem_pair().unwrap();
    std::fs::write(data.join("sandbox/alipay_platform_private.pem"), &private).unwrap();
    std::fs::write(data.join("sandbox/alipay_platform_public.pem"), &public).unwrap();
    let own = files(&data);

    let server = start_server(dir.path(), &[]).await;
    let (answer, order) = pay_with_vector_key(&server, &key, "shared-1").await;
    drop(server);

    assert_eq!(answer, "success", "verified with the stored platform key");
    assert_eq!(order["status"], "paid", "{order}");
    let stored = rows(&db);
    for (name, value) in &theirs {
        assert!(&stored[*name] == value, "{name} kept");
    }
    let now = files(&data);
    assert_same(&now, &stored, "every file is its row");
    for (name, value) in &own {
        if !name.starts_with("sandbox/alipay_platform_") {
            assert!(&now[name] == value, "{name}: its own file imported unchanged");
        }
    }
    assert!(
        own["sandbox/alipay_platform_private.pem"] != now["sandbox/alipay_platform_private.pem"],
        "the stale file was replaced"
    );
    for f in ["alipay_platform_private.pem", "alipay_platform_public.pem"] {
        assert_eq!(mode(&data.join("sandbox").join(f)), 0o600, "{f}");
    }
}

#[tokio::test]
async fn a_key_pair_with_one_row_deleted_is_refused_at_start_naming_the_row_and_no_row_or_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("kassa.db");
    drop(start_server(dir.path(), &[]).await);
    raw_connection(&db)
        .execute(
            "DELETE FROM secrets WHERE name = 'sandbox/alipay_app_public.pem'",
            [],
        )
        .unwrap();
    let (rows_before, files_before) = (rows(&db), files(&data));
    assert_eq!(rows_before.len(), FILES.len() - 1);

    let mut child = kassa(dir.path())
        .args(["--bind", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exit = tokio::task::spawn_blocking(move || {
        // A kassa that starts anyway is stopped here, so the test fails instead of hanging.
        for _ in 0..600 {
            if let Some(exit) = child.try_wait().unwrap() {
                return (exit, child);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.kill();
        (child.wait().unwrap(), child)
    })
    .await
    .unwrap();
    let (exit, mut child) = exit;
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();

    assert!(!exit.success(), "{exit:?}: {stderr}");
    assert!(
        stderr.contains("secrets row sandbox/alipay_app_public.pem is missing"),
        "{stderr}"
    );
    assert_same(&rows(&db), &rows_before, "no row added");
    assert_same(&files(&data), &files_before, "no file rewritten");
}

#[tokio::test]
async fn a_copy_edited_by_hand_or_linked_elsewhere_is_rewritten_from_its_row_at_the_next_start_with_one_warning_each_and_the_link_target_is_left_alone(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("kassa.db");
    drop(start_server(dir.path(), &[]).await);
    let stored = rows(&db);
    // A token pinned in the file, as an older kassa's README invited.
    std::fs::write(data.join("sandbox/token"), "a token pinned by hand, 0123456789\n").unwrap();
    // A public key linked to a shared disk that holds another one.
    let shared = dir.path().join("shared_public.pem");
    let (_, other_public) = kassa::providers::keys::generate_pem_pair().unwrap();
    std::fs::write(&shared, &other_public).unwrap();
    let linked = data.join("sandbox/alipay_app_public.pem");
    std::fs::remove_file(&linked).unwrap();
    std::os::unix::fs::symlink(&shared, &linked).unwrap();

    let log_path = dir.path().join("second.log");
    let log = std::fs::File::create(&log_path).unwrap();
    drop(start_server_logging_to(dir.path(), &[], log.into()).await);

    assert_same(&rows(&db), &stored, "the rows stay as they were");
    assert_same(&files(&data), &stored, "every file is its row again");
    assert!(!std::fs::symlink_metadata(&linked)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(mode(&linked), 0o600);
    assert_eq!(
        std::fs::read_to_string(&shared).unwrap(),
        other_public,
        "the target is left alone"
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    for (file, was_link) in [("token", false), ("alipay_app_public.pem", true)] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains(&format!(
                    "sandbox/{file} differed from its row sandbox/{file} in the database"
                ))
            })
            .collect();
        assert_eq!(lines.len(), 1, "{file}: {log}");
        assert!(lines[0].contains("WARN"), "{}", lines[0]);
        assert!(lines[0].contains("edit the row, not the file"), "{}", lines[0]);
        assert_eq!(lines[0].contains("it was a link"), was_link, "{}", lines[0]);
    }
    assert_eq!(log.matches("differed from its row").count(), 2, "{log}");
}
