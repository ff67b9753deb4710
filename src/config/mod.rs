//! Settings: defaults < `kassa.toml` < `KASSA_<SECTION>_<KEY>` environment variables <
//! command-line flags. Every key is declared once, in `keys` (its name, default,
//! parser, whether it is secret, and its doc line); the file and environment layers,
//! `kassa config` and the README's table all come from that table. Every key remembers
//! where its value came from, so a bad value is reported with its key, its problem and
//! its source. Secrets never print.

pub mod keys;
mod parse;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::Duration;

use crate::domain::Currency;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the built-in default"),
            Source::File(p) => write!(f, "config file {}", p.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Flag(flag) => write!(f, "command-line flag {flag}"),
        }
    }
}

/// A value that must never reach a log or an error message.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

/// One configuration key: declared once, in `keys`.
pub struct Key<T> {
    /// `section.key`; the environment variable is derived from it.
    pub name: &'static str,
    pub default: &'static str,
    /// Never shown: not in `kassa config`, not in an error message.
    pub secret: bool,
    /// One line for the README's table.
    pub doc: &'static str,
    /// Reads the (trimmed) text, or says what is wrong with it.
    pub parse: fn(&str) -> Result<T, String>,
    /// How `kassa config` and error messages show a value that is not a secret as a
    /// whole but may hold one (a database URL's password); `None`: as written.
    pub redact: Option<fn(&str) -> String>,
}

impl<T> Key<T> {
    const fn new(
        name: &'static str,
        default: &'static str,
        parse: fn(&str) -> Result<T, String>,
        doc: &'static str,
    ) -> Key<T> {
        Key {
            name,
            default,
            secret: false,
            doc,
            parse,
            redact: None,
        }
    }

    const fn redacted(
        name: &'static str,
        default: &'static str,
        parse: fn(&str) -> Result<T, String>,
        redact: fn(&str) -> String,
        doc: &'static str,
    ) -> Key<T> {
        Key {
            redact: Some(redact),
            ..Key::new(name, default, parse, doc)
        }
    }

    const fn secret(name: &'static str, parse: fn(&str) -> Result<T, String>, doc: &'static str) -> Key<T> {
        Key {
            secret: true,
            ..Key::new(name, "", parse, doc)
        }
    }
}

/// A key whatever its type: what the layers, `kassa config` and the docs need.
pub trait AnyKey: Sync {
    fn name(&self) -> &'static str;
    fn default(&self) -> &'static str;
    fn secret(&self) -> bool;
    fn doc(&self) -> &'static str;
    fn check(&self, text: &str) -> Result<(), String>;
    /// The value as `kassa config` and error messages may show it.
    fn shown(&self, text: &str) -> String;
}

impl<T> AnyKey for Key<T> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn default(&self) -> &'static str {
        self.default
    }
    fn secret(&self) -> bool {
        self.secret
    }
    fn doc(&self) -> &'static str {
        self.doc
    }
    fn check(&self, text: &str) -> Result<(), String> {
        (self.parse)(text).map(|_| ())
    }
    fn shown(&self, text: &str) -> String {
        match self.redact {
            _ if self.secret && !text.is_empty() => "***".to_owned(),
            // Redacted as it is read (trimmed): a password after a stray space is one too.
            Some(redact) => redact(text.trim()),
            None => text.to_owned(),
        }
    }
}

/// The first admin's password, when it should not be a random one.
pub const ADMIN_PASSWORD_ENV: &str = "KASSA_ADMIN_PASSWORD";

/// Environment variables that are not config keys but are still kassa's own.
const OTHER_ENV: &[&str] = &["KASSA_CONFIG", ADMIN_PASSWORD_ENV];

/// `server.bind` → `KASSA_SERVER_BIND`.
fn env_name(key: &str) -> String {
    format!("KASSA_{}", key.replace('.', "_").to_uppercase())
}

/// One bad setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub problem: String,
    pub source: Source,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (from {})", self.key, self.problem, self.source)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("config file {path} is not valid TOML: {reason}")]
    Syntax { path: PathBuf, reason: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<ConfigProblem>),
}

/// Where the layers come from. `env` is passed in (not read from the process) so tests
/// and the CLI see the same logic.
#[derive(Debug, Default, Clone)]
pub struct ConfigSources {
    /// Path from `--config` or `KASSA_CONFIG`; when `None`, `./kassa.toml` is read if present.
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// `(section.key, value, flag name)` from the command line.
    pub flags: Vec<(&'static str, String, &'static str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub bind: SocketAddr,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub metrics_token: Secret,
    /// How long requests in flight get to finish once a shutdown starts.
    pub shutdown_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Requests each API key may make; `None`: no limit.
    pub api_rate_limit: Option<crate::service::rate_limit::Rate>,
    /// How long a connection may take to send its first request head whole.
    pub header_timeout: Duration,
    /// How long a request body may take to arrive once its head has.
    pub body_timeout: Duration,
    /// Open connections per client address; 0: no cap.
    pub max_connections_per_address: usize,
}

#[derive(Debug, Clone)]
pub struct MerchantSettings {
    pub name: String,
    pub currency: Currency,
    pub timezone: chrono_tz::Tz,
    pub order_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct AlipaySettings {
    pub app_id: String,
    pub app_private_key_file: Option<PathBuf>,
    pub alipay_public_key_file: Option<PathBuf>,
    pub gateway: String,
    pub seller_id: Option<String>,
}

impl AlipaySettings {
    pub fn is_configured(&self) -> bool {
        !self.app_id.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct WechatSettings {
    pub mchid: String,
    pub appid: String,
    pub apiv3_key: Secret,
    pub merchant_serial_no: String,
    pub merchant_private_key_file: Option<PathBuf>,
    pub platform_public_key_file: Option<PathBuf>,
    /// `PUB_KEY_ID_…` (also read from its older name, `platform_serial`).
    pub platform_public_key_id: String,
    pub platform_certificate_files: Vec<PathBuf>,
    pub api_base: String,
}

impl WechatSettings {
    pub fn is_configured(&self) -> bool {
        !self.mchid.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub enabled: SandboxMode,
    pub time_scale: u32,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: Option<String>,
    pub secret: Secret,
    pub retry_schedule: Vec<Duration>,
    /// Webhooks may go to internal addresses (loopback, private, link-local).
    pub allow_private: bool,
}

/// `[database]`.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `url` resolved: empty is `<data_dir>/kassa.db`.
    pub target: crate::db::DbTarget,
    /// PostgreSQL connections per instance (ignored on SQLite).
    pub pool_size: usize,
}

#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub interval: Option<Duration>,
    pub keep: u32,
}

/// `[notifications]`: what is kept of platform notifications that fail verification.
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    /// Such notifications one client address may send; `None`: no limit.
    pub rejected_rate_limit: Option<crate::service::rate_limit::Rate>,
    /// How long they are kept; `None`: forever.
    pub keep_rejected: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub session_idle: Duration,
    pub session_max: Duration,
    /// Every user must sign in with a second factor (owners can also require it from
    /// the dashboard; either is enough).
    pub require_totp: bool,
    /// `KASSA_ADMIN_PASSWORD`: the first admin's password instead of a random one. Not
    /// a key: a password does not belong in a config file.
    pub initial_password: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub merchant: MerchantSettings,
    pub alipay: AlipaySettings,
    pub wechat: WechatSettings,
    pub sandbox: SandboxSettings,
    pub webhooks: WebhookSettings,
    pub log: LogFormat,
    pub backup: BackupSettings,
    pub notifications: NotificationSettings,
    pub admin: AdminSettings,
    /// Each key's source, by `section.key`.
    pub provenance: BTreeMap<String, Source>,
    /// Things worth a warning at start-up (unknown keys and variables).
    pub warnings: Vec<String>,
    /// What `kassa config` shows of each key: secrets as `***`.
    shown: BTreeMap<String, String>,
}

impl Settings {
    /// Defaults only; what tests start from.
    pub fn defaults() -> Result<Settings, ConfigError> {
        Settings::load(&ConfigSources::default().with_no_file())
    }

    pub fn source_of(&self, key: &str) -> Option<&Source> {
        self.provenance.get(key)
    }

    /// Whether `key` has a value other than empty (spaces count as empty), whichever
    /// layer set it.
    pub fn is_set(&self, key: &str) -> bool {
        self.shown.get(key).is_some_and(|v| !v.trim().is_empty())
    }

    /// `(key, value, source)` for every key, secrets shown as `***`.
    pub fn describe(&self) -> Vec<(String, String, String)> {
        keys::ALL
            .iter()
            .map(|k| {
                let name = k.name().to_owned();
                let shown = self.shown.get(&name).cloned().unwrap_or_default();
                let source = self
                    .provenance
                    .get(&name)
                    .map(ToString::to_string)
                    .unwrap_or_default();
                (name, shown, source)
            })
            .collect()
    }

    pub fn load(sources: &ConfigSources) -> Result<Settings, ConfigError> {
        let mut raw: Raw = keys::ALL
            .iter()
            .map(|k| (k.name(), (k.default().to_owned(), Source::Default)))
            .collect();
        let mut warnings = Vec::new();

        let file = match &sources.file {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some((p.clone(), true)),
            None => Some((PathBuf::from("kassa.toml"), false)),
        };
        if let Some((path, required)) = file {
            if required || path.exists() {
                read_file_layer(&path, &mut raw, &mut warnings)?;
            }
        }

        for (name, value) in &sources.env {
            if !name.starts_with("KASSA_") || OTHER_ENV.contains(&name.as_str()) {
                continue;
            }
            match keys::ALL.iter().find(|k| env_name(k.name()) == *name) {
                Some(k) => {
                    raw.insert(k.name(), (value.clone(), Source::Env(name.clone())));
                }
                None => warnings.push(format!(
                    "unknown environment variable {name} ignored (kassa reads KASSA_<SECTION>_<KEY>, e.g. KASSA_SERVER_BIND)"
                )),
            }
        }

        for (key, value, flag) in &sources.flags {
            match keys::ALL.iter().find(|k| k.name() == *key) {
                Some(k) => {
                    raw.insert(k.name(), (value.clone(), Source::Flag(flag)));
                }
                None => warnings.push(format!("{flag} sets unknown key {key}; ignored")),
            }
        }

        let initial_password = sources
            .env
            .iter()
            .find(|(name, value)| name == ADMIN_PASSWORD_ENV && !value.is_empty())
            .map(|(_, value)| Secret::new(value.clone()));
        let values = Values(raw);
        let problems = values.problems();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        // Every value parsed above; a failure here is a key missing from `keys::ALL`.
        values
            .settings(warnings, initial_password)
            .map_err(|p| ConfigError::Invalid(vec![p]))
    }
}

impl ConfigSources {
    pub fn with_no_file(mut self) -> Self {
        self.file = Some(PathBuf::new());
        self
    }
}

type Raw = BTreeMap<&'static str, (String, Source)>;

fn read_file_layer(path: &Path, raw: &mut Raw, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut problems = Vec::new();
    for (section, value) in table {
        let Some(entries) = value.as_table() else {
            warnings.push(format!(
                "{}: top-level key {section:?} is not a [section] and was ignored",
                path.display()
            ));
            continue;
        };
        for (key, value) in entries {
            let name = format!("{section}.{key}");
            let Some(known) = keys::ALL.iter().find(|k| k.name() == name) else {
                warnings.push(format!("{}: unknown key {name} ignored", path.display()));
                continue;
            };
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                // A list of paths: read as the comma-separated form.
                toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                    .iter()
                    .filter_map(toml::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                other => {
                    problems.push(ConfigProblem {
                        key: name.clone(),
                        problem: format!("expected a string, number or boolean, got a {}", other.type_str()),
                        source: Source::File(path.to_owned()),
                    });
                    continue;
                }
            };
            raw.insert(known.name(), (text, Source::File(path.to_owned())));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Every key's text and source, after all layers.
struct Values(Raw);

impl Values {
    fn entry(&self, name: &str) -> (&str, Source) {
        self.0
            .get(name)
            .map(|(v, s)| (v.as_str(), s.clone()))
            .unwrap_or(("", Source::Default))
    }

    fn problem(&self, key: &dyn AnyKey, problem: String) -> ConfigProblem {
        let (value, source) = self.entry(key.name());
        // A secret's value never reaches a message, nor a password inside a value.
        let problem = if key.secret() {
            problem
        } else {
            format!("{problem} (value {:?})", key.shown(value))
        };
        ConfigProblem {
            key: key.name().to_owned(),
            problem,
            source,
        }
    }

    fn get<T>(&self, key: &Key<T>) -> Result<T, ConfigProblem> {
        let (value, _) = self.entry(key.name);
        (key.parse)(value.trim()).map_err(|p| self.problem(key, p))
    }

    fn is_set(&self, key: &dyn AnyKey) -> bool {
        !self.entry(key.name()).0.trim().is_empty()
    }

    /// Every bad value, and every rule between keys that is broken.
    fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems: Vec<ConfigProblem> = keys::ALL
            .iter()
            .filter_map(|k| {
                k.check(self.entry(k.name()).0.trim())
                    .err()
                    .map(|p| self.problem(*k, p))
            })
            .collect();
        let mut require = |key: &dyn AnyKey, why: &str| {
            problems.push(ConfigProblem {
                key: key.name().to_owned(),
                problem: why.to_owned(),
                source: self.entry(key.name()).1,
            });
        };
        if self.is_set(&keys::ALIPAY_APP_ID) {
            for key in [
                &keys::ALIPAY_APP_PRIVATE_KEY_FILE,
                &keys::ALIPAY_ALIPAY_PUBLIC_KEY_FILE,
            ] {
                if !self.is_set(key) {
                    require(key, "is required when alipay.app_id is set");
                }
            }
        } else if self.is_set(&keys::ALIPAY_APP_PRIVATE_KEY_FILE) {
            require(&keys::ALIPAY_APP_ID, "is required when alipay key files are set");
        }
        if self.is_set(&keys::WECHAT_MCHID) {
            for key in keys::WECHAT_REQUIRED {
                if !self.is_set(*key) {
                    require(*key, "is required when wechat.mchid is set");
                }
            }
            let key_file = self.is_set(&keys::WECHAT_PLATFORM_PUBLIC_KEY_FILE);
            let key_id = self.is_set(&keys::WECHAT_PLATFORM_PUBLIC_KEY_ID)
                || self.is_set(&keys::WECHAT_PLATFORM_SERIAL);
            let certificates = self.is_set(&keys::WECHAT_PLATFORM_CERTIFICATE_FILES);
            if key_file && !key_id {
                require(
                    &keys::WECHAT_PLATFORM_PUBLIC_KEY_ID,
                    "is required when wechat.platform_public_key_file is set",
                );
            } else if key_id && !key_file {
                require(
                    &keys::WECHAT_PLATFORM_PUBLIC_KEY_FILE,
                    "is required when wechat.platform_public_key_id is set",
                );
            } else if !key_file && !certificates {
                require(
                    &keys::WECHAT_PLATFORM_PUBLIC_KEY_FILE,
                    "or wechat.platform_certificate_files is required when wechat.mchid is set",
                );
            }
        }
        problems
    }

    fn settings(
        self,
        warnings: Vec<String>,
        initial_password: Option<Secret>,
    ) -> Result<Settings, ConfigProblem> {
        use keys::*;
        let bind = self.get(&SERVER_BIND)?;
        let data_dir: PathBuf = self.get(&SERVER_DATA_DIR)?;
        let mut settings = Settings {
            server: ServerSettings {
                bind,
                // Follows the bind address when the operator only changed that.
                public_url: self
                    .get(&SERVER_PUBLIC_URL)?
                    .unwrap_or_else(|| format!("http://{bind}")),
                data_dir: data_dir.clone(),
                metrics_token: self.get(&SERVER_METRICS_TOKEN)?,
                shutdown_timeout: self.get(&SERVER_SHUTDOWN_TIMEOUT)?,
                trusted_proxies: self.get(&SERVER_TRUSTED_PROXIES)?,
                api_rate_limit: self.get(&SERVER_API_RATE_LIMIT)?,
                header_timeout: self.get(&SERVER_HEADER_TIMEOUT)?,
                body_timeout: self.get(&SERVER_BODY_TIMEOUT)?,
                max_connections_per_address: self.get(&SERVER_MAX_CONNECTIONS_PER_ADDRESS)?,
            },
            database: DatabaseSettings {
                target: self
                    .get(&DATABASE_URL)?
                    .unwrap_or_else(|| crate::db::DbTarget::Sqlite(data_dir.join("kassa.db"))),
                pool_size: self.get(&DATABASE_POOL_SIZE)?,
            },
            merchant: MerchantSettings {
                name: self.get(&MERCHANT_NAME)?,
                currency: self.get(&MERCHANT_CURRENCY)?,
                timezone: self.get(&MERCHANT_TIMEZONE)?,
                order_ttl: self.get(&MERCHANT_ORDER_TTL)?,
            },
            alipay: AlipaySettings {
                app_id: self.get(&ALIPAY_APP_ID)?,
                app_private_key_file: self.get(&ALIPAY_APP_PRIVATE_KEY_FILE)?,
                alipay_public_key_file: self.get(&ALIPAY_ALIPAY_PUBLIC_KEY_FILE)?,
                gateway: self.get(&ALIPAY_GATEWAY)?,
                seller_id: self.get(&ALIPAY_SELLER_ID)?,
            },
            wechat: WechatSettings {
                mchid: self.get(&WECHAT_MCHID)?,
                appid: self.get(&WECHAT_APPID)?,
                apiv3_key: self.get(&WECHAT_APIV3_KEY)?,
                merchant_serial_no: self.get(&WECHAT_MERCHANT_SERIAL_NO)?,
                merchant_private_key_file: self.get(&WECHAT_MERCHANT_PRIVATE_KEY_FILE)?,
                platform_public_key_file: self.get(&WECHAT_PLATFORM_PUBLIC_KEY_FILE)?,
                platform_public_key_id: if self.is_set(&WECHAT_PLATFORM_PUBLIC_KEY_ID) {
                    self.get(&WECHAT_PLATFORM_PUBLIC_KEY_ID)?
                } else {
                    self.get(&WECHAT_PLATFORM_SERIAL)?
                },
                platform_certificate_files: self.get(&WECHAT_PLATFORM_CERTIFICATE_FILES)?,
                api_base: self.get(&WECHAT_API_BASE)?,
            },
            sandbox: SandboxSettings {
                enabled: self.get(&SANDBOX_ENABLED)?,
                time_scale: self.get(&SANDBOX_TIME_SCALE)?,
            },
            webhooks: WebhookSettings {
                url: self.get(&WEBHOOKS_URL)?,
                secret: self.get(&WEBHOOKS_SECRET)?,
                retry_schedule: self.get(&WEBHOOKS_RETRY_SCHEDULE)?,
                allow_private: self.get(&WEBHOOKS_ALLOW_PRIVATE)?,
            },
            log: self.get(&LOG_FORMAT)?,
            backup: BackupSettings {
                interval: self.get(&BACKUP_INTERVAL)?,
                keep: self.get(&BACKUP_KEEP)?,
            },
            notifications: NotificationSettings {
                rejected_rate_limit: self.get(&NOTIFICATIONS_REJECTED_RATE_LIMIT)?,
                keep_rejected: self.get(&NOTIFICATIONS_KEEP_REJECTED)?,
            },
            admin: AdminSettings {
                session_idle: self.get(&ADMIN_SESSION_IDLE)?,
                session_max: self.get(&ADMIN_SESSION_MAX)?,
                require_totp: self.get(&ADMIN_REQUIRE_TOTP)?,
                initial_password,
            },
            provenance: self
                .0
                .iter()
                .map(|(k, (_, s))| ((*k).to_owned(), s.clone()))
                .collect(),
            warnings,
            shown: ALL
                .iter()
                .map(|k| {
                    let (value, _) = self.entry(k.name());
                    (k.name().to_owned(), k.shown(value))
                })
                .collect(),
        };
        // A periodic backup is a copy of the SQLite file: on PostgreSQL there is none
        // to copy, and the server's own tools do it (README, Backing up and restoring).
        // Dropped here, so the job never starts and never fails each interval.
        if settings.backup.interval.is_some() && settings.database.target.sqlite_path().is_none() {
            settings.backup.interval = None;
            settings.warnings.push(format!(
                "{} is ignored on PostgreSQL: kassa backs up SQLite files only; back up with pg_dump (see README, Backing up and restoring)",
                BACKUP_INTERVAL.name
            ));
        }
        // Start-up refuses a default endpoint that no delivery could reach; names are
        // checked (after DNS) when delivering, since DNS may not be up at boot.
        if !settings.webhooks.allow_private {
            if let Some(url) = &settings.webhooks.url {
                crate::domain::address::check_literal_host(url)
                    .map_err(|p| self.problem(&WEBHOOKS_URL, p))?;
            }
        }
        Ok(settings)
    }
}

/// The longest duration any key takes: nothing configured can overflow a timestamp.
pub const MAX_DURATION: Duration = Duration::days(365);

/// Parses durations such as `90s`, `15m`, `2h`, `1d` or `1h30m`, up to `MAX_DURATION`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 30s, 15m, 2h or 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
    let too_long = || format!("{text:?} is longer than 365d");
    let mut total = Duration::zero();
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let part = match c {
            's' => Duration::try_seconds(n),
            'm' => Duration::try_minutes(n),
            'h' => Duration::try_hours(n),
            'd' => Duration::try_days(n),
            _ => return Err(bad()),
        }
        .ok_or_else(too_long)?;
        total = total.checked_add(&part).ok_or_else(too_long)?;
        if total > MAX_DURATION {
            return Err(too_long());
        }
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// The README's configuration table, one row per key, from `keys::ALL`.
pub fn markdown_table() -> String {
    let cell = |text: &str| text.replace('|', "\\|");
    let mut out = String::from("| key | default | meaning |\n| --- | --- | --- |\n");
    for key in keys::ALL {
        let default = if key.default().is_empty() {
            "empty".to_owned()
        } else {
            format!("`{}`", key.default())
        };
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            key.name(),
            cell(&default),
            cell(key.doc())
        ));
    }
    out
}

/// `kassa.toml.example` (`kassa config --example`): every key of `keys::ALL` at its
/// default, its doc line above it, grouped by section in the table's order.
pub fn example_toml() -> String {
    // Numbers and booleans bare, as an operator writes them; everything else quoted.
    let value = |text: &str| {
        let number = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        if number || text == "true" || text == "false" {
            text.to_owned()
        } else {
            format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
        }
    };
    let mut out = String::from(
        "# kassa.toml: every key kassa reads, at its default, with what it means.\n\
         # Generated by `kassa config --example` from kassa's key table (a test keeps the two\n\
         # equal). Copy it to kassa.toml and keep only what you change. Each key can also be\n\
         # set in the environment as KASSA_<SECTION>_<KEY>, which wins over this file.\n",
    );
    let mut section = "";
    for key in keys::ALL {
        let Some((this, field)) = key.name().split_once('.') else {
            continue;
        };
        if this != section {
            out.push_str(&format!("\n[{this}]\n"));
            section = this;
        }
        out.push_str(&format!("# {}\n", key.doc()));
        if key.secret() {
            out.push_str(&format!(
                "# A secret: better given as {} than written here.\n",
                env_name(key.name())
            ));
        }
        out.push_str(&format!("{field} = {}\n", value(key.default())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ConfigSources {
        ConfigSources {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
        .with_no_file()
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.server.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(s.server.public_url, "http://127.0.0.1:8080");
        assert_eq!(s.merchant.order_ttl, Duration::minutes(15));
        assert_eq!(s.webhooks.retry_schedule.len(), 7);
        assert_eq!(s.source_of("server.bind"), Some(&Source::Default));
    }

    #[test]
    fn every_key_is_listed_once_and_its_default_parses() {
        let mut names: Vec<&str> = keys::ALL.iter().map(|k| k.name()).collect();
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a key is listed twice");
        for key in keys::ALL {
            assert!(
                key.check(key.default()).is_ok(),
                "{}: default does not parse",
                key.name()
            );
            assert!(
                !key.doc().is_empty() && !key.doc().contains('\n'),
                "{}",
                key.name()
            );
            let (section, field) = key.name().split_once('.').unwrap();
            assert!(!section.is_empty() && !field.contains('.'), "{}", key.name());
        }
    }

    #[test]
    fn env_overrides_and_flags_override_env() {
        let mut sources = env(&[
            ("KASSA_SERVER_BIND", "127.0.0.1:9000"),
            ("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai"),
        ]);
        let s = Settings::load(&sources).unwrap();
        assert_eq!(s.server.bind.port(), 9000);
        assert_eq!(s.merchant.timezone, chrono_tz::Asia::Shanghai);
        assert_eq!(s.server.public_url, "http://127.0.0.1:9000");
        sources
            .flags
            .push(("server.bind", "127.0.0.1:9001".into(), "--bind"));
        let s = Settings::load(&sources).unwrap();
        assert_eq!(s.server.bind.port(), 9001);
        assert_eq!(s.source_of("server.bind"), Some(&Source::Flag("--bind")));
    }

    #[test]
    fn a_bad_value_names_key_problem_and_source() {
        let err = Settings::load(&env(&[("KASSA_MERCHANT_ORDER_TTL", "forever")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("merchant.order_ttl"), "{text}");
        assert!(
            text.contains("environment variable KASSA_MERCHANT_ORDER_TTL"),
            "{text}"
        );
        assert!(text.contains("forever"), "{text}");
    }

    #[test]
    fn secrets_never_appear_in_errors_or_descriptions() {
        let err = Settings::load(&env(&[("KASSA_WECHAT_APIV3_KEY", "tooshort-SECRET")])).unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
        let ok = Settings::load(&env(&[("KASSA_WEBHOOKS_SECRET", "whsec_SECRETVALUE")])).unwrap();
        assert!(!format!("{ok:?}").contains("SECRETVALUE"));
        assert!(ok.describe().iter().all(|(_, v, _)| !v.contains("SECRETVALUE")));
    }

    #[test]
    fn an_empty_database_url_is_kassa_db_in_the_data_directory_and_a_path_is_that_file() {
        use crate::db::DbTarget;
        let s = Settings::load(&env(&[("KASSA_SERVER_DATA_DIR", "/srv/shop")])).unwrap();
        assert_eq!(s.database.target, DbTarget::Sqlite("/srv/shop/kassa.db".into()));
        let s = Settings::load(&env(&[
            ("KASSA_SERVER_DATA_DIR", "/srv/shop"),
            ("KASSA_DATABASE_URL", "db/orders.db"),
        ]))
        .unwrap();
        assert_eq!(s.database.target, DbTarget::Sqlite("db/orders.db".into()));
        assert_eq!(s.server.data_dir, PathBuf::from("/srv/shop"));
    }

    #[test]
    fn a_postgres_database_url_is_accepted_at_load_and_never_shows_its_password() {
        use crate::db::DbTarget;
        for (value, shown) in [
            (
                "postgresql://kassa:SECRETPW@db/shop?password=SECRETPW",
                "postgresql://kassa:***@db/shop?password=***",
            ),
            // Trimmed before it is read and before it is shown.
            (
                " postgres://kassa:SECRETPW@db/shop\t",
                "postgres://kassa:***@db/shop",
            ),
        ] {
            let s = Settings::load(&env(&[("KASSA_DATABASE_URL", value)])).unwrap();
            let DbTarget::Postgres(url) = &s.database.target else {
                panic!("{value:?} is not PostgreSQL: {:?}", s.database.target);
            };
            assert_eq!(url.expose(), value.trim());
            let (_, described, source) = s
                .describe()
                .into_iter()
                .find(|(k, ..)| k == "database.url")
                .unwrap();
            assert_eq!(described, shown);
            assert!(source.contains("KASSA_DATABASE_URL"), "{source}");
            assert!(!format!("{s:?}").contains("SECRETPW"));
        }
        let unknown = Settings::load(&env(&[("KASSA_DATABASE_URL", "mysql://root:SECRETPW@db/shop")]))
            .unwrap_err()
            .to_string();
        assert!(
            !unknown.contains("SECRETPW") && unknown.contains("mysql://"),
            "{unknown}"
        );
        let unknown = Settings::load(&env(&[("KASSA_DATABASE_URL", " mysql://root:SECRETPW@db/shop ")]))
            .unwrap_err()
            .to_string();
        assert!(!unknown.contains("SECRETPW"), "{unknown}");
    }

    #[test]
    fn the_pool_size_is_16_by_default_and_takes_1_to_200_connections() {
        assert_eq!(Settings::load(&env(&[])).unwrap().database.pool_size, 16);
        for (value, size) in [("1", 1), ("40", 40), ("200", 200)] {
            let s = Settings::load(&env(&[("KASSA_DATABASE_POOL_SIZE", value)])).unwrap();
            assert_eq!(s.database.pool_size, size, "{value}");
        }
        for bad in ["0", "201", "-1", "lots", "1.5"] {
            let err = Settings::load(&env(&[("KASSA_DATABASE_POOL_SIZE", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("database.pool_size"), "{err}");
            assert!(err.contains("from 1 to 200"), "{err}");
            assert!(err.contains("KASSA_DATABASE_POOL_SIZE"), "{err}");
        }
    }

    #[test]
    fn a_backup_interval_is_dropped_with_a_warning_on_postgresql_and_kept_on_sqlite() {
        let sqlite = Settings::load(&env(&[("KASSA_BACKUP_INTERVAL", "6h")])).unwrap();
        assert_eq!(sqlite.backup.interval, Some(Duration::hours(6)));
        assert!(sqlite.warnings.is_empty(), "{:?}", sqlite.warnings);

        let pg = Settings::load(&env(&[
            ("KASSA_BACKUP_INTERVAL", "6h"),
            ("KASSA_DATABASE_URL", "postgres://kassa@db/shop"),
        ]))
        .unwrap();
        assert_eq!(pg.backup.interval, None);
        assert_eq!(pg.warnings.len(), 1, "{:?}", pg.warnings);
        assert!(
            pg.warnings[0].contains("backup.interval") && pg.warnings[0].contains("pg_dump"),
            "{:?}",
            pg.warnings
        );
        // Nothing to warn about when no interval was asked for.
        let quiet = Settings::load(&env(&[("KASSA_DATABASE_URL", "postgres://kassa@db/shop")])).unwrap();
        assert!(quiet.warnings.is_empty(), "{:?}", quiet.warnings);
    }

    #[test]
    fn a_refused_database_url_is_shown_without_anything_that_may_be_a_password() {
        for value in [
            "\"postgres://kassa:SECRETPW@db/shop\"",
            "jdbc:postgresql://db/shop?password=SECRETPW",
            "host=db user=kassa password=SECRETPW",
            "postgres:/kassa:SECRETPW@db/shop",
            "sqlite:shop.db?key=SECRETPW",
            "user=kassa:SECRETPW",
        ] {
            let err = Settings::load(&env(&[("KASSA_DATABASE_URL", value)]))
                .unwrap_err()
                .to_string();
            assert!(!err.contains("SECRETPW"), "{value:?}: {err}");
            assert!(err.contains("KASSA_DATABASE_URL"), "{err}");
        }
    }

    #[test]
    fn kassa_config_shows_a_sqlite_url_as_the_path_it_names() {
        let s = Settings::load(&env(&[("KASSA_DATABASE_URL", "sqlite:///var/lib/shop.db")])).unwrap();
        let (_, shown, source) = s
            .describe()
            .into_iter()
            .find(|(k, ..)| k == "database.url")
            .unwrap();
        assert_eq!(shown, "/var/lib/shop.db");
        assert!(source.contains("KASSA_DATABASE_URL"), "{source}");
    }

    #[test]
    fn unknown_variables_are_warned_about_and_kassa_own_ones_are_not() {
        let s = Settings::load(&env(&[
            ("KASSA_SERVER_BINDD", "x"),
            ("KASSA_ADMIN_PASSWORD", "pw"),
            ("PATH", "/bin"),
        ]))
        .unwrap();
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("KASSA_SERVER_BINDD"));
    }

    #[test]
    fn env_names_with_underscored_keys_resolve() {
        let s = Settings::load(&env(&[
            ("KASSA_ALIPAY_APP_ID", "2021"),
            ("KASSA_ALIPAY_APP_PRIVATE_KEY_FILE", "/k/app.pem"),
            ("KASSA_ALIPAY_ALIPAY_PUBLIC_KEY_FILE", "/k/ali.pem"),
        ]))
        .unwrap();
        assert_eq!(s.alipay.app_private_key_file, Some(PathBuf::from("/k/app.pem")));
        let err = Settings::load(&env(&[("KASSA_ALIPAY_APP_ID", "2021")])).unwrap_err();
        assert!(err.to_string().contains("alipay.app_private_key_file"), "{err}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s"), Ok(Duration::seconds(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::minutes(90)));
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
        for bad in ["", "5", "m", "5x", "-5m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_longer_than_a_year_are_refused_however_they_are_written() {
        for long in [
            "366d",
            "99999999d",
            "9223372036854775807s",
            "99999999999999999999d",
            "365d1s",
            "8761h",
        ] {
            let err = parse_duration(long).unwrap_err();
            assert!(
                err.contains("365d") || err.contains("not a duration"),
                "{long}: {err}"
            );
        }
    }

    #[test]
    fn a_retry_step_that_could_overflow_a_timestamp_is_refused_at_load() {
        for (schedule, bad) in [
            ("5s,99999999d", "99999999d"),
            ("31d", "31d"),
            ("1h,400d,1h", "400d"),
        ] {
            let err = Settings::load(&env(&[("KASSA_WEBHOOKS_RETRY_SCHEDULE", schedule)])).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("webhooks.retry_schedule"), "{text}");
            assert!(text.contains(bad), "{text}");
        }
        let longest = Settings::load(&env(&[("KASSA_WEBHOOKS_RETRY_SCHEDULE", "30d,30d")])).unwrap();
        assert_eq!(longest.webhooks.retry_schedule, [Duration::days(30); 2]);
        let err = Settings::load(&env(&[("KASSA_BACKUP_INTERVAL", "400d")])).unwrap_err();
        assert!(err.to_string().contains("backup.interval"), "{err}");
    }

    #[test]
    fn the_readme_configuration_table_is_the_one_the_key_table_renders() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's configuration table differs from config::markdown_table(); paste this:\n{table}"
        );
        // A row whose first cell is a `section.key` documents a key.
        let documented = readme
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split_once('`').map(|(name, _)| name))
            .filter(|name| {
                name.split_once('.').is_some_and(|(section, key)| {
                    !section.is_empty()
                        && !key.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
                })
            })
            .count();
        assert_eq!(
            documented,
            keys::ALL.len(),
            "README documents keys outside the table"
        );
    }
}
