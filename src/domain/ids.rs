//! Identifiers: kassa's own unguessable ids and the merchant's order numbers.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters of `[0-9A-Za-z]` from the operating system's CSPRNG, without
/// modulo bias (bytes >= 248 are drawn again).
pub fn random_base62(len: usize) -> String {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        // The OS RNG failing is not something a request can recover from or retry
        // around; there is no safe fallback for key material.
        #[allow(clippy::expect_used)]
        rng.fill(&mut buf).expect("operating system random source failed");
        for b in buf {
            if b < 248 && out.len() < len {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    out
}

/// Random bytes from the OS CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    #[allow(clippy::expect_used)]
    SystemRandom::new()
        .fill(&mut buf)
        .expect("operating system random source failed");
    buf
}

/// kassa's order id, also the `out_trade_no` sent to providers: `ord_` plus 24 random
/// base62 characters (143 bits), 28 characters of `[A-Za-z0-9_]` in all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an order id (at most 32 characters of A-Z, a-z, 0-9 and _)")]
pub struct InvalidOrderId(pub String);

impl OrderId {
    pub const RANDOM_CHARS: usize = 24;
    pub const MAX_LEN: usize = 32;

    pub fn generate() -> Self {
        OrderId(format!("ord_{}", random_base62(Self::RANDOM_CHARS)))
    }

    pub fn parse(text: &str) -> Result<Self, InvalidOrderId> {
        let ok = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ok {
            Ok(OrderId(text.to_owned()))
        } else {
            Err(InvalidOrderId(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for OrderId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The merchant's own order number: 1–64 characters of `[A-Za-z0-9_-]`, unique.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OutTradeNo(String);

impl OutTradeNo {
    pub const MAX_LEN: usize = 64;

    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(format!(
                "must be 1 to {} characters long, got {}",
                Self::MAX_LEN,
                text.chars().count()
            ));
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(format!(
                "may contain only letters, digits, '_' and '-', found {bad:?}"
            ));
        }
        Ok(OutTradeNo(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OutTradeNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Id of one outgoing webhook event; the Standard Webhooks `webhook-id`, stable across
/// retries. Never user-controlled and never contains a `.` (the spec forbids it).
pub fn new_event_id() -> String {
    format!("msg_{}", random_base62(24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_order_ids_have_the_promised_shape() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let id = OrderId::generate();
            let text = id.as_str();
            assert_eq!(text.len(), 28);
            assert!(text.len() <= OrderId::MAX_LEN);
            assert!(text.starts_with("ord_"));
            assert!(text[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(OrderId::parse(text).unwrap(), id);
            assert!(seen.insert(id), "ids repeat");
        }
    }

    #[test]
    fn order_id_parsing_refuses_anything_else() {
        for bad in ["", "ord-1", "ord 1", "ord_1/..", &"a".repeat(33), "ördn"] {
            assert!(OrderId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(OrderId::parse(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn out_trade_no_rules() {
        let cases: &[(&str, bool)] = &[
            ("A-1_b", true),
            ("x", true),
            ("", false),
            ("has space", false),
            ("semi;colon", false),
            ("中文", false),
        ];
        for (text, ok) in cases {
            assert_eq!(OutTradeNo::parse(text).is_ok(), *ok, "{text:?}");
        }
        assert!(OutTradeNo::parse(&"9".repeat(64)).is_ok());
        assert!(OutTradeNo::parse(&"9".repeat(65)).is_err());
    }

    #[test]
    fn random_base62_is_uniformish_and_right_length() {
        let s = random_base62(6200);
        assert_eq!(s.len(), 6200);
        let distinct: std::collections::HashSet<char> = s.chars().collect();
        assert_eq!(distinct.len(), 62);
    }
}
