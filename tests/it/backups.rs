//! Periodic backups (`[backup] interval`, `keep`), `kassa restore`, and the files'
//! permissions.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::Duration;
use kassa::db::backup::{integrity_check, list_periodic, parse_periodic_name, periodic_name};
use kassa::jobs::backup::{directory, try_run_once};

use crate::cli::{create_order, eventually, kassa, run, start_server, stop_with_signal, text, Server};
use crate::helpers::{install_sandbox_keys, TestApp};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn names(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect()
}

/// The out_trade_nos stored in the SQLite file at `path`.
fn out_trade_nos(path: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn
        .prepare("SELECT out_trade_no FROM orders ORDER BY out_trade_no")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn backup_rounds_are_named_by_time_never_clash_are_checked_rotate_only_their_own_files_and_failures_are_counted(
) {
    let app = TestApp::spawn_with(&[("KASSA_BACKUP_KEEP", "2")]).await;
    app.create_order("bk-round-1", 100).await;
    let dir = directory(&app.core);
    if app.is_postgres() {
        // A round copies a SQLite file: on PostgreSQL it is refused, counted as failed,
        // and leaves nothing behind (config load also drops `[backup] interval` there,
        // so the job does not even start).
        let refused = try_run_once(&app.core, app.now()).await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("is a PostgreSQL database: this works on a SQLite file only"),
            "{refused}"
        );
        assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none());
        let metrics = app.core.metrics.render();
        assert!(
            metrics.contains("kassa_backups_total{outcome=\"failed\"} 1"),
            "{metrics}"
        );
        return;
    }
    std::fs::create_dir_all(&dir).unwrap();
    // Not kassa's periodic backups: never rotated away.
    let foreign = [
        "notes.txt",
        "kassa-manual.db",
        "kassa-20200101T000000Z.db.bak",
        "kassa-20200101T000000Z_01.db",
    ];
    for name in foreign {
        std::fs::write(dir.join(name), "keep me").unwrap();
    }

    // Three rounds within one second of the app's clock.
    let mut written = Vec::new();
    for _ in 0..3 {
        written.push(try_run_once(&app.core, app.now()).await.unwrap().written);
    }
    let stamp = app.now().format("%Y%m%dT%H%M%SZ").to_string();
    assert_eq!(
        names(&written),
        [
            format!("kassa-{stamp}.db"),
            format!("kassa-{stamp}_2.db"),
            format!("kassa-{stamp}_3.db")
        ]
    );
    app.clock.advance(Duration::seconds(1));
    let fourth = try_run_once(&app.core, app.now()).await.unwrap();

    assert_eq!(names(&fourth.deleted), [format!("kassa-{stamp}_2.db")]);
    let kept = list_periodic(&dir).unwrap();
    assert_eq!(kept, [written[2].clone(), fourth.written.clone()]);
    for name in foreign {
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).unwrap(),
            "keep me",
            "{name}"
        );
    }
    for file in &kept {
        assert_eq!(integrity_check(file).unwrap(), "ok");
        assert_eq!(out_trade_nos(file), ["bk-round-1"]);
        assert_eq!(mode(file), 0o600, "{file:?}");
    }
    assert!(parse_periodic_name(&format!("kassa-{stamp}_2.db")).is_some());

    // Where the backups directory should be there is a file: the round fails, is
    // counted, and changes nothing.
    let moved = dir.with_extension("moved");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::write(&dir, "in the way").unwrap();
    app.clock.advance(Duration::seconds(1));
    assert!(try_run_once(&app.core, app.now()).await.is_err());
    assert_eq!(std::fs::read_to_string(&dir).unwrap(), "in the way");
    let metrics = app.core.metrics.render();
    assert!(
        metrics.contains("kassa_backups_total{outcome=\"ok\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kassa_backups_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    assert_eq!(
        list_periodic(&dir).unwrap(),
        kept,
        "the failed round left nothing"
    );
}

/// Stops the server with `signal` and asserts a clean exit (0, empty log).
async fn stop_with(signal: &str, server: Server, db: &Path) {
    let exit = stop_with_signal(server, signal).await;
    assert_eq!(exit.code(), Some(0), "{signal}: {exit:?}");
    let wal = std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "{signal} left the log empty");
}

#[tokio::test]
async fn the_running_binary_writes_a_backup_every_interval_keeps_the_newest_and_every_file_it_creates_is_private(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    install_sandbox_keys(&data);
    let server = start_server(
        dir.path(),
        &[("KASSA_BACKUP_INTERVAL", "1s"), ("KASSA_BACKUP_KEEP", "2")],
    )
    .await;
    let key = text(&run(kassa(dir.path()).args(["apikey", "create", "shop"])).stdout)
        .trim()
        .to_owned();
    create_order(&server, &key, "periodic-1").await;
    let db = data.join("kassa.db");
    for file in [db.clone(), data.join("kassa.db-wal"), data.join("kassa.db-shm")] {
        assert_eq!(mode(&file), 0o600, "{file:?}");
    }

    // Rotation has happened once the first backup seen is gone and two newer remain.
    let backups = data.join("backups");
    let mut seen: Vec<PathBuf> = Vec::new();
    eventually(std::time::Duration::from_secs(30), "backups to rotate", || {
        let now = list_periodic(&backups).unwrap();
        for file in &now {
            if !seen.contains(file) {
                seen.push(file.clone());
            }
        }
        Some(()).filter(|()| seen.len() >= 4 && !now.contains(&seen[0]) && now.len() == 2)
    })
    .await;
    // Ctrl-C stops as gracefully as SIGTERM.
    stop_with("-INT", server, &db).await;

    assert_eq!(mode(&backups), 0o700);
    let kept = list_periodic(&backups).unwrap();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(kept, sorted[sorted.len() - 2..], "the newest two are kept");
    for file in &kept {
        assert_eq!(integrity_check(file).unwrap(), "ok");
        assert_eq!(out_trade_nos(file), ["periodic-1"]);
        assert_eq!(mode(file), 0o600, "{file:?}");
    }
}

/// `kassa_backup_last_success_timestamp_seconds` as the server at `address` shows it.
async fn backup_gauge(address: &str) -> i64 {
    let text = crate::helpers::http_client()
        .get(format!("{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("kassa_backup_last_success_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no backup gauge in {text}"))
        .parse()
        .unwrap()
}

/// Polls the gauge until it shows `want`, for at most 30 s.
async fn wait_for_gauge(address: &str, want: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let shown = backup_gauge(address).await;
        if shown == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gauge shows {shown}, not {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The Unix time in a periodic backup's name.
fn taken_at(file: &Path) -> i64 {
    let (at, _) = parse_periodic_name(file.file_name().unwrap().to_str().unwrap()).unwrap();
    at.and_utc().timestamp()
}

#[tokio::test]
async fn a_start_counts_the_backup_interval_from_the_newest_backup_on_disk_and_shows_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("kassa.db");
    let backups = data.join("backups");
    install_sandbox_keys(&data);
    // An hour: no test waits that long, so every backup below is one a start made.
    let env = [("KASSA_BACKUP_INTERVAL", "1h")];

    // No backup yet: the first round runs at start.
    let server = start_server(dir.path(), &env).await;
    let first = eventually(std::time::Duration::from_secs(30), "the first backup", || {
        list_periodic(&backups).unwrap().first().cloned()
    })
    .await;
    wait_for_gauge(&server.address, taken_at(&first)).await;
    stop_with("-TERM", server, &db).await;

    // A backup well within the interval: the restart shows its time, and waits.
    let server = start_server(dir.path(), &env).await;
    wait_for_gauge(&server.address, taken_at(&first)).await;
    assert_eq!(list_periodic(&backups).unwrap(), std::slice::from_ref(&first));
    stop_with("-TERM", server, &db).await;

    // A backup older than the interval: the restart backs up at once.
    let old = backups.join(periodic_name(
        chrono::DateTime::from_timestamp(1_577_836_800, 0).unwrap(),
        1,
    ));
    std::fs::rename(&first, &old).unwrap();
    let server = start_server(dir.path(), &env).await;
    let newer = eventually(std::time::Duration::from_secs(30), "a backup at start", || {
        let all = list_periodic(&backups).unwrap();
        Some(all[all.len() - 1].clone()).filter(|_| all.len() == 2)
    })
    .await;
    assert_eq!(list_periodic(&backups).unwrap(), [old, newer.clone()]);
    assert_eq!(integrity_check(&newer).unwrap(), "ok");
    wait_for_gauge(&server.address, taken_at(&newer)).await;
    stop_with("-TERM", server, &db).await;
}

#[tokio::test]
async fn restore_is_refused_while_a_server_runs_and_otherwise_swaps_the_backup_in_keeping_the_replaced_database(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("kassa.db");
    install_sandbox_keys(&data);
    let server = start_server(dir.path(), &[]).await;
    let key = text(&run(kassa(dir.path()).args(["apikey", "create", "shop"])).stdout)
        .trim()
        .to_owned();
    let before = create_order(&server, &key, "before-backup").await;
    let backup = dir.path().join("copy.db");
    let out = run(kassa(dir.path()).arg("backup").arg(&backup));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = create_order(&server, &key, "after-backup").await;
    let backup_bytes = std::fs::read(&backup).unwrap();

    let refused = run(kassa(dir.path()).arg("restore").arg(&backup));

    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(
        stderr.contains("running") && stderr.contains("kassa.lock"),
        "{stderr}"
    );
    let client = crate::helpers::http_client();
    let status_of = |address: String, id: String| {
        let (client, key) = (client.clone(), key.clone());
        async move {
            client
                .get(format!("{address}/api/v1/orders/{id}"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        status_of(server.address.clone(), after.clone()).await,
        200,
        "nothing was replaced"
    );
    assert_eq!(std::fs::read(&backup).unwrap(), backup_bytes);
    let replaced = |data: &Path| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(data)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_str().unwrap().contains(".replaced-"))
            .collect();
        found.sort();
        found
    };
    assert!(replaced(&data).is_empty());
    stop_with("-TERM", server, &db).await;

    // Files that are no backup to restore change nothing.
    let db_bytes = std::fs::read(&db).unwrap();
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
    let newer = dir.path().join("newer.db");
    std::fs::copy(&backup, &newer).unwrap();
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    for (bad, says) in [(&garbage, "not a kassa database"), (&newer, "newer kassa")] {
        let out = run(kassa(dir.path()).arg("restore").arg(bad));
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
        assert_eq!(
            std::fs::read(&db).unwrap(),
            db_bytes,
            "{bad:?} left the database as it was"
        );
        assert!(replaced(&data).is_empty());
    }

    let restored = run(kassa(dir.path()).arg("restore").arg(&backup));

    assert!(restored.status.success(), "{}", text(&restored.stderr));
    let kept = replaced(&data);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept_name = kept[0].file_name().unwrap().to_str().unwrap();
    assert!(
        kept_name.starts_with("kassa.db.replaced-") && kept_name.ends_with('Z'),
        "{kept_name}"
    );
    assert!(
        text(&restored.stdout).contains(kept_name),
        "{}",
        text(&restored.stdout)
    );
    assert!(!data.join("kassa.db-wal").exists() && !data.join("kassa.db-shm").exists());
    assert_eq!(mode(&db), 0o600);
    assert_eq!(out_trade_nos(&db), ["before-backup"]);
    assert_eq!(out_trade_nos(&kept[0]), ["after-backup", "before-backup"]);
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        backup_bytes,
        "the backup itself is untouched"
    );

    let next = start_server(dir.path(), &[]).await;
    assert_eq!(status_of(next.address.clone(), before).await, 200);
    assert_eq!(
        status_of(next.address.clone(), after).await,
        404,
        "written after the backup"
    );
}

#[tokio::test]
async fn a_restored_backup_of_an_older_schema_is_migrated_by_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    install_sandbox_keys(&data);
    let old = dir.path().join("old.db");
    let conn = rusqlite::Connection::open(&old).unwrap();
    let (first, _) = kassa::db::migrations::MIGRATIONS.split_at(3);
    for (_, sql) in first {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 3).unwrap();
    conn.execute(
        "INSERT INTO orders (id, out_trade_no, provider, amount, currency, subject, status, \
         created_at, expires_at, updated_at) VALUES ('ord_old', 'old-1', 'alipay', 100, 'CNY', 'Tea', \
         'pending', 0, 0, 0)",
        [],
    )
    .unwrap();
    drop(conn);

    let out = run(kassa(dir.path()).arg("restore").arg(&old));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("there was no database to replace"));
    let db = data.join("kassa.db");
    let version = |path: &Path| -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(&db), 3);

    let server = start_server(dir.path(), &[]).await;
    stop_with("-TERM", server, &db).await;

    assert_eq!(version(&db), kassa::db::migrations::latest_version());
    assert_eq!(out_trade_nos(&db), ["old-1"]);
}

#[tokio::test]
async fn a_round_that_cannot_take_the_backup_lease_is_counted_as_failed_and_retried_after_the_lease_ttl_not_the_interval(
) {
    use kassa::jobs::backup::after_round;
    let app = TestApp::spawn().await;
    let interval = std::time::Duration::from_secs(24 * 3600);
    let ttl = kassa::jobs::lease::TTL.to_std().unwrap();

    let failed: Result<Option<()>, _> = Err(kassa::db::DbError::Task("database gone".into()));
    assert_eq!(after_round(&app.core, &failed, interval), ttl);
    assert_eq!(after_round(&app.core, &Ok(None::<()>), interval), ttl);
    assert_eq!(after_round(&app.core, &Ok(Some(())), interval), interval);

    let metrics = app.core.metrics.render();
    assert!(
        metrics.contains("kassa_backups_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kassa_backups_total{outcome=\"ok\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_backup_named_file_colon_is_written_to_that_very_file_and_restores_from_it() {
    // SQLite reads a name starting with `file:` as a URI naming another file; the
    // command line's file must be the file it names.
    let dir = tempfile::tempdir().unwrap();
    install_sandbox_keys(&dir.path().join("data"));
    let created = run(kassa(dir.path()).args(["apikey", "create", "shop"]));
    assert!(created.status.success(), "{}", text(&created.stderr));

    let backup = run(kassa(dir.path()).args(["backup", "file:copy.db"]));

    assert!(backup.status.success(), "{}", text(&backup.stderr));
    let copy = dir.path().join("file:copy.db");
    assert_eq!(integrity_check(&copy).unwrap(), "ok");
    assert!(!dir.path().join("copy.db").exists(), "no other file was written");
    let keys_in = |db: &Path| {
        let conn = crate::helpers::raw_connection(db);
        conn.query_row("SELECT count(*) FROM api_keys", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    assert_eq!(keys_in(&copy), 1);

    let revoked = run(kassa(dir.path()).args(["apikey", "revoke", "shop"]));
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let restored = run(kassa(dir.path()).args(["restore", "file:copy.db"]));

    assert!(restored.status.success(), "{}", text(&restored.stderr));
    let conn = crate::helpers::raw_connection(&dir.path().join("data/kassa.db"));
    let revoked_at: Option<i64> = conn
        .query_row("SELECT revoked_at FROM api_keys WHERE name = 'shop'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        revoked_at, None,
        "the restored database is the backup's, taken before the revocation"
    );
}

#[tokio::test]
async fn on_postgresql_the_periodic_backup_job_idles_instead_of_failing_every_interval() {
    let app = TestApp::spawn().await;
    if !app.is_postgres() {
        println!("{}", crate::pg_schema::SKIPPED);
        return;
    }
    // Settings made without config load keep their interval; the job must still not
    // run a round that can only fail, nor end (it would be restarted, and say so).
    let job = tokio::spawn(kassa::jobs::backup::run(
        app.core.clone(),
        std::time::Duration::from_millis(50),
    ));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    assert!(!job.is_finished(), "the job ended");
    job.abort();
    let metrics = app.core.metrics.render();
    assert!(
        metrics.contains("kassa_backups_total{outcome=\"failed\"} 0"),
        "{metrics}"
    );
    assert!(!directory(&app.core).exists());
}
