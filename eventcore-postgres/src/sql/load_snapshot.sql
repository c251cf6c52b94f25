SELECT schema_version, versions, state
FROM eventcore_snapshots
WHERE state_name = $1 AND md5(state_key) = md5($2) AND state_key = $2
