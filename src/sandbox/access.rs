//! Who may drive the sandbox. Paying through a wallet link is open (that is the
//! sandbox's job), but the fault switches can break every sandbox payment, so they
//! answer only loopback clients (behind a trusted proxy: the forwarded client) and
//! requests that carry the sandbox's own token. The wallet's forms carry an
//! anti-forgery token bound to their wallet link, so another site cannot press Pay or
//! change switches in a visitor's browser.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::hmac;

use super::Sandbox;
use crate::domain::admin::same_secret;

/// The header a script sends the sandbox token in (or `Authorization: Bearer`).
pub const TOKEN_HEADER: &str = "x-sandbox-token";
/// The wallet form field of the sandbox token, for a browser not on loopback.
pub const TOKEN_FIELD: &str = "sandbox_token";
/// The wallet forms' anti-forgery field.
pub const CSRF_FIELD: &str = "csrf";

/// True when the client is on loopback or presents the sandbox token, in a header or
/// (wallet forms) as `field`.
pub fn may_drive(req: &HttpRequest, sandbox: &Sandbox, field: Option<&str>) -> bool {
    if is_local(req) {
        return true;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::http::bearer_token);
    let own = req
        .headers()
        .get(TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    [bearer, own, field.map(str::trim)]
        .into_iter()
        .flatten()
        .any(|given| same_secret(given, &sandbox.keys.token))
}

/// The headers a reverse proxy names its client in.
const FORWARDING_HEADERS: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

/// A client on this machine (`http::client_ip`: behind a trusted proxy, the client the
/// proxy names). A loopback peer that is not a trusted proxy but names a client is a
/// proxy nobody listed in `server.trusted_proxies` (nginx on the same host): the
/// request is some other machine's, so it is not local.
pub fn is_local(req: &HttpRequest) -> bool {
    if !crate::http::client_ip(req).is_some_and(|ip| ip.is_loopback()) {
        return false;
    }
    let peer_trusted = req.peer_addr().is_some_and(|peer| {
        let peer = peer.ip().to_canonical();
        req.app_data::<actix_web::web::Data<crate::http::state::AppState>>()
            .is_some_and(|state| {
                state
                    .settings
                    .server
                    .trusted_proxies
                    .iter()
                    .any(|net| net.contains(&peer))
            })
    });
    peer_trusted
        || !FORWARDING_HEADERS
            .iter()
            .any(|name| req.headers().contains_key(*name))
}

/// What a browser may do with an answer of the simulated gateways: nothing (no script,
/// no style, no frame), whatever its content type says. The Alipay gateway answers
/// `text/html`, as Alipay does and its SDKs expect, on the server's own origin.
pub const GATEWAY_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

/// Who may drive the switches and where the token is, for every refusal.
pub const WHO_MAY_DRIVE: &str = "the sandbox's fault switches answer only clients on the server's own \
    machine (loopback, not through an unlisted proxy) and requests carrying the sandbox token; the \
    token is printed when kassa starts and kept in <data_dir>/sandbox/token";

/// What a client that may not drive the switches gets: how to get in, nothing changed.
pub fn refused() -> HttpResponse {
    HttpResponse::Forbidden().json(serde_json::json!({"error": {
        "code": "sandbox_token_required",
        "message": format!("{WHO_MAY_DRIVE}: send `Authorization: Bearer <token>` or \
            `X-Sandbox-Token: <token>`. Nothing was changed."),
    }}))
}

/// The anti-forgery token of the forms on one wallet page: an HMAC of the wallet link's
/// token under the sandbox's secret, so it needs no storage and is the same for every
/// load of the page.
pub fn csrf_token(sandbox: &Sandbox, wallet_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(hmac::sign(&sandbox.csrf_key, &csrf_message(wallet_token)))
}

/// True when `given` is the anti-forgery token of this wallet link.
pub fn csrf_ok(sandbox: &Sandbox, wallet_token: &str, given: Option<&str>) -> bool {
    let Some(tag) = given.and_then(|g| URL_SAFE_NO_PAD.decode(g.trim()).ok()) else {
        return false;
    };
    hmac::verify(&sandbox.csrf_key, &csrf_message(wallet_token), &tag).is_ok()
}

fn csrf_message(wallet_token: &str) -> Vec<u8> {
    // A label of its own, so the key signs nothing else that could pass for this.
    [b"kassa sandbox wallet form\0".as_slice(), wallet_token.as_bytes()].concat()
}

pub fn csrf_key(token: &str) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes())
}

/// A wallet form refused for a missing or wrong anti-forgery token: nothing done.
pub fn forged() -> HttpResponse {
    with_page_headers(&mut HttpResponse::Forbidden())
        .content_type("text/plain; charset=utf-8")
        .body(
            "403 Forbidden: this form did not come from its wallet page (its anti-forgery token is \
             missing or wrong). Open the wallet link again and use the buttons there. Nothing was changed.\n",
        )
}

/// The wallet page's style sheet, inline so the page is one response; the page's CSP
/// allows exactly this text by its hash and no other style or script.
pub const WALLET_CSS: &str = include_str!("../../templates/sandbox/wallet.css");

/// The checkout page's policy, with the wallet's inline style allowed by its hash.
pub fn page_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let hash = ring::digest::digest(&ring::digest::SHA256, WALLET_CSS.as_bytes());
        let source = format!("style-src 'self' 'sha256-{}'", STANDARD.encode(hash.as_ref()));
        crate::http::PAGE_CSP.replacen("style-src 'self'", &source, 1)
    })
}

/// The checkout page's security headers (`default_headers` adds nosniff and the
/// referrer policy to every answer).
pub fn with_page_headers(
    response: &mut actix_web::HttpResponseBuilder,
) -> &mut actix_web::HttpResponseBuilder {
    response
        .insert_header((header::CONTENT_SECURITY_POLICY, page_csp()))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
}
