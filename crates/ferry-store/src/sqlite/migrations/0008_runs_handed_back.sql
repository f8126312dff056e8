-- Records a run read but handed back to the next run when it stopped (deadline, Ctrl-C,
-- SIGTERM): a count of the run, so that fetched = delivered + skipped + filtered +
-- dead_lettered + handed_back.
ALTER TABLE runs ADD COLUMN handed_back INTEGER NOT NULL DEFAULT 0;
