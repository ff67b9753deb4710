//! `kassa apikey create|list|revoke`.

use std::io::Write;

use chrono::Utc;

use super::CommandError;
use crate::db::{api_keys, DbTarget, Offline};
use crate::domain::api_key;

/// The database, migrated: the command may run before the server ever started.
fn open(target: &DbTarget) -> Result<Offline, CommandError> {
    let mut db = Offline::open_target(target)?;
    db.migrate()?;
    Ok(db)
}

pub fn create(db: &DbTarget, name: &str, out: &mut impl Write) -> Result<(), CommandError> {
    api_key::check_name(name).map_err(CommandError::new)?;
    let mut db = open(db)?;
    let key = api_key::generate();
    let inserted =
        db.immediate(|tx| api_keys::insert(tx, name, &key.display_prefix, &key.hash, Utc::now()))?;
    if inserted.is_none() {
        return Err(CommandError::new(format!(
            "an active API key named {name:?} already exists; revoke it first or pick another name"
        )));
    }
    writeln!(out, "{}", key.plaintext).map_err(|e| CommandError::new(e.to_string()))?;
    Ok(())
}

pub fn list(db: &DbTarget, out: &mut impl Write) -> Result<(), CommandError> {
    let keys = open(db)?.read(api_keys::list)?;
    let io = |e: std::io::Error| CommandError::new(e.to_string());
    writeln!(
        out,
        "{:<24} {:<16} {:<20} {:<20} STATUS",
        "NAME", "PREFIX", "CREATED (UTC)", "LAST USED (UTC)"
    )
    .map_err(io)?;
    let fmt = |t: Option<chrono::DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".to_owned())
    };
    for k in keys {
        let status = match k.revoked_at {
            None => "active".to_owned(),
            Some(t) => format!("revoked {}", fmt(Some(t))),
        };
        writeln!(
            out,
            "{:<24} {:<16} {:<20} {:<20} {status}",
            k.name,
            format!("{}…", k.prefix),
            fmt(Some(k.created_at)),
            fmt(k.last_used_at)
        )
        .map_err(io)?;
    }
    Ok(())
}

pub fn revoke(db: &DbTarget, name: &str, out: &mut impl Write) -> Result<(), CommandError> {
    if !open(db)?.immediate(|tx| api_keys::revoke(tx, name, Utc::now()))? {
        return Err(CommandError::new(format!("no active API key named {name:?}")));
    }
    writeln!(out, "revoked API key {name:?}").map_err(|e| CommandError::new(e.to_string()))?;
    Ok(())
}
