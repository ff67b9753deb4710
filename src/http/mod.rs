//! Every HTTP surface of kassa itself, mounted by one `configure` that production and
//! tests share. (The sandbox mounts its own routes beside these when it is on.)

pub mod admin;
pub mod api;
pub mod assets;
pub mod checkout;
pub mod error;
pub mod i18n;
pub mod notify;
pub mod ops;
pub mod qr;
pub mod slow_clients;
pub mod state;
pub mod telemetry;

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

use self::error::{ApiError, ErrorCode, Missing, PageError};
use self::state::AppState;

/// Pages allow only their own scripts and styles, and no framing.
pub const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(ops::configure)
        .configure(assets::configure)
        .configure(checkout::configure)
        .configure(notify::configure)
        .configure(admin::configure)
        .service(web::scope("/api").configure(api::configure));
}

/// Headers every response carries.
pub fn default_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
}

/// The security headers of kassa's own pages.
pub fn page_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, PAGE_CSP))
        .add((header::X_FRAME_OPTIONS, "DENY"))
}

/// What a path that matches no route gets: the 404 page for a browser, a short line
/// for anything else. (The API has its own JSON answer.)
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        PageError::not_found(Missing::Page)
            .for_request(&req)
            .error_response()
    } else {
        HttpResponse::NotFound()
            .content_type("text/plain; charset=utf-8")
            .body("404 Not Found\n")
    }
}

/// HEAD on any GET route, as RFC 9110 wants: served as the GET, the body dropped and
/// its length kept. Dropping it here rather than leaving it to actix-http, which writes
/// no body bytes for HEAD but still polls the body to its end, is what lets HEAD on an
/// event stream finish. A 405 of a route that takes GET lists HEAD in `Allow`.
pub async fn head_as_get(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let head = req.method() == Method::HEAD;
    if head {
        req.head_mut().method = Method::GET;
    }
    let mut response = next.call(req).await?;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        allow_head_with_get(response.headers_mut());
    }
    if head {
        Ok(response.map_body(|_, body| BoxBody::new(Bodiless(body.size()))))
    } else {
        Ok(response.map_into_boxed_body())
    }
}

fn allow_head_with_get(headers: &mut header::HeaderMap) {
    let Some(allow) = headers.get(header::ALLOW).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let methods: Vec<&str> = allow.split(',').map(str::trim).collect();
    if methods.contains(&"GET") && !methods.contains(&"HEAD") {
        if let Ok(value) = header::HeaderValue::from_str(&format!("{allow}, HEAD")) {
            headers.insert(header::ALLOW, value);
        }
    }
}

/// The body of a HEAD answer: none, with the length the GET's would have had when known.
struct Bodiless(BodySize);

impl MessageBody for Bodiless {
    type Error = Infallible;

    fn size(&self) -> BodySize {
        match self.0 {
            BodySize::Sized(n) => BodySize::Sized(n),
            BodySize::None | BodySize::Stream => BodySize::None,
        }
    }

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(None)
    }
}

/// actix answers a method a route lacks with an empty 405 that lists the route's
/// methods in `Allow`; the API's callers get that as a JSON error, `Allow` kept.
pub async fn method_not_allowed(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let response = next.call(req).await?;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || !response.request().path().starts_with("/api/")
    {
        return Ok(response.map_into_boxed_body());
    }
    let (request, response) = response.into_parts();
    let message = format!("{} is not allowed on {}", request.method(), request.path());
    let mut json = ApiError::new(ErrorCode::MethodNotAllowed, message).error_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        json.headers_mut().insert(header::ALLOW, allow.clone());
    }
    Ok(ServiceResponse::new(request, json))
}

/// The client's address: the socket peer, unless the peer is one of
/// `[server] trusted_proxies`; then the right-most address of `X-Forwarded-For` that is
/// not a trusted proxy (what is left of it was written by the client, who can write
/// anything there).
pub fn client_ip(req: &HttpRequest) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let trusted = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.settings.server.trusted_proxies.as_slice())
        .unwrap_or_default();
    Some(forwarded_client(
        peer,
        trusted,
        req.headers().get_all("x-forwarded-for"),
    ))
}

fn forwarded_client<'h>(
    peer: IpAddr,
    trusted: &[ipnet::IpNet],
    forwarded_for: impl Iterator<Item = &'h header::HeaderValue>,
) -> IpAddr {
    // An IPv4 client of a dual-stack socket shows as `::ffff:a.b.c.d`.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Several headers count as one list, in order.
    let hops: Vec<&str> = forwarded_for
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) if is_trusted(&ip) => client = ip,
            Some(ip) => return ip,
            // Garbage where an address belongs: the last hop that can be believed is
            // the one that passed it on.
            None => return client,
        }
    }
    client
}

/// An `X-Forwarded-For` entry: an address, some proxies add a port (`[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is case-insensitive
/// (RFC 9110 §11.1), so `BEARER` is `Bearer`.
pub fn bearer_token(value: &str) -> Option<&str> {
    value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(peer: &str, trusted: &str, header: &str) -> String {
        let trusted = (crate::config::keys::SERVER_TRUSTED_PROXIES.parse)(trusted).unwrap();
        let value = header::HeaderValue::from_str(header).unwrap();
        let values = if header.is_empty() { vec![] } else { vec![&value] };
        forwarded_client(peer.parse().unwrap(), &trusted, values.into_iter()).to_string()
    }

    #[test]
    fn the_forwarded_address_counts_only_from_a_trusted_peer_and_is_the_right_most_untrusted_one() {
        assert_eq!(client("203.0.113.9", "", "198.51.100.1"), "203.0.113.9");
        assert_eq!(client("203.0.113.9", "10.0.0.0/8", "198.51.100.1"), "203.0.113.9");
        assert_eq!(client("10.0.0.2", "10.0.0.0/8", ""), "10.0.0.2");
        assert_eq!(client("10.0.0.2", "10.0.0.0/8", "198.51.100.1"), "198.51.100.1");
        assert_eq!(
            client("10.0.0.2", "10.0.0.0/8", "6.6.6.6, 198.51.100.1, 10.1.1.1"),
            "198.51.100.1",
            "a client-written left part is skipped"
        );
        assert_eq!(client("10.0.0.2", "10.0.0.0/8", "10.3.3.3, 10.1.1.1"), "10.3.3.3");
        assert_eq!(
            client("10.0.0.2", "10.0.0.0/8", "6.6.6.6, nonsense, 10.1.1.1"),
            "10.1.1.1"
        );
        assert_eq!(
            client("::ffff:10.0.0.2", "10.0.0.2", "[2001:db8::1]:443"),
            "2001:db8::1"
        );
    }
}
