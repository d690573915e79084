-- The total of the job list (X-Total-Count) without counting the jobs, as on PostgreSQL
-- (its migrations 011 and 016): `job_counts` holds how many jobs there are per
-- workspace, task, status and source type, kept by triggers on `jobs` in the
-- transaction that changes the jobs (appends, rebuild, retention), so it is exact
-- whenever the jobs are. The list sums it when its filter uses only these dimensions
-- (engine/store/sqlite.py, list_jobs); other filters count the jobs. An update touches
-- the counters only when one of the counted columns changes.

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

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO job_counts (workspace, task_name, status, source_type, n)
    VALUES (NEW.workspace, NEW.task_name, NEW.status, NEW.source_type, 1)
    ON CONFLICT (workspace, task_name, status, source_type) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
BEGIN
    UPDATE job_counts SET n = n - 1
    WHERE workspace = OLD.workspace AND task_name = OLD.task_name
      AND status = OLD.status AND source_type = OLD.source_type;
END;

CREATE TRIGGER jobs_counted_update AFTER UPDATE OF workspace, task_name, status, source_type
ON jobs
WHEN OLD.workspace IS NOT NEW.workspace OR OLD.task_name IS NOT NEW.task_name
     OR OLD.status IS NOT NEW.status OR OLD.source_type IS NOT NEW.source_type
BEGIN
    UPDATE job_counts SET n = n - 1
    WHERE workspace = OLD.workspace AND task_name = OLD.task_name
      AND status = OLD.status AND source_type = OLD.source_type;
    INSERT INTO job_counts (workspace, task_name, status, source_type, n)
    VALUES (NEW.workspace, NEW.task_name, NEW.status, NEW.source_type, 1)
    ON CONFLICT (workspace, task_name, status, source_type) DO UPDATE SET n = n + 1;
END;
