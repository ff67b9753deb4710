//! The PostgreSQL runs (issue 17): the same signed Alipay notifications through one
//! kassa instance, then through two instances on one database (the load split between
//! them, as a load balancer would), each on a fresh schema of `KASSA_BENCH_PG_URL`.
//! Printed beside the SQLite run of the same process, so that the ratio is measured
//! on the same machine at the same time. The server should keep PostgreSQL's own
//! durability (`fsync=on`, `synchronous_commit=on`): SQLite's run is `synchronous=FULL`.
//!
//! Without `KASSA_BENCH_PG_URL` the runs are skipped with a line saying so.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use kassa::db::{Database, DbTarget};
use kassa::domain::ProviderKind;

use super::{
    count_of, drive_load, insert_orders, ms, new_orders, percentile, rate, secs, sign_notifications,
    thread_times, BenchResult, LoadResult, Server, Table, ORDERS_PER_JOB,
};

pub(super) const URL_VAR: &str = "KASSA_BENCH_PG_URL";

/// Connections per instance: the load generator keeps as many requests in flight in
/// all as in the SQLite run, split between the instances.
const POOL_SIZE: &str = "16";

/// What one PostgreSQL run measured.
pub(super) struct PgRun {
    pub instances: usize,
    pub load: LoadResult,
    pub requests: usize,
    pub drain: Duration,
    /// CPU of every kassa process during the load, in ns.
    pub kassa_cpu_ns: u64,
    /// CPU of the PostgreSQL server's processes during the load, in ns (all of them:
    /// the bench's cluster serves only this run).
    pub postgres_cpu_ns: u64,
    pub counts: PgCounts,
}

pub(super) struct PgCounts {
    pub verdicts: Vec<(String, i64)>,
    pub statuses: Vec<(String, i64)>,
    pub events: i64,
    pub outbox: i64,
    pub doubled: i64,
}

/// A schema for one run, dropped afterwards; the URL puts it first on the search path.
struct BenchSchema {
    base: String,
    name: String,
}

impl BenchSchema {
    fn create(base: &str, run: &str) -> BenchResult<BenchSchema> {
        let name = format!("kassa_bench_{}_{run}", std::process::id());
        sql(
            base,
            &format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"),
        )?;
        Ok(BenchSchema {
            base: base.to_owned(),
            name,
        })
    }

    fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{separator}options=-csearch_path%3D{}", self.base, self.name)
    }
}

impl Drop for BenchSchema {
    fn drop(&mut self) {
        if let Err(e) = sql(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        ) {
            eprintln!("could not drop bench schema {}: {e}", self.name);
        }
    }
}

/// Runs `statements` on a connection of the bench's own (kassa has no operation for
/// setting up a bench, nor for counting its rows this way).
fn sql(url: &str, statements: &str) -> BenchResult<()> {
    with_client(url, |client| async move {
        client.batch_execute(statements).await?;
        Ok(())
    })
}

fn with_client<R, F, Fut>(url: &str, f: F) -> BenchResult<R>
where
    F: FnOnce(tokio_postgres::Client) -> Fut,
    Fut: std::future::Future<Output = BenchResult<R>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = f(client).await;
        driver.abort();
        result
    })
}

fn counts(url: &str) -> BenchResult<PgCounts> {
    with_client(url, |client| async move {
        let group = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, i64)> {
            rows.iter().map(|r| (r.get(0), r.get(1))).collect()
        };
        let one = |sql: &'static str| {
            let client = &client;
            async move { BenchResult::Ok(client.query_one(sql, &[]).await?.get::<_, i64>(0)) }
        };
        Ok(PgCounts {
            verdicts: group(
                client
                    .query(
                        "SELECT verdict, COUNT(*) FROM notifications GROUP BY verdict ORDER BY verdict",
                        &[],
                    )
                    .await?,
            ),
            statuses: group(
                client
                    .query(
                        "SELECT status, COUNT(*) FROM orders GROUP BY status ORDER BY status",
                        &[],
                    )
                    .await?,
            ),
            events: one("SELECT COUNT(*) FROM order_events WHERE outcome = 'applied'").await?,
            outbox: one("SELECT COUNT(*) FROM webhook_outbox").await?,
            doubled: one(
                "SELECT (SELECT COUNT(*) FROM (SELECT order_id FROM order_events WHERE outcome = 'applied' \
                 GROUP BY order_id HAVING COUNT(*) > 1) AS e) + (SELECT COUNT(*) FROM (SELECT order_id \
                 FROM webhook_outbox GROUP BY order_id HAVING COUNT(*) > 1) AS w)",
            )
            .await?,
        })
    })
}

fn undelivered_drained(url: &str, limit: Duration) -> BenchResult<()> {
    with_client(url, |client| async move {
        let deadline = Instant::now() + limit;
        loop {
            let waiting: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM webhook_outbox WHERE status IN ('pending', 'delivering')",
                    &[],
                )
                .await?
                .get(0);
            if waiting == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{waiting} outbox rows still undelivered after {limit:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// The PostgreSQL server's processes: every process named `postgres`.
fn postgres_pids() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
        })
        .collect()
}

/// On-CPU ns of each process in `pids`, by pid.
fn cpu_by_pid(pids: &[String]) -> HashMap<String, u64> {
    pids.iter()
        .map(|pid| (pid.clone(), thread_times(pid).values().map(|t| t.1).sum()))
        .collect()
}

/// CPU used since `before` by the processes named `pids` now: a process that started
/// in between (a pooled connection's backend, opened under load) counts from zero.
fn cpu_since(before: &HashMap<String, u64>, pids: &[String]) -> u64 {
    cpu_by_pid(pids)
        .iter()
        .map(|(pid, now)| now.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

/// One run: `instances` kassa processes on a fresh schema, the bodies dealt to them in
/// turn.
pub(super) fn run(base: &str, n: usize, instances: usize, connections: usize) -> BenchResult<PgRun> {
    let schema = BenchSchema::create(base, &format!("{instances}i"))?;
    let url = schema.url();
    let now = Utc::now();
    let orders = new_orders(n, now, ProviderKind::Alipay)?;
    {
        let target = DbTarget::parse(&url)?;
        let database = Database::open_target(&target)?;
        for chunk in orders.chunks(ORDERS_PER_JOB) {
            let chunk = chunk.to_vec();
            database.write_blocking(move |tx| insert_orders(tx, &chunk))?;
        }
    }
    // As in the SQLite runs: no late check falls due while the run lasts.
    sql(
        &url,
        "UPDATE orders SET next_check_at = NULL WHERE status = 'pending' AND next_check_at IS NOT NULL",
    )?;
    // A statement of its own: several in one simple query run as one transaction, where
    // VACUUM is refused.
    sql(&url, "VACUUM ANALYZE")?;
    let bodies = sign_notifications(&orders, now, &format!("pg{instances}"))?;

    let dirs: Vec<tempfile::TempDir> = (0..instances)
        .map(|_| tempfile::tempdir())
        .collect::<Result<_, _>>()?;
    let servers: Vec<Server> = dirs
        .iter()
        .map(|dir| {
            Server::start_with(
                dir.path(),
                &[
                    ("KASSA_DATABASE_URL", url.as_str()),
                    ("KASSA_DATABASE_POOL_SIZE", POOL_SIZE),
                ],
            )
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(Duration::from_millis(300));
    let mut shares: Vec<Vec<String>> = vec![Vec::with_capacity(n / instances + 1); instances];
    for (i, body) in bodies.into_iter().enumerate() {
        shares[i % instances].push(body);
    }
    let kassa_pids: Vec<String> = servers.iter().map(|s| s.pid().to_string()).collect();
    let kassa_before = cpu_by_pid(&kassa_pids);
    let pg_before = cpu_by_pid(&postgres_pids());
    let per_instance = (connections / instances).max(1);
    let loads: Vec<BenchResult<LoadResult>> = std::thread::scope(|scope| {
        let handles: Vec<_> = servers
            .iter()
            .zip(shares)
            .map(|(server, share)| {
                let addr = server.addr.clone();
                scope.spawn(move || drive_load(&addr, Arc::new(share), per_instance))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("load thread panicked".into())))
            .collect()
    });
    let kassa_cpu_ns = cpu_since(&kassa_before, &kassa_pids);
    let postgres_cpu_ns = cpu_since(&pg_before, &postgres_pids());
    let mut load = LoadResult {
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(n),
        timeline: Vec::new(),
        successes: 0,
        failures: Vec::new(),
    };
    for one in loads {
        let one = one?;
        // The instances ran at once: the run lasted as long as its slowest half.
        load.elapsed = load.elapsed.max(one.elapsed);
        load.latencies.extend(one.latencies);
        load.timeline.extend(one.timeline);
        load.successes += one.successes;
        load.failures.extend(one.failures);
    }
    load.latencies.sort_unstable();
    load.timeline.sort_unstable();
    let t = Instant::now();
    undelivered_drained(&url, Duration::from_secs(120))?;
    let drain = t.elapsed();
    for server in servers {
        server.stop()?;
    }
    Ok(PgRun {
        instances,
        load,
        requests: n,
        drain,
        kassa_cpu_ns,
        postgres_cpu_ns,
        counts: counts(&url)?,
    })
}

/// The section for one run, beside the SQLite run's figures; what is wrong goes to
/// `problems`.
pub(super) fn report(
    table: &mut Table,
    problems: &mut Vec<String>,
    run: &PgRun,
    n: usize,
    sqlite_rate: f64,
    sqlite_p99: Duration,
) {
    let load = &run.load;
    let applied_rate = rate(n, load.elapsed);
    let p99 = percentile(&load.latencies, 99.0);
    table.section(&format!(
        "PostgreSQL, {} instance{} on one database: POST /notify/alipay, the same load split between them",
        run.instances,
        if run.instances == 1 { "" } else { "s" }
    ));
    table.row("wall time", secs(load.elapsed));
    table.row(
        "replies `success`",
        format!("{} / {}", load.successes, run.requests),
    );
    table.row("notifications applied/s", format!("{applied_rate:.0}"));
    table.row(
        "latency p50 / p90 / p99 / max",
        format!(
            "{} / {} / {} / {}",
            ms(percentile(&load.latencies, 50.0)),
            ms(percentile(&load.latencies, 90.0)),
            ms(p99),
            ms(load.latencies.last().copied().unwrap_or_default())
        ),
    );
    table.row(
        "applied/s ÷ SQLite's (same run) / p99 ÷ SQLite's",
        format!(
            "{:.2}× / {:.2}×",
            applied_rate / sqlite_rate,
            p99.as_secs_f64() / sqlite_p99.as_secs_f64().max(1e-9)
        ),
    );
    table.row(
        "CPU per notification: kassa / PostgreSQL",
        format!(
            "{:.0} µs / {:.0} µs",
            run.kassa_cpu_ns as f64 / 1e3 / n as f64,
            run.postgres_cpu_ns as f64 / 1e3 / n as f64
        ),
    );
    table.row("outbox worked through after the load", secs(run.drain));
    let c = &run.counts;
    let paid = count_of(&c.statuses, "paid");
    let applied = count_of(&c.verdicts, "applied");
    table.row(
        "orders paid / applied verdicts / history rows / outbox rows / doubled",
        format!("{paid} / {applied} / {} / {} / {}", c.events, c.outbox, c.doubled),
    );
    let what = format!("PostgreSQL, {} instance(s)", run.instances);
    let n = n as i64;
    if load.successes != run.requests {
        problems.push(format!(
            "{what}: {} of {} replies success; first failures: {:?}",
            load.successes,
            run.requests,
            load.failures.iter().take(3).collect::<Vec<_>>()
        ));
    }
    if paid != n || applied != n || c.events != n || c.outbox != n || c.doubled != 0 {
        problems.push(format!(
            "{what}: paid {paid}, applied {applied}, history {}, outbox {}, doubled {} (expected {n} each, 0 doubled)",
            c.events, c.outbox, c.doubled
        ));
    }
}
