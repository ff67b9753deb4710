-- Every delivery attempt of an outbox row: what was sent where, and what came back.
CREATE TABLE webhook_attempts (
    id          INTEGER PRIMARY KEY,
    outbox_id   INTEGER NOT NULL REFERENCES webhook_outbox (id),
    at          INTEGER NOT NULL,
    url         TEXT NOT NULL,
    http_status INTEGER,
    error       TEXT,
    latency_ms  INTEGER NOT NULL,
    response    TEXT
) STRICT;

CREATE INDEX webhook_attempts_by_outbox ON webhook_attempts (outbox_id, id);

-- Signing secrets. The newest signs; a rotated-out one keeps signing alongside it
-- until retire_at, so shops can switch without missing a delivery.
CREATE TABLE webhook_secrets (
    id         INTEGER PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    retire_at  INTEGER
) STRICT;

-- Health of each destination: an endpoint that has only failed for 5 days is disabled
-- until a delivery to it succeeds again.
CREATE TABLE webhook_endpoints (
    url              TEXT PRIMARY KEY NOT NULL,
    failing_since    INTEGER,
    last_failure_at  INTEGER,
    last_success_at  INTEGER,
    disabled_at      INTEGER
) STRICT;

ALTER TABLE webhook_outbox ADD COLUMN delivered_at INTEGER;
ALTER TABLE webhook_outbox ADD COLUMN url TEXT;
CREATE INDEX webhook_outbox_failed ON webhook_outbox (updated_at) WHERE status = 'failed';
