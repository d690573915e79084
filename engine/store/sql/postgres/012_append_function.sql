-- An append as one call (engine/store/postgres.py, append): take the append lock, read
-- the stream's version, the highest global_seq and the owner of the idempotency key, and,
-- when the version is the expected one and the key is free, insert the events (numbered
-- after that seq) and the key, upsert the job row and the step rows, and NOTIFY
-- a_channel with the append's last seq. Returns what it read (o_version, o_last,
-- o_owner); it wrote nothing unless that was (a_expected, any seq, NULL).
--
-- A statement of a VOLATILE function takes its snapshot when it starts, so the reads,
-- coming after the lock, see every append committed before it. Called alone (autocommit),
-- an append is one round trip and one transaction; called inside a transaction it holds
-- the lock to that transaction's end like any other append.
--
-- The job columns are NULL (a_job_id NULL) when the append carries no projection; the
-- step columns are one array per column (JSONB columns as JSON text), empty for none.

CREATE FUNCTION partitur_append(
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
        INSERT INTO jobs AS j (job_id, workspace, task_name, revision, status, source_type,
                               source_id, parent_job_id, input, output, error, created_at,
                               started_at, completed_at, priority, created_by, retry_of,
                               version, last_seq)
        VALUES (a_job_id, a_workspace, a_task_name, a_revision, a_status, a_source_type,
                a_source_id, a_parent_job_id, a_input, a_output, a_error, a_created_at,
                a_started_at, a_completed_at, a_priority, a_created_by, a_retry_of,
                a_version, o_last + n)
        ON CONFLICT (job_id) DO UPDATE SET
            workspace = excluded.workspace, task_name = excluded.task_name,
            revision = excluded.revision, status = excluded.status,
            source_type = excluded.source_type, source_id = excluded.source_id,
            parent_job_id = excluded.parent_job_id, input = excluded.input,
            output = excluded.output, error = excluded.error,
            created_at = excluded.created_at, started_at = excluded.started_at,
            completed_at = excluded.completed_at, priority = excluded.priority,
            created_by = excluded.created_by, retry_of = excluded.retry_of,
            version = excluded.version, last_seq = excluded.last_seq;
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
