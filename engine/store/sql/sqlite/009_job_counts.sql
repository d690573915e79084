-- The total of the job list (X-Total-Count) without counting the jobs, as on PostgreSQL
-- (its migration 011): `job_counts` holds how many jobs there are per workspace, task,
-- status and source type. The store changes it in the transaction that changes the jobs
-- (engine/store/sqlite.py: appends, projection writes, reset; engine/store/retention.py),
-- so it is exact whenever the jobs are; the list sums it when its filter uses only these
-- dimensions. No trigger keeps it: a SQLite trigger cost ~45 µs a job row written, which
-- a rebuild of a million events pays 66,667 times; the store knows which rows change.

CREATE TABLE job_counts (
    workspace   TEXT    NOT NULL,
    task_name   TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    source_type TEXT    NOT NULL,
    n           INTEGER NOT NULL,
    PRIMARY KEY (workspace, task_name, status, source_type)
) WITHOUT ROWID;

INSERT INTO job_counts (workspace, task_name, status, source_type, n)
SELECT workspace, task_name, status, source_type, COUNT(*)
FROM jobs GROUP BY workspace, task_name, status, source_type;
