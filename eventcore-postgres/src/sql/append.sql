SELECT conflict_stream, expected_version, actual_version,
       out_command_type, out_command_streams, out_command_versions, out_command_events,
       out_command_commit, out_command_position, out_commit, out_position
FROM eventcore_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
