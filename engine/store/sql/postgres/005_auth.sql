-- Authentication (docs/auth.md): users, API keys (hashed), refresh tokens (hashed,
-- grouped in login families), single-use WebSocket tickets and the token signing secret.

CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    email_lower   TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    password_hash TEXT,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    groups_text   TEXT NOT NULL DEFAULT '',   -- newline-separated group names
    created_at    DOUBLE PRECISION NOT NULL,
    last_login_at DOUBLE PRECISION
);

CREATE TABLE api_keys (
    prefix       TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (user_id),
    name         TEXT NOT NULL,
    key_hash     TEXT NOT NULL,               -- SHA-256 hex of the whole key
    created_at   DOUBLE PRECISION NOT NULL,
    expires_at   DOUBLE PRECISION,
    revoked_at   DOUBLE PRECISION,
    last_used_at DOUBLE PRECISION
);
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,              -- SHA-256 hex of the token
    user_id    TEXT NOT NULL REFERENCES users (user_id),
    family     TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at    DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION
);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_by_user ON refresh_tokens (user_id);

CREATE TABLE ws_tickets (
    ticket_hash TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE auth_secrets (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
