//! WeChat Pay API v3 (Native payment): the pure protocol primitives. `sign` makes and
//! checks `WECHATPAY2-SHA256-RSA2048` signatures, `aead` opens and seals notification
//! resources (`AEAD_AES_256_GCM`), `platform_keys` holds the platform's verification keys in
//! public-key and certificate mode and picks one by `Wechatpay-Serial`. Nothing here does
//! HTTP or reads a clock, so the client, the notify endpoint and the sandbox share it.

pub mod aead;
pub mod platform_keys;
pub mod sign;

pub use aead::{AeadError, ApiV3Key};
pub use platform_keys::{
    KeyMode, PlatformCertificate, PlatformKeyError, PlatformKeys, PlatformPublicKey, SelectedKey, VerifyError,
};
pub use sign::{Authorization, AuthorizationError, MerchantSigner, RandomUnavailable, SCHEMA};
