-- Concurrency limits (engine.concurrency, engine.store.slots): the slots held by running
-- jobs of limited tasks, per group (workspace, task, rendered key). A row is inserted by
-- the append that records the job's start and deleted by the one that records its end,
-- so every replica on this database counts the same slots.

CREATE TABLE concurrency_slots (
    grp    TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (grp, job_id)
);

CREATE INDEX concurrency_slots_job ON concurrency_slots (job_id);
