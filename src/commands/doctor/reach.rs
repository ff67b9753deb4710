//! Checks over the network, run together and each bounded by a short timeout: the
//! local clock against the gateways' `Date` header, and a signed `ping` to the shop's
//! webhook endpoint.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::Check;
use crate::config::keys as k;
use crate::config::Settings;
use crate::domain::ids::new_event_id;
use crate::domain::order::rfc3339;
use crate::webhooks::dispatcher::post_signed;

/// Per request, connecting included: doctor must not hang on an unreachable platform.
const TIMEOUT: StdDuration = StdDuration::from_secs(5);
const CONNECT_TIMEOUT: StdDuration = StdDuration::from_secs(3);
/// WeChat Pay refuses signatures more than 5 minutes from its clock; Alipay's requests
/// carry a timestamp too.
const CLOCK_PROBLEM: Duration = Duration::minutes(5);
/// `Date` has whole seconds and the answer takes a while: below this is noise.
const CLOCK_WARNING: Duration = Duration::seconds(60);

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("kassa-doctor/", env!("CARGO_PKG_VERSION")))
}

fn client() -> Result<reqwest::Client, String> {
    builder().build().map_err(|e| e.to_string())
}

pub fn network(settings: &Settings, stored_secrets: Vec<String>, now: DateTime<Utc>) -> Vec<Check> {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return vec![Check::skipped("network", format!("cannot start: {e}"))],
    };
    let http = match client() {
        Ok(c) => c,
        Err(e) => return vec![Check::skipped("network", format!("no HTTP client: {e}"))],
    };
    let mut gateways = Vec::new();
    if settings.alipay.is_configured() {
        gateways.push((k::ALIPAY_GATEWAY.name, settings.alipay.gateway.clone()));
    }
    if settings.wechat.is_configured() {
        gateways.push((k::WECHAT_API_BASE.name, settings.wechat.api_base.clone()));
    }
    let checks = runtime.block_on(async {
        let clocks = futures_util::future::join_all(gateways.iter().map(|(key, url)| clock(&http, key, url)));
        let ping = ping(settings, stored_secrets, now);
        let (mut checks, ping) = tokio::join!(clocks, ping);
        if gateways.is_empty() {
            checks.push(Check::skipped(
                "clock",
                "no payment gateway configured to compare the local clock with",
            ));
        }
        checks.push(ping);
        checks
    });
    // A timed-out lookup may still sit on a blocking thread; dropping the runtime would
    // wait for the resolver to give up, long after the answer is known.
    runtime.shutdown_background();
    checks
}

/// reqwest's own message names only the URL; the reason is further down the chain.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

async fn clock(http: &reqwest::Client, key: &str, url: &str) -> Check {
    let answer = match http.get(url).send().await {
        Ok(a) => a,
        Err(e) => {
            let why = if e.is_timeout() {
                "no answer in time".to_owned()
            } else {
                causes(&e)
            };
            return Check::skipped(key, format!("clock not compared: cannot reach {url} ({why})"));
        }
    };
    let local = Utc::now();
    let date = answer
        .headers()
        .get("date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc2822(v).ok());
    let Some(date) = date else {
        return Check::skipped(
            key,
            format!("clock not compared: {url} answered without a Date header"),
        );
    };
    let skew = date.with_timezone(&Utc) - local;
    let said = format!(
        "local clock is {}s {} {url}'s (HTTP Date)",
        skew.num_seconds().abs(),
        if skew > Duration::zero() {
            "behind"
        } else {
            "ahead of"
        }
    );
    let fix = "synchronise the clock (NTP: systemd-timesyncd or chrony); the platforms refuse requests and kassa refuses notifications whose timestamps are off";
    if skew.abs() > CLOCK_PROBLEM {
        Check::problem(key, said).fix(fix)
    } else if skew.abs() > CLOCK_WARNING {
        Check::warning(key, said).fix(fix)
    } else {
        Check::ok(key, format!("{said}: within {}s", CLOCK_WARNING.num_seconds()))
    }
}

async fn ping(settings: &Settings, stored_secrets: Vec<String>, now: DateTime<Utc>) -> Check {
    let key = k::WEBHOOKS_URL.name;
    let Some(url) = &settings.webhooks.url else {
        return Check::warning(
            key,
            "is not set: orders created without their own notify_url send no webhooks",
        )
        .fix("set [webhooks] url to the shop's endpoint (or give every order a notify_url)");
    };
    let secrets = if settings.webhooks.secret.is_empty() {
        stored_secrets
    } else {
        vec![settings.webhooks.secret.expose().to_owned()]
    };
    if secrets.is_empty() {
        return Check::skipped(
            key,
            "no signing secret yet (kassa generates one at its first start): ping not sent",
        );
    }
    let body = json!({
        "type": "ping",
        "timestamp": rfc3339(now),
        "data": {"message": "kassa doctor", "merchant": settings.merchant.name},
    })
    .to_string();
    // The ping goes where deliveries would, refused where they would be.
    let http = match crate::webhooks::guard::WebhookClient::new(builder(), settings.webhooks.allow_private) {
        Ok(c) => c,
        Err(e) => return Check::skipped(key, format!("no HTTP client: {e}")),
    };
    let answer = post_signed(&http, url, &new_event_id(), &secrets, &body, now).await;
    match (answer.status, answer.error) {
        (Some(status), _) if (200..300).contains(&status) => Check::ok(
            key,
            format!(
                "{url} answered a signed ping with HTTP {status} in {} ms",
                answer.latency_ms
            ),
        ),
        (status, error) => {
            let what = match (status, error) {
                (Some(status), _) => format!("{url} answered a signed ping with HTTP {status}"),
                (None, Some(error)) => format!("a signed ping to {url} failed: {error}"),
                (None, None) => format!("{url} did not answer a signed ping"),
            };
            Check::problem(key, what)
                .fix("make the shop's endpoint answer 2xx to kassa's signed POST (`kassa webhooks test` shows the whole answer)")
        }
    }
}
