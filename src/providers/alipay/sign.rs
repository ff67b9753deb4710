//! Alipay's RSA2 signing rules: which text is signed, for requests, notifications and
//! synchronous responses.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, Utc};

/// Request string-to-sign: every parameter but `sign` (so `sign_type` is signed), empty
/// values left out, sorted by name, `k=v` joined by `&`, values raw.
pub fn request_content(params: &BTreeMap<String, String>) -> String {
    join(
        params
            .iter()
            .filter(|(k, v)| k.as_str() != "sign" && !v.is_empty()),
    )
}

/// Notification string-to-sign: as for requests, but `sign_type` is left out too.
pub fn notification_content(params: &BTreeMap<String, String>) -> String {
    join(
        params
            .iter()
            .filter(|(k, v)| k.as_str() != "sign" && k.as_str() != "sign_type" && !v.is_empty()),
    )
}

fn join<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// The exact raw text of the JSON value of `key` in a response body: from its `{` to
/// the matching `}`, counting braces outside strings only. Alipay signs these bytes as
/// sent; re-serialising would change them (`\/` escapes, key order).
pub fn raw_object<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let needle = format!("\"{key}\"");
    let mut search_from = 0;
    let start = loop {
        let at = search_from + body[search_from..].find(&needle)?;
        let after = body[at + needle.len()..].trim_start();
        if let Some(rest) = after.strip_prefix(':') {
            let rest = rest.trim_start();
            if rest.starts_with('{') {
                break body.len() - rest.len();
            }
        }
        search_from = at + needle.len();
    };
    let bytes = body.as_bytes();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&body[start..=i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Alipay's clock: Beijing time, `yyyy-MM-dd HH:mm:ss`, no offset written.
pub fn beijing(t: DateTime<Utc>) -> String {
    t.with_timezone(&beijing_offset())
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

pub fn parse_beijing(text: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .ok()?
        .and_local_timezone(beijing_offset())
        .single()
        .map(|t| t.with_timezone(&Utc))
}

fn beijing_offset() -> FixedOffset {
    // UTC+8 is a constant; east_opt only fails outside ±24 h.
    FixedOffset::east_opt(8 * 3600)
        .unwrap_or_else(|| FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::keys::{SigningKey, VerifyingKey};
    use serde_json::Value;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/");

    fn vector(name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(format!("{VECTORS}{name}")).unwrap()).unwrap()
    }

    fn key(name: &str) -> String {
        std::fs::read_to_string(format!("{VECTORS}keys/{name}")).unwrap()
    }

    fn params(v: &Value) -> BTreeMap<String, String> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn request_signature_equals_python_alipay_sdk_byte_for_byte() {
        let v = vector("alipay_request.json");
        let p = params(&v["params"]);
        let content = request_content(&p);
        assert_eq!(content, v["canonical"].as_str().unwrap());
        for file in ["alipay_app_private_pkcs1.pem", "alipay_app_private_pkcs8.pem"] {
            let signer = SigningKey::from_pem(&key(file)).unwrap();
            assert_eq!(
                signer.sign_base64(content.as_bytes()),
                v["sign"].as_str().unwrap(),
                "{file}"
            );
        }
    }

    #[test]
    fn notification_vector_verifies_and_its_tampered_copy_does_not() {
        let v = vector("alipay_notify.json");
        let public = VerifyingKey::from_pem(&key("alipay_platform_public.pem")).unwrap();
        let decode = |body: &str| -> BTreeMap<String, String> {
            url::form_urlencoded::parse(body.as_bytes())
                .into_owned()
                .collect()
        };
        let good = decode(v["body"].as_str().unwrap());
        assert_eq!(notification_content(&good), v["canonical"].as_str().unwrap());
        assert!(public.verify_base64(notification_content(&good).as_bytes(), &good["sign"]));
        let bad = decode(v["tampered_body"].as_str().unwrap());
        assert!(!public.verify_base64(notification_content(&bad).as_bytes(), &bad["sign"]));
    }

    #[test]
    fn response_signature_covers_the_exact_raw_substring() {
        let v = vector("alipay_response.json");
        let raw = v["raw"].as_str().unwrap();
        let signed = raw_object(raw, "alipay_trade_precreate_response").unwrap();
        assert_eq!(signed, v["signed_content"].as_str().unwrap());
        let public = VerifyingKey::from_pem(&key("alipay_platform_public.pem")).unwrap();
        assert!(public.verify_base64(signed.as_bytes(), v["sign"].as_str().unwrap()));

        // Alipay escapes `/`, orders keys its own way and may space its JSON: the
        // signature covers those bytes, which a parse-and-reserialise would change.
        let platform = SigningKey::from_pem(&key("alipay_platform_private_pkcs8.pem")).unwrap();
        let inner = r#"{"msg":"Success","code":"10000", "qr_code":"https:\/\/qr.alipay.com\/bax0843"}"#;
        let sign = platform.sign_base64(inner.as_bytes());
        let body = format!(r#"{{"alipay_trade_precreate_response":{inner},"sign":"{sign}"}}"#);
        let signed = raw_object(&body, "alipay_trade_precreate_response").unwrap();
        assert_eq!(signed, inner);
        assert!(public.verify_base64(signed.as_bytes(), &sign));
        let reserialized = serde_json::to_string(&serde_json::from_str::<Value>(signed).unwrap()).unwrap();
        assert_ne!(reserialized, signed, "re-serialising changes the bytes");
        assert!(!public.verify_base64(reserialized.as_bytes(), &sign));
    }

    #[test]
    fn raw_object_respects_braces_inside_strings_and_escapes() {
        let body = r#"{"sign":"x","a_response":{"subject":"a}b{\"c\"}","n":{"m":1}},"z":2}"#;
        assert_eq!(
            raw_object(body, "a_response").unwrap(),
            r#"{"subject":"a}b{\"c\"}","n":{"m":1}}"#
        );
        assert!(raw_object(body, "missing").is_none());
        assert!(raw_object(r#"{"a_response":{"open"#, "a_response").is_none());
    }

    #[test]
    fn beijing_time_round_trips() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T03:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(beijing(t), "2026-11-24 11:30:00");
        assert_eq!(parse_beijing("2026-11-24 11:30:00"), Some(t));
        assert_eq!(parse_beijing("2026-11-24T11:30:00"), None);
    }
}
