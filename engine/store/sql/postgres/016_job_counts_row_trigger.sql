-- The job counters (migration 011) kept for less on every append: an append updates its
-- job's row, and a statement trigger on UPDATE ran for every such statement (with
-- transition tables, ~0.2 ms of server time an append) although the counted columns
-- change only when the job changes status. The UPDATE trigger is now a row trigger
-- whose WHEN clause lets through only the rows whose counted columns change; INSERT
-- and DELETE keep their statement triggers (rebuild and retention change many rows at
-- once). partitur_append updates the job row and inserts it only when it is not there
-- yet, instead of INSERT … ON CONFLICT DO UPDATE, which fired the INSERT trigger too.

DROP TRIGGER jobs_counted_update ON jobs;

-- OLD's counter down, NEW's up, in key order like the statement triggers.
CREATE FUNCTION job_counts_move() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_counts AS c (workspace, task_name, status, source_type, n)
    SELECT * FROM (VALUES
        (OLD.workspace, OLD.task_name, OLD.status, OLD.source_type, -1::bigint),
        (NEW.workspace, NEW.task_name, NEW.status, NEW.source_type, 1::bigint)
    ) AS moved (workspace, task_name, status, source_type, n)
    ORDER BY 1, 2, 3, 4
    ON CONFLICT (workspace, task_name, status, source_type) DO UPDATE SET n = c.n + excluded.n;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_counted_move AFTER UPDATE ON jobs
    FOR EACH ROW
    WHEN (OLD.workspace IS DISTINCT FROM NEW.workspace
          OR OLD.task_name IS DISTINCT FROM NEW.task_name
          OR OLD.status IS DISTINCT FROM NEW.status
          OR OLD.source_type IS DISTINCT FROM NEW.source_type)
    EXECUTE FUNCTION job_counts_move();

-- As in migration 012, but the job row as described above.
CREATE OR REPLACE FUNCTION partitur_append(
    a_stream text, a_expected int, a_scope text, a_key text,
    a_types text[], a_schema_versions int[], a_data text[], a_ts float8[], a_channel text,
    a_job_id text, a_workspace text, a_task_name text, a_revision text, a_status text,
    a_source_type text, a_source_id text, a_parent_job_id text, a_input jsonb,
    a_output jsonb, a_error text, a_created_at float8, a_started_at float8,
    a_completed_at float8, a_priority int, a_created_by text, a_retry_of text,
    a_version int,
    s_job_id text[], s_step_name text[], s_position int[], s_action_name text[],
    s_action_type text[], s_status text[], s_attempt int[], s_input text[],
    s_output text[], s_error_message text[], s_error_kind text[], s_exit_code int[],
    s_worker_id text[], s_started_at float8[], s_completed_at float8[], s_loop_of text[],
    s_loop_index int[], s_skip_reason text[], s_message text[], s_depends_on text[],
    s_retry_at float8[], s_child_job_id text[],
    OUT o_version int, OUT o_last bigint, OUT o_owner text
) LANGUAGE plpgsql AS $$
DECLARE
    n int := cardinality(a_types);
BEGIN
    PERFORM pg_advisory_xact_lock(8097879449299845122);  -- APPEND_LOCK
    SELECT COALESCE(MAX(e.version), 0) INTO o_version FROM events e WHERE e.stream_id = a_stream;
    SELECT COALESCE(MAX(e.global_seq), 0) INTO o_last FROM events e;
    IF a_scope IS NOT NULL THEN
        SELECT k.stream_id INTO o_owner FROM idempotency_keys k
        WHERE k.scope = a_scope AND k.key = a_key;
    END IF;
    IF o_version <> a_expected OR o_owner IS NOT NULL THEN
        RETURN;
    END IF;

    INSERT INTO events (global_seq, stream_id, version, type, schema_version, data, ts)
    SELECT o_last + e.i, a_stream, a_expected + e.i::int, e.type, e.schema_version,
           e.data::jsonb, e.ts
    FROM unnest(a_types, a_schema_versions, a_data, a_ts)
        WITH ORDINALITY AS e(type, schema_version, data, ts, i);

    IF a_scope IS NOT NULL THEN
        INSERT INTO idempotency_keys (scope, key, stream_id) VALUES (a_scope, a_key, a_stream);
    END IF;

    IF a_job_id IS NOT NULL THEN
        UPDATE jobs SET
            workspace = a_workspace, task_name = a_task_name, revision = a_revision,
            status = a_status, source_type = a_source_type, source_id = a_source_id,
            parent_job_id = a_parent_job_id, input = a_input, output = a_output,
            error = a_error, created_at = a_created_at, started_at = a_started_at,
            completed_at = a_completed_at, priority = a_priority, created_by = a_created_by,
            retry_of = a_retry_of, version = a_version, last_seq = o_last + n
        WHERE job_id = a_job_id;
        IF NOT FOUND THEN
            INSERT INTO jobs (job_id, workspace, task_name, revision, status, source_type,
                              source_id, parent_job_id, input, output, error, created_at,
                              started_at, completed_at, priority, created_by, retry_of,
                              version, last_seq)
            VALUES (a_job_id, a_workspace, a_task_name, a_revision, a_status,
                    a_source_type, a_source_id, a_parent_job_id, a_input, a_output,
                    a_error, a_created_at, a_started_at, a_completed_at, a_priority,
                    a_created_by, a_retry_of, a_version, o_last + n);
        END IF;
    END IF;

    IF cardinality(s_step_name) > 0 THEN
        INSERT INTO steps AS st (job_id, step_name, position, action_name, action_type,
                                 status, attempt, input, output, error_message, error_kind,
                                 exit_code, worker_id, started_at, completed_at, loop_of,
                                 loop_index, skip_reason, message, depends_on, retry_at,
                                 child_job_id)
        SELECT u.job_id, u.step_name, u.position, u.action_name, u.action_type, u.status,
               u.attempt, u.input::jsonb, u.output::jsonb, u.error_message, u.error_kind,
               u.exit_code, u.worker_id, u.started_at, u.completed_at, u.loop_of,
               u.loop_index, u.skip_reason, u.message, u.depends_on::jsonb, u.retry_at,
               u.child_job_id
        FROM unnest(s_job_id, s_step_name, s_position, s_action_name, s_action_type,
                    s_status, s_attempt, s_input, s_output, s_error_message, s_error_kind,
                    s_exit_code, s_worker_id, s_started_at, s_completed_at, s_loop_of,
                    s_loop_index, s_skip_reason, s_message, s_depends_on, s_retry_at,
                    s_child_job_id)
            AS u(job_id, step_name, position, action_name, action_type, status, attempt,
                 input, output, error_message, error_kind, exit_code, worker_id,
                 started_at, completed_at, loop_of, loop_index, skip_reason, message,
                 depends_on, retry_at, child_job_id)
        ON CONFLICT (job_id, step_name) DO UPDATE SET
            position = excluded.position, action_name = excluded.action_name,
            action_type = excluded.action_type, status = excluded.status,
            attempt = excluded.attempt, input = excluded.input, output = excluded.output,
            error_message = excluded.error_message, error_kind = excluded.error_kind,
            exit_code = excluded.exit_code, worker_id = excluded.worker_id,
            started_at = excluded.started_at, completed_at = excluded.completed_at,
            loop_of = excluded.loop_of, loop_index = excluded.loop_index,
            skip_reason = excluded.skip_reason, message = excluded.message,
            depends_on = excluded.depends_on, retry_at = excluded.retry_at,
            child_job_id = excluded.child_job_id;
    END IF;

    PERFORM pg_notify(a_channel, (o_last + n)::text);
END
$$;
