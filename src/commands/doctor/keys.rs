//! The payment platforms' keys: each file a well-formed RSA key, the keys that must
//! belong together doing so, and none of the platform's keys mixed up with the
//! merchant's own (the most common mistake: pasting the app public key where the
//! platform's public key belongs).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::Check;
use crate::config::keys as k;
use crate::config::Settings;
use crate::providers::keys::{SigningKey, VerifyingKey};
use crate::providers::wechat::platform_keys::{PlatformKeyError, EXPIRY_WARNING_DAYS};
use crate::providers::wechat::{PlatformCertificate, PlatformPublicKey};

/// Signed with a private key and checked with a public one: they belong together
/// exactly when the signature verifies (RSA keys carry no other link kassa can see).
const PROBE: &[u8] = b"kassa doctor: do these keys belong together?";

fn belong_together(private: &SigningKey, public: &VerifyingKey) -> bool {
    public.verify_base64(PROBE, &private.sign_base64(PROBE))
}

/// The PEM label says which encoding a private key file uses.
fn private_format(path: &Path) -> &'static str {
    match std::fs::read_to_string(path) {
        Ok(text) if text.contains("BEGIN RSA PRIVATE KEY") => "PKCS#1",
        Ok(text) if text.contains("BEGIN PRIVATE KEY") => "PKCS#8",
        _ => "PEM",
    }
}

/// A private key other users on the machine can read is a leaked key.
#[cfg(unix)]
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn readable_by_others(_path: &Path) -> Option<u32> {
    None
}

fn private_key(key: &str, path: Option<&PathBuf>, what: &str, fix: &str) -> (Vec<Check>, Option<SigningKey>) {
    let Some(path) = path else {
        return (vec![Check::problem(key, "is not set").fix(fix.to_owned())], None);
    };
    match SigningKey::from_file(path) {
        Ok(signing) => {
            let mut checks = vec![Check::ok(
                key,
                format!(
                    "{} holds a usable RSA private key ({}): the {what}",
                    path.display(),
                    private_format(path)
                ),
            )];
            if let Some(mode) = readable_by_others(path) {
                checks.push(
                    Check::warning(
                        key,
                        format!("{} can be read by other users (mode {mode:o})", path.display()),
                    )
                    .fix(format!(
                        "chmod 600 {} (readable by the user kassa runs as only)",
                        path.display()
                    )),
                );
            }
            (checks, Some(signing))
        }
        Err(e) => (
            vec![Check::problem(key, format!("{e}")).fix(fix.to_owned())],
            None,
        ),
    }
}

fn public_key(key: &str, path: Option<&PathBuf>, what: &str, fix: &str) -> (Check, Option<VerifyingKey>) {
    let Some(path) = path else {
        return (Check::problem(key, "is not set").fix(fix.to_owned()), None);
    };
    match VerifyingKey::from_file(path) {
        Ok(verifying) => (
            Check::ok(
                key,
                format!("{} holds a usable RSA public key: the {what}", path.display()),
            ),
            Some(verifying),
        ),
        Err(e) => (Check::problem(key, format!("{e}")).fix(fix.to_owned()), None),
    }
}

pub fn alipay(settings: &Settings, app_public: Option<&Path>) -> Vec<Check> {
    let a = &settings.alipay;
    let mut checks = Vec::new();
    let (found, app) = private_key(
        k::ALIPAY_APP_PRIVATE_KEY_FILE.name,
        a.app_private_key_file.as_ref(),
        "app private key kassa signs requests with",
        "point it at the app private key (应用私钥) generated with Alipay's key tool, PEM, PKCS#1 or PKCS#8",
    );
    checks.extend(found);
    let (found, alipay) = public_key(
        k::ALIPAY_ALIPAY_PUBLIC_KEY_FILE.name,
        a.alipay_public_key_file.as_ref(),
        "Alipay public key kassa checks notifications with",
        "copy the Alipay public key (支付宝公钥) from the open platform's 接口加签方式 page into a PEM file (-----BEGIN PUBLIC KEY-----)",
    );
    checks.push(found);
    if let (Some(app), Some(alipay)) = (&app, &alipay) {
        if belong_together(app, alipay) {
            checks.push(
                Check::problem(
                    k::ALIPAY_ALIPAY_PUBLIC_KEY_FILE.name,
                    "holds the public half of your own app private key, not Alipay's public key: every notification would be rejected",
                )
                .fix("on the open platform's 接口加签方式 page copy 支付宝公钥 (Alipay public key), not 应用公钥 (app public key)"),
            );
        }
    }
    let subject = k::ALIPAY_APP_PRIVATE_KEY_FILE.name;
    match (app_public, &app) {
        (None, _) => checks.push(Check::skipped(
            subject,
            "not compared with the app public key registered on Alipay; pass --alipay-app-public-key FILE (the 应用公钥 you uploaded) to compare",
        )),
        (Some(path), app) => match (VerifyingKey::from_file(path), app) {
            (Err(e), _) => checks.push(
                Check::problem("--alipay-app-public-key", format!("{e}"))
                    .fix("pass the app public key file (PEM, -----BEGIN PUBLIC KEY-----)"),
            ),
            (Ok(_), None) => {}
            (Ok(public), Some(app)) if belong_together(app, &public) => checks.push(Check::ok(
                subject,
                format!(
                    "matches the app public key in {} (registered on Alipay)",
                    path.display()
                ),
            )),
            (Ok(_), Some(_)) => checks.push(
                Check::problem(
                    subject,
                    format!(
                        "does not match the app public key in {} registered on Alipay: Alipay would reject every request kassa signs",
                        path.display()
                    ),
                )
                .fix("configure the private key generated together with the uploaded public key, or upload this private key's public half as 应用公钥"),
            ),
        },
    }
    checks
}

pub fn wechat(settings: &Settings, now: DateTime<Utc>) -> Vec<Check> {
    let w = &settings.wechat;
    let mut checks = Vec::new();
    let (found, merchant) = private_key(
        k::WECHAT_MERCHANT_PRIVATE_KEY_FILE.name,
        w.merchant_private_key_file.as_ref(),
        "merchant API private key (apiclient_key.pem)",
        "point it at apiclient_key.pem from the merchant API certificate download",
    );
    checks.extend(found);

    let serial = &w.merchant_serial_no;
    if !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        checks.push(Check::ok(
            k::WECHAT_MERCHANT_SERIAL_NO.name,
            "is a certificate serial number (hex)",
        ));
    } else {
        checks.push(
            Check::problem(
                k::WECHAT_MERCHANT_SERIAL_NO.name,
                "is not a certificate serial number (hex digits): WeChat Pay would reject every request",
            )
            .fix("copy the serial of the merchant API certificate (商户API证书序列号), e.g. `openssl x509 -in apiclient_cert.pem -noout -serial`"),
        );
    }

    // Enforced when the configuration is read; repeated so the report is complete.
    let apiv3 = w.apiv3_key.expose().len();
    if apiv3 == 32 {
        checks.push(Check::ok(k::WECHAT_APIV3_KEY.name, "is 32 bytes"));
    } else {
        checks.push(
            Check::problem(
                k::WECHAT_APIV3_KEY.name,
                format!("is {apiv3} bytes; WeChat Pay's APIv3 key is exactly 32"),
            )
            .fix("copy the APIv3 key set in the merchant platform (API安全 → APIv3密钥)"),
        );
    }

    if let Some(path) = &w.platform_public_key_file {
        match PlatformPublicKey::from_file(w.platform_public_key_id.clone(), path) {
            Ok(public) => {
                checks.push(Check::ok(
                    k::WECHAT_PLATFORM_PUBLIC_KEY_FILE.name,
                    format!(
                        "{} holds a usable RSA public key, id {}",
                        path.display(),
                        public.id()
                    ),
                ));
                if merchant
                    .as_ref()
                    .is_some_and(|m| belong_together(m, public.key()))
                {
                    checks.push(
                        Check::problem(
                            k::WECHAT_PLATFORM_PUBLIC_KEY_FILE.name,
                            "holds the public half of your own merchant key, not WeChat Pay's public key: every notification would be rejected",
                        )
                        .fix("download the WeChat Pay public key (微信支付公钥) from the merchant platform's API安全 page"),
                    );
                }
            }
            Err(PlatformKeyError::BadPublicKeyId(id)) => checks.push(
                Check::problem(
                    k::WECHAT_PLATFORM_PUBLIC_KEY_ID.name,
                    format!("{id:?} is not a platform public key id (PUB_KEY_ID_…)"),
                )
                .fix("copy the public key id shown beside the WeChat Pay public key"),
            ),
            Err(e) => checks.push(
                Check::problem(k::WECHAT_PLATFORM_PUBLIC_KEY_FILE.name, e.to_string())
                    .fix("download the WeChat Pay public key (微信支付公钥, PEM) from the merchant platform"),
            ),
        }
    }

    let subject = k::WECHAT_PLATFORM_CERTIFICATE_FILES.name;
    let renew = "download the current platform certificate (or switch to the WeChat Pay public key, which does not expire)";
    for path in &w.platform_certificate_files {
        match PlatformCertificate::from_file(path) {
            Err(e) => checks.push(
                Check::problem(subject, e.to_string()).fix("give PEM files holding platform certificates"),
            ),
            Ok(certificates) => {
                for cert in certificates {
                    let what = format!(
                        "certificate {} in {} (valid until {})",
                        cert.serial(),
                        path.display(),
                        cert.not_after().format("%Y-%m-%d %H:%M UTC")
                    );
                    checks.push(if cert.is_expired(now) {
                        Check::problem(subject, format!("{what} has expired")).fix(renew)
                    } else if cert.expires_soon(now) {
                        let days = (cert.not_after() - now).num_days();
                        Check::warning(
                            subject,
                            format!("{what} expires in {days} day(s), within {EXPIRY_WARNING_DAYS}"),
                        )
                        .fix(renew)
                    } else {
                        Check::ok(subject, what)
                    });
                }
            }
        }
    }
    checks
}
