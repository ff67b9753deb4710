//! Keeps webhooks off internal addresses at delivery time. Names are resolved by a
//! resolver that drops the whole answer when any address in it is internal, and the
//! HTTP client connects only to the addresses that resolver returned: the check and
//! the connection use the same answer, so a DNS rebinding between them cannot slip an
//! internal address through. IP literals never reach a resolver, so they are checked
//! before the request is made.

use std::error::Error as StdError;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::address::{check_ip_literal, check_literal_host, internal_kind, is_local_name, refusal};

/// How long order creation waits for DNS before leaving the check to delivery time.
pub const CREATE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// A destination refused by policy (not a network failure).
#[derive(Debug)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Refused {}

/// Resolves with the system resolver, refusing internal answers.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = lookup(host.clone()).await?;
            public_only(&host, &addrs)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The system resolver, off the runtime's threads (getaddrinfo blocks).
async fn lookup(host: String) -> Result<Vec<SocketAddr>, Box<dyn StdError + Send + Sync>> {
    let addrs = tokio::task::spawn_blocking(move || {
        (host.as_str(), 0)
            .to_socket_addrs()
            .map(Iterator::collect::<Vec<_>>)
    })
    .await??;
    Ok(addrs)
}

/// Refuses the whole answer when any address in it is internal: the client may try
/// each in turn.
fn public_only(host: &str, addrs: &[SocketAddr]) -> Result<(), Refused> {
    for a in addrs {
        if let Some(kind) = internal_kind(a.ip()) {
            return Err(Refused(refusal(host, kind, Some(a.ip()))));
        }
    }
    Ok(())
}

/// The client webhooks are sent with, and whether it may reach internal addresses.
pub struct WebhookClient {
    pub(super) http: reqwest::Client,
    allow_private: bool,
}

impl WebhookClient {
    pub fn new(builder: reqwest::ClientBuilder, allow_private: bool) -> Result<Self, String> {
        let builder = if allow_private {
            builder
        } else {
            // A proxy would be resolved instead of the destination and connect on its
            // behalf, around the check.
            builder.no_proxy().dns_resolver(std::sync::Arc::new(PublicOnly))
        };
        Ok(WebhookClient {
            http: builder.build().map_err(|e| e.to_string())?,
            allow_private,
        })
    }

    /// The refusal for a URL whose host is an internal IP literal.
    pub fn refuses_literal(&self, url: &str) -> Option<String> {
        if self.allow_private {
            return None;
        }
        check_ip_literal(url).err()
    }
}

/// The policy's refusal among a request error's causes, if that is what stopped it.
pub fn refusal_in(e: &(dyn StdError + 'static)) -> Option<String> {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<Refused>() {
            return Some(r.0.clone());
        }
        cause = c.source();
    }
    None
}

/// The check made when an order names its `notify_url`: an IP literal as it is, a
/// name by what it resolves to now. A name that does not resolve (or not in time)
/// passes unless it is `localhost`: a DNS hiccup must not stop payments, and delivery
/// checks again.
pub async fn check_destination(url: &str, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let host = match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(name)) => name,
        _ => return check_literal_host(url),
    };
    match tokio::time::timeout(CREATE_LOOKUP_TIMEOUT, lookup(host.clone())).await {
        Ok(Ok(addrs)) => public_only(&host, &addrs).map_err(|r| r.0),
        _ if is_local_name(&host) => Err(refusal(&host, "loopback", None)),
        _ => Ok(()),
    }
}
