SELECT conflict_stream, expected_version, actual_version
FROM eventcore_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
