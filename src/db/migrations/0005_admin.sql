-- Staff of the admin dashboard. Roles are checked by the pages (owner: everything,
-- operator: orders and their actions, viewer: read only).
CREATE TABLE admin_users (
    id                  INTEGER PRIMARY KEY,
    username            TEXT NOT NULL UNIQUE,
    password_hash       TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('owner','operator','viewer')),
    created_at          INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL,
    disabled_at         INTEGER
) STRICT;

-- Server-side sessions. The cookie carries a 256-bit random id; only its SHA-256 is
-- stored, so a copy of the database signs nobody in.
CREATE TABLE admin_sessions (
    id_hash      BLOB PRIMARY KEY NOT NULL,
    user_id      INTEGER NOT NULL REFERENCES admin_users (id),
    csrf_token   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    remote_addr  TEXT,
    user_agent   TEXT
) STRICT, WITHOUT ROWID;

-- A password change ends the user's other sessions.
CREATE INDEX admin_sessions_by_user ON admin_sessions (user_id);

-- Sign-in limiter state, per client address and per user name, in a table so that
-- several instances share it.
CREATE TABLE login_attempts (
    scope         TEXT NOT NULL CHECK (scope IN ('address','username')),
    key           TEXT NOT NULL,
    failures      INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    lockouts      INTEGER NOT NULL DEFAULT 0,
    locked_until  INTEGER,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT, WITHOUT ROWID;

-- Who did what in the dashboard (and at sign-in), with the reason they gave.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    order_id    TEXT REFERENCES orders (id),
    reason      TEXT,
    remote_addr TEXT,
    outcome     TEXT NOT NULL,
    detail      TEXT
) STRICT;

-- The order page's timeline; the audit page lists by id.
CREATE INDEX audit_log_by_order ON audit_log (order_id, id) WHERE order_id IS NOT NULL;

-- Every call kassa made to a provider about an order, with its outcome.
CREATE TABLE provider_calls (
    id          INTEGER PRIMARY KEY,
    order_id    TEXT NOT NULL REFERENCES orders (id),
    at          INTEGER NOT NULL,
    provider    TEXT NOT NULL,
    call        TEXT NOT NULL CHECK (call IN ('precreate','query','close','refund','refund_query')),
    outcome     TEXT NOT NULL CHECK (outcome IN ('ok','rejected','unknown')),
    detail      TEXT
) STRICT;

CREATE INDEX provider_calls_by_order ON provider_calls (order_id, id);

-- The admin order list at a million orders (each measured by benches/admin.rs):
-- search by the provider's trade number (only paid orders have one);
CREATE INDEX orders_by_provider_trade_no ON orders (provider_trade_no) WHERE provider_trade_no IS NOT NULL;
-- "late payments only", a rare flag that a scan of the time index would look for in vain;
CREATE INDEX orders_late_by_created ON orders (created_at DESC, id DESC) WHERE late_payment = 1;
-- sorting by amount (and amount ranges when sorted so); amounts never change, so only
-- inserts pay for it.
CREATE INDEX orders_by_amount ON orders (amount DESC, id DESC);
