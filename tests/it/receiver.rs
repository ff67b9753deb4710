//! A shop's webhook endpoint for tests: records every request and answers from a
//! script (status, headers, body, optional delay), then 200.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Map<String, Value>,
    pub body: String,
}

#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub delay: Duration,
    /// The body, instead of `shop says <status>`.
    pub body: Option<String>,
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            delay: Duration::ZERO,
            body: None,
        }
    }

    /// Answers only after `delay`.
    pub fn after(self, delay: Duration) -> Answer {
        Answer { delay, ..self }
    }

    pub fn with_body(self, body: String) -> Answer {
        Answer {
            body: Some(body),
            ..self
        }
    }

    pub fn with_retry_after(self, value: &str) -> Answer {
        Answer {
            retry_after: Some(value.to_owned()),
            ..self
        }
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: Vec<Answer>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

async fn receive(req: HttpRequest, body: web::Bytes, inner: web::Data<Arc<Mutex<Inner>>>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                Value::String(v.to_str().unwrap_or_default().to_owned()),
            )
        })
        .collect();
    let answer = {
        let mut guard = inner.lock().unwrap();
        guard.received.push(Received {
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        if guard.script.is_empty() {
            Answer::status(200)
        } else {
            guard.script.remove(0)
        }
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(answer.status).unwrap());
    if let Some(r) = answer.retry_after {
        response.insert_header(("retry-after", r));
    }
    let status = answer.status;
    response.body(answer.body.unwrap_or_else(|| format!("shop says {status}")))
}

/// A shop that is down: its port is bound but nobody listens, so every connection is
/// refused, and no other test can take the port before `start` brings the shop up.
pub struct Down {
    pub url: String,
    socket: tokio::net::TcpSocket,
}

impl Down {
    pub async fn start(self) -> Receiver {
        let listener = self.socket.listen(1024).unwrap().into_std().unwrap();
        Receiver::serve(listener, self.url)
    }
}

fn url_of(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}/hooks/kassa")
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = url_of(listener.local_addr().unwrap());
        Receiver::serve(listener, url)
    }

    pub fn down() -> Down {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        Down {
            url: url_of(socket.local_addr().unwrap()),
            socket,
        }
    }

    fn serve(listener: std::net::TcpListener, url: String) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let data = web::Data::new(inner.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Receiver { url, inner }
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    /// Answers 200 from now on.
    pub fn heal(&self) {
        self.inner.lock().unwrap().script.clear();
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }
}
