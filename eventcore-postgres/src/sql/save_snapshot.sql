-- One round trip: the statement is its own transaction, and the
-- set_config (local to it) lets its commit skip waiting for the disk. Each
-- snapshot records the id of the event at each of its versions (the last
-- it folded; NULL at version 0), looked up here, when the append that made
-- it has committed.
INSERT INTO eventcore_snapshots (state_name, state_key, schema_version, versions, state, event_ids)
SELECT b.name, b.key, b.schema_version, b.versions::bigint[], b.state,
       ARRAY(SELECT e.event_id
             FROM jsonb_array_elements_text(b.streams::jsonb) WITH ORDINALITY AS s(id, n)
             LEFT JOIN eventcore_events AS e
                    ON e.stream_id = s.id AND e.stream_version = (b.versions::bigint[])[s.n]
             ORDER BY s.n)
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[])
    AS b(name, key, schema_version, versions, state, streams)
CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS quick
ON CONFLICT (state_name, md5(state_key)) DO UPDATE
SET state_key = EXCLUDED.state_key, schema_version = EXCLUDED.schema_version,
    versions = EXCLUDED.versions, state = EXCLUDED.state, event_ids = EXCLUDED.event_ids,
    saved_at = now()
