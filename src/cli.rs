//! Command-line interface. No subcommand means `serve`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kassa",
    version,
    about = "Self-hosted merchant order server for Alipay and WeChat Pay"
)]
pub struct Cli {
    /// Config file (default: ./kassa.toml when present). Also KASSA_CONFIG.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Directory holding the database and generated keys ([server] data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<String>,

    /// Server options, accepted without the `serve` word too.
    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit; with --to, copy the SQLite database
    /// into an empty PostgreSQL database instead.
    Migrate(MigrateArgs),
    /// Manage API keys for the merchant JSON API.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// Write a consistent copy of the database, safe while the server runs.
    Backup(BackupArgs),
    /// Put a backup in place of the database (refused while a server runs); the
    /// replaced database is kept beside it.
    Restore(RestoreArgs),
    /// Export data as CSV to standard output.
    #[command(subcommand)]
    Export(ExportCommand),
    /// Show the effective configuration and where each value came from.
    Config(ConfigArgs),
    /// Check the configuration, keys, public URL, clock, database and webhook endpoint
    /// before going live; exits non-zero on any problem.
    Doctor(DoctorArgs),
    /// GET /healthz on the address kassa listens on ([server] bind); exits 0 when
    /// healthy (for container health checks).
    Healthcheck,
    /// Webhooks to the shop: the signing secret, re-sends, a test delivery.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Staff users of the admin dashboard.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Copy the configured SQLite database into this empty PostgreSQL database
    /// (postgres://user:password@host/db; the password is never printed), checking every
    /// table's row count and checksum before committing. Refused while a server runs on
    /// the SQLite file.
    #[arg(long, value_name = "POSTGRES_URL")]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print an example kassa.toml instead: every key with its default and meaning.
    #[arg(long)]
    pub example: bool,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The app public key (应用公钥) uploaded to Alipay, PEM: checked to match
    /// [alipay] app_private_key_file.
    #[arg(long, value_name = "FILE")]
    pub alipay_app_public_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set a user's password, read from standard input (asked twice, unechoed, on a
    /// terminal); ends the user's sessions.
    Passwd {
        /// The user, e.g. admin.
        user: String,
    },
    /// Add a user with a role; the password is read as for `passwd`.
    Add {
        /// The new user's name (letters, digits, '.', '_', '-', '@').
        user: String,
        /// owner (everything), operator (orders, close, refund, query, re-send) or
        /// viewer (read only).
        #[arg(long, default_value = "viewer")]
        role: crate::domain::admin::Role,
    },
    /// Remove a user and end their sessions (the last owner stays).
    Remove { user: String },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Print the signing secret (whsec_…) to give to the shop.
    Secret,
    /// Start signing with a new secret; the old one keeps signing alongside for 24 h.
    RotateSecret,
    /// Queue deliveries again, with their original webhook-id.
    Resend(ResendArgs),
    /// Deliveries by status, and each endpoint's health (disabled ones say so).
    Status,
    /// Send a signed `ping` event now and print the shop's answer.
    Test {
        /// Endpoint to test (default: [webhooks] url).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ResendArgs {
    /// One delivery, by its webhook-id (msg_…).
    #[arg(long, value_name = "WEBHOOK_ID")]
    pub id: Option<String>,
    /// Every delivery that failed since this time (RFC 3339, or a date in the
    /// merchant's time zone).
    #[arg(long, value_name = "TIME")]
    pub failed_since: Option<String>,
}

#[derive(Debug, Args, Default, Clone)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub bind: Option<String>,
    /// Public base URL for checkout links and provider notifications.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ApikeyCommand {
    /// Create a key; it is printed once and only its hash is stored.
    Create {
        /// A name to recognise the key by, e.g. "shop".
        name: String,
    },
    /// List keys (never their secret part).
    List,
    /// Revoke the active key with this name.
    Revoke { name: String },
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Where to write the copy.
    pub file: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup to restore (from `kassa backup` or <data_dir>/backups/).
    pub file: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Orders as CSV: one header row, amounts as decimal strings, times in the
    /// merchant's time zone plus UTC.
    Orders(ExportOrdersArgs),
}

#[derive(Debug, Args)]
pub struct ExportOrdersArgs {
    /// First day (YYYY-MM-DD, merchant time zone) or instant (RFC 3339) to include.
    #[arg(long, value_name = "DATE")]
    pub from: Option<String>,
    /// Last day to include (YYYY-MM-DD, whole day) or instant (RFC 3339, exclusive).
    #[arg(long, value_name = "DATE")]
    pub to: Option<String>,
}
