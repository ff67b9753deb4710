//! Checks that need no network: which providers are on, `public_url`, the notify URLs
//! handed to the platforms, and the database (read-only).

use std::net::IpAddr;
use std::path::Path;

use chrono::{DateTime, Utc};
use url::Host;

use super::Check;
use crate::config::keys as k;
use crate::config::{SandboxMode, Settings};
use crate::db::{migrations, webhook_secrets, DbTarget, Offline};

/// A WAL this large means checkpoints cannot finish (a reader that never ends): the
/// writer's own backstop keeps it under about 48 MiB otherwise.
const WAL_WARNING_BYTES: u64 = 64 * 1024 * 1024;

fn real_provider(settings: &Settings) -> bool {
    settings.alipay.is_configured() || settings.wechat.is_configured()
}

pub fn providers(settings: &Settings) -> Vec<Check> {
    let mut names = Vec::new();
    if settings.alipay.is_configured() {
        names.push("Alipay");
    }
    if settings.wechat.is_configured() {
        names.push("WeChat Pay");
    }
    let mut checks = Vec::new();
    if names.is_empty() {
        checks.push(
            Check::warning(
                "alipay.app_id, wechat.mchid",
                "no payment provider is configured: only the built-in sandbox takes orders, and no real money moves",
            )
            .fix("configure [alipay] or [wechat] (see README, Alipay and WeChat Pay)"),
        );
    } else {
        checks.push(Check::ok(
            "providers",
            format!("configured: {}", names.join(", ")),
        ));
        if settings.sandbox.enabled == SandboxMode::On {
            checks.push(
                Check::warning(
                    k::SANDBOX_ENABLED.name,
                    "the sandbox is on beside a real provider: anyone who finds it can pay an order with simulated money",
                )
                .fix("set [sandbox] enabled = false (or \"auto\") before going live"),
            );
        }
    }
    checks
}

/// Why the platforms cannot reach this host, if they cannot.
fn unreachable_host(host: Option<Host<&str>>) -> Option<&'static str> {
    let ip = match host? {
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if name == "localhost" || name.ends_with(".localhost") {
                return Some("is this machine (localhost)");
            }
            if !name.contains('.') || name.ends_with(".local") || name.ends_with(".internal") {
                return Some("is not a public DNS name");
            }
            return None;
        }
        Host::Ipv4(v4) => IpAddr::V4(v4),
        Host::Ipv6(v6) => IpAddr::V6(v6),
    };
    let private = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()
                // 100.64.0.0/10, carrier-grade NAT
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
    };
    private.then_some(if ip.is_loopback() {
        "is a loopback address"
    } else {
        "is a private, link-local or unspecified address"
    })
}

pub fn public_url(settings: &Settings) -> Vec<Check> {
    let key = k::SERVER_PUBLIC_URL.name;
    let public = &settings.server.public_url;
    let base = public.trim_end_matches('/');
    if !real_provider(settings) {
        return vec![Check::skipped(
            key,
            format!("{public}: checked for reachability once a real provider is configured"),
        )];
    }
    let fix = "put kassa behind a TLS-terminating reverse proxy on a public host name and set server.public_url = \"https://pay.example.com\" (see README, Running behind a reverse proxy)";
    let Ok(url) = url::Url::parse(public) else {
        return vec![Check::problem(key, format!("{public:?} is not a URL")).fix(fix)];
    };
    let mut reasons = Vec::new();
    if url.scheme() != "https" {
        reasons.push(format!(
            "is {}, not https: WeChat Pay calls only https notify URLs, and checkout pages must not travel in clear",
            url.scheme()
        ));
    }
    if let Some(why) = unreachable_host(url.host()) {
        reasons.push(format!(
            "host {} {why}: the payment platforms cannot deliver notifications to it",
            url.host_str().unwrap_or_default()
        ));
    }
    let mut checks = Vec::new();
    if reasons.is_empty() {
        checks.push(Check::ok(key, format!("{public} is https on a public host")));
    } else {
        checks.push(Check::problem(key, format!("{public} {}", reasons.join("; "))).fix(fix));
    }
    if url.query().is_some() {
        checks.push(
            Check::warning(
                key,
                "carries a query string, which WeChat Pay drops from notify URLs",
            )
            .fix("remove the query string"),
        );
    }
    // The same URLs orders are created with (service::orders).
    if settings.alipay.is_configured() {
        checks.push(Check::ok(
            "notify URL",
            format!("Alipay notifies {base}/notify/alipay"),
        ));
    }
    if settings.wechat.is_configured() {
        checks.push(Check::ok(
            "notify URL",
            format!("WeChat Pay notifies {base}/notify/wechat"),
        ));
    }
    checks
}

/// The database's checks, and the webhook signing secrets stored in it (for the ping).
pub fn database(settings: &Settings, now: DateTime<Utc>) -> (Vec<Check>, Vec<String>) {
    // The key an operator would change to point elsewhere.
    // An empty value (set so, or by default) means the data directory's `kassa.db`.
    let key = if !settings.is_set(k::DATABASE_URL.name) {
        k::SERVER_DATA_DIR.name
    } else {
        k::DATABASE_URL.name
    };
    let target = &settings.database.target;
    let Some(path) = target.sqlite_path().map(Path::to_owned) else {
        return server(key, target, now);
    };
    if !path.exists() {
        return (
            vec![Check::warning(
                key,
                format!(
                    "no database at {} yet (doctor does not create one)",
                    path.display()
                ),
            )
            .fix(format!(
                "kassa creates it at its first start; check {key} if you expected one"
            ))],
            Vec::new(),
        );
    }
    let restore = "stop kassa and restore the latest backup (`kassa restore <file>`)";
    let opened = Offline::open_read_only(&path).and_then(|db| {
        let integrity = db.pragma("integrity_check")?;
        Ok((db, integrity))
    });
    let (db, integrity) = match opened {
        Ok(found) => found,
        Err(e) => {
            return (
                vec![Check::problem(key, format!("{}: {e}", path.display())).fix(restore)],
                Vec::new(),
            )
        }
    };
    if integrity != "ok" {
        return (
            vec![Check::problem(
                key,
                format!("{}: integrity_check says {integrity}", path.display()),
            )
            .fix(restore)],
            Vec::new(),
        );
    }
    let mut checks = Vec::new();
    let wal_path = crate::db::backup::with_tail(&path, "-wal");
    let wal = std::fs::metadata(&wal_path).map(|m| m.len()).unwrap_or(0);
    let version = db.schema_version().unwrap_or(0);
    checks.push(Check::ok(
        key,
        format!(
            "{}: integrity_check ok, schema version {version}, WAL {} KiB",
            path.display(),
            wal / 1024
        ),
    ));
    checks.extend(schema_checks(key, version));
    if wal > WAL_WARNING_BYTES {
        checks.push(
            Check::warning(
                key,
                format!("the WAL ({}) is {} MiB", wal_path.display(), wal >> 20),
            )
            .fix("something keeps a read transaction open so checkpoints cannot finish; restart kassa"),
        );
    }
    // An older schema may not have the table yet; then there is no stored secret.
    let secrets = db
        .read(|tx| webhook_secrets::signing(tx, now))
        .unwrap_or_default();
    (checks, secrets)
}

/// A schema older or newer than this binary's.
fn schema_checks(key: &str, version: i64) -> Option<Check> {
    let latest = migrations::latest_version();
    if version > latest {
        Some(
            Check::problem(
                key,
                format!(
                    "the database was written by a newer kassa (schema {version}; this binary knows up to {latest})"
                ),
            )
            .fix("run the newer kassa, or restore a backup made by this version"),
        )
    } else if version < latest {
        Some(
            Check::warning(key, format!("{} migration(s) pending", latest - version))
                .fix("they apply at the next start, or run `kassa migrate` (back up first)"),
        )
    } else {
        None
    }
}

/// The database's checks on a PostgreSQL server: reachable, its version, kassa's schema
/// version there. Only reads, in READ ONLY transactions; never migrates.
fn server(key: &str, target: &DbTarget, now: DateTime<Utc>) -> (Vec<Check>, Vec<String>) {
    let db = match Offline::open_target(target) {
        Ok(db) => db,
        // The error names the URL, its password as `***`.
        Err(e) => {
            return (
                vec![Check::problem(key, format!("cannot reach the database: {e}")).fix(
                    "start the PostgreSQL server, or correct database.url (host, port, user, password, database); kassa does not start without it",
                )],
                Vec::new(),
            )
        }
    };
    let found = db
        .server_version()
        .and_then(|server| Ok((server.unwrap_or_default(), db.schema_version()?)));
    let (server, version) = match found {
        Ok(found) => found,
        Err(e) => {
            return (
                vec![Check::problem(key, format!("{target}: {e}")).fix(
                    "check that the database user may read this database (CONNECT, USAGE on the schema)",
                )],
                Vec::new(),
            )
        }
    };
    if version == 0 {
        return (
            vec![Check::warning(
                key,
                format!(
                    "{target} (PostgreSQL {server}): no kassa schema there yet (doctor does not create one)"
                ),
            )
            .fix(format!(
                "kassa creates it at its first start, or run `kassa migrate`; check {key} if you expected one"
            ))],
            Vec::new(),
        );
    }
    let mut checks = vec![Check::ok(
        key,
        format!(
            "{target}: PostgreSQL {server}, schema version {version} (this kassa: {})",
            migrations::latest_version()
        ),
    )];
    checks.extend(schema_checks(key, version));
    let secrets = db
        .read(|tx| webhook_secrets::signing(tx, now))
        .unwrap_or_default();
    (checks, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(url: &str) -> Option<&'static str> {
        unreachable_host(url::Url::parse(url).unwrap().host())
    }

    #[test]
    fn hosts_the_platforms_cannot_reach_are_told_apart_from_public_ones() {
        for url in [
            "https://127.0.0.1",
            "https://10.1.2.3",
            "https://172.16.0.1",
            "https://192.168.1.5:8443",
            "https://169.254.1.1",
            "https://100.64.0.1",
            "https://0.0.0.0",
            "https://[::1]",
            "https://[fd00::1]",
            "https://[fe80::1]",
            "https://[::ffff:192.168.0.1]",
            "https://localhost",
            "https://pay.localhost",
            "https://kassa",
            "https://kassa.local",
        ] {
            assert!(why(url).is_some(), "{url}");
        }
        for url in [
            "https://pay.example.com",
            "https://203.0.113.7",
            "https://100.128.0.1",
            "https://[2001:db8::1]",
        ] {
            assert_eq!(why(url), None, "{url}");
        }
    }
}
