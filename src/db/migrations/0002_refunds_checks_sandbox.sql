-- Refunds are rows of their own. The provider request number (Alipay out_request_no)
-- is stored before the provider is called, so a retried call can never refund twice.
CREATE TABLE refunds (
    id                 TEXT PRIMARY KEY NOT NULL,
    order_id           TEXT NOT NULL REFERENCES orders (id),
    merchant_refund_id TEXT,
    amount             INTEGER NOT NULL CHECK (amount > 0),
    reason             TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending','succeeded','failed')),
    provider_refund_id TEXT,
    failure_code       TEXT,
    failure_message    TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    settled_at         INTEGER
) STRICT;

CREATE INDEX refunds_by_order ON refunds (order_id, created_at);
CREATE UNIQUE INDEX refunds_merchant_id ON refunds (order_id, merchant_refund_id) WHERE merchant_refund_id IS NOT NULL;
CREATE INDEX refunds_pending ON refunds (updated_at) WHERE status = 'pending';

-- When a pending order should next be checked at the provider in case its
-- notification was lost (+1 min, +5 min, +15 min, +1 h after creation).
ALTER TABLE orders ADD COLUMN next_check_at INTEGER;
ALTER TABLE orders ADD COLUMN checks_done INTEGER NOT NULL DEFAULT 0;
CREATE INDEX orders_pending_by_check ON orders (next_check_at) WHERE status = 'pending';

-- The built-in sandbox's own state: a simulated platform, kept apart from kassa's.
CREATE TABLE sandbox_trades (
    out_trade_no  TEXT PRIMARY KEY NOT NULL,
    token         TEXT NOT NULL UNIQUE,
    app_id        TEXT NOT NULL,
    trade_no      TEXT,
    subject       TEXT NOT NULL,
    total_amount  INTEGER NOT NULL,
    refunded      INTEGER NOT NULL DEFAULT 0,
    status        TEXT NOT NULL,
    notify_url    TEXT,
    deadline      INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    paid_at       INTEGER,
    closed_at     INTEGER
) STRICT;

CREATE TABLE sandbox_refunds (
    out_trade_no   TEXT NOT NULL REFERENCES sandbox_trades (out_trade_no),
    out_request_no TEXT NOT NULL,
    amount         INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (out_trade_no, out_request_no)
) STRICT, WITHOUT ROWID;

CREATE TABLE sandbox_deliveries (
    id             INTEGER PRIMARY KEY,
    out_trade_no   TEXT NOT NULL,
    notify_url     TEXT NOT NULL,
    params         TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_at        INTEGER NOT NULL,
    status         TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','delivered','failed')),
    last_response  TEXT,
    faults         TEXT NOT NULL DEFAULT '{}',
    created_at     INTEGER NOT NULL
) STRICT;

CREATE INDEX sandbox_deliveries_due ON sandbox_deliveries (next_at) WHERE status = 'pending';

CREATE TABLE sandbox_faults (
    scope  TEXT PRIMARY KEY NOT NULL,
    faults TEXT NOT NULL
) STRICT;
