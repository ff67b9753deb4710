//! Standard Webhooks v1 signatures: `v1,` + base64(HMAC-SHA256(key, id.timestamp.body)),
//! where the key is the base64 part of the `whsec_` secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::hmac;

pub const PREFIX: &str = "whsec_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret must be whsec_ followed by standard base64 of 24 to 64 random bytes")]
pub struct BadSecret;

/// A new secret: `whsec_` + padded standard base64 of 32 random bytes, which every
/// reference library accepts.
pub fn generate_secret() -> String {
    format!(
        "{PREFIX}{}",
        STANDARD.encode(crate::domain::ids::random_bytes::<32>())
    )
}

pub fn key_of(secret: &str) -> Result<hmac::Key, BadSecret> {
    let encoded = secret.strip_prefix(PREFIX).ok_or(BadSecret)?;
    let bytes = STANDARD.decode(encoded).map_err(|_| BadSecret)?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(BadSecret);
    }
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

/// The `webhook-signature` value for one secret.
pub fn sign(key: &hmac::Key, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
}

/// The header value for several secrets (during a rotation): space-separated.
pub fn signature_header(keys: &[hmac::Key], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|k| sign(k, id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_vector_signs_identically() {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/vectors/standard_webhooks.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let key = key_of(v["secret"].as_str().unwrap()).unwrap();
        let ts: i64 = v["headers"]["webhook-timestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let signature = sign(
            &key,
            v["headers"]["webhook-id"].as_str().unwrap(),
            ts,
            v["body"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(signature, v["headers"]["webhook-signature"].as_str().unwrap());
    }

    #[test]
    fn the_spec_example_signs_identically_and_bad_secrets_are_refused() {
        let key = key_of("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            sign(&key, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
        for bad in [
            "",
            "whsec_",
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_!!!",
            "whsec_c2hvcnQ=",
        ] {
            assert!(key_of(bad).is_err(), "{bad}");
        }
        let generated = generate_secret();
        assert!(generated.starts_with("whsec_") && generated.ends_with('='));
        assert!(key_of(&generated).is_ok());
    }
}
