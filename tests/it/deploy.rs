//! What an operator deploys with: `kassa.toml.example`, the systemd unit, the container
//! image's Dockerfile, and `kassa healthcheck`, which the image's HEALTHCHECK runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kassa::config::{keys, parse_duration, ConfigSources, Settings, Source};

use crate::receiver::{Answer, Receiver};

fn repo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn kassa(args: &[&str], env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_kassa"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_committed_example_configuration_is_the_generated_one_and_sets_every_key_to_its_default() {
    let path = repo("kassa.toml.example");
    let committed = std::fs::read_to_string(&path).unwrap();
    let generated = kassa::config::example_toml();
    assert!(
        committed == generated,
        "kassa.toml.example is not what the key table generates; run\n  cargo run -q -- config --example > kassa.toml.example"
    );
    let printed = kassa(&["config", "--example"], &[]);
    assert!(printed.status.success());
    assert_eq!(String::from_utf8_lossy(&printed.stdout), generated);

    let settings = Settings::load(&ConfigSources {
        file: Some(path.clone()),
        ..Default::default()
    })
    .expect("the example loads as a configuration");
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    // Every key came from the file (so it is listed), at its default.
    let described: BTreeMap<String, (String, String)> = settings
        .describe()
        .into_iter()
        .map(|(key, value, source)| (key, (value, source)))
        .collect();
    for key in keys::ALL {
        assert_eq!(
            settings.source_of(key.name()),
            Some(&Source::File(path.clone())),
            "{} is not in the example",
            key.name()
        );
        assert_eq!(described[key.name()].0, key.default(), "{}", key.name());
        assert!(
            committed.contains(&format!("# {}\n", key.doc())),
            "{}",
            key.name()
        );
    }
}

/// `Key=value` lines of a unit file (later lines win, as for systemd's single-valued
/// settings); `Environment=` lines are collected apart.
fn unit_settings(text: &str) -> (BTreeMap<String, String>, Vec<String>) {
    let mut settings = BTreeMap::new();
    let mut environment = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') || line.starts_with('[') {
            continue;
        }
        let (key, value) = line.split_once('=').expect("key=value");
        if key == "Environment" {
            environment.push(value.to_owned());
        } else {
            settings.insert(key.to_owned(), value.to_owned());
        }
    }
    (settings, environment)
}

#[test]
fn the_systemd_unit_runs_kassa_hardened_with_its_state_in_var_lib_kassa_and_stops_after_the_shutdown_timeout()
{
    let text = std::fs::read_to_string(repo("deploy/kassa.service")).unwrap();
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(text.lines().any(|l| l.trim() == section), "{section}");
    }
    let (unit, environment) = unit_settings(&text);
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("StateDirectory", "kassa"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("Restart", "on-failure"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(unit.get(key).map(String::as_str), Some(value), "{key}");
    }
    assert!(environment
        .iter()
        .any(|e| e == "KASSA_SERVER_DATA_DIR=/var/lib/kassa"));
    let exec: Vec<&str> = unit["ExecStart"].split_whitespace().collect();
    assert!(
        exec[0].starts_with('/') && exec[0].ends_with("/kassa"),
        "{exec:?}"
    );
    assert_eq!(exec[1], "serve");

    // systemd kills what is still running after TimeoutStopSec; kassa's own graceful
    // stop must fit inside it.
    let stop = parse_duration(&unit["TimeoutStopSec"]).unwrap();
    let shutdown = keys::ALL
        .iter()
        .find(|k| k.name() == "server.shutdown_timeout")
        .expect("the shutdown timeout is a key");
    let shutdown = parse_duration(shutdown.default()).unwrap();
    assert!(
        stop >= shutdown * 2,
        "TimeoutStopSec {stop} vs shutdown {shutdown}"
    );
}

/// Instructions of a Dockerfile, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((word.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_builds_the_release_binary_and_runs_it_unprivileged_with_a_data_volume_and_a_health_check() {
    let text = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let all = instructions(&text);
    let stages: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, (word, _))| word == "FROM")
        .map(|(i, _)| i)
        .collect();
    assert!(stages.len() >= 2, "a multi-stage build");
    let builder = &all[stages[0]..stages[1]];
    let last = &all[*stages.last().unwrap()..];

    let manifest = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        builder[0].1.starts_with(&format!("rust:{rust_version}")),
        "the builder's Rust is rust-version {rust_version}: {}",
        builder[0].1
    );
    assert!(builder
        .iter()
        .any(|(w, a)| w == "RUN" && a.contains("cargo build --release --locked")));
    assert!(last[0].1.starts_with("debian:") && last[0].1.contains("slim"));
    assert!(last
        .iter()
        .any(|(w, a)| w == "COPY" && a.contains("--from=builder") && a.contains("kassa")));

    let user = last
        .iter()
        .rev()
        .find(|(w, _)| w == "USER")
        .map(|(_, a)| a.clone())
        .expect("the final stage sets a USER");
    let name = user.split(':').next().unwrap();
    assert!(name != "root" && name != "0", "runs as {user}");
    let volumes: Vec<&str> = last
        .iter()
        .filter(|(w, _)| w == "VOLUME")
        .flat_map(|(_, a)| a.split_whitespace())
        .map(|v| v.trim_matches(|c| c == '[' || c == ']' || c == '"' || c == ','))
        .collect();
    assert!(volumes.contains(&"/data"), "{volumes:?}");
    let env: String = last
        .iter()
        .filter(|(w, _)| w == "ENV")
        .map(|(_, a)| a.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(env.contains("KASSA_SERVER_DATA_DIR=/data"), "{env}");
    assert!(env.contains("KASSA_SERVER_BIND=0.0.0.0:8080"), "{env}");
    assert!(last.iter().any(|(w, a)| w == "EXPOSE" && a == "8080"));
    let health = last
        .iter()
        .find(|(w, _)| w == "HEALTHCHECK")
        .map(|(_, a)| a.clone())
        .expect("a HEALTHCHECK");
    assert!(health.contains(r#"CMD ["kassa", "healthcheck"]"#), "{health}");

    let ignored = std::fs::read_to_string(repo(".dockerignore")).unwrap();
    for path in ["target", "data", "kassa.toml"] {
        assert!(
            ignored.lines().any(|l| l.trim() == path),
            "{path} in .dockerignore"
        );
    }

    // Where Docker is available (a daemon answers), the image must also build.
    let docker = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if docker {
        let built = Command::new("docker")
            .args([
                "build",
                "--quiet",
                "--tag",
                "kassa:test",
                env!("CARGO_MANIFEST_DIR"),
            ])
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );
    }
}

#[tokio::test]
async fn kassa_healthcheck_exits_zero_only_when_the_server_at_its_bind_address_answers_healthz_with_200() {
    let app = crate::helpers::TestApp::spawn().await;
    let bind = app.socket.to_string();
    let healthy =
        tokio::task::spawn_blocking(move || kassa(&["healthcheck"], &[("KASSA_SERVER_BIND", &bind)]))
            .await
            .unwrap();
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );

    // A server that answers, but not 200: unhealthy.
    let failing = Receiver::start().await;
    failing.script([Answer::status(503)]);
    let bind = failing
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let unhealthy =
        tokio::task::spawn_blocking(move || kassa(&["healthcheck"], &[("KASSA_SERVER_BIND", &bind)]))
            .await
            .unwrap();
    assert!(!unhealthy.status.success());
    assert!(String::from_utf8_lossy(&unhealthy.stderr).contains("503"));
    let asked = failing.received();
    assert_eq!(asked.len(), 1);

    // Nobody listening: unhealthy too.
    let down = Receiver::down();
    let bind = down
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let nobody =
        tokio::task::spawn_blocking(move || kassa(&["healthcheck"], &[("KASSA_SERVER_BIND", &bind)]))
            .await
            .unwrap();
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("/healthz"));
}

/// The `KEY: value` lines of the `environment:` block of compose.yaml's shared kassa
/// service (`x-kassa`), with `${NAME:?…}` replaced from `vars`.
fn compose_kassa_environment(text: &str, vars: &[(&str, &str)]) -> Vec<(String, String)> {
    let block = text
        .split("\nx-kassa:")
        .nth(1)
        .and_then(|rest| rest.split("\n  environment:\n").nth(1))
        .expect("an x-kassa service with an environment block");
    let mut env = Vec::new();
    for line in block.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with("    ") {
            break;
        }
        let (name, value) = line.trim().split_once(": ").expect("KEY: value");
        let mut value = value.trim_matches('"').to_owned();
        while let Some(start) = value.find("${") {
            let end = start + value[start..].find('}').expect("a closed ${…}");
            let var = value[start + 2..end].split(":?").next().unwrap();
            let (_, with) = vars
                .iter()
                .find(|(v, _)| *v == var)
                .unwrap_or_else(|| panic!("${{{var}}}"));
            value.replace_range(start..=end, with);
        }
        env.push((name.to_owned(), value));
    }
    env
}

#[test]
fn the_sample_compose_deployment_gives_both_instances_the_shared_database_the_load_balancers_public_url_and_only_known_settings(
) {
    let compose = std::fs::read_to_string(repo("deploy/compose.yaml")).unwrap();
    let vars = [("POSTGRES_PASSWORD", "pw"), ("KASSA_DOMAIN", "pay.example.com")];
    let env = compose_kassa_environment(&compose, &vars);
    let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"KASSA_DATABASE_URL"), "{names:?}");

    // The settings both instances run with: no unknown variable, PostgreSQL, the load
    // balancer's https address, and its network trusted for X-Forwarded-For.
    let settings = Settings::load(&ConfigSources {
        env: env.clone(),
        ..Default::default()
    })
    .expect("the compose environment loads");
    assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
    assert!(
        matches!(settings.database.target, kassa::db::DbTarget::Postgres(_)),
        "{:?}",
        settings.database.target
    );
    assert_eq!(settings.server.public_url, "https://pay.example.com");
    let subnet = compose
        .split("subnet: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("the network's subnet")
        .trim();
    let subnet: ipnet::IpNet = subnet.parse().unwrap();
    assert_eq!(settings.server.trusted_proxies, vec![subnet]);

    // Two instances of the shared service, each with a data volume of its own.
    for (service, volume) in [
        ("kassa-a", "kassa-a-data:/data"),
        ("kassa-b", "kassa-b-data:/data"),
    ] {
        let body = compose
            .split(&format!("\n  {service}:\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("service {service}"));
        let body: String = body
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(body.contains("<<: *kassa"), "{service} is the shared service");
        assert!(body.contains(volume), "{service} mounts {volume}");
    }

    // The example env file names only settings kassa reads.
    let example = std::fs::read_to_string(repo("deploy/kassa.env.example")).unwrap();
    let known: Vec<String> = keys::ALL
        .iter()
        .map(|k| format!("KASSA_{}", k.name().replace('.', "_").to_uppercase()))
        .chain(["KASSA_ADMIN_PASSWORD".to_owned()])
        .collect();
    let listed: Vec<&str> = example
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .filter_map(|l| l.split_once('=').map(|(name, _)| name))
        .filter(|name| name.starts_with("KASSA_") && !name.contains(' '))
        .collect();
    assert!(listed.len() >= 5, "{listed:?}");
    for name in listed {
        assert!(known.iter().any(|k| k == name), "{name} is not a setting");
    }

    // The load balancer sends to both instances on the port the image listens on,
    // takes an unhealthy one out by /healthz, and does not buffer event streams.
    let caddy = std::fs::read_to_string(repo("deploy/Caddyfile")).unwrap();
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    assert!(dockerfile.contains("KASSA_SERVER_BIND=0.0.0.0:8080"));
    assert!(
        caddy.contains("reverse_proxy kassa-a:8080 kassa-b:8080"),
        "{caddy}"
    );
    assert!(caddy.contains("health_uri /healthz"), "{caddy}");
    assert!(caddy.contains("flush_interval -1"), "{caddy}");
    assert!(caddy.contains("{$KASSA_DOMAIN}"), "{caddy}");
}
