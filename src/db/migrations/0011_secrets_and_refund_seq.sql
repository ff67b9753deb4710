-- A refund's place among its order's refunds (1, 2, 3… in the order they were stored).
-- Listing by it needs no rowid, which PostgreSQL lacks; created_at cannot order two
-- refunds stored in the same millisecond, and ids are not in insertion order.
ALTER TABLE refunds ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
-- Existing rows keep the order they were listed in until now (created_at, then rowid).
-- The rowid appears only here, in the SQLite migration, which runs once.
UPDATE refunds SET seq = (
    SELECT COUNT(*) FROM refunds r
    WHERE r.order_id = refunds.order_id
      AND (r.created_at < refunds.created_at
           OR (r.created_at = refunds.created_at AND r.rowid <= refunds.rowid))
);
CREATE UNIQUE INDEX refunds_by_order_seq ON refunds (order_id, seq);
-- Every lookup by order is served by the index above.
DROP INDEX refunds_by_order;

-- Keys the built-in sandbox generates once (its Alipay and WeChat Pay key pairs, the
-- APIv3 key, the platform certificate and its key). The table is authoritative, so
-- every process on one database signs with the same keys; the files under
-- data/sandbox/ are copies written from these rows.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY NOT NULL,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
