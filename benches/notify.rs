//! Payment-notification throughput of the real `kassa` binary (Alipay, then WeChat Pay),
//! against the raw SQLite ceiling of the same transaction measured in the same run.
//! Prints figures and the issue's goals met or not; asserts only correctness (every
//! reply `success`, every order paid exactly once), never timing.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo bench --bench notify
//! KASSA_BENCH_N=5000 KASSA_BENCH_CONNECTIONS=8 cargo bench --bench notify
//! ```
//!
//! 1. N pending Alipay orders are written into a fresh data directory; one
//!    TRADE_SUCCESS notification per order is signed with the test vectors' platform
//!    key, exactly as Alipay signs it (before anything is timed).
//! 2. The real binary is started as users run it (default log level `info`, real
//!    Alipay configured, sandbox off, no webhook endpoint) and `POST /notify/alipay`
//!    is driven by a load generator that keeps `KASSA_BENCH_CONNECTIONS` (64) requests
//!    in flight over as many keep-alive connections, each body once.
//! 3. Again on a fresh server and database, with 20 % of the requests duplicates (a
//!    quarter of the bodies sent twice, some while the first copy is in flight).
//! 4. Both databases are checked after their server stops: nothing lost, nothing
//!    applied twice, every duplicate recorded as one.
//! 5. The raw ceiling: the pipeline's own database operation
//!    (`service::notifications::record`), one notification per transaction exactly as
//!    the writer commits a batch of one (same connection settings, same cached
//!    statements, the same checkpoint thread beside it), on one thread without HTTP, at
//!    `synchronous=NORMAL` and `FULL`; then 64 per transaction as context.
//! 6. Per-thread CPU of the server and of the load generator, from
//!    `/proc/<pid>/task/*/schedstat`; the writer's jobs-per-commit histogram from the
//!    server's own log; RSS; the WAL's size during and after the load; the filesystem
//!    the database sits on.
//!
//! 7. WeChat Pay: N pending WeChat orders on a fresh server, one `TRANSACTION.SUCCESS`
//!    per order encrypted (AES-256-GCM with the APIv3 key) and signed (RSA, the test
//!    vectors' platform key, public-key mode) as WeChat does, `POST /notify/wechat`
//!    under the same load; its applied/s is printed beside the same raw ceiling.
//!
//! 8. PostgreSQL (with `KASSA_BENCH_PG_URL` set, `pg`): the same Alipay load through one
//!    kassa instance and then two on one database, each on a fresh schema, printed
//!    beside the SQLite figures of this run.
//!
//! `KASSA_BENCH_N` (default 20000) and `KASSA_BENCH_CONNECTIONS` (default 64) change
//! the size of the run.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use kassa::db::notifications::NewNotification;
use kassa::db::{orders, Database, DbError, DbResult, Offline, Tx};
use kassa::domain::{Amount, Currency, NewOrder, OrderId, OutTradeNo, ProviderKind, Verdict};
use kassa::providers::alipay::notify::{verify, Expectations};
use kassa::providers::alipay::sign::{beijing, notification_content};
use kassa::providers::keys::{SigningKey, VerifyingKey};
use kassa::providers::Verified;
use kassa::service::changes::Changes;
use kassa::service::notifications::record;

#[path = "notify/pg.rs"]
mod pg;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const APP_ID: &str = "2021000000000001";
const SELLER_ID: &str = "2088102177000000";
const AMOUNT_FEN: i64 = 1234;
const TOTAL_AMOUNT: &str = "12.34";
const QR_CODE: &str = "https://qr.alipay.com/bax03431ljhokirwl38f00a7";
const PUBLIC_URL: &str = "http://127.0.0.1:8080";
const ORDERS_PER_JOB: usize = 1000;
/// Notifications per transaction in the batched raw run (like the writer under load).
const RAW_BATCH: usize = 64;
const DEFAULT_N: usize = 20_000;
const DEFAULT_CONNECTIONS: usize = 64;
/// One request in this many is a second copy of an earlier body, in the duplicates run.
const DUPLICATE_EVERY: usize = 5;
/// Long enough for the checkpoint thread to see the writer idle and empty the WAL.
const AFTER_LOAD: Duration = Duration::from_millis(1500);

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

fn new_orders(n: usize, now: DateTime<Utc>, provider: ProviderKind) -> BenchResult<Vec<NewOrder>> {
    let amount = Amount::from_minor(AMOUNT_FEN, Currency::Cny).map_err(|e| e.to_string())?;
    (0..n)
        .map(|i| {
            Ok(NewOrder {
                id: OrderId::generate(),
                out_trade_no: OutTradeNo::parse(&format!("bench-{i:08}"))?,
                amount,
                subject: "Jasmine tea".to_owned(),
                provider,
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

/// Pending orders in a server's database, through kassa's own writer.
fn create_orders_for_server(db_path: &Path, all: &[NewOrder]) -> BenchResult<()> {
    let database = Database::open(db_path)?;
    for chunk in all.chunks(ORDERS_PER_JOB) {
        let chunk = chunk.to_vec();
        database.write_blocking(move |c| insert_orders(c, &chunk))?;
    }
    let threads = database.threads();
    drop(database);
    while threads.running() {
        std::thread::sleep(Duration::from_millis(10));
    }
    no_late_checks(db_path)
}

/// Runs `f` over `items` on every core, keeping the order.
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(usize, &T) -> R + Sync) -> BenchResult<Vec<R>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_thread = items.len().div_ceil(threads).max(1);
    let mut out = Vec::with_capacity(items.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .enumerate()
            .map(|(t, chunk)| {
                let f = &f;
                s.spawn(move || {
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(j, x)| f(t * per_thread + j, x))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                Err(_) => return Err("a worker thread panicked"),
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// One TRADE_SUCCESS body per order, signed as Alipay signs them.
fn sign_notifications(all: &[NewOrder], now: DateTime<Utc>, run: &str) -> BenchResult<Vec<String>> {
    let key = SigningKey::from_file(&key_path("alipay_platform_private_pkcs8.pem"))?;
    let stamp = beijing(now);
    let day = now.format("%Y%m%d").to_string();
    parallel(all, |i, order| {
        let notify_id = format!("{day}0022211300{run}{i:015}");
        let trade_no = format!("{day}2200144688{run}{i:017}");
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
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .append_pair("sign", &sign)
            .finish()
    })
}

/// WeChat's side of the bench: the vectors' merchant and keys.
const WECHAT_MCHID: &str = "1230000109";
const WECHAT_APPID: &str = "wxd678efh567hg6787";
const WECHAT_APIV3_KEY: &str = "kassaTestApiV3Key0123456789abcdE";
const WECHAT_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0112345678202611240000000000000001";

/// One `TRANSACTION.SUCCESS` per order as WeChat sends it: the resource encrypted with
/// the APIv3 key under a fresh 12-character nonce, the body signed at `now` with the
/// platform key. Each item is the request's `Wechatpay-*` header lines, a NUL, the body.
fn sign_wechat_notifications(all: &[NewOrder], now: DateTime<Utc>) -> BenchResult<Vec<String>> {
    use kassa::providers::wechat::sign::platform_message;
    use kassa::providers::wechat::ApiV3Key;
    let key = SigningKey::from_file(&key_path("wechat_platform_private_pkcs8.pem"))?;
    let apiv3 = ApiV3Key::new(WECHAT_APIV3_KEY.as_bytes()).map_err(|e| e.to_string())?;
    let success_time = (now + chrono::Duration::hours(8))
        .format("%Y-%m-%dT%H:%M:%S+08:00")
        .to_string();
    let timestamp = now.timestamp().to_string();
    let signed = parallel(all, |i, order| -> Result<String, String> {
        let resource = serde_json::json!({
            "mchid": WECHAT_MCHID, "appid": WECHAT_APPID, "out_trade_no": order.id.as_str(),
            "transaction_id": format!("42000000002026{i:014}"), "trade_type": "NATIVE",
            "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS", "attach": "",
            "success_time": success_time, "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            "amount": {"total": AMOUNT_FEN, "payer_total": AMOUNT_FEN, "currency": "CNY", "payer_currency": "CNY"},
        });
        let nonce = format!("{i:012}");
        let ciphertext = apiv3
            .encrypt(&nonce, "transaction", resource.to_string().as_bytes())
            .map_err(|e| e.to_string())?;
        let body = serde_json::json!({
            "id": format!("EV-bench-{i:012}"), "create_time": success_time,
            "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
            "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": ciphertext, "associated_data": "transaction", "nonce": nonce},
        })
        .to_string();
        let header_nonce = format!("{i:032}");
        let signature = key.sign_base64(&platform_message(&timestamp, &header_nonce, body.as_bytes()));
        Ok(format!(
            "Wechatpay-Timestamp: {timestamp}\r\nWechatpay-Nonce: {header_nonce}\r\n\
             Wechatpay-Serial: {WECHAT_PUBLIC_KEY_ID}\r\nWechatpay-Signature-Type: WECHATPAY2-SHA256-RSA2048\r\n\
             Wechatpay-Signature: {signature}\r\n\0{body}"
        ))
    })?;
    Ok(signed.into_iter().collect::<Result<_, _>>()?)
}

/// Each body as the server's Alipay module verifies it (for the raw runs, which start
/// where the writer starts: after verification).
fn verify_all(bodies: &[String]) -> BenchResult<Vec<Verified>> {
    let key = VerifyingKey::from_file(&key_path("alipay_platform_public.pem"))?;
    let expect = Expectations {
        key: &key,
        app_id: APP_ID,
        seller_id: None,
    };
    let verified = parallel(bodies, |_, body| verify(body.as_bytes(), &expect))?;
    if let Some(Err(e)) = verified.iter().find(|v| v.is_err()) {
        return Err(format!("a bench notification does not verify: {e}").into());
    }
    Ok(verified)
}

/// Every body once, plus a second copy of one in four of them so that duplicates
/// are one request in `DUPLICATE_EVERY`: some right behind the first copy (both in
/// flight at once), some a while later.
fn with_duplicates(bodies: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(bodies.len() * DUPLICATE_EVERY / (DUPLICATE_EVERY - 1) + 1);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, body) in bodies.iter().enumerate() {
        out.push(body.clone());
        if i % (DUPLICATE_EVERY - 1) == DUPLICATE_EVERY - 2 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let back = usize::try_from((seed >> 33) % 200).unwrap_or(0).min(i);
            out.push(bodies[i - back].clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------

/// What the server wrote to stderr: counted, the notable lines kept.
#[derive(Default)]
struct ServerLog {
    lines: usize,
    warnings: Vec<String>,
    bursts: Vec<String>,
}

struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<ServerLog>>,
    stderr_done: mpsc::Receiver<()>,
}

impl Server {
    /// Starts the binary as users run it: no RUST_LOG (kassa's default, `info`).
    fn start(data_dir: &Path) -> BenchResult<Server> {
        Server::start_with(data_dir, &[])
    }

    /// As `start`, with these settings added to its environment.
    fn start_with(data_dir: &Path, extra_env: &[(&str, &str)]) -> BenchResult<Server> {
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
            .env("KASSA_WECHAT_MCHID", WECHAT_MCHID)
            .env("KASSA_WECHAT_APPID", WECHAT_APPID)
            .env("KASSA_WECHAT_APIV3_KEY", WECHAT_APIV3_KEY)
            .env(
                "KASSA_WECHAT_MERCHANT_SERIAL_NO",
                "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
            )
            .env(
                "KASSA_WECHAT_MERCHANT_PRIVATE_KEY_FILE",
                key_path("wechat_merchant_private_pkcs8.pem"),
            )
            .env(
                "KASSA_WECHAT_PLATFORM_PUBLIC_KEY_FILE",
                key_path("wechat_platform_public.pem"),
            )
            .env("KASSA_WECHAT_PLATFORM_PUBLIC_KEY_ID", WECHAT_PUBLIC_KEY_ID)
            .env("KASSA_WECHAT_API_BASE", "http://127.0.0.1:9")
            .env("KASSA_SANDBOX_ENABLED", "false")
            .envs(extra_env.iter().copied())
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
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let sink = log.clone();
        let (done, stderr_done) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                let Ok(mut log) = sink.lock() else { break };
                log.lines += 1;
                if line.contains("database writer burst") {
                    log.bursts.push(line);
                } else if (line.contains(" WARN ") || line.contains(" ERROR ")) && log.warnings.len() < 20 {
                    log.warnings.push(line);
                }
            }
            let _ = done.send(());
        });
        let line = match first.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = stderr_done.recv_timeout(Duration::from_secs(2));
                let err = log.lock().map(|l| l.warnings.join("\n")).unwrap_or_default();
                return Err(format!("kassa did not start:\n{err}").into());
            }
        };
        let addr = line
            .strip_prefix("kassa listening on http://")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .trim()
            .to_owned();
        let server = Server {
            child,
            addr,
            log,
            stderr_done,
        };
        server.wait_healthy()?;
        Ok(server)
    }

    fn wait_healthy(&self) -> BenchResult<()> {
        let health = format!("http://{}/healthz", self.addr);
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
        if ready {
            Ok(())
        } else {
            Err("GET /healthz never answered 200".into())
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (graceful actix shutdown), SIGKILL if it lingers; then its log.
    fn stop(mut self) -> BenchResult<ServerLog> {
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
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(5));
        let mut log = self.log.lock().map_err(|_| "server log poisoned")?;
        Ok(std::mem::take(&mut *log))
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

/// The text of a log line without its colours (kassa's default log format has them).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
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

/// On-CPU nanoseconds of the calling thread.
fn this_thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU and run-queue wait during an interval, summed by thread name:
/// (name, threads, on-CPU ns, waiting ns), busiest first.
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

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The mount the path sits on: (device, mount point, type, options), from /proc/mounts.
fn filesystem_of(path: &Path) -> String {
    let Ok(path) = path.canonicalize() else {
        return "unknown".to_owned();
    };
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && path.starts_with(f[1])).then(|| {
                (
                    f[1].len(),
                    format!("{} on {} type {} ({})", f[0], f[1], f[2], f[3]),
                )
            })
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".to_owned(), |(_, m)| m)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------

struct LoadResult {
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// (when it was sent, from the start; how long its reply took), in sending order.
    timeline: Vec<(Duration, Duration)>,
    successes: usize,
    failures: Vec<String>,
}

/// One request as sent on the wire. An item with a NUL carries WeChat's header lines
/// before it and goes to `/notify/wechat`; any other is an Alipay form body.
fn request_bytes(addr: &str, body: &str) -> Vec<u8> {
    if let Some((headers, body)) = body.split_once('\0') {
        return format!(
            "POST /notify/wechat HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{headers}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
    }
    format!(
        "POST /notify/alipay HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 response (with a Content-Length) from `stream`, keeping what
/// follows it in `buf`; (status, body).
async fn read_response(
    stream: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("head not UTF-8"))?;
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| bad("no status"))?;
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                // A 204 has no body and may carry no length.
                .or((status == 204).then_some(0))
                .ok_or_else(|| bad("no content-length"))?;
            let total = end + 4 + length;
            while buf.len() < total {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(bad("closed in the body"));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..total].to_vec();
            buf.drain(..total);
            return Ok((status, body));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("closed before a response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Keeps `connections` requests in flight: one task per keep-alive connection, each
/// sending its next request as soon as its reply is in, all on one client thread. A
/// plain HTTP/1.1 client over TCP (requests built before the clock starts), so the
/// load generator takes as little of the two cores it shares with the server as it
/// can; its CPU is measured and printed.
fn drive_load(addr: &str, bodies: Arc<Vec<String>>, connections: usize) -> BenchResult<LoadResult> {
    use tokio::io::AsyncWriteExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(bodies.iter().map(|b| request_bytes(addr, b)).collect());
    let addr = addr.to_owned();
    rt.block_on(async move {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..connections)
            .map(|_| {
                let (addr, requests, next) = (addr.clone(), requests.clone(), next.clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(requests.len() / connections + 1);
                    let mut timeline = Vec::with_capacity(requests.len() / connections + 1);
                    let mut successes = 0usize;
                    let mut failures = Vec::new();
                    let mut conn: Option<tokio::net::TcpStream> = None;
                    let mut buf = Vec::with_capacity(4096);
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(request) = requests.get(i) else { break };
                        let t0 = Instant::now();
                        let reply = async {
                            let stream = match &mut conn {
                                Some(s) => s,
                                None => {
                                    let s = tokio::net::TcpStream::connect(&addr).await?;
                                    s.set_nodelay(true)?;
                                    buf.clear();
                                    conn.insert(s)
                                }
                            };
                            stream.write_all(request).await?;
                            read_response(stream, &mut buf).await
                        }
                        .await;
                        latencies.push(t0.elapsed());
                        timeline.push((t0 - started, t0.elapsed()));
                        match reply {
                            Ok((200, body)) if body == b"success" => successes += 1,
                            // WeChat's acknowledgement.
                            Ok((204, _)) => successes += 1,
                            Ok((status, body)) => {
                                failures.push(format!("#{i}: {status} {:?}", String::from_utf8_lossy(&body)))
                            }
                            Err(e) => {
                                conn = None;
                                failures.push(format!("#{i}: {e}"));
                            }
                        }
                    }
                    (latencies, timeline, successes, failures)
                })
            })
            .collect();
        let mut result = LoadResult {
            elapsed: Duration::ZERO,
            latencies: Vec::with_capacity(requests.len()),
            timeline: Vec::with_capacity(requests.len()),
            successes: 0,
            failures: Vec::new(),
        };
        for w in workers {
            let (l, t, s, f) = w.await?;
            result.latencies.extend(l);
            result.timeline.extend(t);
            result.successes += s;
            result.failures.extend(f);
        }
        result.elapsed = started.elapsed();
        result.latencies.sort_unstable();
        result.timeline.sort_unstable();
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

/// Samples a file's size while the load runs; the largest seen.
struct SizeWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<()>,
}

impl SizeWatch {
    fn start(path: PathBuf) -> SizeWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(file_len(&path), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        SizeWatch { stop, peak, handle }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// One HTTP run against a fresh server.
struct HttpRun {
    requests: usize,
    load: LoadResult,
    idle_rss: Option<u64>,
    peak_rss: Option<u64>,
    wal_peak: u64,
    wal_after_load: u64,
    wal_after_idle: u64,
    db_size: u64,
    server_threads: Vec<(String, usize, u64, u64)>,
    /// The writer's CPU from the start of the load until the outbox was worked through.
    writer_until_drained_ns: u64,
    /// From the end of the load until the outbox was worked through.
    drain: Duration,
    client_cpu_ns: u64,
    log: ServerLog,
    counts: DbCounts,
}

impl HttpRun {
    fn writer_cpu_ns(&self) -> u64 {
        self.server_threads
            .iter()
            .filter(|t| t.0 == WRITER_THREAD)
            .map(|t| t.2)
            .sum()
    }
}

const WRITER_THREAD: &str = "kassa-db-writer";

/// Waits until no outbox row is waiting for the webhook dispatcher.
fn undelivered_drained(db_path: &Path, limit: Duration) -> BenchResult<()> {
    let conn = rusqlite::Connection::open_with_flags(db_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let deadline = Instant::now() + limit;
    loop {
        let waiting: i64 = conn.query_row(
            "SELECT COUNT(*) FROM webhook_outbox WHERE status IN ('pending', 'delivering')",
            [],
            |r| r.get(0),
        )?;
        if waiting == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{waiting} outbox rows still undelivered after {limit:?}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http_run(data: &Path, bodies: Vec<String>, connections: usize) -> BenchResult<HttpRun> {
    let db_path = data.join("kassa.db");
    let wal_path = data.join("kassa.db-wal");
    let server = Server::start(data)?;
    let pid = server.pid();
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss = proc_status_kib(pid, "VmRSS");
    let requests = bodies.len();

    let server_before = thread_times(&pid.to_string());
    let client_before = thread_times("self");
    let watch = SizeWatch::start(wal_path.clone());
    let load = drive_load(&server.addr, Arc::new(bodies), connections)?;
    let server_after = thread_times(&pid.to_string());
    let client_after = thread_times("self");
    let wal_after_load = file_len(&wal_path);
    // The webhook dispatcher works through the outbox rows the run queued (skipping
    // them: no endpoint is configured) on the same writer, partly after the load.
    let t = Instant::now();
    undelivered_drained(&db_path, Duration::from_secs(120))?;
    let drain = t.elapsed();
    let server_drained = thread_times(&pid.to_string());
    std::thread::sleep(AFTER_LOAD);
    let wal_peak = watch.finish();
    let wal_after_idle = file_len(&wal_path);
    let db_size = file_len(&db_path);
    let peak_rss = proc_status_kib(pid, "VmHWM");
    let log = server.stop()?;
    // The load generator's thread is the one that ran `drive_load` (this one).
    let client_cpu_ns = thread_deltas(&client_before, &client_after)
        .iter()
        .map(|t| t.2)
        .sum();
    Ok(HttpRun {
        requests,
        load,
        idle_rss,
        peak_rss,
        wal_peak,
        wal_after_load,
        wal_after_idle,
        db_size,
        server_threads: thread_deltas(&server_before, &server_after),
        writer_until_drained_ns: thread_deltas(&server_before, &server_drained)
            .iter()
            .filter(|t| t.0 == WRITER_THREAD)
            .map(|t| t.2)
            .sum(),
        drain,
        client_cpu_ns,
        log,
        counts: count_rows(&db_path)?,
    })
}

// ---------------------------------------------------------------------------------
// Verification and the raw ceiling
// ---------------------------------------------------------------------------------

struct DbCounts {
    verdicts: Vec<(String, i64)>,
    statuses: Vec<(String, i64)>,
    events: i64,
    outbox: i64,
    /// Orders with more than one applied history row or more than one webhook.
    doubled: i64,
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
        doubled: one(
            "SELECT (SELECT COUNT(*) FROM (SELECT order_id FROM order_events WHERE outcome = 'applied' \
             GROUP BY order_id HAVING COUNT(*) > 1)) + (SELECT COUNT(*) FROM (SELECT order_id FROM webhook_outbox \
             GROUP BY order_id HAVING COUNT(*) > 1))",
        )?,
    })
}

fn count_of(rows: &[(String, i64)], key: &str) -> i64 {
    rows.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
}

struct RawResult {
    elapsed: Duration,
    applied: usize,
    /// CPU of the thread that ran the transactions.
    cpu_ns: u64,
    wal_after: u64,
}

/// How the raw loop groups notifications into transactions.
#[derive(Clone, Copy)]
enum Shape {
    /// One transaction per notification, as the writer commits a batch of one.
    OnePerTx,
    /// `RAW_BATCH` per transaction, each in its own savepoint (the writer under load).
    Batched,
}

/// The pipeline's database operation without HTTP, on one thread, on a fresh database
/// (the server's schema, connection settings and checkpoint thread; then
/// `synchronous`) holding the same orders.
fn raw_run(
    all: &[NewOrder],
    bodies: &[String],
    verified: &[Verified],
    headers: &str,
    synchronous: &str,
    shape: Shape,
) -> BenchResult<RawResult> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raw.db");
    let mut db = Offline::open_as_writer(&path)?;
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
    let notification = |i: usize, now: DateTime<Utc>| NewNotification {
        provider: ProviderKind::Alipay,
        received_at: now,
        remote_addr: Some("127.0.0.1:40000"),
        headers,
        body: bodies[i].as_bytes(),
        cut: None,
    };
    let mut applied = 0usize;
    let cpu_before = this_thread_cpu_ns();
    let started = Instant::now();
    match shape {
        Shape::OnePerTx => {
            for (i, notice) in verified.iter().enumerate() {
                let raw = notification(i, Utc::now());
                let decision =
                    db.writer_transaction(|tx| record(tx, &mut Changes::new(PUBLIC_URL), &raw, notice))?;
                applied += usize::from(decision.verdict() == Verdict::Applied);
            }
        }
        Shape::Batched => {
            for (b, batch) in verified.chunks(RAW_BATCH).enumerate() {
                let now = Utc::now();
                db.immediate(|tx| {
                    for (j, notice) in batch.iter().enumerate() {
                        let raw = notification(b * RAW_BATCH + j, now);
                        let decision =
                            tx.savepoint(|tx| record(tx, &mut Changes::new(PUBLIC_URL), &raw, notice))?;
                        applied += usize::from(decision.verdict() == Verdict::Applied);
                    }
                    Ok(())
                })?;
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu_ns = this_thread_cpu_ns().saturating_sub(cpu_before);
    let wal_after = file_len(&dir.path().join("raw.db-wal"));
    drop(db);
    Ok(RawResult {
        elapsed,
        applied,
        cpu_ns,
        wal_after,
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

fn mib_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The HTTP section of one run; its problems are added to `problems`.
fn report_http(
    table: &mut Table,
    problems: &mut Vec<String>,
    title: &str,
    run: &HttpRun,
    n: usize,
    duplicates: usize,
) {
    let load = &run.load;
    table.section(title);
    table.row(
        "requests (of which second copies)",
        format!("{} ({duplicates})", run.requests),
    );
    table.row("wall time", secs(load.elapsed));
    table.row(
        "replies `success`",
        format!("{} / {}", load.successes, run.requests),
    );
    table.row("notifications applied/s", format!("{:.0}", rate(n, load.elapsed)));
    table.row("replies/s", format!("{:.0}", rate(run.requests, load.elapsed)));
    table.row(
        "latency p50 / p90 / p99 / max",
        format!(
            "{} / {} / {} / {}",
            ms(percentile(&load.latencies, 50.0)),
            ms(percentile(&load.latencies, 90.0)),
            ms(percentile(&load.latencies, 99.0)),
            ms(load.latencies.last().copied().unwrap_or_default())
        ),
    );
    // Slow replies: a few stalls (every request in flight waits) or spread out
    // (queueing)? Counted by the 50-ms window in which they were sent.
    let slow = Duration::from_millis(20);
    let windows: std::collections::BTreeSet<u128> = load
        .timeline
        .iter()
        .filter(|(_, took)| *took > slow)
        .map(|(at, _)| at.as_millis() / 50)
        .collect();
    table.row(
        "replies slower than 20 ms / 50-ms windows they were sent in",
        format!(
            "{} / {} of {}",
            load.timeline.iter().filter(|(_, took)| *took > slow).count(),
            windows.len(),
            load.elapsed.as_millis() / 50 + 1
        ),
    );
    let wall_ns = load.elapsed.as_nanos() as f64;
    let pct = |ns: u64| format!("{:.0} %", 100.0 * ns as f64 / wall_ns);
    table.row(
        "writer thread CPU per applied notification, during the load",
        format!(
            "{:.0} µs ({} of one core)",
            run.writer_cpu_ns() as f64 / 1e3 / n as f64,
            pct(run.writer_cpu_ns())
        ),
    );
    table.row(
        "  … until the webhook outbox was worked through too",
        format!(
            "{:.0} µs ({} after the load)",
            run.writer_until_drained_ns as f64 / 1e3 / n as f64,
            ms(run.drain)
        ),
    );
    let visible = |t: &&(String, usize, u64, u64)| (t.2 + t.3) as f64 >= wall_ns / 200.0;
    for (name, count, on_cpu, waiting) in run.server_threads.iter().filter(visible) {
        table.row(
            format!("  server {name} ×{count}: on CPU / waiting for a CPU"),
            format!("{} / {}", pct(*on_cpu), pct(*waiting)),
        );
    }
    let server_total: u64 = run.server_threads.iter().map(|t| t.2).sum();
    table.row(
        "server CPU, all threads",
        format!(
            "{} of one core ({:.0} µs per request)",
            pct(server_total),
            server_total as f64 / 1e3 / run.requests as f64
        ),
    );
    table.row(
        "load generator CPU (plain HTTP/1.1 over TCP, 1 thread)",
        format!(
            "{} of one core ({:.0} µs per request)",
            pct(run.client_cpu_ns),
            run.client_cpu_ns as f64 / 1e3 / run.requests as f64
        ),
    );
    table.row(
        "server RSS idle (VmRSS before load) / peak (VmHWM)",
        format!("{} / {}", mib(run.idle_rss), mib(run.peak_rss)),
    );
    table.row(
        "WAL: peak / right after the load / 1.5 s after the outbox drained",
        format!(
            "{} / {} / {}",
            mib_bytes(run.wal_peak),
            mib_bytes(run.wal_after_load),
            mib_bytes(run.wal_after_idle)
        ),
    );
    table.row("database file after the run", mib_bytes(run.db_size));
    for burst in &run.log.bursts {
        let field = |name: &str| -> String {
            burst
                .split_once(&format!("{name}="))
                .map(|(_, rest)| rest)
                .map(|rest| {
                    if name == "jobs_per_commit" {
                        rest.trim().to_owned()
                    } else {
                        rest.split_whitespace().next().unwrap_or("").to_owned()
                    }
                })
                .unwrap_or_default()
        };
        table.row(
            "writer: jobs / commits in the burst",
            format!("{} / {}", field("jobs"), field("commits")),
        );
        table.row("writer: commits by jobs per commit", field("jobs_per_commit"));
    }
    table.row(
        "server log lines (default level info) / warnings",
        format!("{} / {}", run.log.lines, run.log.warnings.len()),
    );

    let c = &run.counts;
    let applied = count_of(&c.verdicts, "applied");
    let dups = count_of(&c.verdicts, "duplicate");
    let paid = count_of(&c.statuses, "paid");
    table.row(
        "DB after: verdicts",
        c.verdicts
            .iter()
            .map(|(v, k)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    table.row(
        "DB after: paid orders / applied history rows / webhooks queued",
        format!("{paid} / {} / {}", c.events, c.outbox),
    );
    let n = n as i64;
    let exact = applied == n
        && dups == duplicates as i64
        && paid == n
        && c.events == n
        && c.outbox == n
        && c.doubled == 0
        && load.successes == run.requests;
    table.row(
        "zero lost, zero doubled, every reply success",
        if exact { "yes" } else { "NO" },
    );
    if !exact {
        problems.push(format!(
            "{title}: expected {n} applied/paid/history/webhooks and {duplicates} duplicates, got \
             {applied}/{paid}/{}/{} and {dups}; {} orders doubled; {} of {} replies success",
            c.events, c.outbox, c.doubled, load.successes, run.requests
        ));
    }
    if !load.failures.is_empty() {
        problems.push(format!(
            "{title}: {} replies were not `success`, e.g. {}",
            load.failures.len(),
            load.failures
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
}

fn goal(table: &mut Table, what: &str, met: bool, figure: String) {
    table.row(
        format!("{} {what}", if met { "met:    " } else { "NOT met:" }),
        figure,
    );
}

fn main() -> BenchResult<()> {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let n = env_usize("KASSA_BENCH_N", DEFAULT_N)?;
    let connections = env_usize("KASSA_BENCH_CONNECTIONS", DEFAULT_CONNECTIONS)?;
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let mut table = Table::new();
    let mut problems: Vec<String> = Vec::new();
    let work = tempfile::tempdir()?;
    println!(
        "kassa notify bench, {}: N = {n} Alipay TRADE_SUCCESS and {n} WeChat TRANSACTION.SUCCESS notifications, {connections} connections, {cores} cores",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("load average at start: {}", loadavg());
    println!("database filesystem: {}", filesystem_of(work.path()));
    println!();

    // 1. Orders and signed notifications, for both HTTP runs.
    let now = Utc::now();
    let t = Instant::now();
    let unique_dir = work.path().join("unique");
    let dups_dir = work.path().join("duplicates");
    let unique_orders = new_orders(n, now, ProviderKind::Alipay)?;
    let dup_orders = new_orders(n, now, ProviderKind::Alipay)?;
    create_orders_for_server(&unique_dir.join("kassa.db"), &unique_orders)?;
    create_orders_for_server(&dups_dir.join("kassa.db"), &dup_orders)?;
    let orders_time = t.elapsed();
    let t = Instant::now();
    let unique_bodies = sign_notifications(&unique_orders, now, "1")?;
    let dup_bodies = sign_notifications(&dup_orders, now, "2")?;
    let signing_time = t.elapsed();
    let body_len = unique_bodies.iter().map(String::len).sum::<usize>() / n.max(1);
    let with_dups = with_duplicates(&dup_bodies);
    let duplicates = with_dups.len() - n;

    table.section("setup (not timed)");
    table.row(format!("2 × {n} pending orders written"), secs(orders_time));
    table.row(
        format!("2 × {n} notifications signed ({cores} threads)"),
        secs(signing_time),
    );
    table.row("notification body, average", format!("{body_len} B"));

    // 2. and 3. The real server under load.
    let unique = http_run(&unique_dir, unique_bodies.clone(), connections)?;
    let dups = http_run(&dups_dir, with_dups, connections)?;
    report_http(
        &mut table,
        &mut problems,
        &format!("HTTP, unique notifications: real binary, POST /notify/alipay, {connections} keep-alive connections"),
        &unique,
        n,
        0,
    );
    report_http(
        &mut table,
        &mut problems,
        &format!("HTTP, 1 request in {DUPLICATE_EVERY} a second copy: same, fresh server and database"),
        &dups,
        n,
        duplicates,
    );

    // 5. The raw ceiling of the same transaction.
    let verified = verify_all(&unique_bodies)?;
    let headers = serde_json::json!({
        "content-length": body_len.to_string(),
        "content-type": "application/x-www-form-urlencoded",
        "accept": "*/*",
        "host": "127.0.0.1:40001",
    })
    .to_string();
    let raw = |sync, shape| raw_run(&unique_orders, &unique_bodies, &verified, &headers, sync, shape);
    let normal = raw("NORMAL", Shape::OnePerTx)?;
    let full = raw("FULL", Shape::OnePerTx)?;
    let batched = raw("FULL", Shape::Batched)?;
    for (r, name) in [(&normal, "NORMAL"), (&full, "FULL"), (&batched, "FULL batched")] {
        if r.applied != n {
            problems.push(format!("raw {name}: {} of {n} applied", r.applied));
        }
    }
    let normal_rate = rate(normal.applied, normal.elapsed);
    let full_rate = rate(full.applied, full.elapsed);
    let http_rate = rate(n, unique.load.elapsed);
    let each = |r: &RawResult| {
        format!(
            "{:.0}/s  ({:.0} µs each, {:.0} µs CPU; WAL after {})",
            rate(r.applied, r.elapsed),
            r.elapsed.as_secs_f64() * 1e6 / n as f64,
            r.cpu_ns as f64 / 1e3 / n as f64,
            mib_bytes(r.wal_after)
        )
    };
    table.section("raw: the pipeline's DB operation, no HTTP, 1 thread, the writer's connection settings");
    table.row("1 per transaction, synchronous=NORMAL", each(&normal));
    table.row("1 per transaction, synchronous=FULL", each(&full));
    table.row(
        format!("{RAW_BATCH} per transaction, FULL, savepoint each"),
        each(&batched),
    );
    table.row(
        "HTTP applied/s ÷ raw 1 per tx NORMAL / ÷ FULL",
        format!("{:.2}× / {:.2}×", http_rate / normal_rate, http_rate / full_rate),
    );

    // 7. WeChat Pay over the same load, against the same raw ceiling. Signed just before
    // its run: WeChat's timestamps must be within 5 minutes of the server's clock.
    let wechat_dir = work.path().join("wechat");
    let wechat_orders = new_orders(n, Utc::now(), ProviderKind::Wechat)?;
    create_orders_for_server(&wechat_dir.join("kassa.db"), &wechat_orders)?;
    let t = Instant::now();
    let wechat_bodies = sign_wechat_notifications(&wechat_orders, Utc::now())?;
    let wechat_signing = t.elapsed();
    let wechat = http_run(&wechat_dir, wechat_bodies, connections)?;
    report_http(
        &mut table,
        &mut problems,
        &format!(
            "HTTP, WeChat Pay: POST /notify/wechat (RSA verify + AES-GCM per notification), {connections} connections, fresh server"
        ),
        &wechat,
        n,
        0,
    );
    let wechat_rate = rate(n, wechat.load.elapsed);
    table.row(
        format!("{n} notifications encrypted and signed, not timed"),
        secs(wechat_signing),
    );
    table.row(
        "WeChat applied/s ÷ raw 1 per tx NORMAL / ÷ FULL",
        format!(
            "{:.2}× / {:.2}×",
            wechat_rate / normal_rate,
            wechat_rate / full_rate
        ),
    );
    table.row(
        "WeChat applied/s ÷ Alipay applied/s",
        format!("{:.2}×", wechat_rate / http_rate),
    );

    // 8. PostgreSQL, one instance and two, beside this run's SQLite figures.
    let unique_p99 = percentile(&unique.load.latencies, 99.0);
    match std::env::var(pg::URL_VAR)
        .ok()
        .filter(|url| !url.trim().is_empty())
    {
        Some(url) => {
            for instances in [1, 2] {
                let run = pg::run(url.trim(), n, instances, connections)?;
                pg::report(&mut table, &mut problems, &run, n, http_rate, unique_p99);
            }
        }
        None => {
            table.section("PostgreSQL");
            table.row(format!("skipped: {} not set", pg::URL_VAR), "");
        }
    }

    // The goals of issue 11.
    let dups_p99 = percentile(&dups.load.latencies, 99.0);
    let unique_replies = rate(unique.requests, unique.load.elapsed);
    let dup_replies = rate(dups.requests, dups.load.elapsed);
    table.section("goals");
    goal(
        &mut table,
        "HTTP applied/s ≥ 0.8 × raw 1-per-tx NORMAL",
        http_rate >= 0.8 * normal_rate,
        format!("{:.2}×", http_rate / normal_rate),
    );
    goal(
        &mut table,
        "duplicates no slower (replies/s, dup run ÷ unique run)",
        dup_replies >= unique_replies,
        format!("{:.2}×", dup_replies / unique_replies),
    );
    goal(
        &mut table,
        "p99 < 10 ms (unique / with duplicates)",
        unique_p99 < Duration::from_millis(10) && dups_p99 < Duration::from_millis(10),
        format!("{} / {}", ms(unique_p99), ms(dups_p99)),
    );
    let idle = unique.idle_rss.max(dups.idle_rss).unwrap_or(u64::MAX);
    let peak = unique.peak_rss.max(dups.peak_rss).unwrap_or(u64::MAX);
    goal(&mut table, "idle RSS < 30 MiB", idle < 30 * 1024, mib(Some(idle)));
    goal(&mut table, "peak RSS < 64 MiB", peak < 64 * 1024, mib(Some(peak)));
    let wal = unique.wal_after_load.max(dups.wal_after_load);
    goal(
        &mut table,
        "WAL < 64 MiB after the run (right after the load)",
        wal < 64 << 20,
        mib_bytes(wal),
    );
    goal(
        &mut table,
        "zero lost, zero doubled, every reply success",
        problems.is_empty(),
        format!("{} problems", problems.len()),
    );

    table.print();
    println!();
    println!("load average at end: {}", loadavg());
    for (what, run) in [("unique", &unique), ("duplicates", &dups)] {
        if !run.log.warnings.is_empty() {
            println!("server warnings ({what} run, first {}):", run.log.warnings.len());
            for l in &run.log.warnings {
                println!("  {l}");
            }
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
