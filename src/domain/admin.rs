//! Staff of the admin dashboard: roles, user names, passwords (argon2id) and the
//! random tokens of sessions and forms.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::digest::{digest, SHA256};

use super::ids::random_bytes;

/// The user every new installation starts with.
pub const FIRST_ADMIN: &str = "admin";

/// What a staff user may do. Part of every session; each page and action checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, including managing other users.
    Owner,
    /// Orders and their actions (close, refund, query, re-send).
    Operator,
    /// Reads only.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Operator, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    /// Whether the role may change orders (close, refund, query the provider, re-send).
    pub fn may_act_on_orders(self) -> bool {
        self.may(Permission::ActOnOrders)
    }

    /// The one place that says what each role may do; every page and action asks it.
    pub fn may(self, permission: Permission) -> bool {
        match self {
            Role::Owner => true,
            Role::Operator => matches!(
                permission,
                Permission::Read | Permission::ActOnOrders | Permission::Resend
            ),
            Role::Viewer => permission == Permission::Read,
        }
    }
}

/// What a page or an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// The overview, orders, notifications and webhook logs; one's own profile.
    Read,
    /// Close, refund, query the provider.
    ActOnOrders,
    /// Re-send webhook deliveries (one, or every failed one matching a filter).
    Resend,
    /// Webhook endpoints and the signing secret: reveal, rotate, ping, re-enable.
    ManageWebhooks,
    /// Create, list and revoke API keys.
    ManageApiKeys,
    /// Staff users, their roles and the two-factor requirement.
    ManageUsers,
    /// The audit log.
    ReadAudit,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}; one of owner, operator, viewer"))
    }
}

/// User names are typed at sign-in and named on the command line.
pub fn check_username(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?} must be 1 to 64 characters of letters, digits, '.', '_', '-' and '@'"
        ))
    }
}

pub const MIN_PASSWORD_CHARS: usize = 10;
/// Hashing is slow by design; a huge password must not make it slower still.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Length is what makes a password hard to guess (NIST SP 800-63B); no composition rules.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters long"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes long"
        ));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's recommended
/// minimum), as a PHC string that carries its own salt and parameters, so a later
/// change of parameters still verifies old hashes.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).map_err(|e| HashError(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches `stored` (a PHC string); a malformed stored hash matches
/// nothing.
pub fn verify_password(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(stored) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// Checks `password` against a hash nobody has, so that an unknown user name takes as
/// long to refuse as a wrong password.
pub fn verify_nobody(password: &str) -> bool {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    match DUMMY.get_or_init(|| hash_password("no user has this password").ok()) {
        Some(hash) => {
            verify_password(password, hash);
        }
        None => {
            let _ = hash_password(password);
        }
    }
    false
}

/// A new random password for the first admin: 20 base62 characters (119 bits).
pub fn generate_password() -> String {
    super::ids::random_base62(20)
}

/// A session id: 256 random bits, URL-safe base64 in the cookie.
pub fn new_session_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// What is stored of a session id. 256 random bits need no slow hash.
pub fn session_hash(token: &str) -> Vec<u8> {
    digest(&SHA256, token.as_bytes()).as_ref().to_vec()
}

/// A form's anti-forgery token: 256 random bits.
pub fn new_csrf_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Compares two secrets without a timing difference that depends on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    // Comparing digests, every byte of them: where two inputs first differ says nothing
    // about where their digests do, and the loop never stops early.
    let (a, b) = (digest(&SHA256, a.as_bytes()), digest(&SHA256, b.as_bytes()));
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterY", &hash));
        assert!(!verify_password("correct horse battery", "not a hash"));
        assert_ne!(hash, hash_password("correct horse battery").unwrap(), "salted");
        assert!(!verify_nobody("correct horse battery"));
    }

    #[test]
    fn passwords_and_user_names_follow_their_rules() {
        assert!(check_password("short").is_err());
        assert!(check_password("ten chars!").is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
        assert!(check_username("admin").is_ok());
        assert!(check_username("li.na@shop").is_ok());
        for bad in ["", "a b", "<script>", &"a".repeat(65)] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_compare_equal_only_when_identical() {
        let token = new_csrf_token();
        assert_eq!(token.len(), 43);
        assert!(same_secret(&token, &token.clone()));
        assert!(!same_secret(&token, &new_csrf_token()));
        assert!(!same_secret(&token, ""));
        assert_ne!(session_hash("a"), session_hash("b"));
    }

    #[test]
    fn every_role_round_trips_through_its_text() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
        assert!(!Role::Viewer.may_act_on_orders());
        assert!(Role::Operator.may_act_on_orders());
    }
}
