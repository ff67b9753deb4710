-- The API's rate limits (failed key checks per address, requests per API key, rejected
-- notifications per address), one fixed window per surface and key, shared by every
-- instance on one PostgreSQL database. On SQLite the table stays empty: one process is
-- the whole deployment, so its limits are counted in memory, without a write per
-- request; it exists so that both backends have one schema and one numbered history.
CREATE TABLE rate_limits (
    surface      TEXT NOT NULL,
    key          TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    count        INTEGER NOT NULL,
    PRIMARY KEY (surface, key)
) STRICT, WITHOUT ROWID;
