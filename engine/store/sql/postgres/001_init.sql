-- The event log, the jobs/steps projections and idempotency keys (DESIGN §4–§5).
-- The same tables as the SQLite backend; JSON columns are JSONB, times epoch seconds.

-- global_seq is assigned by the appender while it holds the append lock (see
-- engine/store/postgres.py), so it is gapless and commit-ordered; no sequence is used.
CREATE TABLE events (
    global_seq     BIGINT           PRIMARY KEY,
    stream_id      TEXT             NOT NULL,
    version        INTEGER          NOT NULL,
    type           TEXT             NOT NULL,
    schema_version INTEGER          NOT NULL,
    data           JSONB            NOT NULL,
    ts             DOUBLE PRECISION NOT NULL,
    CONSTRAINT events_stream_version UNIQUE (stream_id, version)
);

CREATE TABLE jobs (
    job_id        TEXT             PRIMARY KEY,
    workspace     TEXT             NOT NULL,
    task_name     TEXT             NOT NULL,
    revision      TEXT             NOT NULL,
    status        TEXT             NOT NULL,
    source_type   TEXT             NOT NULL,
    source_id     TEXT,
    parent_job_id TEXT,
    input         JSONB            NOT NULL,
    output        JSONB,                       -- NULL while the job has none
    error         TEXT,
    created_at    DOUBLE PRECISION NOT NULL,
    started_at    DOUBLE PRECISION,
    completed_at  DOUBLE PRECISION,
    priority      INTEGER          NOT NULL,
    created_by    TEXT,
    retry_of      TEXT,
    version       INTEGER          NOT NULL,
    last_seq      BIGINT           NOT NULL
);

-- Newest first, overall and under each filter the job list offers.
CREATE INDEX jobs_newest      ON jobs (created_at DESC, job_id DESC);
CREATE INDEX jobs_workspace   ON jobs (workspace, created_at DESC, job_id DESC);
CREATE INDEX jobs_task        ON jobs (task_name, created_at DESC, job_id DESC);
CREATE INDEX jobs_status      ON jobs (status, created_at DESC, job_id DESC);
CREATE INDEX jobs_source_type ON jobs (source_type, created_at DESC, job_id DESC);
CREATE INDEX jobs_parent      ON jobs (parent_job_id, created_at DESC, job_id DESC)
    WHERE parent_job_id IS NOT NULL;

CREATE TABLE steps (
    job_id        TEXT             NOT NULL,
    step_name     TEXT             NOT NULL,
    position      INTEGER          NOT NULL,
    action_name   TEXT             NOT NULL,
    action_type   TEXT             NOT NULL,
    status        TEXT             NOT NULL,
    attempt       INTEGER          NOT NULL,
    input         JSONB,
    output        JSONB,
    error_message TEXT,
    error_kind    TEXT,
    exit_code     INTEGER,
    worker_id     TEXT,
    started_at    DOUBLE PRECISION,
    completed_at  DOUBLE PRECISION,
    loop_of       TEXT,
    loop_index    INTEGER,
    skip_reason   TEXT,
    message       TEXT,
    depends_on    JSONB            NOT NULL,  -- array of step names
    retry_at      DOUBLE PRECISION,
    child_job_id  TEXT,
    PRIMARY KEY (job_id, step_name)
);

CREATE TABLE idempotency_keys (
    scope     TEXT NOT NULL,
    key       TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
