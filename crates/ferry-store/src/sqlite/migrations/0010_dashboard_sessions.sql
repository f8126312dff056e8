-- Dashboard sessions: the sha256 of the session id (the cookie), the token that opened it (its
-- name and the sha256 of the token at the time) and when it expires. Neither the session id
-- nor the token is stored, so a copy of the database opens nothing.
CREATE TABLE dashboard_sessions (
    hash       TEXT PRIMARY KEY,
    token_name TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
) STRICT;
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
