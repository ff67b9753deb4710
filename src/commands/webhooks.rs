//! `kassa webhooks secret | rotate-secret | resend | test`.

use std::io::Write;

use chrono::Utc;
use serde_json::json;

use super::CommandError;
use crate::config::Settings;
use crate::db::{outbox, webhook_endpoints, webhook_secrets, Database};
use crate::domain::ids::new_event_id;
use crate::domain::order::{check_http_url, rfc3339};
use crate::webhooks::dispatcher::{http_client, post_signed};
use crate::webhooks::{ensure_secret_blocking, signer, ROTATION_OVERLAP};

fn io(e: std::io::Error) -> CommandError {
    CommandError::new(e.to_string())
}

pub fn secret(settings: &Settings, out: &mut impl Write) -> Result<(), CommandError> {
    let db = Database::open_target(&settings.database.target)?;
    let secret = ensure_secret_blocking(&db, settings, Utc::now())?;
    writeln!(out, "{secret}").map_err(io)
}

pub fn rotate_secret(settings: &Settings, out: &mut impl Write) -> Result<(), CommandError> {
    if !settings.webhooks.secret.is_empty() {
        let source = settings
            .source_of("webhooks.secret")
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(CommandError::new(format!(
            "the webhook secret comes from {source}; change it there (kassa signs with the configured secret only)"
        )));
    }
    let db = Database::open_target(&settings.database.target)?;
    let now = Utc::now();
    let new = signer::generate_secret();
    let stored = new.clone();
    db.write_blocking(move |c| webhook_secrets::rotate(c, &stored, now, now + ROTATION_OVERLAP))?;
    writeln!(out, "{new}").map_err(io)?;
    writeln!(
        out,
        "kassa now signs with this secret and, until {}, also with the previous one (two v1 signatures).",
        rfc3339(now + ROTATION_OVERLAP)
    )
    .map_err(io)
}

pub fn resend(
    settings: &Settings,
    id: Option<&str>,
    since: Option<chrono::DateTime<Utc>>,
    out: &mut impl Write,
) -> Result<(), CommandError> {
    let db = Database::open_target(&settings.database.target)?;
    let now = Utc::now();
    match (id, since) {
        (Some(id), _) => {
            let event = id.to_owned();
            if !db.write_blocking(move |c| outbox::requeue(c, &event, now))? {
                return Err(CommandError::new(format!(
                    "no delivered, failed or skipped webhook with id {id:?} (pending ones are still being tried)"
                )));
            }
            writeln!(out, "queued {id} again; the running server delivers it").map_err(io)
        }
        (None, Some(since)) => {
            let n = db.write_blocking(move |c| outbox::requeue_failed_since(c, since, now))?;
            writeln!(out, "queued {n} failed webhook(s) since {} again", rfc3339(since)).map_err(io)
        }
        (None, None) => Err(CommandError::new("give --id or --failed-since")),
    }
}

pub fn status(settings: &Settings, out: &mut impl Write) -> Result<(), CommandError> {
    let db = Database::open_target(&settings.database.target)?;
    let (counts, endpoints) =
        db.read_blocking(|c| Ok((outbox::count_by_status(c)?, webhook_endpoints::list(c)?)))?;
    writeln!(out, "deliveries:").map_err(io)?;
    if counts.is_empty() {
        writeln!(out, "  none yet").map_err(io)?;
    }
    for (status, n) in counts {
        writeln!(out, "  {:<10} {n}", status.as_str()).map_err(io)?;
    }
    writeln!(out, "endpoints:").map_err(io)?;
    if endpoints.is_empty() {
        writeln!(out, "  none yet").map_err(io)?;
    }
    for e in endpoints {
        let health = match (e.disabled_at, e.failing_since) {
            (Some(t), _) => format!(
                "DISABLED since {} (failing for 5 days); resend to re-enable",
                rfc3339(t)
            ),
            (None, Some(t)) => format!("failing since {}", rfc3339(t)),
            (None, None) => "ok".to_owned(),
        };
        writeln!(out, "  {}  {health}", e.url).map_err(io)?;
    }
    Ok(())
}

pub fn test(settings: &Settings, url: Option<&str>, out: &mut impl Write) -> Result<(), CommandError> {
    let url = url
        .map(str::to_owned)
        .or_else(|| settings.webhooks.url.clone())
        .ok_or_else(|| CommandError::new("no endpoint: pass --url or set [webhooks] url"))?;
    check_http_url(&url).map_err(|e| CommandError::new(format!("--url {e}")))?;
    let db = Database::open_target(&settings.database.target)?;
    let now = Utc::now();
    ensure_secret_blocking(&db, settings, now)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::new(e.to_string()))?;
    let event_id = new_event_id();
    let body = json!({
        "type": "ping",
        "timestamp": rfc3339(now),
        "data": {"message": "kassa webhook test", "merchant": settings.merchant.name},
    })
    .to_string();
    let response = runtime.block_on(async {
        let secrets = crate::webhooks::signing_secrets(&db, settings, now).await?;
        let http = http_client(settings.webhooks.allow_private).map_err(CommandError::new)?;
        Ok::<_, CommandError>(post_signed(&http, &url, &event_id, &secrets, &body, now).await)
    })?;
    writeln!(out, "POST {url}").map_err(io)?;
    writeln!(out, "webhook-id: {event_id}").map_err(io)?;
    match (response.status, &response.error) {
        (Some(status), _) => {
            writeln!(out, "answer: HTTP {status} in {} ms", response.latency_ms).map_err(io)?
        }
        (None, Some(e)) => writeln!(out, "answer: {e} after {} ms", response.latency_ms).map_err(io)?,
        (None, None) => {}
    }
    if !response.body.is_empty() {
        writeln!(out, "{}", response.body).map_err(io)?;
    }
    if response.status.is_some_and(|s| (200..300).contains(&s)) {
        let target = url.clone();
        db.write_blocking(move |c| webhook_endpoints::succeeded(c, &target, now))?;
        Ok(())
    } else {
        Err(CommandError::new("the endpoint did not answer 2xx"))
    }
}
