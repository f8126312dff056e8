-- ferry state, SQLite. Times are RFC 3339 text with milliseconds and Z (they sort as text),
-- ids are UUID text, JSON is text, enums are lower-case text.

CREATE TABLE flows (
    name        TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE revisions (
    flow        TEXT NOT NULL REFERENCES flows (name),
    number      INTEGER NOT NULL CHECK (number > 0),
    hash        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    message     TEXT NOT NULL,
    author      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (flow, number)
) STRICT;

-- The revision each environment runs.
CREATE TABLE active_revisions (
    flow        TEXT NOT NULL,
    env         TEXT NOT NULL,
    number      INTEGER NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (flow, env),
    FOREIGN KEY (flow, number) REFERENCES revisions (flow, number)
) STRICT;
CREATE INDEX active_revisions_env ON active_revisions (env, flow);

CREATE TABLE cursors (
    flow        TEXT NOT NULL,
    env         TEXT NOT NULL,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (flow, env)
) STRICT;

CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
    flow          TEXT NOT NULL,
    env           TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    trigger       TEXT NOT NULL CHECK (trigger IN ('manual', 'schedule', 'replay', 'demo')),
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
    finished_at   TEXT
) STRICT;
CREATE INDEX runs_flow_started ON runs (flow, started_at DESC, id DESC);
CREATE INDEX runs_started ON runs (started_at DESC, id DESC);
CREATE INDEX runs_env_flow_started ON runs (env, flow, started_at DESC, id DESC);
CREATE INDEX runs_running ON runs (flow, env) WHERE status = 'running';

-- The idempotency ledger: a key here is never delivered again in (flow, env).
CREATE TABLE ledger (
    flow         TEXT NOT NULL,
    env          TEXT NOT NULL,
    key          TEXT NOT NULL,
    body_hash    TEXT NOT NULL,
    run_id       TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    status       INTEGER NOT NULL,
    delivered_at TEXT NOT NULL,
    PRIMARY KEY (flow, env, key)
) STRICT, WITHOUT ROWID;

CREATE TABLE dead_letters (
    id            TEXT PRIMARY KEY,
    flow          TEXT NOT NULL,
    env           TEXT NOT NULL,
    run_id        TEXT NOT NULL,
    revision      INTEGER NOT NULL,
    key           TEXT,
    source_record TEXT NOT NULL,
    mapped_record TEXT,
    stage         TEXT NOT NULL CHECK (stage IN ('map', 'validate', 'deliver')),
    error         TEXT NOT NULL,
    error_class   TEXT NOT NULL,
    attempts      TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'replayed', 'discarded')),
    state_note    TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
) STRICT;
CREATE INDEX dead_letters_flow_state_created ON dead_letters (flow, state, created_at DESC);
CREATE INDEX dead_letters_created ON dead_letters (created_at DESC, id DESC);
CREATE INDEX dead_letters_run ON dead_letters (run_id);

CREATE TABLE dead_letter_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id   TEXT NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
    at         TEXT NOT NULL,
    from_state TEXT NOT NULL CHECK (from_state IN ('pending', 'replayed', 'discarded')),
    to_state   TEXT NOT NULL CHECK (to_state IN ('pending', 'replayed', 'discarded')),
    note       TEXT NOT NULL,
    run_id     TEXT
) STRICT;
CREATE INDEX dead_letter_events_entry ON dead_letter_events (entry_id, id);
