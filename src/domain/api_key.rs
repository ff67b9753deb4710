//! API keys: shown once at creation, stored only as a SHA-256 hash. Keys carry 238
//! bits of randomness, so a fast hash is enough; there is nothing to brute-force.

use ring::digest::{digest, SHA256};

use super::ids::random_base62;

pub const KEY_PREFIX: &str = "kassa_sk_";

pub struct GeneratedKey {
    /// The full key, to print once and never store.
    pub plaintext: String,
    /// The first characters, kept so staff can tell keys apart.
    pub display_prefix: String,
    pub hash: Vec<u8>,
}

pub fn generate() -> GeneratedKey {
    let plaintext = format!("{KEY_PREFIX}{}", random_base62(40));
    GeneratedKey {
        display_prefix: plaintext[..KEY_PREFIX.len() + 6].to_owned(),
        hash: hash(&plaintext),
        plaintext,
    }
}

pub fn hash(key: &str) -> Vec<u8> {
    digest(&SHA256, key.as_bytes()).as_ref().to_vec()
}

/// Names are how operators refer to keys on the command line.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "API key name {name:?} must be 1 to 64 characters of letters, digits, '.', '_' and '-'"
        ))
    }
}
