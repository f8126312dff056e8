-- Runs of a flow that consumes a queue continuously under `ferry serve` have trigger `stream`.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt with the same columns
-- (in the same order) and indexes. No other table refers to `runs`.
CREATE TABLE runs_new (
    id            TEXT PRIMARY KEY,
    flow          TEXT NOT NULL,
    env           TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    trigger       TEXT NOT NULL CHECK (trigger IN ('manual', 'schedule', 'replay', 'demo', 'stream')),
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'incomplete')),
    fetched       INTEGER NOT NULL DEFAULT 0,
    delivered     INTEGER NOT NULL DEFAULT 0,
    skipped       INTEGER NOT NULL DEFAULT 0,
    filtered      INTEGER NOT NULL DEFAULT 0,
    dead_lettered INTEGER NOT NULL DEFAULT 0,
    cursor_before TEXT,
    cursor_after  TEXT,
    error         TEXT,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    owner         TEXT,
    heartbeat_at  TEXT,
    alone         INTEGER NOT NULL DEFAULT 0,
    handed_back   INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO runs_new (id, flow, env, revision, hash, trigger, status, fetched, delivered,
        skipped, filtered, dead_lettered, cursor_before, cursor_after, error, started_at,
        finished_at, owner, heartbeat_at, alone, handed_back)
    SELECT id, flow, env, revision, hash, trigger, status, fetched, delivered, skipped, filtered,
        dead_lettered, cursor_before, cursor_after, error, started_at, finished_at, owner,
        heartbeat_at, alone, handed_back
    FROM runs;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;
CREATE INDEX runs_flow_started ON runs (flow, started_at DESC, id DESC);
CREATE INDEX runs_started ON runs (started_at DESC, id DESC);
CREATE INDEX runs_env_flow_started ON runs (env, flow, started_at DESC, id DESC);
CREATE INDEX runs_running ON runs (flow, env) WHERE status = 'running';
CREATE INDEX runs_env_flow_revision_started ON runs (env, flow, revision, started_at DESC, id DESC);
