//! Delivers outbox rows: claim (a guarded update with a lease), sign, POST, log the
//! attempt, then mark delivered, schedule the next try, or give up after the ladder.

use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};

use super::guard::{refusal_in, WebhookClient};
use super::signer;
use crate::core::Core;
use crate::db::outbox::{self, After, Attempt, Claimed};
use crate::db::{webhook_endpoints as endpoints, DbError};

/// Per-attempt timeout; the lease is longer, so a live attempt keeps its row.
pub const ATTEMPT_TIMEOUT: StdDuration = StdDuration::from_secs(15);
pub const LEASE: Duration = Duration::seconds(60);
/// How much of a response is kept in the attempt log.
pub const RESPONSE_KEPT: usize = 4096;
/// An endpoint that has only failed this long is disabled.
pub const DISABLE_AFTER: Duration = Duration::days(5);
/// Bounds on a receiver's `Retry-After`.
pub const RETRY_AFTER_MIN: Duration = Duration::seconds(5);
pub const RETRY_AFTER_MAX: Duration = Duration::hours(24);
const IDLE_POLL: StdDuration = StdDuration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retried,
    Failed,
    Skipped,
    Empty,
}

impl Outcome {
    /// The `outcome` label of `kassa_webhook_attempts_total` and of the attempt's log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retried => "retried",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Empty => "empty",
        }
    }
}

pub fn user_agent() -> String {
    format!(
        "kassa/{} (webhooks; +https://www.standardwebhooks.com/)",
        env!("CARGO_PKG_VERSION")
    )
}

/// The client every webhook (deliveries, pings, `kassa webhooks test`) goes out with;
/// it refuses internal addresses unless `allow_private`.
pub fn http_client(allow_private: bool) -> Result<WebhookClient, String> {
    let builder = reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(StdDuration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent());
    WebhookClient::new(builder, allow_private)
}

/// `delay` ±20 %, so many failing deliveries do not retry in lockstep.
fn jittered(delay: Duration) -> Duration {
    let r = u32::from_le_bytes(crate::domain::ids::random_bytes::<4>());
    let factor = 0.8 + 0.4 * (f64::from(r) / f64::from(u32::MAX));
    Duration::milliseconds((delay.num_milliseconds() as f64 * factor) as i64)
}

/// `Retry-After` as seconds or an HTTP date, clamped.
fn retry_after(value: Option<&str>, now: DateTime<Utc>) -> Option<Duration> {
    let value = value?.trim();
    let wait = match value.parse::<i64>() {
        Ok(secs) => Duration::seconds(secs),
        Err(_) => DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc) - now,
    };
    Some(wait.clamp(RETRY_AFTER_MIN, RETRY_AFTER_MAX))
}

/// The result of one HTTP attempt.
pub struct Response {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub retry_after: Option<String>,
    pub body: String,
    pub latency_ms: i64,
    /// Set when the destination is an internal address kassa may not reach: nothing
    /// was sent.
    pub refused: bool,
}

/// POSTs a signed body. Never follows redirects; keeps at most `RESPONSE_KEPT` bytes.
pub async fn post_signed(
    client: &WebhookClient,
    url: &str,
    event_id: &str,
    secrets: &[String],
    body: &str,
    now: DateTime<Utc>,
) -> Response {
    let mut out = Response {
        status: None,
        error: None,
        retry_after: None,
        body: String::new(),
        latency_ms: 0,
        refused: false,
    };
    if let Some(reason) = client.refuses_literal(url) {
        out.error = Some(format!("refused: {reason}"));
        out.refused = true;
        return out;
    }
    let keys: Vec<_> = secrets.iter().filter_map(|s| signer::key_of(s).ok()).collect();
    let timestamp = now.timestamp();
    let signature = signer::signature_header(&keys, event_id, timestamp, body.as_bytes());
    let started = Instant::now();
    let sent = client
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .send()
        .await;
    match sent {
        Err(e) => match refusal_in(&e) {
            Some(refusal) => {
                out.error = Some(format!("refused: {refusal}"));
                out.refused = true;
            }
            None => {
                out.error = Some(if e.is_timeout() {
                    "timeout".to_owned()
                } else {
                    format!("connection error: {}", without_url(e))
                })
            }
        },
        Ok(mut r) => {
            out.status = Some(r.status().as_u16());
            out.retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let mut kept = Vec::new();
            while let Ok(Some(chunk)) = r.chunk().await {
                let room = RESPONSE_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if kept.len() >= RESPONSE_KEPT {
                    break;
                }
            }
            out.body = String::from_utf8_lossy(&kept).into_owned();
        }
    }
    out.latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    out
}

/// A request error with its causes (reqwest's own text stops at "error sending
/// request") and without the URL: the attempt stores the URL apart, and the error goes
/// into the log, where a token the shop put in its URL must not.
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub struct Dispatcher {
    core: Core,
    http: WebhookClient,
}

impl Dispatcher {
    pub fn new(core: Core) -> Result<Self, String> {
        let http = http_client(core.settings.webhooks.allow_private)?;
        Ok(Dispatcher { core, http })
    }

    fn destination(&self, claim: &Claimed) -> Option<String> {
        claim
            .notify_url
            .clone()
            .or_else(|| self.core.settings.webhooks.url.clone())
    }

    /// Delivers at most one due row.
    pub async fn try_dispatch_one(&self, now: DateTime<Utc>) -> Result<Outcome, DbError> {
        // A row with nowhere to go is skipped in the job that claims it: one write
        // (and one commit) per row instead of two, since every order's transition
        // queues a row whether or not the shop has an endpoint.
        let default_url = self.core.settings.webhooks.url.is_some();
        let owner = self.core.instance.clone();
        let Some((claim, skipped)) = self
            .core
            .db
            .write(move |c| {
                let Some(claim) = outbox::claim_due(c, now, LEASE, owner.as_str())? else {
                    return Ok(None);
                };
                let skipped = claim.notify_url.is_none() && !default_url;
                if skipped {
                    // Claimed in this same transaction: the claim holds.
                    outbox::skip(c, &claim, owner.as_str(), now)?;
                }
                Ok(Some((claim, skipped)))
            })
            .await?
        else {
            return Ok(Outcome::Empty);
        };
        let url = match self.destination(&claim) {
            Some(url) if !skipped => url,
            _ => {
                tracing::info!(event_id = %claim.event_id, "webhook skipped: no endpoint configured");
                return Ok(Outcome::Skipped);
            }
        };
        let probe = url.clone();
        let health = self.core.db.read(move |c| endpoints::find(c, &probe)).await?;
        if let Some(since) = health.and_then(|h| h.disabled_at) {
            let (stale, reason) = (claim.clone(), format!(
                "endpoint disabled since {} after failing for 5 days; re-send (kassa webhooks resend) once it is fixed",
                crate::domain::order::rfc3339(since)
            ));
            let target = url.clone();
            let owner = self.core.instance.clone();
            let failed = self
                .core
                .db
                .write(move |c| outbox::fail_unsent(c, &stale, owner.as_str(), &target, &reason, now))
                .await?;
            if !failed {
                tracing::warn!(
                    event_id = %claim.event_id,
                    "lease lost before the row was failed; another dispatcher owns the row"
                );
            }
            return Ok(Outcome::Failed);
        }
        let secrets = super::signing_secrets(&self.core.db, &self.core.settings, now).await?;
        let response = post_signed(&self.http, &url, &claim.event_id, &secrets, &claim.payload, now).await;
        let ok = response.status.is_some_and(|s| (200..300).contains(&s));
        let ladder = &self.core.settings.webhooks.retry_schedule;
        let done = usize::try_from(claim.attempts).unwrap_or(0) + 1;
        let after = if ok {
            After::Delivered
        } else if response.refused {
            // Final for this row: every retry would be refused the same way for days.
            // Once the operator allows private addresses (or the shop's DNS is fixed),
            // `kassa webhooks resend` sends it again.
            After::Failed
        } else if let Some(delay) = ladder.get(done - 1) {
            let wait = retry_after(response.retry_after.as_deref(), now).unwrap_or_else(|| jittered(*delay));
            // Configured delays are bounded, so this cannot overflow; never panic if it did.
            After::RetryAt(now.checked_add_signed(wait).unwrap_or(DateTime::<Utc>::MAX_UTC))
        } else {
            After::Failed
        };
        let outcome = match after {
            After::Delivered => Outcome::Delivered,
            After::RetryAt(_) => Outcome::Retried,
            After::Failed => Outcome::Failed,
        };
        tracing::info!(
            event_id = %claim.event_id, event = %claim.event_type, attempt = done,
            status = response.status, error = response.error.as_deref(), latency_ms = response.latency_ms,
            outcome = outcome.as_str(), "webhook attempt"
        );
        // Only attempts that went out over HTTP: a skipped row or a disabled endpoint is
        // no attempt.
        self.core.metrics.webhook_attempt(outcome.as_str());
        let (id, lease_until, owner) = (claim.id, claim.lease_until, self.core.instance.clone());
        // Longer than any wait between two attempts (jitter and Retry-After included).
        let longest = ladder.iter().copied().max().unwrap_or(Duration::zero());
        let quiet_gap = (longest * 2).max(RETRY_AFTER_MAX + Duration::hours(1));
        self.core
            .db
            .write(move |c| {
                let attempt = Attempt {
                    outbox_id: id,
                    lease_until,
                    lease_owner: owner.as_str(),
                    at: now,
                    url: &url,
                    http_status: response.status,
                    error: response.error.as_deref(),
                    latency_ms: response.latency_ms,
                    response: Some(&response.body).filter(|b| !b.is_empty()).map(String::as_str),
                };
                if !outbox::record_attempt(c, &attempt, &after)? {
                    tracing::warn!(
                        outbox_id = id,
                        "lease lost during the attempt; another dispatcher owns the row"
                    );
                    return Ok(());
                }
                if ok {
                    endpoints::succeeded(c, &url, now)?;
                } else if response.refused {
                    // Not the endpoint's failure: nothing was sent to it.
                } else if endpoints::failed(c, &url, now, DISABLE_AFTER, quiet_gap)? {
                    tracing::warn!(%url, "webhook endpoint disabled after failing for 5 days");
                }
                Ok(())
            })
            .await?;
        Ok(outcome)
    }

    pub async fn run(self) {
        let mut signals = self.core.hooks.subscribe();
        loop {
            match self.try_dispatch_one(self.core.now()).await {
                Ok(Outcome::Empty) => {
                    // A transition (a new outbox row) wakes the loop early.
                    let _ = tokio::time::timeout(IDLE_POLL, signals.recv()).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "webhook dispatch failed");
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::guard::tests::blocked;
    use crate::webhooks::guard::LookupSlots;

    #[tokio::test]
    async fn a_delivery_finding_every_lookup_slot_held_fails_for_now_without_a_refusal_and_looks_up_once_a_slot_is_free(
    ) {
        let slots = LookupSlots::new(1);
        let (release, held) = blocked();
        let held = slots.try_spawn(held).unwrap();
        let client = WebhookClient::with_lookups(reqwest::Client::builder(), false, slots.clone()).unwrap();
        let secrets = [signer::generate_secret()];
        // localhost would be refused, but only once it has been looked up.
        let url = "http://localhost:9/hook";

        let busy = post_signed(&client, url, "msg_busy", &secrets, "{}", Utc::now()).await;
        let error = busy.error.unwrap_or_default();
        assert!(!busy.refused, "{error}");
        assert_eq!(busy.status, None);
        assert!(error.contains("all 1 DNS lookup slots are held"), "{error}");
        assert_eq!(slots.in_flight(), 1, "no lookup was started");

        release.send(()).unwrap();
        held.await.unwrap();
        let looked_up = post_signed(&client, url, "msg_free", &secrets, "{}", Utc::now()).await;
        let error = looked_up.error.unwrap_or_default();
        assert!(looked_up.refused, "{error}");
        assert!(error.contains("localhost"), "{error}");
        assert_eq!(slots.in_flight(), 0);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for _ in 0..1000 {
            let d = jittered(Duration::seconds(100)).num_milliseconds();
            assert!((80_000..=120_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn retry_after_is_read_and_clamped() {
        let now = Utc::now();
        assert_eq!(retry_after(Some("120"), now), Some(Duration::seconds(120)));
        assert_eq!(retry_after(Some("0"), now), Some(RETRY_AFTER_MIN));
        assert_eq!(retry_after(Some("999999999"), now), Some(RETRY_AFTER_MAX));
        let date = (now + Duration::seconds(600)).to_rfc2822();
        let parsed = retry_after(Some(&date), now).unwrap();
        assert!(
            (Duration::seconds(598)..=Duration::seconds(600)).contains(&parsed),
            "{parsed}"
        );
        assert_eq!(retry_after(Some("soon"), now), None);
        assert_eq!(retry_after(None, now), None);
    }
}
