-- The total of the job list (X-Total-Count) without counting the jobs: `job_counts`
-- holds how many jobs there are per workspace, task, status and source type, kept by
-- statement triggers on `jobs` in the transaction that changes the jobs (appends,
-- rebuild, retention), so it is exact whenever the jobs are. The list sums it when
-- its filter uses only these dimensions (engine/store/postgres.py, list_jobs); other
-- filters count the jobs. `reset_projections` truncates it with the jobs.
-- Each statement changes the counters in key order, so concurrent writers lock them
-- in the same order.

CREATE TABLE job_counts (
    workspace   TEXT   NOT NULL,
    task_name   TEXT   NOT NULL,
    status      TEXT   NOT NULL,
    source_type TEXT   NOT NULL,
    n           BIGINT NOT NULL,
    PRIMARY KEY (workspace, task_name, status, source_type)
);

INSERT INTO job_counts (workspace, task_name, status, source_type, n)
SELECT workspace, task_name, status, source_type, COUNT(*)
FROM jobs GROUP BY workspace, task_name, status, source_type;

CREATE FUNCTION job_counts_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO job_counts AS c (workspace, task_name, status, source_type, n)
        SELECT workspace, task_name, status, source_type, COUNT(*) FROM new_jobs
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (workspace, task_name, status, source_type) DO UPDATE SET n = c.n + excluded.n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO job_counts AS c (workspace, task_name, status, source_type, n)
        SELECT workspace, task_name, status, source_type, -COUNT(*) FROM old_jobs
        GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
        ON CONFLICT (workspace, task_name, status, source_type) DO UPDATE SET n = c.n + excluded.n;
    ELSE
        INSERT INTO job_counts AS c (workspace, task_name, status, source_type, n)
        SELECT workspace, task_name, status, source_type, SUM(d) FROM (
            SELECT workspace, task_name, status, source_type, 1 AS d FROM new_jobs
            UNION ALL
            SELECT workspace, task_name, status, source_type, -1 AS d FROM old_jobs
        ) AS changes
        GROUP BY 1, 2, 3, 4 HAVING SUM(d) <> 0 ORDER BY 1, 2, 3, 4
        ON CONFLICT (workspace, task_name, status, source_type) DO UPDATE SET n = c.n + excluded.n;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_apply();
CREATE TRIGGER jobs_counted_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_apply();
CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION job_counts_apply();
