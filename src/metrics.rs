//! What `/metrics` shows. A leaf: the writer, the jobs, the pipeline and the web
//! surfaces all count into it, so it imports nothing of the crate.
//!
//! Every label value is bounded: a route pattern (never a raw path), a status class, a
//! provider, a reason code, an order status. Nothing that grows with the data (an order
//! id, a URL, an error text) is ever a label, or the series would grow without end.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The OpenMetrics text format, which is what prometheus-client writes (Prometheus asks
/// for it first when it scrapes). Served as `text/plain; version=0.0.4` it would not
/// parse: the classic format has no `info` type and no `# EOF`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How stale the gauges read from the database (`kassa_orders`, `kassa_outbox_*`) may
/// get: a scrape within this of the last refresh shows the cached counts, so scraping
/// often never costs more than one count per interval.
pub const COUNTS_MAX_AGE: Duration = Duration::from_secs(15);

const REQUEST_SECONDS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const QUEUE_SECONDS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    provider: String,
    verdict: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: String,
    to: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderCallLabels {
    provider: String,
    call: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SurfaceLabel {
    surface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

const BACKUP_OUTCOMES: [&str; 2] = ["ok", "failed"];

/// The gauges read from the database, at one moment.
pub struct Counts {
    /// Orders by status, every status (0 where there are none).
    pub orders: Vec<(&'static str, i64)>,
    /// Webhook deliveries not yet delivered nor given up.
    pub outbox_pending: i64,
    pub outbox_failed: i64,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_SECONDS)
}

/// The database writer's two histograms; handed to the writer when the database opens.
/// Clones count into the same series.
#[derive(Clone)]
pub struct WriterMetrics {
    batch_size: Histogram,
    queue_seconds: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            // 1, 2, 4 … 512: the writer's batches are capped well below the top bucket.
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            queue_seconds: Histogram::new(QUEUE_SECONDS),
        }
    }
}

impl WriterMetrics {
    /// The writer ended a transaction of `size` jobs (committed or not).
    pub fn batch(&self, size: usize) {
        self.batch_size.observe(size as f64);
    }

    /// A write waited `waited` between its submission and the writer taking it into a
    /// batch (the batch's start, or the moment it joined a batch already under way).
    pub fn queued(&self, waited: Duration) {
        self.queue_seconds.observe(waited.as_secs_f64());
    }
}

pub struct Metrics {
    registry: Registry,
    requests: HistogramFamily<RequestLabels>,
    notifications: Family<NotificationLabels, Counter>,
    transitions: Family<TransitionLabels, Counter>,
    webhook_attempts: Family<OutcomeLabel, Counter>,
    provider_calls: Family<ProviderCallLabels, Counter>,
    backups: Family<OutcomeLabel, Counter>,
    backup_last_success: Gauge,
    outbox_pending: Gauge,
    outbox_failed: Gauge,
    orders: Family<StatusLabel, Gauge>,
    rate_limited: Family<SurfaceLabel, Counter>,
    writer: WriterMetrics,
    /// When the database gauges were last refreshed.
    counts_refreshed: tokio::sync::Mutex<Option<Instant>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = HistogramFamily::<RequestLabels>::new_with_constructor(request_histogram as _);
        registry.register(
            "kassa_http_request_duration_seconds",
            "HTTP requests by method, route pattern and status class",
            requests.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "kassa_notifications",
            "Payment platform notifications by provider, verdict and reason code",
            notifications.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "kassa_transitions",
            "Committed order status transitions by source of the change",
            transitions.clone(),
        );
        let webhook_attempts = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "kassa_webhook_attempts",
            "Webhook delivery attempts by outcome",
            webhook_attempts.clone(),
        );
        let provider_calls = Family::<ProviderCallLabels, Counter>::default();
        registry.register(
            "kassa_provider_calls",
            "Calls to the payment platforms by provider, call and outcome",
            provider_calls.clone(),
        );
        let backups = Family::<OutcomeLabel, Counter>::default();
        // At 0 from the start, so the first failure is an increase an alert sees.
        for outcome in BACKUP_OUTCOMES {
            backups.get_or_create_owned(&OutcomeLabel {
                outcome: outcome.to_owned(),
            });
        }
        registry.register("kassa_backups", "Periodic backups by outcome", backups.clone());
        let backup_last_success = Gauge::default();
        registry.register(
            "kassa_backup_last_success_timestamp_seconds",
            "Unix time of the last periodic backup that succeeded",
            backup_last_success.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "kassa_outbox_pending",
            "Webhook deliveries not yet delivered nor given up",
            outbox_pending.clone(),
        );
        let outbox_failed = Gauge::default();
        registry.register(
            "kassa_outbox_failed",
            "Webhook deliveries given up after the last retry",
            outbox_failed.clone(),
        );
        let orders = Family::<StatusLabel, Gauge>::default();
        registry.register("kassa_orders", "Orders by status", orders.clone());
        let rate_limited = Family::<SurfaceLabel, Counter>::default();
        registry.register(
            "kassa_rate_limited",
            "Requests refused with 429 by a rate limit, and connections closed over a per-address cap (surface connections), by surface",
            rate_limited.clone(),
        );
        let writer = WriterMetrics::default();
        registry.register(
            "kassa_db_writer_batch_size",
            "Writes per database writer batch",
            writer.batch_size.clone(),
        );
        registry.register(
            "kassa_db_writer_queue_seconds",
            "Time a write waits between its submission and the start of its batch",
            writer.queue_seconds.clone(),
        );
        registry.register(
            "kassa_build",
            "The running kassa version",
            Info::new(VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        Metrics {
            registry,
            requests,
            notifications,
            transitions,
            webhook_attempts,
            provider_calls,
            backups,
            backup_last_success,
            outbox_pending,
            outbox_failed,
            orders,
            rate_limited,
            writer,
            counts_refreshed: tokio::sync::Mutex::new(None),
        }
    }
}

/// "2xx" for 204 and so on.
fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

impl Metrics {
    /// One answered request. `route` is the matched pattern ("/api/v1/orders/{id}"), or
    /// "unmatched".
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: status_class(status),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// One notification's verdict; `reason` is the pipeline's bounded reason code.
    pub fn notification(&self, provider: &str, verdict: &str, reason: &str) {
        self.notification_series(provider, verdict, reason).inc();
    }

    fn notification_series(&self, provider: &str, verdict: &str, reason: &str) -> Counter {
        self.notifications.get_or_create_owned(&NotificationLabels {
            provider: provider.to_owned(),
            verdict: verdict.to_owned(),
            reason: reason.to_owned(),
        })
    }

    /// Shows this series at 0 before its first count. A series that first appears at 1
    /// is a rise that `rate()` and `increase()` never see: the first rejected
    /// notification of its kind would raise no alert.
    pub fn declare_notification(&self, provider: &str, verdict: &str, reason: &str) {
        self.notification_series(provider, verdict, reason);
    }

    /// One committed transition; `source` says what caused it.
    pub fn transition(&self, from: &str, to: &str, source: &str) {
        self.transitions
            .get_or_create(&TransitionLabels {
                from: from.to_owned(),
                to: to.to_owned(),
                source: source.to_owned(),
            })
            .inc();
    }

    pub fn webhook_attempt(&self, outcome: &str) {
        self.webhook_series(outcome).inc();
    }

    fn webhook_series(&self, outcome: &str) -> Counter {
        self.webhook_attempts.get_or_create_owned(&OutcomeLabel {
            outcome: outcome.to_owned(),
        })
    }

    /// As `declare_notification`.
    pub fn declare_webhook_attempt(&self, outcome: &str) {
        self.webhook_series(outcome);
    }

    pub fn provider_call(&self, provider: &str, call: &str, outcome: &str) {
        self.provider_call_series(provider, call, outcome).inc();
    }

    fn provider_call_series(&self, provider: &str, call: &str, outcome: &str) -> Counter {
        self.provider_calls.get_or_create_owned(&ProviderCallLabels {
            provider: provider.to_owned(),
            call: call.to_owned(),
            outcome: outcome.to_owned(),
        })
    }

    /// As `declare_notification`.
    pub fn declare_provider_call(&self, provider: &str, call: &str, outcome: &str) {
        self.provider_call_series(provider, call, outcome);
    }

    /// A periodic backup ended, checked (`ok`) or not.
    pub fn backup_finished(&self, ok: bool, at: DateTime<Utc>) {
        let outcome = BACKUP_OUTCOMES[usize::from(!ok)];
        self.backups
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
        if ok {
            self.backup_last_success.set(at.timestamp());
        }
    }

    /// A periodic backup found on disk at start-up, taken at `at`: its age is what the
    /// backup-age alert watches, and a restart must not make it look as if there were
    /// none.
    pub fn backup_seen(&self, at: DateTime<Utc>) {
        self.backup_last_success.set(at.timestamp());
    }

    /// A request refused by a rate limit of `surface` (`api_auth`, `api`, …).
    pub fn rate_limited(&self, surface: &str) {
        self.rate_limited_series(surface).inc();
    }

    fn rate_limited_series(&self, surface: &str) -> Counter {
        self.rate_limited.get_or_create_owned(&SurfaceLabel {
            surface: surface.to_owned(),
        })
    }

    /// As `declare_notification`.
    pub fn declare_rate_limited(&self, surface: &str) {
        self.rate_limited_series(surface);
    }

    /// The writer's histograms, for the database to count into.
    pub fn writer(&self) -> WriterMetrics {
        self.writer.clone()
    }

    /// Reads the database gauges again with `read` unless they were read less than
    /// `COUNTS_MAX_AGE` ago. A scrape that comes while another reads them waits for that
    /// read instead of starting its own or showing older counts. When `read` fails, the
    /// gauges keep their values and the next scrape reads again.
    pub async fn refresh_counts<F, Fut, E>(&self, read: F) -> Result<(), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Counts, E>>,
    {
        let mut last = self.counts_refreshed.lock().await;
        if last.is_some_and(|at| at.elapsed() < COUNTS_MAX_AGE) {
            return Ok(());
        }
        let counts = read().await?;
        for (status, n) in counts.orders {
            self.orders
                .get_or_create(&StatusLabel {
                    status: status.to_owned(),
                })
                .set(n);
        }
        self.outbox_pending.set(counts.outbox_pending);
        self.outbox_failed.set(counts.outbox_failed);
        *last = Some(Instant::now());
        Ok(())
    }

    /// The OpenMetrics text of everything above (see `CONTENT_TYPE`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; the encoder only forwards fmt errors.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_build_info_render_under_their_documented_names() {
        let m = Metrics::default();
        m.observe_request("GET", "/api/v1/orders/{id}", 404, Duration::from_millis(3));
        m.notification("alipay", "rejected", "bad_signature");
        m.backup_finished(true, DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        m.backup_finished(false, DateTime::from_timestamp(1_700_000_100, 0).unwrap());
        let text = m.render();
        assert!(text.contains(
            r#"kassa_http_request_duration_seconds_count{method="GET",route="/api/v1/orders/{id}",status="4xx"} 1"#
        ), "{text}");
        assert!(
            text.contains(
                r#"kassa_notifications_total{provider="alipay",verdict="rejected",reason="bad_signature"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"kassa_backups_total{outcome="ok"} 1"#), "{text}");
        assert!(
            text.contains(r#"kassa_backups_total{outcome="failed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("kassa_backup_last_success_timestamp_seconds 1700000000"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                r#"kassa_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    fn counts(pending: i64) -> Result<Counts, ()> {
        Ok(Counts {
            orders: vec![("pending", pending), ("paid", 0)],
            outbox_pending: pending,
            outbox_failed: 0,
        })
    }

    #[tokio::test]
    async fn the_database_counts_are_read_at_most_once_per_interval_unless_the_read_failed() {
        let m = Metrics::default();
        let shown = |m: &Metrics| m.render().contains(r#"kassa_orders{status="pending"} 3"#);

        assert_eq!(m.refresh_counts(|| async { Err::<Counts, _>(()) }).await, Err(()));
        m.refresh_counts(|| async { counts(3) }).await.unwrap();
        assert!(shown(&m), "read after a failed read");
        m.refresh_counts(|| async { counts(4) }).await.unwrap();
        assert!(shown(&m), "not read again within the interval");
    }
}
