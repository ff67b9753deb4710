//! What the real binary writes to its log: JSON lines when asked, no colour codes in a
//! file, every line of a request under that request's id, protocol garbage from clients
//! below `ERROR`, and no secret anywhere.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The binary, serving in a temp dir with its stderr (the log) going to a file.
struct Kassa {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Drop for Kassa {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kassa"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd
}

async fn start(env: &[(&str, &str)]) -> Kassa {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("kassa.log");
    let mut child = command(dir.path())
        .args(["--bind", "127.0.0.1:0"])
        // The test receiver listens on 127.0.0.1.
        .env("KASSA_WEBHOOKS_ALLOW_PRIVATE", "true")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let address = first
        .strip_prefix("kassa listening on ")
        .expect("prints its address")
        .to_owned();
    let kassa = Kassa {
        child,
        address,
        dir,
        log,
    };
    let client = crate::helpers::http_client();
    for _ in 0..100 {
        if client
            .get(format!("{}/healthz", kassa.address))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return kassa;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kassa never became healthy");
}

impl Kassa {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = command(self.dir.path()).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Stops the server and returns everything it logged.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.log).unwrap()
    }
}

async fn eventually<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    for _ in 0..300 {
        if let Some(t) = done() {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gave up waiting: {what}");
}

/// A browser's cookie jar, enough for the dashboard's forms.
struct Browser {
    client: reqwest::Client,
    jar: BTreeMap<String, String>,
    /// Every value of the dashboard's own cookies the server ever set.
    seen: Vec<String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            client: crate::helpers::http_client(),
            jar: BTreeMap::new(),
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> (u16, String) {
        let cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let response = request
            .header("cookie", cookies.join("; "))
            .header("accept-language", "en")
            .send()
            .await
            .unwrap();
        for value in response.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.jar.remove(name);
            } else {
                self.jar.insert(name.to_owned(), value.to_owned());
                // The session, the pending sign-in and the form token; not the language.
                if name.starts_with("kassa_admin") {
                    self.seen.push(value.to_owned());
                }
            }
        }
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn get(&mut self, url: String) -> (u16, String) {
        let request = self.client.get(url);
        self.send(request).await
    }

    async fn post(&mut self, url: String, form: &[(&str, &str)]) -> (u16, String) {
        let request = self.client.post(url).form(form);
        self.send(request).await
    }
}

fn between<'h>(html: &'h str, start: &str, end: &str) -> &'h str {
    html.split(start).nth(1).unwrap().split(end).next().unwrap()
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs in with the password and enrols a second factor, signs out, and signs in again
/// with password and code. Returns the TOTP secret and the recovery codes.
async fn sign_in_and_enrol(kassa: &Kassa, browser: &mut Browser, password: &str) -> Vec<String> {
    let (_, form) = browser.get(kassa.url("/admin/login")).await;
    let csrf = crate::admin::csrf_of(&form);
    let fields = [
        ("csrf", csrf.as_str()),
        ("username", "admin"),
        ("password", password),
    ];
    let (status, _) = browser.post(kassa.url("/admin/login"), &fields).await;
    assert_eq!(status, 303, "signed in");
    let (status, profile) = browser.get(kassa.url("/admin/profile?lang=en")).await;
    assert_eq!(status, 200);
    let csrf = crate::admin::csrf_of(&profile);
    let (_, begun) = browser
        .post(
            kassa.url("/admin/profile/totp?lang=en"),
            &[("csrf", &csrf), ("step", "begin")],
        )
        .await;
    let secret = between(&begun, "<code class=\"totp-secret\">", "</code>").to_owned();
    let code = crate::admin_staff::totp_code(&secret, unix_now());
    let (status, done) = browser
        .post(
            kassa.url("/admin/profile/totp?lang=en"),
            &[("csrf", &csrf), ("step", "confirm"), ("code", &code)],
        )
        .await;
    assert_eq!(status, 200, "{done}");
    let mut secrets: Vec<String> = between(&done, "<ul class=\"recovery-codes\">", "</ul>")
        .split("<code>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_owned())
        .collect();
    assert_eq!(secrets.len(), 10);
    secrets.push(secret.clone());

    let (status, _) = browser.post(kassa.url("/admin/logout"), &[("csrf", &csrf)]).await;
    assert_eq!(status, 303);
    let (_, form) = browser.get(kassa.url("/admin/login")).await;
    let csrf = crate::admin::csrf_of(&form);
    let fields = [
        ("csrf", csrf.as_str()),
        ("username", "admin"),
        ("password", password),
    ];
    let (status, _) = browser.post(kassa.url("/admin/login"), &fields).await;
    assert_eq!(status, 303);
    let (_, form) = browser.get(kassa.url("/admin/login/code")).await;
    // The next step's code: the one just used for enrolment is spent.
    let code = crate::admin_staff::totp_code(&secret, unix_now() + 30);
    let (status, _) = browser
        .post(
            kassa.url("/admin/login/code"),
            &[("csrf", &crate::admin::csrf_of(&form)), ("code", &code)],
        )
        .await;
    assert_eq!(status, 303, "signed in with the second factor");
    let (status, _) = browser.get(kassa.url("/admin/orders")).await;
    assert_eq!(status, 200, "the session opens the dashboard");
    secrets
}

/// The base64 lines of every private key in `dir`.
fn private_key_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("private") {
            let pem = std::fs::read_to_string(&path).unwrap();
            lines.extend(
                pem.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                    .map(str::to_owned),
            );
        }
    }
    lines
}

/// The signatures the platforms' notifications carried, from kassa's raw store.
fn notification_signatures(db: &Path) -> Vec<String> {
    let conn = crate::helpers::raw_connection(db);
    let mut stmt = conn
        .prepare("SELECT provider, headers, body FROM notifications")
        .unwrap();
    let rows: Vec<(String, String, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut signatures = Vec::new();
    for (provider, headers, body) in rows {
        if provider == "alipay" {
            let sign = url::form_urlencoded::parse(&body)
                .find(|(k, _)| k == "sign")
                .map(|(_, v)| v.into_owned())
                .unwrap();
            signatures.push(sign);
        } else {
            let headers: Value = serde_json::from_str(&headers).unwrap();
            signatures.push(headers["wechatpay-signature"].as_str().unwrap().to_owned());
        }
    }
    signatures
}

/// A signature or key is long base64: none may be in the log, whoever made it.
fn long_base64_runs(log: &str) -> Vec<String> {
    let mut runs = Vec::new();
    let mut current = String::new();
    for c in log.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '+' || c == '/' {
            current.push(c);
        } else {
            if current.len() >= 80 {
                runs.push(std::mem::take(&mut current));
            }
            current.clear();
        }
    }
    runs
}

#[tokio::test]
async fn a_whole_sandbox_flow_logged_at_debug_as_json_names_each_request_and_holds_no_secret() {
    let receiver = crate::receiver::Receiver::start().await;
    let password = "log-test password 5f1c9e";
    let kassa = start(&[
        ("KASSA_WEBHOOKS_URL", &receiver.url),
        ("KASSA_ADMIN_PASSWORD", password),
        ("KASSA_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,kassa=debug"),
    ])
    .await;
    let api_key = kassa.cli(&["apikey", "create", "shop"]);
    let client = crate::helpers::http_client();

    // Two orders, one per platform, paid in the sandbox's wallet; the first one under a
    // request id of the caller's.
    let mut orders = Vec::new();
    for (n, provider) in ["alipay", "wechat"].into_iter().enumerate() {
        let body = serde_json::json!({
            "out_trade_no": format!("log-{n}"), "amount": 1200 + n, "subject": "Tea", "provider": provider,
        });
        let response = client
            .post(kassa.url("/api/v1/orders"))
            .bearer_auth(&api_key)
            .header("x-request-id", format!("shop-req.{n}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(
            response.headers()["x-request-id"].to_str().unwrap(),
            format!("shop-req.{n}"),
            "a well-formed id is kept"
        );
        let order: Value = response.json().await.unwrap();
        let qr = order["qr_code"].as_str().unwrap().to_owned();
        let csrf = crate::helpers::open_wallet(&client, &qr).await;
        let paid = client
            .post(format!("{qr}/pay"))
            .form(&[("csrf", csrf)])
            .send()
            .await
            .unwrap();
        assert_eq!(paid.status(), 303, "{provider}");
        orders.push(order["id"].as_str().unwrap().to_owned());
    }
    let delivered = eventually("both webhooks delivered", || {
        let got = receiver.received();
        (got.len() >= 2).then_some(got)
    })
    .await;
    let mut browser = Browser::new();
    let mut secrets = sign_in_and_enrol(&kassa, &mut browser, password).await;

    let data = kassa.dir.path().join("data");
    let webhook_secret = kassa.cli(&["webhooks", "secret"]);
    secrets.extend([password.to_owned(), api_key.clone(), format!("Bearer {api_key}")]);
    secrets.push(webhook_secret.trim_start_matches("whsec_").to_owned());
    secrets.push(webhook_secret);
    secrets.extend(browser.seen.iter().cloned());
    secrets.extend(private_key_lines(&data.join("sandbox")));
    secrets.push(std::fs::read_to_string(data.join("sandbox/wechat_apiv3_key")).unwrap());
    let signatures = notification_signatures(&data.join("kassa.db"));
    assert_eq!(signatures.len(), 2, "one notification per platform");
    secrets.extend(signatures);
    for webhook in &delivered {
        let header = webhook.headers["webhook-signature"].as_str().unwrap();
        secrets.extend(header.split(' ').map(|s| s.trim_start_matches("v1,").to_owned()));
    }
    let log = kassa.stop();

    for secret in &secrets {
        assert!(secret.len() >= 8, "{secret:?} is too short to look for");
        assert!(!log.contains(secret.as_str()), "the log holds a secret: {secret}");
    }
    assert_eq!(
        long_base64_runs(&log),
        Vec::<String>::new(),
        "long base64 in the log"
    );

    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request_id = |line: &Value| line["span"]["request_id"].as_str().map(str::to_owned);
    let requests: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request").collect();
    for line in &requests {
        assert!(
            line["route"].as_str().is_some()
                && line["method"].as_str().is_some()
                && line["status"].as_u64().is_some()
                && line["latency_ms"].as_f64().is_some()
                && request_id(line).is_some(),
            "{line}"
        );
        assert!(
            !orders
                .iter()
                .any(|id| line["route"].as_str().unwrap().contains(id.as_str())),
            "routes are patterns, never ids: {line}"
        );
    }
    let created = lines.iter().find(|l| l["message"] == "order created").unwrap();
    assert_eq!(request_id(created).as_deref(), Some("shop-req.0"));
    assert!(requests
        .iter()
        .any(|l| request_id(l).as_deref() == Some("shop-req.0")
            && l["route"] == "/api/v1/orders"
            && l["status"] == 201));
    // Each notification's verdict is logged under the id of the request that brought it.
    let verdicts: Vec<&Value> = lines.iter().filter(|l| l["message"] == "notification").collect();
    assert_eq!(verdicts.len(), 2, "one verdict per notification");
    for verdict in verdicts {
        let id = request_id(verdict).expect("the verdict names its request");
        let route = format!("/notify/{}", verdict["provider"].as_str().unwrap());
        assert!(
            requests
                .iter()
                .any(|l| request_id(l) == Some(id.clone()) && l["route"] == route.as_str()),
            "{verdict}"
        );
    }
}

/// Writes `bytes` on a fresh connection and reads what comes back until the server
/// closes it (or goes quiet).
fn raw_exchange(address: &str, bytes: &[u8]) -> String {
    let addr = address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer and close before taking all of an oversized head.
    let _ = stream.write_all(bytes);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn protocol_garbage_from_clients_is_no_error_and_a_log_written_to_a_file_has_no_colour_codes() {
    let kassa = start(&[("RUST_LOG", "debug")]).await;
    let address = kassa.address.clone();
    let mut big = b"GET /healthz HTTP/1.1\r\nhost: kassa\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 200 * 1024));
    big.extend(b"\r\n\r\n");
    let mut many = b"GET /healthz HTTP/1.1\r\nhost: kassa\r\n".to_vec();
    for n in 0..200 {
        many.extend(format!("x-h{n}: {n}\r\n").as_bytes());
    }
    many.extend(b"\r\n");
    let garbage: Vec<Vec<u8>> = vec![
        b"HELLO THERE\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /\xff\xfe HTTP/1.1\r\nhost: kassa\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nbad header\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
        b"POST /api/v1/orders HTTP/1.1\r\nhost: kassa\r\ncontent-length: 99999999999999999999\r\n\r\n"
            .to_vec(),
        b"POST /notify/alipay HTTP/1.1\r\nhost: kassa\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        big,
        many,
    ];
    let answers = tokio::task::spawn_blocking(move || {
        garbage
            .iter()
            .map(|bytes| raw_exchange(&address, bytes))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for answer in &answers {
        let status_line = answer.lines().next().unwrap_or("");
        assert!(
            !status_line.contains(" 5"),
            "a client's garbage is never a server error: {status_line}"
        );
    }
    assert!(
        answers[0].starts_with("HTTP/1.1 400"),
        "a bad request line is a 400: {}",
        answers[0]
    );
    assert!(
        answers[7].starts_with("HTTP/1.1 431"),
        "an oversized head is a 431: {}",
        answers[7]
    );
    let client = crate::helpers::http_client();
    let served = client.get(kassa.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(served.status(), 200, "still serving");
    let log = kassa.stop();

    assert!(!log.as_bytes().contains(&0x1b), "no ANSI escape in a file");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let noted = log
        .lines()
        .filter(|l| l.contains(" DEBUG ") && l.contains("malformed request from a client"))
        .count();
    assert!(noted >= 7, "each malformed request is noted at DEBUG:\n{log}");
    let request = log
        .lines()
        .find(|l| l.contains("route=/api/openapi.json"))
        .expect("the request is logged");
    assert!(
        request.contains("request{request_id=")
            && request.contains("method=GET")
            && request.contains("status=200")
            && request.contains("latency_ms="),
        "{request}"
    );
}

#[tokio::test]
async fn probes_and_scrapes_are_logged_at_debug_and_a_head_request_under_its_own_method() {
    let kassa = start(&[("KASSA_LOG_FORMAT", "json"), ("RUST_LOG", "info,kassa=debug")]).await;
    let client = crate::helpers::http_client();
    assert_eq!(
        client.get(kassa.url("/metrics")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        client.head(kassa.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        client
            .head(kassa.url("/api/openapi.json"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let log = kassa.stop();

    let requests: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|l| l["message"] == "request")
        .collect();
    let lines_of = |method: &str, route: &str| -> Vec<&Value> {
        requests
            .iter()
            .filter(|l| l["method"] == method && l["route"] == route)
            .collect()
    };
    for (method, route, level) in [
        ("GET", "/metrics", "DEBUG"),
        ("HEAD", "/healthz", "DEBUG"),
        ("HEAD", "/api/openapi.json", "INFO"),
    ] {
        let lines = lines_of(method, route);
        assert_eq!(lines.len(), 1, "{method} {route}: {requests:#?}");
        assert_eq!(lines[0]["level"], level, "{method} {route}");
        assert_eq!(lines[0]["status"], 200, "{method} {route}");
    }
}

#[tokio::test]
async fn twenty_notifications_refused_with_429_leave_their_request_lines_at_debug_and_one_warning_not_twenty_lines_above_debug(
) {
    const REFUSED: usize = 20;
    let kassa = start(&[
        ("KASSA_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,kassa=debug"),
        ("KASSA_NOTIFICATIONS_REJECTED_RATE_LIMIT", "2/min"),
    ])
    .await;
    let client = crate::helpers::http_client();
    let mut statuses = BTreeMap::new();
    // Alipay is not enabled: each fails verification (provider_disabled).
    for _ in 0..2 + REFUSED {
        let status = client
            .post(kassa.url("/notify/alipay"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("a=1")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(statuses, BTreeMap::from([(200, 2), (429, REFUSED)]));
    let log = kassa.stop();

    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "request" && l["status"] == 429)
        .collect();
    assert_eq!(refused.len(), REFUSED, "each is still logged, for RUST_LOG=debug");
    assert!(refused.iter().all(|l| l["level"] == "DEBUG"), "{refused:#?}");
    let answered: Vec<&Value> = lines
        .iter()
        .filter(|l| l["route"] == "/notify/alipay" && l["level"] != "DEBUG")
        .collect();
    assert_eq!(answered.len(), 2, "the two answered ones only: {answered:#?}");
    let limit_lines: Vec<&Value> = lines.iter().filter(|l| l["surface"] == "notify").collect();
    assert_eq!(limit_lines.len(), 1, "{limit_lines:#?}");
    assert_eq!(
        (&limit_lines[0]["level"], &limit_lines[0]["refused"]),
        (&Value::from("WARN"), &Value::from(1)),
        "the first refusal, then none for a minute"
    );
    let above_debug = lines.iter().filter(|l| l["level"] != "DEBUG").count();
    assert!(
        above_debug < REFUSED,
        "{above_debug} lines above debug for {REFUSED} refusals: {lines:#?}"
    );
}
