//! Clients that hold the server without finishing a request: a body sent a byte a
//! second, or many connections from one address. Every open connection costs a file
//! descriptor and a dispatcher; without a limit a handful of scripts keep the server busy
//! with nothing. (Slow request heads are cut off by actix itself:
//! `client_request_timeout`, from `server.header_timeout`.)
//!
//! - `body_deadline`, a middleware over every route: a body not fully received within
//!   `server.body_timeout` of its head ends in an error for whoever reads it, and the
//!   answer becomes `408` with the connection closed; a body its handler answered
//!   without reading to the end ends the connection after the answer, unread.
//! - `ConnectionCap`, at accept time: a client address (an IPv6 /64) holding
//!   `server.max_connections_per_address` connections gets its next one closed before a
//!   byte of it is read.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Shutdown};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Extensions, Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{web, HttpMessage, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use futures_util::Stream;

use super::error::{ApiError, ErrorCode};
use super::state::AppState;
use crate::config::ServerSettings;
use crate::domain::Clock;
use crate::metrics::Metrics;
use crate::service::rate_limit::address_key;

/// The `kassa_rate_limited_total` surface of refused connections.
pub const SURFACE: &str = "connections";

/// At most one log line this often about refused connections.
const LOG_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// Whether `error` (from reading a request body) is the body deadline's.
pub fn is_body_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

/// The request body, ending in a `TimedOut` error once `sleep` has run out before it.
/// The body itself is shared with `body_deadline`, which keeps it past the handler.
struct Deadline {
    inner: Rc<RefCell<Payload>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    expired: Rc<Cell<bool>>,
    /// Set once the body has arrived whole.
    complete: Rc<Cell<bool>>,
    finished: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let mut inner = this.inner.borrow_mut();
        match Pin::new(&mut *inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.finished = true;
                this.complete.set(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(chunk)),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => {
                    this.finished = true;
                    this.expired.set(true);
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body did not arrive in time",
                    )))))
                }
            },
        }
    }
}

/// Puts `server.body_timeout` on the request body of every route, and answers a
/// request whose body ran out of time with a `408` in the form its surface speaks
/// (whatever the handler made of the read error), closing the connection: what is
/// left of that body is not worth reading. Nor is the rest of a body a handler answered
/// without reading (`HoldingBody`).
pub async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.conn_data::<Refused>().is_some() {
        // Closed at accept; a request read from the buffer before the close took hold
        // must not reach a handler either.
        let response = HttpResponse::ServiceUnavailable().force_close().finish();
        return Ok(req.into_response(response));
    }
    let timeout = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.settings.server.body_timeout.to_std().ok());
    let expired = Rc::new(Cell::new(false));
    // No body at all counts as complete.
    let complete = Rc::new(Cell::new(true));
    let mut body = None;
    if let Some(timeout) = timeout {
        match req.take_payload() {
            Payload::None => {}
            inner => {
                complete.set(false);
                let inner = Rc::new(RefCell::new(inner));
                body = Some(inner.clone());
                req.set_payload(Payload::Stream {
                    payload: Box::pin(Deadline {
                        inner,
                        sleep: Box::pin(tokio::time::sleep(timeout)),
                        expired: expired.clone(),
                        complete: complete.clone(),
                        finished: false,
                    }),
                })
            }
        }
    }
    let response = next.call(req).await?;
    let response = if expired.get() {
        let (request, _) = response.into_parts();
        let answer = timed_out(request.path());
        ServiceResponse::new(request, answer)
    } else {
        response.map_into_boxed_body()
    };
    match body.filter(|_| !complete.get()) {
        None => Ok(response),
        // Answered before the body was whole (a refusal, a 404, a capped read, the 408
        // above): see `HoldingBody`.
        Some(request_body) => Ok(response.map_body(|_, body| {
            BoxBody::new(HoldingBody {
                body,
                _request_body: request_body,
            })
        })),
    }
}

/// A response body that keeps the request's unfinished body from being dropped until
/// the response has been sent. Dropped, a chunked request body is read and discarded
/// by actix to its end, with no timer at all, for as long as its client drips it;
/// held unread when the response starts and ends, it makes actix answer with
/// `Connection: close` and close the connection (after `client_disconnect_timeout`).
/// A body that did arrive whole meanwhile leaves the connection kept alive. (An answer
/// of `BodySize::None` is boxed without its holder; kassa sends none.)
struct HoldingBody {
    body: BoxBody,
    _request_body: Rc<RefCell<Payload>>,
}

impl MessageBody for HoldingBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

/// A `408` in the words of each surface: the API's error shape, each platform's
/// "try again" reply.
fn timed_out(path: &str) -> HttpResponse {
    const MESSAGE: &str = "the request body did not arrive in time";
    let mut response = if path.starts_with("/api/") {
        ApiError::new(ErrorCode::RequestTimeout, MESSAGE).error_response()
    } else if let Some(reply) = super::notify::resend_reply(path, StatusCode::REQUEST_TIMEOUT, MESSAGE) {
        reply
    } else {
        HttpResponse::RequestTimeout()
            .content_type("text/plain; charset=utf-8")
            .body("408 Request Timeout\n")
    };
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

/// Marks a connection closed at accept (over its address's cap).
struct Refused;

/// Open connections per client address, capped.
pub struct ConnectionCap {
    per_address: usize,
    trusted: Vec<ipnet::IpNet>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    state: Mutex<CapState>,
}

#[derive(Default)]
struct CapState {
    open: HashMap<IpAddr, usize>,
    last_logged: Option<DateTime<Utc>>,
    unlogged: u64,
}

/// One counted connection; dropped with the connection's data when it closes.
struct Slot {
    cap: Arc<ConnectionCap>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.cap.lock();
        if let Some(n) = state.open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.open.remove(&self.key);
            }
        }
    }
}

impl ConnectionCap {
    pub fn new(settings: &ServerSettings, metrics: Arc<Metrics>, clock: Arc<dyn Clock>) -> Arc<Self> {
        metrics.declare_rate_limited(SURFACE);
        Arc::new(ConnectionCap {
            per_address: settings.max_connections_per_address,
            trusted: settings.trusted_proxies.clone(),
            metrics,
            clock,
            state: Mutex::new(CapState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CapState> {
        // Nothing panics while holding it; the counts in a poisoned one are still counts.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `HttpServer::on_connect`: counts the new connection against its address, or,
    /// over the cap, shuts the socket down so that the dispatcher reads its end at once
    /// and the client sees the connection closed without an answer.
    pub fn on_connect(self: &Arc<Self>, connection: &dyn Any, data: &mut Extensions) {
        if self.per_address == 0 {
            return;
        }
        let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        let ip = peer.ip().to_canonical();
        // A reverse proxy carries many clients over its connections.
        if self.trusted.iter().any(|net| net.contains(&ip)) {
            return;
        }
        let key = address_key(ip);
        let mut state = self.lock();
        let open = state.open.entry(key).or_insert(0);
        if *open < self.per_address {
            *open += 1;
            drop(state);
            data.insert(Slot {
                cap: self.clone(),
                key,
            });
            return;
        }
        self.refused(&mut state, key);
        drop(state);
        data.insert(Refused);
        close(stream);
    }

    fn refused(&self, state: &mut CapState, key: IpAddr) {
        self.metrics.rate_limited(SURFACE);
        state.unlogged += 1;
        let now = self.clock.now();
        if state.last_logged.is_none_or(|t| now - t >= LOG_EVERY) {
            tracing::warn!(
                surface = SURFACE,
                refused = state.unlogged,
                latest = %key,
                cap = self.per_address,
                "connections closed: their address already holds server.max_connections_per_address (one line a minute at most)"
            );
            state.last_logged = Some(now);
            state.unlogged = 0;
        }
    }
}

/// Shuts both directions of the socket; the dispatcher that owns it then reads its end.
/// Through a second descriptor of the same socket, since on_connect only lends it.
fn close(stream: &actix_web::rt::net::TcpStream) {
    use std::os::fd::AsFd;
    if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
        let _ = std::net::TcpStream::from(fd).shutdown(Shutdown::Both);
    }
}
