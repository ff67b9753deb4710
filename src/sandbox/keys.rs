//! The sandbox's keys, generated on first start: per platform, the merchant key (kassa
//! signs requests with it) and the platform key (the sandbox signs responses and
//! notifications with it); for WeChat Pay also the APIv3 key and a self-signed platform
//! certificate (`wechat_platform_cert.pem` with its own key,
//! `wechat_platform_cert_private.pem`) for the `certificate_mode` fault switch; and the
//! sandbox token.
//!
//! They live in the database's `secrets` table (rows `sandbox/<file name>`), so every
//! process on one database signs and verifies with the same keys. The files under
//! `data/sandbox/` are copies written from the rows: a merchant's provider settings and
//! the docs point at them, and an older kassa's files are imported from there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::db::{secrets, DbError, DbTarget, Offline};
use crate::domain::ids::random_base62;
use crate::providers::keys::{generate_pem_pair, KeyError, SigningKey, VerifyingKey};
use crate::providers::wechat::{ApiV3Key, PlatformCertificate, PlatformPublicKey};

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

/// kassa's side of the sandbox: the keys its own Alipay and WeChat Pay clients use when
/// no real account is configured.
pub struct ClientKeys {
    /// PEM: signing keys are not `Clone`, and each client takes its own.
    pub alipay_app_private: String,
    pub alipay_platform_public: VerifyingKey,
    pub wechat_merchant_private: String,
    pub wechat_platform_public: PlatformPublicKey,
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
    pub client: ClientKeys,
}

#[derive(Debug, thiserror::Error)]
pub enum EnsureError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the secrets table: {0}")]
    Db(#[from] DbError),
    /// Another row of its group is stored: a fresh value would not match it.
    #[error("secrets row {row} is missing while the rest of its group is stored; {recover}")]
    Missing { row: String, recover: String },
    /// Not a read error: the usual cause is a data directory kassa may not write.
    #[error("cannot write {path}: {reason}")]
    Unwritable { path: String, reason: String },
}

fn unwritable(path: &Path, e: &std::io::Error) -> EnsureError {
    EnsureError::Unwritable {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Values made together: a group's rows are stored in one transaction and imported
/// only whole, so a key pair never mixes two generations.
enum Group {
    /// A private key and its public key.
    Pair(&'static str, &'static str),
    /// A random string.
    Secret(&'static str),
    /// The self-signed platform certificate and its key.
    Certificate,
}

const GROUPS: [Group; 7] = [
    Group::Pair(APP_PRIVATE, APP_PUBLIC),
    Group::Pair(PLATFORM_PRIVATE, PLATFORM_PUBLIC),
    Group::Pair(WECHAT_MERCHANT_PRIVATE, WECHAT_MERCHANT_PUBLIC),
    Group::Pair(WECHAT_PLATFORM_PRIVATE, WECHAT_PLATFORM_PUBLIC),
    Group::Secret(TOKEN),
    Group::Secret(WECHAT_APIV3_KEY),
    Group::Certificate,
];

impl Group {
    fn files(&self) -> Vec<&'static str> {
        match self {
            Group::Pair(private, public) => vec![private, public],
            Group::Secret(file) => vec![file],
            Group::Certificate => vec![WECHAT_CERTIFICATE, WECHAT_CERTIFICATE_PRIVATE],
        }
    }

    /// New values, in the order of `files`; a certificate valid from a day before `now`.
    fn generate(&self, now: DateTime<Utc>) -> Result<Vec<Vec<u8>>, KeyError> {
        Ok(match self {
            Group::Pair(..) => {
                let (private_pem, public_pem) = generate_pem_pair()?;
                vec![private_pem.into_bytes(), public_pem.into_bytes()]
            }
            Group::Secret(_) => vec![random_base62(32).into_bytes()],
            Group::Certificate => {
                let (private_pem, public_pem) = generate_pem_pair()?;
                let key = SigningKey::from_pem(&private_pem)?;
                let pem = self_signed_certificate(&key, &public_pem, now)?;
                vec![pem.into_bytes(), private_pem.into_bytes()]
            }
        })
    }
}

/// The `secrets` row holding the sandbox file `file`.
pub fn secret_name(file: &str) -> String {
    format!("sandbox/{file}")
}

/// How to get new values for the group of `file` when its rows are wrong: the group goes
/// as a whole, and the files too, or a start would import them again.
fn recover_rows(dir: &Path, file: &'static str) -> String {
    let group = GROUPS
        .iter()
        .map(Group::files)
        .find(|files| files.contains(&file))
        .unwrap_or_else(|| vec![file]);
    let rows: Vec<String> = group.iter().map(|f| secret_name(f)).collect();
    let s = if group.len() == 1 { "" } else { "s" };
    format!(
        "to make new ones, stop every kassa on this database, delete the row{s} {} and the file{s} {} in {}, and start again",
        rows.join(" and "),
        group.join(" and "),
        dir.display()
    )
}

fn write_private(path: &Path, content: &[u8]) -> Result<(), EnsureError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| unwritable(path, &e))?;
    file.write_all(content).map_err(|e| unwritable(path, &e))
}

/// Makes `path` (the copy of row `row`) hold exactly `content`, rewriting it
/// (owner-only, as everything in the data directory, public keys included) when it is
/// missing or differs.
fn sync_file(path: &Path, row: &str, content: &[u8]) -> Result<(), EnsureError> {
    let existing = std::fs::symlink_metadata(path).ok();
    if existing.is_some() && std::fs::read(path).is_ok_and(|current| current == content) {
        return Ok(());
    }
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(unwritable(path, &e));
        }
    }
    write_private(path, content)?;
    // Older kassas kept the keys only in these files, so an operator may have edited one
    // or linked it elsewhere; the row wins, and saying so is the only way they learn it.
    if let Some(was) = existing {
        let link = if was.file_type().is_symlink() {
            " (it was a link; it is now a file, and the link's target is unchanged)"
        } else {
            ""
        };
        tracing::warn!(
            "{} differed from its row {row} in the database; rewritten from the row{link} (edit the row, not the file)",
            path.display()
        );
    }
    Ok(())
}

/// Loads the sandbox keys from the database's `secrets` table. A group missing there is
/// imported from its files under `data_dir/sandbox` when they all exist, else
/// generated; it is stored only if still absent, then read back, so processes starting
/// together on one database end up with the same keys. The files are then rewritten
/// from the rows wherever they differ.
pub fn ensure(data_dir: &Path, target: &DbTarget, now: DateTime<Utc>) -> Result<SandboxKeys, EnsureError> {
    let dir = data_dir.join("sandbox");
    crate::db::create_private_dir(&dir).map_err(|e| unwritable(&dir, &e))?;
    let files: Vec<&'static str> = GROUPS.iter().flat_map(Group::files).collect();
    let mut db = Offline::open_target(target)?;
    let read_all = |tx: &crate::db::Tx<'_>| -> Result<HashMap<&'static str, Vec<u8>>, DbError> {
        let mut found = HashMap::new();
        for file in &files {
            if let Some(value) = secrets::find(tx, &secret_name(file))? {
                found.insert(*file, value);
            }
        }
        Ok(found)
    };
    // One snapshot: read row by row, another process's keys committed in between would
    // look like half a pair.
    let stored = db.immediate(read_all)?;
    let mut offered: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let mut imported = Vec::new();
    for group in &GROUPS {
        let names = group.files();
        if names.iter().any(|f| stored.contains_key(f)) {
            continue;
        }
        let values = if names.iter().all(|f| dir.join(f).exists()) {
            imported.extend(names.iter().copied());
            names
                .iter()
                .map(|f| {
                    let path = dir.join(f);
                    std::fs::read(&path).map_err(|e| KeyError::Unreadable {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            group.generate(now)?
        };
        offered.extend(names.into_iter().zip(values));
    }
    if !offered.is_empty() {
        // An imported file that is no key is refused here, before any row is stored:
        // deleting the file is then enough for kassa to make a new one.
        let mut candidate = stored.clone();
        candidate.extend(offered.iter().map(|(f, v)| (*f, v.clone())));
        load(&dir, &candidate, &imported)?;
    }
    let values = if offered.is_empty() {
        stored
    } else {
        db.immediate(|tx| {
            for (file, value) in &offered {
                secrets::insert_if_absent(tx, &secret_name(file), value, now)?;
            }
            read_all(tx)
        })?
    };
    let keys = load(&dir, &values, &[])?;
    for file in &files {
        if let Some(value) = values.get(file) {
            sync_file(&dir.join(file), &secret_name(file), value)?;
        }
    }
    Ok(keys)
}

/// The keys from `values` (by file name); those named in `imported` came from their
/// files, the others are rows. An error names the file or row and how to recover.
fn load(
    dir: &Path,
    values: &HashMap<&'static str, Vec<u8>>,
    imported: &[&'static str],
) -> Result<SandboxKeys, EnsureError> {
    let origin = |file: &'static str| {
        if imported.contains(&file) {
            dir.join(file).display().to_string()
        } else {
            format!("secrets row {}", secret_name(file))
        }
    };
    let recover = |file: &'static str| {
        if imported.contains(&file) {
            "delete the file and kassa makes a new one".to_owned()
        } else {
            recover_rows(dir, file)
        }
    };
    let invalid = |file: &'static str, e: &dyn std::fmt::Display| {
        KeyError::Invalid(format!("{}: {e}; {}", origin(file), recover(file)))
    };
    let text = |file: &'static str| -> Result<&str, EnsureError> {
        let value = values.get(file).ok_or_else(|| EnsureError::Missing {
            row: secret_name(file),
            recover: recover_rows(dir, file),
        })?;
        Ok(std::str::from_utf8(value).map_err(|e| invalid(file, &e))?)
    };
    let signing = |file| -> Result<SigningKey, EnsureError> {
        Ok(SigningKey::from_pem(text(file)?).map_err(|e| invalid(file, &e))?)
    };
    let verifying = |file| -> Result<VerifyingKey, EnsureError> {
        Ok(VerifyingKey::from_pem(text(file)?).map_err(|e| invalid(file, &e))?)
    };
    // Each value parsing is not enough: a private key imported beside another pair's
    // public key would be kept for good and show only as failed signatures.
    let matching =
        |private: &'static str, public: &'static str, key: &VerifyingKey| -> Result<(), EnsureError> {
            const PROBE: &[u8] = b"kassa sandbox key pair check";
            if key.verify_base64(PROBE, &signing(private)?.sign_base64(PROBE)) {
                return Ok(());
            }
            Err(EnsureError::Key(KeyError::Invalid(format!(
                "{} and {} are not one key pair; {}",
                origin(private),
                origin(public),
                if imported.contains(&private) {
                    "delete both files and kassa makes a new pair".to_owned()
                } else {
                    recover_rows(dir, private)
                }
            ))))
        };
    let token = text(TOKEN)?.trim().to_owned();
    if token.len() < 16 {
        return Err(invalid(TOKEN, &"the sandbox token is shorter than 16 characters").into());
    }
    let apiv3 = ApiV3Key::new(text(WECHAT_APIV3_KEY)?.trim().as_bytes())
        .map_err(|e| invalid(WECHAT_APIV3_KEY, &e))?;
    let cert = PlatformCertificate::parse_pem(text(WECHAT_CERTIFICATE)?)
        .map_err(|e| invalid(WECHAT_CERTIFICATE, &e))?
        .into_iter()
        .next()
        .ok_or_else(|| invalid(WECHAT_CERTIFICATE, &"no certificate in the file"))?;
    // Parsed and checked here, so a broken key stops the start rather than the first
    // payment.
    for group in &GROUPS {
        if let Group::Pair(private, public) = group {
            // The private key parsed first: of two broken files, the error names that one.
            signing(private)?;
            matching(private, public, &verifying(public)?)?;
        }
    }
    matching(WECHAT_CERTIFICATE_PRIVATE, WECHAT_CERTIFICATE, cert.key())?;
    let wechat_platform_public =
        PlatformPublicKey::from_pem(WECHAT_PUBLIC_KEY_ID, text(WECHAT_PLATFORM_PUBLIC)?)
            .map_err(|e| invalid(WECHAT_PLATFORM_PUBLIC, &e))?;
    Ok(SandboxKeys {
        dir: dir.to_owned(),
        app_public: verifying(APP_PUBLIC)?,
        platform_private: signing(PLATFORM_PRIVATE)?,
        wechat: WechatSandboxKeys {
            merchant_public: verifying(WECHAT_MERCHANT_PUBLIC)?,
            platform_private: signing(WECHAT_PLATFORM_PRIVATE)?,
            apiv3,
            certificate: Some((cert, signing(WECHAT_CERTIFICATE_PRIVATE)?)),
        },
        token,
        client: ClientKeys {
            alipay_app_private: text(APP_PRIVATE)?.to_owned(),
            alipay_platform_public: verifying(PLATFORM_PUBLIC)?,
            wechat_merchant_private: text(WECHAT_MERCHANT_PRIVATE)?.to_owned(),
            wechat_platform_public,
        },
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

    /// A migrated database in `dir`.
    fn database(dir: &Path) -> DbTarget {
        let target = DbTarget::Sqlite(dir.join("kassa.db"));
        Offline::open_target(&target).unwrap().migrate().unwrap();
        target
    }

    #[test]
    fn a_first_start_generates_every_key_and_a_platform_certificate_kassa_can_verify_with() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());

        let keys = ensure(dir.path(), &db, chrono::Utc::now()).unwrap();
        let again = ensure(dir.path(), &db, chrono::Utc::now()).unwrap();

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

    #[test]
    fn an_imported_file_that_is_no_key_stops_the_start_naming_the_file_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(sandbox.join(APP_PRIVATE), "not a key").unwrap();
        std::fs::write(sandbox.join(APP_PUBLIC), "not a key either").unwrap();

        let refused = ensure(dir.path(), &db, chrono::Utc::now())
            .err()
            .expect("refused");

        let message = refused.to_string();
        assert!(
            message.contains(&sandbox.join(APP_PRIVATE).display().to_string()),
            "{message}"
        );
        let files: Vec<&str> = GROUPS.iter().flat_map(Group::files).collect();
        let stored = Offline::open_target(&db)
            .unwrap()
            .read(|tx| {
                let mut found = Vec::new();
                for file in &files {
                    found.extend(secrets::find(tx, &secret_name(file))?.map(|_| *file));
                }
                Ok(found)
            })
            .unwrap();
        assert_eq!(stored, Vec::<&str>::new(), "no row of any key");
        assert_eq!(
            std::fs::read_to_string(sandbox.join(APP_PRIVATE)).unwrap(),
            "not a key"
        );

        // Without the broken pair, a new one is made.
        std::fs::remove_file(sandbox.join(APP_PRIVATE)).unwrap();
        let keys = ensure(dir.path(), &db, chrono::Utc::now()).unwrap();
        assert!(SigningKey::from_pem(&keys.client.alipay_app_private).is_ok());
    }

    /// The stored rows of every sandbox file, by file name.
    fn stored_rows(db: &DbTarget) -> HashMap<&'static str, Vec<u8>> {
        let files: Vec<&'static str> = GROUPS.iter().flat_map(Group::files).collect();
        Offline::open_target(db)
            .unwrap()
            .read(|tx| {
                let mut found = HashMap::new();
                for file in &files {
                    if let Some(value) = secrets::find(tx, &secret_name(file))? {
                        found.insert(*file, value);
                    }
                }
                Ok(found)
            })
            .unwrap()
    }

    fn vector(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/vectors/keys/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn a_private_key_file_without_its_public_file_is_not_imported_a_new_pair_is_stored_and_both_files_are_its_copies(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        let lone = vector("alipay_app_private_pkcs8.pem");
        std::fs::write(sandbox.join(APP_PRIVATE), &lone).unwrap();

        let keys = ensure(dir.path(), &db, chrono::Utc::now()).unwrap();

        let rows = stored_rows(&db);
        let private = String::from_utf8(rows[APP_PRIVATE].clone()).unwrap();
        let public = String::from_utf8(rows[APP_PUBLIC].clone()).unwrap();
        assert!(private != lone, "the lone private file was imported");
        // The stored public key is the stored private key's: it verifies what that signs.
        let signed = SigningKey::from_pem(&private).unwrap().sign_base64(b"probe");
        assert!(VerifyingKey::from_pem(&public)
            .unwrap()
            .verify_base64(b"probe", &signed));
        assert!(keys.app_public.verify_base64(b"probe", &signed));
        assert_eq!(
            std::fs::read_to_string(sandbox.join(APP_PRIVATE)).unwrap(),
            private
        );
        assert_eq!(std::fs::read_to_string(sandbox.join(APP_PUBLIC)).unwrap(), public);
    }

    #[test]
    fn an_imported_private_key_beside_another_pairs_public_key_is_refused_naming_both_files_and_stores_nothing(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(sandbox.join(APP_PRIVATE), vector("alipay_app_private_pkcs8.pem")).unwrap();
        // A valid public key, of the platform pair.
        std::fs::write(sandbox.join(APP_PUBLIC), vector("alipay_platform_public.pem")).unwrap();

        let refused = ensure(dir.path(), &db, chrono::Utc::now())
            .err()
            .expect("refused");

        let message = refused.to_string();
        for file in [APP_PRIVATE, APP_PUBLIC] {
            assert!(
                message.contains(&sandbox.join(file).display().to_string()),
                "{message}"
            );
        }
        assert!(message.contains("not one key pair"), "{message}");
        assert!(message.contains("delete both files"), "{message}");
        assert!(stored_rows(&db).is_empty(), "no row of any key");
        assert_eq!(
            std::fs::read_to_string(sandbox.join(APP_PUBLIC)).unwrap(),
            vector("alipay_platform_public.pem")
        );
    }

    /// A second data directory in `dir` whose database holds `rows`, one of them changed
    /// to `value`, as a kassa that stored them would have left it.
    fn stored_elsewhere(
        dir: &Path,
        rows: &HashMap<&'static str, Vec<u8>>,
        changed: &'static str,
        value: &[u8],
    ) -> (PathBuf, DbTarget) {
        let data = dir.join("elsewhere");
        std::fs::create_dir_all(&data).unwrap();
        let db = database(&data);
        Offline::open_target(&db)
            .unwrap()
            .immediate(|tx| {
                for (file, stored) in rows {
                    let stored = if *file == changed { value } else { stored };
                    secrets::insert_if_absent(tx, &secret_name(file), stored, chrono::Utc::now())?;
                }
                Ok(())
            })
            .unwrap();
        (data, db)
    }

    #[test]
    fn a_stored_certificate_whose_key_row_is_another_keys_is_refused_naming_both_rows_and_how_to_make_new_ones(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let first = database(dir.path());
        ensure(dir.path(), &first, chrono::Utc::now()).unwrap();
        let rows = stored_rows(&first);
        let (data, db) = stored_elsewhere(
            dir.path(),
            &rows,
            WECHAT_CERTIFICATE_PRIVATE,
            &rows[PLATFORM_PRIVATE],
        );
        let before = stored_rows(&db);

        let message = ensure(&data, &db, chrono::Utc::now())
            .err()
            .expect("refused")
            .to_string();

        assert!(
            message.contains("secrets row sandbox/wechat_platform_cert_private.pem and secrets row sandbox/wechat_platform_cert.pem are not one key pair"),
            "{message}"
        );
        assert!(
            message.contains("delete the rows sandbox/wechat_platform_cert.pem and sandbox/wechat_platform_cert_private.pem and the files"),
            "{message}"
        );
        assert_eq!(stored_rows(&db), before);
    }

    #[test]
    fn a_short_imported_token_and_a_short_token_row_are_refused_each_saying_how_to_get_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(sandbox.join(TOKEN), "short\n").unwrap();

        let message = ensure(dir.path(), &db, chrono::Utc::now())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            message.contains(&format!(
                "{}: the sandbox token is shorter than 16 characters; delete the file and kassa makes a new one",
                sandbox.join(TOKEN).display()
            )),
            "{message}"
        );
        assert!(stored_rows(&db).is_empty());

        std::fs::remove_file(sandbox.join(TOKEN)).unwrap();
        ensure(dir.path(), &db, chrono::Utc::now()).unwrap();
        let (data, db) = stored_elsewhere(dir.path(), &stored_rows(&db), TOKEN, b"short");
        let message = ensure(&data, &db, chrono::Utc::now())
            .err()
            .expect("refused")
            .to_string();
        assert!(
            message.contains(&format!(
                "secrets row sandbox/token: the sandbox token is shorter than 16 characters; to make new ones, stop every kassa on this database, delete the row sandbox/token and the file token in {}",
                data.join("sandbox").display()
            )),
            "{message}"
        );
    }

    #[test]
    fn a_stale_copy_that_cannot_be_removed_stops_the_start_saying_it_cannot_write_that_path_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let db = database(dir.path());
        ensure(dir.path(), &db, chrono::Utc::now()).unwrap();
        // Something kassa cannot replace with a file (as root, a directory made read-only
        // would not stop it): a directory where the token's copy goes.
        let token = dir.path().join("sandbox").join(TOKEN);
        std::fs::remove_file(&token).unwrap();
        std::fs::create_dir(&token).unwrap();
        std::fs::write(token.join("inside"), "x").unwrap();

        let message = ensure(dir.path(), &db, chrono::Utc::now())
            .err()
            .expect("refused")
            .to_string();

        assert!(
            message.starts_with(&format!("cannot write {}: ", token.display())),
            "{message}"
        );
        assert!(message.contains("Is a directory"), "{message}");
        assert!(token.join("inside").exists());
    }
}
