//! Which addresses a webhook may go to. kassa POSTs to URLs a shop (or anyone holding
//! an API key) chooses and stores the answer, so without this check it could be used
//! to reach the host's own services, the cloud metadata endpoint or the LAN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not reachable from outside, or `None` for a public address.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if a == 0 => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_private() => "private",
        // Carrier-grade NAT (RFC 6598): the provider's side of the LAN.
        _ if a == 100 && (b & 0xc0) == 64 => "shared (CGNAT)",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        // 240/4 is reserved and never routed on the Internet.
        _ if a >= 240 => "reserved",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    // Forms that carry an IPv4 address reach that address: judge it instead.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_kind(v4);
    }
    let s = ip.segments();
    // IPv4-compatible (deprecated `::a.b.c.d`) and the NAT64 well-known prefix.
    if (s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback()) || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        let [.., hi, lo] = s;
        return v4_kind(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
    }
    // 6to4 embeds the IPv4 address right after the prefix.
    if s[0] == 0x2002 {
        return v4_kind(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    Some(match s[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        x if x & 0xffc0 == 0xfe80 => "link-local",
        // Site-local (deprecated, still routed inside some networks).
        x if x & 0xffc0 == 0xfec0 => "site-local",
        x if x & 0xfe00 == 0xfc00 => "private (unique local)",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// Names that mean this host whatever DNS says (RFC 6761).
pub fn is_local_name(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost" || host.ends_with(".localhost")
}

/// Checks what can be known of a URL's host without DNS: an IP literal or `localhost`.
/// Unparsable URLs pass (their syntax is checked elsewhere).
pub fn check_literal_host(url: &str) -> Result<(), String> {
    if let Ok(parsed) = url::Url::parse(url) {
        if let Some(url::Host::Domain(name)) = parsed.host() {
            if is_local_name(name) {
                return Err(refusal(name, "loopback", None));
            }
        }
    }
    check_ip_literal(url)
}

/// Refuses a URL whose host is an internal IP literal; names pass (a resolver that
/// filters its answers checks them when connecting).
pub fn check_ip_literal(url: &str) -> Result<(), String> {
    let ip = match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    match internal_kind(ip) {
        Some(kind) => Err(refusal(&ip.to_string(), kind, None)),
        None => Ok(()),
    }
}

/// The text a refused destination is reported with, at order creation and in the
/// attempt log.
pub fn refusal(host: &str, kind: &str, resolved: Option<IpAddr>) -> String {
    let target = match resolved {
        Some(ip) => format!("{host} resolves to {ip}, a {kind} address"),
        None => format!("{host} is a {kind} address"),
    };
    format!("{target}: webhooks only go to public addresses unless [webhooks] allow_private = true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Option<&'static str> {
        internal_kind(text.parse().unwrap())
    }

    #[test]
    fn internal_ranges_are_recognised_and_public_ones_are_not() {
        for (ip, want) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.254", "shared (CGNAT)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private (unique local)"),
            ("fc00::1", "private (unique local)"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:10.1.2.3", "private"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a00:1", "private"),
            ("2002:c0a8:101::1", "private"),
        ] {
            assert_eq!(kind(ip), Some(want), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(kind(ip), None, "{ip}");
        }
    }

    #[test]
    fn literal_hosts_and_localhost_are_refused_without_dns() {
        for url in [
            "http://127.0.0.1:9/x",
            "http://169.254.169.254/latest/meta-data/",
            "https://[::1]/hook",
            "https://[::ffff:7f00:1]/hook",
            "http://localhost:8080/",
            "http://shop.localhost./",
        ] {
            let err = check_literal_host(url).unwrap_err();
            assert!(err.contains("allow_private"), "{url}: {err}");
        }
        assert!(check_literal_host("https://shop.example.com/hook").is_ok());
        assert!(check_literal_host("https://8.8.8.8/hook").is_ok());
    }
}
