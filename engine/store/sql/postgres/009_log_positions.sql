-- How far each series of numbered log batches is stored (a remote worker's output under
-- one lease, DESIGN §6): `next` is the index of the series' next line. It is read FOR
-- UPDATE and advanced in the transaction that inserts the lines, so a batch sent again,
-- to this replica or another, stores nothing twice.
CREATE TABLE log_positions (
    key    TEXT   PRIMARY KEY,
    job_id TEXT   NOT NULL,
    next   BIGINT NOT NULL
);
CREATE INDEX log_positions_job ON log_positions (job_id);
