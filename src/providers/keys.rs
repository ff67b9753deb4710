//! RSA keys from PEM files, for ring. Private keys may be PKCS#1 (`RSA PRIVATE KEY`)
//! or PKCS#8 (`PRIVATE KEY`); public keys SubjectPublicKeyInfo (`PUBLIC KEY`) or
//! PKCS#1 (`RSA PUBLIC KEY`). Signatures are SHA256withRSA, PKCS#1 v1.5.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// The label and DER bytes of the first PEM block in `text`.
fn pem_block(text: &str) -> Result<(String, Vec<u8>), KeyError> {
    let begin = text
        .find("-----BEGIN ")
        .ok_or_else(|| KeyError::Invalid("no PEM block (-----BEGIN …-----) found".into()))?;
    let rest = &text[begin + 11..];
    let label_end = rest
        .find("-----")
        .ok_or_else(|| KeyError::Invalid("malformed PEM header".into()))?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest
        .find(&end_marker)
        .ok_or_else(|| KeyError::Invalid(format!("PEM block {label} has no END line")))?;
    let body: String = rest[body_start..body_end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|e| KeyError::Invalid(format!("PEM block {label} is not valid base64: {e}")))?;
    Ok((label, der))
}

/// Reads one DER tag-length-value at `input`, returning (tag, value, rest).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The PKCS#1 `RSAPublicKey` inside a SubjectPublicKeyInfo, which is what ring takes.
fn spki_to_pkcs1(spki: &[u8]) -> Option<Vec<u8>> {
    let (tag, seq, _) = der_tlv(spki)?;
    if tag != 0x30 {
        return None;
    }
    let (alg_tag, _alg, rest) = der_tlv(seq)?;
    if alg_tag != 0x30 {
        return None;
    }
    let (bits_tag, bits, _) = der_tlv(rest)?;
    if bits_tag != 0x03 || bits.first() != Some(&0) {
        return None;
    }
    Some(bits[1..].to_vec())
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|e| KeyError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// A private key that signs SHA256withRSA.
pub struct SigningKey(RsaKeyPair);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let (label, der) = pem_block(text)?;
        let pair = match label.as_str() {
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            other => {
                return Err(KeyError::Invalid(format!(
                    "expected an RSA private key (PRIVATE KEY or RSA PRIVATE KEY), found {other}"
                )))
            }
        }
        .map_err(|e| KeyError::Invalid(format!("not a usable RSA private key: {e}")))?;
        Ok(SigningKey(pair))
    }

    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read(path)?).map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))
    }

    /// Base64 of the RSA-SHA256 PKCS#1 v1.5 signature of `message`.
    pub fn sign_base64(&self, message: &[u8]) -> String {
        let mut sig = vec![0u8; self.0.public().modulus_len()];
        // Signing fails only for a key ring already accepted as unusable or a buffer of
        // the wrong size; neither can happen here.
        #[allow(clippy::expect_used)]
        self.0
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut sig,
            )
            .expect("RSA signing with a validated key");
        STANDARD.encode(sig)
    }
}

/// A public key that checks SHA256withRSA signatures.
#[derive(Clone)]
pub struct VerifyingKey(Vec<u8>);

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyingKey")
    }
}

impl VerifyingKey {
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let (label, der) = pem_block(text)?;
        let pkcs1 = match label.as_str() {
            "PUBLIC KEY" => spki_to_pkcs1(&der)
                .ok_or_else(|| KeyError::Invalid("malformed SubjectPublicKeyInfo".into()))?,
            "RSA PUBLIC KEY" => der,
            other => {
                return Err(KeyError::Invalid(format!(
                    "expected an RSA public key (PUBLIC KEY), found {other}"
                )))
            }
        };
        // ring parses lazily, at the first verification; check the shape now so a bad
        // key stops start-up instead of failing every notification.
        let modulus_bits = der_tlv(&pkcs1)
            .filter(|(tag, _, _)| *tag == 0x30)
            .and_then(|(_, seq, _)| der_tlv(seq))
            .filter(|(tag, _, _)| *tag == 0x02)
            .map(|(_, n, _)| n.iter().skip_while(|b| **b == 0).count() * 8)
            .ok_or_else(|| KeyError::Invalid("malformed RSA public key".into()))?;
        if modulus_bits < 2048 {
            return Err(KeyError::Invalid(format!(
                "RSA public key has {modulus_bits} bits; at least 2048 needed"
            )));
        }
        Ok(VerifyingKey(pkcs1))
    }

    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        Self::from_pem(&read(path)?).map_err(|e| KeyError::Invalid(format!("{}: {e}", path.display())))
    }

    /// True when `signature_b64` is a valid signature of `message`.
    pub fn verify_base64(&self, message: &[u8], signature_b64: &str) -> bool {
        let Ok(sig) = STANDARD.decode(signature_b64.trim()) else {
            return false;
        };
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.0)
            .verify(message, &sig)
            .is_ok()
    }
}

/// A new RSA-2048 key pair as (PKCS#8 private PEM, SPKI public PEM), for the sandbox.
pub fn generate_pem_pair() -> Result<(String, String), KeyError> {
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let mut rng = rsa::rand_core::OsRng;
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048)
        .map_err(|e| KeyError::Invalid(format!("key generation failed: {e}")))?;
    let private_pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Invalid(e.to_string()))?
        .to_string();
    let public_pem = private
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Invalid(e.to_string()))?;
    Ok((private_pem, public_pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/keys/");

    fn key(name: &str) -> String {
        std::fs::read_to_string(format!("{KEYS}{name}")).unwrap()
    }

    #[test]
    fn pkcs1_and_pkcs8_private_keys_load_and_sign_identically() {
        let pkcs1 = SigningKey::from_pem(&key("alipay_app_private_pkcs1.pem")).unwrap();
        let pkcs8 = SigningKey::from_pem(&key("alipay_app_private_pkcs8.pem")).unwrap();
        assert_eq!(pkcs1.sign_base64(b"abc"), pkcs8.sign_base64(b"abc"));
        let public = VerifyingKey::from_pem(&key("alipay_app_public.pem")).unwrap();
        assert!(public.verify_base64(b"abc", &pkcs1.sign_base64(b"abc")));
        assert!(!public.verify_base64(b"abd", &pkcs1.sign_base64(b"abc")));
    }

    #[test]
    fn wrong_material_is_refused_with_a_reason() {
        assert!(SigningKey::from_pem("nothing").is_err());
        assert!(SigningKey::from_pem(&key("alipay_app_public.pem")).is_err());
        assert!(VerifyingKey::from_pem(&key("alipay_app_private_pkcs8.pem")).is_err());
        assert!(VerifyingKey::from_pem("-----BEGIN PUBLIC KEY-----\n!!!\n-----END PUBLIC KEY-----").is_err());
    }
}
