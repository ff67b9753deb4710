//! `kassa`: parse the command line, load settings, start logging, dispatch.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use kassa::cli::{
    AdminCommand, ApikeyCommand, Cli, Command, ConfigArgs, DoctorArgs, ExportCommand, ServeArgs,
    WebhooksCommand,
};
use kassa::commands::{self, CommandError};
use kassa::config::{keys, ConfigError, ConfigSources, Settings};
use kassa::startup::{Application, Options};

fn sources(cli: &Cli, serve: Option<&ServeArgs>) -> ConfigSources {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let file = cli.config.clone().or_else(|| {
        env.iter()
            .find(|(k, _)| k == "KASSA_CONFIG")
            .map(|(_, v)| v.into())
    });
    let mut flags = Vec::new();
    if let Some(dir) = &cli.data_dir {
        flags.push((keys::SERVER_DATA_DIR.name, dir.clone(), "--data-dir"));
    }
    if let Some(serve) = serve {
        if let Some(bind) = &serve.bind {
            flags.push((keys::SERVER_BIND.name, bind.clone(), "--bind"));
        }
        if let Some(url) = &serve.public_url {
            flags.push((keys::SERVER_PUBLIC_URL.name, url.clone(), "--public-url"));
        }
    }
    ConfigSources { file, env, flags }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serve_args = match &cli.command {
        None => Some(cli.serve.clone()),
        Some(Command::Serve(args)) => Some(ServeArgs {
            bind: args.bind.clone().or_else(|| cli.serve.bind.clone()),
            public_url: args.public_url.clone().or_else(|| cli.serve.public_url.clone()),
        }),
        _ => None,
    };
    // The example shows defaults only, so a broken kassa.toml must not stop it.
    if let Some(Command::Config(ConfigArgs { example: true })) = &cli.command {
        print!("{}", kassa::config::example_toml());
        return ExitCode::SUCCESS;
    }
    let settings = match (Settings::load(&sources(&cli, serve_args.as_ref())), &cli.command) {
        (Ok(s), _) => s,
        // Doctor reports a bad configuration as one of its findings.
        (Err(e), Some(Command::Doctor(args))) => return doctor(Err(e), args),
        (Err(e), _) => {
            eprintln!("kassa: {e}");
            return ExitCode::from(2);
        }
    };
    kassa::telemetry::init(settings.log);
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }

    let db = &settings.database.target;
    let stdout = std::io::stdout();
    let result: Result<(), CommandError> = match cli.command {
        None | Some(Command::Serve(_)) => serve(settings),
        Some(Command::Migrate(args)) => match &args.to {
            None => migrate(db),
            Some(to) => commands::migrate::to_postgres(&settings.server.data_dir, db, to, &mut stdout.lock()),
        },
        Some(Command::Apikey(ApikeyCommand::Create { name })) => {
            commands::apikey::create(db, &name, &mut stdout.lock())
        }
        Some(Command::Apikey(ApikeyCommand::List)) => commands::apikey::list(db, &mut stdout.lock()),
        Some(Command::Apikey(ApikeyCommand::Revoke { name })) => {
            commands::apikey::revoke(db, &name, &mut stdout.lock())
        }
        Some(Command::Backup(args)) => {
            // A backup named `file:…` is that file, not a URI naming another one.
            let file = kassa::db::target::not_a_uri(&args.file);
            commands::backup::run(db, &file, args.force, &mut stdout.lock())
        }
        Some(Command::Restore(args)) => commands::restore::run(
            &settings.server.data_dir,
            &settings.database.target,
            &kassa::db::target::not_a_uri(&args.file),
            chrono::Utc::now(),
            &mut stdout.lock(),
        ),
        Some(Command::Export(ExportCommand::Orders(args))) => export_orders(&settings, &args),
        Some(Command::Webhooks(command)) => webhooks(&settings, command),
        Some(Command::Config(_)) => commands::config::show(&settings, &mut stdout.lock()),
        Some(Command::Doctor(args)) => return doctor(Ok(settings), &args),
        Some(Command::Healthcheck) => commands::healthcheck::run(settings.server.bind, &mut stdout.lock()),
        Some(Command::Admin(AdminCommand::Passwd { user })) => {
            commands::admin::passwd(db, &user, &mut stdout.lock())
        }
        Some(Command::Admin(AdminCommand::Add { user, role })) => {
            commands::admin::add(db, &user, role, &mut stdout.lock())
        }
        Some(Command::Admin(AdminCommand::Remove { user })) => {
            commands::admin::remove(db, &user, &mut stdout.lock())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kassa: {e}");
            ExitCode::FAILURE
        }
    }
}

fn migrate(db: &kassa::db::DbTarget) -> Result<(), CommandError> {
    let applied = kassa::db::Offline::open_target(db)?.migrate()?;
    if applied.is_empty() {
        println!("database {db} is up to date");
    } else {
        println!("applied migrations to {db}: {}", applied.join(", "));
    }
    Ok(())
}

/// Exit 1 when doctor found a problem; warnings alone exit 0.
fn doctor(loaded: Result<Settings, ConfigError>, args: &DoctorArgs) -> ExitCode {
    let options = commands::doctor::Options {
        alipay_app_public_key: args.alipay_app_public_key.clone(),
    };
    match commands::doctor::run(loaded, &options, &mut std::io::stdout().lock()) {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kassa: {e}");
            ExitCode::FAILURE
        }
    }
}

fn export_orders(settings: &Settings, args: &kassa::cli::ExportOrdersArgs) -> Result<(), CommandError> {
    use commands::export::parse_bound;
    let tz = settings.merchant.timezone;
    let from = args
        .from
        .as_deref()
        .map(|t| parse_bound(t, tz, false, "--from"))
        .transpose()?;
    let to = args
        .to
        .as_deref()
        .map(|t| parse_bound(t, tz, true, "--to"))
        .transpose()?;
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    match commands::export::orders(&settings.database.target, tz, from, to, out) {
        // `kassa export orders | head` closing the pipe early is not an error.
        Err(e) if e.message.contains("Broken pipe") => Ok(()),
        other => other.map(|_| ()),
    }
}

fn webhooks(settings: &Settings, command: WebhooksCommand) -> Result<(), CommandError> {
    let mut out = std::io::stdout().lock();
    match command {
        WebhooksCommand::Secret => commands::webhooks::secret(settings, &mut out),
        WebhooksCommand::RotateSecret => commands::webhooks::rotate_secret(settings, &mut out),
        WebhooksCommand::Resend(args) => {
            let tz = settings.merchant.timezone;
            let since = args
                .failed_since
                .as_deref()
                .map(|t| commands::export::parse_bound(t, tz, false, "--failed-since"))
                .transpose()?;
            commands::webhooks::resend(settings, args.id.as_deref(), since, &mut out)
        }
        WebhooksCommand::Status => commands::webhooks::status(settings, &mut out),
        WebhooksCommand::Test { url } => commands::webhooks::test(settings, url.as_deref(), &mut out),
    }
}

fn serve(settings: Settings) -> Result<(), CommandError> {
    actix_web::rt::System::new().block_on(async move {
        let app =
            Application::build(settings, Options::default()).map_err(|e| CommandError::new(e.to_string()))?;
        let core = app.core();
        // Write errors are ignored: a closed stdout must not stop the server.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "kassa listening on http://{}", app.address());
        let _ = writeln!(out, "public URL: {}", core.public_url());
        let _ = writeln!(out, "database: {}", core.db.target());
        let enabled: Vec<&str> = core.providers.enabled().iter().map(|p| p.as_str()).collect();
        if enabled.is_empty() {
            let _ = writeln!(
                out,
                "no payment provider is enabled yet: configure [alipay] or [wechat] to accept orders"
            );
        } else {
            let _ = writeln!(out, "payment providers: {}", enabled.join(", "));
        }
        if let Some(sandbox) = app.sandbox() {
            // The token is the operator's to use: whoever reads this output runs the server.
            let _ = writeln!(
                out,
                "sandbox: on (simulated Alipay and WeChat Pay; pay an order from the wallet page its qr_code opens; keys in {}); no real money moves; fault switches from other hosts need X-Sandbox-Token: {} ({})",
                sandbox.keys.dir.display(),
                sandbox.keys.token,
                sandbox.keys.dir.join(kassa::sandbox::keys::TOKEN).display()
            );
        }
        if let Some(first) = app.first_admin() {
            match &first.generated_password {
                Some(password) => {
                    let _ = writeln!(
                        out,
                        "admin dashboard: {}/admin, user {}, password {password}\n  (shown this once; change it with `kassa admin passwd {}`)",
                        core.public_url(),
                        first.username,
                        first.username
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "admin dashboard: {}/admin, user {}, password from KASSA_ADMIN_PASSWORD",
                        core.public_url(),
                        first.username
                    );
                }
            }
        }
        let _ = out.flush();
        drop(out);
        app.run_until_stopped()
            .await
            .map_err(|e| CommandError::new(e.to_string()))
    })
}
