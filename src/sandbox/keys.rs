//! The sandbox's key pairs, generated on first start and kept under `data/sandbox/`:
//! the merchant app key (kassa signs requests with it) and the platform key (the
//! sandbox signs responses and notifications with it).

use std::path::{Path, PathBuf};

use crate::providers::keys::{generate_pem_pair, KeyError, SigningKey, VerifyingKey};

pub const APP_PRIVATE: &str = "alipay_app_private.pem";
pub const APP_PUBLIC: &str = "alipay_app_public.pem";
pub const PLATFORM_PRIVATE: &str = "alipay_platform_private.pem";
pub const PLATFORM_PUBLIC: &str = "alipay_platform_public.pem";

pub struct SandboxKeys {
    pub dir: PathBuf,
    /// Verifies kassa's requests, as Alipay does with the uploaded app public key.
    pub app_public: VerifyingKey,
    pub platform_private: SigningKey,
}

impl SandboxKeys {
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
    std::fs::write(dir.join(public), public_pem).map_err(|e| KeyError::Unreadable {
        path: dir.join(public).display().to_string(),
        reason: e.to_string(),
    })
}

/// Loads the sandbox keys from `data_dir/sandbox`, generating missing pairs.
pub fn ensure(data_dir: &Path) -> Result<SandboxKeys, KeyError> {
    let dir = data_dir.join("sandbox");
    std::fs::create_dir_all(&dir).map_err(|e| KeyError::Unreadable {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    ensure_pair(&dir, APP_PRIVATE, APP_PUBLIC)?;
    ensure_pair(&dir, PLATFORM_PRIVATE, PLATFORM_PUBLIC)?;
    Ok(SandboxKeys {
        app_public: VerifyingKey::from_file(&dir.join(APP_PUBLIC))?,
        platform_private: SigningKey::from_file(&dir.join(PLATFORM_PRIVATE))?,
        dir,
    })
}
