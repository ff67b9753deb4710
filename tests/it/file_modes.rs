//! The data directory holds every order, the webhook secret, generated keys and API key
//! hashes: everything kassa creates there is its owner's only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::{kassa, run, start_server, start_server_logging_to, text};

/// Every directory and file under `root` (itself included) with its permission bits.
fn walk(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let meta = std::fs::metadata(root).unwrap();
    let mut out = vec![(root.to_owned(), meta.is_dir(), meta.permissions().mode() & 0o777)];
    if meta.is_dir() {
        for entry in std::fs::read_dir(root).unwrap() {
            out.extend(walk(&entry.unwrap().path()));
        }
    }
    out
}

#[tokio::test]
async fn every_directory_a_fresh_server_creates_in_its_data_directory_is_0700_and_every_file_0600() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The sandbox (on by default with no provider) writes its keys; a backup interval
    // writes the first periodic backup at start.
    let server = start_server(dir.path(), &[("KASSA_BACKUP_INTERVAL", "1h")]).await;
    let key = text(&run(kassa(dir.path()).args(["apikey", "create", "shop"])).stdout)
        .trim()
        .to_owned();
    let created = crate::helpers::http_client()
        .post(format!("{}/api/v1/orders", server.address))
        .bearer_auth(&key)
        .json(&json!({"out_trade_no": "modes-1", "amount": 100, "subject": "Tea", "provider": "alipay"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let on_demand = dir.path().join("copy.db");
    let backup = run(kassa(dir.path()).arg("backup").arg(&on_demand));
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    let backups = data.join("backups");
    for _ in 0..1200 {
        let written = std::fs::read_dir(&backups)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".db"))
            })
            .unwrap_or(false);
        if written {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let found = walk(&data);
    let names: Vec<String> = found
        .iter()
        .map(|(p, ..)| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    for expected in [
        "data",
        "data/kassa.db",
        "data/kassa.db-wal",
        "data/kassa.db-shm",
        "data/kassa.lock",
        "data/sandbox",
        "data/sandbox/alipay_app_private.pem",
        "data/backups",
    ] {
        assert!(names.iter().any(|n| n == expected), "no {expected} in {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("data/backups/kassa-") && n.ends_with(".db")),
        "no periodic backup in {names:?}"
    );
    assert!(
        names.iter().filter(|n| n.starts_with("data/sandbox/")).count() > 4,
        "{names:?}"
    );
    for (path, is_dir, mode) in found.iter().chain(&walk(&on_demand)) {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:o}", path.display());
    }
}

#[tokio::test]
async fn a_data_directory_left_readable_by_others_is_narrowed_to_0700_and_0600_at_start_with_one_log_line_and_its_data_intact(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("KASSA_BACKUP_INTERVAL", "1h")];
    let server = start_server(dir.path(), &env).await;
    let key = text(&run(kassa(dir.path()).args(["apikey", "create", "shop"])).stdout)
        .trim()
        .to_owned();
    let client = crate::helpers::http_client();
    let created: serde_json::Value = client
        .post(format!("{}/api/v1/orders", server.address))
        .bearer_auth(&key)
        .json(&json!({"out_trade_no": "loose-1", "amount": 100, "subject": "Tea", "provider": "alipay"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    crate::cli::eventually(
        std::time::Duration::from_secs(60),
        "the first periodic backup",
        || {
            std::fs::read_dir(data.join("backups"))
                .ok()?
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".db"))
                .then_some(())
        },
    )
    .await;
    // Killed, so the -wal and -shm stay behind as after a crash.
    drop(server);
    // As an earlier version (or a checkout's data/) left them.
    for (path, is_dir, _) in walk(&data) {
        let loose = if is_dir { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    let loose = walk(&data);
    let names: Vec<String> = loose
        .iter()
        .map(|(p, ..)| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    for expected in [
        "data/kassa.db-wal",
        "data/kassa.db-shm",
        "data/kassa.lock",
        "data/sandbox/token",
        "data/backups",
    ] {
        assert!(names.iter().any(|n| n == expected), "no {expected} in {names:?}");
    }
    assert!(loose.iter().all(|(_, _, mode)| mode & 0o044 != 0), "{loose:?}");

    let log_path = dir.path().join("second.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = start_server_logging_to(dir.path(), &env, log.into()).await;

    for (path, is_dir, mode) in walk(&data) {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("narrowed to owner-only"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    for (name, (_, is_dir, _)) in names.iter().zip(&loose) {
        let was = if *is_dir { "755→700" } else { "644→600" };
        assert!(
            lines[0].contains(&format!("{name} {was}")),
            "{name} not in {}",
            lines[0]
        );
    }
    let kept = client
        .get(format!("{}/api/v1/orders/{id}", server.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(kept.status(), 200);
    let kept: serde_json::Value = kept.json().await.unwrap();
    assert_eq!(kept["out_trade_no"], "loose-1");
}

#[tokio::test]
async fn a_backups_directory_that_links_to_a_shared_disk_is_left_as_the_operator_made_it_and_so_is_everything_in_it(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let shared = dir.path().join("shared-disk");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = shared.join("someone-elses-notes.txt");
    std::fs::write(&theirs, "not kassa's").unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&shared, data.join("backups")).unwrap();

    let server = start_server(dir.path(), &[]).await;
    let health = crate::helpers::http_client()
        .get(format!("{}/healthz", server.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    drop(server);

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&theirs), 0o644, "a file kassa did not make was narrowed");
    assert_eq!(
        mode(&shared),
        0o755,
        "the directory the link leads to was narrowed"
    );
    assert_eq!(
        mode(&data.join("kassa.db")),
        0o600,
        "kassa's own files are still private"
    );
}
