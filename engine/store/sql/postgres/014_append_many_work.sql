-- Group commit of appends that queue work (engine/store/postgres.py): partitur_append_many
-- (migration 013) also takes an append's work-queue rows, so a dispatch that hands steps
-- to workers is one call like any other append instead of its own transaction of five
-- round trips. An element of a_appends may hold "work", an array of objects with the
-- columns "job_id", "step", "attempt", "priority", "ready_at" and "tags" (an array), and
-- "work_channel"; when its append is written, the rows are queued (a row of a dropped
-- attempt is reopened, as engine/store/work.py PG_ENQUEUE_ONE does) and one NOTIFY goes
-- to "work_channel". Elements without "work" are written as before.

CREATE OR REPLACE FUNCTION partitur_append_many(a_appends jsonb)
RETURNS TABLE (o_version int, o_last bigint, o_owner text) LANGUAGE plpgsql AS $$
DECLARE
    a jsonb;
    j jsonb;
    s jsonb;
BEGIN
    FOR a IN SELECT t.value FROM jsonb_array_elements(a_appends) WITH ORDINALITY AS t
             ORDER BY t.ordinality LOOP
        j := COALESCE(a->'job', 'null'::jsonb);
        s := COALESCE(a->'steps', 'null'::jsonb);
        SELECT r.o_version, r.o_last, r.o_owner INTO o_version, o_last, o_owner
        FROM partitur_append(
            a->>'stream', (a->>'expected')::int, a->>'scope', a->>'key',
            partitur_texts(a->'types'), partitur_texts(a->'schema_versions')::int[],
            partitur_texts(a->'data'), partitur_texts(a->'ts')::float8[], a->>'channel',
            j->>'job_id', j->>'workspace', j->>'task_name', j->>'revision', j->>'status',
            j->>'source_type', j->>'source_id', j->>'parent_job_id',
            NULLIF(j->'input', 'null'::jsonb), NULLIF(j->'output', 'null'::jsonb),
            j->>'error', (j->>'created_at')::float8, (j->>'started_at')::float8,
            (j->>'completed_at')::float8, (j->>'priority')::int, j->>'created_by',
            j->>'retry_of', (j->>'version')::int,
            partitur_texts(s->'job_id'), partitur_texts(s->'step_name'),
            partitur_texts(s->'position')::int[], partitur_texts(s->'action_name'),
            partitur_texts(s->'action_type'), partitur_texts(s->'status'),
            partitur_texts(s->'attempt')::int[], partitur_texts(s->'input'),
            partitur_texts(s->'output'), partitur_texts(s->'error_message'),
            partitur_texts(s->'error_kind'), partitur_texts(s->'exit_code')::int[],
            partitur_texts(s->'worker_id'), partitur_texts(s->'started_at')::float8[],
            partitur_texts(s->'completed_at')::float8[], partitur_texts(s->'loop_of'),
            partitur_texts(s->'loop_index')::int[], partitur_texts(s->'skip_reason'),
            partitur_texts(s->'message'), partitur_texts(s->'depends_on'),
            partitur_texts(s->'retry_at')::float8[], partitur_texts(s->'child_job_id')
        ) AS r;
        IF o_version = (a->>'expected')::int AND o_owner IS NULL
           AND jsonb_array_length(COALESCE(a->'work', '[]'::jsonb)) > 0 THEN
            INSERT INTO work_queue (job_id, step, attempt, priority, ready_at, tags)
            SELECT w->>'job_id', w->>'step', (w->>'attempt')::int, (w->>'priority')::int,
                   (w->>'ready_at')::float8, partitur_texts(w->'tags')
            FROM jsonb_array_elements(a->'work') WITH ORDINALITY AS t(w, i)
            ORDER BY t.i
            ON CONFLICT (job_id, step, attempt) DO UPDATE SET worker_id = NULL, lease = NULL,
                claimed_at = NULL, renewed_at = NULL, finished_at = NULL, outcome = NULL
            WHERE work_queue.outcome = 'dropped';
            PERFORM pg_notify(a->>'work_channel', '');
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
