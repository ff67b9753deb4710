-- An Idempotency-Key is claimed before the provider is asked for a payment: its row
-- exists with no order while the first request is in flight (concurrent requests with
-- the key are answered 409 idempotency_key_in_progress instead of calling the provider
-- again), and gets its order in the transaction that stores the order. SQLite cannot
-- drop a NOT NULL, so the table is rebuilt; nothing references it.
CREATE TABLE idempotency_keys_new (
    api_key_id   INTEGER NOT NULL REFERENCES api_keys (id),
    key          TEXT NOT NULL,
    request_hash BLOB NOT NULL,
    order_id     TEXT REFERENCES orders (id),
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, key)
) STRICT, WITHOUT ROWID;
INSERT INTO idempotency_keys_new (api_key_id, key, request_hash, order_id, created_at)
    SELECT api_key_id, key, request_hash, order_id, created_at FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_new RENAME TO idempotency_keys;
