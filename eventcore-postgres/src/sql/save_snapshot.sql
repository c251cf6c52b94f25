INSERT INTO eventcore_snapshots (state_name, state_key, schema_version, versions, state)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (state_name, md5(state_key)) DO UPDATE
SET state_key = EXCLUDED.state_key, schema_version = EXCLUDED.schema_version,
    versions = EXCLUDED.versions, state = EXCLUDED.state, saved_at = now()
