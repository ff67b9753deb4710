//! The independent implementations that sign and check what kassa must agree with:
//! PyPI python-alipay-sdk (`tests/python/alipay_oracle.py`), standardwebhooks and
//! wechatpayv3 with cryptography (`tests/python/wechat_oracle.py`), run in a virtualenv
//! the tests create on first use (under the target directory); PyPI prometheus_client
//! reads `/metrics` (`tests/python/metrics_parser.py`) in the same one. Schemathesis and
//! openapi-spec-validator get a virtualenv of their own, so this one stays small.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

const REQUIREMENTS: &str = include_str!("../python/requirements.txt");
const SCHEMATHESIS_REQUIREMENTS: &str = include_str!("../python/requirements-schemathesis.txt");
const ORACLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/alipay_oracle.py");
const WEBHOOK_ORACLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/webhook_oracle.py");
const WECHAT_ORACLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/wechat_oracle.py");
const METRICS_PARSER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/metrics_parser.py");

fn venv_python() -> &'static PathBuf {
    // A failed set-up is kept too: every later test fails at once with the same message
    // instead of running pip again.
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(|| prepare_venv("pyenv", "requirements.txt", REQUIREMENTS)) {
        Ok(python) => python,
        Err(message) => panic!("{message}"),
    }
}

/// The Python of the virtualenv with schemathesis and openapi-spec-validator
/// (tests/python/requirements-schemathesis.txt).
pub fn schemathesis_python() -> &'static PathBuf {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let prepare = || {
        prepare_venv(
            "pyenv-schemathesis",
            "requirements-schemathesis.txt",
            SCHEMATHESIS_REQUIREMENTS,
        )
    };
    match PYTHON.get_or_init(prepare) {
        Ok(python) => python,
        Err(message) => panic!("{message}"),
    }
}

/// Builds the virtualenv `name` with exactly `requirements` (tests/python/`file`), once
/// per change of that file. Test runs started at the same time share the target
/// directory: a file lock keeps them from building it at once.
fn prepare_venv(name: &str, file: &str, requirements: &str) -> Result<PathBuf, String> {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join(name);
    let python = dir.join("bin/python");
    let stamp = dir.join("requirements.installed");
    let failed = |what: String| {
        format!(
            "the Python test environment ({}) could not be set up: {what}\n\
             Every test that needs it fails with this message. It needs python3 with the venv \
             module and access to PyPI for the packages pinned in tests/python/{file}.",
            dir.display()
        )
    };
    std::fs::create_dir_all(&tmp).map_err(|e| failed(format!("creating {}: {e}", tmp.display())))?;
    let lock = std::fs::File::create(tmp.join(format!("{name}.lock")))
        .map_err(|e| failed(format!("lock file: {e}")))?;
    lock.lock().map_err(|e| failed(format!("locking: {e}")))?;
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements) && python.exists() {
        return Ok(python);
    }
    let run = |program: &std::path::Path, args: &[&str]| -> Result<(), String> {
        let shown = format!("{} {}", program.display(), args.join(" "));
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| failed(format!("`{shown}` could not start: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        Err(failed(format!(
            "`{shown}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )))
    };
    let dir_text = dir.display().to_string();
    run("python3".as_ref(), &["-m", "venv", "--clear", &dir_text])?;
    let req = dir.join("requirements.txt");
    std::fs::write(&req, requirements).map_err(|e| failed(format!("writing {}: {e}", req.display())))?;
    let req_text = req.display().to_string();
    run(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "-r",
            &req_text,
        ],
    )?;
    // The pins were installed without their dependencies: a missing one shows here.
    run(&python, &["-m", "pip", "check", "--disable-pip-version-check"])?;
    std::fs::write(&stamp, requirements).map_err(|e| failed(format!("writing {}: {e}", stamp.display())))?;
    Ok(python)
}

/// Runs one oracle command.
pub fn oracle(command: Value) -> Value {
    run_script(ORACLE, command)
}

/// Runs one command of the WeChat Pay oracle (PyPI `wechatpayv3` and `cryptography`).
pub fn wechat_oracle(command: Value) -> Value {
    run_script(WECHAT_ORACLE, command)
}

/// Verifies a delivery with PyPI's standardwebhooks: Ok(event type) or Err(reason).
pub fn verify_webhook(
    secret: &str,
    headers: &serde_json::Map<String, Value>,
    body: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, String> {
    let command =
        serde_json::json!({"secret": secret, "headers": headers, "body": body, "now": now.timestamp()});
    let answer = run_script(WEBHOOK_ORACLE, command);
    if answer["ok"] == true {
        Ok(answer["type"].as_str().unwrap_or_default().to_owned())
    } else {
        Err(answer["error"].as_str().unwrap_or_default().to_owned())
    }
}

/// `/metrics` as PyPI prometheus_client's OpenMetrics parser reads it: the families, each
/// `{"name", "type", "samples": [{"name", "labels", "value"}]}`. Text the parser refuses
/// fails the test.
pub fn parse_metrics(text: &str) -> Value {
    run_script(METRICS_PARSER, serde_json::json!({ "text": text }))
}

fn run_script(script: &str, command: Value) -> Value {
    use std::io::Write;
    let mut child = Command::new(venv_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("oracle starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(command.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("oracle answers JSON")
}

pub fn key(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/vectors/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A notification signed by python-alipay-sdk with the test platform key, as the
/// oracle answers it: `body`, `verifies_as_sent`, `verifies_without_empty`.
pub fn sign_notification(params: &Value) -> Value {
    oracle(serde_json::json!({
        "op": "sign_notification",
        "private_key": key("alipay_platform_private_pkcs8.pem"),
        "public_key": key("alipay_platform_public.pem"),
        "params": params,
    }))
}

/// A notification body signed by python-alipay-sdk with the test platform key. Empty
/// values in `params` are sent but not signed.
pub fn signed_notification(params: &Value) -> String {
    sign_notification(params)["body"].as_str().unwrap().to_owned()
}

/// `signed_notification` for each of `params`, signed in one run of the oracle.
pub fn signed_notifications(params: &[Value]) -> Vec<String> {
    let answer = oracle(serde_json::json!({
        "op": "sign_notifications",
        "private_key": key("alipay_platform_private_pkcs8.pem"),
        "public_key": key("alipay_platform_public.pem"),
        "params_list": params,
    }));
    answer["bodies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_owned())
        .collect()
}

/// python-alipay-sdk's `verify()` over a notification body exactly as received, with
/// `public_key` (a key file name): whether it verifies, and the parameters it read.
pub fn verify_notification(body: &str, public_key: &str) -> (bool, serde_json::Map<String, Value>) {
    let answer = oracle(serde_json::json!({
        "op": "verify_notification", "body": body,
        "public_key": key(public_key), "any_private_key": key("alipay_app_private_pkcs8.pem"),
    }));
    (
        answer["valid"].as_bool().unwrap(),
        answer["params"].as_object().unwrap().clone(),
    )
}

/// Whether python-alipay-sdk signs `params` (all but `sign`) with the test app key to
/// exactly their `sign`: the gateway's check of a request signed with that key.
pub fn verify_request(params: &std::collections::BTreeMap<String, String>) -> bool {
    oracle(serde_json::json!({
        "op": "verify_request", "params": params,
        "app_private_key": key("alipay_app_private_pkcs8.pem"),
        "app_public_key": key("alipay_app_public.pem"),
    }))["valid"]
        .as_bool()
        .unwrap()
}
