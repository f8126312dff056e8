-- The flow lifecycle: where a revision's content came from, every change of the revision an
-- environment runs, per-environment snapshots, promotions between environments (with
-- approvals) and an audit log of who did what.

-- A revision made from another one (revert, restore, merge, clone) names it: both or neither.
ALTER TABLE revisions ADD COLUMN origin_flow TEXT;
ALTER TABLE revisions ADD COLUMN origin_revision BIGINT;
ALTER TABLE revisions ADD CONSTRAINT revisions_origin_both_or_neither
    CHECK ((origin_flow IS NULL) = (origin_revision IS NULL));

-- One row per change of active_revisions (a removal is in the audit log only). `id` orders
-- the rows: several changes may share a millisecond.
CREATE TABLE activations (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow        TEXT NOT NULL,
    env         TEXT NOT NULL,
    number      BIGINT NOT NULL,
    previous    BIGINT,
    action      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    FOREIGN KEY (flow, number) REFERENCES revisions (flow, number)
);
CREATE INDEX activations_flow_env ON activations (flow, env, id);

-- The pointers that exist now count as activations, so a revision running today can be
-- promoted from its environment.
INSERT INTO activations (flow, env, number, previous, action, actor, at)
SELECT flow, env, number, NULL, 'migrate', 'ferry', updated_at
FROM active_revisions ORDER BY updated_at, flow, env;

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    flow        TEXT,
    env         TEXT,
    revision    BIGINT,
    detail      JSONB NOT NULL
);
CREATE INDEX audit_log_flow ON audit_log (flow, id);
CREATE INDEX audit_log_at ON audit_log (at);

-- What an environment ran at one moment. `seq` orders snapshots taken in the same millisecond.
CREATE TABLE snapshots (
    env         TEXT NOT NULL,
    name        TEXT NOT NULL,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY,
    created_at  TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    note        TEXT NOT NULL,
    PRIMARY KEY (env, name)
);
CREATE INDEX snapshots_env_seq ON snapshots (env, seq);

CREATE TABLE snapshot_flows (
    env         TEXT NOT NULL,
    name        TEXT NOT NULL,
    flow        TEXT NOT NULL,
    revision    BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    cursor      JSONB,
    PRIMARY KEY (env, name, flow),
    FOREIGN KEY (env, name) REFERENCES snapshots (env, name) ON DELETE CASCADE,
    FOREIGN KEY (flow, revision) REFERENCES revisions (flow, number)
);

-- A revision of one environment going to another, at once or after an approval.
CREATE TABLE promotions (
    id              UUID PRIMARY KEY,
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    flow            TEXT NOT NULL,
    from_env        TEXT NOT NULL,
    to_env          TEXT NOT NULL,
    source_revision BIGINT NOT NULL,
    revision        BIGINT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'active', 'approved', 'rejected')),
    requested_by    TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    decided_by      TEXT,
    decided_at      TIMESTAMPTZ,
    reason          TEXT,
    detail          JSONB NOT NULL,
    FOREIGN KEY (flow, source_revision) REFERENCES revisions (flow, number),
    FOREIGN KEY (flow, revision) REFERENCES revisions (flow, number)
);
CREATE INDEX promotions_seq ON promotions (seq);
CREATE INDEX promotions_flow_seq ON promotions (flow, seq);

-- last_run_of_revision: the newest finished run of one revision in one environment.
CREATE INDEX runs_env_flow_revision_started ON runs (env, flow, revision, started_at DESC, id DESC);
