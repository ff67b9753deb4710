//! The independent Alipay implementation (PyPI python-alipay-sdk) that signs and checks
//! what kassa must agree with, run as `tests/python/alipay_oracle.py` in a virtualenv
//! the tests create on first use (under the target directory).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

const REQUIREMENTS: &str = include_str!("../python/requirements.txt");
const ORACLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/alipay_oracle.py");
const WEBHOOK_ORACLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/webhook_oracle.py");

fn venv_python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pyenv");
        let python = dir.join("bin/python");
        let stamp = dir.join("requirements.installed");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(REQUIREMENTS) && python.exists() {
            return python;
        }
        let status = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&dir)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "python3 -m venv failed: install Python 3 with venv"
        );
        let req = dir.join("requirements.txt");
        std::fs::write(&req, REQUIREMENTS).unwrap();
        let status = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&req)
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "pip install of tests/python/requirements.txt failed"
        );
        std::fs::write(&stamp, REQUIREMENTS).unwrap();
        python
    })
}

/// Runs one oracle command.
pub fn oracle(command: Value) -> Value {
    run_script(ORACLE, command)
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

/// A notification body signed by python-alipay-sdk with the test platform key.
pub fn signed_notification(params: &Value) -> String {
    let answer = oracle(serde_json::json!({
        "op": "sign_notification",
        "private_key": key("alipay_platform_private_pkcs8.pem"),
        "public_key": key("alipay_platform_public.pem"),
        "params": params,
    }));
    answer["body"].as_str().unwrap().to_owned()
}
