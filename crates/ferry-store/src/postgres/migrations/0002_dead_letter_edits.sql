-- Dead-letter operator actions: an edited copy of the source record (the original stays in
-- source_record), and who did what in the history.

ALTER TABLE dead_letters ADD COLUMN edited_record JSONB;

-- What an event records: a plain state change, an edit, a discard, a replay that resolved the
-- entry, or a replay that failed again (the entry stays pending). Older events are `state`.
ALTER TABLE dead_letter_events ADD COLUMN action TEXT NOT NULL DEFAULT 'state'
    CHECK (action IN ('state', 'edit', 'discard', 'replay', 'replay_failed'));
-- Who did it (FERRY_USER or USER of the operator); NULL for events without one.
ALTER TABLE dead_letter_events ADD COLUMN actor TEXT;

-- A replay run records at most one event per entry: a retried settle batch checks this first.
CREATE INDEX dead_letter_events_entry_run ON dead_letter_events (entry_id, run_id);
