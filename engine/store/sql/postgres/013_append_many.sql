-- Several appends in one call (engine/store/postgres.py, group commit): the appends that
-- queued up while the previous commit was in flight go to the server as one statement,
-- so they share one transaction, one COMMIT and one round trip, and the append lock is
-- held only while the server works, never while it waits for the client.
--
-- a_appends is a JSON array; each element holds the arguments of one partitur_append
-- (migration 012): "stream", "expected", "scope", "key", "channel"; the events' "types",
-- "schema_versions", "data" (JSON text each) and "ts"; "job", the job row as an object
-- with the column names as keys, or null; "steps", an object of one array per step
-- column (JSONB columns as JSON text), or null. The calls run in order, each seeing the
-- ones before it; a row per append comes back, in the same order, as partitur_append
-- returns it.

CREATE FUNCTION partitur_texts(a jsonb) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(array_agg(v ORDER BY i), '{}')
    FROM jsonb_array_elements_text(a) WITH ORDINALITY AS t(v, i)
$$;

CREATE FUNCTION partitur_append_many(a_appends jsonb)
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
        RETURN NEXT;
    END LOOP;
END
$$;
