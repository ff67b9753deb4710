//! Keeps webhooks off internal addresses at delivery time. Names are resolved by a
//! resolver that drops the whole answer when any address in it is internal, and the
//! HTTP client connects only to the addresses that resolver returned: the check and
//! the connection use the same answer, so a DNS rebinding between them cannot slip an
//! internal address through. IP literals never reach a resolver, so they are checked
//! before the request is made. Lookups run on threads of their own, at most
//! `MAX_LOOKUPS` at once.

use std::error::Error as StdError;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::domain::address::{check_ip_literal, check_literal_host, internal_kind, is_local_name, refusal};

/// How long order creation waits for DNS before leaving the check to delivery time.
pub const CREATE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// How many system lookups may run at once. getaddrinfo cannot be cancelled: a lookup
/// given up at its timeout keeps its thread until the DNS server answers, so with a
/// slow server every further delivery would add a blocked thread.
const MAX_LOOKUPS: usize = 8;

/// The process's lookup slots: the threads they bound are the process's.
static SYSTEM_LOOKUPS: LazyLock<LookupSlots> = LazyLock::new(|| LookupSlots::new(MAX_LOOKUPS));

/// Slots for lookups on blocking threads. The thread holds its slot and frees it when
/// the lookup returns, not when its caller stops waiting for it.
#[derive(Clone)]
pub(super) struct LookupSlots {
    free: Arc<Semaphore>,
    total: usize,
}

/// Every slot is held by a lookup still running: a temporary failure, tried again.
#[derive(Debug)]
pub(super) struct Busy(usize);

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "all {} DNS lookup slots are held by lookups still running; tried again later",
            self.0
        )
    }
}

impl StdError for Busy {}

impl LookupSlots {
    pub(super) fn new(slots: usize) -> Self {
        LookupSlots {
            free: Arc::new(Semaphore::new(slots)),
            total: slots,
        }
    }

    fn spawn_holding<T: Send + 'static>(
        permit: tokio::sync::OwnedSemaphorePermit,
        lookup: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            lookup()
        })
    }

    /// Starts `lookup` on a blocking thread if a slot is free now.
    pub(super) fn try_spawn<T: Send + 'static>(
        &self,
        lookup: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<T>, Busy> {
        let permit = self
            .free
            .clone()
            .try_acquire_owned()
            .map_err(|_| Busy(self.in_flight()))?;
        Ok(Self::spawn_holding(permit, lookup))
    }

    /// Starts `lookup` on a blocking thread once a slot is free.
    async fn spawn<T: Send + 'static>(
        &self,
        lookup: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<T>, Busy> {
        // The semaphore is never closed; this only waits.
        let permit = self
            .free
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Busy(self.in_flight()))?;
        Ok(Self::spawn_holding(permit, lookup))
    }

    /// How many lookups hold a slot.
    pub(super) fn in_flight(&self) -> usize {
        self.total.saturating_sub(self.free.available_permits())
    }
}

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
struct PublicOnly(LookupSlots);

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let slots = self.0.clone();
        Box::pin(async move {
            // Not waiting for a slot: the delivery fails for now and is tried again on
            // its ladder, rather than queue behind lookups that may never end.
            let addrs = slots.try_spawn(system_lookup(host.clone()))?.await??;
            public_only(&host, &addrs)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// getaddrinfo, which blocks: for a thread of its own.
fn system_lookup(host: String) -> impl FnOnce() -> std::io::Result<Vec<SocketAddr>> + Send + 'static {
    move || {
        (host.as_str(), 0)
            .to_socket_addrs()
            .map(Iterator::collect::<Vec<_>>)
    }
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
        Self::with_lookups(builder, allow_private, SYSTEM_LOOKUPS.clone())
    }

    /// Like `new`, with lookups taking their slots from `lookups`.
    pub(super) fn with_lookups(
        builder: reqwest::ClientBuilder,
        allow_private: bool,
        lookups: LookupSlots,
    ) -> Result<Self, String> {
        let builder = if allow_private {
            builder
        } else {
            // A proxy would be resolved instead of the destination and connect on its
            // behalf, around the check.
            builder.no_proxy().dns_resolver(Arc::new(PublicOnly(lookups)))
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
    check_destination_with(url, allow_private, &SYSTEM_LOOKUPS).await
}

/// `check_destination`, with lookups taking their slots from `lookups`: the wait for a
/// slot counts against the same timeout as the lookup.
async fn check_destination_with(url: &str, allow_private: bool, lookups: &LookupSlots) -> Result<(), String> {
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
    let lookup = async {
        match lookups.spawn(system_lookup(host.clone())).await {
            Ok(running) => running.await.ok().and_then(Result::ok),
            Err(Busy(_)) => None,
        }
    };
    match tokio::time::timeout(CREATE_LOOKUP_TIMEOUT, lookup).await {
        Ok(Some(addrs)) => public_only(&host, &addrs).map_err(|r| r.0),
        _ if is_local_name(&host) => Err(refusal(&host, "loopback", None)),
        _ => Ok(()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::mpsc;

    use futures_util::FutureExt;

    use super::*;

    /// A lookup that blocks its thread until released (or its sender is dropped, so a
    /// failing test does not leave it running).
    pub(in crate::webhooks) fn blocked() -> (mpsc::Sender<()>, impl FnOnce() + Send + 'static) {
        let (release, wait) = mpsc::channel::<()>();
        (release, move || {
            let _ = wait.recv();
        })
    }

    #[tokio::test]
    async fn a_lookup_given_up_on_keeps_its_slot_until_its_thread_ends_and_no_more_than_the_slots_run_at_once(
    ) {
        let slots = LookupSlots::new(2);
        let (release_a, a) = blocked();
        let (release_b, b) = blocked();
        let a = slots.try_spawn(a).unwrap();
        let b = slots.try_spawn(b).unwrap();
        // Given up on, as a timeout does: its thread still runs and holds its slot.
        drop(a);
        assert_eq!(slots.in_flight(), 2);
        assert!(matches!(slots.try_spawn(|| ()), Err(Busy(2))));

        release_b.send(()).unwrap();
        b.await.unwrap();
        assert_eq!(slots.in_flight(), 1, "b's slot came back when its thread ended");
        let (release_c, c) = blocked();
        let c = slots.try_spawn(c).unwrap();
        assert!(matches!(slots.try_spawn(|| ()), Err(Busy(2))));

        let mut waiting = Box::pin(slots.spawn(|| 8));
        assert!((&mut waiting).now_or_never().is_none(), "no slot is free yet");
        release_a.send(()).unwrap();
        let d = waiting.await.unwrap();
        assert_eq!(
            d.await.unwrap(),
            8,
            "the abandoned lookup's slot went to the waiter"
        );
        release_c.send(()).unwrap();
        c.await.unwrap();
        assert_eq!(slots.in_flight(), 0);
    }

    #[tokio::test]
    async fn an_order_check_finding_every_lookup_slot_held_until_its_timeout_passes_a_name_and_still_refuses_localhost(
    ) {
        let slots = LookupSlots::new(1);
        let (release, held) = blocked();
        let held = slots.try_spawn(held).unwrap();

        let (public, local) = tokio::join!(
            check_destination_with("https://shop.example/hook", false, &slots),
            check_destination_with("http://localhost:8080/hook", false, &slots),
        );

        assert_eq!(public, Ok(()));
        assert!(
            local.as_ref().is_err_and(|e| e.contains("localhost")),
            "{local:?}"
        );
        assert_eq!(slots.in_flight(), 1, "the checks that gave up took no slot");
        release.send(()).unwrap();
        held.await.unwrap();
    }
}
