-- Claims are found by flow and environment (the primary key) and deleted as their records
-- settle, so the table holds only what is in flight; the index by run was one more B-tree to
-- write for every claimed key.
DROP INDEX IF EXISTS ledger_claims_run;
