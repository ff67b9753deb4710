//! Static files, compiled into the binary and served from an allowlist. URLs carry a
//! content hash (`?v=`), so a matching request may be cached for a year.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use ring::digest::{digest, SHA256};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: [Asset; 4] = [
    Asset {
        name: "kassa.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/kassa.css"),
    },
    Asset {
        name: "admin.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../static/admin.css"),
    },
    Asset {
        name: "checkout.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../static/checkout.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("../../static/favicon.svg"),
    },
];

fn versions() -> &'static [String; 4] {
    static VERSIONS: OnceLock<[String; 4]> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        ASSETS.map(|a| {
            let hash = digest(&SHA256, a.bytes);
            hash.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
        })
    })
}

fn find(name: &str) -> Option<(usize, &'static Asset)> {
    ASSETS.iter().enumerate().find(|(_, a)| a.name == name)
}

/// The URL of an asset, with its content version.
pub fn url(name: &str) -> String {
    match find(name) {
        Some((i, _)) => format!("/static/{name}?v={}", versions()[i]),
        None => format!("/static/{name}"),
    }
}

/// Asset URLs the page layout needs.
pub struct AssetUrls {
    pub css: String,
    pub js: String,
    pub favicon: String,
}

impl AssetUrls {
    pub fn get() -> AssetUrls {
        AssetUrls {
            css: url("kassa.css"),
            js: url("checkout.js"),
            favicon: url("favicon.svg"),
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/static/{name}").route(web::get().to(serve)));
}

async fn serve(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let Some((i, asset)) = find(&path) else {
        return super::not_found(req).await;
    };
    let version = &versions()[i];
    let etag = format!("\"{version}\"");
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish();
    }
    let versioned =
        url::form_urlencoded::parse(req.query_string().as_bytes()).any(|(k, v)| k == "v" && v == *version);
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300"
    };
    HttpResponse::Ok()
        .content_type(asset.content_type)
        .insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ETAG, etag))
        .body(asset.bytes)
}
