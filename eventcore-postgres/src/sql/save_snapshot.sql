-- One round trip: the statement is its own transaction, and the
-- set_config (local to it) lets its commit skip waiting for the disk.
INSERT INTO eventcore_snapshots (state_name, state_key, schema_version, versions, state)
SELECT b.name, b.key, b.schema_version, b.versions::bigint[], b.state
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[])
    AS b(name, key, schema_version, versions, state)
CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS quick
ON CONFLICT (state_name, md5(state_key)) DO UPDATE
SET state_key = EXCLUDED.state_key, schema_version = EXCLUDED.schema_version,
    versions = EXCLUDED.versions, state = EXCLUDED.state, saved_at = now()
