-- Key claims: before a record is sent, its run claims the idempotency key, so two runs of one
-- flow and environment (two processes, a replay beside a run) never send the same key at once.
-- A claim counts only while its run is running; finish_run deletes a run's claims.
CREATE TABLE ledger_claims (
    flow        TEXT NOT NULL,
    env         TEXT NOT NULL,
    key         TEXT NOT NULL,
    run_id      UUID NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (flow, env, key)
);
CREATE INDEX ledger_claims_run ON ledger_claims (run_id);

-- Liveness of running runs: which process runs it (host:pid) and when it last said so.
ALTER TABLE runs ADD COLUMN owner TEXT;
ALTER TABLE runs ADD COLUMN heartbeat_at TIMESTAMPTZ;
