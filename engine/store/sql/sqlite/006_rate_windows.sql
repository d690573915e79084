-- Step rate limits (engine.ratelimit): the recent admissions of every rate-limit key,
-- kept across restarts. A reservation prunes the key's rows older than its window,
-- counts the rest and inserts one row when there is room, in one write transaction.

CREATE TABLE rate_admissions (
    key TEXT NOT NULL,
    at  REAL NOT NULL
);

CREATE INDEX rate_admissions_key_at ON rate_admissions (key, at);
