-- A batch of a numbered series of log lines (a remote worker's output under one lease,
-- migration 009) stored by one call: the series' position taken and locked, the lines
-- not stored by an earlier try of the same batch numbered after the job's count and
-- inserted, one NOTIFY, the position advanced. It was six statements inside BEGIN …
-- COMMIT, eight round trips for each result of a remote step with output.
--
-- Lines a_offset + 1 … a_offset + n of the series are given (1-based i: line a_offset + i
-- of the series); those below the stored position are skipped. Returns the seq of the
-- first line stored (NULL when none), how many were stored, and the series' new position.

CREATE FUNCTION partitur_log_append_once(
    a_key text, a_job_id text, a_offset bigint,
    a_ts float8[], a_stream text[], a_step text[], a_line text[], a_channel text,
    OUT o_first bigint, OUT o_count int, OUT o_end bigint
) LANGUAGE plpgsql AS $$
DECLARE
    n int := COALESCE(cardinality(a_line), 0);
    start bigint;
    skip bigint;
    last bigint;
BEGIN
    -- The upsert locks the series' row: a concurrent try of the same batch waits here,
    -- then sees the position this one leaves.
    INSERT INTO log_positions (key, job_id, next) VALUES (a_key, a_job_id, 0)
    ON CONFLICT (key) DO UPDATE SET next = log_positions.next
    RETURNING next INTO start;
    o_end := greatest(start, a_offset + n);
    skip := least(n, greatest(0, start - a_offset));
    o_count := n - skip;
    IF o_count > 0 THEN
        INSERT INTO log_counters (job_id, count) VALUES (a_job_id, o_count)
        ON CONFLICT (job_id) DO UPDATE SET count = log_counters.count + excluded.count
        RETURNING count INTO last;
        o_first := last - o_count + 1;
        INSERT INTO log_lines (job_id, seq, ts, stream, step, line)
        SELECT a_job_id, o_first + l.i - 1 - skip, l.ts, l.stream, l.step, l.line
        FROM unnest(a_ts, a_stream, a_step, a_line)
            WITH ORDINALITY AS l(ts, stream, step, line, i)
        WHERE l.i > skip;
        PERFORM pg_notify(a_channel, a_job_id || ':' || last);
    END IF;
    IF o_end <> start THEN
        UPDATE log_positions SET next = o_end WHERE key = a_key;
    END IF;
END
$$;
