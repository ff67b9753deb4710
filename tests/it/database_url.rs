//! `[database] url`: where the SQLite file is (outside the data directory too), what is
//! refused (unknown schemes; backup and restore on PostgreSQL), a PostgreSQL server that
//! cannot be reached, and that two servers never share one file, whatever their data
//! directories.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::cli::{create_order, kassa, run, start_server, stop_with_signal, text, Server};
use crate::helpers::{install_sandbox_keys, raw_connection};

const PASSWORD: &str = "hunter2-pw";

/// The merchant order numbers stored in the SQLite file at `db`.
fn stored_orders(db: &Path) -> Vec<String> {
    let conn = raw_connection(db);
    let mut statement = conn
        .prepare("SELECT out_trade_no FROM orders ORDER BY out_trade_no")
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn api_key(dir: &Path, env: &[(&str, &str)]) -> String {
    let out = run(kassa(dir)
        .args(["apikey", "create", "shop"])
        .envs(env.iter().copied()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// Starts a server, makes it an API key and creates one order through it; returns the
/// server and the key.
async fn start_with_order(dir: &Path, env: &[(&str, &str)], out_trade_no: &str) -> (Server, String) {
    let server = start_server(dir, env).await;
    let key = api_key(dir, env);
    create_order(&server, &key, out_trade_no).await;
    (server, key)
}

/// After a refused second start: the file `db` holds only the first server's order
/// `first-1`, and that server goes on storing orders in it until it stops cleanly.
async fn first_serves_on(first: Server, key: &str, db: &Path) {
    assert_eq!(stored_orders(db), ["first-1"]);
    create_order(&first, key, "first-2").await;
    stop(first).await;
    assert_eq!(stored_orders(db), ["first-1", "first-2"]);
}

/// SIGTERM, then waits for a clean exit.
async fn stop(server: Server) {
    let exit = stop_with_signal(server, "-TERM").await;
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

/// Runs a command that must be refused. A server start that is not refused serves
/// until killed, so after a minute it is killed and the test fails instead of hanging.
fn run_refused(cmd: &mut Command) -> std::process::Output {
    run_refused_reading(cmd, b"")
}

/// As `run_refused`, with `input` on the command's standard input.
fn run_refused_reading(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command that exits before reading closes the pipe: not an error here.
    let _ = child.stdin.take().unwrap().write_all(input);
    for _ in 0..1200 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "the second server was not refused and kept running: {}",
        text(&out.stdout)
    );
}

/// Every file under `dir` with its bytes, to show a refused command changed nothing.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(snapshot(&path));
            } else {
                found.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn orders_go_to_the_file_the_url_names_outside_the_data_directory_which_gets_no_kassa_db() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    install_sandbox_keys(&data);
    // Relative, as data_dir is: to the working directory, not to the data directory.
    let env = [("KASSA_DATABASE_URL", "elsewhere/shop.db")];
    let db = dir.path().join("elsewhere/shop.db");
    let (server, _) = start_with_order(dir.path(), &env, "outside-1").await;
    stop(server).await;

    assert_eq!(stored_orders(&db), ["outside-1"]);
    assert!(
        !data.join("kassa.db").exists(),
        "the data directory got a database"
    );
    assert!(!dir.path().join("data/elsewhere").exists());
    // The CLI follows the same setting.
    let listed = run(kassa(dir.path()).args(["apikey", "list"]).envs(env));
    assert!(text(&listed.stdout).contains("shop"), "{}", text(&listed.stdout));
    assert!(
        !data.join("kassa.db").exists(),
        "apikey list made a database in the data directory"
    );
}

#[test]
fn kassa_database_url_in_the_environment_overrides_the_config_file_for_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kassa.toml"),
        "[database]\nurl = \"sqlite:from-file.db\"\n",
    )
    .unwrap();

    api_key(dir.path(), &[("KASSA_DATABASE_URL", "from-env.db")]);

    assert!(dir.path().join("from-env.db").exists());
    assert!(!dir.path().join("from-file.db").exists());
    assert!(!dir.path().join("data/kassa.db").exists());
    let shown = text(
        &run(kassa(dir.path())
            .arg("config")
            .env("KASSA_DATABASE_URL", "from-env.db"))
        .stdout,
    );
    let line = shown
        .lines()
        .find(|l| l.contains("database.url"))
        .unwrap_or_default();
    assert!(
        line.contains("from-env.db") && line.contains("KASSA_DATABASE_URL"),
        "{shown}"
    );
    // Without the variable, the file's setting holds.
    api_key(dir.path(), &[]);
    assert!(dir.path().join("from-file.db").exists());
}

/// A PostgreSQL server nobody listens for: port 1 on loopback refuses at once.
fn unreachable_urls() -> [String; 3] {
    [
        format!("postgres://kassa:{PASSWORD}@127.0.0.1:1/shop"),
        format!("postgresql://127.0.0.1:1/shop?sslmode=disable&password={PASSWORD}"),
        // Spaces are trimmed before the value is read, and before it is shown.
        format!(" postgres://kassa:{PASSWORD}@127.0.0.1:1/shop "),
    ]
}

#[test]
fn on_an_unreachable_postgres_url_the_server_and_every_command_fail_at_once_saying_so_never_showing_the_password(
) {
    let dir = tempfile::tempdir().unwrap();
    for url in unreachable_urls() {
        for args in [
            &["--bind", "127.0.0.1:0"][..],
            &["migrate"],
            &["apikey", "create", "shop"],
            &["apikey", "list"],
            &["apikey", "revoke", "shop"],
            &["admin", "add", "bob"],
            &["admin", "passwd", "admin"],
            &["admin", "remove", "bob"],
            &["export", "orders"],
            &["webhooks", "secret"],
            &["webhooks", "rotate-secret"],
            &["webhooks", "status"],
            &["webhooks", "resend", "--failed-since", "2026-01-01"],
            &["webhooks", "test", "--url", "http://127.0.0.1:9/hook"],
        ] {
            let started = std::time::Instant::now();
            // A good password for `admin add` and `passwd`, which check it first.
            let out = run_refused_reading(
                kassa(dir.path()).args(args).env("KASSA_DATABASE_URL", &url),
                b"correct horse battery staple\n",
            );

            assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{args:?} took {:?}",
                started.elapsed()
            );
            let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(!said.contains(PASSWORD), "{args:?}: {said}");
            assert!(
                said.contains("the database is unavailable: cannot connect to postgres")
                    && said.contains("127.0.0.1:1/shop"),
                "{args:?}: {said}"
            );
        }
        let doctor = run(kassa(dir.path()).arg("doctor").env("KASSA_DATABASE_URL", &url));
        assert_eq!(doctor.status.code(), Some(1));
        let said = format!("{}{}", text(&doctor.stdout), text(&doctor.stderr));
        assert!(!said.contains(PASSWORD), "{said}");
        assert!(
            said.lines().any(
                |l| l.starts_with("problem  database.url: cannot reach the database")
                    && l.contains("127.0.0.1:1/shop")
            ),
            "{said}"
        );
        // `config` needs no database, and shows the URL without its password.
        let config = run(kassa(dir.path()).arg("config").env("KASSA_DATABASE_URL", &url));
        assert!(config.status.success(), "{}", text(&config.stderr));
        let shown = text(&config.stdout);
        assert!(
            !shown.contains(PASSWORD) && shown.contains("database.url = \"postgres"),
            "{shown}"
        );
    }
    // The server takes its data directory's lock before it connects (the directory
    // holds the sandbox's keys and the backups), and keeps nothing else: no SQLite file
    // beside the URL, no keys, no backups. The commands create nothing at all.
    assert_eq!(tree(dir.path()), ["data", "data/kassa.lock"]);
}

#[test]
fn backup_and_restore_on_postgres_are_refused_naming_pg_dump_and_pg_restore_without_the_password_and_write_nothing(
) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.dump"), b"kept").unwrap();
    for (args, tool) in [
        (
            &["backup", "kassa.dump"][..],
            "pg_dump --format=custom --file='kassa.dump' 'postgresql://kassa@db.example:5432/shop?sslmode=require'",
        ),
        (&["backup", "--force", "old.dump"], "pg_dump --format=custom --file='old.dump' 'postgresql://kassa@db.example:5432/shop?sslmode=require'"),
        (
            &["restore", "old.dump"],
            "pg_restore --clean --if-exists --dbname='postgresql://kassa@db.example:5432/shop?sslmode=require' 'old.dump'",
        ),
    ] {
        let out = run(kassa(dir.path()).args(args).env(
            "KASSA_DATABASE_URL",
            format!("postgresql://kassa:{PASSWORD}@db.example:5432/shop?sslmode=require"),
        ));

        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(!stderr.contains(PASSWORD), "{stderr}");
        assert!(stderr.contains("this database is PostgreSQL: nothing was written"), "{stderr}");
        assert!(
            stderr.lines().any(|l| l.trim() == tool),
            "{args:?}: wanted {tool}\n{stderr}"
        );
    }
    // An option that may hold a password is left out of the command, and said so.
    let out = run(kassa(dir.path()).args(["backup", "kassa.dump"]).env(
        "KASSA_DATABASE_URL",
        format!("postgres://db.example/shop?password={PASSWORD}"),
    ));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert!(stderr.contains("'postgres://db.example/shop'"), "{stderr}");
    assert!(stderr.contains("add them back"), "{stderr}");
    assert_eq!(tree(dir.path()), ["old.dump"]);
    assert_eq!(std::fs::read(dir.path().join("old.dump")).unwrap(), b"kept");
}

#[tokio::test]
async fn a_postgres_url_leaves_an_existing_data_directory_and_database_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    install_sandbox_keys(&data);
    let (server, _) = start_with_order(dir.path(), &[], "kept-1").await;
    stop(server).await;
    let before = snapshot(&data);

    let url = format!("postgres://kassa:{PASSWORD}@127.0.0.1:1/shop");
    let out = run_refused(
        kassa(dir.path())
            .args(["--bind", "127.0.0.1:0"])
            .env("KASSA_DATABASE_URL", &url),
    );

    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("unavailable"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains(PASSWORD));
    assert_eq!(snapshot(&data), before);
    assert_eq!(stored_orders(&data.join("kassa.db")), ["kept-1"]);
}

#[test]
fn an_unknown_scheme_is_refused_naming_it_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        format!("mysql://root:{PASSWORD}@db/shop"),
        "file:///var/lib/kassa.db".to_owned(),
    ] {
        let out = run_refused(
            kassa(dir.path())
                .args(["--bind", "127.0.0.1:0"])
                .env("KASSA_DATABASE_URL", &url),
        );

        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        let scheme = url.split_once("://").unwrap().0;
        assert!(stderr.contains(&format!("the scheme {scheme}://")), "{stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_second_server_with_another_data_directory_on_the_same_database_file_is_refused_and_the_first_serves_on_unchanged(
) {
    let dir = tempfile::tempdir().unwrap();
    install_sandbox_keys(&dir.path().join("data"));
    install_sandbox_keys(&dir.path().join("other"));
    let env = [("KASSA_DATABASE_URL", "shared/shop.db")];
    let db = dir.path().join("shared/shop.db");
    let first = start_server(dir.path(), &env).await;
    let key = api_key(dir.path(), &env);
    let id = create_order(&first, &key, "first-1").await;

    let second = run_refused(
        kassa(dir.path())
            .args(["--data-dir", "other", "--bind", "127.0.0.1:0"])
            .envs(env),
    );

    assert!(!second.status.success());
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains("shop.db.lock") && stderr.contains("two servers must never share one SQLite file"),
        "{stderr}"
    );
    assert!(!dir.path().join("other/kassa.db").exists());
    let fetched = crate::helpers::http_client()
        .get(format!("{}/api/v1/orders/{id}", first.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
    // Read after the refusal: the refused start wrote nothing into the shared file.
    first_serves_on(first, &key, &db).await;
}

#[tokio::test]
async fn a_server_whose_default_database_is_another_servers_url_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    install_sandbox_keys(&dir.path().join("data"));
    install_sandbox_keys(&dir.path().join("other"));
    // The first names other/kassa.db by URL; the second has it by default.
    let env = [("KASSA_DATABASE_URL", "other/kassa.db")];
    let db = dir.path().join("other/kassa.db");
    let (first, key) = start_with_order(dir.path(), &env, "first-1").await;

    let second = run_refused(kassa(dir.path()).args(["--data-dir", "other", "--bind", "127.0.0.1:0"]));

    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains("kassa.db.lock"),
        "{}",
        text(&second.stderr)
    );
    first_serves_on(first, &key, &db).await;
}

#[tokio::test]
async fn a_second_server_naming_the_same_file_by_another_path_or_through_a_symlinked_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for data in ["data", "second", "third"] {
        install_sandbox_keys(&dir.path().join(data));
    }
    std::fs::create_dir(dir.path().join("shared")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("shared"), dir.path().join("link")).unwrap();
    let env = [("KASSA_DATABASE_URL", "shared/shop.db")];
    let db = dir.path().join("shared/shop.db");
    let (first, key) = start_with_order(dir.path(), &env, "first-1").await;
    let absolute = db.display().to_string();

    for (data, url) in [
        ("second", absolute.as_str()),
        ("third", "link/../shared/./shop.db"),
        ("third", "link/shop.db"),
    ] {
        let second = run_refused(
            kassa(dir.path())
                .args(["--data-dir", data, "--bind", "127.0.0.1:0"])
                .env("KASSA_DATABASE_URL", url),
        );

        assert!(!second.status.success(), "{url}");
        let stderr = text(&second.stderr);
        assert!(
            stderr.contains("two servers must never share one SQLite file"),
            "{url}: {stderr}"
        );
        assert!(!dir.path().join(data).join("kassa.db").exists());
    }
    first_serves_on(first, &key, &db).await;
}

/// Files and directories under `dir`, by path relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        found.push(path.strip_prefix(dir).unwrap().display().to_string());
        if path.is_dir() && !path.is_symlink() {
            found.extend(
                tree(&path)
                    .into_iter()
                    .map(|p| format!("{}/{p}", entry.file_name().to_string_lossy())),
            );
        }
    }
    found.sort();
    found
}

#[test]
fn values_that_look_like_a_database_address_gone_wrong_are_refused_before_anything_is_created_and_never_echoed(
) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("existing")).unwrap();
    for url in [
        // As a Docker --env-file passes it: quotes included.
        format!("\"postgres://kassa:{PASSWORD}@db/shop\""),
        format!("'postgres://kassa:{PASSWORD}@db/shop'"),
        format!("jdbc:postgresql://db/shop?user=kassa&password={PASSWORD}"),
        format!("host=db user=kassa password={PASSWORD}"),
        "dbname=shop user=kassa".to_owned(),
        format!("postgres:/kassa:{PASSWORD}@db/shop"),
        "postgres:notes.db".to_owned(),
        // SQLite would read these as URIs: `shop.db` for the writer, `file:shop.db` for
        // the readers and the lock, or a database in memory.
        "file:shop.db".to_owned(),
        "sqlite:file:x.db".to_owned(),
        "file::memory:".to_owned(),
        // A directory.
        "db/".to_owned(),
        "existing".to_owned(),
    ] {
        let out = run_refused(
            kassa(dir.path())
                .args(["--bind", "127.0.0.1:0"])
                .env("KASSA_DATABASE_URL", &url),
        );

        assert!(!out.status.success(), "{url}: {}", text(&out.stderr));
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!said.contains(PASSWORD), "{url}: {said}");
        assert!(
            said.contains("database.url") || said.contains("KASSA_DATABASE_URL"),
            "{url}: {said}"
        );
        assert_eq!(tree(dir.path()), ["existing"], "{url}: {said}");
    }
}

#[tokio::test]
async fn a_url_whose_lock_is_the_data_directory_lock_starts_and_stores_its_orders_there() {
    let dir = tempfile::tempdir().unwrap();
    install_sandbox_keys(&dir.path().join("data"));
    // `data/kassa` + `.lock` is the data directory's own lock file.
    let env = [("KASSA_DATABASE_URL", "data/kassa")];
    let (server, _) = start_with_order(dir.path(), &env, "one-lock-1").await;

    let second = run_refused(kassa(dir.path()).args(["--bind", "127.0.0.1:0"]).envs(env));
    assert!(
        text(&second.stderr).contains("a kassa server is running on"),
        "{}",
        text(&second.stderr)
    );
    stop(server).await;
    assert_eq!(stored_orders(&dir.path().join("data/kassa")), ["one-lock-1"]);
}

#[tokio::test]
async fn a_data_directory_whose_name_starts_with_file_colon_holds_the_database_itself() {
    let dir = tempfile::tempdir().unwrap();
    install_sandbox_keys(&dir.path().join("file:data"));
    let env = [("KASSA_SERVER_DATA_DIR", "file:data")];
    let (server, _) = start_with_order(dir.path(), &env, "literal-1").await;
    let backup = run(kassa(dir.path()).args(["backup", "copy.db"]).envs(env));
    stop(server).await;

    // Not read as a URI naming `data/kassa.db`, by the server or the CLI.
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    assert_eq!(
        stored_orders(&dir.path().join("file:data/kassa.db")),
        ["literal-1"]
    );
    assert_eq!(stored_orders(&dir.path().join("copy.db")), ["literal-1"]);
    assert!(!dir.path().join("data").exists());
}

#[tokio::test]
async fn backup_and_restore_follow_the_url_and_restore_is_refused_while_a_server_with_another_data_directory_uses_the_file(
) {
    let dir = tempfile::tempdir().unwrap();
    install_sandbox_keys(&dir.path().join("data"));
    let env = [(
        "KASSA_DATABASE_URL",
        "/DIR/db/shop.db".replace("/DIR", &dir.path().display().to_string()),
    )];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let db = dir.path().join("db/shop.db");
    let (server, key) = start_with_order(dir.path(), &env, "before-backup").await;
    let backup = dir.path().join("copy.db");

    let out = run(kassa(dir.path())
        .arg("backup")
        .arg(&backup)
        .envs(env.iter().copied()));

    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(stored_orders(&backup), ["before-backup"]);
    create_order(&server, &key, "after-backup").await;
    // Another data directory: only the database's own lock can tell a server runs.
    let refused = run(kassa(dir.path())
        .args(["--data-dir", "elsewhere", "restore"])
        .arg(&backup)
        .envs(env.iter().copied()));
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("shop.db.lock"),
        "{}",
        text(&refused.stderr)
    );
    stop(server).await;
    assert_eq!(stored_orders(&db), ["after-backup", "before-backup"]);

    let restored = run(kassa(dir.path())
        .arg("restore")
        .arg(&backup)
        .envs(env.iter().copied()));

    assert!(restored.status.success(), "{}", text(&restored.stderr));
    assert_eq!(stored_orders(&db), ["before-backup"]);
    assert!(!dir.path().join("data/kassa.db").exists());
    let kept: Vec<_> = std::fs::read_dir(dir.path().join("db"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("shop.db.replaced-"))
        .map(|e| e.path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(stored_orders(&kept[0]), ["after-backup", "before-backup"]);
}

#[tokio::test]
async fn a_database_outside_the_data_directory_has_its_files_narrowed_at_start_but_not_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    install_sandbox_keys(&dir.path().join("data"));
    let env = [("KASSA_DATABASE_URL", "shared/shop.db")];
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = start_server(dir.path(), &env).await;
    // Killed, so the -wal and -shm stay behind as after a crash.
    drop(server);
    let files = ["shop.db", "shop.db-wal", "shop.db-shm", "shop.db.lock"].map(|f| shared.join(f));
    for file in &files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let server = start_server(dir.path(), &env).await;

    for file in &files {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "the operator's directory was changed");
    drop(server);
}

#[test]
fn doctor_checks_the_file_the_url_names_under_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("KASSA_DATABASE_URL", "elsewhere/shop.db")];
    let migrated = run(kassa(dir.path()).arg("migrate").envs(env));
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));
    assert!(
        text(&migrated.stdout).contains("elsewhere/shop.db"),
        "{}",
        text(&migrated.stdout)
    );

    let doctor = run(kassa(dir.path()).arg("doctor").envs(env));

    let stdout = text(&doctor.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("integrity_check ok"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("database.url") && line.contains("elsewhere/shop.db"),
        "{stdout}"
    );
    assert!(!dir.path().join("data/kassa.db").exists());
}

#[test]
fn doctor_names_the_data_directory_when_the_url_is_set_but_empty() {
    let dir = tempfile::tempdir().unwrap();
    let migrated = run(kassa(dir.path()).arg("migrate"));
    assert!(migrated.status.success(), "{}", text(&migrated.stderr));

    let doctor = run(kassa(dir.path()).arg("doctor").env("KASSA_DATABASE_URL", ""));

    let stdout = text(&doctor.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("integrity_check ok"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("server.data_dir") && !line.contains("database.url"),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_database_named_through_a_link_to_the_file_has_the_lock_it_really_takes_narrowed() {
    let dir = tempfile::tempdir().unwrap();
    install_sandbox_keys(&dir.path().join("data"));
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    crate::helpers::raw_connection(&real.join("shop.db"));
    std::os::unix::fs::symlink(real.join("shop.db"), dir.path().join("shop.db")).unwrap();
    let env = [("KASSA_DATABASE_URL", "shop.db")];
    let server = start_server(dir.path(), &env).await;
    drop(server);
    // The lock is beside the file the link leads to, not beside the link.
    let lock = real.join("shop.db.lock");
    std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o644)).unwrap();

    let server = start_server(dir.path(), &env).await;

    let mode = std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!dir.path().join("shop.db.lock").exists());
    drop(server);
}
