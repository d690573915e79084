-- Group commit without JSON (engine/store/postgres.py, commit_group): the appends of a
-- group as flat arrays, one call of partitur_append_batch. partitur_append_many
-- (migrations 013, 014) took them as one JSON document and rebuilt each of an append's
-- 26 array arguments with partitur_texts, a query of its own each time: ~1.5–2 ms of
-- server time an append, where the append itself is ~0.7 ms (measured under W3, where
-- most appends are group-committed: 13.6 ms a call, 83 % of the server's time).
--
-- Append i (1-based, in order) is a_stream[i], a_expected[i], a_scope[i], a_key[i];
-- its events are elements e_lo[i] .. e_hi[i] of the e_ arrays; its job row is element
-- i of the j_ arrays (j_job_id[i] NULL: no job row; JSONB values as JSON text); its step
-- rows are elements s_lo[i] .. s_hi[i] of the s_ arrays (none when s_lo[i] > s_hi[i]);
-- the work-queue rows it queues are elements w_lo[i] .. w_hi[i] of the w_ arrays (tags
-- as a JSON array text each), queued only when the append is written, with one NOTIFY
-- to a_work_channel, as migration 014 does. A row per append comes back, in order, as
-- partitur_append returns it.

CREATE FUNCTION partitur_append_batch(
    a_stream text[], a_expected int[], a_scope text[], a_key text[], a_channel text,
    e_lo int[], e_hi int[], e_types text[], e_schema_versions int[], e_data text[],
    e_ts float8[],
    j_job_id text[], j_workspace text[], j_task_name text[], j_revision text[],
    j_status text[], j_source_type text[], j_source_id text[], j_parent_job_id text[],
    j_input text[], j_output text[], j_error text[], j_created_at float8[],
    j_started_at float8[], j_completed_at float8[], j_priority int[], j_created_by text[],
    j_retry_of text[], j_version int[],
    s_lo int[], s_hi int[],
    s_job_id text[], s_step_name text[], s_position int[], s_action_name text[],
    s_action_type text[], s_status text[], s_attempt int[], s_input text[],
    s_output text[], s_error_message text[], s_error_kind text[], s_exit_code int[],
    s_worker_id text[], s_started_at float8[], s_completed_at float8[], s_loop_of text[],
    s_loop_index int[], s_skip_reason text[], s_message text[], s_depends_on text[],
    s_retry_at float8[], s_child_job_id text[],
    w_lo int[], w_hi int[], w_job_id text[], w_step text[], w_attempt int[],
    w_priority int[], w_ready_at float8[], w_tags text[], a_work_channel text
) RETURNS TABLE (o_version int, o_last bigint, o_owner text) LANGUAGE plpgsql AS $$
DECLARE
    e1 int; e2 int; s1 int; s2 int; w1 int; w2 int;
BEGIN
    FOR i IN 1 .. cardinality(a_stream) LOOP
        e1 := e_lo[i]; e2 := e_hi[i]; s1 := s_lo[i]; s2 := s_hi[i];
        SELECT r.o_version, r.o_last, r.o_owner INTO o_version, o_last, o_owner
        FROM partitur_append(
            a_stream[i], a_expected[i], a_scope[i], a_key[i],
            e_types[e1:e2], e_schema_versions[e1:e2], e_data[e1:e2], e_ts[e1:e2], a_channel,
            j_job_id[i], j_workspace[i], j_task_name[i], j_revision[i], j_status[i],
            j_source_type[i], j_source_id[i], j_parent_job_id[i], j_input[i]::jsonb,
            j_output[i]::jsonb, j_error[i], j_created_at[i], j_started_at[i],
            j_completed_at[i], j_priority[i], j_created_by[i], j_retry_of[i], j_version[i],
            s_job_id[s1:s2], s_step_name[s1:s2], s_position[s1:s2], s_action_name[s1:s2],
            s_action_type[s1:s2], s_status[s1:s2], s_attempt[s1:s2], s_input[s1:s2],
            s_output[s1:s2], s_error_message[s1:s2], s_error_kind[s1:s2],
            s_exit_code[s1:s2], s_worker_id[s1:s2], s_started_at[s1:s2],
            s_completed_at[s1:s2], s_loop_of[s1:s2], s_loop_index[s1:s2],
            s_skip_reason[s1:s2], s_message[s1:s2], s_depends_on[s1:s2],
            s_retry_at[s1:s2], s_child_job_id[s1:s2]
        ) AS r;
        w1 := w_lo[i]; w2 := w_hi[i];
        IF o_version = a_expected[i] AND o_owner IS NULL AND w1 <= w2 THEN
            INSERT INTO work_queue (job_id, step, attempt, priority, ready_at, tags)
            SELECT u.job_id, u.step, u.attempt, u.priority, u.ready_at,
                   partitur_texts(u.tags::jsonb)
            FROM unnest(w_job_id[w1:w2], w_step[w1:w2], w_attempt[w1:w2],
                        w_priority[w1:w2], w_ready_at[w1:w2], w_tags[w1:w2])
                WITH ORDINALITY AS u(job_id, step, attempt, priority, ready_at, tags, k)
            ORDER BY u.k
            ON CONFLICT (job_id, step, attempt) DO UPDATE SET worker_id = NULL, lease = NULL,
                claimed_at = NULL, renewed_at = NULL, finished_at = NULL, outcome = NULL
            WHERE work_queue.outcome = 'dropped';
            PERFORM pg_notify(a_work_channel, '');
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
