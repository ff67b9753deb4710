//! The admin dashboard through the real app: sign-in and its limiter, sessions, the
//! anti-forgery tokens, the order list with its filters, pages and CSV, the order
//! page's timeline, and the actions staff take. A refusal is shown to change nothing by
//! comparing every stored row before and after.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Duration, TimeZone, Utc};
use kassa::db::{admin_users, orders};
use kassa::domain::admin::{hash_password, Role};
use kassa::domain::{Amount, Currency, NewOrder, OrderId, OutTradeNo, ProviderKind};
use kassa::providers::{PaymentFacts, TradeState};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use crate::helpers::{TestApp, ADMIN_PASSWORD};
use crate::stored;
use crate::vals;

/// A browser's worth of state for the dashboard: its cookies.
pub struct Staff<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    jar: Mutex<BTreeMap<String, String>>,
    pub language: &'static str,
}

/// The value of the first `name="csrf"` field of a page.
pub fn csrf_of(html: &str) -> String {
    let start = html
        .find("name=\"csrf\" value=\"")
        .expect("the page has a form token")
        + 19;
    html[start..].split('"').next().unwrap().to_owned()
}

/// What the page says, as `(status, headers, body)`.
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }
}

impl<'a> Staff<'a> {
    pub fn new(app: &'a TestApp) -> Staff<'a> {
        Staff {
            app,
            client: crate::helpers::http_client(),
            jar: Mutex::new(BTreeMap::new()),
            language: "en",
        }
    }

    fn keep_cookies(&self, headers: &HeaderMap) {
        let mut jar = self.jar.lock().unwrap();
        for value in headers.get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || attributes.contains("Max-Age=0") {
                jar.remove(name);
            } else {
                jar.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar.lock().unwrap().insert(name.to_owned(), value.to_owned());
    }

    fn cookie_header(&self) -> String {
        self.jar
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let response = request
            .header("cookie", self.cookie_header())
            .header("accept-language", self.language)
            .send()
            .await
            .unwrap();
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        self.keep_cookies(&headers);
        Page {
            status,
            headers,
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.send(self.client.get(self.app.url(path))).await
    }

    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.send(self.client.post(self.app.url(path)).form(fields)).await
    }

    /// Signs in through the form, as a browser would.
    pub async fn try_sign_in(&self, user: &str, password: &str) -> Page {
        let form = self.get("/admin/login").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = csrf_of(&form.body);
        self.post(
            "/admin/login",
            &[("csrf", &csrf), ("username", user), ("password", password)],
        )
        .await
    }

    pub async fn signed_in(app: &'a TestApp) -> Staff<'a> {
        Staff::signed_in_as(app, "admin", ADMIN_PASSWORD).await
    }

    pub async fn signed_in_as(app: &'a TestApp, user: &str, password: &str) -> Staff<'a> {
        let staff = Staff::new(app);
        let answer = staff.try_sign_in(user, password).await;
        assert_eq!(answer.status, 303, "signing in: {}", answer.body);
        assert!(staff.cookie("kassa_admin").is_some());
        staff
    }

    /// The session's form token, from a page that has forms.
    pub async fn csrf(&self) -> String {
        let page = self.get("/admin/orders").await;
        assert_eq!(page.status, 200, "{}", page.body);
        csrf_of(&page.body)
    }
}

/// Every stored row that an admin request could change: the order tables, plus the
/// admin's own (audit log, provider call log, sessions, limiter).
async fn all_rows(app: &TestApp) -> stored::Rows {
    let mut rows = stored::rows(app).await;
    for table in [
        "audit_log",
        "provider_calls",
        "admin_sessions",
        "login_attempts",
        "admin_users",
    ] {
        let found = app
            .db()
            .rows(&format!("SELECT * FROM {table} ORDER BY 1, 2"), vals![]);
        rows.insert(table, found.into_iter().map(stored::text_row).collect());
    }
    rows
}

fn count(app: &TestApp, sql: &str) -> i64 {
    app.db().one(sql, vals![])
}

fn audit(app: &TestApp) -> Vec<(String, String, String, Option<String>)> {
    app.db()
        .rows(
            "SELECT actor, action, outcome, reason FROM audit_log ORDER BY id",
            vals![],
        )
        .iter()
        .map(|r| (r.at(0), r.at(1), r.at(2), r.at(3)))
        .collect()
}

/// The merchant order numbers a list page shows, top to bottom.
fn listed(html: &str) -> Vec<String> {
    html.split("class=\"strong\">")
        .skip(1)
        .map(|rest| rest.split("</a>").next().unwrap().to_owned())
        .collect()
}

/// The `href` of the link with `rel`, decoded from HTML.
fn link(html: &str, rel: &str) -> Option<String> {
    let marker = format!("rel=\"{rel}\"");
    let at = html.find(&marker)?;
    let before = &html[..at];
    let start = before.rfind("href=\"")? + 6;
    Some(before[start..].split('"').next()?.replace("&#38;", "&"))
}

/// A pending order created through the API (the fake provider issues its QR code).
async fn pending(app: &TestApp, out_trade_no: &str, amount: i64) -> String {
    app.create_order(out_trade_no, amount).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn provider_says_paid(app: &TestApp, amount: i64, trade_no: &str) {
    *app.provider.query_answer.lock().unwrap() = Ok(TradeState::Paid(PaymentFacts {
        provider_trade_no: Some(trade_no.into()),
        paid_at: None,
        amount,
    }));
}

/// A paid order: the provider reports it paid when the API closes it.
async fn paid(app: &TestApp, out_trade_no: &str, amount: i64) -> String {
    let id = pending(app, out_trade_no, amount).await;
    provider_says_paid(app, amount, &format!("T-{out_trade_no}"));
    app.post(&format!("/api/v1/orders/{id}/close")).await;
    *app.provider.query_answer.lock().unwrap() = Ok(TradeState::NotPaid);
    assert_eq!(app.order(&id).await["status"], "paid");
    id
}

fn assert_page_headers(page: &Page, what: &str) {
    let h = &page.headers;
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "{what}: {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["cache-control"], "no-store", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
}

mod sign_in {
    use super::*;

    #[tokio::test]
    async fn every_admin_page_and_action_without_a_session_goes_to_sign_in_and_changes_nothing() {
        let app = TestApp::spawn().await;
        let id = pending(&app, "nosession-1", 1000).await;
        let before = all_rows(&app).await;
        let calls = app.provider.calls();
        let visitor = Staff::new(&app);

        for path in [
            "/admin",
            "/admin/",
            "/admin/orders",
            "/admin/orders?status=paid&q=x",
            "/admin/orders.csv",
            &format!("/admin/orders/{id}"),
            "/admin/no/such/page",
        ] {
            let page = visitor.get(path).await;
            assert_eq!(page.status, 303, "{path}");
            let location = page.location();
            assert!(location.starts_with("/admin/login?next="), "{path} -> {location}");
            let next = url::form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
                .find(|(k, _)| k == "next")
                .unwrap()
                .1
                .into_owned();
            assert_eq!(next, path, "comes back to the page asked for");
            assert_page_headers(&page, path);
        }
        // Forms, with a made-up token and a made-up session.
        visitor.set_cookie("kassa_admin", "made-up-session-id");
        for action in ["close", "refund", "query", "resend"] {
            let path = format!("/admin/orders/{id}/{action}");
            let page = visitor
                .post(
                    &path,
                    &[
                        ("csrf", "guess"),
                        ("reason", "r"),
                        ("amount", "1.00"),
                        ("webhook_id", "msg_x"),
                    ],
                )
                .await;
            assert_eq!((page.status, page.location()), (303, "/admin/login"), "{path}");
        }
        let page = visitor.post("/admin/logout", &[("csrf", "guess")]).await;
        assert_eq!((page.status, page.location()), (303, "/admin/login"));

        assert_eq!(all_rows(&app).await, before, "nothing stored changed");
        assert_eq!(app.provider.calls(), calls, "no provider was asked anything");
    }

    #[tokio::test]
    async fn a_wrong_password_and_an_unknown_user_get_the_same_answer_and_no_session() {
        let app = TestApp::spawn().await;
        let staff = Staff::new(&app);

        let wrong = staff.try_sign_in("admin", "not the password").await;
        let unknown = staff.try_sign_in("nobody", ADMIN_PASSWORD).await;

        for page in [&wrong, &unknown] {
            assert_eq!(page.status, 200);
            assert!(
                page.body.contains("Wrong user name or password."),
                "{}",
                page.body
            );
            assert!(!page.body.contains("Unknown user"), "{}", page.body);
        }
        assert!(staff.cookie("kassa_admin").is_none());
        assert_eq!(count(&app, "SELECT COUNT(*) FROM admin_sessions"), 0);
        assert!(staff.get("/admin/orders").await.status == 303);
        let refused: Vec<_> = audit(&app)
            .into_iter()
            .filter(|(_, action, outcome, _)| action == "sign_in" && outcome == "refused")
            .map(|(actor, ..)| actor)
            .collect();
        assert_eq!(refused, ["admin", "nobody"]);

        let right = staff.try_sign_in("admin", ADMIN_PASSWORD).await;
        assert_eq!(
            (right.status, right.location()),
            (303, "/admin"),
            "to the overview"
        );
        let set_cookie: Vec<&str> = right
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        let session = set_cookie
            .iter()
            .find(|c| c.starts_with("kassa_admin="))
            .expect("a session cookie");
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
            assert!(session.contains(attribute), "{session}");
        }
        assert!(!session.contains("Secure"), "plain http: {session}");
        let token = staff.cookie("kassa_admin").unwrap();
        assert_eq!(token.len(), 43, "256 random bits, base64url");
        let stored: Vec<u8> = app.db().one("SELECT id_hash FROM admin_sessions", vals![]);
        assert_eq!(stored.len(), 32, "only a SHA-256 of the id is stored");
        assert!(!String::from_utf8_lossy(&stored).contains(&token));
        assert_eq!(staff.get("/admin/orders").await.status, 200);
    }

    #[tokio::test]
    async fn after_signing_in_staff_land_on_the_overview_unless_the_form_carried_a_dashboard_page_to_go_back_to(
    ) {
        let app = TestApp::spawn().await;
        // What the form's hidden `next` carried, and where the browser is sent.
        for (next, lands) in [
            (None, "/admin"),
            (Some("/admin"), "/admin"),
            (Some("/admin/orders"), "/admin/orders"),
            (
                Some("/admin/webhooks?status=failed"),
                "/admin/webhooks?status=failed",
            ),
            (Some("https://evil.example/admin"), "/admin"),
            (Some("//evil.example/admin"), "/admin"),
            (Some("/administrator"), "/admin"),
            (Some("/admin//evil.example"), "/admin"),
            (Some("/admin/login"), "/admin"),
            (Some("/pay/ord_1"), "/admin"),
        ] {
            let staff = Staff::new(&app);
            let query = next
                .map(|n| {
                    let mut q = url::form_urlencoded::Serializer::new(String::new());
                    q.append_pair("next", n);
                    format!("?{}", q.finish())
                })
                .unwrap_or_default();
            let form = staff.get(&format!("/admin/login{query}")).await;
            assert_eq!(form.status, 200, "{next:?}: {}", form.body);
            // The form keeps only a safe destination, and the POST checks again
            // whatever a forged form sends.
            let carried = format!("name=\"next\" value=\"{}\"", lands.replace('&', "&#38;"));
            assert!(form.body.contains(&carried), "{next:?}: {}", form.body);
            let mut fields = vec![
                ("csrf", csrf_of(&form.body)),
                ("username", "admin".to_owned()),
                ("password", ADMIN_PASSWORD.to_owned()),
            ];
            if let Some(n) = next {
                fields.push(("next", n.to_owned()));
            }
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let signed = staff.post("/admin/login", &fields).await;
            assert_eq!((signed.status, signed.location()), (303, lands), "{next:?}");
            assert!(staff.cookie("kassa_admin").is_some(), "{next:?}: signed in");
            let landed = staff.get(lands).await;
            assert_eq!(landed.status, 200, "{next:?}: {}", landed.body);
        }
        assert_eq!(
            count(
                &app,
                "SELECT COUNT(*) FROM audit_log WHERE action = 'sign_in' AND outcome = 'done'"
            ),
            10
        );
    }

    #[tokio::test]
    async fn the_session_cookie_is_secure_when_the_public_url_is_https() {
        let app = TestApp::spawn_with(&[("KASSA_SERVER_PUBLIC_URL", "https://pay.example.com")]).await;
        let staff = Staff::new(&app);
        let page = staff.try_sign_in("admin", ADMIN_PASSWORD).await;
        assert_eq!(page.status, 303);
        let session = page
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with("kassa_admin="))
            .unwrap();
        assert!(session.contains("Secure"), "{session}");
    }

    #[tokio::test]
    async fn five_failed_sign_ins_a_minute_lock_the_name_with_429_and_retry_after_and_the_lockout_grows() {
        let app = TestApp::spawn().await;
        let staff = Staff::new(&app);
        for n in 1..=5 {
            let page = staff.try_sign_in("admin", &format!("guess {n}")).await;
            assert_eq!(page.status, 200, "failure {n} is answered normally");
        }

        // Locked: even the right password is not checked now.
        let locked = staff.try_sign_in("admin", ADMIN_PASSWORD).await;
        assert_eq!(locked.status, 429);
        assert_eq!(locked.headers["retry-after"], "60");
        assert!(
            locked
                .body
                .contains("Too many failed sign-ins. Try again in 60 seconds."),
            "{}",
            locked.body
        );
        assert_eq!(count(&app, "SELECT COUNT(*) FROM admin_sessions"), 0);
        app.clock.advance(Duration::seconds(30));
        let still = staff.try_sign_in("admin", ADMIN_PASSWORD).await;
        assert_eq!(
            (still.status, &still.headers["retry-after"]),
            (429, &"30".parse().unwrap())
        );

        // The lockout ends; five more failures lock for twice as long.
        app.clock.advance(Duration::seconds(31));
        for n in 1..=5 {
            assert_eq!(
                staff.try_sign_in("admin", &format!("again {n}")).await.status,
                200
            );
        }
        let longer = staff.try_sign_in("admin", ADMIN_PASSWORD).await;
        assert_eq!(longer.status, 429);
        assert_eq!(longer.headers["retry-after"], "120");

        app.clock.advance(Duration::seconds(121));
        let page = staff.try_sign_in("admin", ADMIN_PASSWORD).await;
        assert_eq!(page.status, 303, "after the lockout the right password works");
    }

    #[tokio::test]
    async fn failures_from_one_address_lock_it_whatever_user_names_it_tries() {
        let app = TestApp::spawn().await;
        let staff = Staff::new(&app);
        for name in ["root", "shop", "owner", "li", "test"] {
            assert_eq!(staff.try_sign_in(name, "x").await.status, 200);
        }
        let page = staff.try_sign_in("admin", ADMIN_PASSWORD).await;
        assert_eq!(page.status, 429, "the address is locked out for every name");
        assert!(page.headers.contains_key("retry-after"));
        assert_eq!(count(&app, "SELECT COUNT(*) FROM admin_sessions"), 0);
    }

    #[tokio::test]
    async fn the_sign_in_form_without_its_token_is_refused_with_403_and_signs_nobody_in() {
        let app = TestApp::spawn().await;
        let staff = Staff::new(&app);
        let form = staff.get("/admin/login").await;
        let csrf = csrf_of(&form.body);
        let login = |token: String| {
            let staff = &staff;
            async move {
                staff
                    .post(
                        "/admin/login",
                        &[
                            ("csrf", &token),
                            ("username", "admin"),
                            ("password", ADMIN_PASSWORD),
                        ],
                    )
                    .await
            }
        };

        let wrong = login("wrong".into()).await;
        assert_eq!(wrong.status, 403);
        assert!(wrong.body.contains("Nothing was changed"), "{}", wrong.body);
        assert_page_headers(&wrong, "403");
        // The token of another browser (the cookie is this browser's).
        let other = csrf_of(&Staff::new(&app).get("/admin/login").await.body);
        assert_eq!(login(other).await.status, 403);
        // No cookie at all (a page of another site cannot read or set it).
        staff.jar.lock().unwrap().clear();
        assert_eq!(login(csrf.clone()).await.status, 403);

        assert!(staff.cookie("kassa_admin").is_none());
        assert_eq!(count(&app, "SELECT COUNT(*) FROM admin_sessions"), 0);
        assert_eq!(
            count(&app, "SELECT COUNT(*) FROM login_attempts"),
            0,
            "not even counted"
        );
    }

    #[tokio::test]
    async fn signing_in_makes_a_new_session_id_and_signing_out_ends_it() {
        let app = TestApp::spawn().await;
        let staff = Staff::new(&app);
        staff.set_cookie("kassa_admin", "planted-by-someone-else");
        assert_eq!(staff.try_sign_in("admin", ADMIN_PASSWORD).await.status, 303);
        let first = staff.cookie("kassa_admin").unwrap();
        assert_ne!(first, "planted-by-someone-else");
        let second = Staff::signed_in(&app).await;
        assert_ne!(second.cookie("kassa_admin").unwrap(), first);
        assert_eq!(count(&app, "SELECT COUNT(*) FROM admin_sessions"), 2);

        let csrf = staff.csrf().await;
        let out = staff.post("/admin/logout", &[("csrf", &csrf)]).await;
        assert_eq!((out.status, out.location()), (303, "/admin/login"));
        assert!(staff.cookie("kassa_admin").is_none(), "the cookie is removed");
        assert_eq!(count(&app, "SELECT COUNT(*) FROM admin_sessions"), 1);
        // The old id opens nothing any more.
        staff.set_cookie("kassa_admin", &first);
        assert_eq!(staff.get("/admin/orders").await.status, 303);
        assert_eq!(
            second.get("/admin/orders").await.status,
            200,
            "the other session stays"
        );
        assert!(audit(&app)
            .iter()
            .any(|(a, action, ..)| a == "admin" && action == "sign_out"));
    }

    #[tokio::test]
    async fn a_session_unused_for_longer_than_session_idle_ends_and_use_keeps_it_alive() {
        let app = TestApp::spawn_with(&[("KASSA_ADMIN_SESSION_IDLE", "30m")]).await;
        let staff = Staff::signed_in(&app).await;

        app.clock.advance(Duration::minutes(20));
        assert_eq!(staff.get("/admin/orders").await.status, 200);
        app.clock.advance(Duration::minutes(20));
        assert_eq!(
            staff.get("/admin/orders").await.status,
            200,
            "used 20 minutes ago"
        );
        app.clock.advance(Duration::minutes(30));
        let page = staff.get("/admin/orders?status=paid").await;
        assert_eq!(page.status, 303);
        assert_eq!(
            page.location(),
            "/admin/login?next=%2Fadmin%2Forders%3Fstatus%3Dpaid&expired=1"
        );
        assert_eq!(count(&app, "SELECT COUNT(*) FROM admin_sessions"), 0, "deleted");
        let login = staff.get(page.location()).await;
        assert!(login.body.contains("Your session has ended."), "{}", login.body);
        // Signing in again goes back to the page.
        let csrf = csrf_of(&login.body);
        let again = staff
            .post(
                "/admin/login",
                &[
                    ("csrf", &csrf),
                    ("username", "admin"),
                    ("password", ADMIN_PASSWORD),
                    ("next", "/admin/orders?status=paid"),
                ],
            )
            .await;
        assert_eq!(
            (again.status, again.location()),
            (303, "/admin/orders?status=paid")
        );
    }

    #[tokio::test]
    async fn a_session_ends_at_its_absolute_lifetime_however_busy() {
        let app = TestApp::spawn_with(&[
            ("KASSA_ADMIN_SESSION_IDLE", "30m"),
            ("KASSA_ADMIN_SESSION_MAX", "1h"),
        ])
        .await;
        let staff = Staff::signed_in(&app).await;
        for _ in 0..2 {
            app.clock.advance(Duration::minutes(25));
            assert_eq!(staff.get("/admin/orders").await.status, 200);
        }
        app.clock.advance(Duration::minutes(10));
        let page = staff.get("/admin/orders").await;
        assert_eq!(page.status, 303, "an hour after sign-in, however recently used");
        assert!(page.location().ends_with("expired=1"));
    }

    #[tokio::test]
    async fn a_new_password_from_the_command_line_works_and_ends_the_users_sessions() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let app = TestApp::spawn().await;
        let staff = Staff::signed_in(&app).await;
        let passwd = |user: &str, input: &str| {
            let mut child = Command::new(env!("CARGO_BIN_EXE_kassa"))
                .env_clear()
                .envs(app.database_env())
                .args([
                    "--data-dir",
                    app.data_dir.to_str().unwrap(),
                    "admin",
                    "passwd",
                    user,
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        };

        let short = passwd("admin", "short\n");
        assert!(!short.status.success());
        assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10 characters"));
        let nobody = passwd("nobody", "a long enough password\n");
        assert!(!nobody.status.success());
        assert!(String::from_utf8_lossy(&nobody.stderr).contains("no admin user named \"nobody\""));
        assert_eq!(
            staff.get("/admin/orders").await.status,
            200,
            "refusals change nothing"
        );

        let changed = passwd("admin", "a brand new password\n");
        assert!(changed.status.success(), "{changed:?}");
        assert!(String::from_utf8_lossy(&changed.stdout).contains("password of \"admin\" changed"));

        assert_eq!(staff.get("/admin/orders").await.status, 303, "the session ended");
        let old = Staff::new(&app).try_sign_in("admin", ADMIN_PASSWORD).await;
        assert_eq!(old.status, 200, "the old password no longer works");
        Staff::signed_in_as(&app, "admin", "a brand new password").await;
        assert!(audit(&app)
            .iter()
            .any(|(actor, action, ..)| actor == "cli" && action == "user.password"));
    }

    /// Starts the binary on `dir`, waits for `/healthz`, signs in with `password` if
    /// given, stops it, and returns everything it printed.
    async fn first_start(dir: &std::path::Path, env: &[(&str, &str)], password: Option<&str>) -> String {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_kassa"))
            .env_clear()
            .envs(env.iter().copied())
            .args(["--data-dir", dir.to_str().unwrap(), "--bind", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let _ = lines_tx.send(line.unwrap());
            }
        });
        let first = lines
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("kassa prints its address");
        let address = first
            .strip_prefix("kassa listening on ")
            .expect("the first line is the address")
            .to_owned();
        let client = crate::helpers::http_client();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !client
            .get(format!("{address}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(std::time::Instant::now() < deadline, "kassa never became healthy");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if let Some(password) = password {
            let status = sign_in_over_http(&address, password).await;
            assert_eq!(status, 303, "the password signs in");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        std::iter::once(first)
            .chain(lines.try_iter())
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn sign_in_over_http(address: &str, password: &str) -> u16 {
        let client = crate::helpers::http_client();
        let form = client.get(format!("{address}/admin/login")).send().await.unwrap();
        let cookie = form
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .find(|c| c.starts_with("kassa_admin_login="))
            .unwrap();
        let csrf = csrf_of(&form.text().await.unwrap());
        client
            .post(format!("{address}/admin/login"))
            .header("cookie", cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", "admin"),
                ("password", password),
            ])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn the_first_start_prints_a_random_admin_password_once_and_it_signs_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        let env = [("PATH", path.as_str())];
        // Learn the password from a first run that does not sign in, then check it.
        let printed = first_start(dir.path(), &env, None).await;
        let line = printed
            .lines()
            .find(|l| l.starts_with("admin dashboard:"))
            .unwrap_or_else(|| panic!("the first start names the admin user: {printed}"));
        let password = line
            .split("password ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        assert_eq!(password.len(), 20, "{line}");
        assert!(printed.contains("kassa admin passwd admin"), "{printed}");

        let again = first_start(dir.path(), &env, Some(password)).await;
        assert!(!again.contains(password), "printed once only: {again}");
        assert!(!again.contains("admin dashboard:"), "{again}");
    }

    #[tokio::test]
    async fn kassa_admin_password_sets_the_first_password_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::var("PATH").unwrap_or_default();
        let env = [
            ("PATH", path.as_str()),
            ("KASSA_ADMIN_PASSWORD", "from the environment"),
        ];
        let printed = first_start(dir.path(), &env, Some("from the environment")).await;
        assert!(
            printed.contains("password from KASSA_ADMIN_PASSWORD"),
            "{printed}"
        );
        assert!(!printed.contains("from the environment"), "{printed}");
    }
}

mod guard {
    use super::*;

    #[tokio::test]
    async fn a_form_without_or_with_a_wrong_token_is_403_and_changes_nothing() {
        let app = TestApp::spawn().await;
        let open = pending(&app, "csrf-open", 1000).await;
        let done = paid(&app, "csrf-paid", 2000).await;
        let event = app.outbox(&done).await[0].event_id.clone();
        let staff = Staff::signed_in(&app).await;
        let other = Staff::signed_in(&app).await;
        let foreign = other.csrf().await;
        let before = all_rows(&app).await;
        let calls = app.provider.calls();

        let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
            (format!("/admin/orders/{open}/close"), vec![("reason", "r")]),
            (format!("/admin/orders/{open}/query"), vec![("reason", "r")]),
            (
                format!("/admin/orders/{done}/refund"),
                vec![("reason", "r"), ("amount", "1.00")],
            ),
            (
                format!("/admin/orders/{done}/resend"),
                vec![("reason", "r"), ("webhook_id", event.as_str())],
            ),
            ("/admin/logout".to_owned(), vec![]),
        ];
        for (path, fields) in &posts {
            for token in [None, Some(""), Some("forged"), Some(foreign.as_str())] {
                let mut form = fields.clone();
                if let Some(t) = token {
                    form.push(("csrf", t));
                }
                let page = staff.post(path, &form).await;
                assert_eq!(page.status, 403, "{path} with {token:?}");
                assert!(page.body.contains("Nothing was changed"), "{}", page.body);
                assert_page_headers(&page, path);
            }
        }

        assert_eq!(all_rows(&app).await, before, "nothing stored changed");
        assert_eq!(app.provider.calls(), calls, "no provider was asked anything");
        assert_eq!(staff.get("/admin/orders").await.status, 200, "still signed in");
    }

    #[tokio::test]
    async fn every_admin_page_sends_the_security_headers_and_no_inline_script_or_style() {
        let app = TestApp::spawn().await;
        let id = pending(&app, "headers-1", 1000).await;
        let staff = Staff::signed_in(&app).await;
        let pages = [
            "/admin/login",
            "/admin/orders",
            "/admin/orders?from=nonsense",
            &format!("/admin/orders/{id}"),
            "/admin/orders/ord_doesnotexist",
            "/admin/nothing-here",
            "/admin/orders.csv",
            "/admin",
        ];
        for path in pages {
            let page = staff.get(path).await;
            assert_page_headers(&page, path);
            assert!(!page.body.contains("<script"), "{path}: no script at all");
            assert!(!page.body.contains(" style="), "{path}: no inline style");
        }
        assert_eq!(staff.get("/admin/orders/ord_doesnotexist").await.status, 404);
        assert_eq!(staff.get("/admin/nothing-here").await.status, 404);
        let css = staff.get("/static/admin.css").await;
        assert_eq!(css.status, 200);
        assert!(css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css"));
    }
}

mod list {
    use super::*;

    struct Seed {
        out_trade_no: &'static str,
        created: DateTime<Utc>,
        status: &'static str,
        provider: ProviderKind,
        amount: i64,
        late: bool,
        trade_no: Option<&'static str>,
    }

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    /// Stores orders as they would be after their lives so far (straight into the
    /// database: the list only reads), returning their ids by merchant order number.
    async fn seed(app: &TestApp, seeds: Vec<Seed>) -> BTreeMap<&'static str, String> {
        let mut ids = BTreeMap::new();
        for s in &seeds {
            let order = NewOrder {
                id: OrderId::generate(),
                out_trade_no: OutTradeNo::parse(s.out_trade_no).unwrap(),
                amount: Amount::from_minor(s.amount, Currency::Cny).unwrap(),
                subject: format!("Tea for {}", s.out_trade_no),
                provider: s.provider,
                notify_url: None,
                return_url: None,
                metadata: Default::default(),
                created_at: s.created,
                expires_at: s.created + Duration::minutes(15),
            };
            ids.insert(s.out_trade_no, order.id.to_string());
            app.core
                .db
                .write(move |c| orders::insert(c, &order, Some("qr")))
                .await
                .unwrap();
        }
        for s in &seeds {
            let refunded = match s.status {
                "refunded" => s.amount,
                "partially_refunded" => s.amount / 2,
                _ => 0,
            };
            app.db()
                .execute(
                    "UPDATE orders SET status = ?2, late_payment = ?3, provider_trade_no = ?4, refunded_amount = ?5 \
                     WHERE out_trade_no = ?1",
                    vals![s.out_trade_no, s.status, s.late, s.trade_no, refunded],
                )
                .unwrap();
        }
        ids
    }

    fn six() -> Vec<Seed> {
        use ProviderKind::{Alipay, Wechat};
        let s = |out_trade_no, created, status, provider, amount, late, trade_no| Seed {
            out_trade_no,
            created,
            status,
            provider,
            amount,
            late,
            trade_no,
        };
        vec![
            // 23:30 on 1 November in Shanghai.
            s(
                "f-1",
                at(2026, 11, 1, 15, 30),
                "paid",
                Alipay,
                1000,
                false,
                Some("T-1"),
            ),
            // 00:30 on 2 November in Shanghai, still the 1st in UTC.
            s(
                "f-2",
                at(2026, 11, 1, 16, 30),
                "closed",
                Wechat,
                2500,
                false,
                None,
            ),
            s("f-3", at(2026, 11, 2, 10, 0), "pending", Alipay, 99, false, None),
            s(
                "f-4",
                at(2026, 11, 3, 1, 0),
                "paid",
                Alipay,
                5000,
                true,
                Some("T-4"),
            ),
            s(
                "f-5",
                at(2026, 11, 4, 1, 0),
                "refunded",
                Wechat,
                1200,
                false,
                Some("T-5"),
            ),
            s(
                "f-6",
                at(2026, 11, 5, 1, 0),
                "partially_refunded",
                Alipay,
                3000,
                false,
                Some("T-6"),
            ),
        ]
    }

    #[tokio::test]
    async fn each_filter_and_the_search_narrow_the_list_to_exactly_the_matching_orders() {
        let app = TestApp::spawn_with(&[("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai")]).await;
        let ids = seed(&app, six()).await;
        let staff = Staff::signed_in(&app).await;
        let cases: Vec<(String, Vec<&str>)> = vec![
            ("".into(), vec!["f-6", "f-5", "f-4", "f-3", "f-2", "f-1"]),
            ("status=paid".into(), vec!["f-4", "f-1"]),
            ("status=paid&status=closed".into(), vec!["f-4", "f-2", "f-1"]),
            (
                "status=pending&status=paid&status=closed&status=partially_refunded&status=refunded".into(),
                vec!["f-6", "f-5", "f-4", "f-3", "f-2", "f-1"],
            ),
            ("late=1".into(), vec!["f-4"]),
            ("provider=wechat".into(), vec!["f-5", "f-2"]),
            ("provider=alipay&status=paid".into(), vec!["f-4", "f-1"]),
            // Days are the merchant's: 2 November in Shanghai starts at 16:00 UTC on the 1st.
            ("from=2026-11-02&to=2026-11-02".into(), vec!["f-3", "f-2"]),
            ("to=2026-11-01".into(), vec!["f-1"]),
            ("from=2026-11-04".into(), vec!["f-6", "f-5"]),
            ("min=10&max=30".into(), vec!["f-6", "f-5", "f-2", "f-1"]),
            ("min=30".into(), vec!["f-6", "f-4"]),
            ("max=0.99".into(), vec!["f-3"]),
            ("status=paid&provider=alipay&min=20".into(), vec!["f-4"]),
            (
                "sort=created_asc".into(),
                vec!["f-1", "f-2", "f-3", "f-4", "f-5", "f-6"],
            ),
            (
                "sort=amount_desc".into(),
                vec!["f-4", "f-6", "f-2", "f-5", "f-1", "f-3"],
            ),
            ("sort=amount_asc&status=paid".into(), vec!["f-1", "f-4"]),
            (
                "sort=amount_asc&from=2026-11-02".into(),
                vec!["f-3", "f-5", "f-2", "f-6", "f-4"],
            ),
            ("q=f-3".into(), vec!["f-3"]),
            (format!("q={}", ids["f-5"]), vec!["f-5"]),
            ("q=T-4".into(), vec!["f-4"]),
            ("q=T-4&status=closed".into(), vec![]),
            ("q=nothing-like-it".into(), vec![]),
        ];
        for (query, expected) in cases {
            let page = staff.get(&format!("/admin/orders?{query}")).await;
            assert_eq!(page.status, 200, "{query}: {}", page.body);
            assert_eq!(listed(&page.body), expected, "{query}");
            if expected.is_empty() {
                assert!(page.body.contains("No orders match."), "{query}");
            }
        }

        let page = staff.get("/admin/orders?q=f-1").await;
        assert!(
            page.body.contains("2026-11-01 23:30:00 CST"),
            "times in the merchant zone"
        );
        assert!(page.body.contains("Asia/Shanghai"), "the zone is named");
        assert!(page.body.contains(">Paid</span>"), "statuses have words");
        assert!(page.body.contains("¥10.00"), "amounts are money");
        let late = staff.get("/admin/orders?late=1").await;
        assert!(late.body.contains(">Paid late</span>"));
    }

    #[tokio::test]
    async fn bad_filter_values_are_named_on_the_page_and_never_a_server_error() {
        let app = TestApp::spawn().await;
        let staff = Staff::signed_in(&app).await;
        let page = staff
            .get("/admin/orders?from=yesterday&min=abc&max=1.234&status=lost&provider=paypal&sort=random")
            .await;
        assert_eq!(page.status, 422);
        for bad in ["yesterday", "abc", "1.234", "lost", "paypal", "random"] {
            assert!(page.body.contains(&format!("“{bad}”")), "{bad}: {}", page.body);
        }
        assert!(
            page.body.contains("value=\"yesterday\""),
            "the form keeps what was typed"
        );
        let cursor = staff.get("/admin/orders?after=c12.not%20an%20id").await;
        assert_eq!(cursor.status, 422);
        assert!(cursor.body.contains("start from the first page"));
        let other_sort = staff
            .get("/admin/orders?sort=amount_desc&after=c1764000000000.ord_x")
            .await;
        assert_eq!(other_sort.status, 422, "a cursor of another sort");
        let csv = staff.get("/admin/orders.csv?min=abc").await;
        assert_eq!(csv.status, 422);
        assert!(csv.body.contains("“abc”"));
        let long = staff.get(&format!("/admin/orders?q={}", "x".repeat(65))).await;
        assert_eq!(long.status, 422);
    }

    /// Every page of the list from the first on, following "next", as
    /// `(page of order numbers, its URL)`.
    async fn walk(staff: &Staff<'_>, first: &str) -> Vec<(Vec<String>, String)> {
        let mut pages = Vec::new();
        let mut url = Some(first.to_owned());
        while let Some(u) = url {
            assert!(pages.len() < 40, "the pages never end: {u}");
            let page = staff.get(&u).await;
            assert_eq!(page.status, 200, "{u}");
            url = link(&page.body, "next");
            pages.push((listed(&page.body), u));
        }
        pages
    }

    /// 120 pending orders, three to each instant (ties are broken by id), amounts
    /// spread so that amount order differs from time order.
    async fn many(app: &TestApp) -> Vec<(String, DateTime<Utc>, i64, String)> {
        let base = at(2026, 11, 10, 0, 0);
        let mut made = Vec::new();
        for i in 0..120 {
            let created = base + Duration::minutes(i / 3);
            let amount = 100 + (i * 37) % 1000;
            let order = NewOrder {
                id: OrderId::generate(),
                out_trade_no: OutTradeNo::parse(&format!("m-{i:03}")).unwrap(),
                amount: Amount::from_minor(amount, Currency::Cny).unwrap(),
                subject: "Tea".into(),
                provider: ProviderKind::Alipay,
                notify_url: None,
                return_url: None,
                metadata: Default::default(),
                created_at: created,
                expires_at: created + Duration::minutes(15),
            };
            made.push((
                order.out_trade_no.to_string(),
                created,
                amount,
                order.id.to_string(),
            ));
            app.core
                .db
                .write(move |c| orders::insert(c, &order, None))
                .await
                .unwrap();
        }
        made
    }

    #[tokio::test]
    async fn pages_walk_forward_and_back_through_every_order_and_keep_the_filter() {
        let app = TestApp::spawn().await;
        let mut made = many(&app).await;
        // One paid order among them, which the status filter leaves out.
        app.db()
            .execute(
                "UPDATE orders SET status = 'paid' WHERE out_trade_no = 'm-060'",
                vals![],
            )
            .unwrap();
        made.retain(|m| m.0 != "m-060");
        let staff = Staff::signed_in(&app).await;

        for (sort, key) in [("created_desc", 0), ("amount_asc", 1)] {
            let mut expected = made.clone();
            if key == 0 {
                expected.sort_by(|a, b| (b.1, &b.3).cmp(&(a.1, &a.3)));
            } else {
                expected.sort_by(|a, b| (a.2, &a.3).cmp(&(b.2, &b.3)));
            }
            let expected: Vec<String> = expected.into_iter().map(|m| m.0).collect();

            let pages = walk(&staff, &format!("/admin/orders?status=pending&sort={sort}")).await;
            let sizes: Vec<usize> = pages.iter().map(|(rows, _)| rows.len()).collect();
            assert_eq!(sizes, [50, 50, 19], "{sort}");
            let all: Vec<String> = pages.iter().flat_map(|(rows, _)| rows.clone()).collect();
            assert_eq!(all, expected, "{sort}: every order once, in order");
            for (_, url) in &pages[1..] {
                assert!(
                    url.contains("status=pending") && url.contains(&format!("sort={sort}")),
                    "{url}"
                );
            }

            // Back from the last page by "previous": the same pages, in reverse.
            let mut back = Vec::new();
            let mut url = Some(pages.last().unwrap().1.clone());
            while let Some(u) = url {
                let page = staff.get(&u).await;
                url = link(&page.body, "prev");
                back.push(listed(&page.body));
            }
            back.reverse();
            let forward: Vec<Vec<String>> = pages.iter().map(|(rows, _)| rows.clone()).collect();
            assert_eq!(back, forward, "{sort}");
        }
    }

    fn csv_rows(text: &str) -> Vec<Vec<String>> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_owned).collect())
            .collect()
    }

    #[tokio::test]
    async fn the_csv_export_is_exactly_the_filtered_list_in_its_order_with_the_cli_columns() {
        let app = TestApp::spawn_with(&[("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai")]).await;
        seed(&app, six()).await;
        many(&app).await;
        let staff = Staff::signed_in(&app).await;

        for filter in [
            "",
            "status=pending&sort=amount_asc",
            "status=paid&status=closed",
            "from=2026-11-02&to=2026-11-10&sort=created_asc",
            "q=T-4",
            "min=5&max=9",
        ] {
            let list: Vec<String> = walk(&staff, &format!("/admin/orders?{filter}"))
                .await
                .into_iter()
                .flat_map(|(rows, _)| rows)
                .collect();
            let export = staff.get(&format!("/admin/orders.csv?{filter}")).await;
            assert_eq!(export.status, 200, "{filter}");
            assert!(export.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv"));
            assert!(export.headers["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment; filename=\"orders-"));
            let rows = csv_rows(&export.body);
            assert_eq!(rows[0], kassa::service::export::HEADER, "the CLI's columns");
            let exported: Vec<String> = rows[1..].iter().map(|r| r[1].clone()).collect();
            assert_eq!(exported, list, "{filter}: the CSV is the list");
        }
        let rows = csv_rows(&staff.get("/admin/orders.csv?q=f-1").await.body);
        let f1 = &rows[1];
        assert_eq!(f1[10], "2026-11-01T23:30:00+08:00", "merchant zone");
        assert_eq!(f1[11], "2026-11-01T15:30:00Z", "and UTC");
        assert_eq!((f1[3].as_str(), f1[4].as_str()), ("paid", "10.00"));
        // The export link on the list page carries the filter.
        let page = staff.get("/admin/orders?status=paid&min=1").await;
        assert!(
            page.body
                .contains("href=\"/admin/orders.csv?status=paid&#38;min=1\""),
            "{}",
            page.body
        );
    }
}

mod order_page {
    use super::*;

    #[tokio::test]
    async fn the_order_page_shows_every_field_the_checkout_link_and_the_qr_code_while_payable() {
        let app = TestApp::spawn_with(&[("KASSA_MERCHANT_TIMEZONE", "Asia/Shanghai")]).await;
        let body = json!({"out_trade_no": "show-1", "amount": 1234, "subject": "Oolong 乌龙茶",
            "provider": "alipay", "notify_url": "https://shop.example/hooks", "return_url": "https://shop.example/done",
            "metadata": {"table": 7, "note": "no sugar"}});
        let order: Value = app.post_order(&body).await.json().await.unwrap();
        let id = order["id"].as_str().unwrap();
        let staff = Staff::signed_in(&app).await;

        let page = staff.get(&format!("/admin/orders/{id}")).await;
        assert_eq!(page.status, 200);
        for text in [
            id,
            "show-1",
            "Oolong 乌龙茶",
            "¥12.34",
            "https://shop.example/hooks",
            "https://shop.example/done",
            &format!("{}/pay/{id}", app.address),
            "&#34;note&#34;: &#34;no sugar&#34;",
            "CST",
            ">Pending</span>",
            "Order created",
            "precreate",
        ] {
            assert!(page.body.contains(text), "{text}: {}", page.body);
        }
        assert!(page.body.contains("<svg"), "the QR code while payable");
        assert!(page.body.contains("id=\"close-form\"") && page.body.contains("id=\"query-form\""));
        assert!(!page.body.contains("id=\"refund-form\""), "nothing to refund yet");

        app.clock.advance(Duration::minutes(16));
        let expired = staff.get(&format!("/admin/orders/{id}")).await;
        assert!(
            !expired.body.contains("<svg"),
            "no QR code once it cannot be paid"
        );
        let zh = Staff::signed_in(&app).await;
        let mut zh = zh;
        zh.language = "zh-CN";
        let chinese = zh.get(&format!("/admin/orders/{id}")).await;
        assert!(chinese.body.contains("<html lang=\"zh-CN\">"));
        assert!(chinese.body.contains("时间线") && chinese.body.contains("待支付"));
        let switched = zh.get(&format!("/admin/orders/{id}?lang=en")).await;
        assert!(switched.body.contains("<html lang=\"en\">"));
        assert_eq!(
            zh.cookie("kassa_lang").as_deref(),
            Some("en"),
            "the choice is remembered"
        );
    }

    #[tokio::test]
    async fn closing_asks_the_provider_first_and_records_the_admin_as_actor_with_the_reason() {
        let app = TestApp::spawn().await;
        let id = pending(&app, "close-1", 1000).await;
        let staff = Staff::signed_in(&app).await;
        let csrf = staff.csrf().await;

        let answer = staff
            .post(
                &format!("/admin/orders/{id}/close"),
                &[("csrf", &csrf), ("reason", "customer cancelled by phone")],
            )
            .await;
        assert_eq!(answer.status, 303);
        assert_eq!(
            answer.location(),
            format!("/admin/orders/{id}?done=closed#notice")
        );

        let [_, queries, closes, ..] = app.provider.calls();
        assert_eq!((queries, closes), (1, 1), "queried, then closed at the provider");
        assert_eq!(app.order(&id).await["status"], "closed");
        let last = app.events(&id).await.last().unwrap().clone();
        assert_eq!(
            (&last["source"], &last["actor"], &last["detail"], &last["outcome"]),
            (
                &json!("admin"),
                &json!("admin"),
                &json!("customer cancelled by phone"),
                &json!("applied")
            )
        );
        assert!(audit(&app).contains(&(
            "admin".into(),
            "order.close".into(),
            "done".into(),
            Some("customer cancelled by phone".into())
        )));
        let page = staff.get(answer.location()).await;
        for text in [
            "The order was closed.",
            "Admin action · order.close",
            "Call to the provider · Alipay query",
            "Call to the provider · Alipay close",
            "Status changed: Pending → Closed",
            "customer cancelled by phone",
        ] {
            assert!(page.body.contains(text), "{text}");
        }
        // In time order: the admin's action, the provider calls, the change.
        let at = |t: &str| page.body.find(t).unwrap();
        assert!(at("Order created") < at("Admin action · order.close"));
        assert!(at("Admin action · order.close") < at("Alipay query"));
        assert!(at("Alipay query") < at("Alipay close"));
        assert!(at("Alipay close") < at("Status changed: Pending → Closed"));
    }

    #[tokio::test]
    async fn querying_the_provider_turns_a_lost_notification_into_paid_with_the_admin_as_actor() {
        let app = TestApp::spawn().await;
        let id = pending(&app, "lost-1", 1500).await;
        let staff = Staff::signed_in(&app).await;
        let csrf = staff.csrf().await;
        let query = |reason: &'static str| {
            let (staff, csrf, id) = (&staff, csrf.clone(), id.clone());
            async move {
                staff
                    .post(
                        &format!("/admin/orders/{id}/query"),
                        &[("csrf", &csrf), ("reason", reason)],
                    )
                    .await
            }
        };

        // Not paid yet: nothing changes but the log of the question.
        let before = stored::rows(&app).await;
        let answer = query("customer says paid").await;
        assert_eq!(
            answer.location(),
            format!("/admin/orders/{id}?done=query_not_paid#notice")
        );
        assert_eq!(stored::rows(&app).await, before, "no order row changed");

        provider_says_paid(&app, 1500, "2026112422001400000000000001");
        let answer = query("notification lost, customer sent receipt").await;
        assert_eq!(
            answer.location(),
            format!("/admin/orders/{id}?done=query_paid#notice")
        );
        let order = app.order(&id).await;
        assert_eq!(order["status"], "paid");
        assert_eq!(order["provider_trade_no"], "2026112422001400000000000001");
        let last = app.events(&id).await.last().unwrap().clone();
        assert_eq!(
            (&last["source"], &last["actor"]),
            (&json!("provider_query"), &json!("admin"))
        );
        assert!(last["detail"]
            .as_str()
            .unwrap()
            .contains("notification lost, customer sent receipt"));
        let outbox = app.outbox(&id).await;
        assert_eq!(outbox.len(), 1, "the shop hears about it once");
        assert_eq!(outbox[0].event_type.as_str(), "order.paid");
        let page = staff.get(answer.location()).await;
        assert!(page
            .body
            .contains("The provider reports the order paid: it is now recorded as paid."));
        assert!(
            page.body
                .contains("paid ¥15.00 (trade 2026112422001400000000000001)")
                || page
                    .body
                    .contains("paid 15.00 CNY (trade 2026112422001400000000000001)")
        );
        assert!(page.body.contains("id=\"refund-form\""), "now refundable");
        assert!(!page.body.contains("id=\"query-form\"") && !page.body.contains("id=\"close-form\""));
    }

    #[tokio::test]
    async fn a_partial_refund_is_prefilled_with_what_is_left_and_shows_in_the_timeline() {
        let app = TestApp::spawn().await;
        let id = paid(&app, "refund-1", 1000).await;
        let staff = Staff::signed_in(&app).await;
        let page = staff.get(&format!("/admin/orders/{id}")).await;
        assert!(
            page.body.contains(
                "name=\"amount\" inputmode=\"decimal\" required autocomplete=\"off\" value=\"10.00\""
            ),
            "{}",
            page.body
        );
        let csrf = csrf_of(&page.body);

        let answer = staff
            .post(
                &format!("/admin/orders/{id}/refund"),
                &[("csrf", &csrf), ("amount", "3.00"), ("reason", "one cup spilled")],
            )
            .await;
        assert_eq!(
            answer.location(),
            format!("/admin/orders/{id}?done=refund_succeeded#notice")
        );
        let order = app.order(&id).await;
        assert_eq!(
            (order["status"].as_str(), order["refunded_amount"].as_i64()),
            (Some("partially_refunded"), Some(300))
        );
        let last = app.events(&id).await.last().unwrap().clone();
        assert_eq!(
            (&last["source"], &last["actor"]),
            (&json!("admin"), &json!("admin"))
        );
        let refunds: Value = app
            .get(&format!("/api/v1/orders/{id}/refunds"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(refunds["data"][0]["reason"], "one cup spilled");
        assert_eq!(refunds["data"][0]["amount"], 300);

        let page = staff.get(answer.location()).await;
        assert!(page.body.contains("The refund succeeded."));
        assert!(page.body.contains("value=\"7.00\""), "what is left now");
        assert!(page.body.contains("Status changed: Paid → Partially refunded"));
        assert!(page.body.contains("Call to the provider · Alipay refund"));
        assert!(page.body.contains("Admin action · order.refund"));
        assert!(page.body.contains("one cup spilled"));
    }

    #[tokio::test]
    async fn re_sending_a_webhook_keeps_its_webhook_id_and_starts_a_fresh_ladder() {
        let receiver = crate::receiver::Receiver::start().await;
        let app = TestApp::spawn_with(&[("KASSA_WEBHOOKS_URL", &receiver.url)]).await;
        let id = paid(&app, "resend-1", 800).await;
        let dispatcher = kassa::webhooks::dispatcher::Dispatcher::new(app.core.clone()).unwrap();
        dispatcher.try_dispatch_one(app.now()).await.unwrap();
        let delivered = app.outbox(&id).await[0].clone();
        assert_eq!(delivered.status.as_str(), "delivered");
        let staff = Staff::signed_in(&app).await;
        let page = staff.get(&format!("/admin/orders/{id}")).await;
        assert!(page.body.contains(&delivered.event_id));
        assert!(page.body.contains("HTTP 200"), "the attempt with its status");
        assert!(page.body.contains("shop says 200"), "and the response");
        let csrf = csrf_of(&page.body);

        let answer = staff
            .post(
                &format!("/admin/orders/{id}/resend"),
                &[
                    ("csrf", &csrf),
                    ("webhook_id", &delivered.event_id),
                    ("reason", "shop lost its database"),
                ],
            )
            .await;
        assert_eq!(
            answer.location(),
            format!("/admin/orders/{id}?done=resent#notice")
        );
        let again = app.outbox(&id).await[0].clone();
        assert_eq!(again.event_id, delivered.event_id, "the same webhook-id");
        assert_eq!((again.status.as_str(), again.attempts), ("pending", 0));

        // While it waits to be sent it cannot be re-sent again.
        let before = stored::rows(&app).await;
        let refused = staff
            .post(
                &format!("/admin/orders/{id}/resend"),
                &[
                    ("csrf", &csrf),
                    ("webhook_id", &delivered.event_id),
                    ("reason", "again"),
                ],
            )
            .await;
        assert_eq!(refused.status, 409);
        assert!(refused
            .body
            .contains("cannot be re-sent now. Nothing was changed."));
        assert_eq!(stored::rows(&app).await, before);

        dispatcher.try_dispatch_one(app.now()).await.unwrap();
        let received = receiver.received();
        assert_eq!(received.len(), 2);
        assert_eq!(
            received[0].headers["webhook-id"],
            received[1].headers["webhook-id"]
        );
        assert!(audit(&app)
            .iter()
            .any(|(_, action, outcome, reason)| action == "webhook.resend"
                && outcome == "done"
                && reason.as_deref() == Some(&format!("shop lost its database ({})", delivered.event_id))));
    }

    #[tokio::test]
    async fn actions_the_status_does_not_allow_are_not_offered_and_are_refused_when_posted_anyway() {
        let app = TestApp::spawn().await;
        let open = pending(&app, "deny-open", 1000).await;
        let closed = pending(&app, "deny-closed", 1000).await;
        app.close_locally(&closed).await;
        let done = paid(&app, "deny-paid", 1000).await;
        let staff = Staff::signed_in(&app).await;
        let csrf = staff.csrf().await;

        let page = staff.get(&format!("/admin/orders/{closed}")).await;
        assert!(!page.body.contains("id=\"close-form\"") && !page.body.contains("id=\"refund-form\""));
        assert!(
            page.body.contains("id=\"query-form\""),
            "a closed order may still turn out paid"
        );
        let page = staff.get(&format!("/admin/orders/{done}")).await;
        assert!(!page.body.contains("id=\"close-form\"") && !page.body.contains("id=\"query-form\""));

        let calls = app.provider.calls();
        let before = stored::rows(&app).await;
        // (form, its fields, the answer's status, what the page says)
        type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);
        let cases: Vec<Case> = vec![
            (
                format!("/admin/orders/{closed}/close"),
                vec![("reason", "r")],
                409,
                "not possible while the order is Closed",
            ),
            (
                format!("/admin/orders/{closed}/refund"),
                vec![("reason", "r"), ("amount", "1.00")],
                409,
                "not possible while the order is Closed",
            ),
            (
                format!("/admin/orders/{open}/refund"),
                vec![("reason", "r"), ("amount", "1.00")],
                409,
                "not possible while the order is Pending",
            ),
            (
                format!("/admin/orders/{done}/close"),
                vec![("reason", "r")],
                409,
                "not possible while the order is Paid",
            ),
            (
                format!("/admin/orders/{done}/query"),
                vec![("reason", "r")],
                409,
                "not possible while the order is Paid",
            ),
            (
                format!("/admin/orders/{done}/refund"),
                vec![("reason", "r"), ("amount", "10.01")],
                409,
                "exceeds what is left to refund (10.00 CNY)",
            ),
            (
                format!("/admin/orders/{done}/refund"),
                vec![("reason", "r"), ("amount", "abc")],
                422,
                "“abc” is not an amount",
            ),
            (
                format!("/admin/orders/{done}/refund"),
                vec![("reason", "r"), ("amount", "0")],
                422,
                "“0” is not an amount",
            ),
            (
                format!("/admin/orders/{done}/refund"),
                vec![("reason", " "), ("amount", "1.00")],
                422,
                "Give a reason",
            ),
            (
                format!("/admin/orders/{open}/close"),
                vec![],
                422,
                "Give a reason",
            ),
            (
                format!("/admin/orders/{done}/resend"),
                vec![("reason", "r"), ("webhook_id", "msg_nope")],
                422,
                "no such delivery",
            ),
        ];
        for (path, mut fields, status, says) in cases {
            fields.push(("csrf", &csrf));
            let page = staff.post(&path, &fields).await;
            assert_eq!(page.status, status, "{path} {fields:?}: {}", page.body);
            assert!(page.body.contains(says), "{path}: {says}");
            assert!(page.body.contains("Nothing was changed"), "{path}");
        }
        assert_eq!(
            stored::rows(&app).await,
            before,
            "no order, history, outbox or refund row changed"
        );
        assert_eq!(app.provider.calls(), calls, "no provider was asked anything");
        let refused = audit(&app)
            .into_iter()
            .filter(|(_, _, outcome, _)| outcome == "refused")
            .count();
        assert_eq!(refused, 6, "status refusals are in the audit log");
    }

    #[tokio::test]
    async fn a_viewer_is_offered_no_action_and_is_refused_when_posting_one() {
        let app = TestApp::spawn().await;
        let id = pending(&app, "viewer-1", 1000).await;
        let hash = hash_password("viewer password 1").unwrap();
        app.core
            .db
            .write(move |c| admin_users::insert(c, "li", &hash, Role::Viewer, Utc::now()))
            .await
            .unwrap();
        let viewer = Staff::signed_in_as(&app, "li", "viewer password 1").await;
        let page = viewer.get(&format!("/admin/orders/{id}")).await;
        assert!(page.body.contains("Your role can only view orders."));
        assert!(!page.body.contains("id=\"close-form\""));
        let csrf = csrf_of(&page.body);
        let before = stored::rows(&app).await;
        let calls = app.provider.calls();

        let answer = viewer
            .post(
                &format!("/admin/orders/{id}/close"),
                &[("csrf", &csrf), ("reason", "r")],
            )
            .await;
        assert_eq!(answer.status, 403);
        assert!(answer
            .body
            .contains("Your role cannot change orders. Nothing was changed."));
        assert_eq!(stored::rows(&app).await, before);
        assert_eq!(app.provider.calls(), calls);
    }

    #[tokio::test]
    async fn user_provided_text_is_escaped_on_every_page() {
        let receiver = crate::receiver::Receiver::start().await;
        receiver
            .script([crate::receiver::Answer::status(500).with_body("<script>alert('w')</script>".into())]);
        let app = TestApp::spawn_sandbox(&[
            ("KASSA_SANDBOX_TIME_SCALE", "600"),
            ("KASSA_WEBHOOKS_URL", &receiver.url),
        ])
        .await;
        let body = json!({"out_trade_no": "xss-1", "amount": 100, "provider": "alipay",
            "subject": "<script>alert('s')</script>",
            "metadata": {"note": "<script>alert('m')</script>", "<img src=x onerror=alert(1)>": 1}});
        let order: Value = app.post_order(&body).await.json().await.unwrap();
        let id = order["id"].as_str().unwrap().to_owned();
        // Paying in the sandbox wallet sends a notification whose body carries the subject.
        app.pay_in_wallet(order["qr_code"].as_str().unwrap()).await;
        app.drive_sandbox().await;
        assert_eq!(app.order(&id).await["status"], "paid");
        let dispatcher = kassa::webhooks::dispatcher::Dispatcher::new(app.core.clone()).unwrap();
        dispatcher.try_dispatch_one(app.now()).await.unwrap();
        let staff = Staff::signed_in(&app).await;
        let csrf = staff.csrf().await;
        staff
            .post(
                &format!("/admin/orders/{id}/refund"),
                &[
                    ("csrf", &csrf),
                    ("amount", "0.10"),
                    ("reason", "<script>alert('r')</script>"),
                ],
            )
            .await;

        let list = staff.get("/admin/orders").await;
        let detail = staff.get(&format!("/admin/orders/{id}")).await;
        let search = staff
            .get("/admin/orders?q=%3Cscript%3Ealert('q')%3C/script%3E")
            .await;
        let bad = staff
            .get("/admin/orders?from=%3Cscript%3Ealert('f')%3C/script%3E")
            .await;
        // A user name typed at sign-in comes back in the form.
        let login = Staff::new(&app)
            .try_sign_in("<script>alert('u')</script>", "wrong password")
            .await;
        for (name, page, probes) in [
            ("list", &list, vec!["s"]),
            ("detail", &detail, vec!["s", "m", "w", "r"]),
            ("search", &search, vec!["q"]),
            ("bad filter", &bad, vec!["f"]),
            ("sign-in", &login, vec!["u"]),
        ] {
            assert!(!page.body.contains("<script"), "{name}: a raw tag");
            assert!(!page.body.contains("<img src=x"), "{name}: a raw tag");
            for probe in probes {
                assert!(
                    page.body.contains(&format!(
                        "&#60;script&#62;alert(&#39;{probe}&#39;)&#60;/script&#62;"
                    )),
                    "{name}: probe {probe} shown escaped"
                );
            }
        }
        assert!(detail.body.contains("&#60;img src=x onerror=alert(1)&#62;"));
        assert!(
            detail.body.contains("subject = &#60;script&#62;"),
            "the notification body, decoded and escaped"
        );
    }
}
