-- Remote workers (DESIGN §6): registered workers, and the ready-step queue whose rows
-- also carry the lease of the worker that claimed them. A row stays after its step
-- ends (`finished_at`, `outcome`): it is the worker's history of recent steps.
-- `tags` holds a JSON array.

CREATE TABLE workers (
    worker_id      TEXT             PRIMARY KEY,
    name           TEXT             NOT NULL,
    tags           TEXT             NOT NULL,
    concurrency    INTEGER          NOT NULL,
    registered_at  REAL             NOT NULL,
    last_heartbeat REAL             NOT NULL
);

CREATE TABLE work_queue (
    job_id      TEXT             NOT NULL,
    step        TEXT             NOT NULL,
    attempt     INTEGER          NOT NULL,
    priority    INTEGER          NOT NULL,
    ready_at    REAL             NOT NULL,
    tags        TEXT             NOT NULL,
    worker_id   TEXT,
    lease       TEXT,
    claimed_at  REAL            ,
    renewed_at  REAL            ,
    finished_at REAL            ,
    outcome     TEXT,
    PRIMARY KEY (job_id, step, attempt)
);

CREATE INDEX work_queue_ready ON work_queue (priority, ready_at, job_id, step)
    WHERE lease IS NULL AND finished_at IS NULL;
CREATE UNIQUE INDEX work_queue_lease ON work_queue (lease) WHERE lease IS NOT NULL;
CREATE INDEX work_queue_held ON work_queue (renewed_at)
    WHERE lease IS NOT NULL AND finished_at IS NULL;
CREATE INDEX work_queue_worker ON work_queue (worker_id, claimed_at DESC);
