-- Nothing may rely on being the only process on the database (the CLI beside the
-- server today, several servers on one PostgreSQL later).
-- A singleton job (expiry sweep, late checks, refund settlement, retention, backups)
-- runs a pass only while its row here names this process and has not expired; the
-- holder renews it each pass, and another process takes it over once it expires.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

-- Which process holds a webhook claim: an attempt is recorded only by that process
-- (and only while its lease holds), and a process giving back its claims at shutdown
-- gives back only its own.
ALTER TABLE webhook_outbox ADD COLUMN lease_owner TEXT;
-- A stopping process gives back its own claims (`release_claims`): found among the
-- few rows being delivered, not by scanning every row ever queued.
CREATE INDEX webhook_outbox_claims_by_owner ON webhook_outbox (lease_owner) WHERE status = 'delivering';

-- The sandbox's notices are claimed as webhooks are, so two processes never send the
-- same notice at once.
ALTER TABLE sandbox_deliveries ADD COLUMN lease_owner TEXT;
ALTER TABLE sandbox_deliveries ADD COLUMN lease_until INTEGER;
