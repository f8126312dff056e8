-- ferry state, PostgreSQL. Tables are created in the first schema of the search_path.

CREATE TABLE flows (
    name        TEXT PRIMARY KEY,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE revisions (
    flow        TEXT NOT NULL REFERENCES flows (name),
    number      BIGINT NOT NULL CHECK (number > 0),
    hash        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    message     TEXT NOT NULL,
    author      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (flow, number)
);

-- The revision each environment runs.
CREATE TABLE active_revisions (
    flow        TEXT NOT NULL,
    env         TEXT NOT NULL,
    number      BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (flow, env),
    FOREIGN KEY (flow, number) REFERENCES revisions (flow, number)
);
CREATE INDEX active_revisions_env ON active_revisions (env, flow);

CREATE TABLE cursors (
    flow        TEXT NOT NULL,
    env         TEXT NOT NULL,
    value       JSONB NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (flow, env)
);

CREATE TABLE runs (
    id            UUID PRIMARY KEY,
    flow          TEXT NOT NULL,
    env           TEXT NOT NULL,
    revision      BIGINT NOT NULL,
    hash          TEXT NOT NULL,
    trigger       TEXT NOT NULL CHECK (trigger IN ('manual', 'schedule', 'replay', 'demo')),
    status        TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'incomplete')),
    fetched       BIGINT NOT NULL DEFAULT 0,
    delivered     BIGINT NOT NULL DEFAULT 0,
    skipped       BIGINT NOT NULL DEFAULT 0,
    filtered      BIGINT NOT NULL DEFAULT 0,
    dead_lettered BIGINT NOT NULL DEFAULT 0,
    cursor_before JSONB,
    cursor_after  JSONB,
    error         TEXT,
    started_at    TIMESTAMPTZ NOT NULL,
    finished_at   TIMESTAMPTZ
);
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
    run_id       UUID NOT NULL,
    revision     BIGINT NOT NULL,
    status       INTEGER NOT NULL,
    delivered_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (flow, env, key)
);

CREATE TABLE dead_letters (
    id            UUID PRIMARY KEY,
    flow          TEXT NOT NULL,
    env           TEXT NOT NULL,
    run_id        UUID NOT NULL,
    revision      BIGINT NOT NULL,
    key           TEXT,
    source_record JSONB NOT NULL,
    mapped_record JSONB,
    stage         TEXT NOT NULL CHECK (stage IN ('map', 'validate', 'deliver')),
    error         TEXT NOT NULL,
    error_class   TEXT NOT NULL,
    attempts      JSONB NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'replayed', 'discarded')),
    state_note    TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX dead_letters_flow_state_created ON dead_letters (flow, state, created_at DESC);
CREATE INDEX dead_letters_created ON dead_letters (created_at DESC, id DESC);
CREATE INDEX dead_letters_run ON dead_letters (run_id);

CREATE TABLE dead_letter_events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id   UUID NOT NULL REFERENCES dead_letters (id) ON DELETE CASCADE,
    at         TIMESTAMPTZ NOT NULL,
    from_state TEXT NOT NULL CHECK (from_state IN ('pending', 'replayed', 'discarded')),
    to_state   TEXT NOT NULL CHECK (to_state IN ('pending', 'replayed', 'discarded')),
    note       TEXT NOT NULL,
    run_id     UUID
);
CREATE INDEX dead_letter_events_entry ON dead_letter_events (entry_id, id);
