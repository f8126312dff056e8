-- The `ferry serve` processes (workers) sharing this store: each beats every few seconds with
-- what it runs, so operators see the cluster. A worker that stops cleanly removes its row; one
-- silent for a day is removed by the next beat of any worker.
CREATE TABLE workers (
    id             TEXT PRIMARY KEY,
    host           TEXT NOT NULL,
    version        TEXT NOT NULL,
    envs           TEXT NOT NULL,
    runs_in_flight INTEGER NOT NULL,
    started_at     TEXT NOT NULL,
    heartbeat_at   TEXT NOT NULL
) STRICT;
