-- A smaller ledger row (it was ~216 bytes a row on disk; a 1 000 000-record run left a 216 MB
-- file). Flow and environment, the same two names in every row of a flow, become one integer:
-- the id of their row in `scopes`, which is only ever added to (never renamed, never deleted),
-- so an id names one (flow, env) for the life of the file. The body hash, SHA-256 as 64 hex
-- digits, is kept as its 32 bytes; any other string stays text (the column is ANY), so every
-- hash reads back as written. The run id is its 16 bytes instead of 36 characters of text (it
-- stays a UUID, not a reference to `runs`: retention prunes runs long before their ledger
-- rows). The delivery time is integer milliseconds since the epoch instead of 24 characters.
-- The primary key still starts with the idempotency key (see 0007).
CREATE TABLE scopes (
    id   INTEGER PRIMARY KEY,
    flow TEXT NOT NULL,
    env  TEXT NOT NULL,
    UNIQUE (flow, env)
) STRICT;
INSERT INTO scopes (flow, env) SELECT DISTINCT flow, env FROM ledger ORDER BY flow, env;
CREATE TABLE ledger_compact (
    key          TEXT NOT NULL,
    scope        INTEGER NOT NULL,
    body_hash    ANY NOT NULL,
    run_id       BLOB NOT NULL,
    revision     INTEGER NOT NULL,
    status       INTEGER NOT NULL,
    delivered_at INTEGER NOT NULL,
    PRIMARY KEY (key, scope)
) STRICT, WITHOUT ROWID;
INSERT INTO ledger_compact (key, scope, body_hash, run_id, revision, status, delivered_at)
    SELECT l.key, s.id,
        CASE WHEN length(l.body_hash) = 64 AND l.body_hash NOT GLOB '*[^0-9a-f]*'
             THEN unhex(l.body_hash) ELSE l.body_hash END,
        unhex(l.run_id, '-'), l.revision, l.status,
        CAST(round((julianday(l.delivered_at) - 2440587.5) * 86400000.0) AS INTEGER)
    FROM ledger l JOIN scopes s ON s.flow = l.flow AND s.env = l.env;
DROP TABLE ledger;
ALTER TABLE ledger_compact RENAME TO ledger;
