//! Two-factor sign-in codes: RFC 6238 TOTP (HMAC-SHA-1, 6 digits, 30-second steps, the
//! step before and after accepted for clock drift), the `otpauth://` URI authenticator
//! apps scan, and one-time recovery codes.

use ring::digest::{digest, SHA256};
use totp_rs::{Algorithm, TOTP};

use super::ids::random_bytes;

pub const DIGITS: usize = 6;
pub const STEP_SECONDS: i64 = 30;
/// Recovery codes shown at enrolment.
pub const RECOVERY_CODES: usize = 10;
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A new shared secret: 160 random bits (RFC 4226's recommended length), base32.
pub fn generate_secret() -> String {
    base32_encode(&random_bytes::<20>())
}

/// RFC 4648 base32 without padding, as authenticator apps take it.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let value = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase())? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

fn totp(secret: &str) -> Option<TOTP> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECONDS as u64,
        base32_decode(secret)?,
    )
    .ok()
}

/// The code for the step that holds `unix_seconds` (for tests and the enrolment page).
pub fn code_at(secret: &str, unix_seconds: i64) -> Option<String> {
    Some(totp(secret)?.generate(u64::try_from(unix_seconds).ok()?))
}

/// The step a typed code belongs to, if it is the code of the current step or the one
/// before or after (RFC 6238 section 6), and later than `after_step` (a code is good
/// once: section 5.2).
pub fn verify(secret: &str, typed: &str, unix_seconds: i64, after_step: Option<i64>) -> Option<i64> {
    let typed: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
    if typed.len() != DIGITS || !typed.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let totp = totp(secret)?;
    let now_step = unix_seconds.div_euclid(STEP_SECONDS);
    let mut found = None;
    // Every candidate is computed and compared, matched or not.
    for step in [now_step - 1, now_step, now_step + 1] {
        let Ok(at) = u64::try_from(step * STEP_SECONDS) else {
            continue;
        };
        if super::admin::same_secret(&totp.generate(at), &typed) && after_step.is_none_or(|last| step > last)
        {
            found = Some(step);
        }
    }
    found
}

/// What an authenticator app scans: `otpauth://totp/<issuer>:<account>?secret=…`.
pub fn otpauth_uri(issuer: &str, account: &str, secret: &str) -> String {
    let enc = |s: &str| {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        enc(issuer),
        enc(account),
        enc(issuer)
    )
}

/// New recovery codes, `xxxxx-xxxxx` of base32 letters (50 bits each).
pub fn generate_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let text = base32_encode(&random_bytes::<7>()).to_lowercase();
            format!("{}-{}", &text[..5], &text[5..10])
        })
        .collect()
}

/// What is stored of a recovery code: typed with or without the dash, in any case.
pub fn recovery_hash(code: &str) -> Vec<u8> {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    digest(&SHA256, normal.as_bytes()).as_ref().to_vec()
}

/// Whether the text looks like a recovery code rather than a six-digit code.
pub fn is_recovery_code(typed: &str) -> bool {
    typed.chars().filter(char::is_ascii_alphanumeric).count() == 10
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows, last six digits (the key is ASCII
    /// "12345678901234567890").
    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        let secret = base32_encode(b"12345678901234567890");
        assert_eq!(secret, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(code_at(&secret, time).as_deref(), Some(code), "{time}");
        }
    }

    #[test]
    fn a_code_is_good_for_the_steps_next_to_its_own_and_only_once() {
        let secret = generate_secret();
        let t = 1_764_000_000;
        let code = code_at(&secret, t).unwrap();
        let step = t / STEP_SECONDS;
        assert_eq!(verify(&secret, &code, t, None), Some(step));
        assert_eq!(verify(&secret, &code, t + 30, None), Some(step));
        assert_eq!(verify(&secret, &code, t - 30, None), Some(step));
        assert_eq!(verify(&secret, &code, t + 60, None), None);
        assert_eq!(verify(&secret, &code, t - 60, None), None);
        assert_eq!(verify(&secret, &code, t, Some(step)), None, "used already");
        assert_eq!(verify(&secret, "12345", t, None), None);
        assert_eq!(verify(&secret, "abcdef", t, None), None);
    }

    #[test]
    fn base32_round_trips_and_recovery_codes_hash_however_typed() {
        for len in 0..25 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base32_decode(&base32_encode(&bytes)).unwrap(), bytes);
        }
        assert!(base32_decode("not base32!").is_none());
        let codes = generate_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        assert!(is_recovery_code(&codes[0]));
        assert_eq!(
            recovery_hash(&codes[0]),
            recovery_hash(&codes[0].to_uppercase().replace('-', ""))
        );
        assert_ne!(recovery_hash(&codes[0]), recovery_hash(&codes[1]));
        assert!(otpauth_uri("My Shop", "li.na", "ABC")
            .starts_with("otpauth://totp/My%20Shop:li.na?secret=ABC&issuer=My%20Shop"));
    }
}
