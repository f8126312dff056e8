-- Runs of a flow that consumes a queue continuously under `ferry serve` have trigger `stream`.
ALTER TABLE runs DROP CONSTRAINT runs_trigger_check;
ALTER TABLE runs ADD CONSTRAINT runs_trigger_check
    CHECK (trigger IN ('manual', 'schedule', 'replay', 'demo', 'stream'));
