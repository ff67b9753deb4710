//! A stand-in for Alipay's OpenAPI gateway, owned by one test: an HTTP/1.1 server on
//! 127.0.0.1:0 that records every request (query string and form body, as received)
//! and answers what the test sets: a response signed with the test vectors' platform
//! key, a real HTTP status, or no answer at all until the client gives up.
//!
//! It runs on the test's own runtime (no threads of its own), so it ends with the test.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Call {
    pub query: BTreeMap<String, String>,
    pub form: BTreeMap<String, String>,
}

impl Call {
    /// A parameter from the query string or the form body.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .or_else(|| self.form.get(name))
            .map(String::as_str)
    }

    pub fn method(&self) -> &str {
        self.param("method").unwrap_or_default()
    }

    /// `biz_content`, parsed.
    pub fn biz(&self) -> Map<String, Value> {
        serde_json::from_str(self.param("biz_content").unwrap_or("{}")).expect("biz_content is JSON")
    }
}

/// What the stand-in answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `{"<method>_response": fields, "sign": …}`, signed over the exact response text.
    Signed(Value),
    /// This HTTP status with a short HTML body, as a load balancer in trouble sends.
    Status(u16),
    /// Reads the request and never answers; the connection stays open until the
    /// client closes it.
    Silence,
}

struct Inner {
    calls: Vec<Call>,
    default: Reply,
    by_method: HashMap<String, Reply>,
}

#[derive(Clone)]
pub struct GatewayStandin {
    /// The gateway URL to configure kassa with.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    /// Requests whose client hung up while waiting for an answer.
    given_up: Arc<tokio::sync::watch::Sender<usize>>,
}

fn platform_key() -> RsaKeyPair {
    let pem = std::fs::read_to_string(format!(
        "{}/tests/vectors/keys/alipay_platform_private_pkcs8.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).unwrap();
    RsaKeyPair::from_pkcs8(&der).unwrap()
}

/// Signs `inner` (the exact response object text) as Alipay does: SHA256withRSA,
/// base64.
pub fn platform_sign(inner: &str) -> String {
    let key = platform_key();
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        inner.as_bytes(),
        &mut sig,
    )
    .unwrap();
    base64::engine::general_purpose::STANDARD.encode(sig)
}

fn form(text: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

/// Reads one request: head, then `content-length` bytes of body.
async fn read_request(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let target = head.split_whitespace().nth(1)?.to_owned();
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Some((target, body))
}

impl GatewayStandin {
    /// Starts answering HTTP 503 to everything until told otherwise.
    pub async fn start() -> GatewayStandin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let standin = GatewayStandin {
            url: format!("http://127.0.0.1:{port}/gateway.do"),
            inner: Arc::new(Mutex::new(Inner {
                calls: Vec::new(),
                default: Reply::Status(503),
                by_method: HashMap::new(),
            })),
            given_up: Arc::new(tokio::sync::watch::Sender::new(0)),
        };
        let server = standin.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(server.clone().serve(stream));
            }
        });
        standin
    }

    async fn serve(self, mut stream: TcpStream) {
        let Some((target, body)) = read_request(&mut stream).await else {
            return;
        };
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let call = Call {
            query: form(query),
            form: form(&body),
        };
        let method = call.method().to_owned();
        let reply = {
            let mut inner = self.inner.lock().unwrap();
            inner.calls.push(call);
            inner.by_method.get(&method).unwrap_or(&inner.default).clone()
        };
        let (status, body) = match reply {
            Reply::Signed(fields) => {
                let inner = fields.to_string();
                let sign = platform_sign(&inner);
                let key = format!("{}_response", method.replace('.', "_"));
                (200, format!("{{\"{key}\":{inner},\"sign\":\"{sign}\"}}"))
            }
            Reply::Status(status) => (status, format!("<html><body>{status}</body></html>")),
            Reply::Silence => {
                // Whatever the client does next (it sends nothing more) ends in EOF
                // when it gives up and closes the connection.
                let mut rest = [0u8; 64];
                while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
                self.given_up.send_modify(|n| *n += 1);
                return;
            }
        };
        let response = format!(
            "HTTP/1.1 {status} Stand-in\r\ncontent-type: text/html;charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    /// The answer to every method without an answer of its own.
    pub fn answer(&self, reply: Reply) {
        let mut inner = self.inner.lock().unwrap();
        inner.default = reply;
        inner.by_method.clear();
    }

    /// The answer to one method (e.g. `alipay.trade.query`).
    pub fn answer_method(&self, method: &str, reply: Reply) {
        self.inner
            .lock()
            .unwrap()
            .by_method
            .insert(method.to_owned(), reply);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// The methods called, in order.
    pub fn methods(&self) -> Vec<String> {
        self.calls().iter().map(|c| c.method().to_owned()).collect()
    }

    /// Waits until the client has abandoned `n` unanswered requests (its timeout) and
    /// returns how many it abandoned. The client's error may reach the test before the
    /// stand-in sees the connection close, hence the wait; a minute means it never will.
    pub async fn given_up(&self, n: usize) -> usize {
        let mut seen = self.given_up.subscribe();
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(60), seen.wait_for(|k| *k >= n)).await;
        assert!(waited.is_ok(), "the client never gave up on {n} requests");
        let count = *self.given_up.borrow();
        count
    }
}
