-- Step rate limits (engine.ratelimit): the recent admissions of every rate-limit key,
-- shared by all replicas on this database and kept across restarts. A reservation
-- prunes the key's rows older than its window, counts the rest and inserts one row when
-- there is room, under a transaction-scoped advisory lock on the key.

CREATE TABLE rate_admissions (
    key TEXT             NOT NULL,
    at  DOUBLE PRECISION NOT NULL
);

CREATE INDEX rate_admissions_key_at ON rate_admissions (key, at);
