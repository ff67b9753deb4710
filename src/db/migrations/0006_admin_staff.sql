-- Two-factor sign-in (RFC 6238). The secret is what the authenticator app holds; it is
-- stored as the app needs it (a TOTP check needs the key itself, a hash will not do).
-- `totp_pending_secret` is an enrolment begun and not yet confirmed with a code;
-- `totp_last_step` is the 30-second step of the last code accepted, so a code is
-- accepted once only.
ALTER TABLE admin_users ADD COLUMN totp_secret TEXT;
ALTER TABLE admin_users ADD COLUMN totp_pending_secret TEXT;
ALTER TABLE admin_users ADD COLUMN totp_enabled_at INTEGER;
ALTER TABLE admin_users ADD COLUMN totp_last_step INTEGER;

-- Recovery codes, shown once at enrolment; only their SHA-256 is kept, each works once.
CREATE TABLE admin_recovery_codes (
    user_id   INTEGER NOT NULL REFERENCES admin_users (id),
    code_hash BLOB NOT NULL,
    used_at   INTEGER,
    PRIMARY KEY (user_id, code_hash)
) STRICT, WITHOUT ROWID;

-- A sign-in whose password was right and whose code is still to come: it gives no
-- rights, only the chance to type the code for a few minutes.
CREATE TABLE admin_pending_logins (
    id_hash     BLOB PRIMARY KEY NOT NULL,
    user_id     INTEGER NOT NULL REFERENCES admin_users (id),
    csrf_token  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    next        TEXT NOT NULL,
    remote_addr TEXT,
    user_agent  TEXT
) STRICT, WITHOUT ROWID;

-- Settings staff change from the dashboard (e.g. require_totp = '1').
CREATE TABLE admin_settings (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- A late payment staff have looked at and decided to keep: it leaves "needs attention".
CREATE TABLE late_payment_acks (
    order_id TEXT PRIMARY KEY NOT NULL REFERENCES orders (id),
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    reason   TEXT NOT NULL
) STRICT, WITHOUT ROWID;
