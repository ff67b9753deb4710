//! A small W3C WebDriver client over HTTP, driving Debian's chromedriver + headless
//! Chromium, enough for the browser tests: open pages, read text, click, switch tabs,
//! resize, screenshot.
//!
//! chromedriver runs in a process group of its own, so the browser it starts (and that
//! browser's helpers) can be killed as one when a test ends, whether it passed or
//! panicked: `Drop` ends the WebDriver session, kills the group and waits until it is
//! gone, without needing an async runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver may take to announce its port and become ready on a busy
/// machine before the test fails.
const DRIVER_START: Duration = Duration::from_secs(30);
/// How long any single WebDriver command may take before the test fails (instead of
/// hanging on a stuck driver).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a killed process group may take to disappear.
const GROUP_EXIT: Duration = Duration::from_secs(10);

pub struct Browser {
    port: u16,
    base: String,
    session: String,
    http: reqwest::Client,
    // Dropped after `Drop::drop` ended the session and in this order: the processes go
    // first, then their profile directory.
    driver: Driver,
    profile: tempfile::TempDir,
}

/// chromedriver as the leader of its own process group: Chromium and its zygote,
/// renderers and utility processes stay in that group.
struct Driver {
    child: Child,
    watchdog: Option<Child>,
}

/// A group of its own no longer receives what the test's group gets (Ctrl-C, a
/// `timeout` expiring), and a killed test runs no `Drop`. This watchdog stays in the
/// test's group, ignores those signals, and kills the browser's group once the test
/// process is gone. (dash's built-in kill cannot signal a group, hence `env kill`.)
const WATCHDOG: &str = r#"trap '' INT TERM HUP
while kill -0 "$PPID" 2>/dev/null; do sleep 1; done
env kill -KILL -- "-$1" 2>/dev/null"#;

impl Driver {
    fn pgid(&self) -> u32 {
        // `process_group(0)` makes the child's pid its group id.
        self.child.id()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.pgid());
        let killed = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if killed.is_err() {
            // Without kill(1) at least chromedriver itself goes.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let deadline = Instant::now() + GROUP_EXIT;
        while !live_group_members(self.pgid()).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Lets Chromium quit cleanly (its crash handlers exit with it); the group kill
        // in `Driver::drop` then takes whatever did not.
        delete_session(self.port, &self.session);
    }
}

/// `DELETE /session/{id}` over a plain blocking socket: `Drop` may run while a test
/// panics, inside or outside an async runtime.
fn delete_session(port: u16, session: &str) {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return;
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_ok() {
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
    }
}

/// Processes of group `pgid` that have not exited (zombies waiting to be reaped have).
fn live_group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for (pid, stat) in proc_entries("stat") {
        let stat = String::from_utf8_lossy(&stat);
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Some(after_comm) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        let in_group = fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid);
        if in_group && fields.first() != Some(&"Z") {
            members.push(pid);
        }
    }
    members
}

/// `(pid, contents of /proc/<pid>/<file>)` for every process still readable.
fn proc_entries(file: &str) -> Vec<(u32, Vec<u8>)> {
    std::fs::read_dir("/proc")
        .expect("/proc lists processes")
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let contents = std::fs::read(entry.path().join(file)).ok()?;
            Some((pid, contents))
        })
        .collect()
}

/// Running processes whose command line names `profile`: every Chromium process
/// carries `--user-data-dir=<profile>/user-data`, and its crash handlers (which leave
/// the process group) carry `--database=<profile>/config/...`.
pub fn processes_using_profile(profile: &Path) -> Vec<String> {
    let needle = profile.to_string_lossy().into_owned();
    proc_entries("cmdline")
        .into_iter()
        .filter_map(|(pid, raw)| {
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.iter()
                .any(|a| a.contains(&needle))
                .then(|| format!("{pid}: {}", args.join(" ")))
        })
        .collect()
}

/// Fails unless every process that used `profile` has exited. Crash handlers leave
/// shortly after the browser they watch, so they get a moment to do so.
pub fn assert_no_browser_left(profile: &Path) {
    let deadline = Instant::now() + GROUP_EXIT;
    let mut left = processes_using_profile(profile);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_using_profile(profile);
    }
    assert!(
        left.is_empty(),
        "browser processes outlived their test ({}):\n{}",
        profile.display(),
        left.join("\n")
    );
}

/// Starts chromedriver on a port it picks itself (`--port=0`) and reads that port from
/// its announcement, so no port is ever released and bound again by someone else.
fn start_driver(profile: &Path) -> (Driver, u16) {
    let mut child = Command::new(CHROMEDRIVER)
        .arg("--port=0")
        // Chromium keeps its crash database under the XDG config directory; inside the
        // profile it stays out of the user's home and names the profile on the crash
        // handlers' command lines.
        .env("XDG_CONFIG_HOME", profile.join("config"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let stdout = child.stdout.take().expect("chromedriver's stdout is piped");
    let mut driver = Driver {
        child,
        watchdog: None,
    };
    driver.watchdog = Some(
        Command::new("sh")
            .args(["-c", WATCHDOG, "kassa-browser-watchdog"])
            .arg(driver.pgid().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the browser watchdog starts"),
    );
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    // Keeps draining stdout for chromedriver's whole life so it never blocks on a full
    // pipe; ends when chromedriver does.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                // Nobody listens any more: keep reading, discard.
                continue;
            }
        }
    });
    let deadline = Instant::now() + DRIVER_START;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(port) = announced_port(&line) {
                    return (driver, port);
                }
                seen.push(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
                "chromedriver did not announce its port within {DRIVER_START:?}; it printed:\n{}",
                seen.join("\n")
            ),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!(
                "chromedriver exited before announcing its port; it printed:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// The port in "ChromeDriver was started successfully on port 45987."
fn announced_port(line: &str) -> Option<u16> {
    let rest = line.split("started successfully on port ").nth(1)?;
    rest.trim_end_matches('.').trim().parse().ok()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of the given window size.
    pub async fn start(width: u32, height: u32) -> Browser {
        assert!(
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
            "browser tests need Debian's chromium and chromium-driver (and fonts-noto-cjk): \
             apt-get install -y chromium chromium-driver fonts-noto-cjk"
        );
        let profile = tempfile::tempdir().unwrap();
        let (driver, port) = start_driver(profile.path());
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .unwrap();
        let deadline = Instant::now() + DRIVER_START;
        loop {
            let status = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if status.as_ref().and_then(|s| s["value"]["ready"].as_bool()) == Some(true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver on port {port} was not ready within {DRIVER_START:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--user-data-dir={}", profile.path().join("user-data").display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        let browser = Browser {
            port,
            base,
            session,
            http,
            driver,
            profile,
        };
        browser.resize(width, height).await;
        browser
    }

    /// The directory every process of this browser names on its command line.
    pub fn profile_dir(&self) -> PathBuf {
        self.profile.path().to_owned()
    }

    /// The process group chromedriver and the browser run in.
    pub fn process_group(&self) -> u32 {
        self.driver.pgid()
    }

    /// Ends the browser and fails unless none of its processes is left.
    pub fn quit(self) {
        let profile = self.profile_dir();
        let group = self.process_group();
        drop(self);
        assert_eq!(
            live_group_members(group),
            Vec::<u32>::new(),
            "process group {group} is gone"
        );
        assert_no_browser_left(&profile);
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut request = self.http.request(method, url);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let v: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(v["value"].get("error").is_none(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    /// The browser console's entries since the last call (chromedriver's log endpoint).
    pub async fn console_log(&self) -> Vec<Value> {
        self.call(reqwest::Method::POST, "/se/log", Some(json!({"type": "browser"})))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    pub async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn new_tab(&self) -> String {
        let v = self
            .call(reqwest::Method::POST, "/window/new", Some(json!({"type": "tab"})))
            .await;
        v["handle"].as_str().unwrap().to_owned()
    }

    pub async fn window(&self) -> String {
        self.call(reqwest::Method::GET, "/window", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn switch_to(&self, handle: &str) {
        self.call(reqwest::Method::POST, "/window", Some(json!({"handle": handle})))
            .await;
    }

    /// A PNG of the viewport, also written under the target directory as a test artifact.
    pub async fn screenshot(&self, name: &str) -> Vec<u8> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
        png
    }

    /// Waits until `script` (a JS expression) is truthy.
    pub async fn wait_for(&self, script: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.script(&format!("return !!({script});")).await.as_bool() == Some(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}
