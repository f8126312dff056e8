-- A smaller ledger row. Flow and environment, the same two names in every row of a flow,
-- become one integer: the id of their row in `scopes`, which is only ever added to (never
-- renamed, never deleted). The body hash, SHA-256 as 64 hex digits, is kept as its 32 bytes
-- in `body_hash`; any other string stays as it is in `body_text` (exactly one of the two is
-- set), so every hash reads back as written. The run id stays a UUID (16 bytes): retention
-- prunes runs long before their ledger rows, so it cannot be a reference to `runs`. Columns
-- are ordered widest alignment first, so the row has no padding.
CREATE TABLE scopes (
    id   INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow TEXT NOT NULL,
    env  TEXT NOT NULL,
    UNIQUE (flow, env)
);
INSERT INTO scopes (flow, env) SELECT DISTINCT flow, env FROM ledger ORDER BY flow, env;

ALTER TABLE ledger RENAME TO ledger_wide;
ALTER TABLE ledger_wide RENAME CONSTRAINT ledger_pkey TO ledger_wide_pkey;
CREATE TABLE ledger (
    delivered_at TIMESTAMPTZ NOT NULL,
    revision     BIGINT NOT NULL,
    run_id       UUID NOT NULL,
    scope        INTEGER NOT NULL,
    status       INTEGER NOT NULL,
    key          TEXT NOT NULL,
    body_hash    BYTEA,
    body_text    TEXT,
    CONSTRAINT ledger_one_body_hash CHECK ((body_hash IS NULL) <> (body_text IS NULL)),
    PRIMARY KEY (scope, key)
);
INSERT INTO ledger (delivered_at, revision, run_id, scope, status, key, body_hash, body_text)
    SELECT l.delivered_at, l.revision, l.run_id, s.id, l.status, l.key,
        CASE WHEN l.body_hash ~ '^[0-9a-f]{64}$' THEN decode(l.body_hash, 'hex') END,
        CASE WHEN l.body_hash ~ '^[0-9a-f]{64}$' THEN NULL ELSE l.body_hash END
    FROM ledger_wide l JOIN scopes s ON s.flow = l.flow AND s.env = l.env;
DROP TABLE ledger_wide;
