//! What WeChat's answers and notifications share on the wire: the signed headers, the
//! timestamp window, the time format, and what kassa expects of its own merchant. The
//! client and the notify endpoint both read them, so they live below both.

use chrono::{DateTime, Utc};

use super::aead::ApiV3Key;
use super::platform_keys::PlatformKeys;

/// A signed timestamp further than this from the server's clock is refused (WeChat's
/// official SDKs use the same five minutes).
pub const MAX_SKEW_SECONDS: i64 = 300;

/// What kassa expects of a notification for its own merchant.
#[derive(Clone, Copy)]
pub struct Expectations<'a> {
    pub keys: &'a PlatformKeys,
    pub apiv3: &'a ApiV3Key,
    pub mchid: &'a str,
    pub appid: &'a str,
}

/// The four headers WeChat signs its answers and notifications with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlatformHeaders {
    pub serial: Option<String>,
    pub signature: Option<String>,
    pub timestamp: Option<String>,
    pub nonce: Option<String>,
    /// `Wechatpay-Signature-Type`, when sent.
    pub signature_type: Option<String>,
}

impl PlatformHeaders {
    /// Reads them from any header map, names case-insensitively.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> PlatformHeaders {
        PlatformHeaders {
            serial: get("wechatpay-serial"),
            signature: get("wechatpay-signature"),
            timestamp: get("wechatpay-timestamp"),
            nonce: get("wechatpay-nonce"),
            signature_type: get("wechatpay-signature-type"),
        }
    }
}

/// RFC 3339 in Beijing time, as WeChat writes and expects times.
pub fn beijing_rfc3339(t: DateTime<Utc>) -> String {
    (t + chrono::Duration::hours(8))
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S+08:00")
        .to_string()
}

pub fn parse_rfc3339(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
