//! `kassa doctor`: what a merchant gets wrong before going live, checked one by one and
//! printed as ok / warning / problem with how to fix it. It only looks: it never creates
//! or migrates the database, never writes to it, and every network check is bounded by a
//! short timeout, so it cannot hang on a platform it cannot reach.

mod keys;
mod local;
mod reach;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use chrono::Utc;

use super::CommandError;
use crate::config::{ConfigError, Settings};

/// What the operator passes besides the configuration.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// The app public key (应用公钥) uploaded to Alipay, to compare with the app
    /// private key kassa signs with. Alipay keeps it; kassa's configuration does not.
    pub alipay_app_public_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// Not checked, and why (offline, nothing to compare with).
    Skipped,
    Warning,
    /// kassa would take orders that cannot be paid, or lose what the platforms send.
    Problem,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that the report's columns line up.
        f.pad(match self {
            Level::Ok => "ok",
            Level::Skipped => "skipped",
            Level::Warning => "warning",
            Level::Problem => "problem",
        })
    }
}

/// One line of the report: what it is about (a config key where there is one), what
/// was found, and for anything but `ok` what to do.
#[derive(Debug, Clone)]
pub struct Check {
    pub level: Level,
    pub subject: String,
    pub message: String,
    pub fix: Option<String>,
}

impl Check {
    fn new(level: Level, subject: impl Into<String>, message: impl Into<String>) -> Check {
        Check {
            level,
            subject: subject.into(),
            message: message.into(),
            fix: None,
        }
    }

    fn ok(subject: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(Level::Ok, subject, message)
    }

    fn skipped(subject: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(Level::Skipped, subject, message)
    }

    fn warning(subject: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(Level::Warning, subject, message)
    }

    fn problem(subject: impl Into<String>, message: impl Into<String>) -> Check {
        Check::new(Level::Problem, subject, message)
    }

    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// Runs every check that applies and prints the report. `Ok(true)` when a problem was
/// found (the command then exits non-zero); warnings alone are `Ok(false)`.
pub fn run(
    loaded: Result<Settings, ConfigError>,
    options: &Options,
    out: &mut impl Write,
) -> Result<bool, CommandError> {
    let checks = match loaded {
        Ok(settings) => checks(&settings, options),
        // Nothing else can be checked without a configuration.
        Err(e) => config_error(e),
    };
    print(&checks, out).map_err(|e| CommandError::new(e.to_string()))?;
    Ok(checks.iter().any(|c| c.level == Level::Problem))
}

fn config_error(error: ConfigError) -> Vec<Check> {
    let fix = "correct the value; kassa does not start with it";
    match error {
        ConfigError::Invalid(problems) => problems
            .into_iter()
            .map(|p| Check::problem(p.key, format!("{} (from {})", p.problem, p.source)).fix(fix))
            .collect(),
        ConfigError::Unreadable { path, reason } => vec![Check::problem(
            "--config",
            format!("cannot read config file {}: {reason}", path.display()),
        )
        .fix("pass --config (or KASSA_CONFIG) with a readable kassa.toml")],
        ConfigError::Syntax { path, reason } => vec![Check::problem(
            "--config",
            format!(
                "config file {} is not valid TOML: {}",
                path.display(),
                reason.trim()
            ),
        )
        .fix(fix)],
    }
}

fn checks(settings: &Settings, options: &Options) -> Vec<Check> {
    let now = Utc::now();
    let mut checks = vec![Check::ok("configuration", "every value parses")];
    checks.extend(
        settings
            .warnings
            .iter()
            .map(|w| Check::warning("configuration", w.clone()).fix("remove or correct it")),
    );
    checks.extend(local::providers(settings));
    if settings.alipay.is_configured() {
        checks.extend(keys::alipay(settings, options.alipay_app_public_key.as_deref()));
    }
    if settings.wechat.is_configured() {
        checks.extend(keys::wechat(settings, now));
    }
    checks.extend(local::public_url(settings));
    let (database, stored_secrets) = local::database(settings, now);
    checks.extend(database);
    checks.extend(reach::network(settings, stored_secrets, now));
    checks
}

fn print(checks: &[Check], out: &mut impl Write) -> std::io::Result<()> {
    for check in checks {
        writeln!(out, "{:<8} {}: {}", check.level, check.subject, check.message)?;
        if let Some(fix) = check.fix.as_ref().filter(|_| check.level != Level::Ok) {
            writeln!(out, "{:<8} fix: {fix}", "")?;
        }
    }
    let count = |level| checks.iter().filter(|c| c.level == level).count();
    let (problems, warnings) = (count(Level::Problem), count(Level::Warning));
    writeln!(out)?;
    if problems > 0 {
        writeln!(
            out,
            "{problems} problem(s), {warnings} warning(s): fix the problems before going live"
        )
    } else {
        writeln!(out, "no problems, {warnings} warning(s)")
    }
}
