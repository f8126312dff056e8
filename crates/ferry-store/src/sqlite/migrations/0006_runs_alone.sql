-- A run that is the only running run of its flow and environment holds them alone: it writes
-- no claim row per key, and a run that starts meanwhile waits until the lone run hands over its
-- unsettled keys as per-key claims (see `claim_keys_as`). 1 while the run holds them alone.
ALTER TABLE runs ADD COLUMN alone INTEGER NOT NULL DEFAULT 0;
