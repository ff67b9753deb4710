-- Times are UTC epoch milliseconds, money is integer minor units, ids are made by
-- the application: nothing here depends on SQLite's clock or rowid order.

CREATE TABLE orders (
    id                TEXT PRIMARY KEY NOT NULL,
    out_trade_no      TEXT NOT NULL UNIQUE,
    amount            INTEGER NOT NULL CHECK (amount > 0),
    currency          TEXT NOT NULL,
    subject           TEXT NOT NULL,
    provider          TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending','paid','closed','partially_refunded','refunded')),
    qr_code           TEXT,
    notify_url        TEXT,
    return_url        TEXT,
    metadata          TEXT NOT NULL DEFAULT '{}',
    provider_trade_no TEXT,
    refunded_amount   INTEGER NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    late_payment      INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    paid_at           INTEGER,
    closed_at         INTEGER,
    updated_at        INTEGER NOT NULL
) STRICT;

-- Newest-first listing and its cursor, with and without a status filter.
CREATE INDEX orders_by_created ON orders (created_at DESC, id DESC);
CREATE INDEX orders_by_status_created ON orders (status, created_at DESC, id DESC);
-- The expiry sweep reads only pending orders.
CREATE INDEX orders_pending_by_expiry ON orders (expires_at) WHERE status = 'pending';

CREATE TABLE notifications (
    id           INTEGER PRIMARY KEY,
    provider     TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    remote_addr  TEXT,
    headers      TEXT NOT NULL,
    body         BLOB NOT NULL,
    dedupe_key   TEXT,
    order_id     TEXT REFERENCES orders (id),
    verdict      TEXT NOT NULL,
    reason       TEXT
) STRICT;

-- Newest-first listing uses the id (assigned in arrival order), so no time index.
CREATE INDEX notifications_by_order ON notifications (order_id) WHERE order_id IS NOT NULL;

CREATE TABLE order_events (
    id              INTEGER PRIMARY KEY,
    order_id        TEXT NOT NULL REFERENCES orders (id),
    at              INTEGER NOT NULL,
    transition      TEXT NOT NULL,
    outcome         TEXT NOT NULL CHECK (outcome IN ('applied','refused')),
    from_status     TEXT NOT NULL,
    to_status       TEXT NOT NULL,
    source          TEXT NOT NULL,
    actor           TEXT NOT NULL,
    detail          TEXT,
    notification_id INTEGER REFERENCES notifications (id)
) STRICT;

CREATE INDEX order_events_by_order ON order_events (order_id, id);

CREATE TABLE webhook_outbox (
    id               INTEGER PRIMARY KEY,
    event_id         TEXT NOT NULL UNIQUE,
    order_id         TEXT NOT NULL REFERENCES orders (id),
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending','delivering','delivered','failed','skipped')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_until      INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;

CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status IN ('pending','delivering');
CREATE INDEX webhook_outbox_by_order ON webhook_outbox (order_id, id);

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     BLOB NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
) STRICT;

-- A name is reusable once its key is revoked.
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE idempotency_keys (
    api_key_id   INTEGER NOT NULL REFERENCES api_keys (id),
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    order_id     TEXT NOT NULL REFERENCES orders (id),
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, key)
) STRICT, WITHOUT ROWID;
