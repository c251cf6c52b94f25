SELECT conflict_stream, expected_version, actual_version,
       recorded_type, recorded_streams, recorded_versions, recorded_events
FROM eventcore_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
