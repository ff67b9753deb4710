//! The sandbox's key pairs, generated on first start and kept under `data/sandbox/`:
//! per platform, the merchant key (kassa signs requests with it) and the platform key
//! (the sandbox signs responses and notifications with it); for WeChat Pay also the
//! APIv3 key and a self-signed platform certificate (`wechat_platform_cert.pem` with its
//! own key, `wechat_platform_cert_private.pem`) for the `certificate_mode` fault switch.

use std::path::{Path, PathBuf};

use crate::domain::ids::random_base62;
use crate::providers::keys::{generate_pem_pair, KeyError, SigningKey, VerifyingKey};
use crate::providers::wechat::{ApiV3Key, PlatformCertificate};

pub const APP_PRIVATE: &str = "alipay_app_private.pem";
pub const APP_PUBLIC: &str = "alipay_app_public.pem";
pub const PLATFORM_PRIVATE: &str = "alipay_platform_private.pem";
pub const PLATFORM_PUBLIC: &str = "alipay_platform_public.pem";
pub const WECHAT_MERCHANT_PRIVATE: &str = "wechat_merchant_private.pem";
pub const WECHAT_MERCHANT_PUBLIC: &str = "wechat_merchant_public.pem";
pub const WECHAT_PLATFORM_PRIVATE: &str = "wechat_platform_private.pem";
pub const WECHAT_PLATFORM_PUBLIC: &str = "wechat_platform_public.pem";
pub const WECHAT_APIV3_KEY: &str = "wechat_apiv3_key";
pub const WECHAT_CERTIFICATE: &str = "wechat_platform_cert.pem";
pub const WECHAT_CERTIFICATE_PRIVATE: &str = "wechat_platform_cert_private.pem";
/// The sandbox's own token: fault switches from a host other than this one need it.
pub const TOKEN: &str = "token";

/// The simulated WeChat Pay merchant.
pub const WECHAT_MCHID: &str = "1230000000";
pub const WECHAT_APPID: &str = "wx00000000sandbox0";
/// The serial of the simulated merchant API certificate (any hex; checked by name only).
pub const WECHAT_MERCHANT_SERIAL_NO: &str = "5A4D53414E44424F5800000000000000000000";
/// The id of the sandbox's platform public key.
pub const WECHAT_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0112300000002026SANDBOX0000001";

/// The sandbox's WeChat Pay side.
pub struct WechatSandboxKeys {
    /// Verifies kassa's requests, as WeChat does with the merchant API certificate.
    pub merchant_public: VerifyingKey,
    pub platform_private: SigningKey,
    pub apiv3: ApiV3Key,
    /// A platform certificate and its key, when one is installed: `certificate_mode`
    /// signs with it.
    pub certificate: Option<(PlatformCertificate, SigningKey)>,
}

pub struct SandboxKeys {
    pub dir: PathBuf,
    /// Verifies kassa's requests, as Alipay does with the uploaded app public key.
    pub app_public: VerifyingKey,
    pub platform_private: SigningKey,
    pub wechat: WechatSandboxKeys,
    /// Opens the fault switches to clients that are not on loopback; also keys the
    /// wallet forms' anti-forgery tokens.
    pub token: String,
}

impl SandboxKeys {
    pub fn wechat_merchant_private_path(&self) -> PathBuf {
        self.dir.join(WECHAT_MERCHANT_PRIVATE)
    }

    pub fn wechat_platform_public_path(&self) -> PathBuf {
        self.dir.join(WECHAT_PLATFORM_PUBLIC)
    }

    pub fn wechat_certificate_path(&self) -> Option<PathBuf> {
        self.wechat
            .certificate
            .as_ref()
            .map(|_| self.dir.join(WECHAT_CERTIFICATE))
    }

    pub fn app_private_path(&self) -> PathBuf {
        self.dir.join(APP_PRIVATE)
    }

    pub fn platform_public_path(&self) -> PathBuf {
        self.dir.join(PLATFORM_PUBLIC)
    }
}

fn write_private(path: &Path, pem: &str) -> Result<(), KeyError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| KeyError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    file.write_all(pem.as_bytes()).map_err(|e| KeyError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn ensure_pair(dir: &Path, private: &str, public: &str) -> Result<(), KeyError> {
    if dir.join(private).exists() && dir.join(public).exists() {
        return Ok(());
    }
    let (private_pem, public_pem) = generate_pem_pair()?;
    let _ = std::fs::remove_file(dir.join(private));
    write_private(&dir.join(private), &private_pem)?;
    // Public, but owner-only like everything else in the data directory: nobody else
    // needs it, and one rule is easier to check than a list of exceptions.
    let _ = std::fs::remove_file(dir.join(public));
    write_private(&dir.join(public), &public_pem)
}

/// A random secret kept in `path` (made on first use, 0600), trimmed.
fn ensure_secret(path: &Path) -> Result<String, KeyError> {
    if !path.exists() {
        write_private(path, &random_base62(32))?;
    }
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(text.trim().to_owned())
}

/// Loads the sandbox keys from `data_dir/sandbox`, generating missing pairs.
pub fn ensure(data_dir: &Path) -> Result<SandboxKeys, KeyError> {
    let dir = data_dir.join("sandbox");
    crate::db::create_private_dir(&dir).map_err(|e| KeyError::Unreadable {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    ensure_pair(&dir, APP_PRIVATE, APP_PUBLIC)?;
    ensure_pair(&dir, PLATFORM_PRIVATE, PLATFORM_PUBLIC)?;
    ensure_pair(&dir, WECHAT_MERCHANT_PRIVATE, WECHAT_MERCHANT_PUBLIC)?;
    ensure_pair(&dir, WECHAT_PLATFORM_PRIVATE, WECHAT_PLATFORM_PUBLIC)?;
    let unreadable = |path: &Path, reason: String| KeyError::Unreadable {
        path: path.display().to_string(),
        reason,
    };
    let token_path = dir.join(TOKEN);
    let token = ensure_secret(&token_path)?;
    if token.len() < 16 {
        return Err(unreadable(
            &token_path,
            "the sandbox token is shorter than 16 characters; delete the file and kassa makes a new one"
                .into(),
        ));
    }
    let apiv3_path = dir.join(WECHAT_APIV3_KEY);
    let apiv3 = ApiV3Key::new(ensure_secret(&apiv3_path)?.as_bytes())
        .map_err(|e| unreadable(&apiv3_path, e.to_string()))?;
    let cert_path = dir.join(WECHAT_CERTIFICATE);
    let cert_key_path = dir.join(WECHAT_CERTIFICATE_PRIVATE);
    if !cert_path.exists() || !cert_key_path.exists() {
        let (private_pem, public_pem) = generate_pem_pair()?;
        let key = SigningKey::from_pem(&private_pem)?;
        let pem = self_signed_certificate(&key, &public_pem, chrono::Utc::now())?;
        let _ = std::fs::remove_file(&cert_key_path);
        write_private(&cert_key_path, &private_pem)?;
        let _ = std::fs::remove_file(&cert_path);
        write_private(&cert_path, &pem)?;
    }
    let certificate = if cert_path.exists() {
        let cert = PlatformCertificate::from_file(&cert_path)
            .map_err(|e| unreadable(&cert_path, e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| unreadable(&cert_path, "no certificate in the file".into()))?;
        Some((
            cert,
            SigningKey::from_file(&dir.join(WECHAT_CERTIFICATE_PRIVATE))?,
        ))
    } else {
        None
    };
    Ok(SandboxKeys {
        app_public: VerifyingKey::from_file(&dir.join(APP_PUBLIC))?,
        platform_private: SigningKey::from_file(&dir.join(PLATFORM_PRIVATE))?,
        wechat: WechatSandboxKeys {
            merchant_public: VerifyingKey::from_file(&dir.join(WECHAT_MERCHANT_PUBLIC))?,
            platform_private: SigningKey::from_file(&dir.join(WECHAT_PLATFORM_PRIVATE))?,
            apiv3,
            certificate,
        },
        token,
        dir,
    })
}

/// A self-signed platform certificate for the `certificate_mode` fault switch: WeChat's
/// certificates are RSA with SHA256withRSA, named by their serial in hex. Valid from a
/// day before `now` for ten years.
fn self_signed_certificate(
    key: &SigningKey,
    public_pem: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, KeyError> {
    use std::str::FromStr;

    use base64::Engine;
    use x509_cert::certificate::{Certificate, TbsCertificate, Version};
    use x509_cert::der::asn1::{BitString, UtcTime};
    use x509_cert::der::pem::LineEnding;
    use x509_cert::der::{Any, DecodePem, Encode, EncodePem};
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier, SubjectPublicKeyInfoOwned};
    use x509_cert::time::{Time, Validity};

    let bad = |e: &dyn std::fmt::Display| KeyError::Invalid(format!("sandbox platform certificate: {e}"));
    let algorithm = AlgorithmIdentifierOwned {
        // sha256WithRSAEncryption, parameters NULL.
        oid: ObjectIdentifier::new("1.2.840.113549.1.1.11").map_err(|e| bad(&e))?,
        parameters: Some(Any::null()),
    };
    let mut serial = crate::domain::ids::random_bytes::<16>();
    // A positive serial without a leading zero byte.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let at = |t: chrono::DateTime<chrono::Utc>| -> Result<Time, KeyError> {
        let secs = u64::try_from(t.timestamp()).map_err(|e| bad(&e))?;
        Ok(UtcTime::from_unix_duration(std::time::Duration::from_secs(secs))
            .map_err(|e| bad(&e))?
            .into())
    };
    let name = Name::from_str("C=CN,O=kassa sandbox,CN=kassa sandbox WeChat Pay platform certificate")
        .map_err(|e| bad(&e))?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(|e| bad(&e))?,
        signature: algorithm.clone(),
        issuer: name.clone(),
        validity: Validity {
            not_before: at(now - chrono::Duration::days(1))?,
            not_after: at(now + chrono::Duration::days(3650))?,
        },
        subject: name,
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_pem(public_pem).map_err(|e| bad(&e))?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: None,
    };
    let signed = key.sign_base64(&tbs.to_der().map_err(|e| bad(&e))?);
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signed)
        .map_err(|e| bad(&e))?;
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(&signature).map_err(|e| bad(&e))?,
    }
    .to_pem(LineEnding::LF)
    .map_err(|e| bad(&e))
}

/// The APIv3 key as kassa's client of the sandbox reads it.
pub fn wechat_apiv3(keys: &SandboxKeys) -> ApiV3Key {
    keys.wechat.apiv3.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::wechat::sign::{platform_message, verify_platform_signature};

    #[test]
    fn a_first_start_generates_every_key_and_a_platform_certificate_kassa_can_verify_with() {
        let dir = tempfile::tempdir().unwrap();

        let keys = ensure(dir.path()).unwrap();
        let again = ensure(dir.path()).unwrap();

        let (cert, key) = keys.wechat.certificate.as_ref().expect("a certificate");
        let now = chrono::Utc::now();
        assert!(cert.not_before() < now && !cert.expires_soon(now), "{cert:?}");
        let message = platform_message("1795000000", "NONCE", b"{}");
        let signature = key.sign_base64(&message);
        assert!(verify_platform_signature(
            cert.key(),
            "1795000000",
            "NONCE",
            b"{}",
            &signature
        ));
        assert_eq!(
            again
                .wechat
                .certificate
                .as_ref()
                .map(|(c, _)| c.serial().to_owned()),
            Some(cert.serial().to_owned()),
            "kept, not made again"
        );
        assert!(cert.serial().len() >= 30 && cert.serial().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            keys.wechat
                .apiv3
                .clone()
                .encrypt("ABCDEFGHIJKL", "", b"x")
                .unwrap()
                .len(),
            24
        );
        let apiv3 = std::fs::read_to_string(dir.path().join("sandbox").join(WECHAT_APIV3_KEY)).unwrap();
        assert_eq!(apiv3.len(), 32);
    }
}
