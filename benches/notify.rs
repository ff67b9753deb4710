//! Alipay payment-notification throughput of the real `kassa` binary, against the raw
//! SQLite ceiling of the same transaction, in one run. Prints figures; asserts only
//! correctness (every reply `success`, every order paid), never timing.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo bench --bench notify
//! KASSA_BENCH_N=5000 KASSA_BENCH_CONNECTIONS=8 cargo bench --bench notify
//! ```
//!
//! 1. N pending Alipay orders are written straight into a fresh data directory.
//! 2. One TRADE_SUCCESS notification per order is signed with the test vectors'
//!    platform key, exactly as Alipay signs it (before anything is timed).
//! 3. The real binary is started with real Alipay configured (sandbox off) and
//!    `POST /notify/alipay` is driven by 64 keep-alive connections, each body once.
//! 4. The database is checked after the server stops.
//! 5. The same writes (notification row, guarded UPDATE + history + outbox row,
//!    verdict) are run without HTTP on one thread, on fresh databases holding the same
//!    orders: one notification per transaction at `synchronous=NORMAL` and `FULL`, then
//!    64 per transaction at `FULL` with and without a savepoint per notification (the
//!    writer's group commit puts every job in its own savepoint).
//! 6. Per-thread CPU of the server (and of the client) during the HTTP run, from
//!    `/proc/<pid>/task/*/schedstat`, shows where the time went.
//!
//! `KASSA_BENCH_N` (default 20000) and `KASSA_BENCH_CONNECTIONS` (default 64) change
//! the size of the run.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kassa::db::history::Cause;
use kassa::db::notifications::{self, NewNotification};
use kassa::db::transitions::{Change, Outcome};
use kassa::db::{orders, Database, DbError, DbResult, Offline, Tx};
use kassa::domain::{
    Amount, Currency, NewOrder, OrderId, OutTradeNo, ProviderKind, TransitionSource, Verdict,
};
use kassa::providers::alipay::sign::{beijing, notification_content};
use kassa::providers::keys::SigningKey;
use kassa::service::changes::Changes;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const APP_ID: &str = "2021000000000001";
const SELLER_ID: &str = "2088102177000000";
const AMOUNT_FEN: i64 = 1234;
const TOTAL_AMOUNT: &str = "12.34";
const QR_CODE: &str = "https://qr.alipay.com/bax03431ljhokirwl38f00a7";
const ORDERS_PER_JOB: usize = 1000;
/// Notifications per transaction in the batched raw runs (like the writer under load).
const RAW_BATCH: usize = 64;
const DEFAULT_N: usize = 20_000;
const DEFAULT_CONNECTIONS: usize = 64;

fn env_usize(name: &str, default: usize) -> BenchResult<usize> {
    match std::env::var(name) {
        Ok(v) => Ok(v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{name} must be a positive integer, got {v:?}"))?),
        Err(_) => Ok(default),
    }
}

fn key_path(name: &str) -> PathBuf {
    Path::new(REPO).join("tests/vectors/keys").join(name)
}

// ---------------------------------------------------------------------------------
// Setup: orders and signed notifications
// ---------------------------------------------------------------------------------

fn new_orders(n: usize, now: DateTime<Utc>) -> BenchResult<Vec<NewOrder>> {
    let amount = Amount::from_minor(AMOUNT_FEN, Currency::Cny).map_err(|e| e.to_string())?;
    (0..n)
        .map(|i| {
            Ok(NewOrder {
                id: OrderId::generate(),
                out_trade_no: OutTradeNo::parse(&format!("bench-{i:08}"))?,
                amount,
                subject: "Jasmine tea".to_owned(),
                provider: ProviderKind::Alipay,
                notify_url: None,
                return_url: None,
                metadata: serde_json::Map::new(),
                created_at: now,
                expires_at: now + chrono::Duration::days(30),
            })
        })
        .collect()
}

fn insert_orders(tx: &Tx<'_>, batch: &[NewOrder]) -> DbResult<()> {
    for order in batch {
        if orders::insert(tx, order, Some(QR_CODE))? != orders::Inserted::Yes {
            return Err(DbError::Corrupt(format!(
                "out_trade_no {} already taken",
                order.out_trade_no
            )));
        }
    }
    Ok(())
}

/// No late-notification check is due during the run, so the (unreachable) gateway is
/// never called however long the run takes. The rows stay in the same indexes. Done on
/// a connection of the bench's own: kassa has no operation for it.
fn no_late_checks(db_path: &Path) -> BenchResult<()> {
    let conn = rusqlite::Connection::open(db_path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute(
        "UPDATE orders SET next_check_at = NULL WHERE status = 'pending' AND next_check_at IS NOT NULL",
        [],
    )?;
    Ok(())
}

/// Pending orders in the server's database, through the server's own writer.
fn create_orders_for_server(db_path: &Path, all: &[NewOrder]) -> BenchResult<()> {
    let database = Database::open(db_path)?;
    for chunk in all.chunks(ORDERS_PER_JOB) {
        let chunk = chunk.to_vec();
        database.write_blocking(move |c| insert_orders(c, &chunk))?;
    }
    drop(database);
    no_late_checks(db_path)
}

struct Notice {
    order_id: OrderId,
    notify_id: String,
    trade_no: String,
    body: String,
}

/// One TRADE_SUCCESS notification per order, signed as Alipay signs them, spread over
/// every core (RSA signing is ~0.7 ms each).
fn sign_notifications(all: &[NewOrder], now: DateTime<Utc>) -> BenchResult<Vec<Notice>> {
    let key = SigningKey::from_file(&key_path("alipay_platform_private_pkcs8.pem"))?;
    let stamp = beijing(now);
    let day = now.format("%Y%m%d").to_string();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_thread = all.len().div_ceil(threads).max(1);
    let sign_one = |i: usize, order: &NewOrder| -> Notice {
        let notify_id = format!("{day}0022211300{i:016}");
        let trade_no = format!("{day}2200144688{i:018}");
        let params: BTreeMap<String, String> = [
            ("notify_type", "trade_status_sync"),
            ("notify_id", &notify_id),
            ("notify_time", &stamp),
            ("app_id", APP_ID),
            ("charset", "utf-8"),
            ("version", "1.0"),
            ("sign_type", "RSA2"),
            ("trade_no", &trade_no),
            ("out_trade_no", order.id.as_str()),
            ("trade_status", "TRADE_SUCCESS"),
            ("total_amount", TOTAL_AMOUNT),
            ("buyer_id", "2088102177846880"),
            ("seller_id", SELLER_ID),
            ("gmt_payment", &stamp),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let sign = key.sign_base64(notification_content(&params).as_bytes());
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .append_pair("sign", &sign)
            .finish();
        Notice {
            order_id: order.id.clone(),
            notify_id,
            trade_no,
            body,
        }
    };
    let mut out = Vec::with_capacity(all.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = all
            .chunks(per_thread)
            .enumerate()
            .map(|(t, chunk)| {
                let sign_one = &sign_one;
                s.spawn(move || {
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(j, o)| sign_one(t * per_thread + j, o))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                Err(_) => return Err("a signing thread panicked"),
            }
        }
        Ok(())
    })?;
    Ok(out)
}

// ---------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------

struct Server {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(data_dir: &Path) -> BenchResult<Server> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kassa"))
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            // No ./kassa.toml of the caller's is picked up.
            .current_dir(data_dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KASSA_ALIPAY_APP_ID", APP_ID)
            .env(
                "KASSA_ALIPAY_APP_PRIVATE_KEY_FILE",
                key_path("alipay_app_private_pkcs8.pem"),
            )
            .env(
                "KASSA_ALIPAY_ALIPAY_PUBLIC_KEY_FILE",
                key_path("alipay_platform_public.pem"),
            )
            .env("KASSA_ALIPAY_GATEWAY", "http://127.0.0.1:9/gateway.do")
            .env("KASSA_SANDBOX_ENABLED", "false")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (first_line, first) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = first_line.send(line);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        let sink = stderr_lines.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            if let Ok(mut sink) = sink.lock() {
                sink.extend(text.lines().map(str::to_owned));
            }
        });
        let line = match first.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let err = stderr_lines.lock().map(|l| l.join("\n")).unwrap_or_default();
                return Err(format!("kassa did not start:\n{err}").into());
            }
        };
        let addr = line
            .strip_prefix("kassa listening on http://")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .trim()
            .to_owned();
        Ok(Server {
            child,
            addr,
            stderr: stderr_lines,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (graceful actix shutdown), SIGKILL if it lingers; its stderr.
    fn stop(mut self) -> BenchResult<Vec<String>> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50));
        Ok(self.stderr.lock().map(|l| l.clone()).unwrap_or_default())
    }
}

impl Drop for Server {
    /// A bench that fails half-way leaves no server behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `VmRSS`, `VmHWM`, … of a process, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Per-thread (name, on-CPU ns, run-queue wait ns) of a process, by thread id.
fn thread_times(pid: &str) -> HashMap<String, (String, u64, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let p = entry.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(p.join("schedstat")).unwrap_or_default();
        let mut f = stat.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
        let (run, wait) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
        out.insert(
            entry.file_name().to_string_lossy().into_owned(),
            (name.trim().to_owned(), run, wait),
        );
    }
    out
}

/// CPU and run-queue wait during an interval, summed by thread name.
fn thread_deltas(
    before: &HashMap<String, (String, u64, u64)>,
    after: &HashMap<String, (String, u64, u64)>,
) -> Vec<(String, usize, u64, u64)> {
    let mut by_name: BTreeMap<String, (usize, u64, u64)> = BTreeMap::new();
    for (tid, (name, run, wait)) in after {
        let (r0, w0) = before.get(tid).map_or((0, 0), |(_, r, w)| (*r, *w));
        let e = by_name.entry(name.clone()).or_default();
        e.0 += 1;
        e.1 += run.saturating_sub(r0);
        e.2 += wait.saturating_sub(w0);
    }
    let mut v: Vec<_> = by_name.into_iter().map(|(n, (c, r, w))| (n, c, r, w)).collect();
    v.sort_by_key(|t| std::cmp::Reverse(t.2));
    v
}

// ---------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------

struct LoadResult {
    elapsed: Duration,
    latencies: Vec<Duration>,
    successes: usize,
    failures: Vec<String>,
}

fn drive_load(addr: &str, bodies: Arc<Vec<String>>, connections: usize) -> BenchResult<LoadResult> {
    // One client thread: the server keeps as much of the machine as possible.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let url = format!("http://{addr}/notify/alipay");
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(connections)
            .timeout(Duration::from_secs(60))
            .build()?;
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                let (client, url, bodies, next) = (client.clone(), url.clone(), bodies.clone(), next.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(bodies.len() / connections + 1);
                    let mut successes = 0usize;
                    let mut failures = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else { break };
                        let t0 = Instant::now();
                        let reply = async {
                            let resp = client
                                .post(&url)
                                .header("Content-Type", "application/x-www-form-urlencoded")
                                .body(body.clone())
                                .send()
                                .await?;
                            let status = resp.status();
                            Ok::<_, reqwest::Error>((status, resp.text().await?))
                        }
                        .await;
                        latencies.push(t0.elapsed());
                        match reply {
                            Ok((status, text)) if status == 200 && text == "success" => successes += 1,
                            Ok((status, text)) => failures.push(format!("#{i}: {status} {text:?}")),
                            Err(e) => failures.push(format!("#{i}: {e}")),
                        }
                    }
                    (latencies, successes, failures)
                })
            })
            .collect();
        let mut result = LoadResult {
            elapsed: Duration::ZERO,
            latencies: Vec::with_capacity(bodies.len()),
            successes: 0,
            failures: Vec::new(),
        };
        for w in workers {
            let (l, s, f) = w.await?;
            result.latencies.extend(l);
            result.successes += s;
            result.failures.extend(f);
        }
        result.elapsed = started.elapsed();
        Ok(result)
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

// ---------------------------------------------------------------------------------
// Verification and the raw ceiling
// ---------------------------------------------------------------------------------

struct DbCounts {
    verdicts: Vec<(String, i64)>,
    statuses: Vec<(String, i64)>,
    events: i64,
    outbox: i64,
}

fn count_rows(db_path: &Path) -> BenchResult<DbCounts> {
    let conn = rusqlite::Connection::open(db_path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let group = |sql: &str| -> BenchResult<Vec<(String, i64)>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    };
    let one = |sql: &str| -> BenchResult<i64> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    Ok(DbCounts {
        verdicts: group("SELECT verdict, COUNT(*) FROM notifications GROUP BY verdict ORDER BY verdict")?,
        statuses: group("SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status")?,
        events: one("SELECT COUNT(*) FROM order_events WHERE outcome = 'applied'")?,
        outbox: one("SELECT COUNT(*) FROM webhook_outbox")?,
    })
}

fn count_of(rows: &[(String, i64)], key: &str) -> i64 {
    rows.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
}

struct RawResult {
    elapsed: Duration,
    applied: usize,
    /// Summed over all notifications: notification insert, transition, verdict, and
    /// the rest (BEGIN IMMEDIATE + COMMIT, and SAVEPOINT + RELEASE when used).
    phases: [Duration; 4],
}

/// What one notification writes, exactly as the notify handler's writer job for a
/// verified TRADE_SUCCESS: the raw row, the guarded transition (with its history
/// and outbox rows), the verdict. `inside` receives the time of each of the three.
fn record_notification(
    c: &Tx<'_>,
    changes: &mut Changes,
    notice: &Notice,
    headers: &str,
    now: DateTime<Utc>,
    inside: &mut [Duration; 3],
) -> DbResult<Verdict> {
    let t = Instant::now();
    let nid = notifications::insert(
        c,
        &NewNotification {
            provider: ProviderKind::Alipay,
            received_at: now,
            remote_addr: Some("127.0.0.1:40000"),
            headers,
            body: notice.body.as_bytes(),
        },
    )?;
    let cause = Cause {
        source: TransitionSource::Notification,
        actor: "alipay".to_owned(),
        detail: Some(format!(
            "trade_status=TRADE_SUCCESS notify_id={}",
            notice.notify_id
        )),
        notification_id: Some(nid),
    };
    let change = Change::Pay {
        provider_trade_no: Some(notice.trade_no.clone()),
        paid_at: now,
    };
    inside[0] = t.elapsed();
    let t = Instant::now();
    let verdict = match changes.apply(c, &notice.order_id, &change, &cause, now)? {
        Outcome::Applied { .. } => Verdict::Applied,
        Outcome::Duplicate { .. } => Verdict::Duplicate,
        Outcome::Refused { .. } | Outcome::NotFound => Verdict::Rejected,
    };
    inside[1] = t.elapsed();
    let t = Instant::now();
    notifications::set_verdict(
        c,
        nid,
        verdict,
        None,
        Some(&notice.order_id),
        Some(&notice.notify_id),
    )?;
    inside[2] = t.elapsed();
    Ok(verdict)
}

/// How the raw loop groups notifications into transactions.
#[derive(Clone, Copy)]
enum Shape {
    /// One IMMEDIATE transaction per notification.
    OnePerTx,
    /// `per_tx` notifications per transaction, each in its own savepoint or not.
    Batched { per_tx: usize, savepoints: bool },
}

/// The same writes without HTTP, on one thread, on a fresh database (kassa's schema
/// and pragmas, then `synchronous`) holding the same orders.
fn raw_run(
    all: &[NewOrder],
    notices: &[Notice],
    headers: &str,
    synchronous: &str,
    shape: Shape,
) -> BenchResult<RawResult> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raw.db");
    let mut db = Offline::open(&path)?;
    db.migrate()?;
    match synchronous {
        "FULL" => {}
        "NORMAL" => db.relax_durability()?,
        other => return Err(format!("synchronous={other} is not measured").into()),
    }
    for chunk in all.chunks(ORDERS_PER_JOB) {
        db.immediate(|c| insert_orders(c, chunk))?;
    }
    no_late_checks(&path)?;
    let mut applied = 0usize;
    let mut phases = [Duration::ZERO; 4];
    let mut inside = [Duration::ZERO; 3];
    let add = |phases: &mut [Duration; 4], inside: &[Duration; 3]| {
        for (total, part) in phases.iter_mut().zip(inside) {
            *total += *part;
        }
    };
    let started = Instant::now();
    match shape {
        Shape::OnePerTx => {
            for notice in notices {
                let now = Utc::now();
                let verdict = db.immediate(|c| {
                    let mut changes = Changes::new("http://x");
                    record_notification(c, &mut changes, notice, headers, now, &mut inside)
                })?;
                add(&mut phases, &inside);
                applied += usize::from(verdict == Verdict::Applied);
            }
        }
        Shape::Batched { per_tx, savepoints } => {
            for batch in notices.chunks(per_tx) {
                let now = Utc::now();
                db.immediate(|c| {
                    let mut changes = Changes::new("http://x");
                    for notice in batch {
                        let verdict = if savepoints {
                            c.savepoint(|c| {
                                record_notification(c, &mut changes, notice, headers, now, &mut inside)
                            })?
                        } else {
                            record_notification(c, &mut changes, notice, headers, now, &mut inside)?
                        };
                        add(&mut phases, &inside);
                        applied += usize::from(verdict == Verdict::Applied);
                    }
                    Ok(())
                })?;
            }
        }
    }
    let elapsed = started.elapsed();
    phases[3] = elapsed.saturating_sub(phases[..3].iter().sum());
    drop(db);
    Ok(RawResult {
        elapsed,
        applied,
        phases,
    })
}

// ---------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------

struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    fn new() -> Self {
        Table { rows: Vec::new() }
    }

    fn section(&mut self, title: &str) {
        self.rows.push((format!("**{title}**"), String::new()));
    }

    fn row(&mut self, what: impl Into<String>, value: impl Into<String>) {
        self.rows.push((what.into(), value.into()));
    }

    fn print(&self) {
        let w0 = self
            .rows
            .iter()
            .map(|r| r.0.chars().count())
            .max()
            .unwrap_or(0)
            .max(11);
        let w1 = self
            .rows
            .iter()
            .map(|r| r.1.chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        println!("| {:<w0$} | {:>w1$} |", "measurement", "value");
        println!("|{}|{}:|", "-".repeat(w0 + 2), "-".repeat(w1 + 1));
        for (a, b) in &self.rows {
            println!("| {a:<w0$} | {b:>w1$} |");
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let n = env_usize("KASSA_BENCH_N", DEFAULT_N)?;
    let connections = env_usize("KASSA_BENCH_CONNECTIONS", DEFAULT_CONNECTIONS)?;
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let mut table = Table::new();
    let mut problems: Vec<String> = Vec::new();
    println!("kassa notify bench: N = {n} Alipay TRADE_SUCCESS notifications, {connections} connections, {cores} cores");
    println!();

    // 1. Orders in the server's database.
    let data = tempfile::tempdir()?;
    let db_path = data.path().join("kassa.db");
    let now = Utc::now();
    let all = new_orders(n, now)?;
    let t = Instant::now();
    create_orders_for_server(&db_path, &all)?;
    let orders_time = t.elapsed();

    // 2. Signed notifications.
    let t = Instant::now();
    let notices = sign_notifications(&all, now)?;
    let signing_time = t.elapsed();
    let bodies: Arc<Vec<String>> = Arc::new(notices.iter().map(|x| x.body.clone()).collect());
    let body_len = bodies.iter().map(String::len).sum::<usize>() / n.max(1);

    table.section("setup");
    table.row(
        format!("pending orders written ({ORDERS_PER_JOB} per writer job)"),
        secs(orders_time),
    );
    table.row(
        format!("notifications signed ({cores} threads)"),
        secs(signing_time),
    );
    table.row("notification body, average", format!("{body_len} B"));

    // 3. The real server under load.
    let t = Instant::now();
    let server = Server::start(data.path())?;
    let pid = server.pid();
    let health = format!("http://{}/healthz", server.addr);
    let ready = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(r) = client.get(&health).send().await {
                    if r.status() == 200 {
                        return true;
                    }
                }
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    if !ready {
        let err = server.stop()?.join("\n");
        return Err(format!("GET /healthz never answered 200\n{err}").into());
    }
    let start_time = t.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let idle_rss = proc_status_kib(pid, "VmRSS");
    table.row("server start until /healthz = 200", ms(start_time));

    let server_before = thread_times(&pid.to_string());
    let client_before = thread_times("self");
    let load = drive_load(&server.addr, bodies, connections)?;
    let server_after = thread_times(&pid.to_string());
    let client_after = thread_times("self");
    let peak_rss = proc_status_kib(pid, "VmHWM");
    let rss_after = proc_status_kib(pid, "VmRSS");
    let port = server.addr.rsplit(':').next().unwrap_or("0").to_owned();
    let stderr = server.stop()?;

    let mut latencies = load.latencies;
    latencies.sort_unstable();
    let http_rate = rate(load.successes, load.elapsed);
    table.section(
        format!("HTTP: real binary, POST /notify/alipay, {connections} keep-alive connections").as_str(),
    );
    table.row("wall time", secs(load.elapsed));
    table.row("replies `success`", format!("{} / {n}", load.successes));
    table.row("notifications/s (applied)", format!("{http_rate:.0}"));
    table.row("latency p50", ms(percentile(&latencies, 50.0)));
    table.row("latency p90", ms(percentile(&latencies, 90.0)));
    table.row("latency p99", ms(percentile(&latencies, 99.0)));
    table.row("latency max", ms(latencies.last().copied().unwrap_or_default()));
    table.row("server RSS idle (VmRSS before load)", mib(idle_rss));
    table.row("server RSS after load (VmRSS)", mib(rss_after));
    table.row("server RSS peak (VmHWM after load)", mib(peak_rss));
    if !load.failures.is_empty() {
        problems.push(format!(
            "{} replies were not `success`, e.g. {}",
            load.failures.len(),
            load.failures
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }

    // 4. What the database says.
    let counts = count_rows(&db_path)?;
    let applied = count_of(&counts.verdicts, "applied");
    let paid = count_of(&counts.statuses, "paid");
    table.section("database after the run (server stopped)");
    for (verdict, c) in &counts.verdicts {
        table.row(format!("notifications verdict = {verdict}"), c.to_string());
    }
    for (status, c) in &counts.statuses {
        table.row(format!("orders status = {status}"), c.to_string());
    }
    table.row(
        "order_events applied / webhook_outbox rows",
        format!("{} / {}", counts.events, counts.outbox),
    );
    let all_applied =
        applied == n as i64 && paid == n as i64 && counts.events == n as i64 && counts.outbox == n as i64;
    table.row(
        "all N applied exactly once",
        if all_applied { "yes" } else { "NO" },
    );
    if !all_applied {
        problems.push(format!(
            "expected {n} applied/paid/events/outbox rows, got {applied}/{paid}/{}/{}",
            counts.events, counts.outbox
        ));
    }

    // 5. The raw ceiling of the same transaction.
    let headers = serde_json::json!({
        "content-length": body_len.to_string(),
        "content-type": "application/x-www-form-urlencoded",
        "accept": "*/*",
        "host": format!("127.0.0.1:{port}"),
    })
    .to_string();
    let one = Shape::OnePerTx;
    let writer_shape = |savepoints| Shape::Batched {
        per_tx: RAW_BATCH,
        savepoints,
    };
    let normal = raw_run(&all, &notices, &headers, "NORMAL", one)?;
    let full = raw_run(&all, &notices, &headers, "FULL", one)?;
    let batched = raw_run(&all, &notices, &headers, "FULL", writer_shape(true))?;
    let batched_plain = raw_run(&all, &notices, &headers, "FULL", writer_shape(false))?;
    let normal_rate = rate(normal.applied, normal.elapsed);
    let full_rate = rate(full.applied, full.elapsed);
    for (r, name) in [
        (&normal, "NORMAL"),
        (&full, "FULL"),
        (&batched, "FULL batched, savepoints"),
        (&batched_plain, "FULL batched"),
    ] {
        if r.applied != n {
            problems.push(format!("raw {name}: {} of {n} applied", r.applied));
        }
    }
    let per_tx = |r: &RawResult| {
        let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
        let [a, b, c, d] = r.phases.map(us);
        format!("{a:.0} / {b:.0} / {c:.0} / {d:.0} µs")
    };
    table.section("raw SQLite, same writes, no HTTP, 1 thread");
    table.row(
        "1 per tx, synchronous=NORMAL: tx/s",
        format!("{normal_rate:.0}  ({:.0} µs/tx)", 1e6 / normal_rate),
    );
    table.row(
        "1 per tx, synchronous=FULL: tx/s",
        format!("{full_rate:.0}  ({:.0} µs/tx)", 1e6 / full_rate),
    );
    table.row(
        "HTTP applied/s ÷ raw 1 per tx NORMAL",
        format!("{:.0} %", 100.0 * http_rate / normal_rate),
    );
    table.row(
        "HTTP applied/s ÷ raw 1 per tx FULL",
        format!("{:.0} %", 100.0 * http_rate / full_rate),
    );
    table.row("  NORMAL µs each: insert / apply / verdict / tx", per_tx(&normal));
    table.row("  FULL µs each: insert / apply / verdict / tx", per_tx(&full));
    for (r, what) in [
        (&batched, "savepoint each (the writer's shape)"),
        (&batched_plain, "no savepoints"),
    ] {
        let r_rate = rate(r.applied, r.elapsed);
        table.row(
            format!("{RAW_BATCH} per tx, FULL, {what}: notifications/s"),
            format!("{r_rate:.0}  ({:.0} µs each)", 1e6 / r_rate),
        );
        table.row("  µs each: insert / apply / verdict / tx", per_tx(r));
    }
    table.row(
        format!("HTTP applied/s ÷ raw {RAW_BATCH} per tx with savepoints"),
        format!(
            "{:.0} %",
            100.0 * http_rate / rate(batched.applied, batched.elapsed)
        ),
    );

    // Where the CPU went during the HTTP run.
    let wall_ns = load.elapsed.as_nanos() as f64;
    table.section(
        format!(
            "CPU during the HTTP run ({:.2} s wall; % of one core)",
            load.elapsed.as_secs_f64()
        )
        .as_str(),
    );
    let pct = |ns: u64| format!("{:.0} %", 100.0 * ns as f64 / wall_ns);
    let server_threads = thread_deltas(&server_before, &server_after);
    let server_total: u64 = server_threads.iter().map(|t| t.2).sum();
    let visible = |t: &&(String, usize, u64, u64)| (t.2 + t.3) as f64 >= wall_ns / 200.0;
    for (name, count, run, wait) in server_threads.iter().filter(visible) {
        table.row(
            format!("server {name} ×{count}: on CPU / waiting for a CPU"),
            format!("{} / {}", pct(*run), pct(*wait)),
        );
    }
    table.row("server total on CPU", pct(server_total));
    let client_total: u64 = thread_deltas(&client_before, &client_after)
        .iter()
        .map(|t| t.2)
        .sum();
    table.row("bench client (reqwest, 1 thread) on CPU", pct(client_total));

    table.print();
    let warnings: Vec<&String> = stderr.iter().filter(|l| !l.trim().is_empty()).collect();
    if !warnings.is_empty() {
        println!();
        println!("server stderr ({} lines, first 5):", warnings.len());
        for l in warnings.iter().take(5) {
            println!("  {l}");
        }
    }
    if !problems.is_empty() {
        println!();
        for p in &problems {
            println!("PROBLEM: {p}");
        }
        return Err("the run was not correct (see PROBLEM lines)".into());
    }
    Ok(())
}
