//! The data directory holds every order, the webhook secret, generated keys and API key
//! hashes: everything kassa creates there is its owner's only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::cli::{kassa, run, start_server, text};

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
