//! Webhooks to the merchant's shop: the payload each event carries, a durable outbox
//! (rows written with each transition), Standard Webhooks signatures, retries on a
//! ladder, an attempt log.

pub mod dispatcher;
pub mod guard;
pub mod payload;
pub mod signer;

use chrono::{DateTime, Duration, Utc};

use crate::config::Settings;
use crate::db::{webhook_secrets, Database, DbError, Offline};

/// How long a rotated-out secret keeps signing alongside the new one.
pub const ROTATION_OVERLAP: Duration = Duration::hours(24);

/// The secrets that sign now, newest first: the configured one, or the generated ones
/// kept in the database.
pub async fn signing_secrets(
    db: &Database,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<Vec<String>, DbError> {
    if !settings.webhooks.secret.is_empty() {
        return Ok(vec![settings.webhooks.secret.expose().to_owned()]);
    }
    db.read(move |tx| webhook_secrets::signing(tx, now)).await
}

/// Makes sure a secret exists (generating one on first start) and returns the newest.
/// Uses a connection of its own: it runs at start-up, possibly inside an async runtime,
/// where waiting on the writer would block the runtime's thread.
pub fn ensure_secret_blocking(
    db: &Database,
    settings: &Settings,
    now: DateTime<Utc>,
) -> Result<String, DbError> {
    if !settings.webhooks.secret.is_empty() {
        return Ok(settings.webhooks.secret.expose().to_owned());
    }
    let generated = signer::generate_secret();
    Offline::open_target(db.target())?.immediate(|tx| webhook_secrets::ensure(tx, &generated, now))
}
