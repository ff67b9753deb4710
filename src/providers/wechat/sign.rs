//! WeChat Pay API v3 signatures (`WECHATPAY2-SHA256-RSA2048`): what kassa signs on its
//! requests, how the `Authorization` header carries it, and what the platform signs on its
//! answers and notifications. All signatures are SHA256withRSA, PKCS#1 v1.5, base64.

use std::fmt::Write as _;

use ring::rand::{SecureRandom, SystemRandom};

use crate::providers::keys::{SigningKey, VerifyingKey};

/// The signature scheme, used both as the `Authorization` scheme and as the value of
/// `Wechatpay-Signature-Type`.
pub const SCHEMA: &str = "WECHATPAY2-SHA256-RSA2048";

/// Request string-to-sign: `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n`. `path_and_query`
/// is the URL without scheme and host; `body` the exact bytes sent (empty for a GET).
pub fn request_message(
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut message = Vec::with_capacity(
        method.len() + path_and_query.len() + timestamp.len() + nonce.len() + body.len() + 5,
    );
    for line in [
        method.as_bytes(),
        path_and_query.as_bytes(),
        timestamp.as_bytes(),
        nonce.as_bytes(),
        body,
    ] {
        message.extend_from_slice(line);
        message.push(b'\n');
    }
    message
}

/// Platform string-to-sign for answers and notifications: `TIMESTAMP\nNONCE\nBODY\n` over
/// the raw body bytes as received (an empty 204 body leaves the last line a lone `\n`).
pub fn platform_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    for line in [timestamp.as_bytes(), nonce.as_bytes(), body] {
        message.extend_from_slice(line);
        message.push(b'\n');
    }
    message
}

/// True when `signature_b64` is the platform's signature over `timestamp`, `nonce` and
/// `body` under `key`. Which key to use is decided by `Wechatpay-Serial`, see
/// [`super::platform_keys::PlatformKeys::verify`].
pub fn verify_platform_signature(
    key: &VerifyingKey,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
    signature_b64: &str,
) -> bool {
    key.verify_base64(&platform_message(timestamp, nonce, body), signature_b64)
}

/// The merchant side of request signing: merchant number, the serial of the merchant API
/// certificate (`serial_no`) and the merchant API private key.
#[derive(Debug)]
pub struct MerchantSigner {
    mchid: String,
    serial_no: String,
    key: SigningKey,
}

impl MerchantSigner {
    pub fn new(mchid: impl Into<String>, serial_no: impl Into<String>, key: SigningKey) -> Self {
        MerchantSigner {
            mchid: mchid.into(),
            serial_no: serial_no.into(),
            key,
        }
    }

    pub fn mchid(&self) -> &str {
        &self.mchid
    }

    /// Base64 signature of the request string-to-sign.
    pub fn sign(
        &self,
        method: &str,
        path_and_query: &str,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> String {
        let message = request_message(method, path_and_query, &timestamp.to_string(), nonce, body);
        self.key.sign_base64(&message)
    }

    /// The full `Authorization` header value for one request.
    pub fn authorization(
        &self,
        method: &str,
        path_and_query: &str,
        timestamp: i64,
        nonce: &str,
        body: &[u8],
    ) -> String {
        let signature = self.sign(method, path_and_query, timestamp, nonce, body);
        authorization_header(&self.mchid, nonce, &signature, timestamp, &self.serial_no)
    }
}

/// `Authorization` header text. The attribute order is wechatpayv3's (the vector's); WeChat
/// parses attributes by name, so any order is accepted there.
pub fn authorization_header(
    mchid: &str,
    nonce: &str,
    signature: &str,
    timestamp: i64,
    serial_no: &str,
) -> String {
    format!(
        "{SCHEMA} mchid=\"{mchid}\",nonce_str=\"{nonce}\",signature=\"{signature}\",timestamp=\"{timestamp}\",serial_no=\"{serial_no}\""
    )
}

/// The attributes of a `WECHATPAY2-SHA256-RSA2048` `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub mchid: String,
    pub nonce_str: String,
    /// Kept as sent: the signature covers these exact digits.
    pub timestamp: String,
    pub serial_no: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizationError {
    #[error("Authorization scheme is not {SCHEMA}")]
    WrongScheme,
    #[error("Authorization attributes are malformed: {0}")]
    Malformed(&'static str),
    #[error("Authorization attribute {0} appears more than once")]
    Duplicate(String),
    #[error("Authorization attribute {0} is missing")]
    Missing(&'static str),
}

impl Authorization {
    /// Parses `WECHATPAY2-SHA256-RSA2048 name="value",…`. Attributes are found by name in any
    /// order (the SDKs disagree on it); each must be quoted, present once and non-empty.
    /// Unknown attributes are ignored, as HTTP auth-params allow.
    pub fn parse(header: &str) -> Result<Authorization, AuthorizationError> {
        let header = header.trim();
        let (scheme, mut rest) = header
            .split_once([' ', '\t'])
            .ok_or(AuthorizationError::WrongScheme)?;
        // RFC 9110: auth schemes are case-insensitive.
        if !scheme.eq_ignore_ascii_case(SCHEMA) {
            return Err(AuthorizationError::WrongScheme);
        }
        const NAMES: [&str; 5] = ["mchid", "nonce_str", "timestamp", "serial_no", "signature"];
        let mut found: [Option<&str>; 5] = [None; 5];
        loop {
            rest = rest.trim_start();
            let (name, after) = rest
                .split_once('=')
                .ok_or(AuthorizationError::Malformed("expected name=\"value\""))?;
            let name = name.trim();
            if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == ',' || c == '"') {
                return Err(AuthorizationError::Malformed("bad attribute name"));
            }
            let after = after
                .trim_start()
                .strip_prefix('"')
                .ok_or(AuthorizationError::Malformed("attribute value is not quoted"))?;
            let (value, after) = after
                .split_once('"')
                .ok_or(AuthorizationError::Malformed("unterminated quoted value"))?;
            if let Some(slot) = NAMES.iter().position(|n| *n == name) {
                if found[slot].is_some() {
                    return Err(AuthorizationError::Duplicate(name.to_owned()));
                }
                found[slot] = Some(value);
            }
            let after = after.trim_start();
            if after.is_empty() {
                break;
            }
            rest = after.strip_prefix(',').ok_or(AuthorizationError::Malformed(
                "attributes must be separated by commas",
            ))?;
        }
        let take = |slot: usize| -> Result<String, AuthorizationError> {
            match found[slot] {
                Some(v) if !v.is_empty() => Ok(v.to_owned()),
                _ => Err(AuthorizationError::Missing(NAMES[slot])),
            }
        };
        Ok(Authorization {
            mchid: take(0)?,
            nonce_str: take(1)?,
            timestamp: take(2)?,
            serial_no: take(3)?,
            signature: take(4)?,
        })
    }

    /// The string-to-sign of the request these attributes claim to sign.
    pub fn message(&self, method: &str, path_and_query: &str, body: &[u8]) -> Vec<u8> {
        request_message(method, path_and_query, &self.timestamp, &self.nonce_str, body)
    }

    /// True when the signature is the merchant's over this request.
    pub fn verify(&self, key: &VerifyingKey, method: &str, path_and_query: &str, body: &[u8]) -> bool {
        key.verify_base64(&self.message(method, path_and_query, body), &self.signature)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomUnavailable;

/// A request nonce as the official SDKs make it: 32 characters from `[A-Z0-9]`.
pub fn new_nonce() -> Result<String, RandomUnavailable> {
    random_token(32)
}

/// `len` characters drawn uniformly from `[A-Z0-9]`.
pub(crate) fn random_token(len: usize) -> Result<String, RandomUnavailable> {
    const ALPHABET: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    // 252 = 7 * 36: bytes at or above it are dropped so every character is equally likely.
    const LIMIT: u8 = 252;
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill(&mut buf).map_err(|_| RandomUnavailable)?;
        for b in buf.iter().filter(|b| **b < LIMIT) {
            if out.len() == len {
                break;
            }
            let _ = out.write_char(char::from(ALPHABET[usize::from(b % 36)]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/");

    fn vector(name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(format!("{VECTORS}{name}")).unwrap()).unwrap()
    }

    fn key(name: &str) -> String {
        std::fs::read_to_string(format!("{VECTORS}keys/{name}")).unwrap()
    }

    fn s<'a>(v: &'a Value, k: &str) -> &'a str {
        v[k].as_str().unwrap()
    }

    fn vector_signer() -> MerchantSigner {
        let v = vector("wechat_request.json");
        let serial = Authorization::parse(s(&v, "authorization")).unwrap().serial_no;
        let key = SigningKey::from_pem(&key("wechat_merchant_private_pkcs8.pem")).unwrap();
        MerchantSigner::new("1230000109", serial, key)
    }

    #[test]
    fn request_message_and_signature_equal_the_wechatpayv3_vector_byte_for_byte() {
        let v = vector("wechat_request.json");
        let message = request_message(
            s(&v, "method"),
            s(&v, "path"),
            s(&v, "timestamp"),
            s(&v, "nonce"),
            s(&v, "body").as_bytes(),
        );
        assert_eq!(message, s(&v, "message").as_bytes());
        let timestamp: i64 = s(&v, "timestamp").parse().unwrap();
        let signer = vector_signer();
        assert_eq!(
            signer.sign(
                s(&v, "method"),
                s(&v, "path"),
                timestamp,
                s(&v, "nonce"),
                s(&v, "body").as_bytes()
            ),
            s(&v, "signature")
        );
        assert_eq!(
            signer.authorization(
                s(&v, "method"),
                s(&v, "path"),
                timestamp,
                s(&v, "nonce"),
                s(&v, "body").as_bytes()
            ),
            s(&v, "authorization")
        );
    }

    #[test]
    fn pkcs1_merchant_key_signs_the_vector_identically_to_pkcs8() {
        let v = vector("wechat_request.json");
        let pkcs1 = SigningKey::from_pem(&key("wechat_merchant_private_pkcs1.pem")).unwrap();
        assert_eq!(pkcs1.sign_base64(s(&v, "message").as_bytes()), s(&v, "signature"));
    }

    #[test]
    fn vector_authorization_parses_and_verifies_with_the_merchant_public_key_only_over_the_same_request() {
        let v = vector("wechat_request.json");
        let auth = Authorization::parse(s(&v, "authorization")).unwrap();
        assert_eq!(auth.mchid, "1230000109");
        assert_eq!(auth.nonce_str, s(&v, "nonce"));
        assert_eq!(auth.timestamp, s(&v, "timestamp"));
        assert_eq!(auth.signature, s(&v, "signature"));
        assert_eq!(auth.serial_no, "5157F09EFDC096DE15EBE81A47057A7232F1B8E1");
        let merchant = VerifyingKey::from_pem(&key("wechat_merchant_public.pem")).unwrap();
        let body = s(&v, "body").as_bytes();
        assert!(auth.verify(&merchant, "POST", s(&v, "path"), body));
        // Another path (e.g. with a sandbox prefix), method, or body byte is another request.
        assert!(!auth.verify(
            &merchant,
            "POST",
            "/sandbox/wechat/v3/pay/transactions/native",
            body
        ));
        assert!(!auth.verify(&merchant, "GET", s(&v, "path"), body));
        let mut tampered = body.to_vec();
        tampered[10] ^= 1;
        assert!(!auth.verify(&merchant, "POST", s(&v, "path"), &tampered));
        let platform = VerifyingKey::from_pem(&key("wechat_platform_public.pem")).unwrap();
        assert!(!auth.verify(&platform, "POST", s(&v, "path"), body));
    }

    #[test]
    fn authorization_attributes_are_found_by_name_in_any_order_and_spacing() {
        let go_order = "WECHATPAY2-SHA256-RSA2048 mchid=\"1900000109\",nonce_str=\"N1\",timestamp=\"1554208460\",serial_no=\"ABC\",signature=\"c2ln\"";
        let shuffled = "wechatpay2-sha256-rsa2048  signature=\"c2ln\", serial_no = \"ABC\",timestamp=\"1554208460\" , extra=\"x\",nonce_str=\"N1\",mchid=\"1900000109\"";
        let expected = Authorization {
            mchid: "1900000109".into(),
            nonce_str: "N1".into(),
            timestamp: "1554208460".into(),
            serial_no: "ABC".into(),
            signature: "c2ln".into(),
        };
        assert_eq!(Authorization::parse(go_order).unwrap(), expected);
        assert_eq!(Authorization::parse(shuffled).unwrap(), expected);
    }

    #[test]
    fn authorization_with_a_duplicate_missing_empty_or_unquoted_attribute_is_refused() {
        let ok = "mchid=\"1\",nonce_str=\"N\",timestamp=\"2\",serial_no=\"S\",signature=\"c2ln\"";
        assert!(Authorization::parse(&format!("{SCHEMA} {ok}")).is_ok());
        assert_eq!(
            Authorization::parse(&format!("{SCHEMA} {ok},mchid=\"2\"")),
            Err(AuthorizationError::Duplicate("mchid".into()))
        );
        assert_eq!(
            Authorization::parse(&format!(
                "{SCHEMA} mchid=\"1\",nonce_str=\"N\",timestamp=\"2\",serial_no=\"S\""
            )),
            Err(AuthorizationError::Missing("signature"))
        );
        assert_eq!(
            Authorization::parse(&format!(
                "{SCHEMA} mchid=\"\",nonce_str=\"N\",timestamp=\"2\",serial_no=\"S\",signature=\"c2ln\""
            )),
            Err(AuthorizationError::Missing("mchid"))
        );
        assert!(matches!(
            Authorization::parse(&format!(
                "{SCHEMA} mchid=1,nonce_str=\"N\",timestamp=\"2\",serial_no=\"S\",signature=\"c2ln\""
            )),
            Err(AuthorizationError::Malformed(_))
        ));
        assert!(matches!(
            Authorization::parse(&format!("{SCHEMA} {ok} mchid=\"1\"")),
            Err(AuthorizationError::Malformed(_))
        ));
        assert!(matches!(
            Authorization::parse(&format!("{SCHEMA} mchid=\"1")),
            Err(AuthorizationError::Malformed(_))
        ));
        assert_eq!(
            Authorization::parse(&format!("WECHATPAY2-SHA256-RSA {ok}")),
            Err(AuthorizationError::WrongScheme)
        );
        assert_eq!(Authorization::parse(SCHEMA), Err(AuthorizationError::WrongScheme));
        assert_eq!(Authorization::parse(""), Err(AuthorizationError::WrongScheme));
    }

    #[test]
    fn notification_vector_signature_verifies_over_the_raw_body_with_the_platform_key_only() {
        let v = vector("wechat_notify.json");
        let h = |name: &str| v["headers"][name].as_str().unwrap();
        let body = s(&v, "body").as_bytes();
        let platform = VerifyingKey::from_pem(&key("wechat_platform_public.pem")).unwrap();
        let (ts, nonce, sig) = (
            h("Wechatpay-Timestamp"),
            h("Wechatpay-Nonce"),
            h("Wechatpay-Signature"),
        );
        assert!(verify_platform_signature(&platform, ts, nonce, body, sig));
        // Re-serialising the JSON changes the bytes, and the signature covers the bytes.
        let reserialised = serde_json::to_vec(&serde_json::from_slice::<Value>(body).unwrap()).unwrap();
        assert_ne!(reserialised, body);
        assert!(!verify_platform_signature(
            &platform,
            ts,
            nonce,
            &reserialised,
            sig
        ));
        let merchant = VerifyingKey::from_pem(&key("wechat_merchant_public.pem")).unwrap();
        assert!(!verify_platform_signature(&merchant, ts, nonce, body, sig));
    }

    #[test]
    fn platform_message_of_an_empty_204_body_ends_in_a_lone_newline() {
        assert_eq!(platform_message("1795000006", "N", b""), b"1795000006\nN\n\n");
    }

    #[test]
    fn nonces_are_32_characters_of_upper_case_letters_and_digits_and_differ() {
        let a = new_nonce().unwrap();
        let b = new_nonce().unwrap();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
            "{a}"
        );
        assert_ne!(a, b);
        assert_eq!(random_token(12).unwrap().len(), 12);
        assert_eq!(random_token(0).unwrap(), "");
    }
}
