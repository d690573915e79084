-- Job logs (DESIGN §7): one row per line, numbered per job without gaps.

-- The number of lines of each job. An append bumps it in its own transaction, so the
-- row lock orders a job's appenders and the seqs they take are contiguous.
CREATE TABLE log_counters (
    job_id TEXT   PRIMARY KEY,
    count  BIGINT NOT NULL
);

CREATE TABLE log_lines (
    job_id TEXT             NOT NULL,
    seq    BIGINT           NOT NULL,
    ts     DOUBLE PRECISION NOT NULL,
    stream TEXT             NOT NULL,
    step   TEXT             NOT NULL,
    line   TEXT             NOT NULL,
    PRIMARY KEY (job_id, seq)
);
