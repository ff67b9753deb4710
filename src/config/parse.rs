//! The parsers the keys use. Each gets the value trimmed, and says what is wrong
//! with a value it cannot take.

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::Duration;

use super::{parse_duration, LogFormat, SandboxMode, Secret};
use crate::domain::order::check_http_url;
use crate::domain::Currency;

/// No configured delay may be longer: one that overflows a timestamp is refused
/// here rather than found by a worker.
pub const MAX_RETRY_STEP: Duration = Duration::days(30);

pub fn text(v: &str) -> Result<String, String> {
    Ok(v.to_owned())
}

pub fn optional_text(v: &str) -> Result<Option<String>, String> {
    Ok((!v.is_empty()).then(|| v.to_owned()))
}

pub fn any_secret(v: &str) -> Result<Secret, String> {
    Ok(Secret::new(v))
}

pub fn socket_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse::<SocketAddr>()
        .map_err(|_| "must be an IP address and port such as 127.0.0.1:8080".to_owned())
}

pub fn url(v: &str) -> Result<String, String> {
    check_http_url(v)?;
    Ok(v.to_owned())
}

pub fn optional_url(v: &str) -> Result<Option<String>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    url(v).map(Some)
}

/// A URL other paths are appended to: without a trailing `/`.
pub fn base_url(v: &str) -> Result<String, String> {
    check_http_url(v)?;
    Ok(v.trim_end_matches('/').to_owned())
}

pub fn optional_base_url(v: &str) -> Result<Option<String>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    base_url(v).map(Some)
}

/// A relative directory starting with `file:` gets `./` in front, so that SQLite, which
/// reads `file:…` as a URI on every connection, opens the files inside it.
pub fn directory(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(crate::db::target::not_a_uri(std::path::Path::new(v)).into_owned())
    }
}

pub fn optional_path(v: &str) -> Result<Option<PathBuf>, String> {
    Ok((!v.is_empty()).then(|| PathBuf::from(v)))
}

/// Paths separated by commas (a TOML array is read the same way).
pub fn path_list(v: &str) -> Result<Vec<PathBuf>, String> {
    Ok(v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect())
}

/// Addresses (`10.0.0.1`, `::1`) and CIDR ranges (`10.0.0.0/8`), separated by commas.
pub fn ip_networks(v: &str) -> Result<Vec<ipnet::IpNet>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| format!("{p:?} is neither an IP address nor a CIDR range such as 10.0.0.0/8"))
        })
        .collect()
}

/// A rate such as `600/min`; empty: no limit.
pub fn optional_rate(v: &str) -> Result<Option<crate::service::rate_limit::Rate>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some)
}

pub fn merchant_name(v: &str) -> Result<String, String> {
    if v.is_empty() || v.chars().count() > 128 {
        Err("must be 1 to 128 characters".to_owned())
    } else {
        Ok(v.to_owned())
    }
}

pub fn currency(v: &str) -> Result<Currency, String> {
    v.parse::<Currency>().map_err(|e| e.to_string())
}

pub fn timezone(v: &str) -> Result<chrono_tz::Tz, String> {
    v.parse::<chrono_tz::Tz>()
        .map_err(|_| "must be an IANA time zone name such as Asia/Shanghai or UTC".to_owned())
}

pub fn order_ttl(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < Duration::seconds(60) || d > Duration::days(1) {
        return Err("must be between 1m and 24h".to_owned());
    }
    Ok(d)
}

pub fn apiv3_key(v: &str) -> Result<Secret, String> {
    if v.is_empty() || v.len() == 32 {
        Ok(Secret::new(v))
    } else {
        Err(format!("must be exactly 32 bytes, got {}", v.len()))
    }
}

pub fn sandbox_mode(v: &str) -> Result<SandboxMode, String> {
    match v {
        "auto" => Ok(SandboxMode::Auto),
        "true" => Ok(SandboxMode::On),
        "false" => Ok(SandboxMode::Off),
        _ => Err("must be \"auto\", true or false".to_owned()),
    }
}

pub fn at_least_one(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number of at least 1".to_owned()),
    }
}

pub fn webhook_secret(v: &str) -> Result<Secret, String> {
    if v.is_empty() || v.starts_with("whsec_") {
        Ok(Secret::new(v))
    } else {
        Err("must start with whsec_ (or be empty to generate one)".to_owned())
    }
}

pub fn retry_schedule(v: &str) -> Result<Vec<Duration>, String> {
    if v.is_empty() {
        return Err("must list at least one delay, e.g. 5s,5m,30m".to_owned());
    }
    v.split(',')
        .map(|part| {
            let d = parse_duration(part.trim())?;
            if d > MAX_RETRY_STEP {
                return Err(format!("{:?}: a delay must be at most 30d", part.trim()));
            }
            Ok(d)
        })
        .collect()
}

pub fn log_format(v: &str) -> Result<LogFormat, String> {
    match v {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("must be \"text\" or \"json\"".to_owned()),
    }
}

/// Empty: kept forever. Shorter than an hour would delete what a person looking into a
/// failed notification still needs.
pub fn keep_rejected(v: &str) -> Result<Option<Duration>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let d = parse_duration(v)?;
    if d < Duration::hours(1) {
        return Err("must be at least 1h (empty: kept forever)".to_owned());
    }
    Ok(Some(d))
}

pub fn backup_interval(v: &str) -> Result<Option<Duration>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    let d = parse_duration(v)?;
    if d < Duration::seconds(1) {
        return Err("must be at least 1s".to_owned());
    }
    Ok(Some(d))
}

/// Bounded: a shutdown that could wait for hours is a hang to whoever stops the service.
pub fn shutdown_timeout(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < Duration::seconds(1) || d > Duration::minutes(10) {
        return Err("must be between 1s and 10m".to_owned());
    }
    Ok(d)
}

/// Bounded below: a client on a slow mobile link needs a moment; above: the point is
/// to let go of clients that never finish.
pub fn client_timeout(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < Duration::seconds(1) || d > Duration::minutes(5) {
        return Err("must be between 1s and 5m".to_owned());
    }
    Ok(d)
}

pub fn connection_cap(v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .map_err(|_| format!("must be a whole number of connections (0: no cap), got {v:?}"))
}

/// The most `[database] pool_size` takes: beyond it an instance would rather queue its
/// own transactions than hold that many server processes.
pub const MAX_POOL_SIZE: usize = 200;

/// `[database] pool_size`: PostgreSQL connections per instance.
pub fn pool_size(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=MAX_POOL_SIZE).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number of connections from 1 to {MAX_POOL_SIZE}, got {v:?}"
        )),
    }
}

/// How long an admin session lasts (idle or in all).
pub fn session_length(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d < Duration::minutes(1) || d > Duration::days(30) {
        return Err("must be between 1m and 30d".to_owned());
    }
    Ok(d)
}

pub fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("must be true or false, got {v:?}")),
    }
}

/// `[database] url`; empty: the default file in the data directory.
pub fn database_url(v: &str) -> Result<Option<crate::db::DbTarget>, String> {
    if v.is_empty() {
        return Ok(None);
    }
    crate::db::DbTarget::parse(v).map(Some)
}

/// A database URL as it may be shown: any password as `***`. Trims on its own, so a
/// value with a stray space is shown the way it is read.
pub fn redact_database_url(v: &str) -> String {
    let v = v.trim();
    if let Ok(target) = crate::db::DbTarget::parse(v) {
        return target.to_string();
    }
    // Refused, it may still carry a password anywhere: only a harmless prefix shows.
    if let Some((scheme, _)) = v.split_once("://") {
        return if scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.:\"'".contains(c))
        {
            format!("{scheme}://…")
        } else {
            "…".to_owned()
        };
    }
    let lower = v.to_ascii_lowercase();
    if lower.starts_with("postgres") {
        return format!("{}…", &v[..v.find(':').map_or(0, |n| n + 1)]);
    }
    if v.contains(['=', '@']) || crate::db::target::is_keyword_string(v) {
        return "… (not shown: it may hold a password)".to_owned();
    }
    v.to_owned()
}
