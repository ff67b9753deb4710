-- SQLite's 0011_secrets_and_refund_seq. A refund's place among its order's refunds
-- (1, 2, 3… in the order they were stored), so listing needs no rowid.
ALTER TABLE refunds ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
-- Existing rows get the order they were listed in until now; PostgreSQL has no rowid,
-- so the id breaks a tie of created_at.
UPDATE refunds SET seq = numbered.seq
    FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY created_at, id) AS seq
          FROM refunds) AS numbered
    WHERE refunds.id = numbered.id;
CREATE UNIQUE INDEX refunds_by_order_seq ON refunds (order_id, seq);
DROP INDEX refunds_by_order;

-- Keys the built-in sandbox generates once; the table is authoritative, so every
-- process on one database signs with the same keys.
CREATE TABLE secrets (
    name       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    value      BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
