//! A shop's webhook endpoint for tests: records every request and answers from a
//! script (status, headers, optional delay), then 200.

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
}

impl Answer {
    pub fn status(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            delay: Duration::ZERO,
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
    handle: actix_web::dev::ServerHandle,
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
    response.body(format!("shop says {}", answer.status))
}

impl Receiver {
    /// Listens on `port` (0: any free port).
    pub async fn start_on(port: u16) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let data = web::Data::new(inner.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", port))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hooks/kassa"),
            inner,
            handle,
        }
    }

    pub async fn start() -> Receiver {
        Receiver::start_on(0).await
    }

    pub fn port(&self) -> u16 {
        self.url
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
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

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}
