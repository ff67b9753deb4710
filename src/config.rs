//! Settings: defaults < `kassa.toml` < `KASSA_<SECTION>_<KEY>` environment variables <
//! command-line flags. Every key remembers where its value came from, so a bad value is
//! reported with its key, its problem and its source. Secrets never print.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::Duration;

use crate::domain::order::check_http_url;
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

struct KeySpec {
    section: &'static str,
    key: &'static str,
    default: &'static str,
    secret: bool,
}

const fn spec(section: &'static str, key: &'static str, default: &'static str) -> KeySpec {
    KeySpec {
        section,
        key,
        default,
        secret: false,
    }
}

const fn secret(section: &'static str, key: &'static str) -> KeySpec {
    KeySpec {
        section,
        key,
        default: "",
        secret: true,
    }
}

/// Every key kassa understands. Env names are derived from this table, never by
/// splitting a variable name on `_` (keys such as `app_private_key_file` contain it).
const KEYS: &[KeySpec] = &[
    spec("server", "bind", "127.0.0.1:8080"),
    spec("server", "public_url", "http://127.0.0.1:8080"),
    spec("server", "data_dir", "data"),
    secret("server", "metrics_token"),
    spec("merchant", "name", "My Shop"),
    spec("merchant", "currency", "CNY"),
    spec("merchant", "timezone", "UTC"),
    spec("merchant", "order_ttl", "15m"),
    spec("alipay", "app_id", ""),
    spec("alipay", "app_private_key_file", ""),
    spec("alipay", "alipay_public_key_file", ""),
    spec("alipay", "gateway", "https://openapi.alipay.com/gateway.do"),
    spec("alipay", "seller_id", ""),
    spec("wechat", "mchid", ""),
    spec("wechat", "appid", ""),
    secret("wechat", "apiv3_key"),
    spec("wechat", "merchant_serial_no", ""),
    spec("wechat", "merchant_private_key_file", ""),
    spec("wechat", "platform_public_key_file", ""),
    spec("wechat", "platform_serial", ""),
    spec("wechat", "api_base", "https://api.mch.weixin.qq.com"),
    spec("sandbox", "enabled", "auto"),
    spec("sandbox", "time_scale", "1"),
    spec("webhooks", "url", ""),
    secret("webhooks", "secret"),
    spec("webhooks", "retry_schedule", "5s,5m,30m,2h,5h,10h,10h"),
    spec("log", "format", "text"),
    spec("backup", "interval", ""),
    spec("backup", "keep", "7"),
];

/// Environment variables that are not config keys but are still kassa's own.
const OTHER_ENV: &[&str] = &["KASSA_CONFIG", "KASSA_ADMIN_PASSWORD"];

fn env_name(section: &str, key: &str) -> String {
    format!("KASSA_{}_{}", section.to_uppercase(), key.to_uppercase())
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
    pub platform_serial: String,
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
}

#[derive(Debug, Clone)]
pub struct BackupSettings {
    pub interval: Option<Duration>,
    pub keep: u32,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub merchant: MerchantSettings,
    pub alipay: AlipaySettings,
    pub wechat: WechatSettings,
    pub sandbox: SandboxSettings,
    pub webhooks: WebhookSettings,
    pub log: LogFormat,
    pub backup: BackupSettings,
    /// Each key's source, by `section.key`.
    pub provenance: BTreeMap<String, Source>,
    /// Things worth a warning at start-up (unknown keys and variables).
    pub warnings: Vec<String>,
    values: BTreeMap<String, String>,
}

impl Settings {
    /// Defaults only; what tests start from.
    pub fn defaults() -> Result<Settings, ConfigError> {
        Settings::load(&ConfigSources::default().with_no_file())
    }

    pub fn database_path(&self) -> PathBuf {
        self.server.data_dir.join("kassa.db")
    }

    pub fn source_of(&self, key: &str) -> Option<&Source> {
        self.provenance.get(key)
    }

    /// `(key, value, source)` for every key, secrets shown as `***`.
    pub fn describe(&self) -> Vec<(String, String, String)> {
        KEYS.iter()
            .map(|k| {
                let name = format!("{}.{}", k.section, k.key);
                let shown = self.values.get(&name).cloned().unwrap_or_default();
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
        let mut raw: BTreeMap<String, (String, Source)> = KEYS
            .iter()
            .map(|k| {
                (
                    format!("{}.{}", k.section, k.key),
                    (k.default.to_owned(), Source::Default),
                )
            })
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
            match KEYS.iter().find(|k| env_name(k.section, k.key) == *name) {
                Some(k) => {
                    raw.insert(
                        format!("{}.{}", k.section, k.key),
                        (value.clone(), Source::Env(name.clone())),
                    );
                }
                None => warnings.push(format!(
                    "unknown environment variable {name} ignored (kassa reads KASSA_<SECTION>_<KEY>, e.g. KASSA_SERVER_BIND)"
                )),
            }
        }

        for (key, value, flag) in &sources.flags {
            raw.insert((*key).to_owned(), (value.clone(), Source::Flag(flag)));
        }

        build(raw, warnings)
    }
}

impl ConfigSources {
    pub fn with_no_file(mut self) -> Self {
        self.file = Some(PathBuf::new());
        self
    }
}

fn read_file_layer(
    path: &Path,
    raw: &mut BTreeMap<String, (String, Source)>,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
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
            if !KEYS.iter().any(|k| k.section == section && k.key == key) {
                warnings.push(format!("{}: unknown key {name} ignored", path.display()));
                continue;
            }
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    problems.push(ConfigProblem {
                        key: name.clone(),
                        problem: format!("expected a string, number or boolean, got a {}", other.type_str()),
                        source: Source::File(path.to_owned()),
                    });
                    continue;
                }
            };
            raw.insert(name, (text, Source::File(path.to_owned())));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Turns raw strings into typed settings, collecting every problem before failing.
struct Builder {
    raw: BTreeMap<String, (String, Source)>,
    problems: Vec<ConfigProblem>,
}

impl Builder {
    fn text(&self, key: &str) -> String {
        self.raw.get(key).map(|(v, _)| v.clone()).unwrap_or_default()
    }

    fn parse<T>(&mut self, key: &str, fallback: T, f: impl FnOnce(&str) -> Result<T, String>) -> T {
        let (value, source) = self
            .raw
            .get(key)
            .cloned()
            .unwrap_or((String::new(), Source::Default));
        match f(value.trim()) {
            Ok(v) => v,
            Err(problem) => {
                let secret = KEYS
                    .iter()
                    .any(|k| k.secret && format!("{}.{}", k.section, k.key) == key);
                let problem = if secret {
                    problem
                } else {
                    format!("{problem} (value {value:?})")
                };
                self.problems.push(ConfigProblem {
                    key: key.to_owned(),
                    problem,
                    source,
                });
                fallback
            }
        }
    }

    fn optional(&self, key: &str) -> Option<String> {
        let v = self.text(key);
        let v = v.trim();
        (!v.is_empty()).then(|| v.to_owned())
    }

    fn complain(&mut self, key: &str, problem: String) {
        let source = self
            .raw
            .get(key)
            .map(|(_, s)| s.clone())
            .unwrap_or(Source::Default);
        self.problems.push(ConfigProblem {
            key: key.to_owned(),
            problem,
            source,
        });
    }
}

fn build(raw: BTreeMap<String, (String, Source)>, warnings: Vec<String>) -> Result<Settings, ConfigError> {
    let provenance = raw.iter().map(|(k, (_, s))| (k.clone(), s.clone())).collect();
    // Only what is safe to show is kept for `describe`: secrets become `***`.
    let values = raw
        .iter()
        .map(|(k, (v, _))| {
            let secret = KEYS
                .iter()
                .any(|s| s.secret && format!("{}.{}", s.section, s.key) == *k);
            let shown = if secret && !v.is_empty() {
                "***".to_owned()
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect();
    let mut b = Builder {
        raw,
        problems: Vec::new(),
    };
    let fallback_addr = SocketAddr::from(([127, 0, 0, 1], 8080));

    let bind = b.parse("server.bind", fallback_addr, |v| {
        v.parse::<SocketAddr>()
            .map_err(|_| "must be an IP address and port such as 127.0.0.1:8080".to_owned())
    });
    let public_url_explicit = b
        .raw
        .get("server.public_url")
        .is_some_and(|(_, s)| *s != Source::Default);
    let public_url = if public_url_explicit {
        b.parse("server.public_url", String::new(), |v| {
            check_http_url(v)?;
            Ok(v.trim_end_matches('/').to_owned())
        })
    } else {
        // Follow the bind address when the operator only changed that.
        format!("http://{bind}")
    };
    let data_dir = b.parse("server.data_dir", PathBuf::from("data"), |v| {
        if v.is_empty() {
            Err("must not be empty".to_owned())
        } else {
            Ok(PathBuf::from(v))
        }
    });
    let metrics_token = Secret::new(b.text("server.metrics_token"));

    let merchant_name = b.parse("merchant.name", String::new(), |v| {
        if v.is_empty() || v.chars().count() > 128 {
            Err("must be 1 to 128 characters".to_owned())
        } else {
            Ok(v.to_owned())
        }
    });
    let currency = b.parse("merchant.currency", Currency::Cny, |v| {
        v.parse::<Currency>().map_err(|e| e.to_string())
    });
    let timezone = b.parse("merchant.timezone", chrono_tz::UTC, |v| {
        v.parse::<chrono_tz::Tz>()
            .map_err(|_| "must be an IANA time zone name such as Asia/Shanghai or UTC".to_owned())
    });
    let order_ttl = b.parse("merchant.order_ttl", Duration::minutes(15), |v| {
        let d = parse_duration(v)?;
        if d < Duration::seconds(60) || d > Duration::days(1) {
            return Err("must be between 1m and 24h".to_owned());
        }
        Ok(d)
    });

    let file_path =
        |v: &str| -> Result<Option<PathBuf>, String> { Ok((!v.is_empty()).then(|| PathBuf::from(v))) };
    let alipay = AlipaySettings {
        app_id: b.text("alipay.app_id").trim().to_owned(),
        app_private_key_file: b.parse("alipay.app_private_key_file", None, file_path),
        alipay_public_key_file: b.parse("alipay.alipay_public_key_file", None, file_path),
        gateway: b.parse("alipay.gateway", String::new(), |v| {
            check_http_url(v)?;
            Ok(v.to_owned())
        }),
        seller_id: b.optional("alipay.seller_id"),
    };
    if alipay.is_configured() {
        for key in ["alipay.app_private_key_file", "alipay.alipay_public_key_file"] {
            if b.optional(key).is_none() {
                b.complain(key, "is required when alipay.app_id is set".to_owned());
            }
        }
    } else if b.optional("alipay.app_private_key_file").is_some() {
        b.complain(
            "alipay.app_id",
            "is required when alipay key files are set".to_owned(),
        );
    }

    let wechat = WechatSettings {
        mchid: b.text("wechat.mchid").trim().to_owned(),
        appid: b.text("wechat.appid").trim().to_owned(),
        apiv3_key: b.parse("wechat.apiv3_key", Secret::default(), |v| {
            if v.is_empty() || v.len() == 32 {
                Ok(Secret::new(v))
            } else {
                Err(format!("must be exactly 32 bytes, got {}", v.len()))
            }
        }),
        merchant_serial_no: b.text("wechat.merchant_serial_no").trim().to_owned(),
        merchant_private_key_file: b.parse("wechat.merchant_private_key_file", None, file_path),
        platform_public_key_file: b.parse("wechat.platform_public_key_file", None, file_path),
        platform_serial: b.text("wechat.platform_serial").trim().to_owned(),
        api_base: b.parse("wechat.api_base", String::new(), |v| {
            check_http_url(v)?;
            Ok(v.trim_end_matches('/').to_owned())
        }),
    };
    if wechat.is_configured() {
        for key in [
            "wechat.appid",
            "wechat.apiv3_key",
            "wechat.merchant_serial_no",
            "wechat.merchant_private_key_file",
            "wechat.platform_public_key_file",
            "wechat.platform_serial",
        ] {
            if b.optional(key).is_none() {
                b.complain(key, "is required when wechat.mchid is set".to_owned());
            }
        }
    }

    let sandbox = SandboxSettings {
        enabled: b.parse("sandbox.enabled", SandboxMode::Auto, |v| match v {
            "auto" => Ok(SandboxMode::Auto),
            "true" => Ok(SandboxMode::On),
            "false" => Ok(SandboxMode::Off),
            _ => Err("must be \"auto\", true or false".to_owned()),
        }),
        time_scale: b.parse("sandbox.time_scale", 1, |v| match v.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err("must be a whole number of at least 1".to_owned()),
        }),
    };

    let webhooks = WebhookSettings {
        url: b.parse("webhooks.url", None, |v| {
            if v.is_empty() {
                return Ok(None);
            }
            check_http_url(v)?;
            Ok(Some(v.to_owned()))
        }),
        secret: b.parse("webhooks.secret", Secret::default(), |v| {
            if v.is_empty() || v.starts_with("whsec_") {
                Ok(Secret::new(v))
            } else {
                Err("must start with whsec_ (or be empty to generate one)".to_owned())
            }
        }),
        retry_schedule: b.parse("webhooks.retry_schedule", Vec::new(), |v| {
            if v.is_empty() {
                return Err("must list at least one delay, e.g. 5s,5m,30m".to_owned());
            }
            v.split(',').map(|part| parse_duration(part.trim())).collect()
        }),
    };

    let log = b.parse("log.format", LogFormat::Text, |v| match v {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err("must be \"text\" or \"json\"".to_owned()),
    });

    let backup = BackupSettings {
        interval: b.parse("backup.interval", None, |v| {
            if v.is_empty() {
                return Ok(None);
            }
            let d = parse_duration(v)?;
            if d < Duration::minutes(1) {
                return Err("must be at least 1m".to_owned());
            }
            Ok(Some(d))
        }),
        keep: b.parse("backup.keep", 7, |v| match v.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err("must be a whole number of at least 1".to_owned()),
        }),
    };

    if !b.problems.is_empty() {
        return Err(ConfigError::Invalid(b.problems));
    }
    Ok(Settings {
        server: ServerSettings {
            bind,
            public_url,
            data_dir,
            metrics_token,
        },
        merchant: MerchantSettings {
            name: merchant_name,
            currency,
            timezone,
            order_ttl,
        },
        alipay,
        wechat,
        sandbox,
        webhooks,
        log,
        backup,
        provenance,
        warnings,
        values,
    })
}

/// Parses durations such as `90s`, `15m`, `2h`, `1d` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 30s, 15m, 2h or 1h30m");
    if text.is_empty() {
        return Err(bad());
    }
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
            _ => None,
        }
        .ok_or_else(bad)?;
        total = total.checked_add(&part).ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
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
        for bad in ["", "5", "m", "5x", "-5m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
