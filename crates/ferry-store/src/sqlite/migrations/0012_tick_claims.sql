-- A schedule's tick fires once however many `ferry serve` processes schedule the flow: the
-- process that inserts the tick's row starts the run; the others see the row and do not.
-- Rows older than a week are deleted by later claims of the same flow and environment.
CREATE TABLE tick_claims (
    flow       TEXT NOT NULL,
    env        TEXT NOT NULL,
    tick       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    claimed_at TEXT NOT NULL,
    PRIMARY KEY (flow, env, tick)
) STRICT, WITHOUT ROWID;
