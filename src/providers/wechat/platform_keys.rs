//! The keys that verify WeChat Pay's signatures, in both of WeChat's modes: a platform
//! public key with its id `PUB_KEY_ID_…`, and/or platform certificates known by serial.
//! During WeChat's move from certificates to the public key both arrive, chosen per
//! message by `Wechatpay-Serial`, so both are held and picked by it; keys are never fetched
//! from the network.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use x509_cert::der::{DecodePem, Encode};
use x509_cert::Certificate;

use super::sign::verify_platform_signature;
use crate::providers::keys::{KeyError, VerifyingKey};

/// The prefix WeChat gives platform public key ids. Requiring it keeps an id from ever
/// being mistaken for a certificate serial, which is hex.
pub const PUBLIC_KEY_ID_PREFIX: &str = "PUB_KEY_ID_";

/// A platform certificate this close to its expiry is worth a start-up warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// A message verified with an expired certificate is worth a warning at most this often
/// per certificate: every notification WeChat signs with it, and any replay of one
/// within its five minutes, would otherwise add a line to the log.
pub const EXPIRED_USE_WARNING_INTERVAL_SECONDS: u64 = 3600;

/// No warning about an expired certificate's use has gone out yet.
const NEVER: i64 = i64::MIN;

const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformKeyError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("platform public key id {0:?} does not start with {PUBLIC_KEY_ID_PREFIX}")]
    BadPublicKeyId(String),
    #[error("not a usable platform certificate: {0}")]
    BadCertificate(String),
    #[error("platform certificate serial {0} is configured twice")]
    DuplicateSerial(String),
    #[error("no platform public key or platform certificate configured")]
    Empty,
}

/// The platform public key of public-key mode.
#[derive(Debug, Clone)]
pub struct PlatformPublicKey {
    id: String,
    key: VerifyingKey,
}

impl PlatformPublicKey {
    pub fn new(id: impl Into<String>, key: VerifyingKey) -> Result<Self, PlatformKeyError> {
        let id = id.into();
        let suffix_ok = id.strip_prefix(PUBLIC_KEY_ID_PREFIX).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        if !suffix_ok {
            return Err(PlatformKeyError::BadPublicKeyId(id));
        }
        Ok(PlatformPublicKey { id, key })
    }

    pub fn from_pem(id: impl Into<String>, pem: &str) -> Result<Self, PlatformKeyError> {
        Self::new(id, VerifyingKey::from_pem(pem)?)
    }

    pub fn from_file(id: impl Into<String>, path: &Path) -> Result<Self, PlatformKeyError> {
        Self::new(id, VerifyingKey::from_file(path)?)
    }

    /// The `PUB_KEY_ID_…`; kassa also sends it as `Wechatpay-Serial` on its requests.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }
}

/// A platform certificate: its serial, validity and RSA public key, read by kassa itself.
#[derive(Debug, Clone)]
pub struct PlatformCertificate {
    serial: String,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    key: VerifyingKey,
    /// When (unix seconds) the last warning about a use after expiry went out; shared by
    /// the copies of this certificate, so that they warn as one.
    expired_use_warned_at: Arc<AtomicI64>,
}

impl PlatformCertificate {
    /// Every `CERTIFICATE` block in `pem` (a platform certificate file holds one; a bundle
    /// of several is accepted). Text outside the blocks is ignored.
    pub fn parse_pem(pem: &str) -> Result<Vec<PlatformCertificate>, PlatformKeyError> {
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let mut certificates = Vec::new();
        let mut rest = pem;
        while let Some(start) = rest.find(BEGIN) {
            let block = &rest[start..];
            let end = block.find(END).ok_or_else(|| {
                PlatformKeyError::BadCertificate("a CERTIFICATE block has no END line".into())
            })? + END.len();
            certificates.push(Self::from_single_pem(&block[..end])?);
            rest = &block[end..];
        }
        if certificates.is_empty() {
            return Err(PlatformKeyError::BadCertificate(
                "no -----BEGIN CERTIFICATE----- block found".into(),
            ));
        }
        Ok(certificates)
    }

    pub fn from_file(path: &Path) -> Result<Vec<PlatformCertificate>, PlatformKeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse_pem(&text).map_err(|e| match e {
            PlatformKeyError::BadCertificate(why) => {
                PlatformKeyError::BadCertificate(format!("{}: {why}", path.display()))
            }
            other => other,
        })
    }

    fn from_single_pem(block: &str) -> Result<PlatformCertificate, PlatformKeyError> {
        let bad = |why: String| PlatformKeyError::BadCertificate(why);
        let cert = Certificate::from_pem(block.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let tbs = &cert.tbs_certificate;
        let serial = normalize_serial_bytes(tbs.serial_number.as_bytes());
        let spki = &tbs.subject_public_key_info;
        if spki.algorithm.oid.to_string() != RSA_ENCRYPTION_OID {
            return Err(bad(format!(
                "certificate {serial} holds a {} key; WeChat platform keys are RSA",
                spki.algorithm.oid
            )));
        }
        let spki_der = spki.to_der().map_err(|e| bad(e.to_string()))?;
        let key_pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(spki_der)
        );
        let key = VerifyingKey::from_pem(&key_pem).map_err(|e| bad(format!("certificate {serial}: {e}")))?;
        let time = |t: x509_cert::time::Time| {
            let secs = i64::try_from(t.to_unix_duration().as_secs()).ok()?;
            DateTime::<Utc>::from_timestamp(secs, 0)
        };
        let validity = &tbs.validity;
        let (Some(not_before), Some(not_after)) = (time(validity.not_before), time(validity.not_after))
        else {
            return Err(bad(format!(
                "certificate {serial} has an unrepresentable validity"
            )));
        };
        Ok(PlatformCertificate {
            serial,
            not_before,
            not_after,
            key,
            expired_use_warned_at: Arc::new(AtomicI64::new(NEVER)),
        })
    }

    /// Upper-case hex without leading zeros, as WeChat prints it in `Wechatpay-Serial`.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    pub fn not_before(&self) -> DateTime<Utc> {
        self.not_before
    }

    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }

    /// Informational only: an expired certificate still verifies, WeChat decides.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now > self.not_after
    }

    /// Whether a message verified with this certificate at `now` deserves a warning: it
    /// has expired, and no warning about it went out in the last
    /// [`EXPIRED_USE_WARNING_INTERVAL_SECONDS`]. A `true` counts as that warning.
    pub fn expired_use_worth_warning(&self, now: DateTime<Utc>) -> bool {
        if !self.is_expired(now) {
            return false;
        }
        let at = now.timestamp();
        let last = self.expired_use_warned_at.load(Ordering::Relaxed);
        if last != NEVER && at.abs_diff(last) < EXPIRED_USE_WARNING_INTERVAL_SECONDS {
            return false;
        }
        // Of two messages verified at once, one warns.
        self.expired_use_warned_at
            .compare_exchange(last, at, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Expired already, or expiring within [`EXPIRY_WARNING_DAYS`] of `now`.
    pub fn expires_soon(&self, now: DateTime<Utc>) -> bool {
        self.not_after <= now + Duration::days(EXPIRY_WARNING_DAYS)
    }

    /// True when `serial` names this certificate: hex compared case-insensitively,
    /// leading zeros ignored (the value is the number, as wechatpayv3 compares it).
    pub fn has_serial(&self, serial: &str) -> bool {
        normalize_serial_text(serial).is_some_and(|s| s == self.serial)
    }

    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }
}

fn normalize_serial_bytes(bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    strip_zeros(&hex)
}

fn normalize_serial_text(serial: &str) -> Option<String> {
    if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(strip_zeros(&serial.to_ascii_uppercase()))
}

fn strip_zeros(hex: &str) -> String {
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Which verification keys are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    PublicKey,
    Certificates,
    /// Both, as during WeChat's migration ramp.
    PublicKeyAndCertificates,
}

impl std::fmt::Display for KeyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyMode::PublicKey => "platform public key",
            KeyMode::Certificates => "platform certificates",
            KeyMode::PublicKeyAndCertificates => "platform public key and certificates",
        })
    }
}

/// The key chosen for one `Wechatpay-Serial`.
#[derive(Debug, Clone, Copy)]
pub enum SelectedKey<'a> {
    PublicKey(&'a PlatformPublicKey),
    /// Possibly expired: see [`PlatformCertificate::is_expired`] to warn about it.
    Certificate(&'a PlatformCertificate),
}

impl<'a> SelectedKey<'a> {
    pub fn key(&self) -> &'a VerifyingKey {
        match self {
            SelectedKey::PublicKey(p) => p.key(),
            SelectedKey::Certificate(c) => c.key(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No configured key carries this serial; reason code `unknown_serial`.
    #[error("no platform key or certificate with serial {0:?}")]
    UnknownSerial(String),
    /// The key exists but the signature does not match the message.
    #[error("the platform signature does not verify")]
    BadSignature,
}

/// All configured platform verification keys.
#[derive(Debug, Clone)]
pub struct PlatformKeys {
    public_key: Option<PlatformPublicKey>,
    certificates: Vec<PlatformCertificate>,
}

impl PlatformKeys {
    /// At least one key is needed; two certificates with one serial are a configuration
    /// mistake (which would verify is undefined), so they are refused.
    pub fn new(
        public_key: Option<PlatformPublicKey>,
        certificates: Vec<PlatformCertificate>,
    ) -> Result<Self, PlatformKeyError> {
        if public_key.is_none() && certificates.is_empty() {
            return Err(PlatformKeyError::Empty);
        }
        for (i, cert) in certificates.iter().enumerate() {
            if certificates[..i].iter().any(|c| c.serial == cert.serial) {
                return Err(PlatformKeyError::DuplicateSerial(cert.serial.clone()));
            }
        }
        Ok(PlatformKeys {
            public_key,
            certificates,
        })
    }

    pub fn mode(&self) -> KeyMode {
        match (&self.public_key, self.certificates.is_empty()) {
            (Some(_), true) => KeyMode::PublicKey,
            (Some(_), false) => KeyMode::PublicKeyAndCertificates,
            (None, _) => KeyMode::Certificates,
        }
    }

    pub fn public_key(&self) -> Option<&PlatformPublicKey> {
        self.public_key.as_ref()
    }

    pub fn certificates(&self) -> &[PlatformCertificate] {
        &self.certificates
    }

    /// The key for a `Wechatpay-Serial`: the public key when the serial is its id, else
    /// the certificate with that serial, expired or not.
    pub fn select(&self, serial: &str) -> Result<SelectedKey<'_>, VerifyError> {
        if let Some(public) = self.public_key.as_ref().filter(|p| p.id == serial) {
            return Ok(SelectedKey::PublicKey(public));
        }
        self.certificates
            .iter()
            .find(|c| c.has_serial(serial))
            .map(SelectedKey::Certificate)
            .ok_or_else(|| VerifyError::UnknownSerial(serial.to_owned()))
    }

    /// Verifies a platform signature (answer or notification) over
    /// `timestamp\nnonce\nbody\n` with the key `serial` selects. Freshness of `timestamp`
    /// is the caller's check: it needs the application clock.
    pub fn verify(
        &self,
        serial: &str,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
        signature_b64: &str,
    ) -> Result<SelectedKey<'_>, VerifyError> {
        let selected = self.select(serial)?;
        if verify_platform_signature(selected.key(), timestamp, nonce, body, signature_b64) {
            Ok(selected)
        } else {
            Err(VerifyError::BadSignature)
        }
    }

    /// Certificates that are expired or expire within [`EXPIRY_WARNING_DAYS`] of `now`.
    pub fn expiring_soon(&self, now: DateTime<Utc>) -> Vec<&PlatformCertificate> {
        self.certificates.iter().filter(|c| c.expires_soon(now)).collect()
    }

    /// One line for the start-up log: mode, public key id, each certificate's serial and
    /// expiry.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("mode: {}", self.mode())];
        if let Some(public) = &self.public_key {
            parts.push(format!("public key id {}", public.id));
        }
        for cert in &self.certificates {
            parts.push(format!(
                "certificate {} valid until {}",
                cert.serial,
                cert.not_after.format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/");

    /// A self-signed P-256 certificate: well-formed, but not an RSA key.
    const EC_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----
MIIBeTCCAR+gAwIBAgIUek+VNwuV+8YoqBUam7ROnmm2OMUwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHZWMgdGVzdDAeFw0yNjExMzAxNTMwMTNaFw0yNjEyMDExNTMw
MTNaMBIxEDAOBgNVBAMMB2VjIHRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAQVr67ftlxb64QV+TX1KDRBlNe7Yv4PXCLXo0cy3e8jYdIgTawZbcEwVdJULARL
8vrVsDUDKBWi019A7soZvtUQo1MwUTAdBgNVHQ4EFgQUZWhQWW9HcnFuDue6QyBA
N9tjGUowHwYDVR0jBBgwFoAUZWhQWW9HcnFuDue6QyBAN9tjGUowDwYDVR0TAQH/
BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAwTeTIgr2KtFCf34OQ2sCaZdw1YYD
dO1geKQhfxYNIgcCIDpAQh7oboQhG/muebAozyXShV0kvVbXD3Sd5FzpNK5z
-----END CERTIFICATE-----\n";

    fn vector(name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(format!("{VECTORS}{name}")).unwrap()).unwrap()
    }

    fn key_text(name: &str) -> String {
        std::fs::read_to_string(format!("{VECTORS}keys/{name}")).unwrap()
    }

    fn public_key() -> PlatformPublicKey {
        let id = vector("wechat_notify.json")["platform_serial"]
            .as_str()
            .unwrap()
            .to_owned();
        PlatformPublicKey::from_pem(id, &key_text("wechat_platform_public.pem")).unwrap()
    }

    fn certificate() -> PlatformCertificate {
        let mut certs = PlatformCertificate::parse_pem(&key_text("wechat_platform_cert.pem")).unwrap();
        assert_eq!(certs.len(), 1);
        certs.remove(0)
    }

    /// Verifies a vector's notification with `keys`, using `serial` as `Wechatpay-Serial`.
    fn verify_vector<'k>(
        keys: &'k PlatformKeys,
        v: &Value,
        serial: &str,
        body: &[u8],
    ) -> Result<SelectedKey<'k>, VerifyError> {
        let h = &v["headers"];
        keys.verify(
            serial,
            h["Wechatpay-Timestamp"].as_str().unwrap(),
            h["Wechatpay-Nonce"].as_str().unwrap(),
            body,
            h["Wechatpay-Signature"].as_str().unwrap(),
        )
    }

    fn header<'a>(v: &'a Value, name: &str) -> &'a str {
        v["headers"][name].as_str().unwrap()
    }

    #[test]
    fn certificate_serial_and_not_after_are_read_from_the_vector_certificate() {
        let v = vector("wechat_notify_cert.json");
        let cert = certificate();
        assert_eq!(cert.serial(), v["certificate_serial"].as_str().unwrap());
        let not_after: DateTime<Utc> = v["certificate_not_after"].as_str().unwrap().parse().unwrap();
        assert_eq!(cert.not_after(), not_after);
        assert_eq!(
            cert.not_before(),
            "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn public_key_mode_notification_vector_verifies_with_the_public_key_chosen_by_its_id() {
        let v = vector("wechat_notify.json");
        let keys = PlatformKeys::new(Some(public_key()), vec![certificate()]).unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        let selected = verify_vector(&keys, &v, header(&v, "Wechatpay-Serial"), body).unwrap();
        assert!(matches!(selected, SelectedKey::PublicKey(p) if p.id() == header(&v, "Wechatpay-Serial")));
        // The same signature presented under the certificate's serial uses the wrong key.
        let cert_serial = certificate().serial().to_owned();
        assert_eq!(
            verify_vector(&keys, &v, &cert_serial, body).unwrap_err(),
            VerifyError::BadSignature
        );
    }

    #[test]
    fn certificate_mode_notification_vector_verifies_with_the_certificate_chosen_by_its_serial() {
        let v = vector("wechat_notify_cert.json");
        let keys = PlatformKeys::new(Some(public_key()), vec![certificate()]).unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        assert_eq!(
            super::super::sign::platform_message(
                header(&v, "Wechatpay-Timestamp"),
                header(&v, "Wechatpay-Nonce"),
                body
            ),
            v["message"].as_str().unwrap().as_bytes()
        );
        let selected = verify_vector(&keys, &v, header(&v, "Wechatpay-Serial"), body).unwrap();
        assert!(
            matches!(selected, SelectedKey::Certificate(c) if c.serial() == header(&v, "Wechatpay-Serial"))
        );
        let public_id = public_key().id().to_owned();
        assert_eq!(
            verify_vector(&keys, &v, &public_id, body).unwrap_err(),
            VerifyError::BadSignature
        );
    }

    #[test]
    fn certificate_serial_matches_in_any_case_and_with_leading_zeros_but_not_otherwise() {
        let v = vector("wechat_notify_cert.json");
        let keys = PlatformKeys::new(None, vec![certificate()]).unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        let serial = header(&v, "Wechatpay-Serial");
        for spelling in [
            serial.to_owned(),
            serial.to_ascii_lowercase(),
            format!("00{serial}"),
            format!("0{}", serial.to_ascii_lowercase()),
        ] {
            assert!(verify_vector(&keys, &v, &spelling, body).is_ok(), "{spelling}");
        }
        for other in [
            &serial[1..],
            &format!("{serial}0"),
            &format!("0x{serial}"),
            &format!(" {serial}"),
            "",
            "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
        ] {
            assert_eq!(
                verify_vector(&keys, &v, other, body).unwrap_err(),
                VerifyError::UnknownSerial(other.to_owned()),
                "{other:?}"
            );
        }
    }

    #[test]
    fn unknown_serial_is_refused_in_every_mode_and_public_key_ids_match_exactly() {
        let v = vector("wechat_notify.json");
        let body = v["body"].as_str().unwrap().as_bytes();
        let unknown = "PUB_KEY_ID_0112345678202611240000000000000002";
        for keys in [
            PlatformKeys::new(Some(public_key()), vec![]).unwrap(),
            PlatformKeys::new(None, vec![certificate()]).unwrap(),
            PlatformKeys::new(Some(public_key()), vec![certificate()]).unwrap(),
        ] {
            assert_eq!(
                verify_vector(&keys, &v, unknown, body).unwrap_err(),
                VerifyError::UnknownSerial(unknown.into())
            );
        }
        // Public key id comparison is exact: it is an id, not a number.
        let keys = PlatformKeys::new(Some(public_key()), vec![]).unwrap();
        let lower = header(&v, "Wechatpay-Serial").to_ascii_lowercase();
        assert!(matches!(
            verify_vector(&keys, &v, &lower, body),
            Err(VerifyError::UnknownSerial(_))
        ));
    }

    #[test]
    fn a_changed_body_timestamp_nonce_or_signature_or_another_key_fails_verification() {
        let v = vector("wechat_notify.json");
        let serial = header(&v, "Wechatpay-Serial");
        let (ts, nonce, sig) = (
            header(&v, "Wechatpay-Timestamp"),
            header(&v, "Wechatpay-Nonce"),
            header(&v, "Wechatpay-Signature"),
        );
        let body = v["body"].as_str().unwrap().as_bytes();
        let keys = PlatformKeys::new(Some(public_key()), vec![]).unwrap();
        assert!(keys.verify(serial, ts, nonce, body, sig).is_ok());

        let mut tampered = body.to_vec();
        let at = v["body"].as_str().unwrap().find("EV-").unwrap() + 3;
        tampered[at] ^= 1;
        assert_eq!(
            keys.verify(serial, ts, nonce, &tampered, sig).unwrap_err(),
            VerifyError::BadSignature
        );
        let mut trailing = body.to_vec();
        trailing.push(b'\n');
        assert_eq!(
            keys.verify(serial, ts, nonce, &trailing, sig).unwrap_err(),
            VerifyError::BadSignature
        );
        assert_eq!(
            keys.verify(serial, "1795000007", nonce, body, sig).unwrap_err(),
            VerifyError::BadSignature
        );
        assert_eq!(
            keys.verify(serial, ts, "Q7Z4R0S1T2U3V4W6", body, sig)
                .unwrap_err(),
            VerifyError::BadSignature
        );
        assert_eq!(
            keys.verify(serial, ts, nonce, body, "WECHATPAY/SIGNTEST/abc")
                .unwrap_err(),
            VerifyError::BadSignature
        );
        assert_eq!(
            keys.verify(serial, ts, nonce, body, "").unwrap_err(),
            VerifyError::BadSignature
        );

        // The merchant's key under the platform id: right id, wrong key.
        let impostor = PlatformPublicKey::from_pem(serial, &key_text("wechat_merchant_public.pem")).unwrap();
        let keys = PlatformKeys::new(Some(impostor), vec![]).unwrap();
        assert_eq!(
            keys.verify(serial, ts, nonce, body, sig).unwrap_err(),
            VerifyError::BadSignature
        );
    }

    #[test]
    fn an_expired_certificate_still_verifies_and_is_reported_as_expiring() {
        let v = vector("wechat_notify_cert.json");
        let cert = certificate();
        let after_expiry = cert.not_after() + Duration::days(1);
        assert!(cert.is_expired(after_expiry));
        let keys = PlatformKeys::new(None, vec![cert]).unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        assert!(verify_vector(&keys, &v, header(&v, "Wechatpay-Serial"), body).is_ok());
        assert_eq!(keys.expiring_soon(after_expiry).len(), 1);
    }

    #[test]
    fn using_an_expired_certificate_is_worth_a_warning_once_an_hour_shared_by_its_copies() {
        let cert = certificate();
        let copy = cert.clone();
        let expired = cert.not_after() + Duration::seconds(1);
        assert!(
            !cert.expired_use_worth_warning(cert.not_after()),
            "not expired yet"
        );
        assert!(cert.expired_use_worth_warning(expired));
        assert!(!cert.expired_use_worth_warning(expired));
        assert!(!copy.expired_use_worth_warning(expired + Duration::seconds(3599)));
        assert!(copy.expired_use_worth_warning(expired + Duration::seconds(3600)));
        assert!(!cert.expired_use_worth_warning(expired + Duration::seconds(3601)));
        let other = certificate();
        assert!(
            other.expired_use_worth_warning(expired),
            "each certificate for itself"
        );
    }

    #[test]
    fn expiry_warning_starts_thirty_days_before_not_after() {
        let cert = certificate();
        let edge = cert.not_after() - Duration::days(EXPIRY_WARNING_DAYS);
        assert!(!cert.expires_soon(edge - Duration::seconds(1)));
        assert!(cert.expires_soon(edge));
        assert!(!cert.is_expired(cert.not_after()));
        assert!(cert.is_expired(cert.not_after() + Duration::seconds(1)));
        let keys = PlatformKeys::new(Some(public_key()), vec![cert]).unwrap();
        assert!(keys.expiring_soon(edge - Duration::seconds(1)).is_empty());
        assert_eq!(keys.expiring_soon(edge).len(), 1);
    }

    #[test]
    fn describe_names_the_mode_the_key_id_and_each_certificate_with_its_expiry() {
        let id = public_key().id().to_owned();
        let both = PlatformKeys::new(Some(public_key()), vec![certificate()]).unwrap();
        assert_eq!(both.mode(), KeyMode::PublicKeyAndCertificates);
        assert_eq!(
            both.describe(),
            format!(
                "mode: platform public key and certificates; public key id {id}; certificate 5157F09EFDC096DE15EBE81A47057A7232FE1F5B valid until 2031-01-01T00:00:00Z"
            )
        );
        let public_only = PlatformKeys::new(Some(public_key()), vec![]).unwrap();
        assert_eq!(public_only.mode(), KeyMode::PublicKey);
        assert_eq!(
            public_only.describe(),
            format!("mode: platform public key; public key id {id}")
        );
        assert_eq!(
            PlatformKeys::new(None, vec![certificate()]).unwrap().mode(),
            KeyMode::Certificates
        );
    }

    #[test]
    fn configuration_without_keys_with_a_duplicate_serial_or_a_bad_id_is_refused() {
        assert_eq!(
            PlatformKeys::new(None, vec![]).unwrap_err(),
            PlatformKeyError::Empty
        );
        assert_eq!(
            PlatformKeys::new(None, vec![certificate(), certificate()]).unwrap_err(),
            PlatformKeyError::DuplicateSerial("5157F09EFDC096DE15EBE81A47057A7232FE1F5B".into())
        );
        let pem = key_text("wechat_platform_public.pem");
        for id in [
            "",
            "PUB_KEY_ID_",
            "5157F09EFDC096DE15EBE81A47057A7232FE1F5B",
            "PUB_KEY_ID_1 2",
        ] {
            assert!(
                matches!(
                    PlatformPublicKey::from_pem(id, &pem),
                    Err(PlatformKeyError::BadPublicKeyId(_))
                ),
                "{id:?}"
            );
        }
    }

    #[test]
    fn malformed_certificate_files_are_refused_with_a_reason_not_a_panic() {
        let pem = key_text("wechat_platform_cert.pem");
        let cases = [
            String::new(),
            "\n".to_owned(),
            key_text("wechat_platform_public.pem"),
            pem.replace("-----END CERTIFICATE-----", ""),
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_owned(),
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".to_owned(),
            pem.replacen("MII", "MIJ", 1),
        ];
        for case in &cases {
            assert!(
                matches!(
                    PlatformCertificate::parse_pem(case),
                    Err(PlatformKeyError::BadCertificate(_))
                ),
                "{case:?}"
            );
        }
        let ec = PlatformCertificate::parse_pem(EC_CERTIFICATE).unwrap_err();
        assert!(ec.to_string().contains("WeChat platform keys are RSA"), "{ec}");
        // A bundle with text around the blocks yields each certificate.
        let bundle = format!("subject=…\n{pem}\n# second copy\n{pem}");
        assert_eq!(PlatformCertificate::parse_pem(&bundle).unwrap().len(), 2);
    }
}
