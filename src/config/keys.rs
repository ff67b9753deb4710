//! Every key kassa understands, each declared once: its name, default, parser, whether
//! it is secret, and the line the README's table shows. Env names are derived from
//! these, never by splitting a variable name on `_` (keys such as
//! `app_private_key_file` contain it).

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::Duration;

use super::parse::*;
use super::{AnyKey, Key, LogFormat, SandboxMode, Secret};
use crate::domain::Currency;

pub const SERVER_BIND: Key<SocketAddr> = Key::new(
    "server.bind",
    "127.0.0.1:8080",
    socket_addr,
    "address to listen on; port `0` picks a free port (the bound address is printed)",
);
pub const SERVER_PUBLIC_URL: Key<Option<String>> = Key::new(
    "server.public_url",
    "",
    optional_base_url,
    "base of `checkout_url` and of the notify URLs given to providers; empty: `http://<bind>`",
);
pub const SERVER_DATA_DIR: Key<PathBuf> = Key::new(
    "server.data_dir",
    "data",
    directory,
    "database (`kassa.db`, unless `database.url` names another file), generated keys, backups",
);
pub const SERVER_METRICS_TOKEN: Key<Secret> = Key::secret(
    "server.metrics_token",
    any_secret,
    "when set, `/metrics` requires `Authorization: Bearer <token>`",
);
pub const SERVER_TRUSTED_PROXIES: Key<Vec<ipnet::IpNet>> = Key::new(
    "server.trusted_proxies",
    "",
    ip_networks,
    "reverse proxies (IPs or CIDR ranges, a TOML array or comma-separated) whose `X-Forwarded-For` names the client recorded for notifications and audit rows; empty: the socket peer",
);
pub const SERVER_API_RATE_LIMIT: Key<Option<crate::service::rate_limit::Rate>> = Key::new(
    "server.api_rate_limit",
    "",
    optional_rate,
    "requests each API key may make (`600/min`; per `s`, `min` or `h`), more get `429` with `Retry-After`; empty: no limit. Failed API key checks are limited apart, 20 a minute per client address, always",
);
pub const SERVER_SHUTDOWN_TIMEOUT: Key<Duration> = Key::new(
    "server.shutdown_timeout",
    "10s",
    shutdown_timeout,
    "on SIGTERM or Ctrl-C, how long requests in flight get to finish before their connections are closed (`1s` to `10m`)",
);
pub const SERVER_HEADER_TIMEOUT: Key<Duration> = Key::new(
    "server.header_timeout",
    "5s",
    client_timeout,
    "a connection whose first request head has not arrived whole this long after it opened is answered `408` and closed (`1s` to `5m`)",
);
pub const SERVER_BODY_TIMEOUT: Key<Duration> = Key::new(
    "server.body_timeout",
    "10s",
    client_timeout,
    "a request body not fully received this long after its head is cut off: `408` and the connection closed, nothing stored (`1s` to `5m`)",
);
pub const SERVER_MAX_CONNECTIONS_PER_ADDRESS: Key<usize> = Key::new(
    "server.max_connections_per_address",
    "256",
    connection_cap,
    "open connections one client address (an IPv6 /64) may hold; more are closed at once, unanswered. `0`: no cap. Peers in `trusted_proxies` are not capped",
);
pub const DATABASE_URL: Key<Option<crate::db::DbTarget>> = Key::redacted(
    "database.url",
    "",
    database_url,
    redact_database_url,
    "the database: a SQLite file's path (`/var/lib/kassa/shop.db`; also `sqlite:<path>`), relative to the working directory; empty: `<data_dir>/kassa.db`. Or a PostgreSQL server, `postgres://user:password@host/database`: the same binary on PostgreSQL, so that several instances can share one database (see README, Scaling out). A password is never shown",
);
pub const DATABASE_POOL_SIZE: Key<usize> = Key::new(
    "database.pool_size",
    "16",
    pool_size,
    "on PostgreSQL, connections each instance keeps (`1` to `200`): its concurrent transactions. The server's `max_connections` must cover every instance's pool plus one (its LISTEN connection), and one for each `kassa` command running. Ignored on SQLite",
);
pub const MERCHANT_NAME: Key<String> =
    Key::new("merchant.name", "My Shop", merchant_name, "shown to customers");
pub const MERCHANT_CURRENCY: Key<Currency> = Key::new(
    "merchant.currency",
    "CNY",
    currency,
    "default currency of new orders (CNY, HKD, USD, EUR, GBP, JPY, SGD, AUD, CAD, KRW)",
);
pub const MERCHANT_TIMEZONE: Key<chrono_tz::Tz> = Key::new(
    "merchant.timezone",
    "UTC",
    timezone,
    "IANA zone (e.g. `Asia/Shanghai`) for pages and CSV; kassa stores UTC",
);
pub const MERCHANT_ORDER_TTL: Key<Duration> = Key::new(
    "merchant.order_ttl",
    "15m",
    order_ttl,
    "how long a new order stays payable (`1m` to `24h`)",
);
pub const ALIPAY_APP_ID: Key<String> = Key::new(
    "alipay.app_id",
    "",
    text,
    "Alipay app id; setting it enables Alipay (the two key files are then required)",
);
pub const ALIPAY_APP_PRIVATE_KEY_FILE: Key<Option<PathBuf>> = Key::new(
    "alipay.app_private_key_file",
    "",
    optional_path,
    "app private key, PEM (PKCS#1 or PKCS#8)",
);
pub const ALIPAY_ALIPAY_PUBLIC_KEY_FILE: Key<Option<PathBuf>> = Key::new(
    "alipay.alipay_public_key_file",
    "",
    optional_path,
    "Alipay public key, PEM",
);
pub const ALIPAY_GATEWAY: Key<String> = Key::new(
    "alipay.gateway",
    "https://openapi.alipay.com/gateway.do",
    url,
    "Alipay OpenAPI gateway",
);
pub const ALIPAY_SELLER_ID: Key<Option<String>> = Key::new(
    "alipay.seller_id",
    "",
    optional_text,
    "when set, notifications must carry this `seller_id`",
);
pub const WECHAT_MCHID: Key<String> = Key::new(
    "wechat.mchid",
    "",
    text,
    "WeChat Pay merchant id; setting it enables WeChat Pay (the merchant keys, and a platform public key or certificates, are then required)",
);
pub const WECHAT_APPID: Key<String> = Key::new("wechat.appid", "", text, "WeChat Pay app id");
pub const WECHAT_APIV3_KEY: Key<Secret> =
    Key::secret("wechat.apiv3_key", apiv3_key, "APIv3 key, exactly 32 bytes");
pub const WECHAT_MERCHANT_SERIAL_NO: Key<String> = Key::new(
    "wechat.merchant_serial_no",
    "",
    text,
    "serial number of the merchant API certificate",
);
pub const WECHAT_MERCHANT_PRIVATE_KEY_FILE: Key<Option<PathBuf>> = Key::new(
    "wechat.merchant_private_key_file",
    "",
    optional_path,
    "merchant API private key, PEM",
);
pub const WECHAT_PLATFORM_PUBLIC_KEY_FILE: Key<Option<PathBuf>> = Key::new(
    "wechat.platform_public_key_file",
    "",
    optional_path,
    "public-key mode: WeChat Pay platform public key, PEM",
);
pub const WECHAT_PLATFORM_PUBLIC_KEY_ID: Key<String> = Key::new(
    "wechat.platform_public_key_id",
    "",
    text,
    "id of the platform public key (`PUB_KEY_ID_…`)",
);
pub const WECHAT_PLATFORM_SERIAL: Key<String> = Key::new(
    "wechat.platform_serial",
    "",
    text,
    "older name of `wechat.platform_public_key_id`",
);
pub const WECHAT_PLATFORM_CERTIFICATE_FILES: Key<Vec<PathBuf>> = Key::new(
    "wechat.platform_certificate_files",
    "",
    path_list,
    "certificate mode (or both, during WeChat's switch): platform certificates, PEM; a TOML array or comma-separated",
);
pub const WECHAT_API_BASE: Key<String> = Key::new(
    "wechat.api_base",
    "https://api.mch.weixin.qq.com",
    base_url,
    "WeChat Pay API base",
);
pub const SANDBOX_ENABLED: Key<SandboxMode> = Key::new(
    "sandbox.enabled",
    "auto",
    sandbox_mode,
    "built-in payment sandbox: `auto` (on when no provider is configured), `true`, `false`",
);
pub const SANDBOX_TIME_SCALE: Key<u32> = Key::new(
    "sandbox.time_scale",
    "1",
    at_least_one,
    "divides the simulated platforms' retry delays",
);
pub const WEBHOOKS_URL: Key<Option<String>> = Key::new(
    "webhooks.url",
    "",
    optional_url,
    "default webhook endpoint (an order's own `notify_url` wins)",
);
pub const WEBHOOKS_SECRET: Key<Secret> = Key::secret(
    "webhooks.secret",
    webhook_secret,
    "`whsec_…` signing secret; empty: one is generated and kept in the database",
);
pub const WEBHOOKS_RETRY_SCHEDULE: Key<Vec<Duration>> = Key::new(
    "webhooks.retry_schedule",
    "5s,5m,30m,2h,5h,10h,10h",
    retry_schedule,
    "delays between webhook attempts, each at most `30d`",
);
pub const WEBHOOKS_ALLOW_PRIVATE: Key<bool> = Key::new(
    "webhooks.allow_private",
    "false",
    boolean,
    "let webhooks go to loopback, private and link-local addresses (a shop on the same host or LAN; tests); off, such URLs are refused at order creation and at delivery",
);
pub const LOG_FORMAT: Key<LogFormat> = Key::new(
    "log.format",
    "text",
    log_format,
    "`text` or `json`; filter with `RUST_LOG` (e.g. `RUST_LOG=kassa=debug`)",
);
pub const BACKUP_INTERVAL: Key<Option<Duration>> = Key::new(
    "backup.interval",
    "",
    backup_interval,
    "how often to write a checked backup into `<data_dir>/backups/` (e.g. `6h`; at least `1s`); empty: none",
);
pub const BACKUP_KEEP: Key<u32> = Key::new(
    "backup.keep",
    "7",
    at_least_one,
    "periodic backups kept; older ones are deleted",
);
pub const NOTIFICATIONS_REJECTED_RATE_LIMIT: Key<Option<crate::service::rate_limit::Rate>> = Key::new(
    "notifications.rejected_rate_limit",
    "60/min",
    optional_rate,
    "platform notifications that fail verification one client address may send (per `s`, `min` or `h`); more get `429` with `Retry-After` and are not stored. Verified notifications are never limited. Empty: no limit",
);
pub const NOTIFICATIONS_KEEP_REJECTED: Key<Option<Duration>> = Key::new(
    "notifications.keep_rejected",
    "30d",
    keep_rejected,
    "how long notifications that failed verification are kept (at least `1h`); a background job deletes older ones. Verified notifications are kept forever. Empty: kept forever",
);
pub const ADMIN_SESSION_IDLE: Key<Duration> = Key::new(
    "admin.session_idle",
    "30m",
    session_length,
    "an admin session unused this long ends (`1m` to `30d`)",
);
pub const ADMIN_SESSION_MAX: Key<Duration> = Key::new(
    "admin.session_max",
    "12h",
    session_length,
    "an admin session ends this long after sign-in, however active (`1m` to `30d`)",
);
pub const ADMIN_REQUIRE_TOTP: Key<bool> = Key::new(
    "admin.require_totp",
    "false",
    boolean,
    "every staff user must sign in with a TOTP code; owners can also require it on `/admin/users`",
);

/// In the order `kassa config` and the README list them.
pub const ALL: &[&dyn AnyKey] = &[
    &SERVER_BIND,
    &SERVER_PUBLIC_URL,
    &SERVER_DATA_DIR,
    &SERVER_METRICS_TOKEN,
    &SERVER_SHUTDOWN_TIMEOUT,
    &SERVER_TRUSTED_PROXIES,
    &SERVER_API_RATE_LIMIT,
    &SERVER_HEADER_TIMEOUT,
    &SERVER_BODY_TIMEOUT,
    &SERVER_MAX_CONNECTIONS_PER_ADDRESS,
    &DATABASE_URL,
    &DATABASE_POOL_SIZE,
    &MERCHANT_NAME,
    &MERCHANT_CURRENCY,
    &MERCHANT_TIMEZONE,
    &MERCHANT_ORDER_TTL,
    &ALIPAY_APP_ID,
    &ALIPAY_APP_PRIVATE_KEY_FILE,
    &ALIPAY_ALIPAY_PUBLIC_KEY_FILE,
    &ALIPAY_GATEWAY,
    &ALIPAY_SELLER_ID,
    &WECHAT_MCHID,
    &WECHAT_APPID,
    &WECHAT_APIV3_KEY,
    &WECHAT_MERCHANT_SERIAL_NO,
    &WECHAT_MERCHANT_PRIVATE_KEY_FILE,
    &WECHAT_PLATFORM_PUBLIC_KEY_FILE,
    &WECHAT_PLATFORM_PUBLIC_KEY_ID,
    &WECHAT_PLATFORM_SERIAL,
    &WECHAT_PLATFORM_CERTIFICATE_FILES,
    &WECHAT_API_BASE,
    &SANDBOX_ENABLED,
    &SANDBOX_TIME_SCALE,
    &WEBHOOKS_URL,
    &WEBHOOKS_SECRET,
    &WEBHOOKS_RETRY_SCHEDULE,
    &WEBHOOKS_ALLOW_PRIVATE,
    &LOG_FORMAT,
    &BACKUP_INTERVAL,
    &BACKUP_KEEP,
    &NOTIFICATIONS_REJECTED_RATE_LIMIT,
    &NOTIFICATIONS_KEEP_REJECTED,
    &ADMIN_SESSION_IDLE,
    &ADMIN_SESSION_MAX,
    &ADMIN_REQUIRE_TOTP,
];

/// Keys that must be set once `wechat.mchid` is (besides a platform public key or
/// certificate, checked apart).
pub const WECHAT_REQUIRED: &[&dyn AnyKey] = &[
    &WECHAT_APPID,
    &WECHAT_APIV3_KEY,
    &WECHAT_MERCHANT_SERIAL_NO,
    &WECHAT_MERCHANT_PRIVATE_KEY_FILE,
];
