//! `AEAD_AES_256_GCM`, the encryption of a notification's `resource`: key = the 32-byte
//! APIv3 key as its raw UTF-8 bytes, nonce = the UTF-8 bytes of `resource.nonce`, AAD = the
//! bytes of `resource.associated_data`, `ciphertext` = base64(ciphertext ‖ 16-byte tag).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

/// The `resource.algorithm` this module implements.
pub const ALGORITHM: &str = "AEAD_AES_256_GCM";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AeadError {
    #[error("the APIv3 key must be 32 bytes, got {0}")]
    KeyLength(usize),
    /// ring's AES-GCM takes 96-bit nonces only; WeChat sends 12 characters.
    #[error("the resource nonce must be 12 bytes, got {0}")]
    NonceLength(usize),
    #[error("the resource ciphertext is not valid base64")]
    Base64,
    /// Wrong APIv3 key, wrong associated data, or a changed ciphertext or tag.
    #[error("the resource failed AES-GCM authentication")]
    Authentication,
}

/// The merchant's APIv3 key. Its bytes never appear in `Debug` output.
#[derive(Clone)]
pub struct ApiV3Key([u8; 32]);

impl std::fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiV3Key(***)")
    }
}

impl ApiV3Key {
    /// The key as configured: 32 characters, used as raw bytes (not hex or base64 decoded).
    pub fn new(key: &[u8]) -> Result<Self, AeadError> {
        <[u8; 32]>::try_from(key)
            .map(ApiV3Key)
            .map_err(|_| AeadError::KeyLength(key.len()))
    }

    fn sealing_key(&self) -> Result<LessSafeKey, AeadError> {
        // ring refuses only a key of the wrong length, which the type rules out.
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| AeadError::KeyLength(self.0.len()))
    }

    /// Decrypts a notification resource into its plaintext (UTF-8 JSON from WeChat).
    pub fn decrypt(
        &self,
        nonce: &str,
        associated_data: &str,
        ciphertext_b64: &str,
    ) -> Result<Vec<u8>, AeadError> {
        let nonce = nonce_of(nonce)?;
        let mut data = STANDARD.decode(ciphertext_b64).map_err(|_| AeadError::Base64)?;
        let plain_len = self
            .sealing_key()?
            .open_in_place(nonce, Aad::from(associated_data.as_bytes()), &mut data)
            .map_err(|_| AeadError::Authentication)?
            .len();
        data.truncate(plain_len);
        Ok(data)
    }

    /// Encrypts `plaintext` as WeChat does for a notification resource: base64 of
    /// ciphertext ‖ tag. The caller picks a fresh 12-character nonce per message.
    pub fn encrypt(&self, nonce: &str, associated_data: &str, plaintext: &[u8]) -> Result<String, AeadError> {
        let nonce = nonce_of(nonce)?;
        let mut data = plaintext.to_vec();
        self.sealing_key()?
            .seal_in_place_append_tag(nonce, Aad::from(associated_data.as_bytes()), &mut data)
            .map_err(|_| AeadError::Authentication)?;
        Ok(STANDARD.encode(data))
    }
}

fn nonce_of(nonce: &str) -> Result<Nonce, AeadError> {
    let bytes =
        <[u8; NONCE_LEN]>::try_from(nonce.as_bytes()).map_err(|_| AeadError::NonceLength(nonce.len()))?;
    Ok(Nonce::assume_unique_for_key(bytes))
}

/// A fresh resource nonce: 12 characters from `[A-Z0-9]`, the length WeChat uses.
pub fn new_resource_nonce() -> Result<String, super::sign::RandomUnavailable> {
    super::sign::random_token(NONCE_LEN)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn vector(name: &str) -> Value {
        let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// (APIv3 key, resource object, expected plaintext) of a vector.
    fn resource_of(name: &str) -> (ApiV3Key, Value, String) {
        let v = vector(name);
        let body: Value = serde_json::from_str(v["body"].as_str().unwrap()).unwrap();
        let key = ApiV3Key::new(v["apiv3_key"].as_str().unwrap().as_bytes()).unwrap();
        let plain = v["decrypted_resource"].as_str().unwrap().to_owned();
        (key, body["resource"].clone(), plain)
    }

    fn field<'a>(resource: &'a Value, name: &str) -> &'a str {
        resource[name].as_str().unwrap()
    }

    #[test]
    fn both_notification_vectors_decrypt_to_exactly_their_plaintext() {
        for name in ["wechat_notify.json", "wechat_notify_cert.json"] {
            let (key, r, plain) = resource_of(name);
            assert_eq!(field(&r, "algorithm"), ALGORITHM);
            let out = key
                .decrypt(
                    field(&r, "nonce"),
                    field(&r, "associated_data"),
                    field(&r, "ciphertext"),
                )
                .unwrap();
            assert_eq!(out, plain.as_bytes(), "{name}");
        }
    }

    #[test]
    fn encrypting_the_vector_plaintext_reproduces_the_vector_ciphertext() {
        let (key, r, plain) = resource_of("wechat_notify.json");
        let sealed = key
            .encrypt(field(&r, "nonce"), field(&r, "associated_data"), plain.as_bytes())
            .unwrap();
        assert_eq!(sealed, field(&r, "ciphertext"));
    }

    #[test]
    fn a_wrong_apiv3_key_fails_authentication() {
        let (_, r, _) = resource_of("wechat_notify.json");
        let wrong = ApiV3Key::new(b"kassaTestApiV3Key0123456789abcdF").unwrap();
        assert_eq!(
            wrong.decrypt(
                field(&r, "nonce"),
                field(&r, "associated_data"),
                field(&r, "ciphertext")
            ),
            Err(AeadError::Authentication)
        );
    }

    #[test]
    fn a_changed_ciphertext_tag_nonce_or_associated_data_fails_authentication() {
        let (key, r, _) = resource_of("wechat_notify.json");
        let (nonce, aad, ct) = (
            field(&r, "nonce"),
            field(&r, "associated_data"),
            field(&r, "ciphertext"),
        );
        let raw = STANDARD.decode(ct).unwrap();
        for at in [0, raw.len() / 2, raw.len() - 1] {
            let mut changed = raw.clone();
            changed[at] ^= 0x01;
            assert_eq!(
                key.decrypt(nonce, aad, &STANDARD.encode(&changed)),
                Err(AeadError::Authentication),
                "byte {at}"
            );
        }
        assert_eq!(
            key.decrypt("fdasflkja485", aad, ct),
            Err(AeadError::Authentication)
        );
        assert_eq!(key.decrypt(nonce, "refund", ct), Err(AeadError::Authentication));
        assert_eq!(key.decrypt(nonce, "", ct), Err(AeadError::Authentication));
    }

    #[test]
    fn malformed_inputs_are_typed_errors_not_panics() {
        let (key, r, _) = resource_of("wechat_notify.json");
        let (nonce, aad, ct) = (
            field(&r, "nonce"),
            field(&r, "associated_data"),
            field(&r, "ciphertext"),
        );
        assert_eq!(ApiV3Key::new(b"short").unwrap_err(), AeadError::KeyLength(5));
        assert_eq!(ApiV3Key::new(&[b'k'; 33]).unwrap_err(), AeadError::KeyLength(33));
        assert_eq!(
            key.decrypt("fdasflkja484w", aad, ct),
            Err(AeadError::NonceLength(13))
        );
        assert_eq!(key.decrypt("", aad, ct), Err(AeadError::NonceLength(0)));
        assert_eq!(key.encrypt("short", aad, b"x"), Err(AeadError::NonceLength(5)));
        assert_eq!(key.decrypt(nonce, aad, "not base64!"), Err(AeadError::Base64));
        // Shorter than a tag, and empty: nothing to authenticate.
        assert_eq!(key.decrypt(nonce, aad, "AAAA"), Err(AeadError::Authentication));
        assert_eq!(key.decrypt(nonce, aad, ""), Err(AeadError::Authentication));
    }

    #[test]
    fn encrypt_then_decrypt_round_trips_with_a_fresh_nonce_and_empty_associated_data() {
        let key = ApiV3Key::new(&[7u8; 32]).unwrap();
        let nonce = new_resource_nonce().unwrap();
        assert_eq!(nonce.len(), 12);
        let sealed = key.encrypt(&nonce, "", "退款成功".as_bytes()).unwrap();
        assert_eq!(key.decrypt(&nonce, "", &sealed).unwrap(), "退款成功".as_bytes());
        assert!(!format!("{key:?}").contains('7'));
    }
}
