-- The API's rate limits, shared by every instance on this database (SQLite's 0012 has
-- the same table, unused there). UNLOGGED: a counter is written on each limited request
-- and is worth no WAL; a crash empties the table, which only gives every key a fresh
-- window.
CREATE UNLOGGED TABLE rate_limits (
    surface      TEXT COLLATE "C" NOT NULL,
    key          TEXT COLLATE "C" NOT NULL,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (surface, key)
);
